"""The control plane over real gRPC: validation, status codes with ErrorInfo, idempotency, pagination."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2
from tests.helpers import create_artifact, error_info, final_state, start_run, until_state, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


async def expect(code: grpc.StatusCode, reason: str, call: Awaitable[object]) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    info = error_info(raised.value)
    assert info.reason == reason
    assert info.domain == "lace.dev"
    return info


@pytest.mark.parametrize(
    ("artifact", "reason", "field"),
    [
        (artifact_pb2.Artifact(title="", brief="b", target_words=1000), "EMPTY_TITLE", "artifact.title"),
        (artifact_pb2.Artifact(title="   ", brief="b", target_words=1000), "EMPTY_TITLE", "artifact.title"),
        (artifact_pb2.Artifact(title="t", brief="", target_words=1000), "EMPTY_BRIEF", "artifact.brief"),
        (artifact_pb2.Artifact(title="t", brief="b", target_words=99), "TARGET_WORDS_OUT_OF_RANGE",
         "artifact.target_words"),
        (artifact_pb2.Artifact(title="t", brief="b", target_words=10_000_000), "TARGET_WORDS_OUT_OF_RANGE",
         "artifact.target_words"),
        (artifact_pb2.Artifact(title="x" * 301, brief="b", target_words=1000), "FIELD_TOO_LONG", "artifact.title"),
    ],
)
async def test_create_artifact_rejects_bad_input_and_writes_nothing(
    artifacts: ArtifactServiceAsyncStub, database_url: str, artifact: artifact_pb2.Artifact, reason: str, field: str
) -> None:
    before = count(database_url, "artifacts")
    info = await expect(grpc.StatusCode.INVALID_ARGUMENT, reason, artifacts.CreateArtifact(
        artifact_service_pb2.CreateArtifactRequest(artifact=artifact, request_id=str(uuid.uuid4()))))
    assert info.metadata["field"] == field
    assert count(database_url, "artifacts") == before


async def test_unknown_and_malformed_ids(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    unknown = str(uuid.uuid4())
    await expect(grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND",
                 artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(artifact_id=unknown)))
    await expect(grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", runs.GetRun(run_service_pb2.GetRunRequest(run_id=unknown)))
    await expect(grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND",
                 runs.StartRun(run_service_pb2.StartRunRequest(artifact_id=unknown)))
    info = await expect(grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_ID",
                        runs.GetRun(run_service_pb2.GetRunRequest(run_id="not-a-uuid")))
    assert info.metadata["field"] == "run_id"
    await expect(grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD",
                 artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest()))
    await expect(grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND",
                 watch(runs, unknown))
    await expect(grpc.StatusCode.NOT_FOUND, "BLOCK_NOT_FOUND", artifacts.ListBlockChanges(
        artifact_service_pb2.ListBlockChangesRequest(block_id=unknown)))


async def test_idempotent_create_and_reused_request_id(artifacts: ArtifactServiceAsyncStub) -> None:
    key = str(uuid.uuid4())
    first = await create_artifact(artifacts, request_id=key)
    again = await create_artifact(artifacts, request_id=key)
    assert first.id == again.id
    await expect(grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED", artifacts.CreateArtifact(
        artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title="Other", brief="b", target_words=500), request_id=key)))


async def test_start_run_rules(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 600)
    key = str(uuid.uuid4())
    # review_plan: the run stays active (AWAITING_REVIEW) until resumed, however fast it is planned;
    # a one-call run could otherwise end before the second start arrives.
    request = run_service_pb2.StartRunRequest(artifact_id=artifact.id, request_id=key,
                                              options=run_pb2.RunOptions(review_plan=True))
    run = (await runs.StartRun(request)).run
    assert (await runs.StartRun(request)).run.id == run.id  # same request_id, same run
    info = await expect(grpc.StatusCode.FAILED_PRECONDITION, "ARTIFACT_HAS_ACTIVE_RUN", runs.StartRun(
        run_service_pb2.StartRunRequest(artifact_id=artifact.id, request_id=str(uuid.uuid4()))))
    assert info.metadata["run_id"] == run.id
    events = await until_state(runs, run.id, run_pb2.RUN_STATE_AWAITING_REVIEW)
    await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id))
    assert final_state(await watch(runs, run.id, cursor=events[-1].seq)) == run_pb2.RUN_STATE_COMPLETED
    for options, field in [(run_pb2.RunOptions(leaf_words=10), "options.leaf_words"),
                           (run_pb2.RunOptions(max_depth=99), "options.max_depth"),
                           (run_pb2.RunOptions(sibling_concurrency=1000), "options.sibling_concurrency")]:
        info = await expect(grpc.StatusCode.INVALID_ARGUMENT, "OPTION_OUT_OF_RANGE", runs.StartRun(
            run_service_pb2.StartRunRequest(artifact_id=artifact.id, options=options)))
        assert info.metadata["field"] == field


async def test_illegal_transitions_on_finished_run(artifacts: ArtifactServiceAsyncStub,
                                                   runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 500)
    run = await start_run(runs, artifact.id)
    await watch(runs, run.id)
    for call in (runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id)),
                 runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id)),
                 runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id))):
        info = await expect(grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_RUN_TRANSITION", call)
        assert info.metadata["state"] == "completed"


async def test_negative_cursor_and_after_seq(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 500)
    run = await start_run(runs, artifact.id)
    await expect(grpc.StatusCode.INVALID_ARGUMENT, "NEGATIVE_CURSOR", watch(runs, run.id, cursor=-1))
    await expect(grpc.StatusCode.INVALID_ARGUMENT, "NEGATIVE_CURSOR", runs.ListRunEvents(
        run_service_pb2.ListRunEventsRequest(run_id=run.id, after_seq=-5)))


async def test_list_run_events_pagination_and_filter(artifacts: ArtifactServiceAsyncStub,
                                                     runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 3000)
    run = await start_run(runs, artifact.id)
    streamed = await watch(runs, run.id)
    pages: list[run_pb2.RunEvent] = []
    token = ""
    while True:
        page = await runs.ListRunEvents(run_service_pb2.ListRunEventsRequest(
            run_id=run.id, page_size=7, page_token=token))
        assert len(page.events) <= 7
        pages.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    assert [e.seq for e in pages] == [e.seq for e in streamed] == list(range(1, len(streamed) + 1))
    assert pages == streamed

    split = await runs.ListRunEvents(run_service_pb2.ListRunEventsRequest(
        run_id=run.id, event_types=[run_pb2.RUN_EVENT_TYPE_BLOCKS_APPLIED], page_size=1000))
    assert split.events and all(e.WhichOneof("payload") == "blocks_applied" for e in split.events)
    assert len(split.events) == sum(1 for e in streamed if e.WhichOneof("payload") == "blocks_applied")

    tail = await runs.ListRunEvents(run_service_pb2.ListRunEventsRequest(run_id=run.id, after_seq=len(streamed) - 2))
    assert [e.seq for e in tail.events] == [len(streamed) - 1, len(streamed)]

    await expect(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", runs.ListRunEvents(
        run_service_pb2.ListRunEventsRequest(run_id=run.id, page_token="garbage")))
    first = await runs.ListRunEvents(run_service_pb2.ListRunEventsRequest(run_id=run.id, page_size=2))
    await expect(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", runs.ListRunEvents(
        run_service_pb2.ListRunEventsRequest(run_id=run.id, page_size=2, page_token=first.next_page_token,
                                             after_seq=3)))


async def test_list_artifacts_pages_newest_first(artifacts: ArtifactServiceAsyncStub) -> None:
    made = [(await create_artifact(artifacts, 500, title=f"Paged {i}")).id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await artifacts.ListArtifacts(artifact_service_pb2.ListArtifactsRequest(page_size=2,
                                                                                       page_token=token))
        seen.extend(a.id for a in page.artifacts)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    positions = [seen.index(a) for a in made]
    assert positions == sorted(positions, reverse=True)


async def test_get_artifact_full_view_and_compile(artifacts: ArtifactServiceAsyncStub,
                                                  runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 2500)
    run = await start_run(runs, artifact.id)
    await watch(runs, run.id)
    full = await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
    assert full.nodes[0].id == full.artifact.root_node_id
    assert all(n.state in (artifact_pb2.NODE_STATE_SPLIT, artifact_pb2.NODE_STATE_WRITTEN) for n in full.nodes)
    assert full.blocks and full.artifact.word_count == sum(n.word_count for n in full.nodes)
    html = await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_HTML))
    assert html.media_type == "text/html"
    for block in full.blocks:
        assert f'data-block-id="{block.id}"' in html.content
    again = await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_HTML))
    assert again.content == html.content and again.artifact_version == html.artifact_version
    await expect(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FORMAT", artifacts.CompileArtifact(
        artifact_service_pb2.CompileArtifactRequest(artifact_id=artifact.id)))


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "lace.v1.RunService", "lace.v1.ArtifactService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> reflection_pb2.ServerReflectionResponse:
        async for response in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")])):
            return response
        raise AssertionError("no reflection response")

    names = {s.name for s in (await ask()).list_services_response.service}
    assert {"lace.v1.ArtifactService", "lace.v1.RunService", "grpc.health.v1.Health"} <= names
