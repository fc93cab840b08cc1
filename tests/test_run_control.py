"""Pause, resume and cancel on a live run (offline provider with a simulated model latency)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
import pytest

from lace.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, start_run

S = run_pb2


Stubs = tuple["ArtifactServiceAsyncStub", "RunServiceAsyncStub"]


@pytest.fixture(scope="module")
async def slow(pg_server_url: str) -> AsyncIterator[Stubs]:
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "150"}) as (target, _, _url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel)


class Collector:
    """Watches a run in the background and keeps every event it receives."""

    def __init__(self, runs: RunServiceAsyncStub, run_id: str):
        self.events: list[run_pb2.RunEvent] = []
        self._runs, self._run_id = runs, run_id
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for response in self._runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=self._run_id)):
            self.events.extend(response.events)

    def kinds(self) -> list[str | None]:
        return [e.WhichOneof("payload") for e in self.events]

    def states(self) -> list[int]:
        return [e.run_state_changed.to_state for e in self.events if e.WhichOneof("payload") == "run_state_changed"]

    async def until(self, predicate: Callable[[], bool], seconds: float = 60) -> None:
        async def poll() -> None:
            while not predicate():
                if self.task.done():
                    self.task.result()
                    raise AssertionError(f"stream ended before the condition held: {self.kinds()}")
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), seconds)


def assert_nothing_done_twice(events: list[run_pb2.RunEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    written = collections.Counter(
        e.blocks_applied.node_id for e in events if e.WhichOneof("payload") == "blocks_applied")
    split = collections.Counter(e.node_split.node_id for e in events if e.WhichOneof("payload") == "node_split")
    assert written and all(n == 1 for n in written.values()), written
    assert all(n == 1 for n in split.values()), split
    planned = {c.node_id for e in events if e.WhichOneof("payload") == "node_split" for c in e.node_split.children}
    root = next(e.node_split.node_id for e in events if e.WhichOneof("payload") == "node_split")
    # Every planned section was either split or written, once.
    assert planned == set(written) | (set(split) - {root})


async def test_pause_then_resume_finishes_with_nothing_done_twice(slow: Stubs) -> None:
    artifacts, runs = slow
    artifact = await create_artifact(artifacts, 5000)
    run = await start_run(runs, artifact.id, sibling_concurrency=2)
    watch = Collector(runs, run.id)
    await watch.until(lambda: "blocks_applied" in watch.kinds())
    paused = await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
    assert paused.run.state in (S.RUN_STATE_PAUSING, S.RUN_STATE_PAUSED)
    await watch.until(lambda: S.RUN_STATE_PAUSED in watch.states())
    at_pause = len(watch.events)
    # Paused means paused: nothing happens until resumed, and nothing after PAUSED started a call.
    await asyncio.sleep(0.6)
    assert len(watch.events) == at_pause
    got = await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))
    assert got.run.state == S.RUN_STATE_PAUSED
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id))
    await asyncio.wait_for(watch.task, 120)
    states = watch.states()
    assert states[-1] == S.RUN_STATE_COMPLETED
    assert states[:2] == [S.RUN_STATE_PENDING, S.RUN_STATE_RUNNING]
    assert states[2:6] == [S.RUN_STATE_PAUSING, S.RUN_STATE_PAUSED, S.RUN_STATE_PENDING, S.RUN_STATE_RUNNING]
    # Between PAUSING and PAUSED only in-flight work finished: no step started.
    kinds = watch.kinds()
    seq_pausing = next(e.seq for e in watch.events if e.WhichOneof("payload") == "run_state_changed"
                       and e.run_state_changed.to_state == S.RUN_STATE_PAUSING)
    seq_paused = next(e.seq for e in watch.events if e.WhichOneof("payload") == "run_state_changed"
                      and e.run_state_changed.to_state == S.RUN_STATE_PAUSED)
    assert "step_started" not in kinds[seq_pausing:seq_paused - 1]
    assert_nothing_done_twice(watch.events)


async def test_cancel_aborts_in_flight_calls_and_applies_nothing_partial(slow: Stubs) -> None:
    artifacts, runs = slow
    artifact = await create_artifact(artifacts, 5000)
    run = await start_run(runs, artifact.id, sibling_concurrency=3)
    watch = Collector(runs, run.id)
    await watch.until(lambda: watch.kinds().count("step_started") >= 3)
    cancelled = await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id))
    assert cancelled.run.state in (S.RUN_STATE_CANCELLING, S.RUN_STATE_CANCELLED)
    await asyncio.wait_for(watch.task, 30)
    assert watch.states()[-1] == S.RUN_STATE_CANCELLED
    seq_cancelling = next(e.seq for e in watch.events if e.WhichOneof("payload") == "run_state_changed"
                          and e.run_state_changed.to_state == S.RUN_STATE_CANCELLING)
    after = [e.WhichOneof("payload") for e in watch.events if e.seq > seq_cancelling]
    # Aborted calls neither complete nor apply.
    assert after == ["run_state_changed"]
    done = await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))
    assert done.run.state == S.RUN_STATE_CANCELLED and done.run.end_time.seconds > 0


async def test_cancel_paused_run_and_resume_while_pausing(slow: Stubs) -> None:
    artifacts, runs = slow
    artifact = await create_artifact(artifacts, 3000)
    run = await start_run(runs, artifact.id)
    watch = Collector(runs, run.id)
    await watch.until(lambda: "step_started" in watch.kinds())
    await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
    resumed = await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id))
    assert resumed.run.state in (S.RUN_STATE_RUNNING, S.RUN_STATE_PENDING)
    await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
    await watch.until(lambda: S.RUN_STATE_PAUSED in watch.states())
    await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id))
    await asyncio.wait_for(watch.task, 30)
    assert watch.states()[-2:] == [S.RUN_STATE_PAUSED, S.RUN_STATE_CANCELLED]
    assert [e.seq for e in watch.events] == list(range(1, len(watch.events) + 1))
