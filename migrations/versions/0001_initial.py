"""Initial schema: the IR (artifacts, nodes, blocks), runs, their events, provenance, idempotency.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def _uuid(name: str, *args: sa.ForeignKey, nullable: bool = True, primary_key: bool = False) -> sa.Column[object]:
    return sa.Column(name, UUID(as_uuid=True), *args, nullable=nullable and not primary_key,
                     primary_key=primary_key)


def _ts(name: str, nullable: bool = False, default: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable,
                     server_default=NOW if default else None)


def _counter(name: str, type_: type[sa.types.TypeEngine[int]] = sa.BigInteger) -> sa.Column[object]:
    return sa.Column(name, type_, nullable=False, server_default="0")


def _text(name: str, default: str | None = None) -> sa.Column[object]:
    return sa.Column(name, sa.Text, nullable=False, server_default=default)


def upgrade() -> None:
    op.create_table(
        "artifacts",
        _uuid("id", primary_key=True),
        _text("title"), _text("brief"), _text("style", ""),
        sa.Column("target_words", sa.Integer, nullable=False),
        _uuid("root_node_id", nullable=False),
        _counter("version"), _counter("word_count", sa.Integer),
        _ts("create_time"), _ts("update_time"),
    )
    op.create_table(
        "nodes",
        _uuid("id", primary_key=True),
        _uuid("artifact_id", sa.ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=False),
        _uuid("parent_id", sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=True),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        _text("title"), _text("intent", ""),
        sa.Column("target_words", sa.Integer, nullable=False),
        _text("state"), _text("summary", ""),
        _counter("word_count", sa.Integer),
        _uuid("last_run_id", nullable=True),
        _ts("create_time"), _ts("update_time"),
        sa.UniqueConstraint("parent_id", "ordinal", name="nodes_parent_ordinal_key"),
    )
    op.create_index("nodes_artifact_idx", "nodes", ["artifact_id"])
    op.create_table(
        "blocks",
        _uuid("id", primary_key=True),
        _uuid("artifact_id", sa.ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=False),
        _uuid("node_id", sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        _text("kind"),
        sa.Column("content", JSONB, nullable=False),
        _text("origin"),
        sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        _ts("create_time"), _ts("update_time"),
        sa.UniqueConstraint("node_id", "ordinal", name="blocks_node_ordinal_key"),
    )
    op.create_index("blocks_artifact_idx", "blocks", ["artifact_id"])
    op.create_table(
        "runs",
        _uuid("id", primary_key=True),
        _uuid("artifact_id", sa.ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=False),
        _text("state"),
        _uuid("scope_node_id", nullable=True),
        _text("instruction", ""),
        sa.Column("options", JSONB, nullable=False),
        _counter("head_seq"),
        _text("failure_reason", ""),
        _counter("prompt_tokens"), _counter("completion_tokens"), _counter("llm_calls"),
        _counter("llm_latency_ms"), _counter("nodes_planned", sa.Integer),
        _counter("nodes_written", sa.Integer), _counter("words_written"),
        _text("provider", ""), _text("model", ""),
        sa.Column("validation", JSONB, nullable=True),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        _counter("lease_token"),
        _ts("create_time"), _ts("update_time"),
        _ts("start_time", nullable=True, default=False), _ts("end_time", nullable=True, default=False),
    )
    op.create_index("runs_artifact_idx", "runs", ["artifact_id", "create_time"])
    op.create_index(
        "runs_one_active_per_artifact", "runs", ["artifact_id"], unique=True,
        postgresql_where=sa.text("state NOT IN ('completed', 'failed', 'cancelled')"),
    )
    op.create_table(
        "run_events",
        _uuid("run_id", sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        _text("type"),
        sa.Column("payload", JSONB, nullable=False),
        _ts("create_time"),
    )
    op.create_table(
        "change_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _uuid("artifact_id", sa.ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=False),
        _uuid("block_id", nullable=False),
        _uuid("node_id", nullable=False),
        _text("operation"), _text("origin"),
        _uuid("run_id", nullable=True), _uuid("llm_call_id", nullable=True),
        _text("model", ""),
        sa.Column("before", JSONB, nullable=True),
        sa.Column("after", JSONB, nullable=True),
        sa.Column("artifact_version", sa.BigInteger, nullable=False),
        _ts("create_time"),
    )
    op.create_index("change_events_block_idx", "change_events", ["block_id", "id"])
    op.create_index("change_events_artifact_idx", "change_events", ["artifact_id", "id"])
    op.create_table(
        "llm_calls",
        _uuid("id", primary_key=True),
        _uuid("run_id", sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        _uuid("node_id", nullable=False),
        _text("step"),
        sa.Column("attempt", sa.Integer, nullable=False),
        _text("provider"), _text("model"),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        _text("finish_reason"),
        sa.Column("context_tokens", sa.Integer, nullable=False),
        sa.Column("context_manifest", JSONB, nullable=False),
        _text("outcome"), _text("error", ""),
        _ts("create_time"),
    )
    op.create_index("llm_calls_run_idx", "llm_calls", ["run_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("method", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        _text("fingerprint"),
        _uuid("resource_id", nullable=False),
        _ts("create_time"),
    )


def downgrade() -> None:
    for table in ("idempotency_keys", "llm_calls", "change_events", "run_events", "runs", "blocks", "nodes",
                  "artifacts"):
        op.drop_table(table)
