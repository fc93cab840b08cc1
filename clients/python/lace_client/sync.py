"""A blocking wrapper over LaceClient for scripts: a private event loop on a background thread.

The async client stays the single implementation (error translation, reconnecting
watch); this module only ferries calls to its loop and results back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2
from lace_client.client import (
    DEFAULT_TARGET,
    CompiledDocument,
    CompileFormatName,
    DocumentFormatName,
    LaceClient,
    ReconnectHook,
)

T = TypeVar("T")


class LaceSyncClient:
    """Blocking twin of LaceClient; iterators are plain iterators. Close it (or use `with`)."""

    def __init__(self, target: str = DEFAULT_TARGET, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, timeout: float | None = 30.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lace-client-loop", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> LaceClient:
            # The grpc.aio channel binds to the loop it is created on, so create it there.
            return LaceClient.connect(target, token=token, tls=tls, root_certificates=root_certificates,
                                      timeout=timeout)

        self._client = self._run(make())

    @classmethod
    def connect(cls, target: str = DEFAULT_TARGET, *, token: str | None = None, tls: bool = False,
                root_certificates: bytes | None = None, timeout: float | None = 30.0) -> LaceSyncClient:
        """Same arguments as LaceClient.connect."""
        return cls(target, token=token, tls=tls, root_certificates=root_certificates, timeout=timeout)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> list[T]:
            # One item, or none at the end: a list avoids an Optional that could hide a None item.
            try:
                return [await anext(agen)]
            except StopAsyncIteration:
                return []

        try:
            while True:
                got = self._run(step())
                if not got:
                    return
                yield got[0]
        finally:
            # Stopping early (break, an exception, GC) must end the server stream too.
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self._closed:
                self._run(aclose())

    def close(self) -> None:
        """Closes the channel and stops the background loop."""
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def create_artifact(self, title: str, brief: str, target_words: int, style: str = "",
                        request_id: str | None = None) -> artifact_pb2.Artifact:
        """See LaceClient.create_artifact."""
        return self._run(self._client.create_artifact(title, brief, target_words, style, request_id))

    def get_artifact(self, artifact_id: str, full: bool = False, *,
                     version: int = 0) -> artifact_service_pb2.GetArtifactResponse:
        """See LaceClient.get_artifact."""
        return self._run(self._client.get_artifact(artifact_id, full, version=version))

    def list_artifacts(self, page_size: int = 0, *, filter: str = "",
                       order_by: str = "") -> Iterator[artifact_pb2.Artifact]:
        """See LaceClient.list_artifacts."""
        return self._iterate(self._client.list_artifacts(page_size, filter=filter, order_by=order_by))

    def update_artifact(self, artifact_id: str, *, title: str | None = None, brief: str | None = None,
                        style: str | None = None, target_words: int | None = None,
                        request_id: str | None = None) -> artifact_pb2.Artifact:
        """See LaceClient.update_artifact."""
        return self._run(self._client.update_artifact(artifact_id, title=title, brief=brief, style=style,
                                                      target_words=target_words, request_id=request_id))

    def fork_artifact(self, artifact_id: str, *, version: int = 0,
                      request_id: str | None = None) -> artifact_pb2.Artifact:
        """See LaceClient.fork_artifact."""
        return self._run(self._client.fork_artifact(artifact_id, version=version, request_id=request_id))

    def delete_artifact(self, artifact_id: str, *, allow_missing: bool = False,
                        request_id: str | None = None) -> None:
        """See LaceClient.delete_artifact."""
        self._run(self._client.delete_artifact(artifact_id, allow_missing=allow_missing, request_id=request_id))

    def compile(self, artifact_id: str, format: CompileFormatName = "markdown") -> str:
        """See LaceClient.compile."""
        return self._run(self._client.compile(artifact_id, format))

    def compile_document(self, artifact_id: str, format: DocumentFormatName = "markdown", *,
                         version: int = 0) -> CompiledDocument:
        """See LaceClient.compile_document."""
        return self._run(self._client.compile_document(artifact_id, format, version=version))

    def edit_block(self, block_id: str, block: artifact_pb2.Block | str, *, expected_version: int = 0,
                   request_id: str | None = None) -> artifact_pb2.Block:
        """See LaceClient.edit_block."""
        return self._run(self._client.edit_block(block_id, block, expected_version=expected_version,
                                                 request_id=request_id))

    def revert_block(self, block_id: str, block_version: int, *, expected_version: int = 0,
                     request_id: str | None = None) -> artifact_pb2.Block:
        """See LaceClient.revert_block."""
        return self._run(self._client.revert_block(block_id, block_version, expected_version=expected_version,
                                                   request_id=request_id))

    def block_history(self, block_id: str, page_size: int = 0) -> Iterator[artifact_pb2.ChangeEvent]:
        """See LaceClient.block_history."""
        return self._iterate(self._client.block_history(block_id, page_size))

    def start_run(self, artifact_id: str, *, scope_node_id: str = "", instruction: str = "",
                  options: run_pb2.RunOptions | None = None, request_id: str | None = None,
                  stale_only: bool = False) -> run_pb2.Run:
        """See LaceClient.start_run."""
        return self._run(self._client.start_run(artifact_id, scope_node_id=scope_node_id, instruction=instruction,
                                                options=options, request_id=request_id, stale_only=stale_only))

    def get_run(self, run_id: str) -> run_pb2.Run:
        """See LaceClient.get_run."""
        return self._run(self._client.get_run(run_id))

    def list_runs(self, artifact_id: str | None = None, page_size: int = 0, *, filter: str = "",
                  order_by: str = "") -> Iterator[run_pb2.Run]:
        """See LaceClient.list_runs."""
        return self._iterate(self._client.list_runs(artifact_id, page_size, filter=filter, order_by=order_by))

    def pause_run(self, run_id: str, request_id: str | None = None) -> run_pb2.Run:
        """See LaceClient.pause_run."""
        return self._run(self._client.pause_run(run_id, request_id))

    def resume_run(self, run_id: str, request_id: str | None = None, *,
                   options: run_pb2.RunOptions | None = None) -> run_pb2.Run:
        """See LaceClient.resume_run."""
        return self._run(self._client.resume_run(run_id, request_id, options=options))

    def cancel_run(self, run_id: str, request_id: str | None = None) -> run_pb2.Run:
        """See LaceClient.cancel_run."""
        return self._run(self._client.cancel_run(run_id, request_id))

    def list_events(self, run_id: str, after_seq: int = 0, event_types: Iterable[int] = (),
                    page_size: int = 0) -> Iterator[run_pb2.RunEvent]:
        """See LaceClient.list_events."""
        return self._iterate(self._client.list_events(run_id, after_seq, event_types, page_size))

    def watch(self, run_id: str, cursor: int = 0, *, max_reconnects: int | None = None,
              give_up_after: float | None = None,
              on_reconnect: ReconnectHook | None = None) -> Iterator[run_pb2.RunEvent]:
        """See LaceClient.watch; `on_reconnect` runs on the client's background thread."""
        return self._iterate(self._client.watch(run_id, cursor, max_reconnects=max_reconnects,
                                                give_up_after=give_up_after, on_reconnect=on_reconnect))
