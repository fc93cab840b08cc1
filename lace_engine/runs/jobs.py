"""Run dispatch as job messages on a JetStream work queue (LACE_JOBS, subject lace.jobs.runs).

A job says only "run X may need an executor". It is a hint, not ownership: the
worker that takes it still claims the run's lease in Postgres with a new
fencing token (Executor.claim), so a duplicate, late or stale job can never
make two workers apply to one run. Jobs are acked after the claim decision;
a worker that dies before acking has its job redelivered after ack_wait.

What the queue cannot see, the executor's periodic claim loop still covers:
runs started while NATS was down, and runs whose worker died (their lease
expires, then any worker's claim loop takes them over).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from lace_engine.events.nats_bus import JOBS_STREAM, JOBS_SUBJECT, NatsBus
from lace_engine.runs.orchestrator import Executor

log = logging.getLogger(__name__)

WORKERS_CONSUMER = "lace-workers"


class JobDispatcher:
    """Publishes a job when a run becomes claimable (StartRun, ResumeRun); never blocks the caller."""

    def __init__(self, bus: NatsBus, *, timeout_s: float = 2.0):
        self.bus = bus
        self.timeout_s = timeout_s
        self.published = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def dispatch(self, run_id: uuid.UUID, head_seq: int) -> None:
        if not self.bus.up:
            return  # the workers' claim loop picks the run up from Postgres
        task = asyncio.create_task(self._publish(run_id, head_seq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, run_id: uuid.UUID, head_seq: int) -> None:
        try:
            # The id names the state change that made the run claimable, so a retried publish is dropped.
            await self.bus.jetstream().publish(
                JOBS_SUBJECT, json.dumps({"run_id": str(run_id)}).encode(), timeout=self.timeout_s,
                headers={"Nats-Msg-Id": f"job:{run_id}:{head_seq}"})
            self.published += 1
        except Exception as exc:
            log.info("dispatching run %s through NATS failed (%s); the claim loop will pick it up", run_id, exc)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, self.timeout_s)


class JobConsumer:
    """Pull-consumes jobs while this worker has room for more runs, and claims each run in Postgres."""

    def __init__(self, bus: NatsBus, executor: Executor, *, batch: int = 1, ack_wait_s: float = 30.0):
        self.bus = bus
        self.executor = executor
        # One job per fetch by default: a burst of jobs spreads over the workers that are asking
        # instead of going to whichever asked first.
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.claimed = 0
        self.skipped = 0
        self._task: asyncio.Task[None] | None = None
        bus.add_listener(self._on_bus)
        self._on_bus(bus.up)

    def _on_bus(self, up: bool) -> None:
        # Jobs replace commit-driven claiming while they flow; without NATS, every commit's NOTIFY wakes the claim.
        self.executor.claim_on_commit = not up
        if not up:
            self.executor.look_for_work()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lace-job-consumer")

    async def _run(self) -> None:
        while True:
            if not await self.bus.wait_up(5.0):
                continue
            try:
                psub = await self._subscribe(self.bus.jetstream(), self.ack_wait_s)
                await self._consume(psub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.bus.up:
                    log.warning("job consumer: %s; resubscribing", exc)
                await asyncio.sleep(0.5)

    @staticmethod
    async def _subscribe(js: JetStreamContext, ack_wait_s: float) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(durable_name=WORKERS_CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait_s,
                                max_ack_pending=10_000, filter_subject=JOBS_SUBJECT)
        return await js.pull_subscribe(JOBS_SUBJECT, durable=WORKERS_CONSUMER, stream=JOBS_STREAM, config=config)

    async def _consume(self, psub: JetStreamContext.PullSubscription) -> None:
        try:
            while self.bus.up:
                room = self.executor.config.max_concurrent_runs - self.executor.active_runs
                if room <= 0:
                    await asyncio.sleep(0.2)
                    continue
                try:
                    msgs = await psub.fetch(min(room, self.batch), timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for msg in msgs:
                    await self._handle(msg)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        try:
            run_id = uuid.UUID(json.loads(msg.data)["run_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("job consumer: dropping a malformed job %r", msg.data[:200])
            await msg.term()
            return
        try:
            taken = await self.executor.claim(run_id)
        except Exception:
            log.exception("job consumer: claiming run %s failed; the job is redelivered", run_id)
            await msg.nak(delay=1.0)
            return
        if taken:
            self.claimed += 1
        else:
            # Not claimable now (running elsewhere under a live lease, finished, paused): nothing to do;
            # an expired lease is taken over by the claim loop.
            self.skipped += 1
        await msg.ack()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
