"""Plain domain types of the IR (artifacts, nodes, blocks) and of runs and their events."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lace_engine.tenancy import DEFAULT_TENANT


class RunState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    # RunOptions.review_plan: the whole tree is planned; nothing is written until ResumeRun.
    AWAITING_REVIEW = "awaiting_review"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_RUN_STATES

    @property
    def active(self) -> bool:
        return not self.terminal


TERMINAL_RUN_STATES = frozenset({RunState.CANCELLED, RunState.COMPLETED, RunState.FAILED})


class NodeState(enum.StrEnum):
    PLANNED = "planned"
    SPLIT = "split"
    WRITTEN = "written"
    FAILED = "failed"


class BlockKind(enum.StrEnum):
    PARAGRAPH = "paragraph"
    HEADING = "heading"
    BULLET_LIST = "bullet_list"
    ORDERED_LIST = "ordered_list"
    CODE = "code"
    QUOTE = "quote"
    TABLE = "table"


class Origin(enum.StrEnum):
    LLM = "llm"
    HUMAN = "human"


class ChangeOp(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class StepKind(enum.StrEnum):
    SPLIT = "split"
    WRITE = "write"


class EventType(enum.StrEnum):
    """Run event types; the values are the payload field names of lace.v1.RunEvent."""

    RUN_STATE_CHANGED = "run_state_changed"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STRATEGY_DECIDED = "strategy_decided"
    NODE_SPLIT = "node_split"
    BLOCKS_APPLIED = "blocks_applied"
    PROPOSAL_REJECTED = "proposal_rejected"
    LLM_CALL_COMPLETED = "llm_call_completed"
    VALIDATION_REPORTED = "validation_reported"
    RUN_FAILED = "run_failed"
    NODE_SKIPPED = "node_skipped"
    PLAN_READY = "plan_ready"
    HISTORY_LIMIT_APPROACHING = "history_limit_approaching"
    OUTLINE_EDITED = "outline_edited"
    NODES_MARKED_STALE = "nodes_marked_stale"


class OutlineEditKind(enum.StrEnum):
    """What an outline edit did (OutlineEdited.kind)."""

    UPDATE = "update"
    CREATE = "create"
    DELETE = "delete"
    MOVE = "move"
    UPDATE_ARTIFACT = "update_artifact"


@dataclass(frozen=True, slots=True)
class Artifact:
    id: uuid.UUID
    title: str
    brief: str
    style: str
    target_words: int
    root_node_id: uuid.UUID
    version: int
    word_count: int
    active_run_id: uuid.UUID | None
    create_time: datetime
    update_time: datetime
    # ForkArtifact: the artifact and version this one was copied from.
    forked_from_id: uuid.UUID | None = None
    forked_from_version: int = 0
    # The tenant that owns it (and everything under it); never changes.
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class Node:
    id: uuid.UUID
    artifact_id: uuid.UUID
    parent_id: uuid.UUID | None
    ordinal: int
    depth: int
    title: str
    intent: str
    target_words: int
    state: NodeState
    summary: str = ""
    word_count: int = 0
    last_run_id: uuid.UUID | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None
    # Why the written text is out of date with what it was written from (pipeline/staleness.py);
    # "" when fresh. Cleared when a run writes the node again.
    stale_reason: str = ""


@dataclass(frozen=True, slots=True)
class BlockContent:
    """The content of a block, independent of where it sits. Equal content compares equal."""

    kind: BlockKind
    text: str = ""
    heading_level: int = 0
    items: tuple[str, ...] = ()
    language: str = ""
    table_header: tuple[str, ...] = ()
    table_rows: tuple[tuple[str, ...], ...] = ()
    # Passages of the artifact's sources that this block cites, in the order the writer gave them.
    citations: tuple[uuid.UUID, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        if self.text:
            out["text"] = self.text
        if self.heading_level:
            out["heading_level"] = self.heading_level
        if self.items:
            out["items"] = list(self.items)
        if self.language:
            out["language"] = self.language
        if self.table_header:
            out["table_header"] = list(self.table_header)
        if self.table_rows:
            out["table_rows"] = [list(r) for r in self.table_rows]
        if self.citations:
            out["citations"] = [str(c) for c in self.citations]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockContent:
        return cls(
            kind=BlockKind(data["kind"]),
            text=data.get("text", ""),
            heading_level=int(data.get("heading_level", 0)),
            items=tuple(data.get("items", ())),
            language=data.get("language", ""),
            table_header=tuple(data.get("table_header", ())),
            table_rows=tuple(tuple(r) for r in data.get("table_rows", ())),
            citations=tuple(uuid.UUID(c) for c in data.get("citations", ())),
        )

    def words(self) -> int:
        """Counts words the way the length score does: whitespace-separated tokens of all text."""
        n = len(self.text.split()) if self.kind is not BlockKind.CODE else 0
        n += sum(len(i.split()) for i in self.items)
        n += sum(len(c.split()) for c in self.table_header)
        n += sum(len(c.split()) for row in self.table_rows for c in row)
        return n


@dataclass(frozen=True, slots=True)
class Block:
    id: uuid.UUID
    artifact_id: uuid.UUID
    node_id: uuid.UUID
    ordinal: int
    content: BlockContent
    origin: Origin
    pinned: bool
    version: int
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """A document attached to an artifact as material to write from; its text is split into passages."""

    id: uuid.UUID
    artifact_id: uuid.UUID
    title: str
    media_type: str
    size_bytes: int
    char_count: int
    passage_count: int
    content_hash: str
    create_time: datetime
    # Set by DeleteSource: the source is no longer retrieved, but what cited it still resolves.
    delete_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Passage:
    """A span of a source's extracted text, [start_offset, end_offset) in characters."""

    id: uuid.UUID
    source_id: uuid.UUID
    ordinal: int
    start_offset: int
    end_offset: int
    text: str
    content_hash: str
    source_title: str = ""


@dataclass(frozen=True, slots=True)
class RunOptions:
    leaf_words: int = 1000
    max_depth: int = 4
    sibling_concurrency: int = 1
    max_proposal_retries: int = 2
    # Hard caps of the run; 0 is none.
    max_total_tokens: int = 0
    max_llm_calls: int = 0
    max_duration_s: int = 0
    # Plan the whole tree, then stop in AWAITING_REVIEW until ResumeRun; nothing is written before.
    review_plan: bool = False

    def to_json(self) -> dict[str, int]:
        return {
            "leaf_words": self.leaf_words,
            "max_depth": self.max_depth,
            "sibling_concurrency": self.sibling_concurrency,
            "max_proposal_retries": self.max_proposal_retries,
            "max_total_tokens": self.max_total_tokens,
            "max_llm_calls": self.max_llm_calls,
            "max_duration_s": self.max_duration_s,
            "review_plan": self.review_plan,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOptions:
        return cls(**{k: bool(v) if k == "review_plan" else int(v)  # type: ignore[arg-type]
                      for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Run:
    id: uuid.UUID
    artifact_id: uuid.UUID
    state: RunState
    scope_node_id: uuid.UUID | None
    instruction: str
    options: RunOptions
    head_seq: int
    failure_reason: str
    prompt_tokens: int
    completion_tokens: int
    llm_calls: int
    llm_latency_ms: int
    nodes_planned: int
    nodes_written: int
    words_written: int
    provider: str
    model: str
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    # The ValidationReport (with its quality report) as JSON, once the run has COMPLETED.
    validation: dict[str, Any] | None = None
    # The preflight estimate made at StartRun: {"llm_calls": n, "total_tokens": n}.
    estimate: dict[str, int] | None = None
    # RunFailed.reason_code of a failed run; "" otherwise.
    failure_code: str = ""
    # The W3C trace context (traceparent, tracestate) of the StartRun call, if it was traced.
    trace_context: dict[str, str] | None = None
    # StartRun's stale_only: the run rewrites exactly the written sections marked stale (in scope).
    stale_only: bool = False
    # The tenant of its artifact.
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One committed event: `payload` holds the fields of the typed lace.v1 payload message."""

    run_id: uuid.UUID
    seq: int
    type: EventType
    payload: dict[str, Any]
    create_time: datetime


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; its seq is assigned inside the writing transaction."""

    type: EventType
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    id: int
    artifact_id: uuid.UUID
    block_id: uuid.UUID
    node_id: uuid.UUID
    operation: ChangeOp
    origin: Origin
    run_id: uuid.UUID | None
    llm_call_id: uuid.UUID | None
    model: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    artifact_version: int
    create_time: datetime
