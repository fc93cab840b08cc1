"""The llm_permits table: a counting semaphore per provider, one row per slot, leased to holders."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

_ENSURE_SLOTS = sa.text(
    "INSERT INTO llm_permits (provider, slot) SELECT :provider, g FROM generate_series(0, :limit - 1) AS g "
    "ON CONFLICT DO NOTHING"
)
# SKIP LOCKED: concurrent acquirers take different free slots instead of queueing on one row.
_ACQUIRE = sa.text(
    "UPDATE llm_permits SET holder = :holder, expires = now() + make_interval(secs => :ttl) "
    "WHERE provider = :provider AND slot = ("
    "  SELECT slot FROM llm_permits WHERE provider = :provider AND slot < :limit "
    "  AND (holder IS NULL OR expires < now()) ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "RETURNING slot"
)
_RELEASE = sa.text(
    "UPDATE llm_permits SET holder = NULL, expires = NULL "
    "WHERE provider = :provider AND slot = :slot AND holder = :holder"
)
_RENEW = sa.text(
    "UPDATE llm_permits SET expires = now() + make_interval(secs => :ttl) "
    "WHERE provider = :provider AND holder = ANY(:holders)"
)


async def ensure_slots(conn: AsyncConnection, provider: str, limit: int) -> None:
    """Creates the provider's slots 0..limit-1 that do not exist yet."""
    await conn.execute(_ENSURE_SLOTS, {"provider": provider, "limit": limit})


async def acquire(conn: AsyncConnection, provider: str, limit: int, holder: str, ttl_s: float) -> int | None:
    """Leases a free (or expired) slot below `limit` to `holder`; its number, or None when all are held."""
    slot = (await conn.execute(_ACQUIRE, {"holder": holder, "ttl": ttl_s, "provider": provider,
                                          "limit": limit})).scalar()
    return None if slot is None else int(slot)


async def release(conn: AsyncConnection, provider: str, slot: int, holder: str) -> None:
    """Frees the slot if `holder` still holds it."""
    await conn.execute(_RELEASE, {"provider": provider, "slot": slot, "holder": holder})


async def renew(conn: AsyncConnection, provider: str, holders: list[str], ttl_s: float) -> None:
    """Extends the leases of every slot these holders hold."""
    await conn.execute(_RENEW, {"ttl": ttl_s, "provider": provider, "holders": holders})
