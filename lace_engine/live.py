"""Live fan-out of committed events to the streams of this process.

Local commits are published directly with the events in hand. Commits in other
processes arrive as a Postgres NOTIFY carrying only (run id, head seq); the hub
then reads the missing events once and publishes them to every local stream of
that run. Each stream has a bounded queue: a stream that falls behind is marked
overflowed and its queue dropped, and it catches up from the database instead,
so a slow client never holds the writer or unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

from lace_engine.model import RunEvent

log = logging.getLogger(__name__)

Fetch = Callable[[uuid.UUID, int, int], Awaitable[list[RunEvent]]]


class Subscription:
    """One stream's view of the hub: a bounded queue of committed batches."""

    __slots__ = ("_hub", "_pending", "_ready", "max_pending", "overflowed", "run_id", "woken")

    def __init__(self, hub: EventHub, run_id: uuid.UUID, max_pending: int):
        self._hub = hub
        self.run_id = run_id
        self.max_pending = max_pending
        self._pending: deque[list[RunEvent]] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        # Set when events may have been committed that this queue did not receive (e.g. after
        # the NOTIFY connection dropped); the stream then fills the gap from the database.
        self.woken = False

    def _offer(self, events: list[RunEvent]) -> None:
        if self.overflowed:
            return
        if len(self._pending) >= self.max_pending:
            self.overflowed = True
            self._pending.clear()
        else:
            self._pending.append(events)
        self._ready.set()

    def _wake(self) -> None:
        self.woken = True
        self._ready.set()

    async def wait(self, seconds: float) -> bool:
        """Waits until something is ready (True) or `seconds` pass (False)."""
        if self._pending or self.overflowed or self.woken:
            return True
        self._ready.clear()
        try:
            # asyncio.timeout, not wait_for: no extra task per wait (one per stream per commit).
            async with asyncio.timeout(seconds):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def drain(self) -> list[list[RunEvent]]:
        """Takes every queued batch."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def reset(self) -> None:
        """Clears the overflow and wake marks after the stream caught up from the database."""
        self.overflowed = False
        self.woken = False

    def close(self) -> None:
        self._hub._unsubscribe(self)


class EventHub:
    """Per-process registry of live streams, keyed by run."""

    def __init__(self, fetch: Fetch, *, max_pending: int = 256):
        self._fetch = fetch
        self._max_pending = max_pending
        self._subs: dict[uuid.UUID, set[Subscription]] = {}
        # Highest seq already published per run with subscribers.
        self._published: dict[uuid.UUID, int] = {}
        self._fetching: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._wanted: dict[uuid.UUID, int] = {}
        self.closed = False

    def subscribe(self, run_id: uuid.UUID) -> Subscription:
        sub = Subscription(self, run_id, self._max_pending)
        self._subs.setdefault(run_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.run_id]
            self._published.pop(sub.run_id, None)
            self._wanted.pop(sub.run_id, None)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def head(self, run_id: uuid.UUID) -> int | None:
        return self._published.get(run_id)

    def publish(self, run_id: uuid.UUID, events: list[RunEvent]) -> None:
        """Hands committed events to every local stream of the run; never blocks."""
        subs = self._subs.get(run_id)
        if not subs or not events:
            return
        last = events[-1].seq
        if last > self._published.get(run_id, 0):
            self._published[run_id] = last
        for sub in subs:
            sub._offer(events)

    def notify(self, run_id: uuid.UUID, head: int) -> None:
        """A commit happened somewhere (maybe another process): make sure local streams get it."""
        if run_id not in self._subs:
            return
        known = self._published.get(run_id)
        if known is None:
            # We do not know what the streams have; let each fill its own gap from the database.
            self._published[run_id] = head
            for sub in self._subs[run_id]:
                sub._wake()
            return
        if head <= known:
            return
        self._wanted[run_id] = max(head, self._wanted.get(run_id, 0))
        if run_id not in self._fetching:
            self._fetching[run_id] = asyncio.create_task(self._fetch_missing(run_id))

    def wake_all(self) -> None:
        """Every stream re-checks the database (after the notification channel was interrupted)."""
        self._published.clear()
        for subs in self._subs.values():
            for sub in subs:
                sub._wake()

    async def _fetch_missing(self, run_id: uuid.UUID) -> None:
        try:
            while run_id in self._subs:
                known = self._published.get(run_id, 0)
                wanted = self._wanted.get(run_id, 0)
                if wanted <= known:
                    break
                events = await self._fetch(run_id, known, wanted)
                if not events:
                    break
                self.publish(run_id, events)
        except Exception:
            log.exception("fetching events for live streams failed; waking streams to re-read")
            for sub in self._subs.get(run_id, ()):
                sub._wake()
        finally:
            self._fetching.pop(run_id, None)

    def close(self) -> None:
        """Ends every stream (server shutdown): they raise Unavailable so clients reconnect elsewhere."""
        self.closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub._wake()

    async def aclose(self) -> None:
        self.close()
        for task in list(self._fetching.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
