"""The run event log: gap-free per-run sequencing inside the writer's transaction, and reads.

`append` bumps runs.head_seq under the run row's lock, so concurrent writers to
one run serialize and seqs are 1, 2, 3, ... with no gaps (a rolled-back
transaction rolls its numbers back too). One NOTIFY per transaction wakes other
processes; it carries only the run id and the new head.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lace_engine.errors import LeaseLost, NotFound
from lace_engine.model import EventType, NewEvent, RunEvent, RunState
from lace_engine.schema import run_events, runs

NOTIFY_CHANNEL = "lace_events"


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease an executor holds; an append under a stale fence raises LeaseLost."""

    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class Appended:
    events: list[RunEvent]
    head_seq: int
    state: RunState


_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


async def append(
    conn: AsyncConnection,
    run_id: uuid.UUID,
    events: Sequence[NewEvent],
    *,
    fence: Fence | None = None,
    allowed_states: frozenset[RunState] | None = None,
    set_values: Mapping[str, Any] | None = None,
    increments: Mapping[str, int] | None = None,
) -> Appended:
    """Appends events to a run (and updates its row) inside the caller's transaction."""
    values: dict[str, Any] = {"head_seq": runs.c.head_seq + len(events), "update_time": sa.func.now()}
    for column, delta in (increments or {}).items():
        if delta:
            values[column] = runs.c[column] + delta
    values.update(set_values or {})
    stmt = sa.update(runs).where(runs.c.id == run_id)
    if fence is not None:
        stmt = stmt.where(runs.c.lease_owner == fence.owner, runs.c.lease_token == fence.token)
    if allowed_states is not None:
        stmt = stmt.where(runs.c.state.in_([s.value for s in allowed_states]))
    row = (await conn.execute(stmt.values(values).returning(runs.c.head_seq, runs.c.state))).first()
    if row is None:
        if fence is not None or allowed_states is not None:
            raise LeaseLost(f"run {run_id} is no longer owned by {fence.owner if fence else 'this caller'} "
                            "or changed state; stopping")
        raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND")
    head = int(row.head_seq)
    now = datetime.now(UTC)
    first = head - len(events) + 1
    written = [
        RunEvent(run_id=run_id, seq=first + i, type=e.type, payload=e.payload, create_time=now)
        for i, e in enumerate(events)
    ]
    if written:
        await conn.execute(
            sa.insert(run_events),
            [{"run_id": run_id, "seq": e.seq, "type": e.type.value, "payload": e.payload, "create_time": now}
             for e in written],
        )
        await conn.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "payload": f"{run_id}:{head}"})
    return Appended(events=written, head_seq=head, state=RunState(row.state))


def row_to_event(row: Any) -> RunEvent:
    return RunEvent(run_id=row.run_id, seq=int(row.seq), type=EventType(row.type), payload=row.payload,
                    create_time=row.create_time)


async def read(
    conn: AsyncConnection,
    run_id: uuid.UUID,
    *,
    after_seq: int,
    limit: int,
    upto_seq: int | None = None,
    types: Sequence[EventType] = (),
) -> list[RunEvent]:
    """Events of a run with seq > after_seq (and <= upto_seq), in seq order, at most `limit`."""
    stmt = (
        sa.select(run_events.c.run_id, run_events.c.seq, run_events.c.type, run_events.c.payload,
                  run_events.c.create_time)
        .where(run_events.c.run_id == run_id, run_events.c.seq > after_seq)
        .order_by(run_events.c.seq)
        .limit(limit)
    )
    if upto_seq is not None:
        stmt = stmt.where(run_events.c.seq <= upto_seq)
    if types:
        stmt = stmt.where(run_events.c.type.in_([t.value for t in types]))
    result = await conn.execute(stmt)
    return [row_to_event(r) for r in result]


_TYPES = {t.value: t for t in EventType}
_STATES = {s.value: s for s in RunState}

_READ_SQL = (
    "SELECT run_id, seq, type, payload, create_time FROM run_events "
    "WHERE run_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
)
_HEAD_SQL = "SELECT head_seq, state FROM runs WHERE id = %s"


async def read_fast(
    conn: psycopg.AsyncConnection[Any], run_id: uuid.UUID, *, after_seq: int, limit: int,
    upto_seq: int | None = None,
) -> list[RunEvent]:
    """Like `read`, over a raw psycopg connection (prepared statement, one round trip)."""
    upto = upto_seq if upto_seq is not None else 2**62
    cur = await conn.execute(_READ_SQL, (run_id, after_seq, upto, limit), prepare=True)
    types = _TYPES
    return [RunEvent(r[0], r[1], types[r[2]], r[3], r[4]) for r in await cur.fetchall()]


async def head_fast(conn: psycopg.AsyncConnection[Any], run_id: uuid.UUID) -> tuple[int, RunState]:
    """Like `head`, over a raw psycopg connection."""
    cur = await conn.execute(_HEAD_SQL, (run_id,), prepare=True)
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND", metadata={"run_id": str(run_id)})
    return int(row[0]), _STATES[row[1]]


async def head(conn: AsyncConnection, run_id: uuid.UUID) -> tuple[int, RunState]:
    """The run's newest seq and its state; NotFound for an unknown run."""
    row = (await conn.execute(sa.select(runs.c.head_seq, runs.c.state).where(runs.c.id == run_id))).first()
    if row is None:
        raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND", metadata={"run_id": str(run_id)})
    return int(row.head_seq), RunState(row.state)
