"""The database under a running server is cut off, again and again: runs go on, nothing is doubled.

A real TCP proxy sits between LACE and PostgreSQL; cutting it aborts every connection mid-statement
(both sides), and an outage also refuses new connections for a while, as a restart or a failover
does. Every applied step is durable, so a run waits for the database and goes on from the IR.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.storage import migrate
from lace_engine.storage.embedded_postgres import EmbeddedPostgres
from lace_server.server import Running, start
from tests.conftest import make_settings
from tests.helpers import create_artifact, start_run, watch
from tests.support.database import fresh_database, proxied_url, proxy_upstream
from tests.support.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

pytestmark = pytest.mark.timeout(240)

S = run_pb2
TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Behind:
    """A server whose every database connection goes through `proxy`; `url` reaches the database directly."""

    url: str
    proxy: TcpProxy
    running: Running
    artifacts: ArtifactServiceAsyncStub
    runs: RunServiceAsyncStub


@asynccontextmanager
async def serve_behind_proxy(pg_server_url: str, **overrides: object) -> AsyncIterator[Behind]:
    with fresh_database(pg_server_url, "lace_outage") as url:
        async with TcpProxy(proxy_upstream(url)) as proxy:
            running = await start(make_settings(database_url=proxied_url(url, proxy.target), **overrides),
                                  "127.0.0.1:0", env={"LACE_LLM": "offline", "LACE_OFFLINE_LATENCY_MS": "250"},
                                  migrate_db=False)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                    yield Behind(url, proxy, running, ArtifactServiceStub(channel), RunServiceStub(channel))
            finally:
                await running.stop(1.0)


async def query(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Straight to the database, not through the proxy."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql, args)
        return await cur.fetchall()


async def run_state(url: str, run_id: str) -> str:
    (row,) = await query(url, "SELECT state FROM runs WHERE id = %s", run_id)
    return str(row[0])


async def started_step(url: str, run_id: str) -> None:
    for _ in range(1200):
        if await query(url, "SELECT 1 FROM run_events WHERE run_id = %s AND type = 'step_started'", run_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never started a step")


async def check_written_once(url: str, artifact_id: str, run_id: str, events: list[run_pb2.RunEvent],
                             done: run_pb2.Run) -> None:
    """What an 8,000-word run split once into 8 leaves must have written, whatever happened meanwhile."""
    assert done.state == S.RUN_STATE_COMPLETED, done.failure_reason
    # The stream went on from its own cursor: every event once, in order, exactly what was committed.
    assert [e.seq for e in events] == list(range(1, done.head_seq + 1))
    stored = await query(url, "SELECT seq FROM run_events WHERE run_id = %s ORDER BY seq", run_id)
    assert [r[0] for r in stored] == list(range(1, done.head_seq + 1))
    # The same document an uninterrupted run writes: the root split once into 8 leaves, each written once.
    nodes = await query(url, "SELECT depth, state FROM nodes WHERE artifact_id = %s ORDER BY depth, ordinal",
                        artifact_id)
    assert nodes == [(0, "split")] + [(1, "written")] * 8
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds.count("node_split") == 1 and kinds.count("blocks_applied") == 8
    assert len({e.blocks_applied.node_id for e in events if e.HasField("blocks_applied")}) == 8
    applied = await query(url, "SELECT count(*) FROM llm_calls WHERE run_id = %s AND outcome = %s",
                          run_id, "applied")
    assert applied == [(9,)]
    # Block provenance: one creation per block, no block written twice.
    changes = await query(url, "SELECT block_id, count(*) FROM change_events WHERE artifact_id = %s "
                                 "GROUP BY block_id", artifact_id)
    blocks = await query(url, "SELECT count(*) FROM blocks WHERE artifact_id = %s", artifact_id)
    assert changes and all(n == 1 for _, n in changes) and blocks == [(len(changes),)]


async def test_a_run_completes_through_cut_connections_and_an_outage_with_nothing_doubled(
        pg_server_url: str) -> None:
    async with serve_behind_proxy(pg_server_url) as b:
        artifact = await create_artifact(b.artifacts, 8000, title="Heat networks")
        # One split of the root into 8 leaves, written one after another: about 9 calls of 250 ms.
        run = await start_run(b.runs, artifact.id, leaf_words=1000, max_depth=1, sibling_concurrency=1)
        stream = asyncio.create_task(watch(b.runs, run.id))
        await asyncio.wait_for(started_step(b.url, run.id), 60)

        cuts_while_running = 0
        for i in range(6):
            if await run_state(b.url, run.id) in TERMINAL:
                break
            if i == 3:
                await b.proxy.outage(1.5)  # as a restart: nothing connects for 1.5 s
            elif b.proxy.drop_all():
                cuts_while_running += 1
            await asyncio.sleep(0.3)
        events = await asyncio.wait_for(stream, 120)
        done = (await b.runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run

        assert cuts_while_running >= 2, "the run ended before the connections were cut: nothing was tested"
        await check_written_once(b.url, artifact.id, run.id, events, done)

async def test_an_outage_longer_than_the_limit_fails_the_run_with_its_code_once_the_database_answers(
        pg_server_url: str) -> None:
    async with serve_behind_proxy(pg_server_url, db_outage_s=1.0) as b:
        artifact = await create_artifact(b.artifacts, 8000, title="Heat networks")
        run = await start_run(b.runs, artifact.id, leaf_words=1000, max_depth=1, sibling_concurrency=1)
        await asyncio.wait_for(started_step(b.url, run.id), 60)
        await b.proxy.outage(4.0)
        for _ in range(600):
            if await run_state(b.url, run.id) in TERMINAL:
                break
            await asyncio.sleep(0.1)
        events = await asyncio.wait_for(watch(b.runs, run.id), 60)

    (failed,) = [e.run_failed for e in events if e.HasField("run_failed")]
    assert failed.reason_code == "DATABASE_UNAVAILABLE"
    assert "LACE_DB_OUTAGE_S" in failed.reason and not failed.node_id
    assert events[-1].run_state_changed.to_state == S.RUN_STATE_FAILED
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_the_first_call_after_the_connections_were_cut_succeeds(pg_server_url: str) -> None:
    async with serve_behind_proxy(pg_server_url) as b:
        artifact = await create_artifact(b.artifacts, 2000)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "GetArtifact": lambda: b.artifacts.GetArtifact(
                artifact_service_pb2.GetArtifactRequest(artifact_id=artifact.id)),
            "ListArtifacts": lambda: b.artifacts.ListArtifacts(artifact_service_pb2.ListArtifactsRequest()),
            # No request_id: only the retry rule keeps a retried create from writing twice.
            "CreateArtifact": lambda: b.artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
                artifact=artifact_pb2.Artifact(title="Second", brief="Another guide.", target_words=1000))),
            "ListRuns": lambda: b.runs.ListRuns(run_service_pb2.ListRunsRequest()),
        }
        for name, call in calls.items():
            await call()  # the pools now hold connections used a moment ago: not pinged on the next checkout
            assert b.proxy.drop_all() >= 1, name
            await call()  # met the dead connection before writing anything, and was tried once more
        created = await query(b.url, "SELECT count(*) FROM artifacts WHERE title = 'Second'")
        assert created == [(2,)]  # each CreateArtifact wrote once: the retried one was not doubled


async def test_a_run_completes_across_a_real_postgres_restart(tmp_path: Path) -> None:
    embedded = EmbeddedPostgres(tmp_path / "pg", delete_on_stop=True)
    url = await asyncio.to_thread(embedded.start)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        running = await start(make_settings(database_url=url), "127.0.0.1:0",
                              env={"LACE_LLM": "offline", "LACE_OFFLINE_LATENCY_MS": "250"}, migrate_db=False)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
                artifact = await create_artifact(artifacts, 8000, title="Heat networks")
                run = await start_run(runs, artifact.id, leaf_words=1000, max_depth=1, sibling_concurrency=1)
                stream = asyncio.create_task(watch(runs, run.id))
                await asyncio.wait_for(started_step(url, run.id), 60)
                await asyncio.to_thread(embedded.restart)  # pg_ctl restart -m fast
                # Nothing is applied while the server is down, so the run was cut mid-way, not after.
                assert await run_state(url, run.id) == "running"
                # The first call after the restart is answered (a pooled connection died with the old server).
                assert (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run.id == run.id
                events = await asyncio.wait_for(stream, 120)
                done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
                assert done.state == S.RUN_STATE_COMPLETED, done.failure_reason
                await check_written_once(url, artifact.id, run.id, events, done)
        finally:
            await running.stop(1.0)
    finally:
        await asyncio.to_thread(embedded.stop)
