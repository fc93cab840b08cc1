"""RPC metrics: every call counted by method and status code, unary latency, streams open.

The outermost interceptor: it sees the status the error mapping (or the auth check) aborted with.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from lace_engine import metrics
from lace_server.handler_wrap import wrapped


def _code(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed else "OK"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC (lace_rpc_requests_total, lace_rpc_duration_seconds, lace_streams_open)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # "/lace.v1.RunService/StartRun" -> "RunService/StartRun": a bounded label set.
        method = handler_call_details.method.rsplit(".", 1)[-1]

        def unary_of(inner: Any) -> Any:
            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                failed = True
                try:
                    response = await inner(request, context)
                    failed = False
                    return response
                finally:
                    metrics.RPC_DURATION.labels(method).observe(time.perf_counter() - started)
                    metrics.RPC_REQUESTS.labels(method, _code(context, failed)).inc()
            return unary

        def stream_of(inner: Any) -> Any:
            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                metrics.STREAMS_OPEN.inc()
                failed = True
                try:
                    async for item in inner(request, context):
                        yield item
                    failed = False
                finally:
                    metrics.STREAMS_OPEN.dec()
                    metrics.RPC_REQUESTS.labels(method, _code(context, failed)).inc()
            return stream

        return wrapped(handler, unary=unary_of, stream=stream_of)
