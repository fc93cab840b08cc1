import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lace.v1 import artifact_pb2 as _artifact_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_PAUSING: _ClassVar[RunState]
    RUN_STATE_PAUSED: _ClassVar[RunState]
    RUN_STATE_CANCELLING: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]
    RUN_STATE_COMPLETED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_AWAITING_REVIEW: _ClassVar[RunState]

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_KIND_UNSPECIFIED: _ClassVar[StepKind]
    STEP_KIND_SPLIT: _ClassVar[StepKind]
    STEP_KIND_WRITE: _ClassVar[StepKind]

class RunEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_EVENT_TYPE_UNSPECIFIED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_RUN_STATE_CHANGED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_STEP_STARTED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_STEP_COMPLETED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_STRATEGY_DECIDED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_NODE_SPLIT: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_BLOCKS_APPLIED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_PROPOSAL_REJECTED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_LLM_CALL_COMPLETED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_VALIDATION_REPORTED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_RUN_FAILED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_NODE_SKIPPED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_PLAN_READY: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_OUTLINE_EDITED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_HISTORY_LIMIT_APPROACHING: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_NODES_MARKED_STALE: _ClassVar[RunEventType]

class OutlineEditKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTLINE_EDIT_KIND_UNSPECIFIED: _ClassVar[OutlineEditKind]
    OUTLINE_EDIT_KIND_UPDATE: _ClassVar[OutlineEditKind]
    OUTLINE_EDIT_KIND_CREATE: _ClassVar[OutlineEditKind]
    OUTLINE_EDIT_KIND_DELETE: _ClassVar[OutlineEditKind]
    OUTLINE_EDIT_KIND_MOVE: _ClassVar[OutlineEditKind]
    OUTLINE_EDIT_KIND_UPDATE_ARTIFACT: _ClassVar[OutlineEditKind]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_PAUSING: RunState
RUN_STATE_PAUSED: RunState
RUN_STATE_CANCELLING: RunState
RUN_STATE_CANCELLED: RunState
RUN_STATE_COMPLETED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_AWAITING_REVIEW: RunState
STEP_KIND_UNSPECIFIED: StepKind
STEP_KIND_SPLIT: StepKind
STEP_KIND_WRITE: StepKind
RUN_EVENT_TYPE_UNSPECIFIED: RunEventType
RUN_EVENT_TYPE_RUN_STATE_CHANGED: RunEventType
RUN_EVENT_TYPE_STEP_STARTED: RunEventType
RUN_EVENT_TYPE_STEP_COMPLETED: RunEventType
RUN_EVENT_TYPE_STRATEGY_DECIDED: RunEventType
RUN_EVENT_TYPE_NODE_SPLIT: RunEventType
RUN_EVENT_TYPE_BLOCKS_APPLIED: RunEventType
RUN_EVENT_TYPE_PROPOSAL_REJECTED: RunEventType
RUN_EVENT_TYPE_LLM_CALL_COMPLETED: RunEventType
RUN_EVENT_TYPE_VALIDATION_REPORTED: RunEventType
RUN_EVENT_TYPE_RUN_FAILED: RunEventType
RUN_EVENT_TYPE_NODE_SKIPPED: RunEventType
RUN_EVENT_TYPE_PLAN_READY: RunEventType
RUN_EVENT_TYPE_OUTLINE_EDITED: RunEventType
RUN_EVENT_TYPE_HISTORY_LIMIT_APPROACHING: RunEventType
RUN_EVENT_TYPE_NODES_MARKED_STALE: RunEventType
OUTLINE_EDIT_KIND_UNSPECIFIED: OutlineEditKind
OUTLINE_EDIT_KIND_UPDATE: OutlineEditKind
OUTLINE_EDIT_KIND_CREATE: OutlineEditKind
OUTLINE_EDIT_KIND_DELETE: OutlineEditKind
OUTLINE_EDIT_KIND_MOVE: OutlineEditKind
OUTLINE_EDIT_KIND_UPDATE_ARTIFACT: OutlineEditKind

class RunOptions(_message.Message):
    __slots__ = ("leaf_words", "max_depth", "sibling_concurrency", "max_proposal_retries", "max_total_tokens", "max_llm_calls", "max_duration", "review_plan")
    LEAF_WORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SIBLING_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_PROPOSAL_RETRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    REVIEW_PLAN_FIELD_NUMBER: _ClassVar[int]
    leaf_words: int
    max_depth: int
    sibling_concurrency: int
    max_proposal_retries: int
    max_total_tokens: int
    max_llm_calls: int
    max_duration: _duration_pb2.Duration
    review_plan: bool
    def __init__(self, leaf_words: _Optional[int] = ..., max_depth: _Optional[int] = ..., sibling_concurrency: _Optional[int] = ..., max_proposal_retries: _Optional[int] = ..., max_total_tokens: _Optional[int] = ..., max_llm_calls: _Optional[int] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., review_plan: _Optional[bool] = ...) -> None: ...

class RunEstimate(_message.Message):
    __slots__ = ("llm_calls", "total_tokens")
    LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    llm_calls: int
    total_tokens: int
    def __init__(self, llm_calls: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "artifact_id", "state", "scope_node_id", "instruction", "options", "head_seq", "failure_reason", "usage", "llm_calls", "llm_latency_ms", "nodes_planned", "nodes_written", "words_written", "provider", "model", "create_time", "start_time", "end_time", "validation", "estimate", "failure_reason_code", "stale_only")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    LLM_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    NODES_PLANNED_FIELD_NUMBER: _ClassVar[int]
    NODES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    WORDS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    STALE_ONLY_FIELD_NUMBER: _ClassVar[int]
    id: str
    artifact_id: str
    state: RunState
    scope_node_id: str
    instruction: str
    options: RunOptions
    head_seq: int
    failure_reason: str
    usage: TokenUsage
    llm_calls: int
    llm_latency_ms: int
    nodes_planned: int
    nodes_written: int
    words_written: int
    provider: str
    model: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    validation: ValidationReport
    estimate: RunEstimate
    failure_reason_code: str
    stale_only: bool
    def __init__(self, id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., scope_node_id: _Optional[str] = ..., instruction: _Optional[str] = ..., options: _Optional[_Union[RunOptions, _Mapping]] = ..., head_seq: _Optional[int] = ..., failure_reason: _Optional[str] = ..., usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., llm_calls: _Optional[int] = ..., llm_latency_ms: _Optional[int] = ..., nodes_planned: _Optional[int] = ..., nodes_written: _Optional[int] = ..., words_written: _Optional[int] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., validation: _Optional[_Union[ValidationReport, _Mapping]] = ..., estimate: _Optional[_Union[RunEstimate, _Mapping]] = ..., failure_reason_code: _Optional[str] = ..., stale_only: _Optional[bool] = ...) -> None: ...

class RunStateChanged(_message.Message):
    __slots__ = ("from_state", "to_state", "reason")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_state: RunState
    to_state: RunState
    reason: str
    def __init__(self, from_state: _Optional[_Union[RunState, str]] = ..., to_state: _Optional[_Union[RunState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class StepStarted(_message.Message):
    __slots__ = ("node_id", "step", "attempt")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    step: StepKind
    attempt: int
    def __init__(self, node_id: _Optional[str] = ..., step: _Optional[_Union[StepKind, str]] = ..., attempt: _Optional[int] = ...) -> None: ...

class StepCompleted(_message.Message):
    __slots__ = ("node_id", "step", "attempts")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    step: StepKind
    attempts: int
    def __init__(self, node_id: _Optional[str] = ..., step: _Optional[_Union[StepKind, str]] = ..., attempts: _Optional[int] = ...) -> None: ...

class StrategyDecided(_message.Message):
    __slots__ = ("node_id", "strategy", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    strategy: StepKind
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., strategy: _Optional[_Union[StepKind, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class PlannedChild(_message.Message):
    __slots__ = ("node_id", "title", "intent", "target_words")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    title: str
    intent: str
    target_words: int
    def __init__(self, node_id: _Optional[str] = ..., title: _Optional[str] = ..., intent: _Optional[str] = ..., target_words: _Optional[int] = ...) -> None: ...

class NodeSplit(_message.Message):
    __slots__ = ("node_id", "children", "artifact_version", "repairs")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPAIRS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    children: _containers.RepeatedCompositeFieldContainer[PlannedChild]
    artifact_version: int
    repairs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., children: _Optional[_Iterable[_Union[PlannedChild, _Mapping]]] = ..., artifact_version: _Optional[int] = ..., repairs: _Optional[_Iterable[str]] = ...) -> None: ...

class BlocksApplied(_message.Message):
    __slots__ = ("node_id", "block_ids", "word_count", "removed_blocks", "artifact_version", "repairs")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPAIRS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    word_count: int
    removed_blocks: int
    artifact_version: int
    repairs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., block_ids: _Optional[_Iterable[str]] = ..., word_count: _Optional[int] = ..., removed_blocks: _Optional[int] = ..., artifact_version: _Optional[int] = ..., repairs: _Optional[_Iterable[str]] = ...) -> None: ...

class ProposalRejected(_message.Message):
    __slots__ = ("node_id", "step", "attempt", "errors", "will_retry")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    step: StepKind
    attempt: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    will_retry: bool
    def __init__(self, node_id: _Optional[str] = ..., step: _Optional[_Union[StepKind, str]] = ..., attempt: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ..., will_retry: _Optional[bool] = ...) -> None: ...

class LlmCallCompleted(_message.Message):
    __slots__ = ("call_id", "node_id", "step", "provider", "model", "usage", "latency_ms", "finish_reason", "context_tokens", "max_output_tokens")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    node_id: str
    step: StepKind
    provider: str
    model: str
    usage: TokenUsage
    latency_ms: int
    finish_reason: str
    context_tokens: int
    max_output_tokens: int
    def __init__(self, call_id: _Optional[str] = ..., node_id: _Optional[str] = ..., step: _Optional[_Union[StepKind, str]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., latency_ms: _Optional[int] = ..., finish_reason: _Optional[str] = ..., context_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ...) -> None: ...

class LeafLength(_message.Message):
    __slots__ = ("node_id", "target_words", "actual_words", "score")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORDS_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_WORDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    target_words: int
    actual_words: int
    score: float
    def __init__(self, node_id: _Optional[str] = ..., target_words: _Optional[int] = ..., actual_words: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class ValidationReport(_message.Message):
    __slots__ = ("ok", "problems", "nodes_planned", "nodes_written", "target_words", "actual_words", "document_length_score", "mean_leaf_length_score", "leaves", "quality")
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    NODES_PLANNED_FIELD_NUMBER: _ClassVar[int]
    NODES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORDS_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_WORDS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_LENGTH_SCORE_FIELD_NUMBER: _ClassVar[int]
    MEAN_LEAF_LENGTH_SCORE_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    nodes_planned: int
    nodes_written: int
    target_words: int
    actual_words: int
    document_length_score: float
    mean_leaf_length_score: float
    leaves: _containers.RepeatedCompositeFieldContainer[LeafLength]
    quality: QualityReport
    def __init__(self, ok: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., nodes_planned: _Optional[int] = ..., nodes_written: _Optional[int] = ..., target_words: _Optional[int] = ..., actual_words: _Optional[int] = ..., document_length_score: _Optional[float] = ..., mean_leaf_length_score: _Optional[float] = ..., leaves: _Optional[_Iterable[_Union[LeafLength, _Mapping]]] = ..., quality: _Optional[_Union[QualityReport, _Mapping]] = ...) -> None: ...

class QualityReport(_message.Message):
    __slots__ = ("steps_applied", "applied_first_attempt", "reasks", "repairs", "steps_failed", "calls", "calls_at_limit", "completion_tokens", "words_written", "tokens_per_word", "duplicate_headings", "repetition")
    STEPS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIRST_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASKS_FIELD_NUMBER: _ClassVar[int]
    REPAIRS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FAILED_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_AT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WORDS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_WORD_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_HEADINGS_FIELD_NUMBER: _ClassVar[int]
    REPETITION_FIELD_NUMBER: _ClassVar[int]
    steps_applied: int
    applied_first_attempt: int
    reasks: int
    repairs: int
    steps_failed: int
    calls: int
    calls_at_limit: int
    completion_tokens: int
    words_written: int
    tokens_per_word: float
    duplicate_headings: int
    repetition: float
    def __init__(self, steps_applied: _Optional[int] = ..., applied_first_attempt: _Optional[int] = ..., reasks: _Optional[int] = ..., repairs: _Optional[int] = ..., steps_failed: _Optional[int] = ..., calls: _Optional[int] = ..., calls_at_limit: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., words_written: _Optional[int] = ..., tokens_per_word: _Optional[float] = ..., duplicate_headings: _Optional[int] = ..., repetition: _Optional[float] = ...) -> None: ...

class ValidationReported(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: ValidationReport
    def __init__(self, report: _Optional[_Union[ValidationReport, _Mapping]] = ...) -> None: ...

class RunFailed(_message.Message):
    __slots__ = ("reason", "node_id", "reason_code", "budget")
    REASON_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    reason: str
    node_id: str
    reason_code: str
    budget: str
    def __init__(self, reason: _Optional[str] = ..., node_id: _Optional[str] = ..., reason_code: _Optional[str] = ..., budget: _Optional[str] = ...) -> None: ...

class NodeSkipped(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PlannedNode(_message.Message):
    __slots__ = ("node_id", "parent_id", "ordinal", "depth", "title", "intent", "target_words", "state")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    parent_id: str
    ordinal: int
    depth: int
    title: str
    intent: str
    target_words: int
    state: _artifact_pb2.NodeState
    def __init__(self, node_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., depth: _Optional[int] = ..., title: _Optional[str] = ..., intent: _Optional[str] = ..., target_words: _Optional[int] = ..., state: _Optional[_Union[_artifact_pb2.NodeState, str]] = ...) -> None: ...

class HistoryLimitApproaching(_message.Message):
    __slots__ = ("events", "limit")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    events: int
    limit: int
    def __init__(self, events: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class PlanReady(_message.Message):
    __slots__ = ("outline", "artifact_version")
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    outline: _containers.RepeatedCompositeFieldContainer[PlannedNode]
    artifact_version: int
    def __init__(self, outline: _Optional[_Iterable[_Union[PlannedNode, _Mapping]]] = ..., artifact_version: _Optional[int] = ...) -> None: ...

class OutlineEdited(_message.Message):
    __slots__ = ("kind", "node_id", "outline", "artifact_version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: OutlineEditKind
    node_id: str
    outline: _containers.RepeatedCompositeFieldContainer[PlannedNode]
    artifact_version: int
    def __init__(self, kind: _Optional[_Union[OutlineEditKind, str]] = ..., node_id: _Optional[str] = ..., outline: _Optional[_Iterable[_Union[PlannedNode, _Mapping]]] = ..., artifact_version: _Optional[int] = ...) -> None: ...

class StaleNode(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class NodesMarkedStale(_message.Message):
    __slots__ = ("nodes", "artifact_version")
    NODES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[StaleNode]
    artifact_version: int
    def __init__(self, nodes: _Optional[_Iterable[_Union[StaleNode, _Mapping]]] = ..., artifact_version: _Optional[int] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("run_id", "seq", "create_time", "run_state_changed", "step_started", "step_completed", "strategy_decided", "node_split", "blocks_applied", "proposal_rejected", "llm_call_completed", "validation_reported", "run_failed", "node_skipped", "plan_ready", "outline_edited", "history_limit_approaching", "nodes_marked_stale")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_DECIDED_FIELD_NUMBER: _ClassVar[int]
    NODE_SPLIT_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_REJECTED_FIELD_NUMBER: _ClassVar[int]
    LLM_CALL_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_REPORTED_FIELD_NUMBER: _ClassVar[int]
    RUN_FAILED_FIELD_NUMBER: _ClassVar[int]
    NODE_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    PLAN_READY_FIELD_NUMBER: _ClassVar[int]
    OUTLINE_EDITED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LIMIT_APPROACHING_FIELD_NUMBER: _ClassVar[int]
    NODES_MARKED_STALE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seq: int
    create_time: _timestamp_pb2.Timestamp
    run_state_changed: RunStateChanged
    step_started: StepStarted
    step_completed: StepCompleted
    strategy_decided: StrategyDecided
    node_split: NodeSplit
    blocks_applied: BlocksApplied
    proposal_rejected: ProposalRejected
    llm_call_completed: LlmCallCompleted
    validation_reported: ValidationReported
    run_failed: RunFailed
    node_skipped: NodeSkipped
    plan_ready: PlanReady
    outline_edited: OutlineEdited
    history_limit_approaching: HistoryLimitApproaching
    nodes_marked_stale: NodesMarkedStale
    def __init__(self, run_id: _Optional[str] = ..., seq: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_state_changed: _Optional[_Union[RunStateChanged, _Mapping]] = ..., step_started: _Optional[_Union[StepStarted, _Mapping]] = ..., step_completed: _Optional[_Union[StepCompleted, _Mapping]] = ..., strategy_decided: _Optional[_Union[StrategyDecided, _Mapping]] = ..., node_split: _Optional[_Union[NodeSplit, _Mapping]] = ..., blocks_applied: _Optional[_Union[BlocksApplied, _Mapping]] = ..., proposal_rejected: _Optional[_Union[ProposalRejected, _Mapping]] = ..., llm_call_completed: _Optional[_Union[LlmCallCompleted, _Mapping]] = ..., validation_reported: _Optional[_Union[ValidationReported, _Mapping]] = ..., run_failed: _Optional[_Union[RunFailed, _Mapping]] = ..., node_skipped: _Optional[_Union[NodeSkipped, _Mapping]] = ..., plan_ready: _Optional[_Union[PlanReady, _Mapping]] = ..., outline_edited: _Optional[_Union[OutlineEdited, _Mapping]] = ..., history_limit_approaching: _Optional[_Union[HistoryLimitApproaching, _Mapping]] = ..., nodes_marked_stale: _Optional[_Union[NodesMarkedStale, _Mapping]] = ...) -> None: ...
