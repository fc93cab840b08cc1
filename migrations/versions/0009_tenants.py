"""Tenants: artifacts and runs carry their tenant; idempotency keys are per tenant.

Everything that exists belongs to the tenant "default" (what a server without tenant-bound API keys
uses), so an upgrade changes nothing a client sees.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("tenant_id", sa.Text, nullable=False, server_default="default"))
    op.create_index("artifacts_tenant_idx", "artifacts", ["tenant_id", "create_time", "id"])
    op.add_column("runs", sa.Column("tenant_id", sa.Text, nullable=False, server_default="default"))
    op.create_index("runs_tenant_idx", "runs", ["tenant_id", "create_time"])
    op.add_column("idempotency_keys", sa.Column("tenant_id", sa.Text, nullable=False, server_default="default"))
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["tenant_id", "method", "request_id"])


def downgrade() -> None:
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.execute("DELETE FROM idempotency_keys WHERE tenant_id <> 'default'")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["method", "request_id"])
    op.drop_column("idempotency_keys", "tenant_id")
    op.drop_index("runs_tenant_idx", table_name="runs")
    op.drop_column("runs", "tenant_id")
    op.drop_index("artifacts_tenant_idx", table_name="artifacts")
    op.drop_column("artifacts", "tenant_id")
