"""The run orchestrator: takes runs (under a lease), walks their node tree and drives each step.

A step asks the LLM for a proposal, lets Deterministic Apply validate it and
write it with its events, and re-asks with the errors when it is rejected. The
IR is the checkpoint: a run resumed after a crash skips what is already split
or written, so nothing is done twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from lace_engine import backoff, metrics, tracing
from lace_engine.domain import (
    Artifact,
    Block,
    BlockKind,
    EventType,
    NewEvent,
    Node,
    NodeState,
    Origin,
    Passage,
    Run,
    RunState,
    StepKind,
)
from lace_engine.errors import Aborted, DatabaseUnavailable, LeaseLost
from lace_engine.ids import new_id
from lace_engine.llm.base import LLMError, LLMProvider, LLMRequest, LLMResponse, LLMTruncated
from lace_engine.pipeline import apply, staleness
from lace_engine.pipeline.apply import Mutation, Provenance, Rejection
from lace_engine.pipeline.context_builder import (
    ContextBudgetError,
    PromptContext,
    build_context,
)
from lace_engine.pipeline.quality import quality_report
from lace_engine.pipeline.steps import STEPS, Step
from lace_engine.pipeline.strategy import StrategyDecision, decide
from lace_engine.pipeline.tree import Tree
from lace_engine.pipeline.validator import validate_artifact
from lace_engine.runs.budget import BudgetExhausted, Reservation, RunBudget
from lace_engine.runs.journal import ACTIVE, Attempt, CallOutcome, RunJournal
from lace_engine.runs.lifecycle import CLAIMABLE, ON_CLAIM
from lace_engine.runs.llm_limit import BothLimits, GlobalLLMLimit
from lace_engine.storage import ir_store, run_store, source_store
from lace_engine.storage.database import Database, Reads
from lace_engine.storage.event_log import Fence

log = logging.getLogger(__name__)


class _Pause(Exception):
    """The run was asked to pause: unwind without starting another LLM call."""


class _Stop(Exception):
    """The run must stop at once (cancelled, or the lease was lost)."""


class RunFailure(Exception):
    """The run cannot go on; `code` is RunFailed.reason_code (see run.proto), `reason` is for people."""

    def __init__(self, reason: str, node_id: uuid.UUID | None = None, *, code: str, budget: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.node_id = node_id
        self.code = code
        self.budget = budget


@dataclass
class ExecutorConfig:
    owner_id: str
    lease_ttl_s: float = 15.0
    poll_interval_s: float = 1.0
    # 0: twice llm_concurrency, enough runs to keep every permit busy while the rest wait PENDING,
    # claimable by whichever process has room, instead of queueing behind this one's permits.
    max_concurrent_runs: int = 0
    llm_concurrency: int = 64
    context_budget_tokens: int = 6000
    # How long a run waits for an unreachable database before it fails with DATABASE_UNAVAILABLE.
    db_outage_s: float = 300.0
    # proposal_schema.content_schema's style: "blocks" (every block kind) or "prose" (paragraphs only).
    content_style: str = "blocks"
    # Source passages retrieved for each section written; as many as fit the context budget go in.
    passages_per_section: int = 6
    # Events a run may have (0: no limit): a warning event at 80%, and no step starts that could pass it.
    max_events_per_run: int = 100_000
    # Per tenant, across processes (0: none): runs executing at once, LLM calls in flight.
    tenant_max_runs: int = 0
    tenant_llm_concurrency: int = 0
    llm_permit_ttl_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_concurrent_runs <= 0:
            self.max_concurrent_runs = 2 * self.llm_concurrency


HISTORY_WARNING_SHARE = 80  # percent of max_events_per_run
STEP_EVENTS_PER_ATTEMPT = 4  # step_started, llm_call_completed, a verdict (applied or rejected), slack


class RunControl:
    """What the executor knows of a run's requested state, refreshed by `steer` and lease renewals."""

    def __init__(self, state: RunState):
        self.state = state
        self.changed = asyncio.Event()

    def set(self, state: RunState) -> bool:
        """Records the requested state; True when it changed."""
        if state == self.state:
            return False
        self.state = state
        self.changed.set()
        return True

    def gate(self) -> None:
        """Called before every LLM call: raises when the run must not start new work."""
        if self.state is RunState.PAUSING:
            raise _Pause()
        if self.state not in (RunState.RUNNING,):
            raise _Stop()


class RunExecution:
    """Executes one run that this process holds the lease of."""

    def __init__(self, db: Database, provider: LLMProvider, llm_limit: AbstractAsyncContextManager[Any], run: Run,
                 fence: Fence, config: ExecutorConfig):
        self.db = db
        self.provider = provider
        self.llm_limit = llm_limit
        self.run = run
        self.fence = fence
        self.config = config
        self.control = RunControl(run.state)
        self.tree: Tree | None = None
        self.artifact: Artifact | None = None
        self.planning = False  # review_plan and the plan is not ready yet: split only, then await review
        self._sibling_limit = asyncio.Semaphore(max(1, run.options.sibling_concurrency))
        self.journal = RunJournal(db, run.id, fence, run.head_seq)
        limit = config.max_events_per_run
        self._history_warned = bool(limit) and run.head_seq >= limit * HISTORY_WARNING_SHARE // 100
        self.budget = RunBudget(run.options, tokens_spent=run.prompt_tokens + run.completion_tokens,
                                calls_made=run.llm_calls, started_at=run.start_time or datetime.now(UTC))

    @property
    def last_head(self) -> int:
        """The newest seq this execution committed or is committing."""
        return self.journal.seen_head

    async def execute(self) -> None:
        """Runs to COMPLETED, FAILED, PAUSED or CANCELLED; returns quietly when the lease is lost."""
        with tracing.tracer.start_as_current_span(
                "lace.run", context=tracing.context_from(self.run.trace_context),
                attributes={"lace.run_id": str(self.run.id), "lace.artifact_id": str(self.run.artifact_id)}):
            await self._execute()

    async def _execute(self) -> None:
        try:
            while True:
                try:
                    await self._execute_from_the_ir()
                    return
                except DatabaseUnavailable as exc:
                    # Every applied step is durable: wait for the database, then go on from the IR.
                    await self._outlast(exc)
        except (_Stop, LeaseLost, asyncio.CancelledError) as exc:
            await self._after_stop(exc)
            if isinstance(exc, asyncio.CancelledError) and self.control.state is not RunState.CANCELLING:
                raise
        except RunFailure as failure:
            await self._fail(failure.reason, failure.node_id, failure.code, failure.budget)
        except Exception as exc:
            log.exception("run %s crashed", self.run.id)
            await self._fail(f"internal error: {type(exc).__name__}: {exc}", None, "INTERNAL")

    async def _execute_from_the_ir(self) -> None:
        reads = Reads()
        artifact = reads.add(ir_store.artifact_query(self.run.artifact_id))
        nodes = reads.add(ir_store.nodes_query(self.run.artifact_id))
        # review_plan: plan only, until the run's plan_ready event exists (it is committed with
        # the move to AWAITING_REVIEW, so a run resumed after review is never planned again).
        reviewed = reads.add(run_store.has_event_query(self.run.id, EventType.PLAN_READY)) \
            if self.run.options.review_plan else None
        async with self.db.fast_read() as conn:
            await reads.send(conn)
        self.artifact, self.tree = artifact.value, Tree(nodes.value)
        self.planning = reviewed is not None and not reviewed.value
        scope = self.run.scope_node_id or self.tree.root.id
        while True:
            try:
                await self._process(scope)
                break
            except _Pause:
                if await self._settle_pause():
                    return
                # Resumed while in-flight work was finishing: carry on from the IR.
                self.control.set(RunState.RUNNING)
        if self.planning:
            await self._await_review()
        else:
            await self._complete(scope)

    async def _outlast(self, exc: DatabaseUnavailable) -> None:
        """Waits until the database answers again and this execution still holds the lease.

        RunFailure (DATABASE_UNAVAILABLE) when it stays unreachable for `db_outage_s`; LeaseLost when
        another executor took the run meanwhile (it goes on from the IR instead).
        """
        limit = self.config.db_outage_s
        log.warning("run %s: the database is unavailable (%s); waiting up to %.0f s", self.run.id, exc.message,
                    limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        for delay in backoff.delays(cap_s=1.0):
            try:
                await self.db.ping()
                state = await self.journal.renew(self.config.lease_ttl_s)
                break
            except DatabaseUnavailable:
                if loop.time() >= deadline:
                    raise RunFailure(f"the database was unavailable for more than {limit:.0f} s "
                                     f"(LACE_DB_OUTAGE_S): {exc.message}", code="DATABASE_UNAVAILABLE") from exc
                await asyncio.sleep(delay)
        if state is None:
            raise LeaseLost(f"run {self.run.id}: another executor took the run during the database outage")
        log.info("run %s: the database answers again; going on from the last applied step", self.run.id)
        self.control.set(state)

    async def _settle_pause(self) -> bool:
        """PAUSING -> PAUSED once in-flight work is applied; False if the run was resumed meanwhile."""
        found = await self.journal.transition(RunState.PAUSED, "paused by request: in-flight work applied",
                                              when=frozenset({RunState.PAUSING}))
        if found is RunState.RUNNING:
            return False
        if found is not RunState.PAUSING:
            raise _Stop()
        return True

    async def _after_stop(self, exc: BaseException) -> None:
        try:
            async with self.db.read() as conn:
                state = await run_store.run_state(conn, self.run.id)
        except DatabaseUnavailable:
            return  # the lease expires; whoever claims the run next settles PAUSING or CANCELLING
        if state is RunState.CANCELLING:
            await self._finish(RunState.CANCELLED, "cancelled by request: in-flight calls aborted")
        elif state is RunState.PAUSING:
            await self._finish(RunState.PAUSED, "paused by request: in-flight work applied")

    async def _finish(self, to: RunState, reason: str, extra: tuple[NewEvent, ...] = (),
                      set_values: dict[str, Any] | None = None) -> None:
        for delay in backoff.delays(cap_s=2.0):
            try:
                await self.journal.transition(to, reason, when=_NOT_TERMINAL, extra=extra, set_values=set_values)
                return
            except LeaseLost:
                log.info("run %s: lease lost before it could be marked %s", self.run.id, to.value)
                return
            except DatabaseUnavailable:
                # The outcome is decided; it is recorded once the database answers (cancelled on shutdown,
                # when the lease expires and the next executor decides again).
                await asyncio.sleep(delay)

    async def _fail(self, reason: str, node_id: uuid.UUID | None, code: str, budget: str = "") -> None:
        payload = {"reason": reason, "node_id": str(node_id) if node_id else "", "reason_code": code,
                   **({"budget": budget} if budget else {})}
        await self._finish(RunState.FAILED, reason, (NewEvent(EventType.RUN_FAILED, payload),),
                           {"failure_reason": reason, "failure_code": code})

    async def _await_review(self) -> None:
        """Every split is applied: RUNNING -> AWAITING_REVIEW with the outline, the lease given back."""
        async with self.db.read() as conn:
            artifact = await ir_store.get_artifact(conn, self.run.artifact_id)
            tree = Tree(await ir_store.get_nodes(conn, self.run.artifact_id))
        ready = NewEvent(EventType.PLAN_READY, {"outline": apply.outline_json(tree),
                                                "artifact_version": artifact.version})
        found = await self.journal.transition(
            RunState.AWAITING_REVIEW, f"the plan is ready for review: {len(tree)} sections, nothing written; "
            "edit the outline, then ResumeRun writes it", when=ACTIVE, extra=(ready,))
        if found not in ACTIVE:
            raise _Stop()  # cancelled as the last split finished: the cancel wins

    async def _complete(self, scope: uuid.UUID) -> None:
        assert self.artifact is not None
        reads = Reads()
        read_artifact = reads.add(ir_store.artifact_query(self.run.artifact_id))
        read_nodes = reads.add(ir_store.nodes_query(self.run.artifact_id))
        read_blocks = reads.add(ir_store.blocks_by_node_query(self.run.artifact_id))
        read_calls = reads.add(run_store.call_records_query(self.run.id))
        read_repairs = reads.add(run_store.repair_count_query(self.run.id))
        async with self.db.fast_read() as conn:
            await reads.send(conn)
        artifact, tree, blocks = read_artifact.value, Tree(read_nodes.value), read_blocks.value
        calls, repairs = read_calls.value, read_repairs.value
        report = validate_artifact(artifact, tree, blocks, scope if self.run.scope_node_id else None)
        nodes = tree.subtree(scope)
        leaves = {n.id: blocks.get(n.id, ()) for n in nodes if not tree.children(n.id)}
        headings = [n.title for n in nodes] + [b.content.text for n in nodes for b in blocks.get(n.id, ())
                                               if b.content.kind is BlockKind.HEADING]
        report = replace(report, quality=quality_report(calls, repairs, leaves, headings))
        report_json = report.to_json()
        found = await self.journal.transition(
            RunState.COMPLETED,
            "every node in scope is written" + ("" if report.ok else "; validation found problems"),
            when=ACTIVE, extra=(NewEvent(EventType.VALIDATION_REPORTED, {"report": report_json}),),
            set_values={"validation": report_json}, expect=RunState.RUNNING)
        if found not in ACTIVE:
            raise _Stop()  # cancelled as the last step finished: the cancel wins

    # The tree walk -----------------------------------------------------------------------

    def _needs_write(self, node: Node) -> bool:
        if node.state is NodeState.PLANNED or node.state is NodeState.FAILED:
            return True
        if self.run.stale_only:
            # A stale run rewrites exactly the written sections marked stale, each once.
            return node.state is NodeState.WRITTEN and bool(node.stale_reason) and node.last_run_id != self.run.id
        # A regeneration rewrites every written leaf in scope that it has not rewritten yet.
        return (self.run.scope_node_id is not None and node.state is NodeState.WRITTEN
                and node.last_run_id != self.run.id)

    async def _process(self, node_id: uuid.UUID) -> None:
        assert self.tree is not None
        node = self.tree.get(node_id)
        if node.state is NodeState.SPLIT:
            await self._process_children(node_id)
            return
        if not self._needs_write(node):
            return
        decision = decide(node, self.run.options)
        if decision.step is StepKind.SPLIT and node.state is not NodeState.WRITTEN:
            await self._step(node, decision)
            await self._process_children(node_id)
        elif self.planning:
            return  # review_plan: only splits before the review; this section is written after it
        else:
            if decision.step is StepKind.SPLIT:
                decision = StrategyDecision(StepKind.WRITE, "regeneration rewrites written sections in place", 0)
            await self._step(node, decision)

    async def _process_children(self, node_id: uuid.UUID) -> None:
        assert self.tree is not None
        children = self.tree.children(node_id)
        if self.run.options.sibling_concurrency <= 1 or len(children) <= 1:
            for child in children:
                await self._process(child.id)
            return

        # The bound applies to steps in flight (see _step), not to subtrees: a subtree holding a
        # permit while its children wait for one would deadlock.
        results = await asyncio.gather(*(self._process(c.id) for c in children), return_exceptions=True)
        # Let every sibling finish its in-flight work, then surface the most severe outcome.
        for kind in (asyncio.CancelledError, _Stop, LeaseLost, RunFailure, _Pause):
            for r in results:
                if isinstance(r, kind):
                    raise r
        for r in results:
            if isinstance(r, BaseException):
                raise r

    # One step ----------------------------------------------------------------------------

    async def _step(self, node: Node, decision: StrategyDecision) -> None:
        assert self.tree is not None and self.artifact is not None
        existing: list[Block] = []
        if node.state is NodeState.WRITTEN:
            async with self.db.read() as conn:
                existing = await ir_store.get_node_blocks(conn, node.id)
            if any(b.pinned for b in existing):
                await self.journal.commit([NewEvent(EventType.NODE_SKIPPED, {
                    "node_id": str(node.id), "reason": "a person edited this section (pinned); kept as is"})])
                return
        async with self._sibling_limit:
            with tracing.tracer.start_as_current_span("lace.step", attributes={
                    "lace.node_id": str(node.id), "lace.step": decision.step.value}):
                await self._attempts(node, decision, existing)

    async def _attempts(self, node: Node, decision: StrategyDecision, existing: list[Block]) -> None:
        feedback: list[str] = []
        max_attempts = self.run.options.max_proposal_retries + 1
        cut_off = False
        step = STEPS[decision.step]
        passages = await self._retrieve(node) if step.cites else []
        for number in range(1, max_attempts + 1):
            self.control.gate()
            ctx = self._context(node, step, decision.child_count, feedback, passages)
            call = step.call_schema(node, decision.child_count, self.config.content_style, len(ctx.citable))
            started = [NewEvent(EventType.STEP_STARTED,
                                {"node_id": str(node.id), "step": decision.step.value, "attempt": number})]
            if number == 1:
                started.insert(0, NewEvent(EventType.STRATEGY_DECIDED, {
                    "node_id": str(node.id), "strategy": decision.step.value, "reason": decision.reason}))
            started = self._history_room(node, started)
            # The whole budget of the call counts before it starts: its prompt and its longest answer.
            reservation = self._reserve(node, ctx.estimated_tokens + call.max_output_tokens)
            try:
                await self._start_step(started)
            except BaseException:
                self.budget.release(reservation)
                raise
            request = LLMRequest(
                step=decision.step, system=ctx.system, user=ctx.user, schema_name=call.name, schema=call.schema,
                task=ctx.task, seed=zlib.crc32(f"{self.run.id}/{node.id}/{number}".encode()),
                max_output_tokens=call.max_output_tokens,
            )
            attempt = Attempt(node, decision, number, new_id(), ctx, request)
            try:
                response = await self._ask(request, reservation)
            except LLMError as err:
                truncated = isinstance(err, LLMTruncated)
                errors = [_cut_off_feedback(err, call.max_output_tokens) if truncated
                          else f"the previous answer could not be used: {err.message}"]
                # A second cut-off in a row means the model loops on this task: asking again wastes calls.
                will_retry = err.reask and number < max_attempts and not (truncated and cut_off)
                await self.journal.reject(attempt, CallOutcome.of(err, self.provider), errors, will_retry=will_retry)
                if not err.reask:
                    raise RunFailure(f"LLM provider failed on section {node.title!r}: {err.message}",
                                     node.id, code="LLM_PROVIDER_FAILED") from err
                if truncated and cut_off:
                    raise RunFailure(f"section {node.title!r} failed: the model ran to its output limit of "
                                     f"{call.max_output_tokens} tokens twice in a row without finishing its "
                                     "answer", node.id, code="OUTPUT_LIMIT") from err
                cut_off = truncated
                feedback = errors
                continue
            cut_off = False
            outcome = CallOutcome.of(response, self.provider)
            plan = step.plan(node, response.data, existing=existing, options=self.run.options,
                             provenance=Provenance(origin=Origin.LLM, run_id=self.run.id, llm_call_id=attempt.call_id,
                                                   model=response.model), citable=ctx.citable)
            if isinstance(plan, Rejection):
                await self.journal.reject(attempt, outcome, plan.errors, will_retry=number < max_attempts)
                feedback = list(plan.errors)
                continue
            await self._apply(attempt, outcome, plan)
            return
        raise RunFailure(
            f"section {node.title!r} failed: {max_attempts} proposals were rejected; last problems: "
            + "; ".join(feedback[:5]), node.id, code="PROPOSALS_REJECTED")

    def _history_room(self, node: Node, started: list[NewEvent]) -> list[NewEvent]:
        """`started`, with the history warning when the run crosses 80% of its event limit;
        RunFailure (EVENT_LIMIT) when the rest of this step could take it past the limit."""
        limit = self.config.max_events_per_run
        if not limit:
            return started
        head = self.journal.seen_head
        # What the rest of the step may commit: each attempt's call and verdict, its end, the failure.
        step_events = STEP_EVENTS_PER_ATTEMPT * (self.run.options.max_proposal_retries + 1) + 4
        if head + len(started) + step_events > limit:
            raise RunFailure(f"the run has {head} events and the next step could take it past the limit of "
                             f"{limit} (LACE_MAX_EVENTS_PER_RUN); split the work into smaller runs (regenerate "
                             "subtrees) or raise the limit", node.id, code="EVENT_LIMIT")
        if not self._history_warned and head + len(started) >= limit * HISTORY_WARNING_SHARE // 100:
            self._history_warned = True
            return [*started, NewEvent(EventType.HISTORY_LIMIT_APPROACHING, {"events": head, "limit": limit})]
        return started

    def _reserve(self, node: Node, tokens: int) -> Reservation:
        try:
            return self.budget.reserve(tokens, datetime.now(UTC))
        except BudgetExhausted as exc:
            raise RunFailure(f"budget exhausted before section {node.title!r}: {exc.message}; ResumeRun with a "
                             f"larger {exc.budget} continues the run", node.id, code="BUDGET_EXHAUSTED",
                             budget=exc.budget) from exc

    async def _ask(self, request: LLMRequest, reservation: Reservation) -> LLMResponse:
        """One LLM call under the concurrency limit; what it used replaces its reservation."""
        used = 0
        outcome = "aborted"
        result: LLMResponse | LLMError | None = None
        started = time.perf_counter()
        try:
            async with self.llm_limit:
                started = time.perf_counter()
                with tracing.tracer.start_as_current_span("lace.llm_call", attributes={
                        "lace.provider": self.provider.name, "lace.max_output_tokens": request.max_output_tokens}) \
                        as span:
                    result = await self.provider.complete(request)
                    span.set_attributes({"lace.model": result.model, "lace.prompt_tokens": result.prompt_tokens,
                                         "lace.completion_tokens": result.completion_tokens})
            outcome = "answered"
            return result
        except LLMError as err:
            result, outcome = err, type(err).__name__
            raise
        finally:
            provider = (result.provider if result is not None else "") or self.provider.name
            model = (result.model if result is not None else "") or self.provider.model
            if result is not None:
                used = result.prompt_tokens + result.completion_tokens
                metrics.LLM_TOKENS.labels(provider, model, "prompt").inc(result.prompt_tokens)
                metrics.LLM_TOKENS.labels(provider, model, "completion").inc(result.completion_tokens)
            metrics.LLM_CALLS.labels(provider, model, outcome).inc()
            metrics.LLM_DURATION.labels(provider).observe(time.perf_counter() - started)
            self.budget.settle(reservation, used)

    async def _start_step(self, started: list[NewEvent]) -> None:
        """Commits step_started only while the run is RUNNING, so a pause or cancel committed after
        the gate check still wins: no LLM call starts after PAUSING, in the event order either."""
        while True:
            try:
                await self.journal.commit(started, states=frozenset({RunState.RUNNING}))
                return
            except LeaseLost:
                state = await self.journal.renew(self.config.lease_ttl_s)
                if state is None:
                    raise
                self.control.set(state)
                self.control.gate()  # raises unless the run is RUNNING again (resumed meanwhile)

    async def _retrieve(self, node: Node) -> list[Passage]:
        """The source passages best matching the section's title, intent and path, best first."""
        assert self.tree is not None and self.artifact is not None
        if self.config.passages_per_section <= 0:
            return []
        query = source_store.retrieval_query(
            [node.title, node.intent, *(a.title for a in reversed(self.tree.ancestors(node.id)))])
        async with self.db.fast_read() as conn:
            return await source_store.retrieve(conn, self.artifact.id, query, limit=self.config.passages_per_section)

    def _context(self, node: Node, step: Step, child_count: int, feedback: list[str],
                 passages: list[Passage]) -> PromptContext:
        assert self.tree is not None and self.artifact is not None
        try:
            with tracing.tracer.start_as_current_span("lace.context") as span:
                ctx = build_context(self.artifact, self.tree, node.id, step, child_count=child_count,
                                    instruction=self.run.instruction, feedback=feedback,
                                    budget_tokens=self.config.context_budget_tokens, passages=passages)
                span.set_attributes({"lace.estimated_tokens": ctx.estimated_tokens,
                                     "lace.passages": len(ctx.citable)})
                return ctx
        except ContextBudgetError as exc:
            raise RunFailure(f"section {node.title!r}: the prompt cannot fit the context budget of "
                             f"{self.config.context_budget_tokens} tokens ({exc}); raise LACE_CONTEXT_BUDGET_TOKENS "
                             "or shorten the brief or instruction", node.id, code="CONTEXT_BUDGET") from exc

    async def _apply(self, attempt: Attempt, outcome: CallOutcome, mutation: Mutation) -> None:
        assert self.tree is not None
        node = attempt.node
        if attempt.decision.step is StepKind.WRITE:
            mutation = _checked_against_the_tree(mutation, node.id, attempt.context, self.tree)
        try:
            with tracing.tracer.start_as_current_span("lace.apply", attributes={
                    "lace.block_changes": len(mutation.block_changes), "lace.attempt": attempt.number}):
                mutation = await self.journal.apply(attempt, outcome, mutation, self.tree)
        except Aborted as exc:
            if isinstance(exc, LeaseLost):
                raise
            # The IR moved under us (e.g. a person pinned the node): re-read and skip this node.
            log.info("run %s: apply of node %s aborted: %s", self.run.id, node.id, exc.message)
            async with self.db.read() as conn:
                self.tree = self.tree.with_nodes([await ir_store.get_node(conn, node.id)])
            await self.journal.commit([NewEvent(EventType.NODE_SKIPPED, {
                "node_id": str(node.id), "reason": f"left as it is: {exc.message}"})])
            return
        self.tree = apply.tree_after(self.tree, mutation)


_NOT_TERMINAL = frozenset(s for s in RunState if not s.terminal)


def _checked_against_the_tree(plan: Mutation, node_id: uuid.UUID, ctx: PromptContext, tree: Tree) -> Mutation:
    """The write's own patch stays stale when its prompt read a summary that changed since (a sibling
    rewritten while this one was written, with sibling_concurrency > 1)."""
    reason = staleness.own_check(ctx.manifest, tree)
    if not reason:
        return plan
    return replace(plan, node_patches=tuple(replace(p, stale_reason=reason) if p.node_id == node_id else p
                                            for p in plan.node_patches))


def _cut_off_feedback(err: LLMError, limit: int) -> str:
    """The re-ask after a cut-off: it says what went wrong instead of asking the same thing again."""
    return (f"your previous answer was cut off at the output limit ({err.completion_tokens or limit} of {limit} "
            "tokens) before its JSON was complete: answer again, shorter, without repeating any phrase, list "
            "or table row, and close every string, array and object")


class Executor:
    """Claims runs whose lease is free and executes them in this process."""

    def __init__(self, db: Database, provider: LLMProvider, config: ExecutorConfig,
                 llm_limit: AbstractAsyncContextManager[Any] | None = None):
        self.db = db
        self.provider = provider
        self.config = config
        # With NATS, a global (cross-process) limit per provider; otherwise this process's semaphore.
        self.llm_limit: AbstractAsyncContextManager[Any] = (
            llm_limit if llm_limit is not None else asyncio.Semaphore(config.llm_concurrency))
        # Off while job messages dispatch runs (lace_engine.runs.jobs), so commits do not make every worker poll.
        self.claim_on_commit = True
        self._running: dict[uuid.UUID, tuple[RunExecution, asyncio.Task[None]]] = {}
        self._work_available = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._closing = False
        self._checking: set[uuid.UUID] = set()
        self._tenant_llm: dict[str, GlobalLLMLimit] = {}

    @property
    def active_runs(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._claim_loop(), name="lace-executor")
        self._renew_task = asyncio.create_task(self._renew_loop(), name="lace-lease-renewal")

    def look_for_work(self) -> None:
        """New work may be claimable (a run was started or resumed)."""
        self._work_available.set()

    def steer(self, run_id: uuid.UUID, state: RunState) -> None:
        """A run's requested state changed: pause, resume or cancel its execution here."""
        entry = self._running.get(run_id)
        if entry is None:
            return
        execution, task = entry
        # Cancel the task once: requests repeat (direct, NOTIFY, lease renewal), and a second
        # cancel would interrupt the clean-up that writes CANCELLED.
        if execution.control.set(state) and state in (RunState.CANCELLING, RunState.CANCELLED):
            task.cancel()

    def run_committed(self, run_id: uuid.UUID, head: int) -> None:
        """A run's events committed somewhere: new work may be claimable, or a run here was steered."""
        entry = self._running.get(run_id)
        # A run's own progress here frees no work to claim (its end wakes the loop in _done), so only
        # other commits wake the claim loop: otherwise every step would cost a claim transaction.
        if self.claim_on_commit and (entry is None or head > entry[0].last_head):
            self._work_available.set()
        # Our own commits also notify; only a head beyond what this executor wrote means someone else did.
        if entry is not None and head > entry[0].last_head and run_id not in self._checking:
            self._checking.add(run_id)
            task = asyncio.create_task(self._check_run(run_id))
            task.add_done_callback(lambda _t: self._checking.discard(run_id))

    async def _check_run(self, run_id: uuid.UUID) -> None:
        try:
            async with self.db.read() as conn:
                state = await run_store.run_state(conn, run_id)
        except Exception:
            log.exception("re-reading run %s failed", run_id)
            return
        self.steer(run_id, state)

    async def _take_back_own_leases(self) -> None:
        """Runs leased to this owner id were left by a dead process (ids are unique among live ones):
        claimable now, not when their leases would have expired."""
        try:
            async with self.db.transaction() as tx:
                taken = await run_store.expire_own_leases(tx.conn, self.config.owner_id)
        except Exception:
            log.exception("could not take back the leases of owner %s; they expire on their own", self.config.owner_id)
            return
        if taken:
            log.info("taking back %d runs leased to %s before a restart", taken, self.config.owner_id)

    async def _claim_loop(self) -> None:
        await self._take_back_own_leases()
        while not self._closing:
            try:
                while len(self._running) < self.config.max_concurrent_runs and not self._closing:
                    if not await self._claim_and_begin(exclude=list(self._running)):
                        break
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable as exc:
                log.warning("claiming runs: %s; retrying", exc.message)
            except Exception:
                log.exception("claiming runs failed; retrying")
            self._work_available.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work_available.wait(), self.config.poll_interval_s)

    async def claim(self, run_id: uuid.UUID) -> bool:
        """Tries to take one specific run now (used by job-message dispatch)."""
        if run_id in self._running:
            return False  # executing here already (its lease is renewed, or re-taken after an outage)
        return await self._claim_and_begin(run_id=run_id)

    async def _claim_and_begin(self, *, run_id: uuid.UUID | None = None, exclude: list[uuid.UUID] | None = None) \
            -> bool:
        """Takes the lease of one claimable run and moves it on (ON_CLAIM), executing it here if that
        is RUNNING; False when there was none. One transaction: the claim's UPDATE holds the row's
        lock, so no control request lands between the two (and a failed move gives the lease back)."""
        async with self.db.transaction() as tx:
            claim = await run_store.claim_next(tx.conn, owner=self.config.owner_id, ttl_s=self.config.lease_ttl_s,
                                               states=CLAIMABLE, run_id=run_id, exclude=exclude or (),
                                               tenant_max_runs=self.config.tenant_max_runs)
            if claim is None:
                return False
            run = claim.run
            target = ON_CLAIM[run.state]
            reason = {
                RunState.PENDING: "started" if run.start_time is None else "resumed",
                RunState.PAUSING: "paused: the previous executor stopped while pausing",
                RunState.CANCELLING: "cancelled: the previous executor stopped while cancelling",
                RunState.RUNNING: "taken over after the previous executor's lease expired",
            }[run.state]
            appended = await run_store.transition(tx, run, target, reason, fence=claim.fence)
        if run.state is RunState.RUNNING:
            metrics.LEASE_TAKEOVERS.inc()
        if target is RunState.RUNNING:
            self._execute_here(replace(run, state=RunState.RUNNING, head_seq=appended.head_seq), claim.fence)
        return True

    def _execute_here(self, run: Run, fence: Fence) -> None:
        execution = RunExecution(self.db, self.provider, self._llm_limit_of(run.tenant_id), run, fence, self.config)
        task = asyncio.create_task(execution.execute(), name=f"lace-run-{run.id}")
        self._running[run.id] = (execution, task)
        metrics.RUNS_EXECUTING.inc()
        run_id = run.id
        task.add_done_callback(lambda done: self._done(run_id, done))

    def _done(self, run_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        metrics.RUNS_EXECUTING.dec()
        # Only this task's own entry: after a lease was lost and re-taken here, a newer execution
        # of the same run may hold it.
        entry = self._running.get(run_id)
        if entry is not None and entry[1] is task:
            del self._running[run_id]
        self._work_available.set()

    async def _renew_loop(self) -> None:
        interval = max(self.config.lease_ttl_s / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            # One statement for every run held here: its cost must not grow with a transaction per run.
            held = dict(self._running)
            if not held:
                continue
            try:
                async with self.db.transaction() as tx:
                    states = await run_store.renew_leases(
                        tx.conn, self.config.owner_id, {run_id: e.fence.token for run_id, (e, _) in held.items()},
                        self.config.lease_ttl_s)
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable as exc:
                log.warning("renewing the leases of %d runs: %s", len(held), exc.message)
                continue
            except Exception:
                log.exception("renewing the leases of %d runs failed", len(held))
                continue
            for run_id, (execution, task) in held.items():
                state = states.get(run_id)
                if task.done():
                    continue  # ended (and gave its lease back) since the snapshot
                if state is None:
                    log.warning("run %s: lease lost; stopping its execution here", run_id)
                    execution.control.set(RunState.FAILED)
                    task.cancel()
                else:
                    self.steer(run_id, state)

    def _llm_limit_of(self, tenant: str) -> AbstractAsyncContextManager[Any]:
        """What a run of `tenant` wraps its provider calls in: the tenant's permit (if tenants are
        limited), then the shared limit."""
        if self.config.tenant_llm_concurrency <= 0:
            return self.llm_limit
        own = self._tenant_llm.get(tenant)
        if own is None:
            limit = self.config.tenant_llm_concurrency
            own = self._tenant_llm[tenant] = GlobalLLMLimit(
                self.db, f"{self.provider.name}@{tenant}", limit=limit, local_limit=limit,
                owner=self.config.owner_id, ttl_s=self.config.llm_permit_ttl_s)
        return BothLimits(own, self.llm_limit)

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Stops claiming; in-flight runs stop and keep their lease until it expires (another takes over)."""
        self._closing = True
        for t in (self._loop_task, self._renew_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        tasks = [task for _, task in self._running.values()]
        for execution, task in self._running.values():
            execution.control.set(RunState.FAILED)
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        # Release leases so another process can take the runs over at once.
        for run_id, (execution, _) in list(self._running.items()):
            with contextlib.suppress(Exception):
                async with self.db.transaction() as tx:
                    await run_store.release_lease(tx.conn, run_id, execution.fence)
        for limit in self._tenant_llm.values():
            await limit.aclose()

