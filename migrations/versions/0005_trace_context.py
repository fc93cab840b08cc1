"""The W3C trace context of the StartRun call that created a run, so its execution joins that trace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("trace_context", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "trace_context")
