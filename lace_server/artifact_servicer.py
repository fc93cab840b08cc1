"""lace.v1.ArtifactService over the engine."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import grpc

from lace.v1 import artifact_pb2, artifact_service_pb2, artifact_service_pb2_grpc
from lace_engine.errors import InvalidArgument
from lace_engine.ids import parse_id
from lace_engine.pipeline.apply import ArtifactFields, NewArtifact, NodeFields
from lace_engine.service import Engine
from lace_server import convert
from lace_server.auth import caller_tenant

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_NODE_FIELDS = ("title", "intent", "target_words")
_ARTIFACT_FIELDS = ("title", "brief", "style", "target_words")


def _version(value: int) -> int:
    if value < 0:
        raise InvalidArgument("artifact_version must not be negative", reason="INVALID_ARGUMENT",
                              metadata={"field": "artifact_version"})
    return value


def _mask(paths: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    """An update_mask's paths, or InvalidArgument when it is empty or names a field that cannot change."""
    given = list(paths)
    if not given:
        raise InvalidArgument(f"update_mask is required: name the fields to change ({', '.join(allowed)})",
                              reason="MISSING_FIELD", metadata={"field": "update_mask"})
    unknown = [p for p in given if p not in allowed]
    if unknown:
        raise InvalidArgument(f"update_mask names {unknown}; only {', '.join(allowed)} can be changed",
                              reason="INVALID_FIELD_MASK", metadata={"field": "update_mask"})
    return given

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
            tenant=caller_tenant(),
        )
        return artifact_service_pb2.CreateArtifactResponse(artifact=convert.artifact_to_pb(created))

    async def GetArtifact(
        self, request: artifact_service_pb2.GetArtifactRequest, context: Context
    ) -> artifact_service_pb2.GetArtifactResponse:
        view = await self.engine.get_artifact(
            parse_id(request.artifact_id, "artifact_id"),
            full=request.view == artifact_service_pb2.ARTIFACT_VIEW_FULL, version=_version(request.artifact_version),
            tenant=caller_tenant(),
        )
        return artifact_service_pb2.GetArtifactResponse(
            artifact=convert.artifact_to_pb(view.artifact),
            nodes=[convert.node_to_pb(n) for n in view.nodes],
            blocks=[convert.block_to_pb(b) for b in view.blocks],
        )

    async def ListArtifacts(
        self, request: artifact_service_pb2.ListArtifactsRequest, context: Context
    ) -> artifact_service_pb2.ListArtifactsResponse:
        items, token = await self.engine.list_artifacts(request.page_size, request.page_token,
                                                        filter=request.filter, order_by=request.order_by,
                                                        tenant=caller_tenant())
        return artifact_service_pb2.ListArtifactsResponse(
            artifacts=[convert.artifact_to_pb(a) for a in items], next_page_token=token)

    async def UpdateArtifact(
        self, request: artifact_service_pb2.UpdateArtifactRequest, context: Context
    ) -> artifact_service_pb2.UpdateArtifactResponse:
        artifact_id = parse_id(request.artifact.id, "artifact.id")
        paths = _mask(request.update_mask.paths, _ARTIFACT_FIELDS)
        a = request.artifact
        fields = ArtifactFields(title=a.title if "title" in paths else None,
                                brief=a.brief if "brief" in paths else None,
                                style=a.style if "style" in paths else None,
                                target_words=a.target_words if "target_words" in paths else None)
        artifact = await self.engine.update_artifact(artifact_id, fields, request_id=request.request_id,
                                                     tenant=caller_tenant())
        return artifact_service_pb2.UpdateArtifactResponse(artifact=convert.artifact_to_pb(artifact))

    async def DeleteArtifact(
        self, request: artifact_service_pb2.DeleteArtifactRequest, context: Context
    ) -> artifact_service_pb2.DeleteArtifactResponse:
        await self.engine.delete_artifact(parse_id(request.artifact_id, "artifact_id"),
                                          allow_missing=request.allow_missing, request_id=request.request_id,
                                          tenant=caller_tenant())
        return artifact_service_pb2.DeleteArtifactResponse()

    async def ForkArtifact(
        self, request: artifact_service_pb2.ForkArtifactRequest, context: Context
    ) -> artifact_service_pb2.ForkArtifactResponse:
        artifact = await self.engine.fork_artifact(parse_id(request.artifact_id, "artifact_id"),
                                                   version=_version(request.artifact_version),
                                                   request_id=request.request_id, tenant=caller_tenant())
        return artifact_service_pb2.ForkArtifactResponse(artifact=convert.artifact_to_pb(artifact))

    async def CompileArtifact(
        self, request: artifact_service_pb2.CompileArtifactRequest, context: Context
    ) -> artifact_service_pb2.CompileArtifactResponse:
        artifact_id = parse_id(request.artifact_id, "artifact_id")
        fmt = _FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument("format is required: COMPILE_FORMAT_MARKDOWN, _HTML, _JSON, _DOCX, _ODT, _EPUB "
                                  "or _PDF", reason="INVALID_FORMAT", metadata={"field": "format"})
        doc = await self.engine.compile(artifact_id, fmt, version=_version(request.artifact_version),
                                        tenant=caller_tenant())
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
                                             request_id=request.request_id, tenant=caller_tenant())
        return artifact_service_pb2.EditBlockResponse(block=convert.block_to_pb(block))

    async def ListBlockChanges(
        self, request: artifact_service_pb2.ListBlockChangesRequest, context: Context
    ) -> artifact_service_pb2.ListBlockChangesResponse:
        items, token = await self.engine.list_block_changes(
            parse_id(request.block_id, "block_id"), request.page_size, request.page_token, tenant=caller_tenant())
        cited = await self.engine.passages_cited_by(items)
        return artifact_service_pb2.ListBlockChangesResponse(
            change_events=[convert.change_event_to_pb(c) for c in items], next_page_token=token,
            cited_passages=[convert.passage_to_pb(p) for p in cited])

    async def RevertBlock(
        self, request: artifact_service_pb2.RevertBlockRequest, context: Context
    ) -> artifact_service_pb2.RevertBlockResponse:
        if request.expected_version < 0:
            raise InvalidArgument("expected_version must not be negative", reason="INVALID_ARGUMENT",
                                  metadata={"field": "expected_version"})
        block = await self.engine.revert_block(parse_id(request.block_id, "block_id"), request.block_version,
                                               expected_version=request.expected_version,
                                               request_id=request.request_id, tenant=caller_tenant())
        return artifact_service_pb2.RevertBlockResponse(block=convert.block_to_pb(block))

    # Outline edits

    async def UpdateNode(
        self, request: artifact_service_pb2.UpdateNodeRequest, context: Context
    ) -> artifact_service_pb2.UpdateNodeResponse:
        node_id = parse_id(request.node.id, "node.id")
        paths = _mask(request.update_mask.paths, _NODE_FIELDS)
        n = request.node
        fields = NodeFields(title=n.title if "title" in paths else None, intent=n.intent if "intent" in paths else None,
                            target_words=n.target_words if "target_words" in paths else None)
        node = await self.engine.update_node(node_id, fields, request_id=request.request_id, tenant=caller_tenant())
        return artifact_service_pb2.UpdateNodeResponse(node=convert.node_to_pb(node))

    async def CreateNode(
        self, request: artifact_service_pb2.CreateNodeRequest, context: Context
    ) -> artifact_service_pb2.CreateNodeResponse:
        parent_id = parse_id(request.parent_id, "parent_id")
        n = request.node
        fields = NodeFields(title=n.title, intent=n.intent, target_words=n.target_words)
        position = request.position if request.HasField("position") else None
        node = await self.engine.create_node(parent_id, fields, position=position, request_id=request.request_id,
                                             tenant=caller_tenant())
        return artifact_service_pb2.CreateNodeResponse(node=convert.node_to_pb(node))

    async def DeleteNode(
        self, request: artifact_service_pb2.DeleteNodeRequest, context: Context
    ) -> artifact_service_pb2.DeleteNodeResponse:
        artifact = await self.engine.delete_node(parse_id(request.node_id, "node_id"), request_id=request.request_id,
                                                 tenant=caller_tenant())
        return artifact_service_pb2.DeleteNodeResponse(artifact=convert.artifact_to_pb(artifact))

    async def MoveNode(
        self, request: artifact_service_pb2.MoveNodeRequest, context: Context
    ) -> artifact_service_pb2.MoveNodeResponse:
        node_id = parse_id(request.node_id, "node_id")
        parent_id = parse_id(request.parent_id, "parent_id") if request.parent_id else None
        position = request.position if request.HasField("position") else None
        node = await self.engine.move_node(node_id, parent_id=parent_id, position=position,
                                           request_id=request.request_id, tenant=caller_tenant())
        return artifact_service_pb2.MoveNodeResponse(node=convert.node_to_pb(node))
