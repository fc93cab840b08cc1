"""A real model: LACE_LLM=local runs llama.cpp's llama-server (built from source, cached) with Gemma 3 270M.

Nothing here asserts a timing or a wording of the model's text: only what LACE guarantees with any
model. A one-write run completes; a run with splits ends COMPLETED, or FAILED with a reason naming
the section (a tiny model's split may break a rule with no single fix, such as an empty title, on
every attempt); its events are
exactly 1..N, every call was sent with a budget derived from its schema, no call ran to that budget,
and pause and cancel work while a real call is in flight. The model is a tiny *base* model; what
it writes is in docs/performance.md, read, not asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest

from lace.v1 import artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.llm.local import llama_server_binary
from lace_engine.pipeline.proposal_schema import content_schema, split_schema
from lace_engine.pipeline.quality import AT_LIMIT
from lace_engine.pipeline.strategy import MAX_CHILDREN, MIN_CHILDREN
from lace_server.server import Running
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, start_run, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

pytestmark = pytest.mark.real_model

S = run_pb2
# A call takes seconds to a minute on 2 busy cores; generous, never asserted.
RUN_DEADLINE_S = 1500


@dataclass
class Local:
    artifacts: ArtifactServiceAsyncStub
    runs: RunServiceAsyncStub
    running: Running
    channel: grpc.aio.Channel


@pytest.fixture(scope="module")
async def local(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Local]:
    # Built once per machine (about 5 minutes on 2 cores) when scripts/test.sh has not built it yet.
    await asyncio.to_thread(llama_server_binary)
    env = {"LACE_LLM": "local", "LACE_DATA_DIR": str(tmp_path_factory.mktemp("local"))}
    async with serve_fresh(pg_server_url, env=env) as (target, running, _url), \
            grpc.aio.insecure_channel(target) as channel:
        yield Local(ArtifactServiceStub(channel), RunServiceStub(channel), running, channel)


def of(events: list[run_pb2.RunEvent], kind: str) -> list[run_pb2.RunEvent]:
    return [e for e in events if e.WhichOneof("payload") == kind]


@pytest.mark.timeout(RUN_DEADLINE_S + 60)
@pytest.mark.parametrize(("words", "leaf_words"), [(600, 1000), (2000, 700)])
async def test_a_real_model_run_ends_cleanly_within_its_budgets(local: Local, words: int, leaf_words: int) -> None:
    artifact = await create_artifact(local.artifacts, words, title="Composting at home")
    run = await start_run(local.runs, artifact.id, leaf_words=leaf_words, max_proposal_retries=2)
    events = await asyncio.wait_for(watch(local.runs, run.id), RUN_DEADLINE_S)
    done = (await local.runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert done.head_seq == len(events)
    assert done.state in (S.RUN_STATE_COMPLETED, S.RUN_STATE_FAILED)
    assert (done.provider, done.model) == ("local", "gemma-3-270m-q4_k_m.gguf")
    calls = [e.llm_call_completed for e in of(events, "llm_call_completed")]
    assert calls and done.llm_calls == len(calls)
    splits = {e.node_split.node_id: e.node_split for e in of(events, "node_split")}
    targets = {artifact.root_node_id: words} | {c.node_id: c.target_words for s in splits.values() for c in s.children}
    for call in calls:
        # The budget is the call's own schema's (the tiny model gets the prose style), not a constant.
        target = targets[call.node_id]
        if call.step == S.STEP_KIND_SPLIT:
            count = min(max(-(-target // leaf_words), MIN_CHILDREN), MAX_CHILDREN)  # as strategy.decide
            expected = split_schema(count, target).max_output_tokens
        else:
            expected = content_schema(target, style="prose").max_output_tokens
        assert call.max_output_tokens == expected
        # Grammar-constrained decoding of a bounded schema finishes; no call ran to its limit.
        assert call.finish_reason not in AT_LIMIT, call
        assert call.usage.completion_tokens <= call.max_output_tokens
        # The model was shown the whole prompt: a chat template that renders the messages away
        # once left it 3 prompt tokens a call (the estimate is within 2x of any tokenizer's count).
        assert call.usage.prompt_tokens >= call.context_tokens // 2 > 0
    if words <= leaf_words:
        # One write in the prose style: every answer its grammar admits passes Apply, so it completes.
        # (Not "no split event": a split that failed on every attempt has none either.)
        assert done.state == S.RUN_STATE_COMPLETED, done.failure_reason
    if done.state == S.RUN_STATE_FAILED:
        # A split can fail: a repeated title is merged (a repair), but other faults have no single fix.
        (failed,) = of(events, "run_failed")
        # A model's bad answers fail a section, named; never the engine.
        assert failed.run_failed.node_id and "internal error" not in failed.run_failed.reason
        return
    report = of(events, "validation_reported")[-1].validation_reported.report
    md = (await local.artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
    for split in splits.values():
        for child in split.children:
            assert " ".join(child.title.split()) in md
    assert report.nodes_written == len(of(events, "blocks_applied")) >= 1


async def _until(events: list[run_pb2.RunEvent], kind: str, stream: AsyncIterator[run_service_pb2.StreamRunResponse]) \
        -> None:
    async for response in stream:
        events.extend(response.events)
        if any(e.WhichOneof("payload") == kind for e in response.events):
            return
    raise AssertionError(f"stream ended before a {kind} event")


@pytest.mark.timeout(RUN_DEADLINE_S + 60)
async def test_pause_resume_and_cancel_while_a_real_call_is_in_flight(local: Local) -> None:
    artifact = await create_artifact(local.artifacts, 2000, title="Composting at home")
    run = await start_run(local.runs, artifact.id, leaf_words=700, max_proposal_retries=2)
    events: list[run_pb2.RunEvent] = []
    stream = aiter(local.runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)))
    await asyncio.wait_for(_until(events, "step_started", stream), RUN_DEADLINE_S)

    # Pause with the first call in flight: it finishes and is recorded, nothing new starts.
    paused = await local.runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
    assert paused.run.state in (S.RUN_STATE_PAUSING, S.RUN_STATE_PAUSED)
    while not any(e.WhichOneof("payload") == "run_state_changed"
                  and e.run_state_changed.to_state == S.RUN_STATE_PAUSED for e in events):
        await asyncio.wait_for(_until(events, "run_state_changed", stream), RUN_DEADLINE_S)
    pausing = next(i for i, e in enumerate(events) if e.WhichOneof("payload") == "run_state_changed"
                   and e.run_state_changed.to_state == S.RUN_STATE_PAUSING)
    assert not of(events[pausing:], "step_started")
    assert len(of(events, "llm_call_completed")) == 1  # the in-flight call was kept, not aborted

    await local.runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id))
    resumed_at = len(events)
    await asyncio.wait_for(_until(events, "step_started", stream), RUN_DEADLINE_S)
    calls_before_cancel = len(of(events, "llm_call_completed"))
    # Cancel with a real call in flight: it is aborted, and the run ends CANCELLED without applying it.
    await local.runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id))
    async for response in stream:
        events.extend(response.events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].run_state_changed.to_state == S.RUN_STATE_CANCELLED
    assert of(events[resumed_at:], "step_started")
    assert len(of(events, "llm_call_completed")) == calls_before_cancel
    done = (await local.runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert done.state == S.RUN_STATE_CANCELLED and done.head_seq == len(events)


@pytest.mark.timeout(RUN_DEADLINE_S + 60)
async def test_a_real_model_writes_from_two_sources_and_cites_only_passages_it_was_given(
        local: Local, tmp_path_factory: pytest.TempPathFactory) -> None:
    from lace.v1 import source_service_pb2
    from lace.v1.source_service_pb2_grpc import SourceServiceStub
    from tests.support import source_docs

    artifact = await create_artifact(local.artifacts, 600, title="Grid storage")
    sources = SourceServiceStub(local.channel)
    for title, media_type, body in (("Storage notes", "text/markdown", {"text": source_docs.MARKDOWN}),
                                    ("Siting and policy", "application/pdf", {"content": source_docs.pdf_bytes()})):
        await sources.AddSource(source_service_pb2.AddSourceRequest(
            artifact_id=artifact.id, title=title, media_type=media_type, **body))
    run = await start_run(local.runs, artifact.id, max_proposal_retries=2)
    events = await asyncio.wait_for(watch(local.runs, run.id), RUN_DEADLINE_S)
    done = (await local.runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert done.state == S.RUN_STATE_COMPLETED, done.failure_reason
    calls = [e.llm_call_completed for e in of(events, "llm_call_completed")]
    assert all(c.finish_reason not in AT_LIMIT for c in calls)

    full = await local.artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
    for block in full.blocks:
        changes = await local.artifacts.ListBlockChanges(artifact_service_pb2.ListBlockChangesRequest(
            block_id=block.id))
        # Whatever the model cited resolves to a passage of this artifact's sources, text and all.
        assert {p.id for p in changes.cited_passages} == set(block.cited_passage_ids)
    md = (await local.artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
    cited = list(dict.fromkeys(p for b in full.blocks for p in b.cited_passage_ids))
    assert all(f"[^{n}]:" in md for n in range(1, len(cited) + 1)) and f"[^{len(cited) + 1}]:" not in md
