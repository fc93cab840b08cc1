import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(_message.Message):
    __slots__ = ("id", "artifact_id", "title", "media_type", "size_bytes", "char_count", "passage_count", "content_hash", "create_time", "delete_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHAR_COUNT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    artifact_id: str
    title: str
    media_type: str
    size_bytes: int
    char_count: int
    passage_count: int
    content_hash: str
    create_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., title: _Optional[str] = ..., media_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., char_count: _Optional[int] = ..., passage_count: _Optional[int] = ..., content_hash: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Passage(_message.Message):
    __slots__ = ("id", "source_id", "ordinal", "start_offset", "end_offset", "text", "content_hash", "source_title")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TITLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    source_id: str
    ordinal: int
    start_offset: int
    end_offset: int
    text: str
    content_hash: str
    source_title: str
    def __init__(self, id: _Optional[str] = ..., source_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., text: _Optional[str] = ..., content_hash: _Optional[str] = ..., source_title: _Optional[str] = ...) -> None: ...
