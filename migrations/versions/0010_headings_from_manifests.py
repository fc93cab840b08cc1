"""Covered-heading references leave node_dependencies: an outline edit reads them from the stored
manifests instead (lace_engine.pipeline.staleness.FROM_MANIFESTS), since they were most of the
table's rows and of every write's WAL.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CLEANUP = "DELETE FROM node_dependencies WHERE kind = 'covered_heading'"

# The rows 0008's backfill wrote for that kind, from the same manifests.
_RESTORE = """
INSERT INTO node_dependencies (node_id, depends_on, kind, content_hash, llm_call_id)
SELECT c.node_id, (e->>'node_id')::uuid, e->>'kind', coalesce(e->>'hash', ''), c.id
FROM (
    SELECT DISTINCT ON (node_id) id, node_id, context_manifest FROM llm_calls
    WHERE step = 'write' AND outcome = 'applied'
    ORDER BY node_id, create_time DESC, id DESC
) c
JOIN nodes n ON n.id = c.node_id AND n.state = 'written'
CROSS JOIN LATERAL jsonb_array_elements(c.context_manifest) e
WHERE e->>'node_id' IS NOT NULL AND e->>'kind' = 'covered_heading'
ON CONFLICT DO NOTHING
"""


def upgrade() -> None:
    op.execute(CLEANUP)


def downgrade() -> None:
    op.execute(_RESTORE)
