"""Typed client errors, decoded from a gRPC status and its google.rpc.ErrorInfo.

`from_rpc_error` is the only place where a grpc error becomes a LaceClientError,
so every method of the client reports failures the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "lace.dev"
_DETAILS_KEY = "grpc-status-details-bin"


class LaceClientError(Exception):
    """A failed call: the status code, the server's reason token and its metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "",
                 metadata: Mapping[str, str] | None = None, domain: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.domain = domain

    def __str__(self) -> str:
        tag = self.reason or self.code.name
        return f"{self.message} ({tag})"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
                f"message={self.message!r}, metadata={self.metadata!r})")


class InvalidArgumentError(LaceClientError):
    """The request is malformed or out of range; do not retry it unchanged."""


class NotFoundError(LaceClientError):
    """A referenced artifact, run, node or block does not exist."""


class AlreadyExistsError(LaceClientError):
    """An idempotency key was reused with a different request."""


class FailedPreconditionError(LaceClientError):
    """The resource is not in a state that allows the operation."""


class AbortedError(LaceClientError):
    """A concurrency conflict (for example a stale block version); re-read, then retry."""


class UnauthenticatedError(LaceClientError):
    """No valid credentials were sent."""


class PermissionDeniedError(LaceClientError):
    """The credentials lack the scope the method needs."""


class UnavailableError(LaceClientError):
    """The server is unreachable or shutting down; retry with backoff."""


class ResourceExhaustedError(LaceClientError):
    """A server limit was reached, e.g. a compiled document over the response limit (COMPILED_TOO_LARGE)."""


class StreamGapError(LaceClientError):
    """A watched stream skipped a seq; raised instead of silently losing events."""

    def __init__(self, run_id: str, expected: int, got: int) -> None:
        super().__init__(grpc.StatusCode.DATA_LOSS,
                         f"run {run_id}: expected event seq {expected}, got {got}",
                         reason="SEQ_GAP", metadata={"expected": str(expected), "got": str(got)})


_CLASSES: dict[grpc.StatusCode, type[LaceClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}


def error_info(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> error_details_pb2.ErrorInfo | None:
    """The first google.rpc.ErrorInfo in a call's status details, or None."""
    for key, value in trailing_metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None  # a garbled detail must not hide the status code itself
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
    return None


def from_rpc_error(err: grpc.aio.AioRpcError) -> LaceClientError:
    """Translates a failed call into the LaceClientError subclass for its status code."""
    code = err.code()
    # Status details are parsed by hand rather than with grpc_status.rpc_status.from_call,
    # which raises when a proxy rewrites the message; the ErrorInfo is still valid then.
    info = error_info(err.trailing_metadata())
    cls = _CLASSES.get(code, LaceClientError)
    message = err.details() or code.name.lower().replace("_", " ")
    if info is None:
        return cls(code, message)
    return cls(code, message, reason=info.reason, metadata=dict(info.metadata), domain=info.domain)
