"""Proto <-> engine conversion, in explicit paired functions. The only module that knows both."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from lace.v1 import artifact_pb2, run_pb2, source_pb2
from lace_engine.domain import (
    Artifact,
    Block,
    BlockContent,
    BlockKind,
    ChangeEvent,
    ChangeOp,
    EventType,
    Node,
    NodeState,
    Origin,
    OutlineEditKind,
    Passage,
    Run,
    RunEvent,
    RunOptions,
    RunState,
    Source,
    StepKind,
)
from lace_engine.ids import parse_id

_RUN_STATE_TO_PB: dict[RunState, run_pb2.RunState] = {s: getattr(run_pb2, f"RUN_STATE_{s.name}") for s in RunState}
_NODE_STATE_TO_PB = {s: getattr(artifact_pb2, f"NODE_STATE_{s.name}") for s in NodeState}
_KIND_TO_PB = {k: getattr(artifact_pb2, f"BLOCK_KIND_{k.name}") for k in BlockKind}
KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_ORIGIN_TO_PB = {o: getattr(artifact_pb2, f"CHANGE_ORIGIN_{o.name}") for o in Origin}
_OP_TO_PB = {o: getattr(artifact_pb2, f"CHANGE_OPERATION_{o.name}") for o in ChangeOp}
_STEP_TO_PB = {s.value: getattr(run_pb2, f"STEP_KIND_{s.name}") for s in StepKind}
_NODE_STATE_VALUE_TO_PB = {s.value: v for s, v in _NODE_STATE_TO_PB.items()}
_EDIT_KIND_TO_PB = {k.value: getattr(run_pb2, f"OUTLINE_EDIT_KIND_{k.name}") for k in OutlineEditKind}
EVENT_TYPE_FROM_PB = {getattr(run_pb2, f"RUN_EVENT_TYPE_{t.name}"): t for t in EventType}


def run_state_to_pb(state: RunState | str) -> run_pb2.RunState:
    return _RUN_STATE_TO_PB[RunState(state)] if state else run_pb2.RUN_STATE_UNSPECIFIED


def timestamp(dt: datetime | None) -> Timestamp | None:
    if dt is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def _id(value: uuid.UUID | None) -> str:
    return "" if value is None else str(value)


def artifact_to_pb(a: Artifact) -> artifact_pb2.Artifact:
    return artifact_pb2.Artifact(
        id=str(a.id), title=a.title, brief=a.brief, style=a.style, target_words=a.target_words,
        root_node_id=str(a.root_node_id), version=a.version, word_count=a.word_count,
        active_run_id=_id(a.active_run_id), create_time=timestamp(a.create_time),
        update_time=timestamp(a.update_time), forked_from_artifact_id=_id(a.forked_from_id),
        forked_from_version=a.forked_from_version,
    )


def node_to_pb(n: Node) -> artifact_pb2.Node:
    return artifact_pb2.Node(
        id=str(n.id), artifact_id=str(n.artifact_id), parent_id=_id(n.parent_id), ordinal=n.ordinal,
        depth=n.depth, title=n.title, intent=n.intent, target_words=n.target_words,
        state=_NODE_STATE_TO_PB[n.state], summary=n.summary, word_count=n.word_count,
        last_run_id=_id(n.last_run_id), create_time=timestamp(n.create_time),
        update_time=timestamp(n.update_time), stale_reason=n.stale_reason,
    )


def block_to_pb(b: Block) -> artifact_pb2.Block:
    msg = block_content_to_pb(b.content)
    msg.id, msg.node_id, msg.artifact_id, msg.ordinal = str(b.id), str(b.node_id), str(b.artifact_id), b.ordinal
    msg.origin = _ORIGIN_TO_PB[b.origin]
    msg.pinned = b.pinned
    msg.version = b.version
    if b.create_time:
        msg.create_time.FromDatetime(b.create_time)
    if b.update_time:
        msg.update_time.FromDatetime(b.update_time)
    return msg


def block_content_to_pb(c: BlockContent) -> artifact_pb2.Block:
    msg = artifact_pb2.Block(kind=_KIND_TO_PB[c.kind], text=c.text, heading_level=c.heading_level,
                             items=list(c.items), language=c.language,
                             cited_passage_ids=[str(p) for p in c.citations])
    if c.kind is BlockKind.TABLE:
        msg.table.header.extend(c.table_header)
        for row in c.table_rows:
            msg.table.rows.add(cells=list(row))
    return msg


def block_content_from_pb(msg: artifact_pb2.Block) -> BlockContent:
    """Reads the content fields of a client-supplied block; kind UNSPECIFIED raises KeyError."""
    return BlockContent(
        kind=KIND_FROM_PB[msg.kind], text=msg.text, heading_level=msg.heading_level, items=tuple(msg.items),
        language=msg.language, table_header=tuple(msg.table.header),
        table_rows=tuple(tuple(r.cells) for r in msg.table.rows),
        citations=tuple(parse_id(p, "block.cited_passage_ids") for p in msg.cited_passage_ids),
    )


def _block_snapshot_to_pb(data: dict[str, Any] | None, artifact_id: uuid.UUID) -> artifact_pb2.Block | None:
    if data is None:
        return None
    msg = block_content_to_pb(BlockContent.from_json(data["content"]))
    msg.id, msg.node_id, msg.artifact_id = data["id"], data["node_id"], str(artifact_id)
    msg.ordinal, msg.version, msg.pinned = int(data["ordinal"]), int(data["version"]), bool(data["pinned"])
    msg.origin = _ORIGIN_TO_PB[Origin(data["origin"])]
    return msg


def change_event_to_pb(c: ChangeEvent) -> artifact_pb2.ChangeEvent:
    return artifact_pb2.ChangeEvent(
        id=c.id, artifact_id=str(c.artifact_id), block_id=str(c.block_id), node_id=str(c.node_id),
        operation=_OP_TO_PB[c.operation], origin=_ORIGIN_TO_PB[c.origin], run_id=_id(c.run_id),
        llm_call_id=_id(c.llm_call_id), model=c.model,
        before=_block_snapshot_to_pb(c.before, c.artifact_id), after=_block_snapshot_to_pb(c.after, c.artifact_id),
        artifact_version=c.artifact_version, create_time=timestamp(c.create_time),
    )


def duration_seconds(d: duration_pb2.Duration) -> int:
    """Whole seconds, a fraction rounded up (a cap is never shorter than asked); negative stays negative."""
    return d.seconds + (1 if d.nanos > 0 else 0)


def options_to_pb(o: RunOptions) -> run_pb2.RunOptions:
    return run_pb2.RunOptions(
        leaf_words=o.leaf_words, max_depth=o.max_depth, sibling_concurrency=o.sibling_concurrency,
        max_proposal_retries=o.max_proposal_retries, max_total_tokens=o.max_total_tokens,
        max_llm_calls=o.max_llm_calls, review_plan=o.review_plan,
        max_duration=duration_pb2.Duration(seconds=o.max_duration_s) if o.max_duration_s else None)


def run_to_pb(r: Run) -> run_pb2.Run:
    return run_pb2.Run(
        id=str(r.id), artifact_id=str(r.artifact_id), state=_RUN_STATE_TO_PB[r.state],
        scope_node_id=_id(r.scope_node_id), instruction=r.instruction,
        options=options_to_pb(r.options), head_seq=r.head_seq, failure_reason=r.failure_reason,
        failure_reason_code=r.failure_code,
        usage=run_pb2.TokenUsage(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens),
        llm_calls=r.llm_calls, llm_latency_ms=r.llm_latency_ms, nodes_planned=r.nodes_planned,
        nodes_written=r.nodes_written, words_written=r.words_written, provider=r.provider, model=r.model,
        create_time=timestamp(r.create_time), start_time=timestamp(r.start_time), end_time=timestamp(r.end_time),
        validation=_validation_to_pb(r.validation),
        estimate=run_pb2.RunEstimate(**r.estimate) if r.estimate else None, stale_only=r.stale_only,
    )


def _validation_to_pb(report: dict[str, Any] | None) -> run_pb2.ValidationReport | None:
    if report is None:
        return None
    message = run_pb2.ValidationReport()
    fill_validation_report(message, report)
    return message


# Run events: one filler per payload type, writing straight into the oneof field.

def _fill_state(m: run_pb2.RunStateChanged, p: dict[str, Any]) -> None:
    m.from_state = run_state_to_pb(p.get("from_state", ""))
    m.to_state = run_state_to_pb(p["to_state"])
    m.reason = p.get("reason", "")


def _fill_step_started(m: run_pb2.StepStarted, p: dict[str, Any]) -> None:
    m.node_id, m.step, m.attempt = p["node_id"], _STEP_TO_PB[p["step"]], p["attempt"]


def _fill_step_completed(m: run_pb2.StepCompleted, p: dict[str, Any]) -> None:
    m.node_id, m.step, m.attempts = p["node_id"], _STEP_TO_PB[p["step"]], p["attempts"]


def _fill_strategy(m: run_pb2.StrategyDecided, p: dict[str, Any]) -> None:
    m.node_id, m.strategy, m.reason = p["node_id"], _STEP_TO_PB[p["strategy"]], p["reason"]


def _fill_split(m: run_pb2.NodeSplit, p: dict[str, Any]) -> None:
    m.node_id = p["node_id"]
    m.artifact_version = p.get("artifact_version", 0)
    for c in p["children"]:
        m.children.add(node_id=c["node_id"], title=c["title"], intent=c["intent"], target_words=c["target_words"])
    m.repairs.extend(p.get("repairs", ()))


def _fill_blocks(m: run_pb2.BlocksApplied, p: dict[str, Any]) -> None:
    m.node_id = p["node_id"]
    m.block_ids.extend(p["block_ids"])
    m.word_count, m.removed_blocks = p["word_count"], p.get("removed_blocks", 0)
    m.artifact_version = p.get("artifact_version", 0)
    m.repairs.extend(p.get("repairs", ()))


def _fill_rejected(m: run_pb2.ProposalRejected, p: dict[str, Any]) -> None:
    m.node_id, m.step, m.attempt, m.will_retry = p["node_id"], _STEP_TO_PB[p["step"]], p["attempt"], p["will_retry"]
    m.errors.extend(p["errors"])


def _fill_llm(m: run_pb2.LlmCallCompleted, p: dict[str, Any]) -> None:
    m.call_id, m.node_id, m.step = p["call_id"], p["node_id"], _STEP_TO_PB[p["step"]]
    m.provider, m.model, m.latency_ms = p["provider"], p["model"], p["latency_ms"]
    m.usage.prompt_tokens = p["usage"]["prompt_tokens"]
    m.usage.completion_tokens = p["usage"]["completion_tokens"]
    m.finish_reason, m.context_tokens = p.get("finish_reason", ""), p.get("context_tokens", 0)
    m.max_output_tokens = p.get("max_output_tokens", 0)


def _fill_validation(m: run_pb2.ValidationReported, p: dict[str, Any]) -> None:
    fill_validation_report(m.report, p["report"])


def fill_validation_report(rep: run_pb2.ValidationReport, r: dict[str, Any]) -> None:
    """Fills a ValidationReport message from the report's stored JSON (ValidationReport.to_json)."""
    rep.ok, rep.nodes_planned, rep.nodes_written = r["ok"], r["nodes_planned"], r["nodes_written"]
    rep.target_words, rep.actual_words = r["target_words"], r["actual_words"]
    rep.document_length_score, rep.mean_leaf_length_score = r["document_length_score"], r["mean_leaf_length_score"]
    rep.problems.extend(r["problems"])
    for leaf in r["leaves"]:
        rep.leaves.add(node_id=str(leaf["node_id"]), target_words=leaf["target_words"],
                       actual_words=leaf["actual_words"], score=leaf["score"])
    quality = r.get("quality")
    if quality is not None:
        rep.quality.CopyFrom(run_pb2.QualityReport(**quality))


def _fill_failed(m: run_pb2.RunFailed, p: dict[str, Any]) -> None:
    m.reason, m.node_id, m.reason_code = p["reason"], p.get("node_id", ""), p.get("reason_code", "")
    m.budget = p.get("budget", "")


def _fill_skipped(m: run_pb2.NodeSkipped, p: dict[str, Any]) -> None:
    m.node_id, m.reason = p["node_id"], p["reason"]


def _fill_outline(container: Any, outline: list[dict[str, Any]]) -> None:
    for n in outline:
        container.add(node_id=n["node_id"], parent_id=n["parent_id"], ordinal=n["ordinal"], depth=n["depth"],
                      title=n["title"], intent=n["intent"], target_words=n["target_words"],
                      state=_NODE_STATE_VALUE_TO_PB[n["state"]])


def _fill_plan_ready(m: run_pb2.PlanReady, p: dict[str, Any]) -> None:
    _fill_outline(m.outline, p["outline"])
    m.artifact_version = p.get("artifact_version", 0)


def _fill_outline_edited(m: run_pb2.OutlineEdited, p: dict[str, Any]) -> None:
    m.kind, m.node_id = _EDIT_KIND_TO_PB[p["kind"]], p["node_id"]
    _fill_outline(m.outline, p["outline"])
    m.artifact_version = p.get("artifact_version", 0)


def _fill_history_limit(m: run_pb2.HistoryLimitApproaching, p: dict[str, Any]) -> None:
    m.events, m.limit = p["events"], p["limit"]


def _fill_nodes_marked_stale(m: run_pb2.NodesMarkedStale, p: dict[str, Any]) -> None:
    for n in p["nodes"]:
        m.nodes.add(node_id=n["node_id"], reason=n["reason"])
    m.artifact_version = p.get("artifact_version", 0)


_FILLERS: dict[EventType, Callable[[Any, dict[str, Any]], None]] = {
    EventType.RUN_STATE_CHANGED: _fill_state,
    EventType.STEP_STARTED: _fill_step_started,
    EventType.STEP_COMPLETED: _fill_step_completed,
    EventType.STRATEGY_DECIDED: _fill_strategy,
    EventType.NODE_SPLIT: _fill_split,
    EventType.BLOCKS_APPLIED: _fill_blocks,
    EventType.PROPOSAL_REJECTED: _fill_rejected,
    EventType.LLM_CALL_COMPLETED: _fill_llm,
    EventType.VALIDATION_REPORTED: _fill_validation,
    EventType.RUN_FAILED: _fill_failed,
    EventType.NODE_SKIPPED: _fill_skipped,
    EventType.PLAN_READY: _fill_plan_ready,
    EventType.OUTLINE_EDITED: _fill_outline_edited,
    EventType.HISTORY_LIMIT_APPROACHING: _fill_history_limit,
    EventType.NODES_MARKED_STALE: _fill_nodes_marked_stale,
}


def fill_run_event(msg: run_pb2.RunEvent, e: RunEvent) -> None:
    """Fills a (new, e.g. repeated-field-added) RunEvent message from an engine event."""
    msg.run_id = str(e.run_id)
    msg.seq = e.seq
    msg.create_time.FromDatetime(e.create_time)
    _FILLERS[e.type](getattr(msg, e.type.value), e.payload)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)


def _epoch_parts(dt: datetime) -> tuple[int, int]:
    """(seconds, nanos) as Timestamp.FromDatetime computes them (naive means UTC), without its time tuples."""
    delta = dt - (_EPOCH if dt.tzinfo is not None else _EPOCH_NAIVE)
    return delta.days * 86_400 + delta.seconds, delta.microseconds * 1000


def fill_run_events(container: Any, events: Sequence[RunEvent]) -> None:
    """Appends `events` to a repeated RunEvent field; the StreamRun hot path.

    Same messages as fill_run_event, but the run id's string and each distinct create_time
    (a transaction's events share one) are converted once per batch.
    """
    run_key: uuid.UUID | None = None
    run_text = ""
    last_time: datetime | None = None
    seconds = nanos = 0
    fillers = _FILLERS
    for e in events:
        msg = container.add()
        if e.run_id != run_key:
            run_key, run_text = e.run_id, str(e.run_id)
        msg.run_id = run_text
        msg.seq = e.seq
        if e.create_time != last_time:
            last_time = e.create_time
            seconds, nanos = _epoch_parts(last_time)
        stamp = msg.create_time
        stamp.seconds, stamp.nanos = seconds, nanos
        fillers[e.type](getattr(msg, e.type.value), e.payload)


def run_event_to_pb(e: RunEvent) -> run_pb2.RunEvent:
    msg = run_pb2.RunEvent()
    fill_run_event(msg, e)
    return msg


def source_to_pb(s: Source) -> source_pb2.Source:
    msg = source_pb2.Source(
        id=str(s.id), artifact_id=str(s.artifact_id), title=s.title, media_type=s.media_type,
        size_bytes=s.size_bytes, char_count=s.char_count, passage_count=s.passage_count,
        content_hash=s.content_hash, create_time=timestamp(s.create_time))
    if s.delete_time is not None:
        msg.delete_time.FromDatetime(s.delete_time)
    return msg


def passage_to_pb(p: Passage) -> source_pb2.Passage:
    return source_pb2.Passage(
        id=str(p.id), source_id=str(p.source_id), ordinal=p.ordinal, start_offset=p.start_offset,
        end_offset=p.end_offset, text=p.text, content_hash=p.content_hash, source_title=p.source_title)
