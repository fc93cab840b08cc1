"""Live tail from JetStream for API replicas (LACE_EVENT_BUS=nats), with a Postgres fallback.

One ephemeral ordered consumer per process on lace.runs.*.events, delivering
only new messages, feeds EventHub.publish with the decoded events. StreamRun
still replays history from Postgres and de-duplicates by seq, so the broker
never defines what a client sees, only how soon.

The fallback keeps streams live whenever the mirror cannot deliver:
  * NATS down: the tail reports itself not live, the engine hands NOTIFYs to
    the hub again (as without NATS) and every stream re-reads Postgres;
  * NATS up but the mirror lagging (leader hand-over, backlog): a NOTIFY whose
    head has not arrived through JetStream within `fallback_s` is handed to
    the hub, which reads the missing events from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from lace_engine.events.hub import EventHub
from lace_engine.events.jetstream_mirror import decode_event
from lace_engine.events.nats_bus import EVENTS_STREAM, EVENTS_SUBJECTS, NatsBus, run_id_of_subject

log = logging.getLogger(__name__)


class JetStreamTail:
    """Feeds the local EventHub from JetStream while NATS is up."""

    def __init__(self, bus: NatsBus, hub: EventHub, *, fallback_s: float = 2.0):
        self.bus = bus
        self.hub = hub
        self.fallback_s = fallback_s
        self.live = False
        self.delivered = 0
        self.fallbacks = 0
        self._sub: JetStreamContext.PushSubscription | None = None
        # run id -> (head seen in a NOTIFY, when it was first awaited through JetStream).
        self._expected: dict[uuid.UUID, tuple[int, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Up/down can flap faster than a subscribe completes; one (re)subscription at a time.
        self._subscribing = asyncio.Lock()
        self._watchdog: asyncio.Task[None] | None = None
        bus.add_listener(self._on_bus)

    def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="lace-nats-tail-watchdog")
        if self.bus.up:
            self._on_bus(True)

    def expect(self, run_id: uuid.UUID, head: int) -> bool:
        """A commit of `run_id` up to `head` happened; True if JetStream is expected to deliver it."""
        if not self.live:
            return False
        previous = self._expected.get(run_id)
        if previous is None:
            self._expected[run_id] = (head, time.monotonic())
        elif head > previous[0]:
            self._expected[run_id] = (head, previous[1])
        return True

    def _on_bus(self, up: bool) -> None:
        if up:
            self._spawn(self._subscribe())
            return
        self.live = False
        self._flush_expected()
        # Whatever was in flight through NATS may never arrive: every stream re-checks Postgres.
        self.hub.feed_interrupted()

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self) -> None:
        async with self._subscribing:
            await self._unsubscribe()
            backoff = 0.5
            while self.bus.up:
                try:
                    js = self.bus.jetstream()
                    self._sub = await js.subscribe(EVENTS_SUBJECTS, stream=EVENTS_STREAM, cb=self._on_msg,
                                                   ordered_consumer=True, deliver_policy=DeliverPolicy.NEW,
                                                   idle_heartbeat=1.0, inactive_threshold=30.0)
                    break
                except Exception as exc:
                    # Streams are served from Postgres meanwhile, so retrying is all there is to do.
                    log.warning("live tail: subscribing to JetStream failed (%s); retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
            self.live = self._sub is not None and self.bus.up
            if not self.live:
                return
        # Commits between the last NOTIFY-fed publish and the consumer's start are read from Postgres.
        self.hub.feed_interrupted()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

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
                    del self._expected[run_id]
                    if known is not None:  # a watched run whose events are late through JetStream
                        self.fallbacks += 1
                    self.hub.committed(run_id, head)

    async def aclose(self) -> None:
        self.live = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._unsubscribe()
