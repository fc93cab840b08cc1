"""Rebuilding a grpc.aio method handler around a wrapper: what every interceptor here has in common."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import grpc

# grpc.aio handlers are coroutines (unary) or async generators (server streaming); the stubs only
# model sync ones, hence Any.
Behaviour = Any


def wrapped(handler: grpc.RpcMethodHandler[Any, Any], *, unary: Callable[[Behaviour], Behaviour],
            stream: Callable[[Behaviour], Behaviour]) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its unary-unary behaviour passed through `unary`, or its unary-stream one through
    `stream`; any other kind unchanged."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            cast(Any, unary(handler.unary_unary)), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            cast(Any, stream(handler.unary_stream)), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    return handler
