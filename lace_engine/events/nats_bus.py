"""One NATS connection per process, the JetStream streams LACE uses, and up/down notifications.

NATS is never required for correctness: the connection is made in the
background (start-up does not wait for NATS), publishes fail fast while it is
down (no client-side buffering, so nothing stale is flushed later), and every
user of the bus has a Postgres fallback.

Two streams, two channels:
  LACE_EVENTS  lace.runs.<tenant>.<run_id>.events  the mirror of committed run events (limits retention)
  LACE_JOBS    lace.jobs.runs              run dispatch for workers (work-queue retention)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

log = logging.getLogger(__name__)

EVENTS_STREAM = "LACE_EVENTS"
# The tenant is a subject token so that NATS permissions can confine a tenant's credentials to
# lace.runs.<tenant>.> (docs/deployment.md, Tenants).
EVENTS_SUBJECTS = "lace.runs.*.*.events"
JOBS_STREAM = "LACE_JOBS"
JOBS_SUBJECT = "lace.jobs.runs"
# Long enough to cover a mirror retry after a short outage; the mirror also reconciles
# against the last stored message, so correctness does not depend on this window.
EVENTS_DUPLICATE_WINDOW_S = 600.0
JOBS_DUPLICATE_WINDOW_S = 120.0


def events_subject(tenant: str, run_id: uuid.UUID) -> str:
    return f"lace.runs.{tenant}.{run_id}.events"


def tenant_events(tenant: str) -> str:
    """Every subject of one tenant's events: what its NATS credentials may subscribe to."""
    return f"lace.runs.{tenant}.>"


def run_id_of_subject(subject: str) -> uuid.UUID | None:
    """The run id in 'lace.runs.<tenant>.<run_id>.events'; None for anything else."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[:2] != ["lace", "runs"] or parts[4] != "events":
        return None
    try:
        return uuid.UUID(parts[3])
    except ValueError:
        return None


def msg_id(run_id: uuid.UUID, seq: int) -> str:
    """The Nats-Msg-Id of one event: JetStream drops a second message with the same id."""
    return f"{run_id}:{seq}"


Listener = Callable[[bool], None]


class NatsBus:
    """Connects (and reconnects) in the background; tells listeners when JetStream is usable or not."""

    def __init__(self, url: str, *, name: str = "lace", replicas: int = 1, events_max_age_s: float = 86400.0,
                 reconnect_wait_s: float = 0.5):
        self.url = url
        self.name = name
        self.replicas = replicas
        self.events_max_age_s = events_max_age_s
        self.reconnect_wait_s = reconnect_wait_s
        self.nc: NatsClient | None = None
        self._up = False
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._ensure_task: asyncio.Task[None] | None = None
        self._closing = False
        self.up_changed = asyncio.Event()

    @property
    def up(self) -> bool:
        """Connected, and the streams exist: JetStream calls are expected to work."""
        return self._up and self.nc is not None and self.nc.is_connected

    def jetstream(self, *, max_pending: int = 4000) -> JetStreamContext:
        if self.nc is None:
            raise nats.errors.ConnectionClosedError()
        return self.nc.jetstream(timeout=5.0, publish_async_max_pending=max_pending)

    def add_listener(self, listener: Listener) -> None:
        """listener(True) when JetStream becomes usable, listener(False) when the connection drops."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="lace-nats-connect")

    async def wait_up(self, seconds: float) -> bool:
        """Waits until the bus is up (tests and start-up logs); False after `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.up:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.up_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.up_changed.wait(), min(remaining, 0.2))
        return True

    def _set_up(self, up: bool) -> None:
        if up == self._up:
            return
        self._up = up
        self.up_changed.set()
        log.info("NATS %s", "up: JetStream in use" if up else "down: falling back to Postgres",
                 extra={"nats_url": self.url})
        for listener in list(self._listeners):
            try:
                listener(up)
            except Exception:
                log.exception("NATS state listener failed")

    async def _connect(self) -> None:
        nc = NatsClient()
        self.nc = nc

        async def on_error(exc: Exception) -> None:
            log.debug("NATS: %s", exc)

        async def on_disconnected() -> None:
            self._set_up(False)

        async def on_reconnected() -> None:
            self._schedule_ensure()

        try:
            # max_reconnect_attempts=-1 retries for ever, also the first connect; pending_size=0 makes
            # publishes fail at once while disconnected instead of queueing stale data.
            await nc.connect(servers=[self.url], name=self.name, allow_reconnect=True, max_reconnect_attempts=-1,
                             # nats-py annotates int but sleeps for any number of seconds.
                             reconnect_time_wait=self.reconnect_wait_s,  # type: ignore[arg-type]
                             connect_timeout=2, pending_size=0, ping_interval=5, max_outstanding_pings=2,
                             error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected)
        except Exception:
            # E.g. a malformed URL or bad credentials: retrying cannot help; Postgres carries on alone.
            log.exception("NATS: cannot use %s; staying on Postgres", self.url)
            return
        self._schedule_ensure()

    def _schedule_ensure(self) -> None:
        if self._closing or (self._ensure_task is not None and not self._ensure_task.done()):
            return
        self._ensure_task = asyncio.create_task(self._ensure_loop(), name="lace-nats-streams")

    async def _ensure_loop(self) -> None:
        backoff = 0.2
        while not self._closing and self.nc is not None and not self.nc.is_closed:
            if self.nc.is_connected:
                try:
                    await self.ensure_streams()
                except Exception as exc:
                    log.warning("NATS: preparing JetStream streams failed (%s); retrying", exc)
                else:
                    self._set_up(True)
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def ensure_streams(self) -> None:
        """Creates the streams, or updates them to this configuration (idempotent)."""
        js = self.jetstream()
        storage = StorageType.FILE
        await _add_or_update(js, StreamConfig(
            name=EVENTS_STREAM, subjects=[EVENTS_SUBJECTS], retention=RetentionPolicy.LIMITS,
            storage=storage, num_replicas=self.replicas, max_age=self.events_max_age_s,
            discard=DiscardPolicy.OLD, duplicate_window=min(EVENTS_DUPLICATE_WINDOW_S, self.events_max_age_s),
            allow_direct=True))
        await _add_or_update(js, StreamConfig(
            name=JOBS_STREAM, subjects=[JOBS_SUBJECT], retention=RetentionPolicy.WORK_QUEUE,
            storage=storage, num_replicas=self.replicas, max_age=86400.0,
            duplicate_window=JOBS_DUPLICATE_WINDOW_S))

    async def aclose(self) -> None:
        self._closing = True
        for task in (self._task, self._ensure_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._set_up(False)
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 2.0)


async def _add_or_update(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # "stream name already in use with a different configuration": converge to ours.
        await js.update_stream(config)
