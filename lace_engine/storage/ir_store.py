"""Reads of the IR (artifacts, nodes, blocks) and of block provenance."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncConnection

from lace_engine.domain import (
    Artifact,
    Block,
    BlockContent,
    ChangeEvent,
    ChangeOp,
    Node,
    NodeState,
    Origin,
    RunState,
)
from lace_engine.errors import FailedPrecondition, NotFound, OutOfRange
from lace_engine.list_query import ListQuery
from lace_engine.pipeline.staleness import Reference
from lace_engine.storage import list_sql, tenant_scope
from lace_engine.storage.database import Query, fetch, fetch_rows
from lace_engine.storage.schema import RUN_IS_ACTIVE, artifacts, blocks, change_events, nodes, runs

_ACTIVE = [s.value for s in RunState if not s.terminal]


def _active_run_subquery() -> sa.ScalarSelect[Any]:
    return (
        sa.select(runs.c.id)
        .where(runs.c.artifact_id == artifacts.c.id, runs.c.state.in_(_ACTIVE))
        .limit(1)
        .scalar_subquery()
    )


def row_to_artifact(r: Any) -> Artifact:
    return Artifact(
        id=r.id, title=r.title, brief=r.brief, style=r.style, target_words=r.target_words,
        root_node_id=r.root_node_id, version=int(r.version), word_count=r.word_count,
        active_run_id=r.active_run_id, create_time=r.create_time, update_time=r.update_time,
        forked_from_id=r.forked_from_id, forked_from_version=int(r.forked_from_version), tenant_id=r.tenant_id,
    )


def row_to_node(r: Any) -> Node:
    return Node(
        id=r.id, artifact_id=r.artifact_id, parent_id=r.parent_id, ordinal=r.ordinal, depth=r.depth,
        title=r.title, intent=r.intent, target_words=r.target_words, state=NodeState(r.state),
        summary=r.summary, word_count=r.word_count, last_run_id=r.last_run_id,
        create_time=r.create_time, update_time=r.update_time, stale_reason=r.stale_reason,
    )


def row_to_block(r: Any) -> Block:
    return Block(
        id=r.id, artifact_id=r.artifact_id, node_id=r.node_id, ordinal=r.ordinal,
        content=BlockContent.from_json(r.content), origin=Origin(r.origin), pinned=r.pinned,
        version=int(r.version), create_time=r.create_time, update_time=r.update_time,
    )


# The active run by the predicate of the index that allows one per artifact (schema.RUN_IS_ACTIVE).
_ARTIFACT = (f"SELECT a.*, (SELECT r.id FROM runs r WHERE r.artifact_id = a.id AND r.{RUN_IS_ACTIVE} LIMIT 1) "
             "AS active_run_id FROM artifacts a WHERE a.id = %s")


def artifact_query(artifact_id: uuid.UUID, *, for_update: bool = False, tenant: str | None = None) -> Query[Artifact]:
    """The artifact, if `tenant` owns it (NotFound otherwise, as for a missing one); `for_update`
    locks its row (StartRun and outline edits serialize on it)."""
    sql = _ARTIFACT
    params: list[Any] = [artifact_id]
    if tenant is not None:
        sql, params = sql + " AND a.tenant_id = %s", [*params, tenant]

    def convert(rows: list[Any]) -> Artifact:
        if not rows:
            raise NotFound(f"artifact {artifact_id} not found", reason="ARTIFACT_NOT_FOUND",
                           metadata={"artifact_id": str(artifact_id)})
        return row_to_artifact(rows[0])

    return Query(sql + " FOR UPDATE OF a" if for_update else sql, params, convert)


async def get_artifact(conn: AsyncConnection, artifact_id: uuid.UUID, *, for_update: bool = False,
                       tenant: str | None = None) -> Artifact:
    """`artifact_query`'s artifact."""
    return await fetch(conn, artifact_query(artifact_id, for_update=for_update, tenant=tenant))


async def list_artifacts(conn: AsyncConnection, query: ListQuery, *, limit: int,
                         after: tuple[str, str] | None, tenant: str) -> list[Artifact]:
    """A page of the tenant's artifacts in the query's order; `after` is the (order field, id) of the
    previous page's last artifact."""
    stmt = sa.select(artifacts, _active_run_subquery().label("active_run_id")).where(artifacts.c.tenant_id == tenant)
    columns = {"create_time": artifacts.c.create_time, "update_time": artifacts.c.update_time}
    stmt = list_sql.apply(stmt, query, columns, artifacts.c.id, after, limit)
    return [row_to_artifact(r) for r in await conn.execute(stmt)]


def _nodes(rows: list[Any]) -> list[Node]:
    return [row_to_node(r) for r in rows]


def nodes_query(artifact_id: uuid.UUID) -> Query[list[Node]]:
    """The artifact's nodes, parents before children."""
    return Query("SELECT * FROM nodes WHERE artifact_id = %s ORDER BY depth, ordinal", (artifact_id,), _nodes)


async def get_nodes(conn: AsyncConnection, artifact_id: uuid.UUID) -> list[Node]:
    return await fetch(conn, nodes_query(artifact_id))


async def get_node(conn: AsyncConnection, node_id: uuid.UUID, *, tenant: str | None = None) -> Node:
    row = (await conn.execute(sa.select(nodes).where(nodes.c.id == node_id,
                                                     tenant_scope.owned_by(nodes.c.artifact_id, tenant)))).first()
    if row is None:
        raise NotFound(f"node {node_id} not found", reason="NODE_NOT_FOUND", metadata={"node_id": str(node_id)})
    return row_to_node(row)


def _blocks_by_node(rows: list[Any]) -> dict[uuid.UUID, list[Block]]:
    out: dict[uuid.UUID, list[Block]] = defaultdict(list)
    for r in rows:
        out[r.node_id].append(row_to_block(r))
    return dict(out)


def blocks_by_node_query(artifact_id: uuid.UUID) -> Query[dict[uuid.UUID, list[Block]]]:
    """The artifact's blocks by node, each node's in order."""
    return Query("SELECT * FROM blocks WHERE artifact_id = %s ORDER BY node_id, ordinal", (artifact_id,),
                 _blocks_by_node)


async def get_blocks_by_node(conn: AsyncConnection, artifact_id: uuid.UUID) -> dict[uuid.UUID, list[Block]]:
    return await fetch(conn, blocks_by_node_query(artifact_id))


async def pinned_nodes(conn: AsyncConnection, artifact_id: uuid.UUID) -> frozenset[uuid.UUID]:
    """The artifact's nodes that hold a pinned (human-edited) block."""
    result = await conn.execute(
        sa.select(blocks.c.node_id).where(blocks.c.artifact_id == artifact_id, blocks.c.pinned).distinct())
    return frozenset(r.node_id for r in result)


async def get_node_blocks(conn: AsyncConnection, node_id: uuid.UUID) -> list[Block]:
    rows = await fetch_rows(conn, "SELECT * FROM blocks WHERE node_id = %s ORDER BY ordinal", (node_id,))
    return [row_to_block(r) for r in rows]


async def get_block(conn: AsyncConnection, block_id: uuid.UUID, *, tenant: str | None = None) -> Block:
    row = (await conn.execute(sa.select(blocks).where(blocks.c.id == block_id,
                                                      tenant_scope.owned_by(blocks.c.artifact_id, tenant)))).first()
    if row is None:
        raise NotFound(f"block {block_id} not found", reason="BLOCK_NOT_FOUND",
                       metadata={"block_id": str(block_id)})
    return row_to_block(row)


async def block_exists_in_history(conn: AsyncConnection, block_id: uuid.UUID, *, tenant: str | None = None) -> bool:
    row = (await conn.execute(sa.select(change_events.c.id).where(
        change_events.c.block_id == block_id,
        tenant_scope.owned_by(change_events.c.artifact_id, tenant)).limit(1))).first()
    return row is not None


async def block_content_at(conn: AsyncConnection, block_id: uuid.UUID, version: int) -> dict[str, Any] | None:
    """The block's stored content (BlockContent JSON) at `version`: from the newest change that left it at
    that version (a block deleted and written again restarts at 1), None if no change did."""
    row = (await conn.execute(
        sa.select(change_events.c.after["content"])
        .where(change_events.c.block_id == block_id,
               change_events.c.after["version"].as_integer() == version)
        .order_by(change_events.c.id.desc()).limit(1)
    )).first()
    return None if row is None else dict(row[0])


async def list_block_changes(
    conn: AsyncConnection, block_id: uuid.UUID, *, limit: int, after_id: int, tenant: str | None = None
) -> list[ChangeEvent]:
    result = await conn.execute(
        sa.select(change_events)
        .where(change_events.c.block_id == block_id, change_events.c.id > after_id,
               tenant_scope.owned_by(change_events.c.artifact_id, tenant))
        .order_by(change_events.c.id)
        .limit(limit)
    )
    return [
        ChangeEvent(
            id=int(r.id), artifact_id=r.artifact_id, block_id=r.block_id, node_id=r.node_id,
            operation=ChangeOp(r.operation), origin=Origin(r.origin), run_id=r.run_id,
            llm_call_id=r.llm_call_id, model=r.model, before=r.before, after=r.after,
            artifact_version=int(r.artifact_version), create_time=r.create_time,
        )
        for r in result
    ]


async def providers_of(conn: AsyncConnection, artifact_id: uuid.UUID, upto: datetime) -> list[str]:
    """Distinct LLM providers of the runs that could have written this artifact as of `upto` (its
    update_time at the version compiled: runs created later cannot have), for compiled metadata."""
    result = await conn.execute(
        sa.select(runs.c.provider).distinct()
        .where(runs.c.artifact_id == artifact_id, runs.c.provider != "", runs.c.create_time <= upto)
        .order_by(runs.c.provider)
    )
    return [r.provider for r in result]


@dataclass(frozen=True, slots=True)
class IrAt:
    """An artifact's IR at one version, the current or an earlier one: the artifact, its nodes, its blocks by node."""

    artifact: Artifact
    nodes: list[Node]
    blocks: dict[uuid.UUID, list[Block]]


_FIELDS_AT = sa.text(
    "SELECT title, brief, style, target_words FROM artifact_versions "
    "WHERE artifact_id = :a AND artifact_version <= :v ORDER BY artifact_version DESC LIMIT 1")
_NODES_AT = sa.text(
    "SELECT node FROM (SELECT DISTINCT ON (node_id) node FROM node_versions "
    "WHERE artifact_id = :a AND artifact_version <= :v ORDER BY node_id, id DESC) newest WHERE node IS NOT NULL")
_BLOCKS_AT = sa.text(
    "SELECT after, create_time FROM (SELECT DISTINCT ON (block_id) after, create_time FROM change_events "
    "WHERE artifact_id = :a AND artifact_version <= :v ORDER BY block_id, id DESC) newest WHERE after IS NOT NULL")
# When version :v was made: the newest history row at or below it (every Apply writes one).
_TIME_AT = sa.text(
    "SELECT greatest((SELECT max(create_time) FROM node_versions WHERE artifact_id = :a AND artifact_version <= :v),"
    " (SELECT max(create_time) FROM artifact_versions WHERE artifact_id = :a AND artifact_version <= :v))")
_OLDEST_KEPT = sa.text("SELECT min(artifact_version) FROM artifact_versions WHERE artifact_id = :a")


def _node_from_json(d: dict[str, Any]) -> Node:
    def stamp(key: str) -> datetime | None:
        return datetime.fromisoformat(d[key]) if d.get(key) else None

    return Node(
        id=uuid.UUID(d["id"]), artifact_id=uuid.UUID(d["artifact_id"]),
        parent_id=uuid.UUID(d["parent_id"]) if d["parent_id"] else None, ordinal=d["ordinal"], depth=d["depth"],
        title=d["title"], intent=d["intent"], target_words=d["target_words"], state=NodeState(d["state"]),
        summary=d["summary"], word_count=d["word_count"],
        last_run_id=uuid.UUID(d["last_run_id"]) if d["last_run_id"] else None,
        create_time=stamp("create_time"), update_time=stamp("update_time"), stale_reason=d.get("stale_reason") or "")


async def ir_at(conn: AsyncConnection, artifact_id: uuid.UUID, version: int, *, tenant: str | None = None) -> IrAt:
    """The artifact as Apply left it at `version`, rebuilt from its history (nodes and artifact fields from
    node_versions and artifact_versions, blocks from change_events): OutOfRange past the current version,
    FailedPrecondition for a version older than the history kept."""
    current = await get_artifact(conn, artifact_id, tenant=tenant)
    if not 1 <= version <= current.version:
        raise OutOfRange(f"artifact {artifact_id} has versions 1 to {current.version}, not {version}",
                         reason="ARTIFACT_VERSION_OUT_OF_RANGE",
                         metadata={"artifact_id": str(artifact_id), "current_version": str(current.version)})
    params = {"a": artifact_id, "v": version}
    fields = (await conn.execute(_FIELDS_AT, params)).first()
    if fields is None:
        oldest = (await conn.execute(_OLDEST_KEPT, params)).scalar()
        raise FailedPrecondition(
            f"artifact {artifact_id} keeps its history from version {oldest} (when this server began keeping it); "
            f"version {version} is older", reason="VERSION_NOT_RETAINED",
            metadata={"artifact_id": str(artifact_id), "oldest_version": str(oldest)})
    nodes = [_node_from_json(r.node) for r in await conn.execute(_NODES_AT, params)]
    by_node: dict[uuid.UUID, list[Block]] = defaultdict(list)
    for r in await conn.execute(_BLOCKS_AT, params):
        b = r.after
        block = Block(id=uuid.UUID(b["id"]), artifact_id=artifact_id, node_id=uuid.UUID(b["node_id"]),
                      ordinal=b["ordinal"], content=BlockContent.from_json(b["content"]), origin=Origin(b["origin"]),
                      pinned=b["pinned"], version=b["version"], update_time=r.create_time)
        by_node[block.node_id].append(block)
    for blocks_of_node in by_node.values():
        blocks_of_node.sort(key=lambda b: b.ordinal)
    words = sum(b.content.words() for bs in by_node.values() for b in bs)
    when = (await conn.execute(_TIME_AT, params)).scalar() or current.create_time
    artifact = replace(current, title=fields.title, brief=fields.brief, style=fields.style,
                       target_words=fields.target_words, version=version, word_count=words, active_run_id=None,
                       update_time=when)
    return IrAt(artifact, nodes, dict(by_node))


async def ir(conn: AsyncConnection, artifact_id: uuid.UUID, *, version: int = 0, tenant: str | None = None,
             lock: bool = False) -> IrAt:
    """The artifact's IR now (its row locked with `lock`), or as it was at `version` (`ir_at`)."""
    if version:
        return await ir_at(conn, artifact_id, version, tenant=tenant)
    artifact = await get_artifact(conn, artifact_id, for_update=lock, tenant=tenant)
    return IrAt(artifact, await get_nodes(conn, artifact_id), await get_blocks_by_node(conn, artifact_id))


# Stale sections (pipeline/staleness.py) -------------------------------------------------------

# Each node's latest applied write call (its manifest is what the node's text was written from) in
# an artifact; through runs, since llm_calls is indexed by run. The rows node_dependencies is made of.
_LATEST_WRITES = """(
    SELECT DISTINCT ON (l.node_id) l.node_id, l.context_manifest FROM llm_calls l
    JOIN runs r ON r.id = l.run_id
    WHERE r.artifact_id = :artifact AND l.step = 'write' AND l.outcome = 'applied'
    ORDER BY l.node_id, l.create_time DESC, l.id DESC
) c"""

# The fresh written nodes of an artifact whose latest applied write prompt had one of the passages.
_PASSAGE_READERS = sa.text(f"""
SELECT c.node_id FROM {_LATEST_WRITES}
JOIN nodes n ON n.id = c.node_id AND n.state = 'written' AND n.stale_reason = ''
WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(c.context_manifest) e WHERE e->>'passage_id' = ANY(:passages))
ORDER BY c.node_id
""").bindparams(sa.bindparam("passages", type_=sa.ARRAY(sa.Text)))


async def passage_readers(conn: AsyncConnection, artifact_id: uuid.UUID,
                          passage_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The fresh written sections whose stored prompt (the latest applied write's manifest) had one of
    the passages."""
    rows = await conn.execute(_PASSAGE_READERS, {"artifact": artifact_id, "passages": [str(p) for p in passage_ids]})
    return [r.node_id for r in rows]


_DEPENDANTS = (
    "SELECT d.node_id, d.depends_on, d.kind, d.content_hash, n.stale_reason FROM node_dependencies d "
    "JOIN nodes n ON n.id = d.node_id WHERE d.depends_on = ANY(%s) AND n.state = %s")


async def dependants(driver: psycopg.AsyncConnection[Any], node_ids: Sequence[uuid.UUID]) -> list[Reference]:
    """The references of written nodes' latest write calls to any of `node_ids`, with each
    dependant's stale_reason as it is now (read in the caller's transaction, before its change;
    pass its `driver()`: Apply's pipelined transactions have no SQLAlchemy connection)."""
    if not node_ids:
        return []
    cur = await driver.execute(_DEPENDANTS, (list(node_ids), NodeState.WRITTEN.value))
    return [Reference(r[0], r[1], r[2], r[3], r[4]) for r in await cur.fetchall()]


# The covered-heading references (staleness.FROM_MANIFESTS) to some nodes, from the latest applied
# write manifest of each written node of the artifact: what node_dependencies would hold for them.
_HEADING_READERS = sa.text(f"""
SELECT c.node_id, (e->>'node_id')::uuid AS depends_on, coalesce(e->>'hash', '') AS content_hash, n.stale_reason
FROM {_LATEST_WRITES}
JOIN nodes n ON n.id = c.node_id AND n.state = 'written'
CROSS JOIN LATERAL jsonb_array_elements(c.context_manifest) e
WHERE e->>'kind' = 'covered_heading' AND e->>'node_id' = ANY(:ids)
""").bindparams(sa.bindparam("ids", type_=sa.ARRAY(sa.Text)))


async def heading_readers(conn: AsyncConnection, artifact_id: uuid.UUID,
                          node_ids: Sequence[uuid.UUID]) -> list[Reference]:
    """The written sections whose stored prompt listed any of `node_ids` among the headings covered
    elsewhere, as References (an outline edit's extra lookup; see staleness.FROM_MANIFESTS)."""
    if not node_ids:
        return []
    rows = await conn.execute(_HEADING_READERS, {"artifact": artifact_id, "ids": [str(n) for n in node_ids]})
    return [Reference(r.node_id, r.depends_on, "covered_heading", r.content_hash, r.stale_reason) for r in rows]


_DELETE_DEPENDENCIES = "DELETE FROM node_dependencies WHERE node_id = %s"
# The rows as one jsonb document, not three arrays: psycopg escapes each element of a text[] parameter
# with a regex, and this runs with every section written.
_INSERT_DEPENDENCIES = ("INSERT INTO node_dependencies (node_id, depends_on, kind, content_hash, llm_call_id) "
                        "SELECT %s, t.depends_on, t.kind, t.content_hash, %s "
                        "FROM jsonb_to_recordset(%s) AS t(depends_on uuid, kind text, content_hash text)")


def dependency_statements(node_id: uuid.UUID, llm_call_id: uuid.UUID,
                          rows: Sequence[tuple[uuid.UUID, str, str]]) -> list[tuple[str, list[Any]]]:
    """(sql, params) replacing `node_id`'s dependencies by those of the write call that wrote it
    (`rows` of staleness.dependencies), for apply_store's write pipeline."""
    return [(_DELETE_DEPENDENCIES, [node_id]),
            (_INSERT_DEPENDENCIES, [node_id, llm_call_id, Jsonb([
                {"depends_on": str(depends_on), "kind": kind, "content_hash": content_hash}
                for depends_on, kind, content_hash in rows])])]

