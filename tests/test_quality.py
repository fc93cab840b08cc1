"""The quality report: pure counting over a run's calls and leaves, and where a client reads it."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest

from lace.v1 import run_pb2, run_service_pb2
from lace_engine.domain import Block, BlockContent, BlockKind, Origin
from lace_engine.pipeline.quality import CallRecord, QualityReport, cross_leaf_repetition, quality_report
from tests.helpers import create_artifact, start_run, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))


def paragraph(node: uuid.UUID, text: str) -> Block:
    return Block(id=uuid.uuid4(), artifact_id=uuid.UUID(int=9), node_id=node, ordinal=0,
                 content=BlockContent(BlockKind.PARAGRAPH, text=text), origin=Origin.LLM, pinned=False, version=1)


def test_repetition_is_the_share_of_8_grams_another_leaf_also_has() -> None:
    shared = "the pump moves heat from the cold side to the warm side"  # 12 words: 5 8-grams
    assert cross_leaf_repetition([shared, shared]) == 1.0
    assert cross_leaf_repetition(["one two three four five six seven eight nine", "alpha beta gamma"]) == 0.0
    # Punctuation and case do not hide a copy; repeats inside one leaf are not cross-leaf repetition.
    # "Well, ..." adds one 8-gram of its own: 10 of the 11 are shared.
    assert cross_leaf_repetition([shared.upper() + ".", "Well, " + shared]) == pytest.approx(10 / 11)
    looped = " ".join(["la luna se ha ido y se ha acercado"] * 5)
    assert cross_leaf_repetition([looped, "nothing of the kind appears in this other section of it"]) == 0.0
    assert cross_leaf_repetition([]) == 0.0 and cross_leaf_repetition(["too short"]) == 0.0
    assert cross_leaf_repetition([looped]) == 0.0  # one leaf has no other to repeat


def test_report_counts_attempts_reasks_limits_and_headings() -> None:
    calls = [
        CallRecord(A, 1, "applied", "stop", 100),
        CallRecord(B, 1, "rejected", "LLMTruncated", 500),
        CallRecord(B, 2, "applied", "stop", 300),
        CallRecord(C, 1, "rejected", "stop", 50),
        CallRecord(C, 2, "rejected", "length", 400),
    ]
    leaves = {B: [paragraph(B, "word " * 200)], C: []}
    report = quality_report(calls, 2, leaves, ["Intro", "Costs", "costs ", "Intro", "Siting"])
    assert report == QualityReport(
        steps_applied=2, applied_first_attempt=1, reasks=3, repairs=2, steps_failed=1, calls=5, calls_at_limit=2,
        completion_tokens=1350, words_written=200, tokens_per_word=1350 / 200, duplicate_headings=2,
        repetition=0.0)
    assert QualityReport.from_json(report.to_json()) == report
    assert quality_report([], 0, {}, []).tokens_per_word == 0.0


async def test_a_completed_run_reports_its_quality_in_the_event_and_in_get_run(
        artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 2500)
    run = await start_run(runs, artifact.id)
    events = await asyncio.wait_for(watch(runs, run.id), 60)
    reported = [e.validation_reported.report for e in events if e.WhichOneof("payload") == "validation_reported"]
    (report,) = reported
    quality = report.quality
    completed = [e.step_completed for e in events if e.WhichOneof("payload") == "step_completed"]
    calls = [e.llm_call_completed for e in events if e.WhichOneof("payload") == "llm_call_completed"]
    assert quality.steps_applied == len(completed) == quality.applied_first_attempt  # the offline provider
    assert (quality.reasks, quality.steps_failed, quality.calls_at_limit) == (0, 0, 0)
    assert quality.calls == len(calls)
    assert quality.completion_tokens == sum(c.usage.completion_tokens for c in calls)
    assert quality.words_written == report.actual_words > 0
    assert quality.tokens_per_word == pytest.approx(quality.completion_tokens / quality.words_written)
    assert 0.0 <= quality.repetition < 0.5

    done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert done.state == run_pb2.RUN_STATE_COMPLETED
    assert done.HasField("validation") and done.validation == report
    pending = await start_run(runs, (await create_artifact(artifacts, 500)).id)
    assert not pending.HasField("validation")  # only a completed run has one
