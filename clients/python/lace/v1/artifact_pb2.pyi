import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_PLANNED: _ClassVar[NodeState]
    NODE_STATE_SPLIT: _ClassVar[NodeState]
    NODE_STATE_WRITTEN: _ClassVar[NodeState]
    NODE_STATE_FAILED: _ClassVar[NodeState]

class BlockKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BLOCK_KIND_UNSPECIFIED: _ClassVar[BlockKind]
    BLOCK_KIND_PARAGRAPH: _ClassVar[BlockKind]
    BLOCK_KIND_HEADING: _ClassVar[BlockKind]
    BLOCK_KIND_BULLET_LIST: _ClassVar[BlockKind]
    BLOCK_KIND_ORDERED_LIST: _ClassVar[BlockKind]
    BLOCK_KIND_CODE: _ClassVar[BlockKind]
    BLOCK_KIND_QUOTE: _ClassVar[BlockKind]
    BLOCK_KIND_TABLE: _ClassVar[BlockKind]

class ChangeOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_ORIGIN_UNSPECIFIED: _ClassVar[ChangeOrigin]
    CHANGE_ORIGIN_LLM: _ClassVar[ChangeOrigin]
    CHANGE_ORIGIN_HUMAN: _ClassVar[ChangeOrigin]

class ChangeOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_OPERATION_UNSPECIFIED: _ClassVar[ChangeOperation]
    CHANGE_OPERATION_CREATE: _ClassVar[ChangeOperation]
    CHANGE_OPERATION_UPDATE: _ClassVar[ChangeOperation]
    CHANGE_OPERATION_DELETE: _ClassVar[ChangeOperation]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_PLANNED: NodeState
NODE_STATE_SPLIT: NodeState
NODE_STATE_WRITTEN: NodeState
NODE_STATE_FAILED: NodeState
BLOCK_KIND_UNSPECIFIED: BlockKind
BLOCK_KIND_PARAGRAPH: BlockKind
BLOCK_KIND_HEADING: BlockKind
BLOCK_KIND_BULLET_LIST: BlockKind
BLOCK_KIND_ORDERED_LIST: BlockKind
BLOCK_KIND_CODE: BlockKind
BLOCK_KIND_QUOTE: BlockKind
BLOCK_KIND_TABLE: BlockKind
CHANGE_ORIGIN_UNSPECIFIED: ChangeOrigin
CHANGE_ORIGIN_LLM: ChangeOrigin
CHANGE_ORIGIN_HUMAN: ChangeOrigin
CHANGE_OPERATION_UNSPECIFIED: ChangeOperation
CHANGE_OPERATION_CREATE: ChangeOperation
CHANGE_OPERATION_UPDATE: ChangeOperation
CHANGE_OPERATION_DELETE: ChangeOperation

class Artifact(_message.Message):
    __slots__ = ("id", "title", "brief", "style", "target_words", "root_node_id", "version", "word_count", "active_run_id", "create_time", "update_time", "forked_from_artifact_id", "forked_from_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BRIEF_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORDS_FIELD_NUMBER: _ClassVar[int]
    ROOT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    brief: str
    style: str
    target_words: int
    root_node_id: str
    version: int
    word_count: int
    active_run_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    forked_from_artifact_id: str
    forked_from_version: int
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., brief: _Optional[str] = ..., style: _Optional[str] = ..., target_words: _Optional[int] = ..., root_node_id: _Optional[str] = ..., version: _Optional[int] = ..., word_count: _Optional[int] = ..., active_run_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forked_from_artifact_id: _Optional[str] = ..., forked_from_version: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "artifact_id", "parent_id", "ordinal", "depth", "title", "intent", "target_words", "state", "summary", "word_count", "last_run_id", "create_time", "update_time", "stale_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STALE_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    artifact_id: str
    parent_id: str
    ordinal: int
    depth: int
    title: str
    intent: str
    target_words: int
    state: NodeState
    summary: str
    word_count: int
    last_run_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    stale_reason: str
    def __init__(self, id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., depth: _Optional[int] = ..., title: _Optional[str] = ..., intent: _Optional[str] = ..., target_words: _Optional[int] = ..., state: _Optional[_Union[NodeState, str]] = ..., summary: _Optional[str] = ..., word_count: _Optional[int] = ..., last_run_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stale_reason: _Optional[str] = ...) -> None: ...

class TableRow(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cells: _Optional[_Iterable[str]] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("header", "rows")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    header: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[TableRow]
    def __init__(self, header: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[TableRow, _Mapping]]] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("id", "node_id", "artifact_id", "ordinal", "kind", "text", "heading_level", "items", "language", "table", "origin", "pinned", "version", "create_time", "update_time", "cited_passage_ids")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    HEADING_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CITED_PASSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    node_id: str
    artifact_id: str
    ordinal: int
    kind: BlockKind
    text: str
    heading_level: int
    items: _containers.RepeatedScalarFieldContainer[str]
    language: str
    table: Table
    origin: ChangeOrigin
    pinned: bool
    version: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    cited_passage_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., node_id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., kind: _Optional[_Union[BlockKind, str]] = ..., text: _Optional[str] = ..., heading_level: _Optional[int] = ..., items: _Optional[_Iterable[str]] = ..., language: _Optional[str] = ..., table: _Optional[_Union[Table, _Mapping]] = ..., origin: _Optional[_Union[ChangeOrigin, str]] = ..., pinned: _Optional[bool] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cited_passage_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ChangeEvent(_message.Message):
    __slots__ = ("id", "artifact_id", "block_id", "node_id", "operation", "origin", "run_id", "llm_call_id", "model", "before", "after", "artifact_version", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LLM_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    artifact_id: str
    block_id: str
    node_id: str
    operation: ChangeOperation
    origin: ChangeOrigin
    run_id: str
    llm_call_id: str
    model: str
    before: Block
    after: Block
    artifact_version: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., artifact_id: _Optional[str] = ..., block_id: _Optional[str] = ..., node_id: _Optional[str] = ..., operation: _Optional[_Union[ChangeOperation, str]] = ..., origin: _Optional[_Union[ChangeOrigin, str]] = ..., run_id: _Optional[str] = ..., llm_call_id: _Optional[str] = ..., model: _Optional[str] = ..., before: _Optional[_Union[Block, _Mapping]] = ..., after: _Optional[_Union[Block, _Mapping]] = ..., artifact_version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
