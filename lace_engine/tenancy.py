"""Tenants: who owns an artifact and everything under it, and the names a tenant may have.

A tenant is a name bound to API keys (LACE_API_KEYS); every read and write of the engine's public
methods is scoped to the caller's tenant in storage, and another tenant's ids are simply not found.
Without tenant-bound keys everything belongs to DEFAULT_TENANT.
"""

from __future__ import annotations

import re

from lace_engine.errors import InvalidArgument

DEFAULT_TENANT = "default"

# Lower-case letters, digits, '-' and '_': safe in a NATS subject token, a metric label and a log line.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def check_tenant(name: str) -> str:
    """`name` if it is a valid tenant name; InvalidArgument otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"tenant {name[:70]!r} is not a valid name: 1 to 63 of a-z, 0-9, '-', '_', "
                              "starting with a letter or digit", reason="INVALID_TENANT")
    return name
