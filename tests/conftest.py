"""Session fixtures: a real PostgreSQL (embedded, or LACE_TEST_DATABASE_URL) and a real gRPC server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import psycopg
import pytest

from lace.v1 import artifact_service_pb2_grpc, run_service_pb2_grpc, source_service_pb2_grpc
from lace_engine.config import Settings
from lace_engine.domain import RunOptions
from lace_engine.storage.embedded_postgres import EmbeddedPostgres
from lace_server.server import Running
from tests.support.database import fresh_database


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server for the whole session (its default database)."""
    external = os.environ.get("LACE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    tmp = Path(tempfile.mkdtemp(prefix="lace-test-pg-"))
    pg = EmbeddedPostgres(tmp / "data", delete_on_stop=True)
    url = pg.start()
    yield url
    pg.stop()


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this session."""
    with fresh_database(pg_server_url, "lace_test") as url:
        yield url


@pytest.fixture
def own_database(pg_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test, so no other server's executor claims its runs."""
    with fresh_database(pg_server_url, "lace_own") as url:
        yield url


@pytest.fixture
def empty_database(pg_server_url: str) -> Iterator[str]:
    """A fresh database with no tables, for migration tests."""
    with fresh_database(pg_server_url, "lace_empty", migrate_to_head=False) as url:
        yield url


def make_settings(**overrides: object) -> Settings:
    base = Settings(
        database_url=None, lease_ttl_s=3.0, heartbeat_s=1.0,
        run_options=RunOptions(leaf_words=1000, max_depth=4, sibling_concurrency=1, max_proposal_retries=2),
    )
    return Settings(**{**base.__dict__, **overrides})


@asynccontextmanager
async def serve_fresh(pg_server_url: str, env: dict[str, str] | None = None,
                      **overrides: object) -> AsyncIterator[tuple[str, Running, str]]:
    """A separate server on its own fresh database (so no other test's executor claims its runs)."""
    from lace_server.server import start

    with fresh_database(pg_server_url, "lace_test") as url:
        running = await start(make_settings(database_url=url, **overrides), "127.0.0.1:0",
                              env={"LACE_LLM": "offline", **(env or {})}, migrate_db=False)
        try:
            yield f"127.0.0.1:{running.port}", running, url
        finally:
            await running.stop(1.0)


@pytest.fixture(scope="session")
async def lace_server(database_url: str) -> AsyncIterator[tuple[str, object]]:
    """A real LACE server (offline provider) on a free port: yields (target, Running)."""
    from lace_server.server import start

    settings = make_settings(database_url=database_url)
    running = await start(settings, "127.0.0.1:0", env={"LACE_LLM": "offline"})
    yield f"127.0.0.1:{running.port}", running
    await running.stop(1.0)


@pytest.fixture(scope="session")
async def channel(lace_server: tuple[str, object]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(lace_server[0]) as ch:
        yield ch


@pytest.fixture(scope="session")
def artifacts(channel: grpc.aio.Channel) -> artifact_service_pb2_grpc.ArtifactServiceAsyncStub:
    return artifact_service_pb2_grpc.ArtifactServiceStub(channel)


@pytest.fixture(scope="session")
def runs(channel: grpc.aio.Channel) -> run_service_pb2_grpc.RunServiceAsyncStub:
    return run_service_pb2_grpc.RunServiceStub(channel)


@pytest.fixture(scope="session")
def sources(channel: grpc.aio.Channel) -> source_service_pb2_grpc.SourceServiceAsyncStub:
    return source_service_pb2_grpc.SourceServiceStub(channel)


def pg_connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)
