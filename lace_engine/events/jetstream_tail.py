"""Live tail of the JetStream mirror for API replicas (LACE_EVENT_BUS=nats), with a Postgres fallback.

A replica receives only the runs its clients stream. While the hub has a stream of
a run, the tail holds one core NATS subscription on that run's subject,
lace.runs.<tenant>.<run_id>.events (one per run, however many streams of it), and drops it
when the run's last stream leaves. The mirror's publishes to JetStream are
ordinary messages on that subject, so the server routes each one to the stream's
storage and to exactly the replicas interested in its run: the filtering is the
server's subject routing, with no consumer state per run. Core NATS is
at-most-once, and that is enough: Postgres is the catch-up (StreamRun replays and
fills every gap from it, de-duplicating by seq), the broker only decides how soon
a stream sees a commit.

Between a SUB and the server acting on it, a publish can pass unseen; so a run's
subscription counts only once a PING sent after it came back (one flush for every
SUB queued meanwhile), and at that moment the run's streams read Postgres once
more: whatever was published before the server knew of the interest had been
committed before that read. Until then the run's NOTIFYs go to the hub as without
NATS.

The fallback keeps streams live whenever the mirror cannot deliver:
  * NATS down: the tail reports itself not live, the engine hands NOTIFYs to
    the hub again (as without NATS) and every stream re-reads Postgres; on
    reconnect the client re-sends every SUB, and once they are confirmed every
    stream re-reads Postgres again;
  * NATS up but the mirror lagging (leader hand-over, backlog): a NOTIFY whose
    head has not arrived through NATS within `fallback_s` is handed to the
    hub, which reads the missing events from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from lace_engine import metrics
from lace_engine.events.hub import EventHub
from lace_engine.events.jetstream_mirror import decode_event
from lace_engine.events.nats_bus import NatsBus, events_subject, run_id_of_subject

log = logging.getLogger(__name__)


class JetStreamTail:
    """Feeds the local EventHub with the mirrored events of the runs streamed here, while NATS is up."""

    def __init__(self, bus: NatsBus, hub: EventHub, *, fallback_s: float = 2.0, flush_timeout_s: int = 5):
        self.bus = bus
        self.hub = hub
        self.fallback_s = fallback_s
        self.flush_timeout_s = flush_timeout_s
        self.live = False
        self.delivered = 0
        self.fallbacks = 0
        # SUBs sent over the tail's life (interest churn).
        self.subscribes = 0
        # run id -> its core NATS subscription, while the hub has streams of the run.
        self._subs: dict[uuid.UUID, NatsSubscription] = {}
        # Runs whose SUB the server is known to have processed (a PING after it came back), and the others.
        self._confirmed: set[uuid.UUID] = set()
        self._unconfirmed: set[uuid.UUID] = set()
        # run id -> (head seen in a NOTIFY, when it was first awaited through NATS).
        self._expected: dict[uuid.UUID, tuple[int, float]] = {}
        # Runs whose interest changed since the last sync; every run after (re)connecting (`_resync`).
        self._changed: set[uuid.UUID] = set()
        self._resync = True
        # Set when the hub's runs or the connection changed: the sync task brings the SUBs in line.
        self._dirty = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        bus.add_listener(self._on_bus)
        hub.add_interest_listener(self._on_interest)

    def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="lace-nats-tail-watchdog")
        self._sync_task = asyncio.create_task(self._sync_loop(), name="lace-nats-tail-interest")
        self._dirty.set()

    @property
    def subscribed(self) -> frozenset[uuid.UUID]:
        """The runs this replica holds a NATS subscription for."""
        return frozenset(self._subs)

    @property
    def confirmed(self) -> frozenset[uuid.UUID]:
        """The runs whose subscription the server has processed: their commits arrive through NATS."""
        return frozenset(self._confirmed) if self.live else frozenset()

    def expect(self, run_id: uuid.UUID, head: int) -> bool:
        """A commit of `run_id` up to `head` happened; True if NATS is expected to deliver it."""
        if not self.live or run_id not in self._confirmed:
            return False
        previous = self._expected.get(run_id)
        if previous is None:
            self._expected[run_id] = (head, time.monotonic())
        elif head > previous[0]:
            self._expected[run_id] = (head, previous[1])
        return True

    def _on_interest(self, run_id: uuid.UUID, wanted: bool) -> None:
        # Coalesced: a stream that leaves and comes back before the sync task runs changes nothing.
        self._changed.add(run_id)
        self._dirty.set()

    def _on_bus(self, up: bool) -> None:
        if up:
            self._resync = True
            self._dirty.set()
            return
        self.live = False
        self._confirmed.clear()
        self._flush_expected()
        # Whatever was in flight through NATS may never arrive: every stream re-checks Postgres.
        self.hub.feed_interrupted()

    async def _sync_loop(self) -> None:
        backoff = 0.5
        # Checked, not only cancelled: before Python 3.12 a cancel that lands as nc.flush's PONG arrives
        # is swallowed by its asyncio.wait_for (python/cpython#86296), and aclose would wait for ever.
        while not self._closing:
            await self._dirty.wait()
            self._dirty.clear()
            if self._closing:
                return
            if not self.bus.up:
                continue  # _on_bus(True) sets it again
            try:
                await self._sync()
                backoff = 0.5
            except Exception as exc:
                # Unconfirmed runs are served through NOTIFY and Postgres meanwhile; retrying is all there is.
                if self.bus.up:
                    log.warning("live tail: updating NATS interest failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._dirty.set()

    async def _sync(self) -> None:
        """One SUB per run the hub streams, none for the others; then one PING confirms the new ones."""
        nc = self.bus.nc
        assert nc is not None
        if self._resync or not self.live:
            self._resync = False
            self._changed.clear()
            changed = self.hub.runs() | set(self._subs)
        else:
            changed, self._changed = self._changed, set()
        try:
            for run_id in changed:
                sub = self._subs.get(run_id)
                if self.hub.streams(run_id) == 0 and sub is not None:
                    del self._subs[run_id]
                    metrics.TAIL_RUNS.dec()
                    self._confirmed.discard(run_id)
                    self._unconfirmed.discard(run_id)
                    self._expected.pop(run_id, None)
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                elif self.hub.streams(run_id) > 0 and sub is None:
                    subject = events_subject(self.hub.tenant_of(run_id), run_id)
                    self._subs[run_id] = await nc.subscribe(subject, cb=self._on_msg)
                    metrics.TAIL_RUNS.inc()
                    self._unconfirmed.add(run_id)
                    self.subscribes += 1
        except BaseException:
            self._resync = True  # some of `changed` were not handled: look at every run next time
            raise
        if not self._unconfirmed and self.live:
            return
        # A PING after the SUBs: once its PONG is back, the server routes every later publish to us.
        await nc.flush(self.flush_timeout_s)
        if not self.bus.up:
            return
        added, self._unconfirmed = self._unconfirmed, set()
        if not self.live:
            # (Re)connected: commits since the last NOTIFY-fed publish are read from Postgres by every stream.
            self._confirmed = set(self._subs)
            self.live = True
            self.hub.feed_interrupted()
            return
        for run_id in added:
            self._confirmed.add(run_id)
            # Published before the server knew of the interest, hence committed before this read.
            self.hub.feed_interrupted(run_id)

    async def _on_msg(self, msg: Msg) -> None:
        run_id = run_id_of_subject(msg.subject)
        if run_id is None:
            return
        try:
            event = decode_event(msg.data)
        except (ValueError, KeyError, TypeError):
            log.warning("live tail: undecodable message on %s", msg.subject)
            return
        self.delivered += 1
        metrics.TAIL_RECEIVED_BYTES.inc(len(msg.data))
        self.hub.publish(run_id, [event])

    def _flush_expected(self) -> None:
        expected, self._expected = self._expected, {}
        for run_id, (head, _) in expected.items():
            self.hub.committed(run_id, head)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(self.fallback_s / 2, 0.5))
            now = time.monotonic()
            for run_id, (head, since) in list(self._expected.items()):
                known = self.hub.head(run_id)
                if known is not None and known >= head:
                    del self._expected[run_id]
                elif now - since >= self.fallback_s:
                    # A streamed run whose events are late through NATS: the hub reads them from Postgres.
                    del self._expected[run_id]
                    self.fallbacks += 1
                    self.hub.committed(run_id, head)

    async def aclose(self) -> None:
        self.live = False
        self._closing = True
        self._dirty.set()
        for task in (self._watchdog, self._sync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        subs, self._subs = list(self._subs.values()), {}
        metrics.TAIL_RUNS.dec(len(subs))
        self._confirmed.clear()
        self._unconfirmed.clear()
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
