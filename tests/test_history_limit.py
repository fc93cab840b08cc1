"""LACE_MAX_EVENTS_PER_RUN over real gRPC: a warning event at 80% of the limit, then a clean failure
(EVENT_LIMIT) before a step could take the run past it; what was applied stays."""

from __future__ import annotations

import grpc
import pytest

from lace.v1 import run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.errors import InvalidArgument
from tests.conftest import make_settings, serve_fresh
from tests.helpers import create_artifact, final_state, start_run, watch

LIMIT = 150


@pytest.mark.timeout(120)
async def test_a_run_is_warned_at_80_percent_and_fails_cleanly_before_the_limit(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, max_events_per_run=LIMIT) as (target, _running, _url), \
            grpc.aio.insecure_channel(target) as channel:
        artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
        artifact = await create_artifact(artifacts, 40000)  # about 60 steps: far more than 150 events hold
        run = await start_run(runs, artifact.id, leaf_words=1000)
        events = await watch(runs, run.id)
        done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run

    assert final_state(events) == run_pb2.RUN_STATE_FAILED
    assert done.failure_reason_code == "EVENT_LIMIT" and "LACE_MAX_EVENTS_PER_RUN" in done.failure_reason
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and len(events) <= LIMIT
    (warning,) = [e for e in events if e.WhichOneof("payload") == "history_limit_approaching"]
    assert warning.history_limit_approaching.limit == LIMIT
    assert warning.history_limit_approaching.events >= LIMIT * 8 // 10 - 5  # at the step that crossed 80%
    failed = next(e for e in events if e.WhichOneof("payload") == "run_failed")
    assert failed.run_failed.reason_code == "EVENT_LIMIT" and warning.seq < failed.seq
    # Steps applied before the limit are kept, and every started step finished (none was cut).
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds.count("step_started") == kinds.count("step_completed") > 0


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        make_settings(max_events_per_run=-1)
