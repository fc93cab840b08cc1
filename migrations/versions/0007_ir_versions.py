"""ForkArtifact's link back on artifacts; node and artifact history, so an artifact can be read and
compiled as it was at any version
(blocks already have theirs in change_events). Existing artifacts get their current state as the
first version kept.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# Every existing artifact's current state as its first version kept (tests run these for one artifact).
BACKFILL_NODES = ("INSERT INTO node_versions (artifact_id, node_id, artifact_version, node, create_time) "
                  "SELECT n.artifact_id, n.id, a.version, to_jsonb(n), a.update_time "
                  "FROM nodes n JOIN artifacts a ON a.id = n.artifact_id")
BACKFILL_ARTIFACTS = ("INSERT INTO artifact_versions (artifact_id, artifact_version, title, brief, style, "
                      "target_words, create_time) SELECT a.id, a.version, a.title, a.brief, a.style, a.target_words, "
                      "a.update_time FROM artifacts a")


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("forked_from_id", UUID(as_uuid=True), nullable=True))
    op.add_column("artifacts", sa.Column("forked_from_version", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "node_versions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("node_id", UUID(as_uuid=True), nullable=False),
        sa.Column("artifact_version", sa.BigInteger, nullable=False),
        sa.Column("node", JSONB, nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.create_index("node_versions_artifact_idx", "node_versions", ["artifact_id", "artifact_version"])
    op.create_table(
        "artifact_versions",
        sa.Column("artifact_id", UUID(as_uuid=True), sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("artifact_version", sa.BigInteger, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("brief", sa.Text, nullable=False),
        sa.Column("style", sa.Text, nullable=False),
        sa.Column("target_words", sa.Integer, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.execute(BACKFILL_NODES)
    op.execute(BACKFILL_ARTIFACTS)


def downgrade() -> None:
    op.drop_table("artifact_versions")
    op.drop_table("node_versions")
    op.drop_column("artifacts", "forked_from_version")
    op.drop_column("artifacts", "forked_from_id")
