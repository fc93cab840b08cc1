"""End to end over real gRPC with the `openai` provider aimed at the real OpenAI-compatible test server.

One test server and one LACE server (on its own fresh database) serve the whole module. Faults are
injected into the test server for the first request(s) of a run; each test checks what the run's
events, its accounting and the stored IR show of them.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import psycopg
import pytest

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.pipeline.proposal_schema import BOUND_KEYWORDS, content_schema, portable_schema, split_schema
from lace_engine.pipeline.proposals import parse_task_spec
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, start_run, watch
from tests.support.openai_server import (
    Fault,
    OpenAICompatibleServer,
    StepFilter,
    bad_budgets,
    malformed,
    rate_limit,
    refusal,
    schema_keys,
    server_error,
    timeout,
    truncated,
)

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

S = run_pb2
MODEL = "test-model"
TIMEOUT_S = 1.0
# HTTP retries of one LLM call inside the provider (LACE_LLM_MAX_RETRIES).
HTTP_RETRIES = 2
# Long enough for a leaf of 1000 words and a split, short enough that a failure shows quickly.
RUN_DEADLINE_S = 60


@dataclass
class Lace:
    artifacts: ArtifactServiceAsyncStub
    runs: RunServiceAsyncStub
    database_url: str
    llm: OpenAICompatibleServer


@dataclass
class Outcome:
    artifact: artifact_pb2.Artifact
    run: run_pb2.Run  # as GetRun returns it after the run ended
    events: list[run_pb2.RunEvent]
    http_requests: int  # chat completion requests the run sent to the test server
    bodies: list[dict[str, Any]]  # their bodies, in order
    portable: bool = False  # the server refuses bounded schemas, so portable ones are expected too

    def of(self, kind: str) -> list[run_pb2.RunEvent]:
        return [e for e in self.events if e.WhichOneof("payload") == kind]

    def kinds_for(self, node_id: str) -> list[str]:
        """The payload kinds of the events about one node, in order."""
        out = []
        for e in self.events:
            kind = e.WhichOneof("payload")
            assert kind is not None
            payload = getattr(e, kind)
            if getattr(payload, "node_id", None) == node_id:
                out.append(kind)
        return out


@pytest.fixture(scope="module")
async def llm() -> AsyncIterator[OpenAICompatibleServer]:
    server = OpenAICompatibleServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def lace(pg_server_url: str, llm: OpenAICompatibleServer) -> AsyncIterator[Lace]:
    env = {
        "LACE_LLM": "openai", "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test",
        "LACE_LLM_MODEL": MODEL, "LACE_LLM_TIMEOUT_S": f"{TIMEOUT_S:g}", "LACE_LLM_MAX_RETRIES": str(HTTP_RETRIES),
    }
    async with serve_fresh(pg_server_url, env=env) as (target, _running, database_url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield Lace(ArtifactServiceStub(channel), RunServiceStub(channel), database_url, llm)


@pytest.fixture(autouse=True)
def no_leftover_faults(llm: OpenAICompatibleServer) -> Iterator[None]:
    llm.clear_faults()
    yield
    llm.clear_faults()


async def run_artifact(lace: Lace, words: int) -> Outcome:
    """Creates an artifact, runs it to its end, and checks what every run must satisfy."""
    artifact = await create_artifact(lace.artifacts, words)
    before = lace.llm.request_count
    run = await start_run(lace.runs, artifact.id)
    events = await asyncio.wait_for(watch(lace.runs, run.id), RUN_DEADLINE_S)
    done = (await lace.runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    sent = lace.llm.request_count - before
    bodies = list(lace.llm.requests)[-sent:] if sent else []
    outcome = Outcome(artifact, done, events, sent, bodies, portable=bool(lace.llm.rejected_keywords))
    check_every_run(outcome)
    return outcome


def check_every_run(o: Outcome) -> None:
    events = o.events
    # Seqs are exactly 1..N, and the stream ends with the run's terminal state.
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].WhichOneof("payload") == "run_state_changed"
    assert events[-1].run_state_changed.to_state == o.run.state
    assert o.run.head_seq == len(events)
    assert (o.run.provider, o.run.model) == ("openai", MODEL)

    # The run's accounting is the sum over its LlmCallCompleted events.
    calls = o.of("llm_call_completed")
    assert o.run.llm_calls == len(calls)
    assert o.run.usage.prompt_tokens == sum(c.llm_call_completed.usage.prompt_tokens for c in calls)
    assert o.run.usage.completion_tokens == sum(c.llm_call_completed.usage.completion_tokens for c in calls)
    assert o.run.llm_latency_ms == sum(c.llm_call_completed.latency_ms for c in calls)
    assert all((c.llm_call_completed.provider, c.llm_call_completed.model) == ("openai", MODEL) for c in calls)
    # Every LLM call is one step attempt, announced by a StepStarted.
    assert len(o.of("step_started")) == len(calls)

    # Every request asked for strict structured output with the step's schema.
    assert len(o.bodies) == o.http_requests
    for body in o.bodies:
        assert body["model"] == MODEL
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        # The schema of the call's own task: children and budgets bounded for this node, not one for all.
        task = _task(body)
        if fmt["json_schema"]["name"] == "split_proposal":
            call = split_schema(task["child_count"], task["target_words"])
        else:
            assert fmt["json_schema"]["name"] == "content_proposal"
            call = content_schema(task["target_words"])
        assert fmt["json_schema"]["schema"] in [call.schema, *([portable_schema(call.schema)] if o.portable else [])]
        assert body["max_tokens"] == call.max_output_tokens < 8192


def _task(body: dict[str, Any]) -> dict[str, Any]:
    """The TASK line of a request body's user message."""
    return parse_task_spec(body["messages"][-1]["content"])


def check_completed(o: Outcome) -> None:
    assert o.run.state == S.RUN_STATE_COMPLETED, o.run.failure_reason
    assert not o.of("run_failed") and o.run.failure_reason == ""
    report = o.of("validation_reported")[-1].validation_reported.report
    assert report.ok, list(report.problems)
    # Every planned section was split or written exactly once.
    split = collections.Counter(e.node_split.node_id for e in o.of("node_split"))
    written = collections.Counter(e.blocks_applied.node_id for e in o.of("blocks_applied"))
    planned = {c.node_id for e in o.of("node_split") for c in e.node_split.children}
    assert all(n == 1 for n in [*split.values(), *written.values()])
    assert planned | {o.artifact.root_node_id} == set(split) | set(written)
    assert report.nodes_written == len(written) == o.run.nodes_written


async def test_clean_run_is_structured_accounted_and_strict(lace: Lace) -> None:
    o = await run_artifact(lace, 2500)
    check_completed(o)
    assert o.http_requests == o.run.llm_calls  # no retries, no re-asks
    assert not o.of("proposal_rejected")
    assert all(e.step_completed.attempts == 1 for e in o.of("step_completed"))

    # The provider's usage is what the server reported (it counts len(system + user) // 4 per request).
    reported = sum((len(b["messages"][0]["content"]) + len(b["messages"][1]["content"])) // 4 for b in o.bodies)
    assert o.run.usage.prompt_tokens == reported > 0
    assert o.run.usage.completion_tokens > 0 and o.run.llm_latency_ms >= 0
    steps = [b["response_format"]["json_schema"]["name"] for b in o.bodies]
    assert steps[0] == "split_proposal" and steps.count("content_proposal") == len(o.of("blocks_applied")) >= 3

    md = (await lace.artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=o.artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
    front = md.split("---")[1]
    assert "llm_provider: openai" in front
    lines = md.splitlines()
    sections = [line for line in lines if line.startswith("## ")]
    children = [c.title for e in o.of("node_split") if e.node_split.node_id == o.artifact.root_node_id
                for c in e.node_split.children]
    assert len(sections) >= len(children) >= 3
    for child in children:
        assert f"## {' '.join(child.split())}" in lines
    assert 1500 < len(md.split()) < 4500


@pytest.mark.parametrize("fault", [
    pytest.param(rate_limit(0.2), id="429-retry-after"),
    pytest.param(rate_limit(0.2, header="ms"), id="429-retry-after-ms"),
    pytest.param(server_error(500), id="500"),
    pytest.param(server_error(503), id="503"),
    pytest.param(timeout(TIMEOUT_S + 1.5), id="timeout"),
])
async def test_transient_fault_is_retried_invisibly(lace: Lace, fault: Fault) -> None:
    lace.llm.inject(fault)
    o = await run_artifact(lace, 1500)
    check_completed(o)
    assert lace.llm.pending_faults == 0
    # One extra HTTP request, and nothing else: no rejection, no extra LLM call, no re-ask.
    assert o.http_requests == o.run.llm_calls + 1
    assert not o.of("proposal_rejected")
    assert all(e.step_completed.attempts == 1 for e in o.of("step_completed"))
    assert all(e.llm_call_completed.finish_reason == "stop" for e in o.of("llm_call_completed"))
    # The faulted request and its retry were the same call: the first two bodies are identical.
    assert o.bodies[0] == o.bodies[1]


@pytest.mark.parametrize(("fault", "only", "finish_reason", "error"), [
    pytest.param(truncated(), "write", "LLMTruncated", "cut off at the output limit", id="truncated"),
    pytest.param(malformed(), "write", "LLMMalformedOutput", "not JSON", id="malformed"),
    pytest.param(refusal(), "write", "LLMRefused", "refused", id="refusal"),
])
async def test_unusable_answer_is_rejected_then_re_asked(
    lace: Lace, fault: Fault, only: StepFilter, finish_reason: str, error: str
) -> None:
    lace.llm.inject(fault, fault_filter=only)
    o = await run_artifact(lace, 1500)
    check_completed(o)
    assert lace.llm.pending_faults == 0
    assert o.http_requests == o.run.llm_calls  # re-asks are new calls, not HTTP retries

    (rejected,) = o.of("proposal_rejected")
    r = rejected.proposal_rejected
    step = S.STEP_KIND_SPLIT if only == "split" else S.STEP_KIND_WRITE
    assert (r.step, r.attempt, r.will_retry) == (step, 1, True)
    assert any(error in e for e in r.errors), list(r.errors)
    if only == "split":
        assert r.node_id == o.artifact.root_node_id
    else:
        first_leaf = o.of("node_split")[0].node_split.children[0].node_id
        assert r.node_id == first_leaf

    # The rejected call is accounted, then the node is asked again and succeeds on attempt 2.
    applied = "node_split" if only == "split" else "blocks_applied"
    assert o.kinds_for(r.node_id) == [
        "strategy_decided", "step_started", "llm_call_completed", "proposal_rejected",
        "step_started", "llm_call_completed", applied, "step_completed",
    ]
    attempts = [e.step_started.attempt for e in o.of("step_started") if e.step_started.node_id == r.node_id]
    assert attempts == [1, 2]
    done = [e.step_completed for e in o.of("step_completed") if e.step_completed.node_id == r.node_id]
    assert [d.attempts for d in done] == [2]
    finish = [e.llm_call_completed.finish_reason for e in o.of("llm_call_completed")
              if e.llm_call_completed.node_id == r.node_id]
    assert finish == [finish_reason, "stop"]


async def stored(database_url: str, run_id: str, node_id: str) -> dict[str, Any]:
    """What Postgres holds about a node and a run."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        node = await (await conn.execute("SELECT state, word_count, summary FROM nodes WHERE id = %s",
                                         (uuid.UUID(node_id),))).fetchone()
        blocks = await (await conn.execute("SELECT count(*) FROM blocks WHERE node_id = %s",
                                           (uuid.UUID(node_id),))).fetchone()
        changes = await (await conn.execute("SELECT count(*) FROM change_events WHERE node_id = %s",
                                            (uuid.UUID(node_id),))).fetchone()
        events = await (await conn.execute("SELECT seq, type, payload FROM run_events WHERE run_id = %s ORDER BY seq",
                                           (uuid.UUID(run_id),))).fetchall()
        calls = await (await conn.execute(
            "SELECT attempt, outcome FROM llm_calls WHERE run_id = %s AND node_id = %s ORDER BY attempt",
            (uuid.UUID(run_id), uuid.UUID(node_id)))).fetchall()
        artifact = await (await conn.execute(
            "SELECT a.word_count, (SELECT count(*) FROM blocks b WHERE b.artifact_id = a.id) "
            "FROM artifacts a JOIN runs r ON r.artifact_id = a.id WHERE r.id = %s", (uuid.UUID(run_id),))).fetchone()
    assert node is not None and blocks is not None and changes is not None and artifact is not None
    return {"node": node, "blocks": blocks[0], "changes": changes[0], "events": events, "calls": calls,
            "artifact_words": artifact[0], "artifact_blocks": artifact[1]}


def check_failed_cleanly(o: Outcome, db: dict[str, Any]) -> run_pb2.RunFailed:
    assert o.run.state == S.RUN_STATE_FAILED
    (failed,) = o.of("run_failed")
    f = failed.run_failed
    assert o.run.failure_reason == f.reason and f.reason
    assert [e.WhichOneof("payload") for e in o.events[-2:]] == ["run_failed", "run_state_changed"]
    assert o.events[-1].run_state_changed.to_state == S.RUN_STATE_FAILED
    assert not o.of("validation_reported")

    # Nothing partial was written for the node, and the stored log ends the same way as the stream.
    assert db["node"][0] == "planned" and db["node"][1] == 0 and db["node"][2] == ""
    assert db["blocks"] == 0 and db["changes"] == 0
    assert db["artifact_words"] == 0 and db["artifact_blocks"] == 0
    seqs = [seq for seq, _type, _payload in db["events"]]
    assert seqs == list(range(1, len(o.events) + 1))
    assert [t for _seq, t, _payload in db["events"][-2:]] == ["run_failed", "run_state_changed"]
    assert db["events"][-1][2]["to_state"] == "failed"
    assert db["events"][-2][2]["node_id"] == f.node_id
    return f


@pytest.mark.parametrize("only", [pytest.param(None, id="split"), pytest.param("write", id="write")])
async def test_persistently_malformed_answers_fail_the_run_after_the_retry_budget(
    lace: Lace, only: StepFilter | None
) -> None:
    lace.llm.inject(*[malformed()] * 10, fault_filter=only)
    o = await run_artifact(lace, 1500)
    attempts = o.run.options.max_proposal_retries + 1
    assert attempts == 3
    # Exactly the attempts for the failing node were made, then nothing more.
    assert lace.llm.pending_faults == 10 - attempts
    assert o.http_requests == attempts + (1 if only == "write" else 0)

    failed_node = (o.artifact.root_node_id if only is None
                   else o.of("node_split")[0].node_split.children[0].node_id)
    db = await stored(lace.database_url, o.run.id, failed_node)
    f = check_failed_cleanly(o, db)
    assert f.node_id == failed_node
    assert f"{attempts} proposals were rejected" in f.reason and "not JSON" in f.reason
    assert f.reason_code == "PROPOSALS_REJECTED"

    rejected = [e.proposal_rejected for e in o.of("proposal_rejected")]
    assert [r.node_id for r in rejected] == [failed_node] * attempts
    assert [r.attempt for r in rejected] == list(range(1, attempts + 1))
    assert [r.will_retry for r in rejected] == [True] * (attempts - 1) + [False]
    assert [tuple(c) for c in db["calls"]] == [(a, "rejected") for a in range(1, attempts + 1)]
    assert o.kinds_for(failed_node) == ["strategy_decided"] + [
        "step_started", "llm_call_completed", "proposal_rejected"] * attempts + ["run_failed"]
    if only == "write":
        # The split before it stays; no other section was started.
        assert len(o.of("node_split")) == 1 and not o.of("blocks_applied")
        assert {e.step_started.node_id for e in o.of("step_started")} == {o.artifact.root_node_id, failed_node}


async def test_provider_failing_beyond_its_retry_budget_fails_the_run(lace: Lace) -> None:
    lace.llm.inject(*[server_error(500)] * 6)
    o = await run_artifact(lace, 1500)
    # One LLM call: the provider's HTTP attempts, then no re-ask (asking again cannot help).
    assert o.http_requests == HTTP_RETRIES + 1 and lace.llm.pending_faults == 6 - (HTTP_RETRIES + 1)
    root = o.artifact.root_node_id
    db = await stored(lace.database_url, o.run.id, root)
    f = check_failed_cleanly(o, db)
    assert f.node_id == root
    assert "provider" in f.reason and "HTTP 500" in f.reason and f"{HTTP_RETRIES + 1} attempts" in f.reason
    assert f.reason_code == "LLM_PROVIDER_FAILED"
    (rejected,) = o.of("proposal_rejected")
    assert (rejected.proposal_rejected.attempt, rejected.proposal_rejected.will_retry) == (1, False)
    (call,) = o.of("llm_call_completed")
    assert call.llm_call_completed.finish_reason == "LLMUnavailable"
    assert not o.of("node_split")


async def test_a_run_failed_on_a_provider_outage_goes_on_where_it_stopped_when_resumed(lace: Lace) -> None:
    # The provider is down for the first write (every HTTP attempt of one call): the split applies, the
    # first section fails, and so does the run.
    lace.llm.inject(*[server_error(500)] * (HTTP_RETRIES + 1), fault_filter="write")
    failed = await run_artifact(lace, 1500)
    assert failed.run.state == run_pb2.RUN_STATE_FAILED
    (f,) = failed.of("run_failed")
    assert f.run_failed.reason_code == "LLM_PROVIDER_FAILED"
    split = failed.of("node_split")[0].node_split
    assert f.run_failed.node_id == split.children[0].node_id

    # The provider is back: resuming with more re-asks goes on from the IR, in the same run.
    resumed = (await lace.runs.ResumeRun(run_service_pb2.ResumeRunRequest(
        run_id=failed.run.id, request_id=str(uuid.uuid4()),
        options=run_pb2.RunOptions(max_proposal_retries=4)))).run
    assert resumed.state in (run_pb2.RUN_STATE_PENDING, run_pb2.RUN_STATE_RUNNING)
    assert resumed.options.max_proposal_retries == 4 and resumed.options.leaf_words == failed.run.options.leaf_words
    assert failed.run.failure_reason_code == "LLM_PROVIDER_FAILED"
    assert not resumed.failure_reason and not resumed.failure_reason_code and not resumed.HasField("end_time")
    rest = await asyncio.wait_for(watch(lace.runs, failed.run.id, cursor=failed.run.head_seq), RUN_DEADLINE_S)
    done = (await lace.runs.GetRun(run_service_pb2.GetRunRequest(run_id=failed.run.id))).run
    events = failed.events + rest

    assert done.state == run_pb2.RUN_STATE_COMPLETED, done.failure_reason
    assert [e.seq for e in events] == list(range(1, done.head_seq + 1))
    kinds = [e.WhichOneof("payload") for e in rest]
    # Nothing applied was done again: no second split; every section written once, the failed one too.
    assert "node_split" not in kinds
    written = [e.blocks_applied.node_id for e in rest if e.HasField("blocks_applied")]
    assert sorted(written) == sorted(c.node_id for c in split.children)
    assert rest[0].run_state_changed.from_state == run_pb2.RUN_STATE_FAILED
    assert rest[0].run_state_changed.to_state == run_pb2.RUN_STATE_PENDING

    # Final stays final.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await lace.runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=done.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_llm_server_killed_mid_call_and_brought_back_costs_a_retry_not_the_run(lace: Lace) -> None:
    lace.llm.latency_ms = 800  # every answer takes a while: the kill lands while a call is in flight
    try:
        artifact = await create_artifact(lace.artifacts, 1500)
        run = await start_run(lace.runs, artifact.id)
        stream = asyncio.create_task(watch(lace.runs, run.id))
        before = lace.llm.request_count
        for _ in range(400):
            if lace.llm.request_count > before:
                break
            await asyncio.sleep(0.025)
        await lace.llm.stop()  # the connection in flight is dropped; nothing listens for a moment
        await asyncio.sleep(0.2)
        await lace.llm.start()  # the same port: the provider's next HTTP attempt reaches it
        events = await asyncio.wait_for(stream, RUN_DEADLINE_S)
    finally:
        lace.llm.latency_ms = 0
    done = (await lace.runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert done.state == run_pb2.RUN_STATE_COMPLETED, done.failure_reason
    assert [e.seq for e in events] == list(range(1, done.head_seq + 1))
    # The dropped request was sent again by the provider: one HTTP request more than recorded calls,
    # no proposal rejected for it, nothing doubled.
    assert lace.llm.request_count - before == done.llm_calls + 1
    assert not [e for e in events if e.HasField("proposal_rejected")]
    assert len([e for e in events if e.HasField("node_split")]) == 1
    written = [e.blocks_applied.node_id for e in events if e.HasField("blocks_applied")]
    assert len(written) == len(set(written)) == done.nodes_written


async def test_budgets_that_miss_the_total_are_repaired_not_re_asked(lace: Lace) -> None:
    lace.llm.inject(bad_budgets(), fault_filter="split")
    o = await run_artifact(lace, 1500)
    check_completed(o)
    assert lace.llm.pending_faults == 0
    # Twice the target is off by 100%, but rescaling has exactly one right answer: Apply makes it.
    assert not o.of("proposal_rejected") and o.http_requests == o.run.llm_calls
    split = o.of("node_split")[0].node_split
    assert sum(c.target_words for c in split.children) == 1500
    (repair,) = split.repairs
    assert "added up to 3000, not 1500: rescaled" in repair
    assert all(not e.blocks_applied.repairs for e in o.of("blocks_applied"))


async def test_a_second_cut_off_in_a_row_fails_the_node_without_a_third_call(lace: Lace) -> None:
    lace.llm.inject(truncated(), truncated(), fault_filter="write")
    o = await run_artifact(lace, 1500)
    assert lace.llm.pending_faults == 0
    failed_node = o.of("node_split")[0].node_split.children[0].node_id
    db = await stored(lace.database_url, o.run.id, failed_node)
    f = check_failed_cleanly(o, db)
    assert f.node_id == failed_node and "output limit" in f.reason and "twice in a row" in f.reason
    rejected = [e.proposal_rejected for e in o.of("proposal_rejected")]
    assert [(r.attempt, r.will_retry) for r in rejected] == [(1, True), (2, False)]
    # The re-ask was not the same request again: it says the answer was cut off, and how to avoid it.
    first, second = (b for b in o.bodies if _task(b)["step"] == "write")
    assert "cut off at the output limit" not in first["messages"][-1]["content"]
    assert "cut off at the output limit" in second["messages"][-1]["content"]
    assert first["max_tokens"] == second["max_tokens"] == content_schema(_task(first)["target_words"]).max_output_tokens


async def test_provider_that_refuses_bounded_schemas_gets_portable_ones(pg_server_url: str) -> None:
    async with OpenAICompatibleServer(rejected_keywords=frozenset({"maxLength"})) as llm:
        env = {"LACE_LLM": "openai", "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test",
               "LACE_LLM_MODEL": MODEL, "LACE_LLM_MAX_RETRIES": "0"}
        async with serve_fresh(pg_server_url, env=env) as (target, _running, database_url), \
                grpc.aio.insecure_channel(target) as channel:
            o = await run_artifact(Lace(ArtifactServiceStub(channel), RunServiceStub(channel), database_url, llm), 1500)
    check_completed(o)
    # One refused request (not a failed call: the provider re-sends it at once), then portable schemas only.
    assert o.http_requests == o.run.llm_calls + 1
    refused, *rest = o.bodies
    assert "maxLength" in schema_keys(refused["response_format"]["json_schema"]["schema"])
    assert rest[0]["messages"] == refused["messages"]
    for body in rest:
        schema = body["response_format"]["json_schema"]["schema"]
        assert not schema_keys(schema) & BOUND_KEYWORDS
        assert "anyOf" in schema_keys(schema) or schema["properties"]["children"]["items"]["required"]
