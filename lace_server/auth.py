"""Optional bearer-token auth (LACE_API_KEYS): who may call what, and for which tenant.

A key names its tenant; the call's handler runs with that tenant as the caller's (`caller_tenant`),
which the servicers hand to every engine method, so storage scopes every query to it. Health and
reflection stay open.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import grpc

from lace_engine.errors import InvalidArgument
from lace_engine.tenancy import DEFAULT_TENANT, check_tenant
from lace_server.handler_wrap import Behaviour, wrapped

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


# The tenant of the call being handled; DEFAULT_TENANT without auth (one tenant owns everything).
_CALLER_TENANT: ContextVar[str] = ContextVar("lace_caller_tenant", default=DEFAULT_TENANT)


def caller_tenant() -> str:
    """The tenant of the API key that made the current call (DEFAULT_TENANT without LACE_API_KEYS)."""
    return _CALLER_TENANT.get()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What a key may do (its scopes) and for whom (its tenant)."""

    scopes: frozenset[str]
    tenant: str = DEFAULT_TENANT


def parse_api_keys(spec: str) -> dict[str, ApiKey]:
    """Reads 'KEY[@TENANT][:scope+scope],...' into key -> ApiKey; a key without scopes gets all of them,
    one without a tenant belongs to DEFAULT_TENANT."""
    keys: dict[str, ApiKey] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        named, _, scopes = entry.partition(":")
        key, at, tenant = named.partition("@")
        chosen = frozenset(s for s in scopes.split("+") if s) if scopes else frozenset(SCOPES)
        if not key or chosen - set(SCOPES) or (at and not tenant):
            raise InvalidArgument(f"LACE_API_KEYS entry {entry[:8]}... is malformed; use KEY, KEY@TENANT or "
                                  "KEY@TENANT:read+stream+write")
        if key in keys:
            raise InvalidArgument(f"LACE_API_KEYS names the key {key[:8]}... twice")
        keys[key] = ApiKey(chosen, check_tenant(tenant) if at else DEFAULT_TENANT)
    return keys


def _as_tenant(handler: grpc.RpcMethodHandler[Any, Any], tenant: str) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` running with `tenant` as the caller's tenant."""
    def unary(behaviour: Behaviour) -> Behaviour:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = _CALLER_TENANT.set(tenant)
            try:
                return await behaviour(request, context)
            finally:
                _CALLER_TENANT.reset(token)
        return call

    def stream(behaviour: Behaviour) -> Behaviour:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            # Set around each step, not across the yields: the context is the task's, shared with
            # whatever grpc runs between two messages.
            token = _CALLER_TENANT.set(tenant)
            try:
                responses = behaviour(request, context)
            finally:
                _CALLER_TENANT.reset(token)
            while True:
                token = _CALLER_TENANT.set(tenant)
                try:
                    response = await anext(responses)
                except StopAsyncIteration:
                    return
                finally:
                    _CALLER_TENANT.reset(token)
                yield response
        return call

    return wrapped(handler, unary=unary, stream=stream)


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
    """Checks `authorization: Bearer <key>` against the configured keys and their scopes, and runs the
    call as the key's tenant."""

    def __init__(self, keys: Mapping[str, ApiKey]):
        self._keys = dict(keys)

    def _key_of(self, token: str) -> ApiKey | None:
        for key, granted in self._keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return granted
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
        granted = self._key_of(header[7:].strip())
        if granted is None:
            return _abort_handler(grpc.StatusCode.UNAUTHENTICATED, "unknown API key", streaming)
        if needed not in granted.scopes:
            return _abort_handler(grpc.StatusCode.PERMISSION_DENIED,
                                  f"this API key lacks the '{needed}' scope needed for {method}", streaming)
        handler = await continuation(handler_call_details)
        return None if handler is None else _as_tenant(handler, granted.tenant)
