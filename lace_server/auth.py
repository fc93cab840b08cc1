"""Optional bearer-token auth (LACE_API_KEYS). Health and reflection stay open."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import grpc

from lace_engine.errors import InvalidArgument

SCOPES = ("read", "stream", "write")

# Reads by AIP naming (Get, List, and Compile, a read that renders); every other lace.v1 method,
# including any added later, needs "write": a new method is never open by omission.
_READ_PREFIXES = ("Get", "List", "Compile")


def scope_for(method: str) -> str | None:
    """The scope a full method name needs; None (open) for services outside lace.v1: health, reflection."""
    service, _, name = method.rpartition("/")
    if not service.startswith("/lace.v1."):
        return None
    if name == "StreamRun":
        return "stream"
    return "read" if name.startswith(_READ_PREFIXES) else "write"


def parse_api_keys(spec: str) -> dict[str, frozenset[str]]:
    """Reads 'KEY[:scope+scope],KEY2' into key -> scopes; a key without scopes gets all of them."""
    keys: dict[str, frozenset[str]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        key, _, scopes = entry.partition(":")
        chosen = frozenset(s for s in scopes.split("+") if s) if scopes else frozenset(SCOPES)
        unknown = chosen - set(SCOPES)
        if not key or unknown:
            raise InvalidArgument(f"LACE_API_KEYS entry {entry[:8]}... is malformed; use KEY or KEY:read+stream+write")
        keys[key] = chosen
    return keys


def _abort_handler(code: grpc.StatusCode, message: str, streaming: bool) -> grpc.RpcMethodHandler[Any, Any]:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    # grpc.aio accepts coroutine handlers; the stubs only model sync ones.
    if streaming:
        return grpc.unary_stream_rpc_method_handler(cast(Any, stream))
    return grpc.unary_unary_rpc_method_handler(cast(Any, unary))


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks `authorization: Bearer <key>` against the configured keys and their scopes."""

    def __init__(self, keys: Mapping[str, frozenset[str]]):
        self._keys = dict(keys)

    def _scopes_of(self, token: str) -> frozenset[str] | None:
        for key, scopes in self._keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return scopes
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        needed = scope_for(method)
        if needed is None:
            return await continuation(handler_call_details)
        streaming = method.endswith("/StreamRun")
        header = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if not isinstance(header, str) or not header.lower().startswith("bearer "):
            return _abort_handler(grpc.StatusCode.UNAUTHENTICATED,
                                  "missing credentials: send 'authorization: Bearer <api key>'", streaming)
        scopes = self._scopes_of(header[7:].strip())
        if scopes is None:
            return _abort_handler(grpc.StatusCode.UNAUTHENTICATED, "unknown API key", streaming)
        if needed not in scopes:
            return _abort_handler(grpc.StatusCode.PERMISSION_DENIED,
                                  f"this API key lacks the '{needed}' scope needed for {method}", streaming)
        return await continuation(handler_call_details)
