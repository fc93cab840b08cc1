"""AIP-155 request ids: a repeated mutating request returns what the first one created."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from lace_engine.errors import AlreadyExists, InvalidArgument
from lace_engine.schema import idempotency_keys

MAX_REQUEST_ID = 128


def fingerprint(request: Any) -> str:
    """A stable hash of the request's fields (excluding request_id)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument(f"request_id is longer than {MAX_REQUEST_ID} characters",
                              reason="FIELD_TOO_LONG", metadata={"field": "request_id"})


async def lookup(conn: AsyncConnection, method: str, request_id: str, fp: str) -> uuid.UUID | None:
    """The resource a previous identical request created, None if new; AlreadyExists if reused differently."""
    if not request_id:
        return None
    row = (await conn.execute(
        sa.select(idempotency_keys.c.fingerprint, idempotency_keys.c.resource_id)
        .where(idempotency_keys.c.method == method, idempotency_keys.c.request_id == request_id)
    )).first()
    if row is None:
        return None
    if row.fingerprint != fp:
        raise AlreadyExists(
            f"request_id {request_id!r} was already used for a different {method} request; "
            "use a new request_id for a new request",
            reason="REQUEST_ID_REUSED", metadata={"request_id": request_id},
        )
    resource: uuid.UUID = row.resource_id
    return resource


async def record(conn: AsyncConnection, method: str, request_id: str, fp: str, resource_id: uuid.UUID) -> bool:
    """Records the key in the caller's transaction; False if a concurrent twin recorded it first."""
    if not request_id:
        return True
    result = await conn.execute(
        pg_insert(idempotency_keys)
        .values(method=method, request_id=request_id, fingerprint=fp, resource_id=resource_id)
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.request_id)
    )
    return result.first() is not None
