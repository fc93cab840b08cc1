"""Phase 1 scale-out: the event mirror's per-run cursors and the global LLM permits.

The event log itself is the outbox (durable, ordered, committed with the state
change); `mirror_cursors` records how far each run has been published to
JetStream. `llm_permits` is a counting semaphore per provider whose permits
expire, so a crashed worker cannot hold one for ever.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirror_cursors",
        sa.Column("run_id", UUID(as_uuid=True), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("published_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.create_table(
        "llm_permits",
        sa.Column("provider", sa.Text, primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("holder", sa.Text, nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("llm_permits")
    op.drop_table("mirror_cursors")
