"""The preflight estimate of a run (calls and tokens), made at StartRun from the tree and the options,
and the machine-readable code of a failed run's reason.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("estimate", JSONB, nullable=True))
    op.add_column("runs", sa.Column("failure_code", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("runs", "failure_code")
    op.drop_column("runs", "estimate")
