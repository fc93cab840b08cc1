"""Live fan-out of committed events to the streams of this process.

Local commits are published directly with the events in hand. Commits in other
processes arrive as (run id, head seq) only (a Postgres NOTIFY, or the JetStream
tail's fallback); the hub then reads the missing events once and publishes them
to every local stream of that run.

Each stream holds a Subscription: its cursor and a bounded queue of the batches
committed after it. A subscription whose queue cannot be trusted to hold every
event after its cursor is behind: its history is not read yet, its queue
overflowed (a slow client), the hub lost step with it, its queue has a hole, or
a newer head was seen than it received. A subscription that is behind reads
from the database; that catch-up (`Subscription.next`) is the one place a
stream's missing events are filled, so a slow client never holds the writer or
unbounded memory, and no stream waits for a heartbeat to see a commit.

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

from lace_engine.domain import RunEvent
from lace_engine.errors import Unavailable
from lace_engine.tenancy import DEFAULT_TENANT

log = logging.getLogger(__name__)

Fetch = Callable[[uuid.UUID, int, int], Awaitable[list[RunEvent]]]
# interest(run_id, True) when a run gets its first local stream, (run_id, False) when its last one leaves.
Interest = Callable[[uuid.UUID, bool], None]


class Subscription:
    """One stream's place in a run: its cursor, and a bounded queue of the batches committed after it."""

    __slots__ = ("_behind", "_catching_up", "_cursor", "_deadline", "_hub", "_max_pending", "_pending", "_ready",
                 "run_id")

    def __init__(self, hub: EventHub, run_id: uuid.UUID, cursor: int, max_pending: int):
        self._hub = hub
        self.run_id = run_id
        self._cursor = cursor
        self._max_pending = max_pending
        self._pending: deque[list[RunEvent]] = deque()
        self._ready = asyncio.Event()
        # The queue may lack events after the cursor (dropped on overflow, or never offered): the next
        # read from the database, which starts after this is cleared, covers them.
        self._behind = False
        # Reading the database until a read comes back short; first, the history after the cursor.
        self._catching_up = True
        # While waiting: when the hub's timer ends the wait (loop time); 0 otherwise.
        self._deadline = 0.0

    @property
    def cursor(self) -> int:
        """The seq of the last event handed out (the stream's resume point)."""
        return self._cursor

    @property
    def head(self) -> int:
        """The newest seq this process knows of for the run, at least the cursor."""
        return max(self._cursor, self._hub.head(self.run_id) or 0)

    async def next(self, limit: int, wait_s: float) -> list[RunEvent]:
        """The events right after the cursor, in seq order and at most `limit`, and moves the cursor past
        them; [] when nothing came for about `wait_s` (a heartbeat is due).

        While behind they are read from the database, otherwise taken from the queue (a queued batch
        stays one answer, split only past `limit`). Raises Unavailable once the hub is closed.
        """
        while True:
            if self._hub.closed:
                raise Unavailable("the server is shutting down; reconnect with your cursor",
                                  reason="SERVER_SHUTTING_DOWN", metadata={"cursor": str(self._cursor)})
            if self._behind or self._catching_up:
                self._behind = False
                events = await self._hub._fetch(self.run_id, self._cursor, self._cursor + limit)
                self._catching_up = len(events) >= limit
                if events:
                    self._cursor = events[-1].seq
                    return events
                continue
            events = self._take(limit)
            if events:
                return events
            if not await self._wait(wait_s):
                return []

    def committed(self, head: int) -> None:
        """The run's events up to `head` are committed: if this subscription did not receive them all,
        its next call reads them from the database."""
        received = self._pending[-1][-1].seq if self._pending else self._cursor
        if head > max(received, self._cursor):
            self._fall_behind()

    def close(self) -> None:
        self._hub._unsubscribe(self)

    def _take(self, limit: int) -> list[RunEvent]:
        """The next queued events right after the cursor; [] when there are none, or after a hole."""
        while self._pending:
            batch = self._pending.popleft()
            if batch[-1].seq <= self._cursor:
                continue
            if batch[0].seq <= self._cursor:
                batch = [e for e in batch if e.seq > self._cursor]
            if batch[0].seq != self._cursor + 1:
                # Published before this stream subscribed, or by a hub that lost step: read the rest.
                self._fall_behind()
                return []
            if len(batch) > limit:
                self._pending.appendleft(batch[limit:])
                batch = batch[:limit]
            self._cursor = batch[-1].seq
            return batch
        return []

    def _offer(self, events: list[RunEvent]) -> None:
        if len(self._pending) >= self._max_pending:
            self._fall_behind()
        else:
            self._pending.append(events)
            self._ready.set()

    def _fall_behind(self) -> None:
        self._behind = True
        self._pending.clear()
        self._ready.set()

    def _ready_now(self) -> bool:
        return bool(self._pending) or self._behind or self._hub.closed

    async def _wait(self, seconds: float) -> bool:
        """Waits until something is ready (True) or about `seconds` pass (False)."""
        if self._ready_now():
            return True
        self._ready.clear()
        # The hub's one timer ends quiet waits (heartbeats): a timeout per wait would cost every
        # stream a timer handle per commit, ~half of what waking it costs.
        self._deadline = asyncio.get_running_loop().time() + seconds
        self._hub._watch_deadline(seconds)
        try:
            await self._ready.wait()
        finally:
            self._deadline = 0.0
        return self._ready_now()


class EventHub:
    """Per-process registry of live streams, keyed by run."""

    def __init__(self, fetch: Fetch, *, max_pending: int = 256):
        self._fetch = fetch
        self._max_pending = max_pending
        self._subs: dict[uuid.UUID, set[Subscription]] = {}
        self._tenants: dict[uuid.UUID, str] = {}
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
        self._interest: list[Interest] = []
        self.closed = False

    def add_interest_listener(self, listener: Interest) -> None:
        """listener(run_id, True) when a run gets its first local stream, (run_id, False) after its last:
        a feed of commits (the NATS tail) may then receive only the runs streamed here."""
        self._interest.append(listener)

    def runs(self) -> set[uuid.UUID]:
        """The runs with local streams now (a copy)."""
        return set(self._subs)

    def tenant_of(self, run_id: uuid.UUID) -> str:
        """The tenant of a run streamed here (as its first stream said)."""
        return self._tenants.get(run_id, DEFAULT_TENANT)

    def streams(self, run_id: uuid.UUID) -> int:
        """How many local streams the run has now."""
        return len(self._subs.get(run_id, ()))

    def subscribe(self, run_id: uuid.UUID, cursor: int, *, tenant: str = DEFAULT_TENANT) -> Subscription:
        """A stream of the run (of `tenant`)'s events after `cursor`: first its history, then live
        (`Subscription.next`)."""
        sub = Subscription(self, run_id, cursor, self._max_pending)
        subs = self._subs.get(run_id)
        if subs is None:
            subs = self._subs[run_id] = set()
            self._tenants[run_id] = tenant
            self._tell_interest(run_id, True)
        subs.add(sub)
        return sub

    def _tell_interest(self, run_id: uuid.UUID, wanted: bool) -> None:
        for listener in self._interest:
            try:
                listener(run_id, wanted)
            except Exception:
                log.exception("interest listener failed")

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.run_id]
            self._tenants.pop(sub.run_id, None)
            self._published.pop(sub.run_id, None)
            self._wanted.pop(sub.run_id, None)
            self._held.pop(sub.run_id, None)
            self._tell_interest(sub.run_id, False)

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
                        sub._fall_behind()
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

    def committed(self, run_id: uuid.UUID, head: int) -> None:
        """The run's events up to `head` are committed, maybe by another process: local streams get them."""
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
            # We do not know what the streams have; each that lacks events up to `wanted` reads them.
            self._published[run_id] = wanted
            for sub in self._subs.get(run_id, ()):
                sub.committed(wanted)
            return
        self._wanted[run_id] = wanted
        if run_id not in self._fetching:
            self._fetching[run_id] = asyncio.create_task(self._fetch_missing(run_id))

    def feed_interrupted(self, run_id: uuid.UUID | None = None) -> None:
        """A feed of commits (LISTEN, NATS) was interrupted, or only just started, and commits may have
        been missed (of `run_id`, or of any run): the hub forgets what it published and those streams
        read the database again."""
        if run_id is None:
            self._published.clear()
            groups = list(self._subs.values())
        else:
            self._published.pop(run_id, None)
            groups = [self._subs.get(run_id, set())]
        for subs in groups:
            for sub in subs:
                sub._fall_behind()

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
                sub._fall_behind()
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
                    if 0.0 < sub._deadline <= now:
                        sub._ready.set()

    def close(self) -> None:
        """Ends every stream (server shutdown): they raise Unavailable so clients reconnect elsewhere."""
        self.closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub._ready.set()

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
