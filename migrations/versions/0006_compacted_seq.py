"""How far retention has pruned each finished run's events (LACE_RETENTION_DAYS).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("compacted_seq", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("runs", "compacted_seq")
