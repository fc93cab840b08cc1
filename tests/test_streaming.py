"""StreamRun's promise under stress: every event exactly once, in order, however the client behaves."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lace.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace_engine.domain import EventType, NewEvent, RunEvent, RunOptions
from lace_engine.errors import LeaseLost
from lace_engine.ids import new_id
from lace_engine.storage import event_log
from lace_engine.storage.database import Database, driver_connection
from lace_engine.storage.event_log import Fence
from lace_server.server import Running
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, start_run, watch
from tests.support.server_process import ServerProcess

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub


def seqs(events: list[run_pb2.RunEvent]) -> list[int]:
    return [e.seq for e in events]


async def read_until(runs: RunServiceAsyncStub, run_id: str, cursor: int, stop_after: int) -> list[run_pb2.RunEvent]:
    """Reads from `cursor`, then drops the call (client cancel) once `stop_after` events arrived."""
    got: list[run_pb2.RunEvent] = []
    call = runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run_id, cursor=cursor))
    async for response in call:
        got.extend(response.events)
        if len(got) >= stop_after:
            call.cancel()
            break
    return got


@pytest.fixture(scope="module")
async def finished_run(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> tuple[str, int]:
    artifact = await create_artifact(artifacts, 6000)
    run = await start_run(runs, artifact.id)
    events = await watch(runs, run.id)
    return run.id, len(events)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6))
async def test_reconnect_with_last_seq_yields_exactly_one_to_n(
    runs: RunServiceAsyncStub, finished_run: tuple[str, int], cuts: list[int]
) -> None:
    run_id, total = finished_run
    received: list[run_pb2.RunEvent] = []
    for cut in cuts:
        cursor = received[-1].seq if received else 0
        received.extend(await read_until(runs, run_id, cursor, cut))
    cursor = received[-1].seq if received else 0
    received.extend(await watch(runs, run_id, cursor))
    assert seqs(received) == list(range(1, total + 1))


async def test_cursor_at_or_past_the_end_of_a_finished_run_ends_at_once(
    runs: RunServiceAsyncStub, finished_run: tuple[str, int]
) -> None:
    run_id, total = finished_run
    assert await asyncio.wait_for(watch(runs, run_id, total), 5) == []
    assert await asyncio.wait_for(watch(runs, run_id, total + 100), 5) == []
    assert seqs(await watch(runs, run_id, total - 1)) == [total]


Stubs = tuple["ArtifactServiceAsyncStub", "RunServiceAsyncStub", Running]


@pytest.fixture(scope="module")
async def live(pg_server_url: str) -> AsyncIterator[Stubs]:
    """A server whose model takes 60 ms a call, a small live queue, and 1 s heartbeats."""
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "60"}, stream_queue_batches=8,
                           heartbeat_s=0.5) as (target, running, _url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel), running


async def test_random_disconnects_during_a_live_run(live: Stubs) -> None:
    artifacts, runs, _ = live
    artifact = await create_artifact(artifacts, 5000)
    run = await start_run(runs, artifact.id, sibling_concurrency=2)
    rnd = random.Random(7)
    received: list[run_pb2.RunEvent] = []
    for _ in range(6):
        cursor = received[-1].seq if received else 0
        received.extend(await read_until(runs, run.id, cursor, rnd.randint(1, 6)))
    received.extend(await watch(runs, run.id, received[-1].seq))
    assert seqs(received) == list(range(1, len(received) + 1))
    assert received[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED


async def test_two_hundred_streams_and_a_slow_one(live: Stubs) -> None:
    artifacts, runs, running = live
    artifact = await create_artifact(artifacts, 8000)
    run = await start_run(runs, artifact.id, sibling_concurrency=4)
    fast = [asyncio.create_task(watch(runs, run.id)) for _ in range(199)]
    slow_got: list[run_pb2.RunEvent] = []
    max_pending_seen = 0

    async def slow() -> None:
        nonlocal max_pending_seen
        responses = 0
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
            slow_got.extend(response.events)
            responses += 1
            subs = running.engine.hub._subs.get(uuid.UUID(run.id), set())
            max_pending_seen = max([max_pending_seen, *(len(s._pending) for s in subs)])
            if responses <= 4:
                await asyncio.sleep(1.0)  # deliberately slow at first, while the run is live

    slow_task = asyncio.create_task(slow())
    results = await asyncio.wait_for(asyncio.gather(*fast), 120)
    # The run finished while the slow reader was still behind: it did not hold the run back.
    state = await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))
    assert state.run.state == run_pb2.RUN_STATE_COMPLETED
    await asyncio.wait_for(slow_task, 60)
    total = results[0][-1].seq
    for events in [*results, slow_got]:
        assert seqs(events) == list(range(1, total + 1))
    # Memory stays bounded: no stream ever queued more than its cap.
    assert max_pending_seen <= 8
    assert running.engine.hub.subscriber_count == 0


async def test_heartbeats_on_a_quiet_stream_and_a_cursor_past_the_live_head(live: Stubs) -> None:
    artifacts, runs, _ = live
    artifact = await create_artifact(artifacts, 3000)
    run = await start_run(runs, artifact.id)
    first = await read_until(runs, run.id, 0, 3)
    await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
    for _ in range(100):
        got = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
        if got.state == run_pb2.RUN_STATE_PAUSED:
            break
        await asyncio.sleep(0.05)
    head = got.head_seq
    call = runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id, cursor=head + 3))
    beats = 0
    async for response in call:
        assert not response.events  # nothing beyond the cursor exists yet
        assert response.head_seq == head and response.run_state == run_pb2.RUN_STATE_PAUSED
        beats += 1
        if beats == 2:
            call.cancel()
            break
    await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id))
    tail = await watch(runs, run.id, head + 3)
    assert tail and tail[0].seq == head + 4
    assert seqs(tail) == list(range(head + 4, tail[-1].seq + 1))
    assert first[0].seq == 1


async def test_cancel_storm_frees_everything(live: Stubs) -> None:
    artifacts, runs, running = live
    artifact = await create_artifact(artifacts, 3000)
    run = await start_run(runs, artifact.id)
    await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
    await asyncio.sleep(0.3)
    tasks_before = len(asyncio.all_tasks())
    pool = running.engine.db.engine.pool
    calls = [runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)) for _ in range(1000)]
    first = await asyncio.gather(*(c.read() for c in calls))
    assert all(isinstance(r, run_service_pb2.StreamRunResponse) and r.events[0].seq == 1 for r in first)
    assert running.engine.hub.subscriber_count >= 900
    for c in calls:
        c.cancel()
    # The executor's claim loop briefly checks out a connection every second: a leak is one that
    # stays out, so wait for all three conditions together.
    for _ in range(200):
        if (running.engine.hub.subscriber_count == 0 and len(asyncio.all_tasks()) <= tasks_before
                and pool.checkedout() == 0):  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.05)
    assert running.engine.hub.subscriber_count == 0
    assert len(asyncio.all_tasks()) <= tasks_before
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id))


async def test_concurrent_writers_to_one_run_get_gap_free_seqs(database_url: str, artifacts: ArtifactServiceAsyncStub,
                                                               runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 500)
    run = await start_run(runs, artifact.id)
    await watch(runs, run.id)
    db = Database(database_url, pool_size=10)
    await db.open()
    try:
        async def writer(i: int) -> None:
            for j in range(10):
                events = [NewEvent(EventType.NODE_SKIPPED, {"node_id": str(new_id()), "reason": f"w{i}.{j}.{k}"})
                          for k in range(1 + (i + j) % 3)]
                if i % 2:  # the executor's way: the append read after its COMMIT, one round trip
                    async with db.pipelined_transaction() as ptx:
                        pending = await event_log.append_at_commit(ptx, uuid.UUID(run.id), events)
                    assert [e.seq for e in pending.appended.events] == list(
                        range(pending.appended.head_seq - len(events) + 1, pending.appended.head_seq + 1))
                else:
                    async with db.transaction() as tx:
                        await event_log.append(tx, uuid.UUID(run.id), events)

        await asyncio.gather(*(writer(i) for i in range(16)))
        async with db.read() as conn:
            stored = await event_log.read(await driver_connection(conn), uuid.UUID(run.id), after_seq=0,
                                          limit=10_000)
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    finally:
        await db.aclose()


async def test_an_append_read_after_commit_under_a_stale_fence_writes_nothing(
        database_url: str, artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 500)
    run = await start_run(runs, artifact.id)
    db = Database(database_url, pool_size=2)
    settled: list[list[RunEvent] | None] = []

    class Listener:
        def pending(self, run_id: uuid.UUID) -> None:
            pass

        def settled(self, run_id: uuid.UUID, events: list[RunEvent] | None) -> None:
            settled.append(events)

    db.add_listener(Listener())
    await db.open()
    try:
        with pytest.raises(LeaseLost):
            async with db.pipelined_transaction() as tx:
                pending = await event_log.append_at_commit(
                    tx, uuid.UUID(run.id), [NewEvent(EventType.NODE_SKIPPED, {"node_id": "n", "reason": "stale"})],
                    fence=Fence("not-the-owner", 10**6))
        with pytest.raises(RuntimeError, match="after its transaction commits"):
            pending.appended  # noqa: B018 - the read is the test
        assert settled == [None]
        async with db.read() as conn:
            stored = await event_log.read(await driver_connection(conn), uuid.UUID(run.id), after_seq=0,
                                          limit=10_000)
        assert not [e for e in stored if e.payload.get("reason") == "stale"]
    finally:
        await db.aclose()  # the run, running or finished by now, is the server's to end


async def test_cross_process_watch_and_reconnect(own_database: str) -> None:
    """Run executes in process A; watched live through B (another process's API); reconnect to A halfway."""
    url = own_database
    with ServerProcess(url, env={"LACE_OFFLINE_LATENCY_MS": "40"}) as a, \
            ServerProcess(url, env={"LACE_EXECUTE_RUNS": "false"}) as b:
        async with grpc.aio.insecure_channel(a.target) as ca, grpc.aio.insecure_channel(b.target) as cb:
            runs_a, runs_b = run_service_pb2_grpc.RunServiceStub(ca), run_service_pb2_grpc.RunServiceStub(cb)
            artifact = await create_artifact(ArtifactServiceStub(cb), 5000)
            run = await start_run(runs_b, artifact.id, sibling_concurrency=2)
            half = await read_until(runs_b, run.id, 0, 12)
            rest = await watch(runs_a, run.id, half[-1].seq)
            full_b = await watch(runs_b, run.id)
    received = half + rest
    assert seqs(received) == list(range(1, len(received) + 1))
    assert received == full_b
    assert received[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED


async def test_server_restart_during_a_stream(own_database: str) -> None:
    url = own_database
    server = ServerProcess(url, env={"LACE_OFFLINE_LATENCY_MS": "80", "LACE_LEASE_TTL_S": "2"}).start()
    received: list[run_pb2.RunEvent] = []
    async with grpc.aio.insecure_channel(server.target) as channel:
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        artifact = await create_artifact(ArtifactServiceStub(channel), 4000)
        run = await start_run(runs, artifact.id)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
                received.extend(response.events)
                if len(received) >= 8 and server.proc and server.proc.poll() is None:
                    await asyncio.to_thread(server.stop)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    server = ServerProcess(url, port=server.port, env={"LACE_LEASE_TTL_S": "2"}).start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            received.extend(await asyncio.wait_for(watch(runs, run.id, received[-1].seq), 60))
    finally:
        server.stop()
    assert seqs(received) == list(range(1, len(received) + 1))
    assert received[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED


def test_run_options_roundtrip() -> None:
    assert RunOptions.from_json(RunOptions(leaf_words=300).to_json()) == RunOptions(leaf_words=300)
