"""The event mirror: publishes committed run events to JetStream, in order per run, exactly once.

The outbox is the event log itself: events are committed with their state
change, durable and gap-free per run, so a process that dies between COMMIT
and publish loses nothing. `mirror_cursors.published_seq` is how far each run
has been published; it only advances over a contiguous prefix of acknowledged
messages, after the acks.

One publisher at a time: every process with the mirror enabled competes for a
Postgres session advisory lock held on a dedicated connection; the holder is
the leader. When it dies, its connection closes, the lock is released and
another process takes over from the cursors.

Why there are no duplicates and no reordering in the stream:
  * every message carries Nats-Msg-Id "<run_id>:<seq>", so JetStream drops a
    second copy within its duplicate window;
  * when the outcome of a publish is unknown (timeout, disconnect, a new
    leader), the run is reconciled first: the last stored message of the run's
    subject is read and the cursor moved past it, so no duplicate is stored
    even after the window;
  * each publisher sends a contiguous, increasing range of seqs starting at or
    below (last stored + 1) over one connection (TCP order), so the first copy
    of seq k+1 always reaches JetStream after the first copy of seq k, even if
    two publishers briefly overlap during a leader hand-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
import psycopg
import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.api import PubAck

from lace_engine import metrics
from lace_engine.domain import EventType, RunEvent
from lace_engine.events.nats_bus import EVENTS_STREAM, NatsBus, events_subject, msg_id
from lace_engine.storage import event_log
from lace_engine.storage.database import Database, driver_connection

log = logging.getLogger(__name__)

# pg_advisory_lock key of the mirror leader ("LACEMIRR" read as a signed 64-bit integer).
LEADER_LOCK_KEY = int.from_bytes(b"LACEMIRR", "big", signed=True)

SEQ_HEADER = "Lace-Seq"

_PENDING_RUNS = sa.text(
    "SELECT r.id, r.head_seq, COALESCE(c.published_seq, 0) AS published_seq "
    "FROM runs r LEFT JOIN mirror_cursors c ON c.run_id = r.id "
    "WHERE r.head_seq > COALESCE(c.published_seq, 0) ORDER BY r.update_time LIMIT :limit"
)
_PENDING_OF = sa.text(
    "SELECT r.id, r.tenant_id, r.head_seq, COALESCE(c.published_seq, 0) AS published_seq "
    "FROM runs r LEFT JOIN mirror_cursors c ON c.run_id = r.id "
    "WHERE r.id = ANY(:ids) AND r.head_seq > COALESCE(c.published_seq, 0)"
)
_ADVANCE = sa.text(
    "INSERT INTO mirror_cursors (run_id, published_seq, update_time) VALUES (:run_id, :seq, now()) "
    "ON CONFLICT (run_id) DO UPDATE SET published_seq = GREATEST(mirror_cursors.published_seq, "
    "EXCLUDED.published_seq), update_time = now()"
)


def encode_event(event: RunEvent) -> bytes:
    """The message body: the event as JSON (what the live tail decodes)."""
    return json.dumps({
        "run_id": str(event.run_id), "seq": event.seq, "type": event.type.value, "payload": event.payload,
        "create_time": event.create_time.isoformat(),
    }, separators=(",", ":")).encode()


def decode_event(data: bytes) -> RunEvent:
    raw = json.loads(data)
    return RunEvent(run_id=uuid.UUID(raw["run_id"]), seq=int(raw["seq"]), type=EventType(raw["type"]),
                    payload=raw["payload"], create_time=datetime.fromisoformat(raw["create_time"]))


class EventMirror:
    """Leader-elected publisher of the event log to JetStream; tell it of commits with committed()."""

    def __init__(self, db: Database, bus: NatsBus, *, max_inflight: int = 256, batch_events: int = 2000,
                 ack_timeout_s: float = 5.0, scan_interval_s: float = 10.0, election_interval_s: float = 1.0):
        self.db = db
        self.bus = bus
        self.max_inflight = max_inflight
        self.batch_events = batch_events
        self.ack_timeout_s = ack_timeout_s
        self.scan_interval_s = scan_interval_s
        self.election_interval_s = election_interval_s
        self.is_leader = False
        self.published_total = 0
        self._dirty: set[uuid.UUID] = set()
        self._uncertain: set[uuid.UUID] = set()
        self._full_scan = True
        # Set on taking leadership: a previous leader may have died between a publish and its cursor update.
        self._reconcile_next_scan = True
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._js: JetStreamContext | None = None
        bus.add_listener(self._on_bus)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lace-event-mirror")

    def committed(self, run_id: uuid.UUID | None = None) -> None:
        """New events may be committed (of `run_id`, or of any run): the leader publishes them."""
        if run_id is None:
            self._full_scan = True
        else:
            self._dirty.add(run_id)
        self._work.set()

    def pending(self, run_id: uuid.UUID) -> None:
        """Nothing to prepare: the mirror publishes what Postgres says committed."""

    def settled(self, run_id: uuid.UUID, events: list[RunEvent] | None) -> None:
        # Also after an unconfirmed commit: the mirror's read decides whether there is anything new.
        self.committed(run_id)

    def _on_bus(self, up: bool) -> None:
        if up:
            self._full_scan = True
            self._work.set()

    async def _run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.db.url, autocommit=True) as lock_conn:
                    while True:
                        if await self._try_lock(lock_conn):
                            break
                        # Polling, not pg_advisory_lock(): a blocked call would hide a dead connection.
                        await asyncio.sleep(self.election_interval_s)
                    log.info("event mirror: this process is the leader")
                    self.is_leader = True
                    self._full_scan = True
                    self._reconcile_next_scan = True
                    await self._lead(lock_conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event mirror: %s; re-electing", exc)
            finally:
                self.is_leader = False
            await asyncio.sleep(self.election_interval_s)

    @staticmethod
    async def _try_lock(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))).fetchone()
        return bool(row and row[0])

    async def _lead(self, lock_conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        last_scan = 0.0
        last_check = time.monotonic()
        backoff = 0.1
        while True:
            now = time.monotonic()
            if now - last_check > self.election_interval_s:
                # Still holding the lock? A dropped lock connection raises here and ends leadership.
                await lock_conn.execute("SELECT 1")
                last_check = now
            if not self.bus.up:
                await self.bus.wait_up(self.election_interval_s)
                continue
            if self._full_scan or now - last_scan > self.scan_interval_s:
                self._full_scan = False
                last_scan = now
                await self._scan()
            if not self._dirty:
                await self._sleep(self.election_interval_s)
                continue
            try:
                more = await self._publish_dirty()
                backoff = 0.1
            except Exception as exc:
                if self.bus.up:
                    log.warning("event mirror: publishing failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not more:
                await self._sleep(self.election_interval_s)

    async def _sleep(self, seconds: float) -> None:
        self._work.clear()
        if self._dirty or self._full_scan:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), seconds)

    async def _scan(self) -> None:
        async with self.db.read() as conn:
            rows = (await conn.execute(_PENDING_RUNS, {"limit": 10_000})).all()
        for row in rows:
            self._dirty.add(row.id)
            if self._reconcile_next_scan:
                self._uncertain.add(row.id)
        self._reconcile_next_scan = False

    async def _publish_dirty(self) -> bool:
        """Publishes one batch of pending events; True when more may be pending."""
        ids = list(self._dirty)[:1000]
        self._dirty.difference_update(ids)
        async with self.db.read() as conn:
            rows = (await conn.execute(_PENDING_OF, {"ids": ids})).all()
            cursors = {row.id: int(row.published_seq) for row in rows}
            tenants: dict[uuid.UUID, str] = {row.id: row.tenant_id for row in rows}
            self._uncertain.difference_update(set(ids) - cursors.keys())  # fully published (by anyone)
            for run_id in [r for r in cursors if r in self._uncertain]:
                cursors[run_id] = max(cursors[run_id], await self._reconcile(tenants[run_id], run_id))
            batch: list[tuple[uuid.UUID, str, list[RunEvent]]] = []
            budget = self.batch_events
            heads = {row.id: int(row.head_seq) for row in rows}
            backlog = sum(heads[r] - c for r, c in cursors.items() if heads[r] > c)
            for run_id, cursor in cursors.items():
                if budget <= 0 or cursor >= heads[run_id]:
                    if cursor < heads[run_id]:
                        self._dirty.add(run_id)
                    continue
                events = await event_log.read(await driver_connection(conn), run_id, after_seq=cursor,
                                              limit=min(budget, 1000))
                budget -= len(events)
                if events:
                    batch.append((run_id, tenants[run_id], events))
                if not events or events[-1].seq < heads[run_id]:
                    self._dirty.add(run_id)
        metrics.MIRROR_BACKLOG.set(backlog)
        if batch:
            acked = await self._publish(batch)
            metrics.MIRROR_BACKLOG.set(max(0, backlog - acked))
        return bool(self._dirty)

    async def _reconcile(self, tenant: str, run_id: uuid.UUID) -> int:
        """The seq of the run's last message already in JetStream (0 if none), persisted as the cursor."""
        js = self._jetstream()
        try:
            last = await js.get_last_msg(EVENTS_STREAM, events_subject(tenant, run_id), direct=True)
        except nats.js.errors.NotFoundError:
            seq = 0
        else:
            headers = last.headers or {}
            seq = int(headers.get(SEQ_HEADER, 0)) if SEQ_HEADER in headers else decode_event(last.data or b"").seq
        if seq:
            await self._advance([(run_id, seq)])
        self._uncertain.discard(run_id)
        return seq

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.bus.jetstream(max_pending=self.max_inflight)
        return self._js

    async def _publish(self, batch: Sequence[tuple[uuid.UUID, str, list[RunEvent]]]) -> int:
        """Publishes the batch; the number of events JetStream acknowledged in order."""
        js = self._jetstream()
        futures: list[tuple[uuid.UUID, int, asyncio.Future[PubAck]]] = []
        failed: BaseException | None = None
        try:
            for run_id, tenant, events in batch:
                subject = events_subject(tenant, run_id)
                for event in events:
                    # publish_async blocks while max_inflight acks are outstanding: bounded in-flight.
                    fut = await js.publish_async(subject, encode_event(event), wait_stall=self.ack_timeout_s,
                                                 headers={"Nats-Msg-Id": msg_id(run_id, event.seq),
                                                          SEQ_HEADER: str(event.seq)})
                    futures.append((run_id, event.seq, fut))
        except Exception as exc:
            failed = exc
        if futures:
            await asyncio.wait([f for _, _, f in futures], timeout=self.ack_timeout_s)
        advanced: dict[uuid.UUID, int] = {}
        broken: set[uuid.UUID] = set()
        acked = 0
        committed = {(run_id, e.seq): e.create_time for run_id, _, events in batch for e in events}
        now = datetime.now(UTC)
        for run_id, seq, fut in futures:
            acked_ok = fut.done() and not fut.cancelled() and fut.exception() is None
            if acked_ok and run_id not in broken:
                advanced[run_id] = seq
                acked += 1
                metrics.MIRROR_LAG.observe((now - committed[(run_id, seq)]).total_seconds())
                continue
            # Only a contiguous prefix of acks counts; everything after the first miss is re-sent.
            broken.add(run_id)
            if not fut.done():
                fut.cancel()  # frees its in-flight slot; the message may or may not be stored
        for run_id, _, _ in batch:
            if run_id in broken or failed is not None:
                self._uncertain.add(run_id)
                self._dirty.add(run_id)
        if advanced:
            await self._advance(list(advanced.items()))
            self.published_total += acked
        if failed is not None:
            raise failed
        if broken:
            raise TimeoutError(f"{len(broken)} runs had publishes without an ack")
        return acked

    async def _advance(self, cursors: list[tuple[uuid.UUID, int]]) -> None:
        async with self.db.transaction() as tx:
            await tx.conn.execute(_ADVANCE, [{"run_id": r, "seq": s} for r, s in sorted(cursors)])

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
