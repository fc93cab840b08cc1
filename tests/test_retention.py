"""Retention over real gRPC and PostgreSQL: a finished run's old events are pruned in slices by one
process at a time, never an active run's; a cursor into pruned history gets OUT_OF_RANGE with
CURSOR_COMPACTED and the oldest kept seq, and the artifact stays readable for a resync."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest

from lace.v1 import artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.errors import InvalidArgument
from lace_engine.storage.database import Database
from lace_engine.storage.retention import prune, prune_batch
from tests.conftest import make_settings, serve_fresh
from tests.helpers import create_artifact, error_info, final_state, start_run, watch

if TYPE_CHECKING:
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub


# Async: the server shares this event loop, and a blocking UPDATE waiting on a row lock the server
# holds would wait for ever.
async def age(url: str, run_id: str, days: float) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("UPDATE runs SET end_time = now() - make_interval(secs => %s) WHERE id = %s",
                           (days * 86400, run_id))


async def kept(url: str, run_id: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT seq FROM run_events WHERE run_id = %s ORDER BY seq", (run_id,))
        return [r[0] for r in await cur.fetchall()]


async def refused(runs: RunServiceAsyncStub, run_id: str, cursor: int) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run_id, cursor=cursor)):
            pass
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE, raised.value.details()
    info = error_info(raised.value)
    assert info.reason == "CURSOR_COMPACTED"
    return dict(info.metadata)


@pytest.mark.timeout(180)
async def test_old_finished_runs_are_pruned_and_a_stale_cursor_gets_a_typed_resync(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url) as (target, _running, url), grpc.aio.insecure_channel(target) as channel:
        artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
        artifact = await create_artifact(artifacts, 3000)
        old = await start_run(runs, artifact.id, leaf_words=1000)
        events = await watch(runs, old.id)
        assert final_state(events) == run_pb2.RUN_STATE_COMPLETED
        head = len(events)
        other = await create_artifact(artifacts, 600)
        recent = await start_run(runs, other.id)
        await watch(runs, recent.id)
        await age(url, old.id, 10)
        await age(url, recent.id, 0.5)

        db = Database(url, pool_size=2)
        await db.open()
        try:
            # Slices of 3 events: several transactions, each under the pruner's lock.
            cutoff = datetime.now(UTC) - timedelta(days=1)
            assert await prune_batch(db, cutoff, batch=3) == 3
            assert await prune(db, cutoff, batch=3, pause_s=0) == head - 1 - 3
            assert await prune(db, cutoff, batch=3, pause_s=0) == 0  # nothing left
        finally:
            await db.aclose()
        assert await kept(url, old.id) == [head]  # the terminal event stays
        assert len(await kept(url, recent.id)) > 1  # ended too recently

        # A cursor into the pruned part: OUT_OF_RANGE, with where to resume; GetArtifact still answers.
        for cursor in (0, head - 2):
            meta = await refused(runs, old.id, cursor)
            assert meta["oldest_seq"] == str(head) and meta["cursor"] == str(head - 1)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await runs.ListRunEvents(run_service_pb2.ListRunEventsRequest(run_id=old.id))
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        full = await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
            artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
        assert full.blocks
        tail = await watch(runs, old.id, cursor=head - 1)  # the resync point
        assert [e.seq for e in tail] == [head] and final_state(tail) == run_pb2.RUN_STATE_COMPLETED


@pytest.mark.timeout(180)
async def test_an_active_run_is_never_pruned_and_the_server_prunes_on_its_own(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "300"}, retention_days=1,
                           retention_interval_s=0.2) as (target, _running, url), \
            grpc.aio.insecure_channel(target) as channel:
        artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
        finished = await start_run(runs, (await create_artifact(artifacts, 600)).id)
        head = len(await watch(runs, finished.id))
        active = await start_run(runs, (await create_artifact(artifacts, 3000)).id, leaf_words=1000)
        # An active run with an old end_time (as a resumed FAILED run would keep) is left alone.
        await age(url, active.id, 10)
        await age(url, finished.id, 10)
        for _ in range(200):
            if await kept(url, finished.id) == [head]:
                break
            await asyncio.sleep(0.05)
        assert await kept(url, finished.id) == [head]
        done = await watch(runs, active.id)  # from cursor 0: nothing of the active run was pruned
        assert final_state(done) == run_pb2.RUN_STATE_COMPLETED
        assert [e.seq for e in done] == list(range(1, len(done) + 1))


def test_a_negative_retention_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        make_settings(retention_days=-1)
