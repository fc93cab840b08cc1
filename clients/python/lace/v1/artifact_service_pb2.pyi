from google.protobuf import field_mask_pb2 as _field_mask_pb2
from lace.v1 import artifact_pb2 as _artifact_pb2
from lace.v1 import source_pb2 as _source_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_VIEW_UNSPECIFIED: _ClassVar[ArtifactView]
    ARTIFACT_VIEW_BASIC: _ClassVar[ArtifactView]
    ARTIFACT_VIEW_FULL: _ClassVar[ArtifactView]

class CompileFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPILE_FORMAT_UNSPECIFIED: _ClassVar[CompileFormat]
    COMPILE_FORMAT_MARKDOWN: _ClassVar[CompileFormat]
    COMPILE_FORMAT_HTML: _ClassVar[CompileFormat]
    COMPILE_FORMAT_JSON: _ClassVar[CompileFormat]
    COMPILE_FORMAT_DOCX: _ClassVar[CompileFormat]
    COMPILE_FORMAT_ODT: _ClassVar[CompileFormat]
    COMPILE_FORMAT_EPUB: _ClassVar[CompileFormat]
    COMPILE_FORMAT_PDF: _ClassVar[CompileFormat]
ARTIFACT_VIEW_UNSPECIFIED: ArtifactView
ARTIFACT_VIEW_BASIC: ArtifactView
ARTIFACT_VIEW_FULL: ArtifactView
COMPILE_FORMAT_UNSPECIFIED: CompileFormat
COMPILE_FORMAT_MARKDOWN: CompileFormat
COMPILE_FORMAT_HTML: CompileFormat
COMPILE_FORMAT_JSON: CompileFormat
COMPILE_FORMAT_DOCX: CompileFormat
COMPILE_FORMAT_ODT: CompileFormat
COMPILE_FORMAT_EPUB: CompileFormat
COMPILE_FORMAT_PDF: CompileFormat

class CreateArtifactRequest(_message.Message):
    __slots__ = ("artifact", "request_id")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    request_id: str
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "view", "artifact_version")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    view: ArtifactView
    artifact_version: int
    def __init__(self, artifact_id: _Optional[str] = ..., view: _Optional[_Union[ArtifactView, str]] = ..., artifact_version: _Optional[int] = ...) -> None: ...

class GetArtifactResponse(_message.Message):
    __slots__ = ("artifact", "nodes", "blocks")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    nodes: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Node]
    blocks: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Block]
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[_artifact_pb2.Node, _Mapping]]] = ..., blocks: _Optional[_Iterable[_Union[_artifact_pb2.Block, _Mapping]]] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "order_by")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    order_by: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "next_page_token")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Artifact]
    next_page_token: str
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_artifact_pb2.Artifact, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateArtifactRequest(_message.Message):
    __slots__ = ("artifact", "update_mask", "request_id")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class DeleteArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "allow_missing", "request_id")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    allow_missing: bool
    request_id: str
    def __init__(self, artifact_id: _Optional[str] = ..., allow_missing: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteArtifactResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForkArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "artifact_version", "request_id")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    artifact_version: int
    request_id: str
    def __init__(self, artifact_id: _Optional[str] = ..., artifact_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ForkArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class CompileArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "format", "artifact_version")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    format: CompileFormat
    artifact_version: int
    def __init__(self, artifact_id: _Optional[str] = ..., format: _Optional[_Union[CompileFormat, str]] = ..., artifact_version: _Optional[int] = ...) -> None: ...

class CompileArtifactResponse(_message.Message):
    __slots__ = ("content", "media_type", "artifact_version", "binary_content", "file_name")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BINARY_CONTENT_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    content: str
    media_type: str
    artifact_version: int
    binary_content: bytes
    file_name: str
    def __init__(self, content: _Optional[str] = ..., media_type: _Optional[str] = ..., artifact_version: _Optional[int] = ..., binary_content: _Optional[bytes] = ..., file_name: _Optional[str] = ...) -> None: ...

class EditBlockRequest(_message.Message):
    __slots__ = ("block_id", "block", "expected_version", "request_id")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    block: _artifact_pb2.Block
    expected_version: int
    request_id: str
    def __init__(self, block_id: _Optional[str] = ..., block: _Optional[_Union[_artifact_pb2.Block, _Mapping]] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class EditBlockResponse(_message.Message):
    __slots__ = ("block",)
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    block: _artifact_pb2.Block
    def __init__(self, block: _Optional[_Union[_artifact_pb2.Block, _Mapping]] = ...) -> None: ...

class ListBlockChangesRequest(_message.Message):
    __slots__ = ("block_id", "page_size", "page_token")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    page_size: int
    page_token: str
    def __init__(self, block_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBlockChangesResponse(_message.Message):
    __slots__ = ("change_events", "next_page_token", "cited_passages")
    CHANGE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CITED_PASSAGES_FIELD_NUMBER: _ClassVar[int]
    change_events: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.ChangeEvent]
    next_page_token: str
    cited_passages: _containers.RepeatedCompositeFieldContainer[_source_pb2.Passage]
    def __init__(self, change_events: _Optional[_Iterable[_Union[_artifact_pb2.ChangeEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., cited_passages: _Optional[_Iterable[_Union[_source_pb2.Passage, _Mapping]]] = ...) -> None: ...

class RevertBlockRequest(_message.Message):
    __slots__ = ("block_id", "block_version", "expected_version", "request_id")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    block_version: int
    expected_version: int
    request_id: str
    def __init__(self, block_id: _Optional[str] = ..., block_version: _Optional[int] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevertBlockResponse(_message.Message):
    __slots__ = ("block",)
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    block: _artifact_pb2.Block
    def __init__(self, block: _Optional[_Union[_artifact_pb2.Block, _Mapping]] = ...) -> None: ...

class UpdateNodeRequest(_message.Message):
    __slots__ = ("node", "update_mask", "request_id")
    NODE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    node: _artifact_pb2.Node
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, node: _Optional[_Union[_artifact_pb2.Node, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _artifact_pb2.Node
    def __init__(self, node: _Optional[_Union[_artifact_pb2.Node, _Mapping]] = ...) -> None: ...

class CreateNodeRequest(_message.Message):
    __slots__ = ("parent_id", "node", "position", "request_id")
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent_id: str
    node: _artifact_pb2.Node
    position: int
    request_id: str
    def __init__(self, parent_id: _Optional[str] = ..., node: _Optional[_Union[_artifact_pb2.Node, _Mapping]] = ..., position: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _artifact_pb2.Node
    def __init__(self, node: _Optional[_Union[_artifact_pb2.Node, _Mapping]] = ...) -> None: ...

class DeleteNodeRequest(_message.Message):
    __slots__ = ("node_id", "request_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    request_id: str
    def __init__(self, node_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteNodeResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class MoveNodeRequest(_message.Message):
    __slots__ = ("node_id", "parent_id", "position", "request_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    parent_id: str
    position: int
    request_id: str
    def __init__(self, node_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., position: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class MoveNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _artifact_pb2.Node
    def __init__(self, node: _Optional[_Union[_artifact_pb2.Node, _Mapping]] = ...) -> None: ...
