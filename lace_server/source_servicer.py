"""lace.v1.SourceService over the engine's source library."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from lace.v1 import source_service_pb2, source_service_pb2_grpc
from lace_engine.errors import InvalidArgument
from lace_engine.ids import parse_id
from lace_engine.sources import NewSource, SourceLibrary
from lace_server import convert
from lace_server.auth import caller_tenant

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class SourceServicer(source_service_pb2_grpc.SourceServiceServicer):
    def __init__(self, sources: SourceLibrary):
        self.sources = sources

    async def AddSource(
        self, request: source_service_pb2.AddSourceRequest, context: Context
    ) -> source_service_pb2.AddSourceResponse:
        artifact_id = parse_id(request.artifact_id, "artifact_id")
        body = request.WhichOneof("body")
        if body is None:
            raise InvalidArgument("one of content or text is required", reason="MISSING_FIELD",
                                  metadata={"field": "content"})
        if body == "text" and request.media_type == "application/pdf":
            raise InvalidArgument("a PDF must be sent as content bytes, not as text", reason="INVALID_SOURCE",
                                  metadata={"field": "text"})
        data = request.content if body == "content" else request.text.encode("utf-8")
        source = await self.sources.add(NewSource(artifact_id, request.title, request.media_type, data),
                                        request.request_id, tenant=caller_tenant())
        return source_service_pb2.AddSourceResponse(source=convert.source_to_pb(source))

    async def GetSource(
        self, request: source_service_pb2.GetSourceRequest, context: Context
    ) -> source_service_pb2.GetSourceResponse:
        source, passages = await self.sources.get(parse_id(request.source_id, "source_id"),
                                                  with_passages=request.view == source_service_pb2.SOURCE_VIEW_FULL,
                                                  tenant=caller_tenant())
        return source_service_pb2.GetSourceResponse(source=convert.source_to_pb(source),
                                                    passages=[convert.passage_to_pb(p) for p in passages])

    async def ListSources(
        self, request: source_service_pb2.ListSourcesRequest, context: Context
    ) -> source_service_pb2.ListSourcesResponse:
        items, token = await self.sources.list(parse_id(request.artifact_id, "artifact_id"), request.page_size,
                                               request.page_token, tenant=caller_tenant())
        return source_service_pb2.ListSourcesResponse(sources=[convert.source_to_pb(s) for s in items],
                                                      next_page_token=token)

    async def DeleteSource(
        self, request: source_service_pb2.DeleteSourceRequest, context: Context
    ) -> source_service_pb2.DeleteSourceResponse:
        source = await self.sources.delete(parse_id(request.source_id, "source_id"), tenant=caller_tenant())
        return source_service_pb2.DeleteSourceResponse(source=convert.source_to_pb(source))
