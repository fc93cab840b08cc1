"""The connection to Postgres: an async SQLAlchemy engine over psycopg 3 with a pool, and
transactions that hand their committed events to live streams only after COMMIT."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from lace_engine.model import RunEvent

Publish = Callable[[uuid.UUID, list[RunEvent]], None]


def sqlalchemy_url(url: str) -> str:
    """Turns a libpq URL (postgresql://...) into SQLAlchemy's psycopg 3 dialect URL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def libpq_url(url: str) -> str:
    """Turns a SQLAlchemy URL back into one libpq (psycopg) accepts."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Creates the pooled async engine; connections are checked before use after a restart."""
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"application_name": "lace"},
    )


class Tx:
    """A transaction in progress; events it wrote are published once it has committed."""

    __slots__ = ("conn", "written")

    def __init__(self, conn: AsyncConnection):
        self.conn = conn
        self.written: list[RunEvent] = []

    def emitted(self, events: list[RunEvent]) -> None:
        self.written.extend(events)


class Database:
    """The pool plus the after-commit hooks (live hub, and the NATS outbox publisher in Phase 1)."""

    def __init__(self, url: str, *, pool_size: int = 10):
        self.url = libpq_url(url)
        self.engine = create_engine(url, pool_size=pool_size)
        self._after_commit: list[Publish] = []

    def on_commit(self, hook: Publish) -> None:
        self._after_commit.append(hook)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One explicit transaction; commit on success, rollback on any exception or cancellation."""
        async with self.engine.begin() as conn:
            tx = Tx(conn)
            yield tx
        if tx.written:
            by_run: dict[uuid.UUID, list[RunEvent]] = {}
            for event in tx.written:
                by_run.setdefault(event.run_id, []).append(event)
            for run_id, events in by_run.items():
                for hook in self._after_commit:
                    hook(run_id, events)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (autocommit-free, released at exit)."""
        async with self.engine.connect() as conn:
            yield conn

    async def aclose(self) -> None:
        await self.engine.dispose()
