"""Live fan-out of committed events to the streams of this process.

Local commits are published directly with the events in hand. Commits in other
processes arrive as a Postgres NOTIFY carrying only (run id, head seq); the hub
then reads the missing events once and publishes them to every local stream of
that run. Each stream has a bounded queue: a stream that falls behind is marked
overflowed and its queue dropped, and it catches up from the database instead,
so a slow client never holds the writer or unbounded memory.

The hub hands each run's events to its streams in seq order and once. A run's
commits are serialized by its row lock, but concurrent tasks of this process
learn of their own commits in any order, and their NOTIFY can arrive before
the commit returns: while a local transaction of the run is settling, the hub
holds batches that would leave a gap and defers reads for NOTIFYs, so events
committed here are never read back from Postgres, by the hub or by a stream.
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

    __slots__ = ("_hub", "_pending", "_ready", "deadline", "max_pending", "overflowed", "run_id", "woken")

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
        # While waiting: when the hub's timer ends the wait (loop time); 0 otherwise.
        self.deadline = 0.0

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

    def _ready_now(self) -> bool:
        return bool(self._pending) or self.overflowed or self.woken

    async def wait(self, seconds: float) -> bool:
        """Waits until something is ready (True) or about `seconds` pass (False)."""
        if self._ready_now():
            return True
        self._ready.clear()
        # The hub's one timer ends quiet waits (heartbeats): a timeout per wait would cost every
        # stream a timer handle per commit, ~half of what waking it costs.
        self.deadline = asyncio.get_running_loop().time() + seconds
        self._hub._watch_deadline(seconds)
        try:
            await self._ready.wait()
        finally:
            self.deadline = 0.0
        return self._ready_now()

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
        # Highest seq published, without gaps, per run with subscribers.
        self._published: dict[uuid.UUID, int] = {}
        # Batches that arrived ahead of a gap, waiting for the events before them.
        self._held: dict[uuid.UUID, list[list[RunEvent]]] = {}
        self._fetching: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._wanted: dict[uuid.UUID, int] = {}
        # Local transactions per run that wrote events and have not settled (committed or failed).
        self._local: dict[uuid.UUID, int] = {}
        self._timer: asyncio.Task[None] | None = None
        self._tick_s = 1.0
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
            self._held.pop(sub.run_id, None)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def head(self, run_id: uuid.UUID) -> int | None:
        return self._published.get(run_id)

    def pending(self, run_id: uuid.UUID) -> None:
        """A transaction of this process wrote events of the run and is about to commit."""
        self._local[run_id] = self._local.get(run_id, 0) + 1

    def settled(self, run_id: uuid.UUID, events: list[RunEvent] | None) -> None:
        """That transaction committed `events`, or did not commit (None; maybe it did, unseen)."""
        left = self._local.get(run_id, 0) - 1
        if left > 0:
            self._local[run_id] = left
        else:
            self._local.pop(run_id, None)
        if events:
            self.publish(run_id, events)
        if left <= 0:
            self._want(run_id, 0)

    def publish(self, run_id: uuid.UUID, events: list[RunEvent]) -> None:
        """Hands committed events to every local stream of the run, in order and once; never blocks."""
        subs = self._subs.get(run_id)
        if not subs or not events:
            return
        known = self._published.get(run_id)
        if known is not None:
            if events[-1].seq <= known:
                return
            if events[0].seq <= known:
                events = [e for e in events if e.seq > known]
            if events[0].seq > known + 1:
                # The events before these are still on their way (a local commit settling, or a read).
                waiting = self._held.setdefault(run_id, [])
                waiting.append(events)
                if len(waiting) > self._max_pending:
                    # The gap is not filling (reads failing?): every stream catches up from the
                    # database instead, and the hub carries on from the newest seq it has seen.
                    del self._held[run_id]
                    self._published[run_id] = max(batch[-1].seq for batch in waiting)
                    for sub in subs:
                        sub._wake()
                    return
                self._want(run_id, events[0].seq - 1)
                return
        self._deliver(run_id, subs, events)
        held = self._held.get(run_id)
        if held:
            held.sort(key=lambda batch: batch[0].seq)
        while held:
            known = self._published[run_id]
            batch = [e for e in held[0] if e.seq > known]
            if batch and batch[0].seq > known + 1:
                break
            held.pop(0)
            if batch:
                self._deliver(run_id, subs, batch)
        if held is not None and not held:
            del self._held[run_id]

    def _deliver(self, run_id: uuid.UUID, subs: set[Subscription], events: list[RunEvent]) -> None:
        self._published[run_id] = events[-1].seq
        for sub in subs:
            sub._offer(events)

    def notify(self, run_id: uuid.UUID, head: int) -> None:
        """A commit happened somewhere (maybe another process): make sure local streams get it."""
        if run_id in self._subs:
            self._want(run_id, head)

    def _want(self, run_id: uuid.UUID, upto: int) -> None:
        """Events up to `upto` are committed: get what is missing unless a local commit will publish it."""
        wanted = max(upto, self._wanted.pop(run_id, 0))
        known = self._published.get(run_id)
        if wanted == 0 or (known is not None and wanted <= known):
            return
        if run_id in self._local:
            self._wanted[run_id] = wanted  # settled() comes back here
            return
        if known is None:
            # We do not know what the streams have; let each fill its own gap from the database.
            self._published[run_id] = wanted
            for sub in self._subs.get(run_id, ()):
                sub._wake()
            return
        self._wanted[run_id] = wanted
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
            self._held.pop(run_id, None)
            for sub in self._subs.get(run_id, ()):
                sub._wake()
        finally:
            self._fetching.pop(run_id, None)

    def _watch_deadline(self, seconds: float) -> None:
        # Deadlines are checked every fifth of the shortest wait asked for: a wait ends at most
        # 20% late, which is all a heartbeat needs.
        self._tick_s = min(self._tick_s, max(seconds / 5, 0.005))
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._expire_waits(), name="lace-stream-heartbeats")

    async def _expire_waits(self) -> None:
        loop = asyncio.get_running_loop()
        while self._subs:
            await asyncio.sleep(self._tick_s)
            now = loop.time()
            for subs in list(self._subs.values()):
                for sub in subs:
                    if 0.0 < sub.deadline <= now:
                        sub._ready.set()

    def close(self) -> None:
        """Ends every stream (server shutdown): they raise Unavailable so clients reconnect elsewhere."""
        self.closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub._wake()

    async def aclose(self) -> None:
        self.close()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        for task in list(self._fetching.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
