"""AIP-155 request ids: a repeated mutating request returns what the first one created.

`once` owns the whole protocol; a mutating method names its request and hands over its write
and how to read back a result, and never touches the keys itself.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from lace_engine.errors import AlreadyExists, InvalidArgument
from lace_engine.storage.database import Database, Tx
from lace_engine.storage.schema import idempotency_keys
from lace_engine.tenancy import DEFAULT_TENANT

MAX_REQUEST_ID = 128

T = TypeVar("T")


def fingerprint(request: Any) -> str:
    """A stable hash of the request's fields (excluding request_id)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument(f"request_id is longer than {MAX_REQUEST_ID} characters",
                              reason="FIELD_TOO_LONG", metadata={"field": "request_id"})


@dataclass(frozen=True, slots=True)
class Request:
    """One mutating request as its key sees it: the caller's tenant, the method, the client's
    request_id, its fingerprint."""

    method: str
    request_id: str
    fingerprint: str
    tenant: str = DEFAULT_TENANT


def request(method: str, request_id: str, fields: Any, *, tenant: str = DEFAULT_TENANT) -> Request:
    """Checks `request_id` and fingerprints `fields`, everything that makes two requests the same one;
    keys are per tenant, so two tenants may use the same request_id for different requests."""
    check_request_id(request_id)
    return Request(method, request_id, fingerprint(fields), tenant)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """A mutating request's result; `replayed` when an earlier or concurrent twin did the write."""

    value: T
    replayed: bool


class _TwinCommitted(Exception):
    """A concurrent request with the same key committed first: roll back, then replay its result."""


async def once(db: Database, req: Request, resource_id: uuid.UUID,
               write: Callable[[Tx], Awaitable[T]],
               replay: Callable[[AsyncConnection, uuid.UUID], Awaitable[T]]) -> Outcome[T]:
    """Runs `write` in a transaction that records the key for `resource_id`, at most once per key;
    a repeat gets `replay` of the resource the first one recorded. Without a request_id, just writes."""
    if req.request_id:
        async with db.read() as conn:
            existing = await _lookup(conn, req)
            if existing is not None:
                return Outcome(await replay(conn, existing), replayed=True)
    try:
        async with db.transaction() as tx:
            # The key before the write: a twin's insert of it waits until this transaction ends, and
            # then either finds it committed (and replays) or, after a rollback, writes for itself.
            # That needs READ COMMITTED, the default; REPEATABLE READ would fail the twin instead.
            if not await _claim(tx.conn, req, resource_id):
                raise _TwinCommitted
            return Outcome(await write(tx), replayed=False)
    except _TwinCommitted:
        pass
    async with db.read() as conn:
        existing = await _lookup(conn, req)
        assert existing is not None, "a committed key is never deleted"
        return Outcome(await replay(conn, existing), replayed=True)


async def no_result(conn: AsyncConnection, resource_id: uuid.UUID) -> None:
    """The replay of a request with nothing to return (a delete): its repeat succeeds again."""
    return None


async def lookup(conn: AsyncConnection, req: Request) -> uuid.UUID | None:
    """The resource an earlier identical request recorded, None if new (for a replay that must not
    read the request's own target first, e.g. a delete's)."""
    if not req.request_id:
        return None
    return await _lookup(conn, req)


async def _lookup(conn: AsyncConnection, req: Request) -> uuid.UUID | None:
    """The resource a previous identical request recorded, None if new; AlreadyExists if reused differently."""
    row = (await conn.execute(
        sa.select(idempotency_keys.c.fingerprint, idempotency_keys.c.resource_id)
        .where(idempotency_keys.c.tenant_id == req.tenant, idempotency_keys.c.method == req.method,
               idempotency_keys.c.request_id == req.request_id)
    )).first()
    if row is None:
        return None
    if row.fingerprint != req.fingerprint:
        raise AlreadyExists(
            f"request_id {req.request_id!r} was already used for a different {req.method} request; "
            "use a new request_id for a new request",
            reason="REQUEST_ID_REUSED", metadata={"request_id": req.request_id},
        )
    resource: uuid.UUID = row.resource_id
    return resource


async def _claim(conn: AsyncConnection, req: Request, resource_id: uuid.UUID) -> bool:
    """Inserts the key in the caller's transaction; False if a concurrent twin committed it first."""
    if not req.request_id:
        return True
    result = await conn.execute(
        pg_insert(idempotency_keys)
        .values(tenant_id=req.tenant, method=req.method, request_id=req.request_id, fingerprint=req.fingerprint,
                resource_id=resource_id)
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.request_id)
    )
    return result.first() is not None
