"""lace.v1.ArtifactService over the engine."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from lace.v1 import artifact_pb2, artifact_service_pb2, artifact_service_pb2_grpc
from lace_engine.errors import InvalidArgument
from lace_engine.ids import parse_id
from lace_engine.pipeline.apply import NewArtifact
from lace_engine.service import Engine
from lace_server import convert

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_FORMATS = {
    artifact_service_pb2.COMPILE_FORMAT_MARKDOWN: "markdown",
    artifact_service_pb2.COMPILE_FORMAT_HTML: "html",
    artifact_service_pb2.COMPILE_FORMAT_JSON: "json",
    artifact_service_pb2.COMPILE_FORMAT_DOCX: "docx",
    artifact_service_pb2.COMPILE_FORMAT_ODT: "odt",
    artifact_service_pb2.COMPILE_FORMAT_EPUB: "epub",
    artifact_service_pb2.COMPILE_FORMAT_PDF: "pdf",
}


class ArtifactServicer(artifact_service_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, engine: Engine):
        self.engine = engine

    async def CreateArtifact(
        self, request: artifact_service_pb2.CreateArtifactRequest, context: Context
    ) -> artifact_service_pb2.CreateArtifactResponse:
        if not request.HasField("artifact"):
            raise InvalidArgument("artifact is required", reason="MISSING_FIELD", metadata={"field": "artifact"})
        a = request.artifact
        created = await self.engine.create_artifact(
            NewArtifact(title=a.title, brief=a.brief, style=a.style, target_words=a.target_words),
            request.request_id,
        )
        return artifact_service_pb2.CreateArtifactResponse(artifact=convert.artifact_to_pb(created))

    async def GetArtifact(
        self, request: artifact_service_pb2.GetArtifactRequest, context: Context
    ) -> artifact_service_pb2.GetArtifactResponse:
        view = await self.engine.get_artifact(
            parse_id(request.artifact_id, "artifact_id"),
            full=request.view == artifact_service_pb2.ARTIFACT_VIEW_FULL,
        )
        return artifact_service_pb2.GetArtifactResponse(
            artifact=convert.artifact_to_pb(view.artifact),
            nodes=[convert.node_to_pb(n) for n in view.nodes],
            blocks=[convert.block_to_pb(b) for b in view.blocks],
        )

    async def ListArtifacts(
        self, request: artifact_service_pb2.ListArtifactsRequest, context: Context
    ) -> artifact_service_pb2.ListArtifactsResponse:
        items, token = await self.engine.list_artifacts(request.page_size, request.page_token)
        return artifact_service_pb2.ListArtifactsResponse(
            artifacts=[convert.artifact_to_pb(a) for a in items], next_page_token=token)

    async def CompileArtifact(
        self, request: artifact_service_pb2.CompileArtifactRequest, context: Context
    ) -> artifact_service_pb2.CompileArtifactResponse:
        artifact_id = parse_id(request.artifact_id, "artifact_id")
        fmt = _FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument("format is required: COMPILE_FORMAT_MARKDOWN, _HTML, _JSON, _DOCX, _ODT, _EPUB "
                                  "or _PDF", reason="INVALID_FORMAT", metadata={"field": "format"})
        doc = await self.engine.compile(artifact_id, fmt)
        response = artifact_service_pb2.CompileArtifactResponse(
            media_type=doc.media_type, artifact_version=doc.artifact_version, file_name=doc.file_name)
        if isinstance(doc.content, bytes):
            response.binary_content = doc.content
        else:
            response.content = doc.content
        return response

    async def EditBlock(
        self, request: artifact_service_pb2.EditBlockRequest, context: Context
    ) -> artifact_service_pb2.EditBlockResponse:
        block_id = parse_id(request.block_id, "block_id")
        if request.block.kind == artifact_pb2.BLOCK_KIND_UNSPECIFIED:
            raise InvalidArgument("block.kind is required", reason="MISSING_FIELD", metadata={"field": "block.kind"})
        try:
            content = convert.block_content_from_pb(request.block)
        except KeyError:
            raise InvalidArgument("block.kind is not a known kind", reason="INVALID_BLOCK",
                                  metadata={"field": "block.kind"}) from None
        if request.expected_version < 0:
            raise InvalidArgument("expected_version must not be negative", reason="INVALID_ARGUMENT",
                                  metadata={"field": "expected_version"})
        block = await self.engine.edit_block(block_id, content, expected_version=request.expected_version,
                                             request_id=request.request_id)
        return artifact_service_pb2.EditBlockResponse(block=convert.block_to_pb(block))

    async def ListBlockChanges(
        self, request: artifact_service_pb2.ListBlockChangesRequest, context: Context
    ) -> artifact_service_pb2.ListBlockChangesResponse:
        items, token = await self.engine.list_block_changes(
            parse_id(request.block_id, "block_id"), request.page_size, request.page_token)
        cited = await self.engine.passages_cited_by(items)
        return artifact_service_pb2.ListBlockChangesResponse(
            change_events=[convert.change_event_to_pb(c) for c in items], next_page_token=token,
            cited_passages=[convert.passage_to_pb(p) for p in cited])
