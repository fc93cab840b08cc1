"""End to end over real gRPC with the offline provider: brief -> run -> events -> compiled document."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lace.v1 import artifact_service_pb2, run_pb2, run_service_pb2
from tests.helpers import create_artifact, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub


async def test_run_writes_a_structured_document(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 3000)
    run = (await runs.StartRun(run_service_pb2.StartRunRequest(artifact_id=artifact.id))).run
    events = await asyncio.wait_for(watch(runs, run.id), 60)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    final = events[-1]
    assert final.WhichOneof("payload") == "run_state_changed"
    assert final.run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    kinds = {e.WhichOneof("payload") for e in events}
    assert {"node_split", "blocks_applied", "llm_call_completed", "validation_reported"} <= kinds

    done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert done.state == run_pb2.RUN_STATE_COMPLETED
    assert done.nodes_written >= 3
    assert done.llm_calls >= done.nodes_written

    md = await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))
    assert md.content.count("\n## ") >= 2
    assert "offline" in md.content.split("---")[1]
    words = len(md.content.split())
    assert 2000 < words < 4500


async def test_ten_thousand_words_complete_validate_and_compile(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub
) -> None:
    artifact = await create_artifact(artifacts, 10_000, title="A Handbook of Grid-scale Storage")
    run = (await runs.StartRun(run_service_pb2.StartRunRequest(
        artifact_id=artifact.id, options=run_pb2.RunOptions(sibling_concurrency=4)))).run
    events = await asyncio.wait_for(watch(runs, run.id), 120)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    report = next(e.validation_reported.report for e in events if e.WhichOneof("payload") == "validation_reported")
    assert report.ok, list(report.problems)
    assert report.nodes_written == len(report.leaves) >= 10
    assert report.document_length_score > 90
    assert all(leaf.score > 50 for leaf in report.leaves)
    assert 9000 <= report.actual_words <= 11_000

    md = (await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
    html = (await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_HTML))).content
    assert md.count("\n## ") >= 3 and md.count("\n### ") >= 3
    assert html.startswith("<!DOCTYPE html>") and html.count("<section") == report.nodes_planned
    assert html.count("data-block-id=") >= report.nodes_written
