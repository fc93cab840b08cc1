"""The event mirror and the JetStream live tail, in process, against a real nats-server and PostgreSQL.

Two engines share one database: a "worker" (executes runs) and a "replica"
(serves streams, executes nothing), as `lace worker` and `lace serve
--no-execute` would. Postgres stays canonical: streams must be exact whatever
NATS does, and the mirror must hold every event once, in order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import psycopg
import pytest

from lace_engine import metrics
from lace_engine.config import Settings
from lace_engine.domain import RunEvent, RunOptions, RunState
from lace_engine.events.jetstream_mirror import EventMirror
from lace_engine.events.nats_bus import NatsBus
from lace_engine.llm.offline import OfflineProvider
from lace_engine.pipeline.apply import NewArtifact
from lace_engine.service import Engine
from tests.support.database import fresh_database
from tests.support.nats import NatsServer, jetstream_events

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def mirror_db(pg_server_url: str) -> Iterator[str]:
    """A database of its own: the session server's executor must not take these runs."""
    with fresh_database(pg_server_url, "lace_mirror") as url:
        yield url


def settings_for(url: str, nats_url: str, *, execute: bool, owner: str) -> Settings:
    return Settings(
        database_url=url, execute_runs=execute, event_bus="nats", nats_url=nats_url, owner_id=owner,
        lease_ttl_s=3.0, heartbeat_s=1.0, stream_fallback_s=1.0, pool_size=4,
        run_options=RunOptions(leaf_words=1000, max_depth=4, sibling_concurrency=2, max_proposal_retries=2),
    )


@pytest.fixture
async def engines(mirror_db: str, nats_server: NatsServer) -> AsyncIterator[tuple[Engine, Engine]]:
    """(worker, replica), both with the NATS event bus and job dispatch."""
    nats_server.start()
    worker = Engine(settings_for(mirror_db, nats_server.url, execute=True, owner="worker-1"), mirror_db,
                    OfflineProvider(latency_ms=60), serve_streams=False)
    # Runs reach the worker as jobs: its once-a-second claim poll could otherwise take a run first
    # (the dispatch test asserts the job path). With NATS down the executor is woken directly.
    assert worker.executor is not None
    worker.executor.config.poll_interval_s = 30.0
    replica = Engine(settings_for(mirror_db, nats_server.url, execute=False, owner="replica-1"), mirror_db,
                     OfflineProvider())
    await worker.start()
    await replica.start()
    for engine in (worker, replica):
        assert engine.cluster.bus is not None
        assert await engine.cluster.bus.wait_up(15)
    assert replica.cluster.tail is not None
    for _ in range(100):
        if replica.cluster.tail.live:
            break
        await asyncio.sleep(0.05)
    yield worker, replica
    await replica.aclose()
    await worker.aclose()


async def start_run(engine: Engine, words: int = 3000) -> uuid.UUID:
    artifact = await engine.create_artifact(NewArtifact(title="Heat networks", brief="A guide to district heating.",
                                                        style="", target_words=words))
    run = await engine.start_run(artifact.id)
    return run.id


async def collect(engine: Engine, run_id: uuid.UUID, cursor: int = 0) -> list[RunEvent]:
    out: list[RunEvent] = []
    async for batch in engine.stream_run(run_id, cursor):
        out.extend(batch.events)
    return out


async def cursor_of(url: str, run_id: uuid.UUID) -> tuple[int, int]:
    """(published_seq, head_seq) of a run."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT COALESCE(c.published_seq, 0), r.head_seq FROM runs r "
                                 "LEFT JOIN mirror_cursors c ON c.run_id = r.id WHERE r.id = %s", (run_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def execute(url: str, sql: str, *args: object) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql, args)


async def wait_mirrored(url: str, run_id: uuid.UUID, seconds: float = 30.0) -> int:
    for _ in range(int(seconds / 0.1)):
        published, head = await cursor_of(url, run_id)
        if published == head:
            return head
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id}: mirror stuck at {await cursor_of(url, run_id)}")


def assert_exact(events: list[RunEvent], head: int) -> None:
    assert [e.seq for e in events] == list(range(1, head + 1))


async def test_events_are_mirrored_once_in_order_and_streamed_through_jetstream(
        engines: tuple[Engine, Engine], mirror_db: str, nats_server: NatsServer) -> None:
    worker, replica = engines
    lagged = metrics.REGISTRY.get_sample_value("lace_mirror_lag_seconds_count") or 0.0
    run_id = await start_run(replica)  # dispatched as a job to the worker
    events = await asyncio.wait_for(collect(replica, run_id), 60)
    run = await replica.get_run(run_id)
    assert run.state is RunState.COMPLETED
    assert_exact(events, run.head_seq)

    assert await wait_mirrored(mirror_db, run_id) == run.head_seq
    # Every acknowledged copy was timed from its commit; the leader's backlog drains to nothing.
    assert (metrics.REGISTRY.get_sample_value("lace_mirror_lag_seconds_count") or 0.0) - lagged >= run.head_seq
    for _ in range(100):
        if metrics.REGISTRY.get_sample_value("lace_mirror_backlog_events") == 0:
            break
        await asyncio.sleep(0.05)
    assert metrics.REGISTRY.get_sample_value("lace_mirror_backlog_events") == 0
    mirrored = await jetstream_events(nats_server.url, run_id)
    assert_exact(mirrored, run.head_seq)
    assert [(e.type, e.payload) for e in mirrored] == [(e.type, e.payload) for e in events]

    tail = replica.cluster.tail
    assert tail is not None and tail.delivered >= run.head_seq  # live events came through JetStream
    consumer = worker.cluster.consumer
    assert consumer is not None and consumer.claimed >= 1  # and the run came through the job queue
    assert replica.cluster.dispatcher is not None and replica.cluster.dispatcher.published >= 1


async def test_nats_killed_mid_run_loses_and_duplicates_nothing(
        engines: tuple[Engine, Engine], mirror_db: str, nats_server: NatsServer) -> None:
    _, replica = engines
    run_id = await start_run(replica, words=12000)
    stream = asyncio.create_task(collect(replica, run_id))
    for _ in range(400):
        if (await cursor_of(mirror_db, run_id))[0] >= 5:
            break
        await asyncio.sleep(0.05)
    nats_server.kill()
    _, head_at_kill = await cursor_of(mirror_db, run_id)
    for _ in range(400):  # the run goes on without NATS, and the outbox (events past the cursor) grows
        published, head = await cursor_of(mirror_db, run_id)
        if head >= head_at_kill + 10:
            break
        await asyncio.sleep(0.05)
    assert head >= head_at_kill + 10
    assert published <= head_at_kill
    assert not stream.done()
    nats_server.start()

    events = await asyncio.wait_for(stream, 60)
    run = await replica.get_run(run_id)
    assert run.state is RunState.COMPLETED
    assert_exact(events, run.head_seq)
    assert await wait_mirrored(mirror_db, run_id) == run.head_seq
    assert_exact(await jetstream_events(nats_server.url, run_id), run.head_seq)


async def test_republished_events_are_dropped_by_jetstream(
        engines: tuple[Engine, Engine], mirror_db: str, nats_server: NatsServer) -> None:
    """A publisher that dies after publishing but before moving its cursor re-sends: no duplicates."""
    worker, replica = engines
    run_id = await start_run(replica)
    await asyncio.wait_for(collect(replica, run_id), 60)
    head = await wait_mirrored(mirror_db, run_id)
    leader = next(e.cluster.mirror for e in engines if e.cluster.mirror and e.cluster.mirror.is_leader)
    assert leader is not None

    # 1. Same leader, cursor lost: it re-sends every event, and Nats-Msg-Id makes JetStream drop them.
    await execute(mirror_db, "UPDATE mirror_cursors SET published_seq = 0 WHERE run_id = %s", run_id)
    before = leader.published_total
    leader.committed(run_id)
    assert await wait_mirrored(mirror_db, run_id) == head
    assert leader.published_total >= before + head
    assert_exact(await jetstream_events(nats_server.url, run_id), head)

    # 2. A new leader after a crash: it first reads the last stored message of each pending run.
    await execute(mirror_db, "UPDATE mirror_cursors SET published_seq = 2 WHERE run_id = %s", run_id)
    await replica.aclose()
    await worker.aclose()
    bus = NatsBus(nats_server.url)
    from lace_engine.storage.database import Database

    db = Database(mirror_db, pool_size=2)
    fresh = EventMirror(db, bus)
    bus.start()
    fresh.start()
    try:
        assert await wait_mirrored(mirror_db, run_id) == head
        assert fresh.is_leader and fresh.published_total == 0  # reconciled, nothing re-sent
    finally:
        await fresh.aclose()
        await bus.aclose()
        await db.aclose()
    assert_exact(await jetstream_events(nats_server.url, run_id), head)


async def test_one_leader_and_a_hand_over(mirror_db: str, nats_server: NatsServer) -> None:
    nats_server.start()
    settings = settings_for(mirror_db, nats_server.url, execute=False, owner="a")
    a = Engine(settings, mirror_db, OfflineProvider())
    b = Engine(replace(settings, owner_id="b"), mirror_db, OfflineProvider())
    await a.start()
    await b.start()
    try:
        mirrors = [e.cluster.mirror for e in (a, b)]
        assert all(m is not None for m in mirrors)
        for _ in range(100):
            if any(m is not None and m.is_leader for m in mirrors):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        assert [m is not None and m.is_leader for m in mirrors].count(True) == 1
        leader, follower = (a, b) if mirrors[0] is not None and mirrors[0].is_leader else (b, a)
        await leader.aclose()
        assert follower.cluster.mirror is not None
        for _ in range(100):
            if follower.cluster.mirror.is_leader:
                break
            await asyncio.sleep(0.05)
        assert follower.cluster.mirror.is_leader
        # The new leader publishes what is committed from now on.
        run_id = await start_run(follower)
        await wait_mirrored(mirror_db, run_id, seconds=10)
    finally:
        for engine in (a, b):
            await engine.aclose()
