"""Hard budgets over real gRPC and PostgreSQL: a preflight estimate, caps never crossed, resume past them.

An 8,000-word artifact with leaf_words 1,000 and max_depth 1 is one split into 8 sections: 9 calls
when nothing is re-asked (the offline provider's answers always pass Apply).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2

from lace.v1 import run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, error_info, start_run, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

pytestmark = pytest.mark.timeout(180)

S = run_pb2
SHAPE: dict[str, Any] = {"leaf_words": 1000, "max_depth": 1}


@dataclass
class Api:
    artifacts: ArtifactServiceAsyncStub
    runs: RunServiceAsyncStub


@pytest.fixture(scope="module")
async def api(pg_server_url: str) -> AsyncIterator[Api]:
    # Each call takes a little while, so calls in flight overlap the cap as they would in production.
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "150"}) as (target, _, _url), \
            grpc.aio.insecure_channel(target) as channel:
        yield Api(ArtifactServiceStub(channel), RunServiceStub(channel))


async def run_to_end(api: Api, run_id: str, cursor: int = 0) -> tuple[list[run_pb2.RunEvent], run_pb2.Run]:
    events = await asyncio.wait_for(watch(api.runs, run_id, cursor), 120)
    return events, (await api.runs.GetRun(run_service_pb2.GetRunRequest(run_id=run_id))).run


def of(events: list[run_pb2.RunEvent], kind: str) -> list[run_pb2.RunEvent]:
    return [e for e in events if e.WhichOneof("payload") == kind]


def tokens(run: run_pb2.Run) -> int:
    return run.usage.prompt_tokens + run.usage.completion_tokens


def check_stopped_cleanly(events: list[run_pb2.RunEvent], run: run_pb2.Run, budget: str) -> run_pb2.RunFailed:
    assert run.state == S.RUN_STATE_FAILED and run.failure_reason_code == "BUDGET_EXHAUSTED"
    (failed,) = [e.run_failed for e in of(events, "run_failed")]
    assert (failed.reason_code, failed.budget) == ("BUDGET_EXHAUSTED", budget)
    assert budget in failed.reason and "ResumeRun" in failed.reason
    # Calls in flight at the cap finished and were recorded; no step was left started without its call.
    assert len(of(events, "step_started")) == len(of(events, "llm_call_completed")) == run.llm_calls
    assert [e.seq for e in events] == list(range(1, run.head_seq + 1))
    return failed


async def test_start_run_returns_a_preflight_estimate_that_a_run_without_re_asks_meets(api: Api) -> None:
    artifact = await create_artifact(api.artifacts, 8000)
    run = await start_run(api.runs, artifact.id, **SHAPE)
    assert run.estimate.llm_calls == 9 and run.estimate.total_tokens > 0
    _, done = await run_to_end(api, run.id)
    assert done.state == S.RUN_STATE_COMPLETED
    assert done.estimate == run.estimate  # GetRun keeps it
    assert done.llm_calls == run.estimate.llm_calls
    assert tokens(done) <= run.estimate.total_tokens  # an upper bound: every call within its budget


async def test_a_call_cap_is_never_crossed_and_resume_with_a_larger_one_continues(api: Api) -> None:
    artifact = await create_artifact(api.artifacts, 8000)
    # Three sections in flight at a time: the split, then three writes fill the cap of 4 calls.
    run = await start_run(api.runs, artifact.id, **SHAPE, sibling_concurrency=3, max_llm_calls=4)
    events, stopped = await run_to_end(api, run.id)
    check_stopped_cleanly(events, stopped, "max_llm_calls")
    assert stopped.llm_calls == 4
    assert len(of(events, "node_split")) == 1 and len(of(events, "blocks_applied")) == 3

    resumed = (await api.runs.ResumeRun(run_service_pb2.ResumeRunRequest(
        run_id=run.id, request_id=str(uuid.uuid4()), options=S.RunOptions(max_llm_calls=20)))).run
    assert resumed.options.max_llm_calls == 20 and resumed.options.sibling_concurrency == 3
    rest, done = await run_to_end(api, run.id, stopped.head_seq)
    assert done.state == S.RUN_STATE_COMPLETED, done.failure_reason
    assert done.llm_calls == 9  # nothing done twice: the 5 sections left, one call each
    assert not of(rest, "node_split") and len(of(rest, "blocks_applied")) == 5


async def test_a_token_cap_counts_each_calls_whole_budget_before_it_starts(api: Api) -> None:
    # Half of what the same shape takes uncapped: the run cannot finish within it.
    probe = await start_run(api.runs, (await create_artifact(api.artifacts, 8000)).id, **SHAPE)
    _, whole = await run_to_end(api, probe.id)
    cap = tokens(whole) // 2
    artifact = await create_artifact(api.artifacts, 8000)
    run = await start_run(api.runs, artifact.id, **SHAPE, max_total_tokens=cap)
    events, stopped = await run_to_end(api, run.id)
    check_stopped_cleanly(events, stopped, "max_total_tokens")
    assert 0 < tokens(stopped) <= cap
    assert 1 <= stopped.llm_calls < 9


async def test_a_duration_cap_stops_the_run_at_the_next_call(api: Api) -> None:
    artifact = await create_artifact(api.artifacts, 8000)
    run = await start_run(api.runs, artifact.id, **SHAPE, max_duration=duration_pb2.Duration(seconds=1))
    events, stopped = await run_to_end(api, run.id)
    check_stopped_cleanly(events, stopped, "max_duration")
    assert stopped.options.max_duration.seconds == 1
    assert stopped.llm_calls < 9  # on a busy machine the first call may already be past the second


@pytest.mark.parametrize(("field", "options"), [
    ("options.max_llm_calls", S.RunOptions(max_llm_calls=-1)),
    ("options.max_total_tokens", S.RunOptions(max_total_tokens=-5)),
    ("options.max_duration", S.RunOptions(max_duration=duration_pb2.Duration(seconds=-3))),
    ("options.max_duration", S.RunOptions(max_duration=duration_pb2.Duration(seconds=31 * 86400))),
])
async def test_a_cap_out_of_range_is_invalid_and_starts_nothing(api: Api, field: str,
                                                                options: run_pb2.RunOptions) -> None:
    artifact = await create_artifact(api.artifacts, 8000)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.runs.StartRun(run_service_pb2.StartRunRequest(artifact_id=artifact.id, options=options))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err.value)
    assert (info.reason, info.metadata["field"]) == ("OPTION_OUT_OF_RANGE", field)
    listed = await api.runs.ListRuns(run_service_pb2.ListRunsRequest(artifact_id=artifact.id))
    assert not listed.runs
