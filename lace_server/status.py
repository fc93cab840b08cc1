"""The one place where engine errors become gRPC statuses with a google.rpc.ErrorInfo."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from lace_engine import errors
from lace_server.handler_wrap import wrapped

log = logging.getLogger(__name__)

DOMAIN = "lace.dev"

_CODES: list[tuple[type[errors.LaceError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
]


def code_for(exc: errors.LaceError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> grpc.Status:
    """A rich status: canonical code, English message, one ErrorInfo in the details."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[detail])
    status: grpc.Status = rpc_status.to_status(proto)
    return status


def status_for(exc: BaseException) -> grpc.Status:
    if isinstance(exc, errors.LaceError):
        return to_status(code_for(exc), exc.message, exc.reason, exc.metadata)
    log.exception("unexpected error in a handler", exc_info=exc)
    return to_status(grpc.StatusCode.INTERNAL, "internal error; the server logged the details", "INTERNAL", {})


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler so that an engine error aborts the call with its mapped status; a unary
    call that met a lost database connection before committing anything is tried once more first."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler

        def unary_of(inner: Any) -> Any:
            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    try:
                        return await inner(request, context)
                    except errors.DatabaseUnavailable as exc:
                        if exc.maybe_committed:
                            raise
                        # Nothing was committed: the connection was found lost before COMMIT (the first
                        # call after a database restart, say). The pools have dropped it; once more is
                        # safe because every mutating RPC writes in one transaction.
                        log.info("retrying %s once: %s", handler_call_details.method, exc.message)
                        return await inner(request, context)
                except (errors.LaceError, Exception) as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await context.abort_with_status(status_for(exc))
            return unary

        def stream_of(inner: Any) -> Any:
            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                try:
                    async for item in inner(request, context):
                        yield item
                except (errors.LaceError, Exception) as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await context.abort_with_status(status_for(exc))
            return stream

        return wrapped(handler, unary=unary_of, stream=stream_of)
