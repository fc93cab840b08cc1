"""Stale sections: a node's stale_reason, the run's stale_only scope, and node_dependencies.

node_dependencies holds, for every written node, the nodes its latest applied write call's
context manifest referenced (kind and content hash), replaced in the transaction that writes the
node; the upgrade fills it from the manifests already stored in llm_calls.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Every written node's latest applied write call, and the node ids its manifest names.
_BACKFILL = """
INSERT INTO node_dependencies (node_id, depends_on, kind, content_hash, llm_call_id)
SELECT c.node_id, (e->>'node_id')::uuid, e->>'kind', coalesce(e->>'hash', ''), c.id
FROM (
    SELECT DISTINCT ON (node_id) id, node_id, context_manifest FROM llm_calls
    WHERE step = 'write' AND outcome = 'applied'
    ORDER BY node_id, create_time DESC, id DESC
) c
JOIN nodes n ON n.id = c.node_id AND n.state = 'written'
CROSS JOIN LATERAL jsonb_array_elements(c.context_manifest) e
WHERE e->>'node_id' IS NOT NULL
ON CONFLICT DO NOTHING
"""


def upgrade() -> None:
    op.add_column("nodes", sa.Column("stale_reason", sa.Text, nullable=False, server_default=""))
    op.add_column("runs", sa.Column("stale_only", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "node_dependencies",
        sa.Column("node_id", UUID(as_uuid=True), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("depends_on", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("llm_call_id", UUID(as_uuid=True), nullable=False),
    )
    op.create_index("node_dependencies_depends_on_idx", "node_dependencies", ["depends_on"])
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_index("node_dependencies_depends_on_idx", table_name="node_dependencies")
    op.drop_table("node_dependencies")
    op.drop_column("runs", "stale_only")
    op.drop_column("nodes", "stale_reason")
