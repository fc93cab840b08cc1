"""LLM concurrency limits: per process, and optionally global per provider across processes.

The global limit is a counting semaphore in Postgres (table llm_permits): one row
per slot, a permit is a slot with a live holder. Permits are leased, not owned:
the holding process renews them every ttl/3, so the permits of a worker killed
with SIGKILL expire after at most one TTL instead of leaking. Postgres rather
than NATS KV because runs must keep going while NATS is down, and Postgres is
already required and canonical.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from lace_engine.storage import permit_store
from lace_engine.storage.database import Database

log = logging.getLogger(__name__)

class BothLimits:
    """`async with` two limits, `first` then `second` (a tenant's permit, then the shared one), released
    in the opposite order; a failure to get the second gives the first back."""

    def __init__(self, first: AbstractAsyncContextManager[Any], second: AbstractAsyncContextManager[Any]):
        self.first = first
        self.second = second

    async def __aenter__(self) -> None:
        await self.first.__aenter__()
        try:
            await self.second.__aenter__()
        except BaseException as exc:
            await self.first.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.second.__aexit__(exc_type, exc, tb)
        finally:
            await self.first.__aexit__(exc_type, exc, tb)


@dataclass(frozen=True, slots=True)
class Permit:
    slot: int
    holder: str


class GlobalLLMLimit:
    """`async with limit:` around one provider call: a local permit, then a global one from Postgres."""

    def __init__(self, db: Database, provider: str, *, limit: int, local_limit: int, owner: str,
                 ttl_s: float = 30.0, max_poll_s: float = 0.25):
        if limit < 1:
            raise ValueError("the global LLM limit must be at least 1")
        self.db = db
        self.provider = provider
        self.limit = limit
        self.owner = owner
        self.ttl_s = ttl_s
        self.max_poll_s = max_poll_s
        self._local = asyncio.Semaphore(max(1, local_limit))
        # Only the task at the head of this FIFO polls Postgres, so a process adds at most one poller.
        self._queue = asyncio.Lock()
        self._released = asyncio.Event()
        self._held: dict[asyncio.Task[object] | None, list[Permit]] = {}
        self._slots_ready = False
        self._renew_task: asyncio.Task[None] | None = None
        self.acquired_total = 0

    @property
    def in_use(self) -> int:
        """Global permits this process holds now."""
        return sum(len(p) for p in self._held.values())

    async def __aenter__(self) -> None:
        await self._local.acquire()
        try:
            permit = await self._acquire_global()
        except BaseException:
            self._local.release()
            raise
        self._held.setdefault(asyncio.current_task(), []).append(permit)
        self.acquired_total += 1

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        task = asyncio.current_task()
        stack = self._held.get(task, [])
        permit = stack.pop() if stack else None
        if not stack:
            self._held.pop(task, None)
        try:
            if permit is not None:
                await self._release(permit)
        finally:
            self._local.release()
            self._released.set()

    async def _acquire_global(self) -> Permit:
        holder = f"{self.owner}/{uuid.uuid4().hex[:12]}"
        async with self._queue:
            if not self._slots_ready:
                async with self.db.transaction() as tx:
                    await permit_store.ensure_slots(tx.conn, self.provider, self.limit)
                self._slots_ready = True
            self._ensure_renewal()
            delay = 0.01
            while True:
                async with self.db.transaction() as tx:
                    slot = await permit_store.acquire(tx.conn, self.provider, self.limit, holder, self.ttl_s)
                if slot is not None:
                    return Permit(slot, holder)
                # A local release wakes us at once; releases in other processes are seen by polling.
                self._released.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), delay)
                delay = min(delay * 2, self.max_poll_s)

    async def _release(self, permit: Permit) -> None:
        try:
            async with self.db.transaction() as tx:
                await permit_store.release(tx.conn, self.provider, permit.slot, permit.holder)
        except Exception:
            # Not fatal: the permit expires after its TTL because nobody renews it any more.
            log.warning("releasing LLM permit %s/%d failed; it expires in %.0fs", self.provider, permit.slot,
                        self.ttl_s, exc_info=True)

    def _ensure_renewal(self) -> None:
        if self._renew_task is None or self._renew_task.done():
            self._renew_task = asyncio.create_task(self._renew_loop(), name="lace-llm-permit-renewal")

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            holders = [p.holder for stack in self._held.values() for p in stack]
            if not holders:
                continue
            try:
                async with self.db.transaction() as tx:
                    await permit_store.renew(tx.conn, self.provider, holders, self.ttl_s)
            except Exception:
                log.warning("renewing %d LLM permits failed", len(holders), exc_info=True)

    async def aclose(self) -> None:
        if self._renew_task is not None:
            self._renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew_task
