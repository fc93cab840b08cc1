"""The run event log: gap-free per-run sequencing inside the writer's transaction, and reads.

`append` bumps runs.head_seq under the run row's lock, so concurrent writers to
one run serialize and seqs are 1, 2, 3, ... with no gaps (a rolled-back
transaction rolls its numbers back too). One NOTIFY per transaction wakes other
processes; it carries only the run id and the new head.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb

from lace_engine.domain import EventType, NewEvent, RunEvent, RunState
from lace_engine.errors import CursorCompacted, LeaseLost, NotFound
from lace_engine.storage.database import PipelinedTx, WriteTx, batched
from lace_engine.storage.schema import runs
from lace_engine.tenancy import DEFAULT_TENANT

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




async def append(
    tx: WriteTx,
    run_id: uuid.UUID,
    events: Sequence[NewEvent],
    *,
    fence: Fence | None = None,
    allowed_states: frozenset[RunState] | None = None,
    set_values: Mapping[str, Any] | None = None,
    increments: Mapping[str, int] | None = None,
) -> Appended:
    """Appends events to a run (and updates its row) inside `tx`, which publishes them once committed.

    One statement, one round trip: the run row's UPDATE (head, counters, fence and state
    check), the events' INSERT numbered from the new head, and the NOTIFY, as one CTE on the
    transaction's own psycopg connection.
    """
    sets = dict(set_values or {})
    if any(isinstance(v, sa.ClauseElement) and not isinstance(v, sa.sql.functions.now) for v in sets.values()):
        raise TypeError("append's set_values take plain values or sa.func.now() only")
    now = datetime.now(UTC)
    sql, params = reserve(run_id, len(events), fence=fence, allowed_states=allowed_states, set_values=sets,
                          increments=increments, events=events, now=now)
    driver = await tx.driver()
    async with batched(driver):  # a transaction's BEGIN travels with the statement
        cur = await driver.execute(sql, params)
    appended = _appended(await cur.fetchone(), run_id, events, now, fence, allowed_states)
    tx.emitted(appended.events)
    return appended


def _appended(row: Any, run_id: uuid.UUID, events: Sequence[NewEvent], now: datetime, fence: Fence | None,
              allowed_states: frozenset[RunState] | None) -> Appended:
    """What the statement `reserve` made appended, from its row (head_seq, state), or why it did not."""
    if row is None:
        raise not_appended(run_id, fence, allowed_states)
    head = int(row[0])
    first = head - len(events) + 1
    written = [RunEvent(run_id=run_id, seq=first + i, type=e.type, payload=e.payload, create_time=now)
               for i, e in enumerate(events)]
    return Appended(events=written, head_seq=head, state=_STATES[row[1]])


class AppendAtCommit:
    """What `append_at_commit` appended, known once its transaction has committed."""

    __slots__ = ("_appended",)

    def __init__(self) -> None:
        self._appended: Appended | None = None

    @property
    def appended(self) -> Appended:
        if self._appended is None:
            raise RuntimeError("the append is read after its transaction commits")
        return self._appended


async def append_at_commit(
    tx: PipelinedTx,
    run_id: uuid.UUID,
    events: Sequence[NewEvent],
    *,
    fence: Fence | None = None,
    allowed_states: frozenset[RunState] | None = None,
    set_values: Mapping[str, Any] | None = None,
    increments: Mapping[str, int] | None = None,
) -> AppendAtCommit:
    """`append`, its row read once its transaction is answered: for a transaction that sends
    nothing else (or is this one statement, `Database.one_statement`), one round trip instead of
    two. A missing run, stale fence or state not allowed matches no row, so nothing is committed,
    and the transaction's end raises what `append` would have."""
    now = datetime.now(UTC)
    sql, params = reserve(run_id, len(events), fence=fence, allowed_states=allowed_states, set_values=set_values,
                          increments=increments, events=events, now=now)
    tx.expect(run_id)  # before anything is sent: the hub holds back its reads of what this commits
    driver = await tx.driver()
    cur = await driver.execute(sql, params)
    result = AppendAtCommit()

    async def read() -> None:
        result._appended = _appended(await cur.fetchone(), run_id, events, now, fence, allowed_states)
        tx.emitted(result._appended.events)

    tx.read_after_commit(read)
    return result


def reserve(
    run_id: uuid.UUID,
    count: int,
    *,
    fence: Fence | None = None,
    allowed_states: frozenset[RunState] | None = None,
    set_values: Mapping[str, Any] | None = None,
    increments: Mapping[str, int] | None = None,
    events: Sequence[NewEvent] = (),
    now: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """The statement (and parameters) that locks the run row, checks the fence and state, updates its
    columns, moves the head by `count` and (count > 0) NOTIFYs the new head, which is sent at COMMIT;
    with `events` (count of them) it also inserts them, else the caller does in the same transaction.

    It returns (head_seq, state) of the updated row, or no row when the run is missing, the fence
    is stale or the state is not allowed (see `not_appended`). set_values may hold sa.func.now().
    """
    sets = dict(set_values or {})
    incs = {c: d for c, d in (increments or {}).items() if d and c not in sets}
    params: dict[str, Any] = {"id": run_id, "n": count}
    params.update({f"inc_{c}": d for c, d in incs.items()})
    params.update({f"set_{c}": Jsonb(v) if isinstance(v, dict | list) else v
                   for c, v in sets.items() if not isinstance(v, sa.ClauseElement)})
    if fence is not None:
        params["owner"], params["token"] = fence.owner, fence.token
    if count:
        params.update(channel=NOTIFY_CHANNEL, run=f"{run_id}:")
    if events:
        # One jsonb document, not arrays of types and payloads: psycopg escapes every element of a
        # jsonb[] parameter with a regex, ~100 us an append.
        params.update(now=now or datetime.now(UTC),
                      events=Jsonb([{"type": e.type.value, "payload": e.payload} for e in events]))
    sql = _append_sql(tuple(incs), tuple((c, isinstance(v, sa.ClauseElement)) for c, v in sets.items()),
                      fence is not None, allowed_states, bool(count), bool(events))
    return sql, params


def not_appended(run_id: uuid.UUID, fence: Fence | None, allowed_states: frozenset[RunState] | None) -> Exception:
    """What a `reserve` statement that matched no row means."""
    if fence is not None or allowed_states is not None:
        return LeaseLost(f"run {run_id} is no longer owned by {fence.owner if fence else 'this caller'} "
                         "or changed state; stopping")
    return NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND")


_RUN_COLUMNS = frozenset(c.name for c in runs.c)


def state_in(column: str, states: frozenset[RunState]) -> str:
    """`column IN (...)` with the states as literals (enum values), for a cached statement: a list
    parameter would cost ~15 us a statement to dump."""
    if not states:
        return "false"
    literals = ", ".join(sorted("'" + s.value + "'" for s in states))
    return f"{column} IN ({literals})"


@functools.lru_cache(maxsize=512)
def _append_sql(increments: tuple[str, ...], sets: tuple[tuple[str, bool], ...], fenced: bool,
                states: frozenset[RunState] | None, notify: bool, with_events: bool) -> str:
    """The statement `append` sends, for one combination of columns and checks (cached)."""
    unknown = ({*increments, *(c for c, _ in sets)} - _RUN_COLUMNS)
    if unknown:
        raise ValueError(f"not columns of runs: {sorted(unknown)}")
    assign = ["head_seq = head_seq + %(n)s", "update_time = now()"]
    assign += [f"{c} = {c} + %(inc_{c})s" for c in increments]
    assign = [a for a in assign if a.split(" = ", 1)[0] not in {c for c, _ in sets}]
    assign += [f"{c} = now()" if is_now else f"{c} = %(set_{c})s" for c, is_now in sets]
    where = ["id = %(id)s"]
    if fenced:
        where.append("lease_owner = %(owner)s AND lease_token = %(token)s")
    if states is not None:
        where.append(state_in("state", states))
    update = f"UPDATE runs SET {', '.join(assign)} WHERE {' AND '.join(where)} RETURNING head_seq, state"
    if not with_events:
        # The NOTIFY travels with the lock (Apply's first round trip), not as a statement of its own.
        return update + ", pg_notify(%(channel)s, %(run)s || head_seq)" if notify else update
    return (
        f"WITH r AS ({update}), "
        "e AS (INSERT INTO run_events (run_id, seq, type, payload, create_time) "
        "SELECT %(id)s, r.head_seq - %(n)s + x.ord, x.event->>'type', x.event->'payload', %(now)s "
        "FROM r, jsonb_array_elements(%(events)s) WITH ORDINALITY AS x(event, ord)) "
        "SELECT r.head_seq, r.state, pg_notify(%(channel)s, %(run)s || r.head_seq) FROM r"
    )


_TYPES = {t.value: t for t in EventType}
_STATES = {s.value: s for s in RunState}

_READ_SQL = (
    "SELECT seq, type, payload, create_time FROM run_events "
    "WHERE run_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
)
_READ_TYPES_SQL = (
    "SELECT seq, type, payload, create_time FROM run_events "
    "WHERE run_id = %s AND seq > %s AND seq <= %s AND type = ANY(%s) ORDER BY seq LIMIT %s"
)
_HEAD_SQL = "SELECT head_seq, state, compacted_seq, tenant_id FROM runs WHERE id = %s"
_TENANT_HEAD_SQL = _HEAD_SQL + " AND tenant_id = %s"


async def read(
    conn: psycopg.AsyncConnection[Any], run_id: uuid.UUID, *, after_seq: int, limit: int,
    upto_seq: int | None = None, types: Sequence[EventType] = (),
) -> list[RunEvent]:
    """Events of a run with seq > after_seq (and <= upto_seq, and of `types` when given), in seq
    order, at most `limit`: a prepared statement, one round trip. Inside a SQLAlchemy transaction,
    pass `database.driver_connection(conn)`."""
    upto = upto_seq if upto_seq is not None else 2**62
    # Binary results: seq and create_time decode in C; run_id is the one asked for, not re-read per row.
    async with conn.cursor(binary=True) as cur:
        if types:
            await cur.execute(_READ_TYPES_SQL, (run_id, after_seq, upto, [t.value for t in types], limit),
                              prepare=True)
        else:
            await cur.execute(_READ_SQL, (run_id, after_seq, upto, limit), prepare=True)
        rows = await cur.fetchall()
    known = _TYPES
    return [RunEvent(run_id, r[0], known[r[1]], r[2], r[3]) for r in rows]


class Head(NamedTuple):
    seq: int
    state: RunState
    # Events with seq <= compacted were pruned by retention.
    compacted: int
    # The run's tenant (its events' NATS subjects carry it).
    tenant: str = DEFAULT_TENANT

    def check_cursor(self, run_id: uuid.UUID, cursor: int) -> None:
        """CursorCompacted when events after `cursor` were pruned: the reader would miss them."""
        if cursor < self.compacted:
            raise CursorCompacted(
                f"run {run_id}'s events up to seq {self.compacted} were pruned by retention; read the artifact "
                f"(GetArtifact) and continue from cursor {self.compacted}",
                metadata={"run_id": str(run_id), "oldest_seq": str(self.compacted + 1),
                          "cursor": str(self.compacted)})


async def head(conn: psycopg.AsyncConnection[Any], run_id: uuid.UUID, *, tenant: str | None = None) -> Head:
    """The run's newest seq, its state and how far its history was pruned; NotFound for an unknown run
    or one of another tenant than `tenant` (None: any)."""
    if tenant is None:
        cur = await conn.execute(_HEAD_SQL, (run_id,), prepare=True)
    else:
        cur = await conn.execute(_TENANT_HEAD_SQL, (run_id, tenant), prepare=True)
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND", metadata={"run_id": str(run_id)})
    return Head(int(row[0]), _STATES[row[1]], int(row[2]), row[3])
