"""Deterministic Apply, the writing half: the only code that writes artifacts, nodes and blocks.

A planned Mutation is written in the caller's transaction together with its
change_events (block provenance) and the run events it causes. Locks are always
taken in the order runs -> artifacts -> nodes -> blocks, so concurrent writers
(a run's executor and a person's EditBlock) cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from lace_engine import event_log
from lace_engine.apply import Mutation
from lace_engine.errors import Aborted, NotFound
from lace_engine.event_log import Appended, Fence
from lace_engine.model import Block, EventType, NewEvent, RunEvent, RunState
from lace_engine.schema import artifacts, blocks, change_events, nodes

_ACTIVE_FOR_APPLY = frozenset({RunState.RUNNING, RunState.PAUSING})
_VERSIONED_EVENTS = frozenset({EventType.NODE_SPLIT, EventType.BLOCKS_APPLIED})


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
    conn: AsyncConnection,
    mutation: Mutation,
    *,
    run_id: uuid.UUID | None = None,
    fence: Fence | None = None,
    events_before: Sequence[NewEvent] = (),
    events_after: Sequence[NewEvent] = (),
    run_increments: Mapping[str, int] | None = None,
) -> Written:
    """Writes `mutation` and its events in the caller's transaction; raises Aborted on a stale plan."""
    appended: Appended | None = None
    events = [*events_before, *mutation.events, *events_after]
    if run_id is not None:
        increments = {
            "nodes_planned": mutation.nodes_planned,
            "nodes_written": mutation.nodes_written,
            "words_written": mutation.words_written,
            **(run_increments or {}),
        }
        # Events are appended after the version is known; first take the run's lock and the fence.
        appended = await event_log.append(conn, run_id, [], fence=fence, allowed_states=_ACTIVE_FOR_APPLY,
                                          increments=increments)

    version = await _bump_artifact(conn, mutation)
    await _check_preconditions(conn, mutation)
    await _write_nodes(conn, mutation)
    await _write_blocks(conn, mutation, version)

    written: list[RunEvent] = []
    head = appended.head_seq if appended else 0
    if run_id is not None and events:
        stamped = [
            NewEvent(e.type, {**e.payload, "artifact_version": version}) if e.type in _VERSIONED_EVENTS else e
            for e in events
        ]
        result = await event_log.append(conn, run_id, stamped)
        written, head = result.events, result.head_seq
    return Written(artifact_version=version, events=written, head_seq=head)


async def _bump_artifact(conn: AsyncConnection, m: Mutation) -> int:
    if m.artifact_insert is not None:
        a = m.artifact_insert
        await conn.execute(sa.insert(artifacts).values(
            id=a.id, title=a.title, brief=a.brief, style=a.style, target_words=a.target_words,
            root_node_id=a.root_node_id, version=a.version, word_count=0,
            create_time=a.create_time, update_time=a.update_time,
        ))
        return a.version
    row = (await conn.execute(
        sa.update(artifacts).where(artifacts.c.id == m.artifact_id)
        .values(version=artifacts.c.version + 1, word_count=artifacts.c.word_count + m.word_delta,
                update_time=sa.func.now())
        .returning(artifacts.c.version)
    )).first()
    if row is None:
        raise NotFound(f"artifact {m.artifact_id} not found", reason="ARTIFACT_NOT_FOUND")
    return int(row.version)


async def _check_preconditions(conn: AsyncConnection, m: Mutation) -> None:
    for pre in m.preconditions:
        row = (await conn.execute(
            sa.select(nodes.c.state).where(nodes.c.id == pre.node_id).with_for_update()
        )).first()
        if row is None:
            raise Aborted(f"node {pre.node_id} no longer exists", reason="STALE_PLAN")
        if row.state != pre.node_state.value:
            raise Aborted(f"node {pre.node_id} is {row.state}, the plan expected {pre.node_state.value}",
                          reason="STALE_PLAN")
        current = {
            r.id: (int(r.version), bool(r.pinned))
            for r in await conn.execute(
                sa.select(blocks.c.id, blocks.c.version, blocks.c.pinned)
                .where(blocks.c.node_id == pre.node_id).with_for_update()
            )
        }
        for block_id, version in pre.block_versions:
            if current.get(block_id, (None, False))[0] != version:
                raise Aborted(f"block {block_id} changed since the plan was made", reason="STALE_PLAN")
        if pre.forbid_pinned and any(pinned for _, pinned in current.values()):
            raise Aborted(f"node {pre.node_id} has human-pinned blocks", reason="NODE_PINNED")


async def _write_nodes(conn: AsyncConnection, m: Mutation) -> None:
    if m.node_inserts:
        await conn.execute(sa.insert(nodes), [
            {"id": n.id, "artifact_id": n.artifact_id, "parent_id": n.parent_id, "ordinal": n.ordinal,
             "depth": n.depth, "title": n.title, "intent": n.intent, "target_words": n.target_words,
             "state": n.state.value, "summary": n.summary, "word_count": n.word_count,
             "last_run_id": n.last_run_id}
            for n in m.node_inserts
        ])
    for p in m.node_patches:
        values: dict[str, Any] = {"state": p.state.value, "update_time": sa.func.now()}
        if p.summary is not None:
            values["summary"] = p.summary
        if p.word_count is not None:
            values["word_count"] = p.word_count
        if p.last_run_id is not None:
            values["last_run_id"] = p.last_run_id
        await conn.execute(sa.update(nodes).where(nodes.c.id == p.node_id).values(values))


async def _write_blocks(conn: AsyncConnection, m: Mutation, version: int) -> None:
    if not m.block_changes:
        return
    deletes = [c.before.id for c in m.block_changes if c.after is None and c.before is not None]
    if deletes:
        await conn.execute(sa.delete(blocks).where(blocks.c.id.in_(deletes)))
    upserts = [c.after for c in m.block_changes if c.after is not None]
    if upserts:
        stmt = pg_insert(blocks)
        stmt = stmt.on_conflict_do_update(
            index_elements=[blocks.c.id],
            set_={"kind": stmt.excluded.kind, "content": stmt.excluded.content, "origin": stmt.excluded.origin,
                  "pinned": stmt.excluded.pinned, "version": stmt.excluded.version,
                  "ordinal": stmt.excluded.ordinal, "update_time": sa.func.now()},
        )
        await conn.execute(stmt, [
            {"id": b.id, "artifact_id": b.artifact_id, "node_id": b.node_id, "ordinal": b.ordinal,
             "kind": b.content.kind.value, "content": b.content.to_json(), "origin": b.origin.value,
             "pinned": b.pinned, "version": b.version}
            for b in upserts
        ])
    prov = m.provenance
    await conn.execute(sa.insert(change_events), [
        {"artifact_id": m.artifact_id,
         "block_id": (c.after or c.before).id,  # type: ignore[union-attr]
         "node_id": (c.after or c.before).node_id,  # type: ignore[union-attr]
         "operation": c.operation.value, "origin": prov.origin.value, "run_id": prov.run_id,
         "llm_call_id": prov.llm_call_id, "model": prov.model,
         "before": block_json(c.before) if c.before else None,
         "after": block_json(c.after) if c.after else None,
         "artifact_version": version}
        for c in m.block_changes
    ])
