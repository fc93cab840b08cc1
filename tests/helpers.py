"""Small helpers shared by the gRPC tests: create, start, watch, and read ErrorInfo."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

BRIEF = "A report on grid-scale energy storage for regional planners: technologies, costs, siting, policy."


async def create_artifact(artifacts: ArtifactServiceAsyncStub, words: int = 2000, title: str = "Storage",
                          request_id: str | None = None) -> artifact_pb2.Artifact:
    response = await artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
        artifact=artifact_pb2.Artifact(title=title, brief=BRIEF, target_words=words),
        request_id=request_id or str(uuid.uuid4())))
    return response.artifact


async def start_run(runs: RunServiceAsyncStub, artifact_id: str, **options: Any) -> run_pb2.Run:
    response = await runs.StartRun(run_service_pb2.StartRunRequest(
        artifact_id=artifact_id, request_id=str(uuid.uuid4()), options=run_pb2.RunOptions(**options)))
    return response.run


async def watch(runs: RunServiceAsyncStub, run_id: str, cursor: int = 0) -> list[run_pb2.RunEvent]:
    events: list[run_pb2.RunEvent] = []
    async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run_id, cursor=cursor)):
        events.extend(response.events)
    return events


async def until_state(runs: RunServiceAsyncStub, run_id: str, state: int, cursor: int = 0) -> list[run_pb2.RunEvent]:
    """The run's events after `cursor` up to its move to `state` (the stream of a waiting run does not end)."""
    events: list[run_pb2.RunEvent] = []

    async def read() -> None:
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run_id, cursor=cursor)):
            for e in response.events:
                events.append(e)
                if e.WhichOneof("payload") == "run_state_changed" and e.run_state_changed.to_state == state:
                    return
        raise AssertionError(f"the run ended without reaching {run_pb2.RunState.Name(state)}")

    await asyncio.wait_for(read(), 120)  # a bound on a hang, not a timing assertion
    return events


def final_state(events: list[run_pb2.RunEvent]) -> int:
    assert events and events[-1].WhichOneof("payload") == "run_state_changed"
    return events[-1].run_state_changed.to_state


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The single ErrorInfo the server puts in a failed call's status details."""
    status = rpc_status.from_call(err)
    assert status is not None, "no rich status details"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert len(infos) == 1
    return infos[0]


def in_order(haystack: str, needles: list[str]) -> bool:
    """Whether every needle occurs in `haystack`, each after the one before it."""
    at = -1
    for needle in needles:
        at = haystack.find(needle, at + 1)
        if at < 0:
            return False
    return True
