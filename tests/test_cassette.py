"""Cassettes: a run recorded with LACE_LLM_RECORD replays with LACE_LLM=replay to the same document.

The shipped cassette (tests/cassettes/) was recorded from the real local model (Gemma 3 270M through
llama-server), so the suite exercises real model output even on a machine that has not built
llama-server yet. Re-record it with the command in tests/cassettes/README.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.real_model import BRIEFS, LEAF_WORDS
from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.domain import StepKind
from lace_engine.llm.base import LLMBadRequest, LLMRequest, LLMTruncated
from lace_engine.llm.cassette import CASSETTE_FILE, RecordingProvider, ReplayProvider, request_digest
from lace_engine.llm.offline import OfflineProvider
from lace_engine.pipeline.proposal_schema import content_schema
from lace_engine.pipeline.proposals import render_task_spec
from tests.conftest import serve_fresh

CASSETTES = Path(__file__).parent / "cassettes"
# The shipped cassette was recorded from bench.real_model's second brief.
REAL = BRIEFS[1]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def write_request(target: int, seed: int) -> LLMRequest:
    task = {"step": "write", "title": "Costs", "intent": "What it costs.", "target_words": target, "depth": 1,
            "instruction": ""}
    call = content_schema(target)
    return LLMRequest(step=StepKind.WRITE, system="Write.", user="Write it.\n" + render_task_spec(task),
                      schema_name=call.name, schema=call.schema, task=task, seed=seed,
                      max_output_tokens=call.max_output_tokens)


class Failing:
    """A provider whose every call is cut off, to record an error."""

    name, model = "failing", "m"

    async def complete(self, request: LLMRequest) -> Any:
        raise LLMTruncated("cut off", provider="failing", model="m", completion_tokens=7, latency_ms=3)

    async def aclose(self) -> None:
        return None


async def test_recording_then_replay_serves_the_same_answers_in_order(tmp_path: Path) -> None:
    recorder = RecordingProvider(OfflineProvider(), tmp_path)
    first, second = write_request(300, 1), write_request(300, 2)
    assert request_digest(first) == request_digest(second)  # the seed is not what the model is shown
    answers = [await recorder.complete(first), await recorder.complete(second)]
    assert answers[0].data != answers[1].data
    with pytest.raises(LLMTruncated):
        await RecordingProvider(Failing(), tmp_path).complete(write_request(500, 1))

    replay = ReplayProvider(tmp_path / CASSETTE_FILE)
    assert (replay.name, replay.model, replay.recorded_provider, replay.remaining) == (
        "replay", "lace-offline-1", "offline", 3)
    # Same digest twice: answered in recorded order, whatever the seed now.
    for answer in answers:
        again = await replay.complete(write_request(300, 99))
        assert (again.data, again.completion_tokens, again.finish_reason) == (
            answer.data, answer.completion_tokens, answer.finish_reason)
    with pytest.raises(LLMTruncated) as raised:
        await replay.complete(write_request(500, 5))
    assert (raised.value.message, raised.value.completion_tokens) == ("cut off", 7)
    with pytest.raises(LLMBadRequest):  # used up, and never a guess
        await replay.complete(write_request(300, 1))
    assert replay.remaining == 0


async def _run(target: str, title: str, brief: str, words: int, leaf_words: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
        artifact = (await artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title=title, brief=brief, target_words=words),
            request_id=str(uuid.uuid4())))).artifact
        run = (await runs.StartRun(run_service_pb2.StartRunRequest(
            artifact_id=artifact.id, request_id=str(uuid.uuid4()),
            options=run_pb2.RunOptions(leaf_words=leaf_words)))).run
        events: list[run_pb2.RunEvent] = []
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
            events.extend(response.events)
        md = (await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
            artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
        done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    return {"events": events, "markdown": md, "run": done}


def comparable(events: list[run_pb2.RunEvent]) -> list[dict[str, Any]]:
    """Event payloads as JSON with what a replay changes taken out: ids, timestamps, latencies, provider."""
    from google.protobuf.json_format import MessageToDict

    out = []
    for e in events:
        d = MessageToDict(e)
        for key in ("createTime", "runId"):
            d.pop(key, None)
        call = d.get("llmCallCompleted")
        if call is not None:
            call.pop("latencyMs", None)
            call.pop("provider", None)
        d.get("runStateChanged", {}).pop("reason", None)  # "started" vs the same; kept out for resumes
        out.append(json.loads(_UUID.sub("<id>", json.dumps(d, sort_keys=True))))
    return out


def body(markdown: str) -> str:
    """The compiled document without its front matter (artifact id, version, provider)."""
    return markdown.split("---", 2)[2]


async def test_a_recorded_run_replays_to_the_same_document_and_events(pg_server_url: str, tmp_path: Path) -> None:
    brief = ("Tidal energy", "A short report on tidal energy for coastal planners.", 1800, 700)
    async with serve_fresh(pg_server_url, env={"LACE_LLM": "offline", "LACE_LLM_RECORD": str(tmp_path)}) as (
            target, _running, _url):
        recorded = await _run(target, *brief)
    assert recorded["run"].state == run_pb2.RUN_STATE_COMPLETED
    cassette = tmp_path / CASSETTE_FILE
    env = {"LACE_LLM": "replay", "LACE_LLM_CASSETTE": str(cassette)}
    async with serve_fresh(pg_server_url, env=env) as (target, running, _url):
        replayed = await _run(target, *brief)
        assert running.engine.provider.remaining == 0  # type: ignore[attr-defined]
    assert replayed["run"].state == run_pb2.RUN_STATE_COMPLETED
    assert (replayed["run"].provider, recorded["run"].provider) == ("replay", "offline")
    assert body(replayed["markdown"]) == body(recorded["markdown"])
    assert comparable(replayed["events"]) == comparable(recorded["events"])
    assert len(cassette.read_text().splitlines()) == recorded["run"].llm_calls


async def test_the_shipped_real_model_cassette_replays_a_real_models_run(pg_server_url: str) -> None:
    cassette = CASSETTES / "gemma-3-270m-cycling-to-work.jsonl"
    records = [json.loads(line) for line in cassette.read_text().splitlines()]
    assert {r["provider"] for r in records} == {"local"}
    assert {r["model"] for r in records} == {"gemma-3-270m-q4_k_m.gguf"}
    async with serve_fresh(pg_server_url, env={"LACE_LLM": "replay", "LACE_LLM_CASSETTE": str(cassette)}) as (
            target, running, _url):
        replayed = await asyncio.wait_for(_run(target, REAL.title, REAL.brief, REAL.words, LEAF_WORDS), 120)
        assert running.engine.provider.remaining == 0  # type: ignore[attr-defined]
    events = replayed["events"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    calls = [e.llm_call_completed for e in events if e.WhichOneof("payload") == "llm_call_completed"]
    assert len(calls) == len(records) and all(c.model == "gemma-3-270m-q4_k_m.gguf" for c in calls)
    # What the real model wrote came back word for word: every applied section is in the document.
    written = [r["data"] for r in records if "data" in r and "blocks" in r["data"]]
    applied = [e.blocks_applied for e in events if e.WhichOneof("payload") == "blocks_applied"]
    assert applied and len(applied) <= len(written)
    texts = {" ".join(b["text"].split()) for data in written for b in data["blocks"]}
    assert sum(t in " ".join(replayed["markdown"].split()) for t in texts) >= len(applied)
