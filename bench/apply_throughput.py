"""1. Apply throughput: accepted proposals written per second, LACE against raw psycopg.

LACE: the orchestrator's own step tail, `steps.WriteStep.plan` (parse + Deterministic Apply's
validation and plan) then `RunExecution._apply` (one transaction: run head and counters under
the lease fence, artifact version, preconditions under lock, node, blocks, change_events,
run_events, NOTIFY, llm_calls row; then the live hub). The engine is a real `Engine` with its
pool, hub and LISTEN connection, exactly as `lace serve` builds it. Loading each run's tree, which
the orchestrator does once per run, happens before the clock starts, as the baseline's row
precomputation does.

Baseline: raw psycopg writing the same rows (precomputed from the same plans) with the same
statements a careful hand-written writer needs in one transaction, over a pool of as many
connections as LACE may open for transactions (2 x pool_size). A second baseline commits each event
in its own transaction (head bump + insert + NOTIFY), the design the event log replaces.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from bench.common import Context, Row, bench_settings, interleaved, median
from bench.fixtures import Prepared, content_proposal, prepare
from lace_engine.domain import EventType, Node, Origin, RunOptions, StepKind
from lace_engine.ids import new_id
from lace_engine.llm.base import LLMRequest, LLMResponse
from lace_engine.llm.offline import OfflineProvider
from lace_engine.pipeline.apply import Mutation, Provenance, Rejection
from lace_engine.pipeline.context_builder import ManifestEntry, PromptContext
from lace_engine.pipeline.proposal_schema import content_schema
from lace_engine.pipeline.steps import STEPS
from lace_engine.pipeline.strategy import StrategyDecision
from lace_engine.pipeline.tree import Tree
from lace_engine.runs import journal as run_journal
from lace_engine.runs.journal import Attempt, CallOutcome
from lace_engine.runs.orchestrator import ExecutorConfig, RunExecution
from lace_engine.service import Engine
from lace_engine.storage import ir_store
from lace_engine.storage.apply_store import block_json
from lace_engine.storage.event_log import NOTIFY_CHANNEL

NAME = "apply_throughput"
LEAF_WORDS = 800
DECISION = StrategyDecision(StepKind.WRITE, f"target {LEAF_WORDS} words <= leaf size 1000", 0)


def _response(data: dict[str, Any], words: int = LEAF_WORDS) -> LLMResponse:
    return LLMResponse(data=data, provider="offline", model="lace-offline-1", prompt_tokens=1850,
                       completion_tokens=words * 4 // 3, latency_ms=2400, finish_reason="stop")


def _context(node_id: uuid.UUID) -> PromptContext:
    manifest = tuple(ManifestEntry(kind, node_id, f"{i:016x}")
                     for i, kind in enumerate(("brief", "outline", "path", "node", "sibling", "sibling")))
    return PromptContext(system="You write one section.", user="...", task={"step": "write"},
                         manifest=manifest, estimated_tokens=1850)


def _content_json(node_title: str, seed: int, words: int = LEAF_WORDS) -> dict[str, Any]:
    proposal = content_proposal(node_title, words, seed)
    return {"blocks": [b.to_json() for b in proposal.blocks], "summary": proposal.summary}


def _attempt(node: Node) -> Attempt:
    """The first attempt at writing `node`, as the orchestrator builds it before the LLM call."""
    ctx = _context(node.id)
    call = content_schema(LEAF_WORDS)
    request = LLMRequest(step=StepKind.WRITE, system=ctx.system, user=ctx.user, schema_name=call.name,
                         schema=call.schema, task=ctx.task, seed=1, max_output_tokens=call.max_output_tokens)
    return Attempt(node, DECISION, 1, new_id(), ctx, request)


def _plan(run_id: uuid.UUID, attempt: Attempt, response: LLMResponse) -> Mutation | Rejection:
    """The step's plan of the answer, as the orchestrator makes it."""
    prov = Provenance(origin=Origin.LLM, run_id=run_id, llm_call_id=attempt.call_id, model=response.model)
    return STEPS[StepKind.WRITE].plan(attempt.node, response.data, existing=[], options=RunOptions(),
                                      provenance=prov)


# --- LACE -----------------------------------------------------------------------------------


async def _lace_execution(engine: Engine, prepared: Prepared) -> RunExecution:
    """A run's execution with its artifact and tree loaded, as RunExecution.execute() starts (untimed:
    it happens once per run, not per Apply)."""
    db = engine.db
    async with db.read() as conn:
        artifact = await ir_store.get_artifact(conn, prepared.artifact_id)
        tree = Tree(await ir_store.get_nodes(conn, prepared.artifact_id))
    execution = RunExecution(db, engine.provider, asyncio.Semaphore(64), prepared.run, prepared.fence,
                             ExecutorConfig(owner_id="bench"))
    execution.tree, execution.artifact = tree, artifact
    return execution


async def _lace_run(execution: RunExecution, prepared: Prepared, answers: list[dict[str, Any]]) -> int:
    """Plans and applies every leaf of one run in order, as the orchestrator's steps do."""
    for node, data in zip(prepared.leaves, answers, strict=True):
        response = _response(data, LEAF_WORDS)
        attempt = _attempt(node)
        plan = _plan(prepared.run.id, attempt, response)
        assert not isinstance(plan, Rejection), plan
        await execution._apply(attempt, CallOutcome.of(response, execution.provider), plan)
    return len(prepared.leaves)


# --- raw psycopg ------------------------------------------------------------------------------

_UPD_RUN = ("UPDATE runs SET head_seq = head_seq + %s, update_time = now(), nodes_written = nodes_written + %s, "
            "words_written = words_written + %s, prompt_tokens = prompt_tokens + %s, "
            "completion_tokens = completion_tokens + %s, llm_calls = llm_calls + %s, "
            "llm_latency_ms = llm_latency_ms + %s "
            "WHERE id = %s AND lease_owner = %s AND lease_token = %s AND state IN ('running', 'pausing') "
            "RETURNING head_seq")
_UPD_ART = ("UPDATE artifacts SET version = version + 1, word_count = word_count + %s, update_time = now() "
            "WHERE id = %s RETURNING version")
_LOCK_NODE = "SELECT state FROM nodes WHERE id = %s FOR UPDATE"
_LOCK_BLOCKS = "SELECT id, version, pinned FROM blocks WHERE node_id = %s FOR UPDATE"
_UPD_NODE = ("UPDATE nodes SET state = %s, summary = %s, word_count = %s, last_run_id = %s, update_time = now() "
             "WHERE id = %s")
_INS_BLOCK = ("INSERT INTO blocks (id, artifact_id, node_id, ordinal, kind, content, origin, pinned, version) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
              "content = excluded.content, origin = excluded.origin, pinned = excluded.pinned, "
              "version = excluded.version, ordinal = excluded.ordinal, update_time = now()")
_INS_CHANGE = ("INSERT INTO change_events (artifact_id, block_id, node_id, operation, origin, run_id, llm_call_id, "
               "model, before, after, artifact_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
_INS_EVENT = "INSERT INTO run_events (run_id, seq, type, payload, create_time) VALUES (%s, %s, %s, %s, %s)"
_NOTIFY = "SELECT pg_notify(%s, %s)"
_INS_CALL = ("INSERT INTO llm_calls (id, run_id, node_id, step, attempt, provider, model, prompt_tokens, "
             "completion_tokens, latency_ms, finish_reason, context_tokens, context_manifest, outcome, error) "
             "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


@dataclass
class RawStep:
    """One leaf's rows, precomputed from LACE's own plan of the same proposal."""

    mutation: Mutation
    call_id: uuid.UUID
    events: list[tuple[str, dict[str, Any]]]
    call_row: tuple[Any, ...]


def _raw_steps(prepared: Prepared, answers: list[dict[str, Any]]) -> list[RawStep]:
    execution = RunExecution(None, OfflineProvider(), asyncio.Semaphore(1), prepared.run,  # type: ignore[arg-type]
                             prepared.fence, ExecutorConfig(owner_id="bench"))
    steps = []
    for node, data in zip(prepared.leaves, answers, strict=True):
        response = _response(data, LEAF_WORDS)
        attempt = _attempt(node)
        call_id = attempt.call_id
        plan = _plan(prepared.run.id, attempt, response)
        assert isinstance(plan, Mutation)
        outcome = CallOutcome.of(response, execution.provider)
        call = run_journal.call_event(attempt, outcome)
        applied = plan.events[0]
        events = [(call.type.value, call.payload), (applied.type.value, dict(applied.payload)),
                  (EventType.STEP_COMPLETED.value, {"node_id": str(node.id), "step": "write", "attempts": 1})]
        r = run_journal.call_row(prepared.run.id, attempt, outcome, "applied")
        call_row = (r["id"], r["run_id"], r["node_id"], r["step"], r["attempt"], r["provider"], r["model"],
                    r["prompt_tokens"], r["completion_tokens"], r["latency_ms"], r["finish_reason"],
                    r["context_tokens"], Jsonb(r["context_manifest"]), r["outcome"], r["error"])
        steps.append(RawStep(plan, call_id, events, call_row))
    return steps


async def _raw_ir(cur: psycopg.AsyncCursor[Any], prepared: Prepared, step: RawStep, head_delta: int) -> \
        tuple[int, int]:
    m = step.mutation
    run = prepared.run
    await cur.execute(_UPD_RUN, (head_delta, m.nodes_written, m.words_written, 1850, LEAF_WORDS * 4 // 3, 1, 2400,
                                 run.id, prepared.fence.owner, prepared.fence.token))
    head_row = await cur.fetchone()
    assert head_row is not None
    await cur.execute(_UPD_ART, (m.word_delta, m.artifact_id))
    version_row = await cur.fetchone()
    assert version_row is not None
    version = int(version_row[0])
    patch = m.node_patches[0]
    await cur.execute(_LOCK_NODE, (patch.node_id,))
    await cur.fetchall()
    await cur.execute(_LOCK_BLOCKS, (patch.node_id,))
    await cur.fetchall()
    await cur.execute(_UPD_NODE, (patch.state.value, patch.summary, patch.word_count, patch.last_run_id,
                                  patch.node_id))
    afters = [c.after for c in m.block_changes if c.after is not None]
    await cur.executemany(_INS_BLOCK, [
        (b.id, b.artifact_id, b.node_id, b.ordinal, b.content.kind.value, Jsonb(b.content.to_json()),
         b.origin.value, b.pinned, b.version) for b in afters])
    await cur.executemany(_INS_CHANGE, [
        (m.artifact_id, b.id, b.node_id, "create", "llm", run.id, step.call_id, "lace-offline-1", None,
         Jsonb(block_json(b)), version) for b in afters])
    return int(head_row[0]), version


async def _raw_events(cur: psycopg.AsyncCursor[Any], run_id: uuid.UUID, head: int,
                      events: list[tuple[str, dict[str, Any]]], version: int) -> None:
    now = datetime.now(UTC)
    first = head - len(events) + 1
    rows = []
    for i, (etype, payload) in enumerate(events):
        if etype == EventType.BLOCKS_APPLIED.value:
            payload = {**payload, "artifact_version": version}
        rows.append((run_id, first + i, etype, Jsonb(payload), now))
    await cur.executemany(_INS_EVENT, rows)
    await cur.execute(_NOTIFY, (NOTIFY_CHANNEL, f"{run_id}:{head}"))


async def _raw_run(pool: AsyncConnectionPool[Any], prepared: Prepared, steps: list[RawStep]) -> int:
    for step in steps:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            head, version = await _raw_ir(cur, prepared, step, len(step.events))
            await _raw_events(cur, prepared.run.id, head, step.events, version)
            await cur.execute(_INS_CALL, step.call_row)
    return len(steps)


async def _per_event_run(pool: AsyncConnectionPool[Any], prepared: Prepared, steps: list[RawStep]) -> int:
    """The same writes, but each event committed in a transaction of its own."""
    for step in steps:
        async with pool.connection() as conn:
            async with conn.transaction(), conn.cursor() as cur:
                head, version = await _raw_ir(cur, prepared, step, 1)
                await _raw_events(cur, prepared.run.id, head, step.events[:1], version)
                await cur.execute(_INS_CALL, step.call_row)
            for event in step.events[1:]:
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.execute("UPDATE runs SET head_seq = head_seq + 1, update_time = now() WHERE id = %s "
                                      "AND lease_owner = %s AND lease_token = %s RETURNING head_seq",
                                      (prepared.run.id, prepared.fence.owner, prepared.fence.token))
                    row = await cur.fetchone()
                    assert row is not None
                    await _raw_events(cur, prepared.run.id, int(row[0]), [event], version)
    return len(steps)


# --- the benchmark ----------------------------------------------------------------------------


async def _measure(engine: Engine, runs: int, leaves: int, kind: str,
                   pool: AsyncConnectionPool[Any], words: int = LEAF_WORDS) -> float:
    """Applies per second for `runs` concurrent runs of `leaves` leaves each (set-up untimed)."""
    rate, _ = await measure_detail(engine, runs, leaves, kind, pool, words)
    return rate


async def measure_detail(engine: Engine, runs: int, leaves: int, kind: str, pool: AsyncConnectionPool[Any],
                         words: int = LEAF_WORDS) -> tuple[float, float]:
    """(applies per second, this process's CPU seconds per apply)."""
    prepared = list(await asyncio.gather(*(prepare(engine.db, leaves, words, owner=f"bench-{kind}")
                                           for _ in range(runs))))
    answers = [[_content_json(n.title, i * 1000 + j, words) for j, n in enumerate(p.leaves)]
               for i, p in enumerate(prepared)]
    if kind == "lace":
        executions = [await _lace_execution(engine, p) for p in prepared]
        cpu, started = time.process_time(), time.perf_counter()
        done = await asyncio.gather(*(_lace_run(e, p, a) for e, p, a in zip(executions, prepared, answers,
                                                                                strict=True)))
    else:
        steps = [_raw_steps(p, a) for p, a in zip(prepared, answers, strict=True)]
        fn = _raw_run if kind == "raw" else _per_event_run
        cpu, started = time.process_time(), time.perf_counter()
        done = await asyncio.gather(*(fn(pool, p, s) for p, s in zip(prepared, steps, strict=True)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return sum(done) / elapsed, cpu / sum(done)


async def run(ctx: Context) -> list[Row]:
    rounds = ctx.size(4, 2, 1)
    single = ctx.size(150, 30, 6)
    leaves_32 = ctx.size(12, 4, 1)
    warm = ctx.size(32, 32, 2)
    with ctx.database("apply") as url:
        settings = bench_settings(url, execute_runs=False)
        engine = Engine(settings, url, OfflineProvider())
        await engine.start()
        # As many connections as LACE's engine may open for transactions (2 x pool_size), opened up front.
        size = settings.pool_size * 2
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(url, min_size=size, max_size=size, open=False,
                                                              kwargs={"application_name": "bench-raw"})
        await pool.open(wait=True)
        try:
            # Warm both paths (connections, prepared statements, imports).
            await _measure(engine, warm, 1, "lace", pool)
            await _measure(engine, 2, 1, "raw", pool)  # its pool is open already
            rows: list[Row] = []
            for runs, leaves in ((1, single), (32, leaves_32)):
                ctx.log(f"  apply: {runs} concurrent run(s)")

                async def lace_round(r: int = runs, n: int = leaves) -> float:
                    return await _measure(engine, r, n, "lace", pool)

                async def raw_round(r: int = runs, n: int = leaves) -> float:
                    return await _measure(engine, r, n, "raw", pool)

                lace, raw = await interleaved(rounds, lace_round, raw_round)
                lace_m, raw_m = median(lace), median(raw)
                rows.append(Row(f"1. apply tx/s, {runs} run{'s' if runs > 1 else ''}", lace_m, raw_m, "tx/s",
                                ">= 0.7x raw", lace_m >= 0.7 * raw_m, baseline_label="raw psycopg"))
                if runs == 32:
                    per_event = [await _measure(engine, runs, leaves, "per_event", pool)
                                 for _ in range(max(1, rounds // 2))]
                    pe = median(per_event)
                    rows.append(Row("1. apply tx/s, 32 runs vs commit per event", lace_m, pe, "tx/s", ">= 2x",
                                    lace_m >= 2 * pe, baseline_label="raw, 1 commit/event"))
            return rows
        finally:
            await pool.close()
            await engine.aclose()
