"""The engine's public face: every operation the API offers, as plain async methods on plain data."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from lace_engine import list_query, tracing
from lace_engine.cluster import ClusterServices
from lace_engine.config import Settings
from lace_engine.domain import (
    Artifact,
    Block,
    BlockContent,
    ChangeEvent,
    EventType,
    Node,
    Passage,
    Run,
    RunEvent,
    RunOptions,
    RunState,
)
from lace_engine.errors import CompiledTooLarge, FailedPrecondition, InvalidArgument, NotFound
from lace_engine.events.hub import EventHub
from lace_engine.events.pg_notify import PgNotifyListener
from lace_engine.events.stream_run import StreamBatch, stream_run
from lace_engine.export.formats import FORMATS as EXPORT_FORMATS
from lace_engine.export.formats import file_name
from lace_engine.export.pandoc import Exporter, ExportLimits
from lace_engine.ids import new_id
from lace_engine.llm.base import LLMProvider
from lace_engine.llm.content_style import default_content_style
from lace_engine.pipeline import apply, staleness
from lace_engine.pipeline.apply import ArtifactFields, Mutation, NewArtifact, NodeFields, OutlineRules
from lace_engine.pipeline.compiler import compile_html, compile_json, compile_markdown, document_blocks
from lace_engine.pipeline.estimate import preflight
from lace_engine.pipeline.pandoc_ast import document_ast
from lace_engine.pipeline.tree import Tree
from lace_engine.runs.lifecycle import OUTLINE_EDITABLE, RunAction, on_request
from lace_engine.runs.orchestrator import Executor, ExecutorConfig
from lace_engine.sources import SourceLibrary
from lace_engine.storage import apply_store, event_log, idempotency, ir_store, pagination, run_store, source_store
from lace_engine.storage.database import Database, Reads, Tx
from lace_engine.storage.retention import RetentionPruner
from lace_engine.tenancy import DEFAULT_TENANT

log = logging.getLogger(__name__)

# Every format CompileArtifact offers, by name, with its media type.
FORMATS = {f.name: f.media_type for f in EXPORT_FORMATS.values()}
_TEXT_RENDERERS = {"markdown": compile_markdown, "html": compile_html, "json": compile_json}

_OPTION_RANGES = {
    "leaf_words": (200, 5000),
    "max_depth": (1, 8),
    "sibling_concurrency": (1, 64),
    "max_proposal_retries": (0, 5),
    # Caps: 0 (none) is the default; a cap given must be positive.
    "max_total_tokens": (1, 10**12),
    "max_llm_calls": (1, 1_000_000),
    "max_duration_s": (1, 30 * 86400),
    "review_plan": (1, 1),  # a flag: 0 (unset) or 1
}
_FIELD_NAMES = {"max_duration_s": "max_duration"}  # as the API spells it


@dataclass(frozen=True, slots=True)
class CompiledDocument:
    """A compiled artifact: `content` is str for the text formats and bytes for the binary ones."""

    content: str | bytes
    media_type: str
    artifact_version: int
    file_name: str


@dataclass(frozen=True, slots=True)
class ArtifactView:
    artifact: Artifact
    nodes: list[Node]
    blocks: list[Block]


def resolve_options(requested: dict[str, int], defaults: RunOptions) -> RunOptions:
    """Fills zero fields from the defaults and checks every field's documented range."""
    values = defaults.to_json()
    for key, value in requested.items():
        if value == 0:
            continue
        low, high = _OPTION_RANGES[key]
        if not low <= value <= high:
            name = _FIELD_NAMES.get(key, key)
            unit = " seconds" if key == "max_duration_s" else ""
            raise InvalidArgument(f"options.{name} must be between {low} and {high}{unit}, got {value}",
                                  reason="OPTION_OUT_OF_RANGE", metadata={"field": f"options.{name}"})
        values[key] = value
    return RunOptions.from_json(values)


# What ListArtifacts and ListRuns filter and order on (AIP-160, AIP-132); see docs/api.md.
_TIMESTAMP = list_query.Field(list_query.FieldKind.TIMESTAMP)
ARTIFACT_FILTER_FIELDS = {"create_time": _TIMESTAMP, "update_time": _TIMESTAMP}
ARTIFACT_ORDER_FIELDS = ("create_time", "update_time")
RUN_FILTER_FIELDS = {
    "state": list_query.Field(list_query.FieldKind.ENUM, {s.name: s.value for s in RunState}, prefix="RUN_STATE_"),
    "artifact_id": list_query.Field(list_query.FieldKind.ID),
    "create_time": _TIMESTAMP,
}
RUN_ORDER_FIELDS = ("create_time",)
NEWEST_FIRST = list_query.Ordering("create_time", descending=True)


def _page_position(order: list_query.Ordering) -> Callable[[Artifact | Run], list[str]]:
    """The page position of an item in this order: (its order field, its id)."""
    def position(item: Artifact | Run) -> list[str]:
        stamp = getattr(item, order.field)
        assert isinstance(stamp, datetime)
        return [stamp.isoformat(), str(item.id)]
    return position


async def _write_human_edit(tx: Tx, block: Block, content: BlockContent, expected_version: int) -> Block:
    """A person's new content for `block` (EditBlock, RevertBlock), through Apply; the block after it."""
    node = await ir_store.get_node(tx.conn, block.node_id)
    known = await source_store.passages_by_id(tx.conn, block.artifact_id, content.citations)
    mutation = apply.plan_edit_block(block, content, node=node, expected_version=expected_version,
                                     known_passages=known.keys())
    # The sections whose prompts used this one's summary: it no longer describes its text.
    refs = await ir_store.dependants(await tx.driver(), [node.id])
    marks = staleness.stale_marks(refs, {node.id: staleness.text_edited(node)}, exclude={node.id})
    await apply_store.write_mutation(tx, staleness.with_marks(mutation, marks, in_run=False))
    return await ir_store.get_block(tx.conn, block.id)


class Engine:
    """Owns the database pool, the live hub, the LISTEN connection and (optionally) an executor."""

    def __init__(self, settings: Settings, database_url: str, provider: LLMProvider, *, serve_streams: bool = True):
        self.settings = settings
        self.provider = provider
        self.db = Database(database_url, pool_size=settings.pool_size)
        self.sources = SourceLibrary(self.db)
        self.hub = EventHub(self._fetch_range, max_pending=settings.stream_queue_batches)
        self.db.add_listener(self.hub)
        self.listener = PgNotifyListener(self.db.url, self._committed, self.hub.feed_interrupted)
        # NATS mirror, live tail, job dispatch, global LLM limit; inert with default settings.
        self.cluster = ClusterServices(settings, self.db, self.hub, provider.name, serve_streams=serve_streams)
        self.pruner = RetentionPruner(self.db, settings.retention_days, settings.retention_interval_s) \
            if settings.retention_days > 0 else None
        self.content_style = settings.content_style or default_content_style(provider)
        self.exporter = Exporter(ExportLimits(max_concurrent=settings.export_concurrency,
                                              timeout_s=settings.export_timeout_s))
        self.executor: Executor | None = None
        if settings.execute_runs:
            self.executor = Executor(self.db, provider, ExecutorConfig(
                owner_id=settings.owner_id, lease_ttl_s=settings.lease_ttl_s,
                max_concurrent_runs=settings.max_concurrent_runs, llm_concurrency=settings.llm_concurrency,
                context_budget_tokens=settings.context_budget_tokens, db_outage_s=settings.db_outage_s,
                content_style=self.content_style, max_events_per_run=settings.max_events_per_run,
                tenant_max_runs=settings.tenant_max_runs, tenant_llm_concurrency=settings.tenant_llm_concurrency,
                llm_permit_ttl_s=settings.llm_permit_ttl_s,
            ), llm_limit=self.cluster.llm_limit)

    async def start(self) -> None:
        await self.db.open()
        await self.listener.start()
        if self.pruner is not None:
            self.pruner.start()
        if self.executor is not None:
            self.executor.start()
        await self.cluster.start(self.executor)

    def close_streams(self) -> None:
        """Ends every open stream with Unavailable (graceful shutdown: clients resume elsewhere with their cursor)."""
        self.hub.close()

    async def aclose(self) -> None:
        if self.pruner is not None:
            await self.pruner.aclose()
        await self.cluster.aclose()
        if self.executor is not None:
            await self.executor.aclose()
        await self.listener.aclose()
        await self.hub.aclose()
        await self.provider.aclose()
        await self.db.aclose()

    def _committed(self, run_id: uuid.UUID, head: int) -> None:
        """A NOTIFY: events of the run up to `head` are committed (by any process, this one too)."""
        if not self.cluster.committed(run_id, head):
            self.hub.committed(run_id, head)
        if self.executor is not None:
            self.executor.run_committed(run_id, head)

    async def _fetch_range(self, run_id: uuid.UUID, after: int, upto: int) -> list[RunEvent]:
        """Events after `after` up to `upto`: what the hub reads for its streams (history, gaps, remote commits).

        Through a short database outage the read is tried again, so a stream goes on from its cursor.
        """
        return await self.db.fast_read_through_outage(
            lambda conn: event_log.read(conn, run_id, after_seq=after, upto_seq=upto, limit=upto - after))

    # Artifacts -----------------------------------------------------------------------------

    async def create_artifact(self, new: NewArtifact, request_id: str = "", *,
                              tenant: str = DEFAULT_TENANT) -> Artifact:
        mutation = apply.plan_create_artifact(new_id(), replace(new, tenant_id=tenant))  # validates first
        created = mutation.artifact_insert
        assert created is not None
        req = idempotency.request("CreateArtifact", request_id, {
            "title": new.title, "brief": new.brief, "style": new.style, "target_words": new.target_words},
            tenant=tenant)

        async def write(tx: Tx) -> Artifact:
            await apply_store.write_mutation(tx, mutation)
            return created  # exactly the row just written

        return (await idempotency.once(self.db, req, mutation.artifact_id, write, ir_store.get_artifact)).value

    async def get_artifact(self, artifact_id: uuid.UUID, *, full: bool, version: int = 0,
                           tenant: str = DEFAULT_TENANT) -> ArtifactView:
        """The artifact now, or with `version` as it was then (rebuilt from its history)."""
        if version:
            async with self.db.read() as conn, conn.begin():
                await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                got = await ir_store.ir(conn, artifact_id, version=version, tenant=tenant)
        else:
            async with self.db.read() as conn:
                if not full:
                    return ArtifactView(await ir_store.get_artifact(conn, artifact_id, tenant=tenant), [], [])
                got = await ir_store.ir(conn, artifact_id, tenant=tenant)
        if not full:
            return ArtifactView(got.artifact, [], [])
        tree = Tree(got.nodes)
        return ArtifactView(got.artifact, list(tree.preorder()), document_blocks(tree, got.blocks))

    async def list_artifacts(self, page_size: int, page_token: str, *, filter: str = "",
                             order_by: str = "", tenant: str = DEFAULT_TENANT) -> tuple[list[Artifact], str]:
        size = pagination.page_size(page_size, default=50, maximum=500)
        query = list_query.parse(filter, order_by, ARTIFACT_FILTER_FIELDS, ARTIFACT_ORDER_FIELDS, NEWEST_FIRST)
        key = ["artifacts", *query.key(filter)]
        position = pagination.decode(page_token, key)
        async with self.db.read() as conn:
            items = await ir_store.list_artifacts(conn, query, limit=size + 1,
                                                  after=tuple(position) if position else None, tenant=tenant)
        return pagination.page(items, size, key, _page_position(query.order))

    async def update_artifact(self, artifact_id: uuid.UUID, fields: ArtifactFields, *,
                              request_id: str = "", tenant: str = DEFAULT_TENANT) -> Artifact:
        """AIP-134: the fields that are not None, through Apply, under the outline edits' rules."""
        req = idempotency.request("UpdateArtifact", request_id, {
            "artifact_id": str(artifact_id), "title": fields.title, "brief": fields.brief, "style": fields.style,
            "target_words": fields.target_words}, tenant=tenant)

        async def write(tx: Tx) -> Artifact:
            artifact, tree, rules, run = await self._outline_edit(tx, artifact_id, tenant)
            mutation = apply.plan_update_artifact(tree, artifact, fields, rules)
            # Every prompt carries the brief and the style (or their absence): every section written
            # with the old ones is stale.
            marks: dict[uuid.UUID, str] = {}
            for kind, changed in (("style", mutation.artifact_style), ("brief", mutation.artifact_brief)):
                if changed is not None:
                    reason = f"the artifact's {kind} was changed by a person; this section's prompt used the old one"
                    marks.update(dict.fromkeys(staleness.fresh_written(tree), reason))
            await self._write_outline(tx, tree, mutation, run, marks)
            return await ir_store.get_artifact(tx.conn, artifact_id)

        return (await idempotency.once(self.db, req, artifact_id, write, ir_store.get_artifact)).value

    async def fork_artifact(self, artifact_id: uuid.UUID, *, version: int = 0, request_id: str = "",
                            tenant: str = DEFAULT_TENANT) -> Artifact:
        """A new artifact (of the same tenant) with a copy of this one's IR, now or at `version`, linked back."""
        req = idempotency.request("ForkArtifact", request_id, {"artifact_id": str(artifact_id), "version": version},
                                  tenant=tenant)
        fork_id = new_id()

        async def write(tx: Tx) -> Artifact:
            # Now, locked: the copy is of one version, not of two halves around a concurrent write.
            source = await ir_store.ir(tx.conn, artifact_id, version=version, tenant=tenant, lock=True)
            mutation = apply.plan_fork_artifact(fork_id, source.artifact, Tree(source.nodes), source.blocks,
                                                datetime.now(UTC))
            await apply_store.write_mutation(tx, mutation)
            return await ir_store.get_artifact(tx.conn, fork_id)

        return (await idempotency.once(self.db, req, fork_id, write, ir_store.get_artifact)).value

    async def delete_artifact(self, artifact_id: uuid.UUID, *, allow_missing: bool = False,
                              request_id: str = "", tenant: str = DEFAULT_TENANT) -> None:
        """AIP-135: the artifact and everything it owns, in one transaction; refused while a run is active."""
        req = idempotency.request("DeleteArtifact", request_id, {"artifact_id": str(artifact_id),
                                                                 "allow_missing": allow_missing},
                                  tenant=tenant)

        async def write(tx: Tx) -> None:
            # Every run's row first (the writers' lock order): a ResumeRun of a failed run that
            # commits meanwhile is seen active here, never deleted under its executor.
            active = [r for r in await run_store.lock_runs_of(tx.conn, artifact_id, tenant=tenant)
                      if r.state.active]
            try:
                await ir_store.get_artifact(tx.conn, artifact_id, for_update=True, tenant=tenant)
            except NotFound:
                if allow_missing:
                    return
                raise
            if active:
                raise run_store.active_run_error(artifact_id, active[0].id)
            await apply_store.delete_artifact(tx, artifact_id)

        await idempotency.once(self.db, req, artifact_id, write, idempotency.no_result)

    async def compile(self, artifact_id: uuid.UUID, fmt: str, *, version: int = 0,
                      tenant: str = DEFAULT_TENANT) -> CompiledDocument:
        """The artifact rendered in `fmt`, now or (with `version`) as it was at that version."""
        if fmt not in FORMATS:
            raise InvalidArgument(f"format must be one of {sorted(FORMATS)}", reason="INVALID_FORMAT",
                                  metadata={"field": "format"})
        async with self.db.read() as conn, conn.begin():  # one snapshot: the IR at one version
            await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            got = await ir_store.ir(conn, artifact_id, version=version, tenant=tenant)
            artifact, tree, blocks = got.artifact, Tree(got.nodes), got.blocks
            providers = await ir_store.providers_of(conn, artifact_id, artifact.update_time)
            passages = await source_store.passages_by_id(
                conn, artifact_id, (p for bs in blocks.values() for b in bs for p in b.content.citations))
        metadata = {
            "generator": "lace",
            "artifact_id": str(artifact.id),
            "artifact_version": str(artifact.version),
            "llm_provider": ",".join(providers) or "none",
        }
        if "offline" in providers:
            metadata["notice"] = ("written by the offline provider: deterministic placeholder prose, "
                                  "not a language model")
        content: str | bytes
        if fmt in _TEXT_RENDERERS:
            content = _TEXT_RENDERERS[fmt](artifact, tree, blocks, metadata, passages)
        else:
            ast = document_ast(artifact, tree, blocks, metadata, passages)
            content = await self.exporter.render(fmt, ast, source_date_epoch=int(artifact.update_time.timestamp()))
        size = len(content.encode() if isinstance(content, str) else content)
        if size > self.settings.max_compiled_bytes:
            limit = self.settings.max_compiled_bytes
            raise CompiledTooLarge(
                f"the compiled {fmt} document is {size:,} bytes, over the server's limit of {limit:,} bytes; "
                "compile a smaller scope or another format, or raise LACE_MAX_COMPILED_BYTES",
                metadata={"size_bytes": str(size), "limit_bytes": str(limit), "format": fmt})
        return CompiledDocument(content, FORMATS[fmt], artifact.version, file_name(artifact.title, fmt))

    async def edit_block(self, block_id: uuid.UUID, content: BlockContent, *, expected_version: int,
                         request_id: str, tenant: str = DEFAULT_TENANT) -> Block:
        req = idempotency.request("EditBlock", request_id, {
            "block_id": str(block_id), "content": content.to_json(), "expected_version": expected_version},
            tenant=tenant)

        async def write(tx: Tx) -> Block:
            block = await ir_store.get_block(tx.conn, block_id, tenant=tenant)
            return await _write_human_edit(tx, block, content, expected_version)

        return (await idempotency.once(self.db, req, block_id, write, ir_store.get_block)).value

    async def revert_block(self, block_id: uuid.UUID, block_version: int, *, expected_version: int = 0,
                           request_id: str = "", tenant: str = DEFAULT_TENANT) -> Block:
        """Restores the block's content at `block_version` as a new version: a human edit, through Apply."""
        if block_version <= 0:
            raise InvalidArgument("block_version must be positive", reason="INVALID_ARGUMENT",
                                  metadata={"field": "block_version"})
        req = idempotency.request("RevertBlock", request_id, {
            "block_id": str(block_id), "block_version": block_version, "expected_version": expected_version},
            tenant=tenant)

        async def write(tx: Tx) -> Block:
            block = await ir_store.get_block(tx.conn, block_id, tenant=tenant)
            stored = await ir_store.block_content_at(tx.conn, block_id, block_version) \
                if block_version <= block.version else None
            if stored is None:
                raise NotFound(f"block {block_id} has no version {block_version}; it is at version {block.version}",
                               reason="BLOCK_VERSION_NOT_FOUND",
                               metadata={"block_id": str(block_id), "current_version": str(block.version)})
            return await _write_human_edit(tx, block, BlockContent.from_json(stored), expected_version)

        return (await idempotency.once(self.db, req, block_id, write, ir_store.get_block)).value

    async def list_block_changes(self, block_id: uuid.UUID, page_size: int,
                                 page_token: str, *, tenant: str = DEFAULT_TENANT) -> tuple[list[ChangeEvent], str]:
        size = pagination.page_size(page_size, default=50, maximum=500)
        query = ["block_changes", str(block_id)]
        after = pagination.decode(page_token, query) or 0
        async with self.db.read() as conn:
            items = await ir_store.list_block_changes(conn, block_id, limit=size + 1, after_id=int(after),
                                                      tenant=tenant)
            if not items and not after and not await ir_store.block_exists_in_history(conn, block_id, tenant=tenant):
                raise NotFound(f"block {block_id} not found", reason="BLOCK_NOT_FOUND",
                               metadata={"block_id": str(block_id)})
        return pagination.page(items, size, query, lambda change: change.id)

    async def passages_cited_by(self, changes: Sequence[ChangeEvent]) -> list[Passage]:
        """The passages that the before and after snapshots of one block's `changes` cite, each once,
        in order of citation."""
        ids = list(dict.fromkeys(
            passage_id for change in changes for snapshot in (change.before, change.after) if snapshot
            for passage_id in BlockContent.from_json(snapshot["content"]).citations))
        if not ids:
            return []
        async with self.db.read() as conn:  # a block's changes all belong to its artifact
            found = await source_store.passages_by_id(conn, changes[0].artifact_id, ids)
        return [found[p] for p in ids if p in found]

    # Outline edits -------------------------------------------------------------------------

    async def _outline_edit(self, tx: Tx, artifact_id: uuid.UUID,
                            tenant: str) -> tuple[Artifact, Tree, OutlineRules, Run | None]:
        """Locks what an outline edit is made from (the active run, then the artifact: the writers'
        lock order) and reads the tree; FailedPrecondition unless no run is active or it awaits review."""
        run = await run_store.active_run_for_update(tx.conn, artifact_id, tenant=tenant)
        artifact = await ir_store.get_artifact(tx.conn, artifact_id, for_update=True, tenant=tenant)
        if artifact.active_run_id is not None and (run is None or run.id != artifact.active_run_id):
            raise run_store.active_run_error(artifact_id, artifact.active_run_id)  # started meanwhile
        if run is not None and run.state not in OUTLINE_EDITABLE:
            raise FailedPrecondition(
                f"artifact {artifact_id} has an active run {run.id} that is {run.state.value}; the outline can be "
                "edited while a run awaits review (review_plan) or when no run is active",
                reason="ARTIFACT_HAS_ACTIVE_RUN",
                metadata={"artifact_id": str(artifact_id), "run_id": str(run.id), "state": run.state.value})
        tree = Tree(await ir_store.get_nodes(tx.conn, artifact_id))
        pinned = await ir_store.pinned_nodes(tx.conn, artifact_id)
        options = run.options if run is not None else self.settings.run_options
        rules = OutlineRules(max_depth=options.max_depth, run_id=run.id if run else None,
                             scope_node_id=run.scope_node_id if run else None, pinned_nodes=pinned)
        return artifact, tree, rules, run

    async def _write_outline(self, tx: Tx, tree: Tree, mutation: Mutation, run: Run | None,
                             marks: Mapping[uuid.UUID, str] | None = None) -> None:
        """Writes an outline edit through Apply with the stale marks it causes and `marks` (the cause
        itself, say a new brief, whose reasons win over the outline's consequences, say the root's intent
        following the brief); on an awaiting run, with its outline_edited (and nodes_marked_stale) event."""
        changes, arrivals = staleness.outline_changes(tree, apply.tree_after(tree, mutation))
        referenced = staleness.referenced_ids(changes, arrivals)
        refs = [*await ir_store.dependants(await tx.driver(), referenced),
                *await ir_store.heading_readers(tx.conn, tree.root.artifact_id, referenced)]
        found = {**staleness.stale_marks(refs, changes, arrivals), **(marks or {})}
        mutation = staleness.with_marks(mutation, found, in_run=run is not None)
        await apply_store.write_mutation(tx, mutation, run_id=run.id if run else None,
                                         allowed_states=OUTLINE_EDITABLE)

    async def update_node(self, node_id: uuid.UUID, fields: NodeFields, *, request_id: str = "",
                          tenant: str = DEFAULT_TENANT) -> Node:
        req = idempotency.request("UpdateNode", request_id, {
            "node_id": str(node_id), "title": fields.title, "intent": fields.intent,
            "target_words": fields.target_words}, tenant=tenant)

        async def write(tx: Tx) -> Node:
            node = await ir_store.get_node(tx.conn, node_id, tenant=tenant)
            artifact, tree, rules, run = await self._outline_edit(tx, node.artifact_id, tenant)
            await self._write_outline(tx, tree, apply.plan_update_node(tree, artifact, node_id, fields, rules), run)
            return await ir_store.get_node(tx.conn, node_id)

        return (await idempotency.once(self.db, req, node_id, write, ir_store.get_node)).value

    async def create_node(self, parent_id: uuid.UUID, fields: NodeFields, *, position: int | None = None,
                          request_id: str = "", tenant: str = DEFAULT_TENANT) -> Node:
        req = idempotency.request("CreateNode", request_id, {
            "parent_id": str(parent_id), "title": fields.title, "intent": fields.intent,
            "target_words": fields.target_words, "position": position}, tenant=tenant)
        node_id = new_id()  # a fresh UUIDv7: never one a split derives (uuid5 of parent and ordinal)

        async def write(tx: Tx) -> Node:
            parent = await ir_store.get_node(tx.conn, parent_id, tenant=tenant)
            artifact, tree, rules, run = await self._outline_edit(tx, parent.artifact_id, tenant)
            mutation = apply.plan_create_node(tree, artifact, parent_id, node_id, fields, position, rules)
            await self._write_outline(tx, tree, mutation, run)
            return await ir_store.get_node(tx.conn, node_id)

        return (await idempotency.once(self.db, req, node_id, write, ir_store.get_node)).value

    async def delete_node(self, node_id: uuid.UUID, *, request_id: str = "", tenant: str = DEFAULT_TENANT) -> Artifact:
        req = idempotency.request("DeleteNode", request_id, {"node_id": str(node_id)}, tenant=tenant)
        async with self.db.read() as conn:
            done = await idempotency.lookup(conn, req)  # a repeat: the node is gone, its artifact is not
            if done is not None:
                return await ir_store.get_artifact(conn, done, tenant=tenant)
            artifact_id = (await ir_store.get_node(conn, node_id, tenant=tenant)).artifact_id

        async def write(tx: Tx) -> Artifact:
            node = await ir_store.get_node(tx.conn, node_id, tenant=tenant)
            artifact, tree, rules, run = await self._outline_edit(tx, node.artifact_id, tenant)
            blocks = await ir_store.get_blocks_by_node(tx.conn, node.artifact_id)
            await self._write_outline(tx, tree, apply.plan_delete_node(tree, artifact, node_id, blocks, rules), run)
            return await ir_store.get_artifact(tx.conn, node.artifact_id)

        return (await idempotency.once(self.db, req, artifact_id, write, ir_store.get_artifact)).value

    async def move_node(self, node_id: uuid.UUID, *, parent_id: uuid.UUID | None = None, position: int | None = None,
                        request_id: str = "", tenant: str = DEFAULT_TENANT) -> Node:
        req = idempotency.request("MoveNode", request_id, {
            "node_id": str(node_id), "parent_id": str(parent_id), "position": position}, tenant=tenant)

        async def write(tx: Tx) -> Node:
            node = await ir_store.get_node(tx.conn, node_id, tenant=tenant)
            if parent_id is not None:
                parent = await ir_store.get_node(tx.conn, parent_id, tenant=tenant)
                if parent.artifact_id != node.artifact_id:
                    raise InvalidArgument(f"node {parent_id} belongs to another artifact",
                                          reason="PARENT_NOT_IN_ARTIFACT", metadata={"field": "parent_id"})
            artifact, tree, rules, run = await self._outline_edit(tx, node.artifact_id, tenant)
            mutation = apply.plan_move_node(tree, artifact, node_id, parent_id, position, rules)
            await self._write_outline(tx, tree, mutation, run)
            return await ir_store.get_node(tx.conn, node_id)

        return (await idempotency.once(self.db, req, node_id, write, ir_store.get_node)).value

    # Runs ----------------------------------------------------------------------------------

    async def start_run(self, artifact_id: uuid.UUID, *, request_id: str = "", scope_node_id: uuid.UUID | None = None,
                        instruction: str = "", options: dict[str, int] | None = None, stale_only: bool = False,
                        tenant: str = DEFAULT_TENANT) -> Run:
        req = idempotency.request("StartRun", request_id, {
            "artifact_id": str(artifact_id), "scope": str(scope_node_id), "instruction": instruction,
            "options": options or {}, **({"stale_only": True} if stale_only else {})}, tenant=tenant)
        if len(instruction) > 2000:
            raise InvalidArgument("instruction is longer than 2,000 characters", reason="FIELD_TOO_LONG",
                                  metadata={"field": "instruction"})
        resolved = resolve_options(options or {}, self.settings.run_options)
        run_id = new_id()

        async def write(tx: Tx) -> Run:
            # The artifact's row lock orders a start after (or before) an outline edit, never inside one;
            # its nodes are read in the same round trip, behind the lock.
            reads = Reads()
            read_artifact = reads.add(ir_store.artifact_query(artifact_id, for_update=True, tenant=tenant))
            read_nodes = reads.add(ir_store.nodes_query(artifact_id))
            await reads.send(await tx.driver())
            artifact, tree = read_artifact.value, Tree(read_nodes.value)
            if scope_node_id is not None:
                node = await ir_store.get_node(tx.conn, scope_node_id, tenant=tenant)
                if node.artifact_id != artifact_id:
                    raise InvalidArgument(f"node {scope_node_id} belongs to another artifact",
                                          reason="SCOPE_NOT_IN_ARTIFACT", metadata={"field": "scope_node_id"})
            if artifact.active_run_id is not None:
                raise run_store.active_run_error(artifact_id, artifact.active_run_id)
            if stale_only:
                await self._something_stale(tx, tree, scope_node_id)
            estimate = preflight(tree, scope_node_id, resolved, prompt_tokens=self.settings.context_budget_tokens,
                                 content_style=self.content_style, stale_only=stale_only)
            return await run_store.insert_run(
                tx, run_id=run_id, artifact_id=artifact_id, scope_node_id=scope_node_id,
                instruction=instruction, options=resolved, provider=self.provider.name, model=self.provider.model,
                estimate=estimate.to_json(), trace_context=tracing.current_context(), stale_only=stale_only,
                tenant_id=artifact.tenant_id)

        outcome = await idempotency.once(self.db, req, run_id, write, run_store.get_run)
        if not outcome.replayed:
            self.cluster.dispatch(run_id, outcome.value.head_seq)
            if self.executor is not None:
                self.executor.look_for_work()
        return outcome.value

    async def _something_stale(self, tx: Tx, tree: Tree, scope_node_id: uuid.UUID | None) -> None:
        """FAILED_PRECONDITION NOTHING_STALE unless a stale section in scope can be rewritten (one
        without pinned blocks: a run keeps those as they are)."""
        in_scope = {n.id for n in tree.subtree(scope_node_id or tree.root.id)}
        stale = [n for n in tree.preorder() if n.stale_reason and n.id in in_scope]
        pinned = await ir_store.pinned_nodes(tx.conn, tree.root.artifact_id)
        if not [n for n in stale if n.id not in pinned]:
            kept = f"; {len(stale)} stale sections hold blocks a person edited (pinned), which a run keeps" \
                if stale else ""
            raise FailedPrecondition(
                f"no section {'under ' + str(scope_node_id) if scope_node_id else 'of the artifact'} is stale{kept}; "
                "nothing to rewrite", reason="NOTHING_STALE",
                metadata={"artifact_id": str(tree.root.artifact_id), "pinned_stale": str(len(stale))})

    async def get_run(self, run_id: uuid.UUID, *, tenant: str = DEFAULT_TENANT) -> Run:
        async with self.db.read() as conn:
            return await run_store.get_run(conn, run_id, tenant=tenant)

    async def list_runs(self, artifact_id: uuid.UUID | None, page_size: int, page_token: str, *,
                        filter: str = "", order_by: str = "", tenant: str = DEFAULT_TENANT) -> tuple[list[Run], str]:
        size = pagination.page_size(page_size, default=50, maximum=500)
        query = list_query.parse(filter, order_by, RUN_FILTER_FIELDS, RUN_ORDER_FIELDS, NEWEST_FIRST)
        if artifact_id is not None:  # the request's own field: one more condition
            of_artifact = list_query.Comparison("artifact_id", "=", artifact_id)
            query = replace(query, where=of_artifact if query.where is None
                            else list_query.AllOf((of_artifact, query.where)))
        key = ["runs", str(artifact_id), *query.key(filter)]
        position = pagination.decode(page_token, key)
        async with self.db.read() as conn:
            if artifact_id is not None:
                await ir_store.get_artifact(conn, artifact_id, tenant=tenant)
            items = await run_store.list_runs(conn, query, limit=size + 1,
                                              after=tuple(position) if position else None, tenant=tenant)
        return pagination.page(items, size, key, _page_position(query.order))

    async def control_run(self, run_id: uuid.UUID, action: RunAction, request_id: str = "",
                          options: dict[str, int] | None = None, *, tenant: str = DEFAULT_TENANT) -> Run:
        """Pause, resume or cancel: one locked transition with its event, then tell the executor.

        A resume may change the run's options for the rest of it (zero fields keep the run's own).
        """
        changed = {k: v for k, v in (options or {}).items() if v}
        if changed and action is not RunAction.RESUME:
            raise InvalidArgument("options can only be changed by ResumeRun", reason="OPTIONS_ON_RESUME_ONLY",
                                  metadata={"field": "options"})
        req = idempotency.request(f"{action.value.capitalize()}Run", request_id,
                                  {"run_id": str(run_id), **({"options": changed} if changed else {})},
                                  tenant=tenant)
        reason = {RunAction.PAUSE: "pause requested", RunAction.RESUME: "resume requested",
                  RunAction.CANCEL: "cancel requested"}[action]

        async def write(tx: Tx) -> Run:
            run = await run_store.get_run(tx.conn, run_id, for_update=True, tenant=tenant)
            to = on_request(action, run.state)
            values: dict[str, Any] = {}
            if changed:
                values["options"] = resolve_options(changed, run.options).to_json()
            said = reason
            if run.state is RunState.FAILED:
                artifact = await ir_store.get_artifact(tx.conn, run.artifact_id)
                if artifact.active_run_id is not None:
                    raise run_store.active_run_error(run.artifact_id, artifact.active_run_id)
                said = f"resume requested after the run failed ({run.failure_reason})"
            await run_store.transition(tx, run, to, said, set_values=values)
            return await run_store.get_run(tx.conn, run_id)

        outcome = await idempotency.once(self.db, req, run_id, write, run_store.get_run)
        run = outcome.value
        if not outcome.replayed:
            if run.state is RunState.PENDING:  # resumed: it needs an executor again
                self.cluster.dispatch(run_id, run.head_seq)
            if self.executor is not None:
                self.executor.steer(run_id, run.state)
                self.executor.look_for_work()
        return run

    async def list_run_events(self, run_id: uuid.UUID, *, after_seq: int, types: Sequence[EventType],
                              page_size: int, page_token: str,
                              tenant: str = DEFAULT_TENANT) -> tuple[list[RunEvent], str]:
        if after_seq < 0:
            raise InvalidArgument("after_seq must not be negative", reason="NEGATIVE_CURSOR",
                                  metadata={"field": "after_seq"})
        size = pagination.page_size(page_size, default=100, maximum=1000)
        query = ["events", str(run_id), after_seq, sorted(t.value for t in types)]
        position = pagination.decode(page_token, query)
        after = int(position) if position is not None else after_seq
        async with self.db.fast_read() as conn:
            (await event_log.head(conn, run_id, tenant=tenant)).check_cursor(run_id, after)
            items = await event_log.read(conn, run_id, after_seq=after, limit=size + 1, types=types)
        return pagination.page(items, size, query, lambda event: event.seq)

    def stream_run(self, run_id: uuid.UUID, cursor: int, *, batch_limit: int = 1000,
                   tenant: str = DEFAULT_TENANT) -> AsyncIterator[StreamBatch]:
        """The run's events after `cursor`, replayed then live; NotFound for another tenant's run."""
        async def read_head(of_run: uuid.UUID) -> event_log.Head:
            return await self._read_head(of_run, tenant)

        return stream_run(self.hub, read_head, run_id, cursor, heartbeat_s=self.settings.heartbeat_s,
                          batch_limit=batch_limit)

    async def _read_head(self, run_id: uuid.UUID, tenant: str | None = None) -> event_log.Head:
        return await self.db.fast_read_through_outage(lambda conn: event_log.head(conn, run_id, tenant=tenant))


