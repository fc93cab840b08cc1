"""Deterministic Apply, the writing half: the only code that writes artifacts, nodes and blocks.

A planned Mutation is written in the caller's transaction together with its
change_events (block provenance) and the run events it causes. Locks are always
taken in the order runs -> artifacts -> nodes -> blocks, so concurrent writers
(a run's executor and a person's EditBlock) cannot deadlock.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from lace_engine.domain import Block, EventType, NewEvent, RunEvent, RunState
from lace_engine.errors import Aborted, NotFound
from lace_engine.pipeline.apply import PATCH_COLUMNS, Mutation, Precondition
from lace_engine.storage import event_log
from lace_engine.storage.database import Tx, WriteTx, batched, ids_array, ids_text
from lace_engine.storage.event_log import Fence

_ACTIVE_FOR_APPLY = frozenset({RunState.RUNNING, RunState.PAUSING})
_VERSIONED_EVENTS = frozenset({EventType.NODE_SPLIT, EventType.BLOCKS_APPLIED, EventType.OUTLINE_EDITED,
                               EventType.NODES_MARKED_STALE})


@dataclass(frozen=True, slots=True)
class Written:
    artifact_version: int
    events: list[RunEvent]
    head_seq: int


def block_json(block: Block) -> dict[str, Any]:
    """A block as stored in change_events.before/after: readable with plain psql."""
    return {
        "id": str(block.id), "node_id": str(block.node_id), "ordinal": block.ordinal,
        "content": block.content.to_json(), "origin": block.origin.value, "pinned": block.pinned,
        "version": block.version,
    }


async def write_mutation(
    tx: WriteTx,
    mutation: Mutation,
    *,
    run_id: uuid.UUID | None = None,
    fence: Fence | None = None,
    events_before: Sequence[NewEvent] = (),
    events_after: Sequence[NewEvent] = (),
    run_increments: Mapping[str, int] | None = None,
    statements: Sequence[tuple[str, Sequence[Any]]] = (),
    allowed_states: frozenset[RunState] = _ACTIVE_FOR_APPLY,
) -> Written:
    """Writes `mutation` and its events in `tx` (which publishes them once committed); raises Aborted on a
    stale plan.

    Two pipelined round trips on the transaction's psycopg connection: first the locks, in order
    (the run row with its fence, head and counters; the artifact's version; each precondition's
    node and blocks) and what the checks need; then, once the checks passed, every write, and the
    caller's own `statements` (sql, params) with them. With `run_id`, the run must be in one of
    `allowed_states` (an executor's: RUNNING or PAUSING; a person's outline edit: AWAITING_REVIEW).
    """
    events = [*events_before, *mutation.events, *events_after]
    driver = await tx.driver()
    run_cur: psycopg.AsyncCursor[Any] | None = None
    checks: list[tuple[Precondition, psycopg.AsyncCursor[Any], psycopg.AsyncCursor[Any]]] = []
    async with batched(driver):
        if run_id is not None:
            increments = {
                "nodes_planned": mutation.nodes_planned,
                "nodes_written": mutation.nodes_written,
                "words_written": mutation.words_written,
                **(run_increments or {}),
            }
            # The run's lock and fence first; its head moves by the events written below.
            sql, params = event_log.reserve(run_id, len(events), fence=fence, allowed_states=allowed_states,
                                            increments=increments)
            run_cur = driver.cursor()
            await run_cur.execute(sql, params)
        art_cur = await _bump_artifact(driver, mutation)
        for pre in mutation.preconditions:
            node_cur, block_cur = driver.cursor(), driver.cursor()
            await node_cur.execute(_LOCK_NODE, (pre.node_id,))
            await block_cur.execute(_LOCK_BLOCKS, (pre.node_id,))
            checks.append((pre, node_cur, block_cur))

    head = 0
    if run_cur is not None:
        assert run_id is not None
        row = await run_cur.fetchone()
        if row is None:
            raise event_log.not_appended(run_id, fence, allowed_states)
        head = int(row[0])
    if art_cur is None:
        assert mutation.artifact_insert is not None
        version = mutation.artifact_insert.version
    else:
        art = await art_cur.fetchone()
        if art is None:
            raise NotFound(f"artifact {mutation.artifact_id} not found", reason="ARTIFACT_NOT_FOUND")
        version = int(art[0])
    for pre, node_cur, block_cur in checks:
        await _check_precondition(pre, node_cur, block_cur)

    written: list[RunEvent] = []
    async with batched(driver):
        await _write_nodes(driver, mutation)
        await _write_blocks(driver, mutation, version)
        await _record_versions(driver, mutation, version)
        if run_id is not None and events:
            now = datetime.now(UTC)
            first = head - len(events) + 1
            written = [
                RunEvent(run_id=run_id, seq=first + i, type=e.type, create_time=now,
                         payload={**e.payload, "artifact_version": version} if e.type in _VERSIONED_EVENTS
                         else e.payload)
                for i, e in enumerate(events)
            ]
            await driver.execute(_INSERT_EVENTS, (run_id, now, _rows([
                {"seq": e.seq, "type": e.type.value, "payload": e.payload} for e in written])))
        for statement, values in statements:
            await driver.execute(statement, values)
    tx.emitted(written)
    return Written(artifact_version=version, events=written, head_seq=head)


async def delete_artifact(tx: Tx, artifact_id: uuid.UUID) -> None:
    """Removes the artifact with everything it owns (nodes, blocks, change events, runs with their events
    and calls, sources), by the schema's cascades, in the caller's transaction."""
    driver = await tx.driver()
    await driver.execute("DELETE FROM artifacts WHERE id = %s", (artifact_id,))


_INSERT_ARTIFACT = ("INSERT INTO artifacts (id, title, brief, style, target_words, root_node_id, version, word_count, "
                    "create_time, update_time, forked_from_id, forked_from_version, tenant_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
_BUMP_ARTIFACT = ("UPDATE artifacts SET version = version + 1, word_count = word_count + %s, update_time = now(), "
                  "target_words = coalesce(%s, target_words) WHERE id = %s RETURNING version")
_UPDATE_ARTIFACT = ("UPDATE artifacts SET version = version + 1, word_count = word_count + %s, update_time = now(), "
                    "target_words = coalesce(%s, target_words), title = coalesce(%s, title), "
                    "brief = coalesce(%s, brief), style = coalesce(%s, style) WHERE id = %s RETURNING version")
_LOCK_NODE = "SELECT state FROM nodes WHERE id = %s FOR UPDATE"
_LOCK_BLOCKS = "SELECT id, version, pinned FROM blocks WHERE node_id = %s FOR UPDATE"
# Rows go in as one jsonb document a statement (jsonb_populate_recordset, in the document's order),
# not one executemany row each: in pipeline mode psycopg sends every statement and every row in a
# packet of its own, and under load each packet cost more than the document's JSON.
_INSERT_NODES = ("INSERT INTO nodes (id, artifact_id, parent_id, ordinal, depth, title, intent, target_words, state, "
                 "summary, word_count, last_run_id) "
                 "SELECT id, artifact_id, parent_id, ordinal, depth, title, intent, target_words, state, summary, "
                 "word_count, last_run_id FROM jsonb_populate_recordset(NULL::nodes, %s) WITH ORDINALITY "
                 "ORDER BY ordinality")
_DELETE_BLOCKS = f"DELETE FROM blocks WHERE id = ANY({ids_array()})"
_UPSERT_BLOCKS = ("INSERT INTO blocks (id, artifact_id, node_id, ordinal, kind, content, origin, pinned, version) "
                  "SELECT id, artifact_id, node_id, ordinal, kind, content, origin, pinned, version "
                  "FROM jsonb_populate_recordset(NULL::blocks, %s) WITH ORDINALITY ORDER BY ordinality "
                  "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
                  "content = excluded.content, origin = excluded.origin, pinned = excluded.pinned, "
                  "version = excluded.version, ordinal = excluded.ordinal, update_time = now()")
_INSERT_CHANGES = ("INSERT INTO change_events (artifact_id, block_id, node_id, operation, origin, run_id, llm_call_id, "
                   "model, before, after, artifact_version) "
                   "SELECT %s, block_id, node_id, operation, %s, %s, %s, %s, before, after, %s "
                   "FROM jsonb_populate_recordset(NULL::change_events, %s) WITH ORDINALITY ORDER BY ordinality")
_INSERT_EVENTS = ("INSERT INTO run_events (run_id, seq, type, payload, create_time) SELECT %s, seq, type, payload, %s "
                  "FROM jsonb_populate_recordset(NULL::run_events, %s)")


def _rows(rows: list[dict[str, Any]]) -> Jsonb:
    """`rows` as one jsonb parameter, by orjson on any connection (it writes uuids and datetimes)."""
    return Jsonb(rows, dumps=orjson.dumps)


async def _bump_artifact(driver: psycopg.AsyncConnection[Any], m: Mutation) -> psycopg.AsyncCursor[Any] | None:
    """Inserts the artifact (None: its version is the planned one) or bumps its version (read it from the cursor)."""
    if m.artifact_insert is not None:
        a = m.artifact_insert
        await driver.execute(_INSERT_ARTIFACT, (a.id, a.title, a.brief, a.style, a.target_words, a.root_node_id,
                                                a.version, a.word_count, a.create_time, a.update_time,
                                                a.forked_from_id, a.forked_from_version, a.tenant_id))
        return None
    cur = driver.cursor()
    if m.artifact_title is None and m.artifact_brief is None and m.artifact_style is None:
        await cur.execute(_BUMP_ARTIFACT, (m.word_delta, m.artifact_target_words, m.artifact_id))
    else:
        await cur.execute(_UPDATE_ARTIFACT, (m.word_delta, m.artifact_target_words, m.artifact_title,
                                             m.artifact_brief, m.artifact_style, m.artifact_id))
    return cur


async def _check_precondition(pre: Precondition, node_cur: psycopg.AsyncCursor[Any],
                              block_cur: psycopg.AsyncCursor[Any]) -> None:
    row = await node_cur.fetchone()
    if row is None:
        raise Aborted(f"node {pre.node_id} no longer exists", reason="STALE_PLAN")
    if row[0] != pre.node_state.value:
        raise Aborted(f"node {pre.node_id} is {row[0]}, the plan expected {pre.node_state.value}",
                      reason="STALE_PLAN")
    current = {r[0]: (int(r[1]), bool(r[2])) for r in await block_cur.fetchall()}
    for block_id, version in pre.block_versions:
        if current.get(block_id, (None, False))[0] != version:
            raise Aborted(f"block {block_id} changed since the plan was made", reason="STALE_PLAN")
    if pre.forbid_pinned and any(pinned for _, pinned in current.values()):
        raise Aborted(f"node {pre.node_id} has human-pinned blocks", reason="NODE_PINNED")


@functools.lru_cache(maxsize=256)
def _patch_sql(columns: tuple[str, ...]) -> str:
    sets = ["state = %s", "update_time = now()", *(f"{c} = %s" for c in columns)]
    return f"UPDATE nodes SET {', '.join(sets)} WHERE id = %s"


_DELETE_NODES = f"DELETE FROM nodes WHERE id = ANY({ids_array()})"
# (parent_id, ordinal) is unique at every statement: a renumbered node first steps aside to a
# negative ordinal of its own, then takes its place.
_ASIDE_ORDINAL = "UPDATE nodes SET ordinal = %s WHERE id = %s"


async def _write_nodes(driver: psycopg.AsyncConnection[Any], m: Mutation) -> None:
    if m.node_deletes:
        # Children before parents would not matter: the parent's delete cascades to its subtree.
        await driver.execute(_DELETE_NODES, (ids_text(m.node_deletes),))
    renumbered = [p for p in m.node_patches if p.ordinal is not None]
    for i, p in enumerate(renumbered):
        await driver.execute(_ASIDE_ORDINAL, (-1 - i, p.node_id))
    for p in m.node_patches:
        columns = tuple(c for c in PATCH_COLUMNS if getattr(p, c) is not None)
        await driver.execute(_patch_sql(columns), (p.state.value, *(getattr(p, c) for c in columns), p.node_id))
    if m.node_inserts:
        await driver.execute(_INSERT_NODES, (_rows([
            {"id": n.id, "artifact_id": n.artifact_id, "parent_id": n.parent_id, "ordinal": n.ordinal,
             "depth": n.depth, "title": n.title, "intent": n.intent, "target_words": n.target_words,
             "state": n.state.value, "summary": n.summary, "word_count": n.word_count, "last_run_id": n.last_run_id}
            for n in m.node_inserts]),))


# The history GetArtifact/CompileArtifact at a version read (blocks: change_events): each node this
# mutation wrote, as it now is, and the artifact's fields when they changed.
_RECORD_NODES = ("INSERT INTO node_versions (artifact_id, node_id, artifact_version, node) "
                 f"SELECT artifact_id, id, %s, to_jsonb(nodes) FROM nodes WHERE id = ANY({ids_array()})")
_RECORD_DELETED_NODES = ("INSERT INTO node_versions (artifact_id, node_id, artifact_version, node) "
                         f"SELECT %s, deleted, %s, NULL FROM unnest({ids_array()}) AS deleted")
_RECORD_ARTIFACT = ("INSERT INTO artifact_versions (artifact_id, artifact_version, title, brief, style, target_words) "
                    "SELECT id, version, title, brief, style, target_words FROM artifacts WHERE id = %s")


async def _record_versions(driver: psycopg.AsyncConnection[Any], m: Mutation, version: int) -> None:
    written = [n.id for n in m.node_inserts] + [p.node_id for p in m.node_patches]
    if written:
        await driver.execute(_RECORD_NODES, (version, ids_text(written)))
    if m.node_deletes:
        await driver.execute(_RECORD_DELETED_NODES, (m.artifact_id, version, ids_text(m.node_deletes)))
    # A version that recorded nothing else records the artifact, so every version has a row (its time).
    if m.artifact_insert is not None or not (written or m.node_deletes) or any(v is not None for v in (
            m.artifact_target_words, m.artifact_title, m.artifact_brief, m.artifact_style)):
        await driver.execute(_RECORD_ARTIFACT, (m.artifact_id,))


async def _write_blocks(driver: psycopg.AsyncConnection[Any], m: Mutation, version: int) -> None:
    if not m.block_changes:
        return
    deletes = [c.before.id for c in m.block_changes if c.after is None and c.before is not None]
    if deletes:
        await driver.execute(_DELETE_BLOCKS, (ids_text(deletes),))
    upserts = [c.after for c in m.block_changes if c.after is not None]
    if upserts:
        await driver.execute(_UPSERT_BLOCKS, (_rows([
            {"id": b.id, "artifact_id": b.artifact_id, "node_id": b.node_id, "ordinal": b.ordinal,
             "kind": b.content.kind.value, "content": b.content.to_json(), "origin": b.origin.value,
             "pinned": b.pinned, "version": b.version}
            for b in upserts]),))
    prov = m.provenance
    changes = []
    for c in m.block_changes:
        block = c.after or c.before
        assert block is not None
        changes.append({"block_id": block.id, "node_id": block.node_id, "operation": c.operation.value,
                        "before": block_json(c.before) if c.before else None,
                        "after": block_json(c.after) if c.after else None})
    await driver.execute(_INSERT_CHANGES, (m.artifact_id, prov.origin.value, prov.run_id, prov.llm_call_id, prov.model,
                                           version, _rows(changes)))
