"""An async client for lace.v1 over the generated stubs, with a self-healing `watch`."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar, cast

import grpc
from google.protobuf import field_mask_pb2

from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    source_pb2,
    source_service_pb2,
    source_service_pb2_grpc,
)
from lace_client.errors import LaceClientError, StreamGapError, error_info, from_rpc_error

DEFAULT_TARGET = "127.0.0.1:50051"

# The text formats, which `compile` returns as str.
CompileFormatName = Literal["markdown", "html", "json"]
# Every format, which `compile_document` returns as bytes.
DocumentFormatName = Literal["markdown", "html", "json", "docx", "odt", "epub", "pdf"]

_FORMATS: dict[str, artifact_service_pb2.CompileFormat] = {
    "markdown": artifact_service_pb2.COMPILE_FORMAT_MARKDOWN,
    "html": artifact_service_pb2.COMPILE_FORMAT_HTML,
    "json": artifact_service_pb2.COMPILE_FORMAT_JSON,
    "docx": artifact_service_pb2.COMPILE_FORMAT_DOCX,
    "odt": artifact_service_pb2.COMPILE_FORMAT_ODT,
    "epub": artifact_service_pb2.COMPILE_FORMAT_EPUB,
    "pdf": artifact_service_pb2.COMPILE_FORMAT_PDF,
}
TEXT_FORMATS = frozenset({"markdown", "html", "json"})


@dataclass(frozen=True, slots=True)
class CompiledDocument:
    """A compiled artifact as bytes (UTF-8 for the text formats), with what it takes to save it."""

    data: bytes
    media_type: str
    # The artifact's title as a slug with the format's extension, e.g. "heat-pumps.docx".
    file_name: str
    artifact_version: int
    binary: bool

# Compiled HTML/JSON of a 200,000-word artifact is well past gRPC's 4 MiB default.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # Keepalive pings notice a silently dead connection under a quiet stream; the
    # server permits pings every 10 s without data, so 20 s stays within its policy.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Keep the channel's own reconnect backoff in step with watch's, so that a
    # reconnect attempt is not failed fast for a minute after a short outage.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]

# Transport failures seen when a connection or an HTTP/2 stream is torn down under a
# call; these say nothing about the request, so watch resumes from its cursor.
_RESET_MARKERS = ("rst_stream", "stream removed", "socket closed", "connection reset", "broken pipe",
                  "goaway", "stream reset")

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0

T = TypeVar("T")


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


P = TypeVar("P", bound=_Page)
ReconnectHook = Callable[[int, LaceClientError, float], None]


def _is_transient(err: grpc.aio.AioRpcError) -> bool:
    """True for failures of the connection rather than of the request."""
    code = err.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    if error_info(err.trailing_metadata()) is not None:
        # The LACE server itself answered (e.g. INTERNAL from a handler): not a transport hiccup.
        return False
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED):
        details = (err.details() or "").lower()
        return any(marker in details for marker in _RESET_MARKERS)
    # The server's concurrent-RPC limit answers RESOURCE_EXHAUSTED without details: back off.
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED


def backoff_delay(attempt: int, *, initial: float = BACKOFF_INITIAL_S, cap: float = BACKOFF_MAX_S) -> float:
    """Delay before reconnect `attempt` (from 1): doubling from `initial` to `cap`, with jitter.

    The jitter keeps many watchers of one restarted server from reconnecting in lockstep;
    half of the delay is kept so that the doubling still spaces attempts out.
    """
    base = min(cap, initial * 2.0 ** (attempt - 1))
    return base * random.uniform(0.5, 1.0)


def _request_id(request_id: str | None) -> str:
    # A fresh key per logical call: a caller that retries passes the same key again.
    return request_id if request_id is not None else str(uuid.uuid4())


class LaceClient:
    """Async client for ArtifactService, RunService and SourceService.

    Use as ``async with LaceClient.connect(target) as client: ...``. Every method
    raises a LaceClientError subclass (see lace_client.errors) when the call fails.
    """

    def __init__(self, channel: grpc.aio.Channel, *, token: str | None = None, timeout: float | None = 30.0) -> None:
        self._channel = channel
        self._artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
        self._runs = run_service_pb2_grpc.RunServiceStub(channel)
        self._sources = source_service_pb2_grpc.SourceServiceStub(channel)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    @classmethod
    def connect(cls, target: str = DEFAULT_TARGET, *, token: str | None = None, tls: bool = False,
                root_certificates: bytes | None = None, timeout: float | None = 30.0,
                certificate_chain: bytes | None = None, private_key: bytes | None = None) -> LaceClient:
        """Opens a channel to `target`; `token` is sent as a bearer token on every call.

        `timeout` is the deadline of unary calls in seconds (None for none); streams have none.
        `certificate_chain` and `private_key` (PEM) are the client's identity for a server that
        requires mutual TLS. Call it from a coroutine: the channel belongs to the running event loop.
        """
        if tls or root_certificates is not None or certificate_chain is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates, private_key=private_key,
                                                       certificate_chain=certificate_chain)
            channel = grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        return cls(channel, token=token, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls still in flight are cancelled."""
        await self._channel.close()

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err

    async def _every(self, fetch: Callable[[str], Awaitable[P]], items: Callable[[P], Iterable[T]]) -> AsyncIterator[T]:
        """Every item of a paginated list (AIP-158), fetching the next page as the caller gets there."""
        token = ""
        while True:
            page = await self._call(fetch(token))
            for item in items(page):
                yield item
            token = page.next_page_token
            if not token:
                return

    # Artifacts

    async def create_artifact(self, title: str, brief: str, target_words: int, style: str = "",
                              request_id: str | None = None) -> artifact_pb2.Artifact:
        """Creates an artifact; idempotent by `request_id` (a fresh uuid4 when None)."""
        request = artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title=title, brief=brief, style=style, target_words=target_words),
            request_id=_request_id(request_id))
        response = await self._call(self._artifacts.CreateArtifact(
            request, metadata=self._metadata, timeout=self._timeout))
        return response.artifact

    async def get_artifact(self, artifact_id: str, full: bool = False, *,
                           version: int = 0) -> artifact_service_pb2.GetArtifactResponse:
        """Returns the artifact (as it was at IR `version`, when given); with `full`, also its nodes and blocks."""
        view = artifact_service_pb2.ARTIFACT_VIEW_FULL if full else artifact_service_pb2.ARTIFACT_VIEW_BASIC
        request = artifact_service_pb2.GetArtifactRequest(artifact_id=artifact_id, view=view, artifact_version=version)
        return await self._call(self._artifacts.GetArtifact(request, metadata=self._metadata, timeout=self._timeout))

    async def list_artifacts(self, page_size: int = 0, *, filter: str = "",
                             order_by: str = "") -> AsyncIterator[artifact_pb2.Artifact]:
        """Every artifact matching `filter` (AIP-160, see ListArtifactsRequest), newest first unless
        `order_by` says otherwise, fetching pages as needed."""
        def fetch(token: str) -> Awaitable[artifact_service_pb2.ListArtifactsResponse]:
            request = artifact_service_pb2.ListArtifactsRequest(page_size=page_size, page_token=token,
                                                                filter=filter, order_by=order_by)
            return self._artifacts.ListArtifacts(request, metadata=self._metadata, timeout=self._timeout)

        async for artifact in self._every(fetch, lambda page: page.artifacts):
            yield artifact

    async def update_artifact(self, artifact_id: str, *, title: str | None = None, brief: str | None = None,
                              style: str | None = None, target_words: int | None = None,
                              request_id: str | None = None) -> artifact_pb2.Artifact:
        """Changes the artifact's title, brief, style and/or target_words (only the ones given)."""
        given = (("title", title), ("brief", brief), ("style", style), ("target_words", target_words))
        request = artifact_service_pb2.UpdateArtifactRequest(
            artifact=artifact_pb2.Artifact(id=artifact_id, title=title or "", brief=brief or "", style=style or "",
                                           target_words=target_words or 0),
            update_mask=field_mask_pb2.FieldMask(paths=[name for name, value in given if value is not None]),
            request_id=_request_id(request_id))
        response = await self._call(self._artifacts.UpdateArtifact(request, metadata=self._metadata,
                                                                    timeout=self._timeout))
        return response.artifact

    async def fork_artifact(self, artifact_id: str, *, version: int = 0,
                            request_id: str | None = None) -> artifact_pb2.Artifact:
        """A new artifact with a copy of this one's IR, now or at IR `version`."""
        request = artifact_service_pb2.ForkArtifactRequest(artifact_id=artifact_id, artifact_version=version,
                                                           request_id=_request_id(request_id))
        response = await self._call(self._artifacts.ForkArtifact(request, metadata=self._metadata,
                                                                  timeout=self._timeout))
        return response.artifact

    async def delete_artifact(self, artifact_id: str, *, allow_missing: bool = False,
                              request_id: str | None = None) -> None:
        """Deletes the artifact with its runs, events, history and sources; refused while a run is active."""
        request = artifact_service_pb2.DeleteArtifactRequest(artifact_id=artifact_id, allow_missing=allow_missing,
                                                             request_id=_request_id(request_id))
        await self._call(self._artifacts.DeleteArtifact(request, metadata=self._metadata, timeout=self._timeout))

    async def compile(self, artifact_id: str, format: CompileFormatName = "markdown") -> str:
        """The artifact rendered as Markdown, HTML or JSON; `compile_document` gives every format as bytes."""
        if format not in TEXT_FORMATS:
            hint = "; use compile_document for DOCX, ODT, EPUB and PDF" if format in _FORMATS else ""
            raise ValueError(f"format must be one of {', '.join(sorted(TEXT_FORMATS))}, not {format!r}{hint}")
        return (await self.compile_document(artifact_id, format)).data.decode("utf-8")

    async def compile_document(self, artifact_id: str, format: DocumentFormatName = "markdown", *,
                               version: int = 0) -> CompiledDocument:
        """The artifact rendered in any format (markdown, html, json, docx, odt, epub, pdf), as bytes; with
        `version`, as it was at that IR version.

        A document over the server's response limit raises ResourceExhaustedError (COMPILED_TOO_LARGE).
        """
        try:
            fmt = _FORMATS[format]
        except KeyError:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}, not {format!r}") from None
        request = artifact_service_pb2.CompileArtifactRequest(artifact_id=artifact_id, format=fmt,
                                                              artifact_version=version)
        response = await self._call(self._artifacts.CompileArtifact(
            request, metadata=self._metadata, timeout=self._timeout))
        binary = format not in TEXT_FORMATS
        data = response.binary_content if binary else response.content.encode("utf-8")
        return CompiledDocument(data=data, media_type=response.media_type, file_name=response.file_name,
                                artifact_version=response.artifact_version, binary=binary)

    async def edit_block(self, block_id: str, block: artifact_pb2.Block | str, *, expected_version: int = 0,
                         request_id: str | None = None) -> artifact_pb2.Block:
        """Replaces a block's content as a human edit (the block becomes pinned).

        `block` is the new content (its `kind` and the fields that kind uses), or a
        string for a paragraph. With `expected_version`, fails with AbortedError if
        the block changed since.
        """
        content = artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text=block) \
            if isinstance(block, str) else block
        request = artifact_service_pb2.EditBlockRequest(block_id=block_id, block=content,
                                                        expected_version=expected_version,
                                                        request_id=_request_id(request_id))
        response = await self._call(self._artifacts.EditBlock(request, metadata=self._metadata,
                                                               timeout=self._timeout))
        return response.block

    async def revert_block(self, block_id: str, block_version: int, *, expected_version: int = 0,
                           request_id: str | None = None) -> artifact_pb2.Block:
        """Restores the block's content at `block_version` as a new version (a human edit: pinned)."""
        request = artifact_service_pb2.RevertBlockRequest(block_id=block_id, block_version=block_version,
                                                          expected_version=expected_version,
                                                          request_id=_request_id(request_id))
        response = await self._call(self._artifacts.RevertBlock(request, metadata=self._metadata,
                                                                 timeout=self._timeout))
        return response.block

    # Outline edits: allowed while the artifact has no active run, or its run awaits review.

    async def outline(self, artifact_id: str) -> list[artifact_pb2.Node]:
        """The artifact's nodes in document order (parents before children, siblings in order)."""
        return list((await self.get_artifact(artifact_id, full=True)).nodes)

    async def update_node(self, node_id: str, *, title: str | None = None, intent: str | None = None,
                          target_words: int | None = None, request_id: str | None = None) -> artifact_pb2.Node:
        """Changes a node's title, intent and/or target_words (only the ones given)."""
        paths = [name for name, value in (("title", title), ("intent", intent), ("target_words", target_words))
                 if value is not None]
        request = artifact_service_pb2.UpdateNodeRequest(
            node=artifact_pb2.Node(id=node_id, title=title or "", intent=intent or "", target_words=target_words or 0),
            update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=_request_id(request_id))
        response = await self._call(self._artifacts.UpdateNode(request, metadata=self._metadata,
                                                                timeout=self._timeout))
        return response.node

    async def create_node(self, parent_id: str, title: str, target_words: int, *, intent: str = "",
                          position: int | None = None, request_id: str | None = None) -> artifact_pb2.Node:
        """Adds a PLANNED section under `parent_id` at `position` (the end when None)."""
        request = artifact_service_pb2.CreateNodeRequest(
            parent_id=parent_id, node=artifact_pb2.Node(title=title, intent=intent, target_words=target_words),
            request_id=_request_id(request_id))
        if position is not None:
            request.position = position
        response = await self._call(self._artifacts.CreateNode(request, metadata=self._metadata,
                                                                timeout=self._timeout))
        return response.node

    async def delete_node(self, node_id: str, request_id: str | None = None) -> artifact_pb2.Artifact:
        """Deletes a section and everything under it; returns the artifact after it."""
        request = artifact_service_pb2.DeleteNodeRequest(node_id=node_id, request_id=_request_id(request_id))
        response = await self._call(self._artifacts.DeleteNode(request, metadata=self._metadata,
                                                                timeout=self._timeout))
        return response.artifact

    async def move_node(self, node_id: str, *, parent_id: str = "", position: int | None = None,
                        request_id: str | None = None) -> artifact_pb2.Node:
        """Moves a section (with its subtree) under `parent_id` (empty: the same parent) at `position`."""
        request = artifact_service_pb2.MoveNodeRequest(node_id=node_id, parent_id=parent_id,
                                                       request_id=_request_id(request_id))
        if position is not None:
            request.position = position
        response = await self._call(self._artifacts.MoveNode(request, metadata=self._metadata,
                                                              timeout=self._timeout))
        return response.node

    async def block_history(self, block_id: str, page_size: int = 0) -> AsyncIterator[artifact_pb2.ChangeEvent]:
        """Every change of a block, oldest first."""
        def fetch(token: str) -> Awaitable[artifact_service_pb2.ListBlockChangesResponse]:
            request = artifact_service_pb2.ListBlockChangesRequest(block_id=block_id, page_size=page_size,
                                                                   page_token=token)
            return self._artifacts.ListBlockChanges(request, metadata=self._metadata, timeout=self._timeout)

        async for change in self._every(fetch, lambda page: page.change_events):
            yield change

    # Sources

    async def add_source(self, artifact_id: str, title: str, media_type: str, content: bytes | str, *,
                         request_id: str | None = None) -> source_pb2.Source:
        """Attaches a document (bytes, or text for the text types) to an artifact; idempotent by `request_id`."""
        request = source_service_pb2.AddSourceRequest(artifact_id=artifact_id, title=title, media_type=media_type,
                                                      request_id=_request_id(request_id))
        if isinstance(content, str):
            request.text = content
        else:
            request.content = content
        response = await self._call(self._sources.AddSource(request, metadata=self._metadata, timeout=self._timeout))
        return response.source

    async def get_source(self, source_id: str, *, passages: bool = False) -> source_service_pb2.GetSourceResponse:
        """Returns a source; with `passages`, also its passages in order."""
        view = source_service_pb2.SOURCE_VIEW_FULL if passages else source_service_pb2.SOURCE_VIEW_BASIC
        request = source_service_pb2.GetSourceRequest(source_id=source_id, view=view)
        return await self._call(self._sources.GetSource(request, metadata=self._metadata, timeout=self._timeout))

    async def list_sources(self, artifact_id: str, page_size: int = 0) -> AsyncIterator[source_pb2.Source]:
        """Every live source of an artifact, oldest first."""
        def fetch(token: str) -> Awaitable[source_service_pb2.ListSourcesResponse]:
            request = source_service_pb2.ListSourcesRequest(artifact_id=artifact_id, page_size=page_size,
                                                            page_token=token)
            return self._sources.ListSources(request, metadata=self._metadata, timeout=self._timeout)

        async for source in self._every(fetch, lambda page: page.sources):
            yield source

    async def delete_source(self, source_id: str) -> source_pb2.Source:
        """Deletes a source: no longer retrieved, while what cites it still resolves."""
        request = source_service_pb2.DeleteSourceRequest(source_id=source_id)
        response = await self._call(self._sources.DeleteSource(request, metadata=self._metadata,
                                                               timeout=self._timeout))
        return response.source

    # Runs

    async def start_run(self, artifact_id: str, *, scope_node_id: str = "", instruction: str = "",
                        options: run_pb2.RunOptions | None = None, request_id: str | None = None,
                        stale_only: bool = False) -> run_pb2.Run:
        """Starts a run over the artifact (or a regeneration of one subtree; with `stale_only`, a rewrite
        of exactly the sections marked stale); idempotent by `request_id`."""
        request = run_service_pb2.StartRunRequest(artifact_id=artifact_id, request_id=_request_id(request_id),
                                                  scope_node_id=scope_node_id, instruction=instruction,
                                                  options=options, stale_only=stale_only)
        response = await self._call(self._runs.StartRun(request, metadata=self._metadata, timeout=self._timeout))
        return response.run

    async def get_run(self, run_id: str) -> run_pb2.Run:
        """Returns one run."""
        request = run_service_pb2.GetRunRequest(run_id=run_id)
        response = await self._call(self._runs.GetRun(request, metadata=self._metadata, timeout=self._timeout))
        return response.run

    async def list_runs(self, artifact_id: str | None = None, page_size: int = 0, *, filter: str = "",
                        order_by: str = "") -> AsyncIterator[run_pb2.Run]:
        """Every run (of one artifact, when given) matching `filter` (AIP-160, see ListRunsRequest),
        newest first unless `order_by` says otherwise."""
        def fetch(token: str) -> Awaitable[run_service_pb2.ListRunsResponse]:
            request = run_service_pb2.ListRunsRequest(artifact_id=artifact_id or "", page_size=page_size,
                                                      page_token=token, filter=filter, order_by=order_by)
            return self._runs.ListRuns(request, metadata=self._metadata, timeout=self._timeout)

        async for run in self._every(fetch, lambda page: page.runs):
            yield run

    async def pause_run(self, run_id: str, request_id: str | None = None) -> run_pb2.Run:
        """Asks the run to pause; returns it PAUSING or PAUSED."""
        request = run_service_pb2.PauseRunRequest(run_id=run_id, request_id=_request_id(request_id))
        response = await self._call(self._runs.PauseRun(request, metadata=self._metadata, timeout=self._timeout))
        return response.run

    async def resume_run(self, run_id: str, request_id: str | None = None, *,
                         options: run_pb2.RunOptions | None = None) -> run_pb2.Run:
        """Resumes a pausing, paused, awaiting-review or failed run; `options` (zero fields kept) apply to the
        rest of it. A run that awaits review then writes its outline as it now is."""
        request = run_service_pb2.ResumeRunRequest(run_id=run_id, request_id=_request_id(request_id),
                                                   options=options)
        response = await self._call(self._runs.ResumeRun(request, metadata=self._metadata, timeout=self._timeout))
        return response.run

    async def cancel_run(self, run_id: str, request_id: str | None = None) -> run_pb2.Run:
        """Cancels the run; returns it CANCELLING or CANCELLED."""
        request = run_service_pb2.CancelRunRequest(run_id=run_id, request_id=_request_id(request_id))
        response = await self._call(self._runs.CancelRun(request, metadata=self._metadata, timeout=self._timeout))
        return response.run

    async def list_events(self, run_id: str, after_seq: int = 0,
                          event_types: Iterable[int] = (),
                          page_size: int = 0) -> AsyncIterator[run_pb2.RunEvent]:
        """The run's stored events with seq > `after_seq` (of the given types), in seq order."""
        # Proto enum values are plain ints at run time; the stubs just name them RunEventType.
        types = cast(list[run_pb2.RunEventType], list(event_types))
        def fetch(token: str) -> Awaitable[run_service_pb2.ListRunEventsResponse]:
            request = run_service_pb2.ListRunEventsRequest(run_id=run_id, after_seq=after_seq, event_types=types,
                                                           page_size=page_size, page_token=token)
            return self._runs.ListRunEvents(request, metadata=self._metadata, timeout=self._timeout)

        async for event in self._every(fetch, lambda page: page.events):
            yield event

    async def watch(self, run_id: str, cursor: int = 0, *, max_reconnects: int | None = None,
                    give_up_after: float | None = None,
                    on_reconnect: ReconnectHook | None = None) -> AsyncIterator[run_pb2.RunEvent]:
        """Yields the run's events with seq > `cursor` in order, each once, until the run ends.

        Heartbeats are skipped. When the connection fails (UNAVAILABLE, a reset stream,
        DEADLINE_EXCEEDED) it reconnects with the last yielded seq as cursor, after a
        backoff doubling from 0.1 s to 5 s with jitter, reset whenever the stream delivers.
        It gives up, raising the last error, after `max_reconnects` failed attempts in a
        row or `give_up_after` seconds without a response. `on_reconnect(attempt, error,
        delay)` is called before each wait. Other errors (NOT_FOUND, INVALID_ARGUMENT,
        UNAUTHENTICATED, PERMISSION_DENIED, ...) are raised at once.
        """
        attempt = 0
        last_progress = time.monotonic()
        while True:
            call = self._runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run_id, cursor=cursor),
                                        metadata=self._metadata)
            try:
                async for response in call:
                    attempt = 0
                    last_progress = time.monotonic()
                    for event in response.events:
                        if event.seq <= cursor:
                            continue  # already yielded before a reconnect
                        if event.seq != cursor + 1:
                            raise StreamGapError(run_id, cursor + 1, event.seq)
                        cursor = event.seq
                        yield event
                return  # the server ended the stream with OK: the run is over
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                if not _is_transient(err):
                    raise error from err
                attempt += 1
                delay = backoff_delay(attempt)
                out_of_time = give_up_after is not None and \
                    time.monotonic() + delay - last_progress > give_up_after
                if (max_reconnects is not None and attempt > max_reconnects) or out_of_time:
                    raise error from err
                if on_reconnect is not None:
                    on_reconnect(attempt, error, delay)
                await asyncio.sleep(delay)
            finally:
                # Also runs when the consumer stops early (aclose): free the server-side stream.
                call.cancel()
