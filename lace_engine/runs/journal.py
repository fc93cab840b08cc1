"""One run's writes under its lease: every commit its executor makes, each one transaction.

Every write is fenced by the lease (a stale one raises LeaseLost and writes nothing), its events
are published once it commits, and `head` follows the newest seq written here, so the executor
can tell its own commits from someone else's (a pause, a cancel, a person's edit).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lace_engine import metrics
from lace_engine.domain import EventType, NewEvent, Node, NodeState, RunState, StepKind
from lace_engine.errors import Aborted, LeaseLost
from lace_engine.llm.base import LLMError, LLMProvider, LLMRequest, LLMResponse
from lace_engine.pipeline import staleness
from lace_engine.pipeline.apply import Mutation, tree_after
from lace_engine.pipeline.context_builder import PromptContext
from lace_engine.pipeline.strategy import StrategyDecision
from lace_engine.pipeline.tree import Tree
from lace_engine.storage import apply_store, event_log, ir_store, run_store
from lace_engine.storage.database import Database
from lace_engine.storage.event_log import Fence

ACTIVE = frozenset({RunState.RUNNING, RunState.PAUSING})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one step: what was asked, for which node; travels through recording and Apply."""

    node: Node
    decision: StrategyDecision
    number: int
    call_id: uuid.UUID
    context: PromptContext
    request: LLMRequest


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What one LLM call cost and how it ended, from its response or from its error."""

    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    finish_reason: str

    @classmethod
    def of(cls, result: LLMResponse | LLMError, provider: LLMProvider) -> CallOutcome:
        # An error raised before the server answered names neither; the configured provider does.
        return cls(provider=result.provider or provider.name, model=result.model or provider.model,
                   prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                   latency_ms=result.latency_ms,
                   finish_reason=result.finish_reason if isinstance(result, LLMResponse) else type(result).__name__)

    @property
    def increments(self) -> dict[str, int]:
        """The run's counters this call adds to."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "llm_calls": 1, "llm_latency_ms": self.latency_ms}


class RunJournal:
    """Commits one run's events, transitions, rejected calls and Apply under the lease `fence`."""

    def __init__(self, db: Database, run_id: uuid.UUID, fence: Fence, head: int):
        self.db = db
        self.run_id = run_id
        self.fence = fence
        self.head = head
        # The head of a transaction of ours that is committing: its NOTIFY can arrive before the
        # commit's reply does, and must not look like someone else's commit (see `seen_head`).
        self._committing = 0

    @property
    def seen_head(self) -> int:
        """The newest seq this journal wrote or is committing now."""
        return max(self.head, self._committing)

    def _wrote(self, head: int) -> None:
        self.head = max(self.head, head)

    def _committing_to(self, head: int) -> None:
        self._committing = head

    @contextlib.asynccontextmanager
    async def _ending(self) -> AsyncIterator[None]:
        """Around each transaction that appends events: however it ends, nothing of ours is committing
        after it (no await separates its end from `_wrote`, so no NOTIFY is handled in between)."""
        try:
            yield
        finally:
            self._committing = 0

    async def commit(self, events: Sequence[NewEvent], *, states: frozenset[RunState] = ACTIVE,
                     increments: Mapping[str, int] | None = None, set_values: Mapping[str, Any] | None = None) -> None:
        """Appends events (and sets the run's columns) while the run is in one of `states`; LeaseLost otherwise."""
        async with self._ending(), self.db.one_statement() as tx:
            # The head is read after COMMIT, and the commit's NOTIFY may come first: until then,
            # the head it reaches if no one else writes meanwhile (if someone does, theirs or ours
            # shows a head past it, and the executor looks at the run: the safe side).
            self._committing_to(self.head + len(events))
            pending = await event_log.append_at_commit(tx, self.run_id, events, fence=self.fence,
                                                       allowed_states=states, set_values=set_values,
                                                       increments=increments)
        self._wrote(pending.appended.head_seq)

    async def transition(self, to: RunState, reason: str, *, when: frozenset[RunState],
                         extra: Sequence[NewEvent] = (), set_values: Mapping[str, Any] | None = None,
                         expect: RunState | None = None) -> RunState:
        """Moves the run to `to` if the state it is in (read under its row lock) is in `when`;
        returns that state either way. `expect` (RUNNING or PAUSING), the state it is most likely in,
        is tried first in one round trip; only when the run is not in it is its state read and decided on."""
        if expect is not None and expect in ACTIVE & when:
            # Both active states are entered from RUNNING, whose move set start_time: the run has started.
            events, values = run_store.state_change(expect, to, reason, started=True, extra_events=tuple(extra),
                                                    set_values=set_values)
            try:
                await self.commit(events, states=frozenset({expect}), set_values=values)
                return expect
            except LeaseLost:
                pass  # in another state, or the lease is gone: nothing was written, and the read below tells
        async with self._ending(), self.db.transaction() as tx:
            run = await run_store.get_run(tx.conn, self.run_id, for_update=True)
            if run.state not in when:
                return run.state
            appended = await run_store.transition(tx, run, to, reason, fence=self.fence, extra_events=tuple(extra),
                                                  set_values=set_values)
            self._committing_to(appended.head_seq)
        self._wrote(appended.head_seq)
        return run.state

    async def renew(self, ttl_s: float) -> RunState | None:
        """Extends the lease; the run's state, or None when the lease is no longer ours."""
        async with self.db.transaction() as tx:
            states = await run_store.renew_leases(tx.conn, self.fence.owner, {self.run_id: self.fence.token}, ttl_s)
        return states.get(self.run_id)

    async def reject(self, attempt: Attempt, outcome: CallOutcome, errors: Sequence[str], *,
                     will_retry: bool) -> None:
        """Records a call whose answer was not applied (unusable, or refused by Apply) and why."""
        events = [call_event(attempt, outcome), NewEvent(EventType.PROPOSAL_REJECTED, {
            "node_id": str(attempt.node.id), "step": attempt.decision.step.value, "attempt": attempt.number,
            "errors": list(errors), "will_retry": will_retry})]
        async with self._ending(), self.db.pipelined_transaction() as tx:
            appended = await event_log.append(tx, self.run_id, events, fence=self.fence, allowed_states=ACTIVE,
                                              increments=outcome.increments)
            row = call_row(self.run_id, attempt, outcome, "rejected", "; ".join(errors))
            await (await tx.driver()).execute(*run_store.llm_call_insert(row))
            self._committing_to(appended.head_seq)
        self._wrote(appended.head_seq)

    async def apply(self, attempt: Attempt, outcome: CallOutcome, mutation: Mutation, tree: Tree) -> Mutation:
        """Writes an accepted proposal through Apply with its call's event and row, and the stale marks
        it causes (`tree` is the IR it was planned from); returns what was written. Aborted on a stale plan."""
        started = time.perf_counter()
        try:
            written = await self._apply(attempt, outcome, mutation, tree)
        except Aborted:
            metrics.APPLY_TRANSACTIONS.labels("aborted").inc()
            raise
        metrics.APPLY_TRANSACTIONS.labels("applied").inc()
        metrics.APPLY_DURATION.observe(time.perf_counter() - started)
        return written

    async def _apply(self, attempt: Attempt, outcome: CallOutcome, mutation: Mutation, tree: Tree) -> Mutation:
        node = attempt.node
        statements = [run_store.llm_call_insert(call_row(self.run_id, attempt, outcome, "applied"))]
        async with self._ending(), self.db.pipelined_transaction() as tx:
            if attempt.decision.step is StepKind.WRITE:
                statements += ir_store.dependency_statements(
                    node.id, attempt.call_id, staleness.dependencies(attempt.context.manifest))
                if node.state is NodeState.WRITTEN:
                    # A rewrite: the sections that read this one's summary may be stale now.
                    refs = await ir_store.dependants(await tx.driver(), [node.id])
                    change = staleness.rewritten(node, tree_after(tree, mutation).get(node.id), self.run_id)
                    marks = staleness.stale_marks(refs, {node.id: change}, exclude={node.id})
                    mutation = staleness.with_marks(mutation, marks, in_run=True)
            written = await apply_store.write_mutation(
                tx, mutation, run_id=self.run_id, fence=self.fence,
                events_before=[call_event(attempt, outcome)],
                events_after=[NewEvent(EventType.STEP_COMPLETED, {
                    "node_id": str(node.id), "step": attempt.decision.step.value,
                    "attempts": attempt.number})],
                run_increments=outcome.increments,
                statements=statements,
            )
            self._committing_to(written.head_seq)
        self._wrote(written.head_seq)
        return mutation


def call_event(attempt: Attempt, outcome: CallOutcome) -> NewEvent:
    """The llm_call_completed event of one call."""
    return NewEvent(EventType.LLM_CALL_COMPLETED, {
        "call_id": str(attempt.call_id), "node_id": str(attempt.node.id), "step": attempt.decision.step.value,
        "provider": outcome.provider, "model": outcome.model,
        "usage": {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens},
        "latency_ms": outcome.latency_ms, "finish_reason": outcome.finish_reason,
        "context_tokens": attempt.context.estimated_tokens,
        "max_output_tokens": attempt.request.max_output_tokens,
    })


def call_row(run_id: uuid.UUID, attempt: Attempt, outcome: CallOutcome, result: str, error: str = "") \
        -> dict[str, Any]:
    """The llm_calls row of one call: its cost, its outcome and what went into its prompt."""
    return {
        "id": attempt.call_id, "run_id": run_id, "node_id": attempt.node.id,
        "step": attempt.decision.step.value, "attempt": attempt.number,
        "provider": outcome.provider, "model": outcome.model, "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens, "latency_ms": outcome.latency_ms,
        "finish_reason": outcome.finish_reason, "context_tokens": attempt.context.estimated_tokens,
        "context_manifest": [
            {"kind": e.kind, "node_id": str(e.node_id) if e.node_id else None, "hash": e.content_hash,
             **({"passage_id": str(e.passage_id)} if e.passage_id else {})}
            for e in attempt.context.manifest
        ],
        "outcome": result, "error": error,
    }
