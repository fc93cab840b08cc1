"""Runs in Postgres: creation, reads, lifecycle transitions with their events, and leases."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import psycopg.errors
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncConnection

from lace_engine.domain import EventType, NewEvent, Run, RunOptions, RunState
from lace_engine.errors import Aborted, FailedPrecondition, NotFound
from lace_engine.list_query import ListQuery
from lace_engine.pipeline.quality import CallRecord
from lace_engine.storage import event_log, list_sql, tenant_scope
from lace_engine.storage.database import Query, Tx, batched, driver_connection, fetch_rows, ids_array, ids_text
from lace_engine.storage.event_log import Appended, Fence
from lace_engine.storage.schema import RUN_IS_ACTIVE, llm_calls, runs
from lace_engine.tenancy import DEFAULT_TENANT


def row_to_run(r: Any) -> Run:
    return Run(
        id=r.id, artifact_id=r.artifact_id, state=RunState(r.state), scope_node_id=r.scope_node_id,
        instruction=r.instruction, options=RunOptions.from_json(r.options), head_seq=int(r.head_seq),
        failure_reason=r.failure_reason, prompt_tokens=int(r.prompt_tokens),
        completion_tokens=int(r.completion_tokens), llm_calls=int(r.llm_calls),
        llm_latency_ms=int(r.llm_latency_ms), nodes_planned=r.nodes_planned, nodes_written=r.nodes_written,
        words_written=int(r.words_written), provider=r.provider, model=r.model, create_time=r.create_time,
        start_time=r.start_time, end_time=r.end_time, validation=r.validation, estimate=r.estimate,
        failure_code=r.failure_code, trace_context=r.trace_context, stale_only=r.stale_only,
        tenant_id=r.tenant_id,
    )


def state_event(before: RunState, after: RunState, reason: str) -> NewEvent:
    return NewEvent(EventType.RUN_STATE_CHANGED,
                    {"from_state": before.value, "to_state": after.value, "reason": reason})


def active_run_error(artifact_id: uuid.UUID, active: uuid.UUID) -> FailedPrecondition:
    return FailedPrecondition(
        f"artifact {artifact_id} already has an active run {active}; wait for it to end, or cancel it",
        reason="ARTIFACT_HAS_ACTIVE_RUN", metadata={"artifact_id": str(artifact_id), "run_id": str(active)})


# Plain SQL: SQLAlchemy Core's insert cost a StartRun more than the database's answer did.
_INSERT_RUN = ("INSERT INTO runs (id, artifact_id, state, scope_node_id, instruction, options, provider, model, "
               "estimate, trace_context, stale_only, tenant_id) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
               f"ON CONFLICT (artifact_id) WHERE {RUN_IS_ACTIVE} DO NOTHING RETURNING *")


async def insert_run(
    tx: Tx, *, run_id: uuid.UUID, artifact_id: uuid.UUID, scope_node_id: uuid.UUID | None,
    instruction: str, options: RunOptions, provider: str, model: str, estimate: Mapping[str, int] | None = None,
    trace_context: Mapping[str, str] | None = None, stale_only: bool = False, tenant_id: str = DEFAULT_TENANT,
) -> Run:
    """Inserts a PENDING run with its first event; ARTIFACT_HAS_ACTIVE_RUN if the artifact has one."""
    conn = tx.conn
    driver = await tx.driver()
    created = NewEvent(EventType.RUN_STATE_CHANGED, {"from_state": "", "to_state": RunState.PENDING.value,
                                                     "reason": "run created"})
    # The INSERT and the first event's append in one round trip: the append's read brings both.
    appended: Appended | None = None
    async with batched(driver):
        cur = driver.cursor(row_factory=namedtuple_row)
        await cur.execute(_INSERT_RUN, (
            run_id, artifact_id, RunState.PENDING.value, scope_node_id, instruction, Jsonb(options.to_json()),
            provider, model, Jsonb(dict(estimate)) if estimate is not None else None,
            Jsonb(dict(trace_context)) if trace_context else None, stale_only, tenant_id))
        with contextlib.suppress(NotFound):  # no run to append to: the INSERT met the active one
            appended = await event_log.append(tx, run_id, [created])
    inserted = await cur.fetchall()
    if appended is None or not inserted:
        # ON CONFLICT waited for an in-flight conflicting run to commit, so a new statement sees it.
        active = (await conn.execute(
            sa.select(runs.c.id).where(runs.c.artifact_id == artifact_id, sa.text(RUN_IS_ACTIVE))
        )).scalar()
        if active is None:
            raise Aborted(f"another run of artifact {artifact_id} started and ended meanwhile; retry",
                          reason="CONCURRENT_RUN_START", metadata={"artifact_id": str(artifact_id)})
        raise active_run_error(artifact_id, active)
    # The append moved only the head (update_time is now(), the transaction's start, both times).
    return replace(row_to_run(inserted[0]), head_seq=appended.head_seq)


async def get_run(conn: AsyncConnection, run_id: uuid.UUID, *, for_update: bool = False,
                  tenant: str | None = None) -> Run:
    """The run, if `tenant` owns it (NotFound otherwise, as for a missing one; None: any tenant's)."""
    sql = "SELECT * FROM runs WHERE id = %s"
    params: list[Any] = [run_id]
    if tenant is not None:
        sql, params = sql + " AND tenant_id = %s", [run_id, tenant]
    rows = await fetch_rows(conn, sql + " FOR UPDATE" if for_update else sql, params)
    if not rows:
        raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND", metadata={"run_id": str(run_id)})
    return row_to_run(rows[0])


async def list_runs(conn: AsyncConnection, query: ListQuery, *, limit: int,
                    after: tuple[str, str] | None, tenant: str) -> list[Run]:
    """A page of the tenant's runs in the query's order; `after` is the (order field, id) of the previous
    page's last run."""
    columns = {"state": runs.c.state, "artifact_id": runs.c.artifact_id, "create_time": runs.c.create_time}
    stmt = list_sql.apply(sa.select(runs).where(runs.c.tenant_id == tenant), query, columns, runs.c.id, after, limit)
    return [row_to_run(r) for r in await conn.execute(stmt)]


def state_change(
    before: RunState, to: RunState, reason: str, *, started: bool, extra_events: tuple[NewEvent, ...] = (),
    set_values: Mapping[str, Any] | None = None, release_lease: bool = False,
) -> tuple[list[NewEvent], dict[str, Any]]:
    """What moving a run from `before` to `to` appends and sets (`started`: it has a start_time)."""
    values: dict[str, Any] = {"state": to.value, **(set_values or {})}
    if to.terminal:
        values["end_time"] = sa.func.now()
    if to is RunState.RUNNING and not started:
        values["start_time"] = sa.func.now()
    # A run that waits (for an executor, a resume, a person's review) holds no lease.
    if release_lease or to.terminal or to in (RunState.PAUSED, RunState.PENDING, RunState.AWAITING_REVIEW):
        values.update(lease_owner=None, lease_expires=None)
    if before.terminal and not to.terminal:
        values.update(end_time=None, failure_reason="", failure_code="")  # a failed run resumed: no longer ended
    events = [*extra_events, state_event(before, to, reason)] if before != to else list(extra_events)
    return events, values


async def transition(
    tx: Tx, run: Run, to: RunState, reason: str, *, fence: Fence | None = None,
    extra_events: tuple[NewEvent, ...] = (), set_values: Mapping[str, Any] | None = None,
    release_lease: bool = False,
) -> Appended:
    """Moves a run (whose row the caller has locked or fenced) to `to`, with its typed event."""
    events, values = state_change(run.state, to, reason, started=run.start_time is not None,
                                  extra_events=extra_events, set_values=set_values, release_lease=release_lease)
    try:
        return await event_log.append(tx, run.id, events, fence=fence, set_values=values)
    except psycopg.errors.UniqueViolation as exc:
        # Only reviving an ended run can meet the one-active-run-per-artifact index: another run of the
        # artifact started between the caller's check and this write.
        raise Aborted(f"another run of artifact {run.artifact_id} became active meanwhile; retry",
                      reason="CONCURRENT_RUN_START", metadata={"artifact_id": str(run.artifact_id)}) from exc


@dataclass(frozen=True, slots=True)
class Claim:
    run: Run
    fence: Fence


# How many runs of the candidate's tenant an executor holds a live lease on now (the runs being executed).
_LEASED_OF_TENANT = ("(SELECT count(*) FROM runs held WHERE held.tenant_id = {tenant} AND held.lease_expires > now() "
                     "AND held.id <> {other})")
_COUNT_TENANT = _LEASED_OF_TENANT.format(tenant="%s", other="%s")


class _TenantAtLimit(Exception):
    """A concurrent claim took the tenant's last run slot first: undo this one."""


@functools.lru_cache(maxsize=8)
def _claim_sql(states: frozenset[RunState], one_run: bool, tenant_limited: bool) -> str:
    """The claim statement: the oldest claimable run's lease, taken in one UPDATE (plain SQL: the
    executor claims after every run it finishes, and SQLAlchemy compiled this one afresh each time).
    The states are literals and the runs to pass over one text: no list parameter to dump."""
    where = [event_log.state_in("c.state", states), "(c.lease_expires IS NULL OR c.lease_expires < now())",
             f"c.id <> ALL({ids_array('%(exclude)s')})"]
    if one_run:
        where.append("c.id = %(run)s")
    if tenant_limited:
        # Passes over a saturated tenant's runs, so other tenants' do not queue behind them.
        where.append(_LEASED_OF_TENANT.format(tenant="c.tenant_id", other="c.id") + " < %(max)s")
    # NO KEY UPDATE, the lock the UPDATE itself takes: plain FOR UPDATE also conflicts with the KEY
    # SHARE lock that inserting a row referencing the run takes (the mirror's cursor, as the run's
    # first events are mirrored), and SKIP LOCKED then passed over a claimable run.
    candidate = (f"SELECT c.id FROM runs c WHERE {' AND '.join(where)} "
                 "ORDER BY c.create_time LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED")
    return ("UPDATE runs SET lease_owner = %(owner)s, lease_expires = now() + make_interval(secs => %(ttl)s), "
            f"lease_token = lease_token + 1 WHERE id = ({candidate}) RETURNING *")


async def claim_next(conn: AsyncConnection, *, owner: str, ttl_s: float, states: frozenset[RunState],
                     run_id: uuid.UUID | None = None, exclude: Collection[uuid.UUID] = (),
                     tenant_max_runs: int = 0) -> Claim | None:
    """Takes the lease of one run in `states` whose lease is free or expired (a new fencing token),
    other than those in `exclude` (the runs the caller is executing); with `tenant_max_runs`, only of
    a tenant that has fewer runs executing than that, across every process."""
    params = {"owner": owner, "ttl": ttl_s, "exclude": ids_text(exclude), "run": run_id, "max": tenant_max_runs}
    sql = _claim_sql(frozenset(states), run_id is not None, tenant_max_runs > 0)
    if tenant_max_runs <= 0:
        rows = await fetch_rows(conn, sql, params)
        return _claim(rows[0], owner) if rows else None
    try:
        async with conn.begin_nested():
            rows = await fetch_rows(conn, sql, params)
            if rows:
                # Two processes may pick two runs of one tenant at once, each seeing the other's not yet
                # committed: serialize claims per tenant and count again, with the other's now visible.
                # Two statements: a statement's snapshot is taken before its lock is.
                tenant, other = rows[0].tenant_id, rows[0].id
                await fetch_rows(conn, "SELECT pg_advisory_xact_lock(hashtext(%s))", ("lace.tenant-runs:" + tenant,))
                counted = await fetch_rows(conn, "SELECT " + _COUNT_TENANT, (tenant, other))
                if int(counted[0][0]) >= tenant_max_runs:
                    raise _TenantAtLimit
    except _TenantAtLimit:
        return None
    return _claim(rows[0], owner) if rows else None


def _claim(row: Any, owner: str) -> Claim:
    return Claim(run=row_to_run(row), fence=Fence(owner=owner, token=int(row.lease_token)))


_RENEW_LEASES = (
    "UPDATE runs SET lease_expires = now() + make_interval(secs => %s) "
    "FROM unnest(%s::uuid[], %s::bigint[]) AS held(id, token) "
    "WHERE runs.id = held.id AND runs.lease_owner = %s AND runs.lease_token = held.token "
    "RETURNING runs.id, runs.state")


async def renew_leases(conn: AsyncConnection, owner: str, held: Mapping[uuid.UUID, int],
                       ttl_s: float) -> dict[uuid.UUID, RunState]:
    """Extends every lease `owner` holds (run id -> fencing token) in one statement.

    Returns the state of each run whose lease is still ours; a run missing from it lost its lease.
    """
    if not held:
        return {}
    driver = await driver_connection(conn)
    cur = await driver.execute(_RENEW_LEASES, (ttl_s, list(held), list(held.values()), owner))
    return {row[0]: RunState(row[1]) for row in await cur.fetchall()}


async def run_state(conn: AsyncConnection, run_id: uuid.UUID) -> RunState:
    row = (await conn.execute(sa.select(runs.c.state).where(runs.c.id == run_id))).first()
    if row is None:
        raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND")
    return RunState(row.state)


def has_event_query(run_id: uuid.UUID, event_type: EventType) -> Query[bool]:
    """Whether the run has an event of this type (e.g. plan_ready: its plan was reviewed)."""
    return Query("SELECT EXISTS (SELECT 1 FROM run_events WHERE run_id = %s AND type = %s) AS found",
                 (run_id, event_type.value), lambda rows: bool(rows[0].found))


async def active_run_for_update(conn: AsyncConnection, artifact_id: uuid.UUID, *,
                                tenant: str | None = None) -> Run | None:
    """The artifact's active run, its row locked (runs first: the writers' lock order), or None."""
    row = (await conn.execute(
        sa.select(runs).where(runs.c.artifact_id == artifact_id, sa.text(RUN_IS_ACTIVE),
                              tenant_scope.is_tenant(runs.c.tenant_id, tenant)).with_for_update()
    )).first()
    return None if row is None else row_to_run(row)


async def lock_runs_of(conn: AsyncConnection, artifact_id: uuid.UUID, *, tenant: str | None = None) -> list[Run]:
    """Every run of the artifact, their rows locked (runs first: the writers' lock order), oldest first."""
    rows = await conn.execute(
        sa.select(runs).where(runs.c.artifact_id == artifact_id, tenant_scope.is_tenant(runs.c.tenant_id, tenant))
        .order_by(runs.c.create_time, runs.c.id).with_for_update())
    return [row_to_run(r) for r in rows]


def call_records_query(run_id: uuid.UUID) -> Query[list[CallRecord]]:
    """Every LLM call of a run, in the order they were made, as the quality report reads them."""
    return Query("SELECT node_id, attempt, outcome, finish_reason, completion_tokens FROM llm_calls "
                 "WHERE run_id = %s ORDER BY create_time, attempt", (run_id,),
                 lambda rows: [CallRecord(r.node_id, int(r.attempt), r.outcome, r.finish_reason,
                                          int(r.completion_tokens)) for r in rows])


def repair_count_query(run_id: uuid.UUID) -> Query[int]:
    """How many deterministic repairs Apply recorded in the run's node_split and blocks_applied events."""
    return Query("SELECT coalesce(sum(jsonb_array_length(payload->'repairs')), 0) AS total "
                 "FROM run_events WHERE run_id = %s AND type IN ('node_split', 'blocks_applied') "
                 "AND payload ? 'repairs'", (run_id,), lambda rows: int(rows[0].total))


def llm_call_insert(values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The INSERT of one llm_calls row as (sql, params), e.g. for apply_store's write pipeline."""
    return _insert_llm_call_sql(tuple(values)), [Jsonb(v) if isinstance(v, dict | list) else v
                                                 for v in values.values()]


_LLM_CALL_COLUMNS = frozenset(c.name for c in llm_calls.c)


@functools.lru_cache(maxsize=16)
def _insert_llm_call_sql(columns: tuple[str, ...]) -> str:
    if not set(columns) <= _LLM_CALL_COLUMNS:
        raise ValueError(f"not columns of llm_calls: {sorted(set(columns) - _LLM_CALL_COLUMNS)}")
    return f"INSERT INTO llm_calls ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"


async def release_lease(conn: AsyncConnection, run_id: uuid.UUID, fence: Fence) -> None:
    """Gives the lease up early (graceful shutdown) so another executor can take the run at once."""
    await conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id, runs.c.lease_owner == fence.owner, runs.c.lease_token == fence.token)
        .values(lease_owner=None, lease_expires=None)
    )


async def expire_own_leases(conn: AsyncConnection, owner: str) -> int:
    """Ends the leases `owner` still holds: left by a dead process of the same id, they are ours to
    take back now rather than after they expire. The runs they fenced; how many."""
    result = await conn.execute(
        sa.update(runs).where(runs.c.lease_owner == owner, runs.c.lease_expires > sa.func.now())
        .values(lease_expires=sa.func.now()).returning(runs.c.id))
    return len(result.all())
