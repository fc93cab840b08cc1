"""The event mirror and the JetStream live tail, in process, against a real nats-server and PostgreSQL.

Two engines share one database: a "worker" (executes runs) and a "replica"
(serves streams, executes nothing), as `lace worker` and `lace serve
--no-execute` would. Postgres stays canonical: streams must be exact whatever
NATS does, and the mirror must hold every event once, in order. The worker leads
the mirror, so the replica's NATS connection carries only what its live tail
subscribed to: the runs it streams, checked against the server's /connz.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import nats
import psycopg
import pytest
from nats.aio.msg import Msg

from lace_engine import metrics
from lace_engine.config import Settings
from lace_engine.domain import RunEvent, RunOptions, RunState
from lace_engine.events.jetstream_mirror import EventMirror
from lace_engine.events.nats_bus import NatsBus, events_subject
from lace_engine.events.stream_run import stream_run
from lace_engine.llm.offline import OfflineProvider
from lace_engine.pipeline.apply import NewArtifact
from lace_engine.runs.lifecycle import RunAction
from lace_engine.service import Engine
from lace_engine.tenancy import DEFAULT_TENANT
from tests.support.database import fresh_database
from tests.support.nats import NatsServer, jetstream_events

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer(monitor=True).start()
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
    # The worker leads the mirror, so the replica's NATS connection carries its live tail and nothing else
    # (no publish acks): what it receives is what its streams asked for.
    assert worker.cluster.mirror is not None
    await wait_until(lambda: worker.cluster.mirror is not None and worker.cluster.mirror.is_leader)
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


async def wait_until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def wait_state(engine: Engine, run_id: uuid.UUID, state: RunState, seconds: float = 60.0, *,
                     tenant: str = DEFAULT_TENANT) -> None:
    for _ in range(int(seconds / 0.05)):
        if (await engine.get_run(run_id, tenant=tenant)).state is state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} is {(await engine.get_run(run_id, tenant=tenant)).state}, not {state}")


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
    tail = replica.cluster.tail
    assert tail is not None
    lagged = metrics.REGISTRY.get_sample_value("lace_mirror_lag_seconds_count") or 0.0
    delivered = tail.delivered
    run_id = await start_run(replica)  # dispatched as a job to the worker
    stream = asyncio.create_task(collect(replica, run_id))
    await wait_until(lambda: run_id in tail.confirmed or stream.done())
    _, confirmed_at = await cursor_of(mirror_db, run_id)  # committed after the replica subscribed to the run
    events = await asyncio.wait_for(stream, 60)
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

    # Live events came through NATS: at least every one committed once the tail held the run's subject.
    assert tail.delivered - delivered >= run.head_seq - confirmed_at
    consumer = worker.cluster.consumer
    assert consumer is not None and consumer.claimed >= 1  # and the run came through the job queue
    assert replica.cluster.dispatcher is not None and replica.cluster.dispatcher.published >= 1


def connection(nats_server: NatsServer, engine: Engine) -> dict[str, Any]:
    """The NATS server's view of an engine's connection (/connz)."""
    return nats_server.connz()[f"lace:{engine.settings.owner_id}"]


def run_subjects(conn: dict[str, Any]) -> set[str]:
    return {str(s) for s in conn.get("subscriptions_list") or [] if str(s).startswith("lace.")}


async def test_a_replica_receives_only_the_runs_it_streams(
        engines: tuple[Engine, Engine], mirror_db: str, nats_server: NatsServer) -> None:
    """Fan-out by interest: streaming run A, the replica's connection carries A's events and not one of B's,
    and once A's last stream ends it carries nothing of a third run either."""
    worker, replica = engines
    tail, bus = replica.cluster.tail, replica.cluster.bus
    assert tail is not None and bus is not None and bus.nc is not None
    nc = bus.nc
    seen: list[tuple[str, int]] = []
    deliver = tail._on_msg

    async def spy(msg: Msg) -> None:  # every message the tail's subscriptions receive
        seen.append((msg.subject, int((msg.headers or {}).get("Lace-Seq", "0"))))
        await deliver(msg)

    tail._on_msg = spy  # type: ignore[method-assign]
    server_before, client_before = connection(nats_server, replica), dict(nc.stats)
    runs_gauge = metrics.REGISTRY.get_sample_value("lace_live_tail_runs") or 0.0
    bytes_before = metrics.REGISTRY.get_sample_value("lace_live_tail_received_bytes_total") or 0.0
    assert run_subjects(server_before) == set()  # no stream, no interest: not even a wildcard

    # A is paused at once, so its stream stays open (and subscribed) while B runs from start to end.
    run_a = await start_run(worker, words=6000)
    await worker.control_run(run_a, RunAction.PAUSE)
    subscribes = tail.subscribes
    stream = asyncio.create_task(collect(replica, run_a))
    second = asyncio.create_task(collect(replica, run_a))  # interest is per run: one SUB for both streams
    await wait_until(lambda: run_a in tail.confirmed)
    await wait_state(worker, run_a, RunState.PAUSED)
    run_b = await start_run(worker, words=6000)
    await wait_state(worker, run_b, RunState.COMPLETED)
    head_b = await wait_mirrored(mirror_db, run_b)
    paused_at = await wait_mirrored(mirror_db, run_a)
    assert head_b > 10
    assert_exact(await jetstream_events(nats_server.url, run_b), head_b)  # B was published all the while
    assert run_subjects(connection(nats_server, replica)) == {events_subject(DEFAULT_TENANT, run_a)}
    assert tail.subscribed == {run_a} and tail.subscribes == subscribes + 1
    assert metrics.REGISTRY.get_sample_value("lace_live_tail_runs") == runs_gauge + 1
    assert not stream.done() and not second.done()

    await worker.control_run(run_a, RunAction.RESUME)
    events = await asyncio.wait_for(stream, 60)
    run = await replica.get_run(run_a)
    assert run.state is RunState.COMPLETED
    assert_exact(events, run.head_seq)
    assert_exact(await asyncio.wait_for(second, 60), run.head_seq)
    assert await wait_mirrored(mirror_db, run_a) == run.head_seq

    # All the replica received is A's: every event committed after the resume, and none of B's.
    assert {subject for subject, _ in seen} == {events_subject(DEFAULT_TENANT, run_a)}
    assert set(range(paused_at + 1, run.head_seq + 1)) <= {seq for _, seq in seen}
    after = connection(nats_server, replica)
    assert after["out_msgs"] - server_before["out_msgs"] == len(seen)  # the server's count
    assert nc.stats["in_msgs"] - client_before["in_msgs"] == len(seen)  # and the client's
    assert nc.stats["in_bytes"] - client_before["in_bytes"] == \
        (metrics.REGISTRY.get_sample_value("lace_live_tail_received_bytes_total") or 0.0) - bytes_before

    # The last stream of A has ended: the interest goes with it, and a third run reaches nobody here.
    await wait_until(lambda: not tail.subscribed)
    assert run_subjects(connection(nats_server, replica)) == set()
    assert metrics.REGISTRY.get_sample_value("lace_live_tail_runs") == runs_gauge
    received = len(seen)
    run_c = await start_run(worker)
    await wait_state(worker, run_c, RunState.COMPLETED)
    await wait_mirrored(mirror_db, run_c)
    assert len(seen) == received
    assert nc.stats["in_msgs"] - client_before["in_msgs"] == received


async def test_interest_survives_a_nats_restart(
        engines: tuple[Engine, Engine], mirror_db: str, nats_server: NatsServer) -> None:
    """NATS SIGKILLed and restarted under an open stream: the replica's subscription to the run is back on
    the new server (the client re-sends it), confirmed, and the run's later events arrive through it."""
    worker, replica = engines
    tail = replica.cluster.tail
    assert tail is not None and replica.cluster.bus is not None
    run_id = await start_run(worker)
    await worker.control_run(run_id, RunAction.PAUSE)
    stream = asyncio.create_task(collect(replica, run_id))
    await wait_until(lambda: run_id in tail.confirmed)
    await wait_state(worker, run_id, RunState.PAUSED)
    paused_at = await wait_mirrored(mirror_db, run_id)

    nats_server.kill()
    await wait_until(lambda: not tail.live)
    assert tail.confirmed == set()  # meanwhile the run's NOTIFYs go to the hub
    nats_server.start()
    assert await replica.cluster.bus.wait_up(30)
    await wait_until(lambda: run_id in tail.confirmed)
    assert run_subjects(connection(nats_server, replica)) == {events_subject(DEFAULT_TENANT, run_id)}
    delivered = tail.delivered

    await worker.control_run(run_id, RunAction.RESUME)
    events = await asyncio.wait_for(stream, 60)
    run = await replica.get_run(run_id)
    assert run.state is RunState.COMPLETED
    assert_exact(events, run.head_seq)
    assert await wait_mirrored(mirror_db, run_id) == run.head_seq
    # This replica streams this run alone: every event after the resume came through the restored SUB.
    assert tail.delivered - delivered >= run.head_seq - paused_at


async def test_a_run_streamed_before_its_subscription_is_confirmed_goes_through_notify(
        engines: tuple[Engine, Engine], mirror_db: str) -> None:
    """Until the server has the replica's SUB for a run, that run's commits reach its streams through
    NOTIFY and Postgres at once (not after LACE_STREAM_FALLBACK_S): here the SUB is held back until the
    run has ended, so nothing of it arrives through NATS and the stream is exact all the same."""
    worker, replica = engines
    tail, bus = replica.cluster.tail, replica.cluster.bus
    assert tail is not None and bus is not None and bus.nc is not None
    nc = bus.nc
    gate = asyncio.Event()
    subscribe = nc.subscribe

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await subscribe(*args, **kwargs)

    nc.subscribe = held  # type: ignore[method-assign]
    try:
        run_id = await start_run(worker)
        await worker.control_run(run_id, RunAction.PAUSE)
        await wait_state(worker, run_id, RunState.PAUSED)

        async def watch() -> list[RunEvent]:
            # No heartbeat within the test's time, so no head poll: what reaches this stream came through the hub.
            out: list[RunEvent] = []
            async for batch in stream_run(replica.hub, replica._read_head, run_id, 0, heartbeat_s=3600.0):
                out.extend(batch.events)
            return out

        delivered, fallbacks = tail.delivered, tail.fallbacks
        stream = asyncio.create_task(watch())
        await wait_until(lambda: replica.hub.streams(run_id) == 1)
        await worker.control_run(run_id, RunAction.RESUME)
        events = await asyncio.wait_for(stream, 60)
        run = await replica.get_run(run_id)
        assert run.state is RunState.COMPLETED
        assert_exact(events, run.head_seq)
        assert run_id not in tail.confirmed and not tail.subscribed
        assert tail.delivered == delivered and tail.fallbacks == fallbacks
    finally:
        gate.set()
        nc.subscribe = subscribe  # type: ignore[method-assign]


async def test_streams_fall_back_to_postgres_when_the_mirror_stops(
        engines: tuple[Engine, Engine], mirror_db: str) -> None:
    """NATS up, the tail live and subscribed, but nothing published: streams get every event through the
    NOTIFY fallback (LACE_STREAM_FALLBACK_S) and Postgres."""
    worker, replica = engines
    tail = replica.cluster.tail
    assert tail is not None
    for engine in engines:
        assert engine.cluster.mirror is not None
        await engine.cluster.mirror.aclose()
    run_id = await start_run(worker)
    await worker.control_run(run_id, RunAction.PAUSE)

    async def watch() -> list[RunEvent]:
        # No heartbeat within the test's time, so no head poll: what reaches this stream came through the hub.
        out: list[RunEvent] = []
        async for batch in stream_run(replica.hub, replica._read_head, run_id, 0, heartbeat_s=3600.0):
            out.extend(batch.events)
        return out

    stream = asyncio.create_task(watch())
    await wait_until(lambda: run_id in tail.confirmed)
    await wait_state(worker, run_id, RunState.PAUSED)
    delivered, fallbacks = tail.delivered, tail.fallbacks
    await worker.control_run(run_id, RunAction.RESUME)  # every commit from here on is awaited through NATS
    events = await asyncio.wait_for(stream, 60)
    run = await replica.get_run(run_id)
    assert run.state is RunState.COMPLETED
    assert_exact(events, run.head_seq)
    assert tail.live and tail.delivered == delivered
    assert tail.fallbacks > fallbacks
    assert (await cursor_of(mirror_db, run_id))[0] < run.head_seq  # indeed not mirrored


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


# NATS users: LACE's own (everything) and one confined to tenant alpha's events, as docs/deployment.md
# (Tenants) advises for a process that serves one tenant's streams.
TENANT_USERS = """
authorization {
  users = [
    {user: lace, password: lace-secret}
    {user: alpha, password: alpha-secret, permissions: {
      publish: {allow: ["_INBOX.>"]}
      subscribe: {allow: ["lace.runs.alpha.>", "_INBOX.>"]}
    }}
  ]
}
"""


async def test_a_tenants_nats_credentials_read_its_events_and_no_other_tenants(mirror_db: str) -> None:
    """Each event's subject names its run's tenant, so NATS permissions can confine credentials to one
    tenant: alpha's user receives alpha's run whole and is refused beta's subjects (and the wildcard
    over every tenant), while the stream holds beta's events under beta's subject."""
    server = NatsServer(monitor=True, config=TENANT_USERS).start()
    errors: list[str] = []
    seen: list[str] = []
    worker = Engine(settings_for(mirror_db, f"nats://lace:lace-secret@127.0.0.1:{server.port}", execute=True,
                                 owner="tenants-worker"), mirror_db, OfflineProvider(latency_ms=10))
    try:
        await worker.start()
        assert worker.cluster.bus is not None and await worker.cluster.bus.wait_up(15)

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        async def on_msg(msg: Msg) -> None:
            seen.append(msg.subject)

        reader = await nats.connect(f"nats://alpha:alpha-secret@127.0.0.1:{server.port}", name="alpha-reader",
                                    error_cb=on_error, allow_reconnect=False)
        try:
            for subject in ("lace.runs.alpha.>", "lace.runs.beta.>", "lace.runs.>"):
                await reader.subscribe(subject, cb=on_msg)
            await reader.flush()
            runs = {}
            for tenant in ("alpha", "beta"):
                artifact = await worker.create_artifact(NewArtifact(
                    title=f"{tenant}'s heat plan", brief="A guide to district heating.", style="", target_words=2000),
                    tenant=tenant)
                runs[tenant] = (await worker.start_run(artifact.id, tenant=tenant)).id
            for tenant, run_id in runs.items():
                await wait_state(worker, run_id, RunState.COMPLETED, tenant=tenant)
            heads = {t: (await worker.get_run(r, tenant=t)).head_seq for t, r in runs.items()}
            await wait_until(lambda: len(seen) >= heads["alpha"])
            for tenant, run_id in runs.items():
                stored = await jetstream_events(f"nats://lace:lace-secret@127.0.0.1:{server.port}", run_id, tenant)
                assert [e.seq for e in stored] == list(range(1, heads[tenant] + 1)), tenant
            await reader.flush()
            assert seen == [events_subject("alpha", runs["alpha"])] * heads["alpha"]
            assert sum("permissions violation" in e.lower() for e in errors) == 2, errors
            # The server's own count of what it sent alpha's connection: alpha's events, nothing else.
            assert server.connz()["alpha-reader"]["out_msgs"] == heads["alpha"]
        finally:
            await reader.close()
    finally:
        await worker.aclose()
        server.close()
