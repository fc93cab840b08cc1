"""SQLAlchemy Core tables: the canonical store. migrations/ creates exactly these."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID

metadata = sa.MetaData()

_now = sa.text("now()")


def _ts(name: str, nullable: bool = False, default: bool = True) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=_now if default else None
    )


artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("brief", sa.Text, nullable=False),
    sa.Column("style", sa.Text, nullable=False, server_default=""),
    sa.Column("target_words", sa.Integer, nullable=False),
    sa.Column("root_node_id", UUID(as_uuid=True), nullable=False),
    # IR version: bumped by every Apply that touches this artifact's nodes or blocks.
    sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("word_count", sa.Integer, nullable=False, server_default="0"),
    _ts("create_time"),
    _ts("update_time"),
    # Migration 0007: ForkArtifact's link back (no foreign key: the source may be deleted later).
    sa.Column("forked_from_id", UUID(as_uuid=True), nullable=True),
    sa.Column("forked_from_version", sa.BigInteger, nullable=False, server_default="0"),
    # Migration 0009: the tenant that owns the artifact and everything under it (its API keys'
    # tenant; "default" without tenants). Never changes.
    sa.Column("tenant_id", sa.Text, nullable=False, server_default="default"),
    sa.Index("artifacts_tenant_idx", "tenant_id", "create_time", "id"),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("parent_id", UUID(as_uuid=True), sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=True),
    sa.Column("ordinal", sa.Integer, nullable=False),
    sa.Column("depth", sa.Integer, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("intent", sa.Text, nullable=False, server_default=""),
    sa.Column("target_words", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("word_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_run_id", UUID(as_uuid=True), nullable=True),
    _ts("create_time"),
    _ts("update_time"),
    # Migration 0008: why the node's text is out of date with what it was written from; "" when fresh.
    sa.Column("stale_reason", sa.Text, nullable=False, server_default=""),
    sa.Index("nodes_artifact_idx", "artifact_id"),
    sa.UniqueConstraint("parent_id", "ordinal", name="nodes_parent_ordinal_key"),
)

blocks = sa.Table(
    "blocks",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("node_id", UUID(as_uuid=True), sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ordinal", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("content", JSONB, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    _ts("create_time"),
    _ts("update_time"),
    sa.Index("blocks_artifact_idx", "artifact_id"),
    sa.UniqueConstraint("node_id", "ordinal", name="blocks_node_ordinal_key"),
)

# The predicate of the one-active-run index, verbatim: ON CONFLICT must repeat it to infer the index.
RUN_IS_ACTIVE = "state NOT IN ('completed', 'failed', 'cancelled')"

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("scope_node_id", UUID(as_uuid=True), nullable=True),
    sa.Column("instruction", sa.Text, nullable=False, server_default=""),
    sa.Column("options", JSONB, nullable=False),
    # The last seq handed out; bumped under the row lock, so seqs are gap-free per run.
    sa.Column("head_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
    # Migration 0003: RunFailed.reason_code of the failure (BUDGET_EXHAUSTED, ...); "" otherwise.
    sa.Column("failure_code", sa.Text, nullable=False, server_default=""),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("llm_calls", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("llm_latency_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("nodes_planned", sa.Integer, nullable=False, server_default="0"),
    sa.Column("nodes_written", sa.Integer, nullable=False, server_default="0"),
    sa.Column("words_written", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("provider", sa.Text, nullable=False, server_default=""),
    sa.Column("model", sa.Text, nullable=False, server_default=""),
    sa.Column("validation", JSONB, nullable=True),
    # Migration 0003: the preflight estimate made at StartRun ({"llm_calls": n, "total_tokens": n}).
    sa.Column("estimate", JSONB, nullable=True),
    # Migration 0005: the W3C trace context of the StartRun call, so the executor (in any
    # process) continues that trace; NULL when the caller was not traced.
    sa.Column("trace_context", JSONB, nullable=True),
    # Migration 0006: events with seq <= compacted_seq were pruned by retention (LACE_RETENTION_DAYS).
    sa.Column("compacted_seq", sa.BigInteger, nullable=False, server_default="0"),
    # Migration 0008: StartRun's stale_only: the run rewrites exactly the sections marked stale.
    sa.Column("stale_only", sa.Boolean, nullable=False, server_default=sa.false()),
    # Migration 0009: the artifact's tenant, copied at StartRun so that a run id resolves within its
    # tenant without a join, and per-tenant run limits count from one index.
    sa.Column("tenant_id", sa.Text, nullable=False, server_default="default"),
    # Ownership: one executor at a time. lease_token is the fencing token: every
    # Apply checks it, so a process that lost the lease can never write again.
    sa.Column("lease_owner", sa.Text, nullable=True),
    sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_token", sa.BigInteger, nullable=False, server_default="0"),
    _ts("create_time"),
    _ts("update_time"),
    _ts("start_time", nullable=True, default=False),
    _ts("end_time", nullable=True, default=False),
    sa.Index("runs_artifact_idx", "artifact_id", "create_time"),
    sa.Index("runs_tenant_idx", "tenant_id", "create_time"),
    # One active run per artifact, enforced by the database itself.
    sa.Index(
        "runs_one_active_per_artifact",
        "artifact_id",
        unique=True,
        postgresql_where=sa.text(RUN_IS_ACTIVE),
    ),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("run_id", UUID(as_uuid=True), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    _ts("create_time"),
)

change_events = sa.Table(
    "change_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
              nullable=False),
    # No foreign key: a deleted block keeps its history.
    sa.Column("block_id", UUID(as_uuid=True), nullable=False),
    sa.Column("node_id", UUID(as_uuid=True), nullable=False),
    sa.Column("operation", sa.Text, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("run_id", UUID(as_uuid=True), nullable=True),
    sa.Column("llm_call_id", UUID(as_uuid=True), nullable=True),
    sa.Column("model", sa.Text, nullable=False, server_default=""),
    sa.Column("before", JSONB, nullable=True),
    sa.Column("after", JSONB, nullable=True),
    sa.Column("artifact_version", sa.BigInteger, nullable=False),
    _ts("create_time"),
    sa.Index("change_events_block_idx", "block_id", "id"),
    sa.Index("change_events_artifact_idx", "artifact_id", "id"),
)

llm_calls = sa.Table(
    "llm_calls",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("run_id", UUID(as_uuid=True), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("node_id", UUID(as_uuid=True), nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("finish_reason", sa.Text, nullable=False),
    sa.Column("context_tokens", sa.Integer, nullable=False),
    # What went into the prompt (node ids + content hashes): what a regeneration depends on.
    sa.Column("context_manifest", JSONB, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    _ts("create_time"),
    sa.Index("llm_calls_run_idx", "run_id"),
)

# Migration 0008. What each written node's latest applied write call read: one row per node id its
# context manifest names (kind "node" is the node itself). Replaced in the transaction that writes
# the node, so it always describes the text the node has; looked up by `depends_on` to find the
# sections a change makes stale.
node_dependencies = sa.Table(
    "node_dependencies",
    metadata,
    sa.Column("node_id", UUID(as_uuid=True), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("depends_on", UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("content_hash", sa.Text, nullable=False),
    sa.Column("llm_call_id", UUID(as_uuid=True), nullable=False),
    sa.Index("node_dependencies_depends_on_idx", "depends_on"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    # Migration 0009: keys are per tenant, so one tenant's request_id never replays another's result.
    sa.Column("tenant_id", sa.Text, primary_key=True, server_default="default"),
    sa.Column("method", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, primary_key=True),
    # Hash of the request, so a reused key with a different request is refused.
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("resource_id", UUID(as_uuid=True), nullable=False),
    _ts("create_time"),
)

# Migration 0002. How far each run's events have been mirrored to JetStream:
# the event log is the outbox, this is its per-run read position.
mirror_cursors = sa.Table(
    "mirror_cursors",
    metadata,
    sa.Column("run_id", UUID(as_uuid=True), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("published_seq", sa.BigInteger, nullable=False, server_default="0"),
    _ts("update_time"),
)

# A counting semaphore per LLM provider shared by every process; a permit whose holder
# stopped renewing it (a killed worker) expires and is taken by the next caller.
llm_permits = sa.Table(
    "llm_permits",
    metadata,
    sa.Column("provider", sa.Text, primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("holder", sa.Text, nullable=True),
    sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
)

# Migration 0004. Sources attached to an artifact and their passages, indexed for full-text
# search in PostgreSQL itself: no second store to keep in sync with the canonical one.
sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("media_type", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("char_count", sa.Integer, nullable=False),
    sa.Column("passage_count", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.Text, nullable=False),
    # The extracted text; passages are offsets into it.
    sa.Column("text", sa.Text, nullable=False),
    _ts("create_time"),
    # Soft delete: a deleted source is not retrieved, but blocks citing it still resolve.
    _ts("delete_time", nullable=True, default=False),
    sa.Index("sources_artifact_idx", "artifact_id", "create_time"),
)

passages = sa.Table(
    "passages",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("source_id", UUID(as_uuid=True), sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    # Denormalized from the source so retrieval filters on one index without a join.
    sa.Column("artifact_id", UUID(as_uuid=True), nullable=False),
    sa.Column("ordinal", sa.Integer, nullable=False),
    sa.Column("start_offset", sa.Integer, nullable=False),
    sa.Column("end_offset", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("content_hash", sa.Text, nullable=False),
    # False once the source is deleted; retrieval reads only retrievable passages.
    sa.Column("retrievable", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("tsv", TSVECTOR, sa.Computed("to_tsvector('english', text)", persisted=True), nullable=False),
    sa.UniqueConstraint("source_id", "ordinal"),
    sa.Index("passages_tsv_idx", "tsv", postgresql_using="gin"),
    sa.Index("passages_artifact_idx", "artifact_id"),
)

# Migration 0007. The IR's history besides blocks (which change_events hold): every node as an Apply
# left it (NULL: deleted), and the artifact's own fields whenever they changed, each at its
# artifact version. GetArtifact/CompileArtifact at a version read the newest row of each at or below it.
node_versions = sa.Table(
    "node_versions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("node_id", UUID(as_uuid=True), nullable=False),
    sa.Column("artifact_version", sa.BigInteger, nullable=False),
    sa.Column("node", JSONB, nullable=True),
    _ts("create_time"),
    sa.Index("node_versions_artifact_idx", "artifact_id", "artifact_version"),
)

artifact_versions = sa.Table(
    "artifact_versions",
    metadata,
    sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("artifact_version", sa.BigInteger, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("brief", sa.Text, nullable=False),
    sa.Column("style", sa.Text, nullable=False),
    sa.Column("target_words", sa.Integer, nullable=False),
    _ts("create_time"),
)
