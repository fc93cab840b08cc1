"""The one condition that scopes a query to a tenant: rows under an artifact the tenant owns.

Every lookup by a caller's id (artifact, node, block, run, source) goes through it or through a
`tenant_id` column of its own (artifacts, runs), so another tenant's id is not found, exactly like an
id that never existed: nothing tells one tenant what another has.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lace_engine.storage.schema import artifacts


def is_tenant(column: sa.ColumnElement[str], tenant: str | None) -> sa.ColumnElement[bool]:
    """True where a row's own tenant column is `tenant` (artifacts, runs); always true for None."""
    return sa.true() if tenant is None else column == tenant


def owned_by(artifact_id: Any, tenant: str | None) -> sa.ColumnElement[bool]:
    """True where the artifact `artifact_id` (a column or a value) belongs to `tenant`; always true for
    None: the engine's own work (executor, retention, mirror), which acts for every tenant."""
    if tenant is None:
        return sa.true()
    return sa.exists().where(artifacts.c.id == artifact_id, artifacts.c.tenant_id == tenant)
