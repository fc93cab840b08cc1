"""The services an Engine adds to work as one of several processes of a deployment (a cluster).

  LACE_EVENT_BUS=nats      the JetStream mirror of the event log (leader-elected outbox publisher)
                           and, in processes that serve streams, the live tail from JetStream
  LACE_JOB_DISPATCH=nats   StartRun/ResumeRun publish job messages; executing processes consume them
                           (defaults to LACE_EVENT_BUS)
  LACE_LLM_GLOBAL_LIMIT=N  a Postgres-backed limit on concurrent LLM calls per provider, all processes

This is where event delivery (`lace_engine.events`) meets the runs layer (jobs, the global LLM
limit, the executor). With every setting at its default it is inert: one process, or several
sharing Postgres through LISTEN/NOTIFY alone.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

from lace_engine.config import Settings
from lace_engine.errors import InvalidArgument
from lace_engine.events.hub import EventHub
from lace_engine.events.jetstream_mirror import EventMirror
from lace_engine.events.jetstream_tail import JetStreamTail
from lace_engine.events.nats_bus import NatsBus
from lace_engine.runs.jobs import JobConsumer, JobDispatcher
from lace_engine.runs.llm_limit import GlobalLLMLimit
from lace_engine.runs.orchestrator import Executor
from lace_engine.storage.database import Database

BUSES = ("postgres", "nats")


def _choice(name: str, value: str) -> str:
    if value not in BUSES:
        raise InvalidArgument(f"{name}={value!r} is not one of {', '.join(BUSES)}", metadata={"variable": name})
    return value


class ClusterServices:
    """Owns the NATS connection, the mirror, the tail, job dispatch and the global LLM limit."""

    def __init__(self, settings: Settings, db: Database, hub: EventHub, provider_name: str, *,
                 serve_streams: bool = True):
        event_bus = _choice("LACE_EVENT_BUS", settings.event_bus)
        self.job_dispatch = _choice("LACE_JOB_DISPATCH", settings.job_dispatch or event_bus)
        self.bus: NatsBus | None = None
        if "nats" in (event_bus, self.job_dispatch):
            self.bus = NatsBus(settings.nats_url, name=f"lace:{settings.owner_id}", replicas=settings.nats_replicas,
                               events_max_age_s=settings.nats_events_max_age_s)
        self.mirror: EventMirror | None = None
        self.tail: JetStreamTail | None = None
        if self.bus is not None and event_bus == "nats":
            self.mirror = EventMirror(db, self.bus, max_inflight=settings.mirror_max_inflight)
            db.add_listener(self.mirror)
            if serve_streams:
                self.tail = JetStreamTail(self.bus, hub, fallback_s=settings.stream_fallback_s)
        self.dispatcher = (JobDispatcher(self.bus) if self.bus is not None and self.job_dispatch == "nats"
                           else None)
        self.consumer: JobConsumer | None = None
        self.global_limit: GlobalLLMLimit | None = None
        if settings.llm_global_limit > 0:
            self.global_limit = GlobalLLMLimit(db, provider_name, limit=settings.llm_global_limit,
                                               local_limit=settings.llm_concurrency, owner=settings.owner_id,
                                               ttl_s=settings.llm_permit_ttl_s)

    @property
    def llm_limit(self) -> AbstractAsyncContextManager[Any] | None:
        """The limit the executor wraps provider calls in; None keeps its per-process semaphore."""
        return self.global_limit

    async def start(self, executor: Executor | None) -> None:
        if self.bus is None:
            return
        if executor is not None and self.job_dispatch == "nats":
            self.consumer = JobConsumer(self.bus, executor)
        self.bus.start()
        for part in (self.mirror, self.tail, self.consumer):
            if part is not None:
                part.start()

    def committed(self, run_id: uuid.UUID, head: int) -> bool:
        """A commit (anywhere) of `run_id` up to `head`; True when the JetStream tail will deliver it."""
        if self.mirror is not None:
            self.mirror.committed(run_id)
        return self.tail is not None and self.tail.expect(run_id, head)

    def dispatch(self, run_id: uuid.UUID, head_seq: int) -> None:
        """The run became claimable: tell a worker (no-op without NATS job dispatch)."""
        if self.dispatcher is not None:
            self.dispatcher.dispatch(run_id, head_seq)

    async def aclose(self) -> None:
        for part in (self.consumer, self.tail, self.mirror, self.dispatcher):
            if part is not None:
                await part.aclose()
        if self.bus is not None:
            await self.bus.aclose()
        if self.global_limit is not None:
            await self.global_limit.aclose()
