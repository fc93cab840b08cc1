"""Postgres LISTEN/NOTIFY: how a process learns of the commits of every process sharing its database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import psycopg

from lace_engine.storage.event_log import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


def parse_payload(payload: str) -> tuple[uuid.UUID, int] | None:
    """Reads 'run_id:head_seq'; None for anything else."""
    run, _, head = payload.partition(":")
    try:
        return uuid.UUID(run), int(head)
    except ValueError:
        return None


class PgNotifyListener:
    """Holds one LISTEN connection: committed(run_id, head) for every NOTIFY, and interrupted() once
    a dropped connection is back (the NOTIFYs sent meanwhile are lost)."""

    def __init__(self, url: str, committed: Callable[[uuid.UUID, int], None],
                 interrupted: Callable[[], None], channel: str = NOTIFY_CHANNEL):
        self._url = url
        self._committed = committed
        self._interrupted = interrupted
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lace-pg-listener")
        await asyncio.wait_for(self._ready.wait(), 30)

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self._channel}")
                    self._ready.set()
                    if not first:
                        self._interrupted()
                    first, backoff = False, 0.1
                    async for note in conn.notifies():
                        parsed = parse_payload(note.payload)
                        if parsed is not None:
                            self._committed(*parsed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
