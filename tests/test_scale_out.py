"""Scale-out with real processes: two API replicas, three workers, one nats-server, one PostgreSQL.

Replicas run `lace serve --no-execute`, workers `lace worker`, all with
LACE_EVENT_BUS=nats (mirror, JetStream live tail, job dispatch) and a global
LLM limit. Processes are killed with SIGKILL; the checks read Postgres (the
truth), both replicas' StreamRun, and the JetStream mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from lace.v1 import run_service_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace_engine.runs.llm_limit import GlobalLLMLimit
from lace_engine.storage.database import Database
from tests.helpers import create_artifact, start_run
from tests.support.database import create_database, drop_database, fresh_database
from tests.support.nats import NatsServer, jetstream_events
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.timeout(240)

RUNS = 10
WORDS = 6000
GLOBAL_LLM_LIMIT = 4


@dataclass
class Cluster:
    db_url: str
    nats: NatsServer
    logs: Path
    replicas: list[ServerProcess] = field(default_factory=list)
    workers: list[ServerProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "LACE_EVENT_BUS": "nats", "LACE_NATS_URL": self.nats.url, "LACE_OFFLINE_LATENCY_MS": "120",
            "LACE_LEASE_TTL_S": "2", "LACE_STREAM_HEARTBEAT_S": "1", "LACE_STREAM_FALLBACK_S": "1",
            "LACE_LLM_GLOBAL_LIMIT": str(GLOBAL_LLM_LIMIT), "LACE_LLM_PERMIT_TTL_S": "3",
            "LACE_DB_POOL_SIZE": "4", "LACE_LOG_LEVEL": "INFO",
        }

    def spawn_replica(self) -> ServerProcess:
        name = f"replica-{len(self.replicas)}"
        proc = ServerProcess(self.db_url, env=self.env(), args=("serve", "--no-execute"),
                             log_path=self.logs / f"{name}.log")
        self.replicas.append(proc)
        return proc

    def spawn_worker(self) -> ServerProcess:
        name = f"worker-{len(self.workers)}"
        proc = ServerProcess(self.db_url, env=self.env(), args=("worker",), log_path=self.logs / f"{name}.log")
        self.workers.append(proc)
        return proc.start()

    def alive(self, procs: list[ServerProcess]) -> list[ServerProcess]:
        return [p for p in procs if p.proc is not None and p.proc.poll() is None]


@pytest.fixture(scope="module")
def cluster(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    db_url = create_database(pg_server_url, f"lace_scale_{uuid.uuid4().hex[:10]}", migrate_to_head=True)
    server = NatsServer().start()
    c = Cluster(db_url, server, tmp_path_factory.mktemp("scale-out-logs"))
    try:
        for _ in range(3):
            c.spawn_worker()
        replicas = [c.spawn_replica() for _ in range(2)]
        for r in replicas:
            r.start()
        yield c
    finally:
        procs = c.alive([*c.replicas, *c.workers])
        for proc in procs:  # SIGTERM them all first: they shut down in parallel
            assert proc.proc is not None
            proc.proc.terminate()
        for proc in procs:
            proc.stop(10)
        server.close()
        drop_database(pg_server_url, db_url)


async def query(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql, args)
        return await cur.fetchall()


class Follower:
    """A client that streams one run, moving to another replica (with its cursor) when one dies."""

    def __init__(self, targets: list[str], run_id: str, first: int):
        self.targets = targets
        self.run_id = run_id
        self.index = first
        self.events: list[tuple[int, str]] = []
        self.reconnects = 0

    async def follow(self) -> list[tuple[int, str]]:
        while True:
            target = self.targets[self.index % len(self.targets)]
            cursor = self.events[-1][0] if self.events else 0
            try:
                async with grpc.aio.insecure_channel(target) as channel:
                    stub = run_service_pb2_grpc.RunServiceStub(channel)
                    request = run_service_pb2.StreamRunRequest(run_id=self.run_id, cursor=cursor)
                    async for response in stub.StreamRun(request):
                        self.events.extend((e.seq, e.WhichOneof("payload") or "") for e in response.events)
                return self.events
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                      grpc.StatusCode.UNKNOWN):
                    raise
                self.reconnects += 1
                assert self.reconnects < 50, f"run {self.run_id}: cannot keep a stream: {err}"
                self.index += 1
                await asyncio.sleep(0.2)


async def wait_all_mirrored(url: str, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.2)):
        rows = await query(url, "SELECT count(*) FROM runs r LEFT JOIN mirror_cursors c ON c.run_id = r.id "
                                "WHERE r.head_seq > COALESCE(c.published_seq, 0)")
        if rows[0][0] == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the mirror did not catch up")


async def start_runs(targets: list[str], count: int) -> list[str]:
    run_ids = []
    for i in range(count):
        async with grpc.aio.insecure_channel(targets[i % len(targets)]) as channel:
            artifact = await create_artifact(ArtifactServiceStub(channel), WORDS, title=f"Storage {i}")
            run = await start_run(run_service_pb2_grpc.RunServiceStub(channel), artifact.id)
            run_ids.append(run.id)
    return run_ids


async def assert_no_duplicate_work(url: str, run_ids: list[str]) -> None:
    """Each node split or written once, each block created once, whatever was killed."""
    dup_calls = await query(url, "SELECT run_id, node_id, count(*) FROM llm_calls WHERE outcome = 'applied' "
                                 "GROUP BY run_id, node_id HAVING count(*) > 1")
    assert dup_calls == []
    dup_nodes = await query(url, "SELECT artifact_id, parent_id, title, count(*) FROM nodes "
                                 "GROUP BY artifact_id, parent_id, title HAVING count(*) > 1")
    assert dup_nodes == []
    dup_blocks = await query(url, "SELECT block_id, count(*) FROM change_events WHERE operation = 'create' "
                                  "GROUP BY block_id HAVING count(*) > 1")
    assert dup_blocks == []
    for run_id in run_ids:
        applied = await query(url, "SELECT payload->>'node_id', count(*) FROM run_events WHERE run_id = %s "
                                   "AND type IN ('blocks_applied', 'node_split') GROUP BY 1, type "
                                   "HAVING count(*) > 1", uuid.UUID(run_id))
        assert applied == [], f"run {run_id} applied a node twice"


async def test_ten_runs_survive_a_killed_worker_and_a_killed_replica(cluster: Cluster) -> None:
    targets = [r.target for r in cluster.replicas]
    run_ids = await start_runs(targets, RUNS)
    followers = [Follower(list(targets), run_id, first) for run_id in run_ids for first in (0, 1)]
    tasks = [asyncio.create_task(f.follow()) for f in followers]

    # Mid-way: every run has started, most are in flight, and more than one worker is busy.
    owners: list[tuple[Any, ...]] = []
    for _ in range(300):
        owners = await query(cluster.db_url, "SELECT lease_owner, count(*) FROM runs WHERE state = 'running' "
                                             "AND lease_owner IS NOT NULL GROUP BY 1 ORDER BY 2 DESC")
        heads = await query(cluster.db_url, "SELECT count(*) FROM runs WHERE head_seq >= 8")
        if heads[0][0] >= RUNS // 2 and len(owners) >= 2:
            break
        await asyncio.sleep(0.1)
    assert len(owners) >= 2, f"jobs did not spread over the workers: {owners}"
    by_pid = {f":{w.proc.pid}": w for w in cluster.workers if w.proc is not None}
    victim = next(w for suffix, w in by_pid.items() if str(owners[0][0]).endswith(suffix))
    victim.kill()
    cluster.replicas[0].kill()
    # Read after the kill: a run the victim finished just before it died is not the victim's any more.
    victim_runs = await query(cluster.db_url, "SELECT id FROM runs WHERE lease_owner = %s AND state = 'running'",
                              owners[0][0])
    assert victim_runs
    for f in followers:
        f.targets[:] = [targets[1]]

    results = await asyncio.wait_for(asyncio.gather(*tasks), 180)

    rows = await query(cluster.db_url, "SELECT id::text, state, head_seq FROM runs WHERE id = ANY(%s)",
                       [uuid.UUID(r) for r in run_ids])
    final = {str(r[0]): int(r[2]) for r in rows}
    assert {r[1] for r in rows} == {"completed"}
    for follower, events in zip(followers, results, strict=True):
        assert [seq for seq, _ in events] == list(range(1, final[follower.run_id] + 1)), follower.run_id
        db_types = await query(cluster.db_url, "SELECT type FROM run_events WHERE run_id = %s ORDER BY seq",
                               uuid.UUID(follower.run_id))
        assert [kind for _, kind in events] == [str(t[0]) for t in db_types]
    assert any(f.reconnects for f in followers)  # streams on the killed replica moved over

    # The victim's runs were finished by another worker after its lease expired: a second claim, so a
    # newer fencing token (a RUNNING -> RUNNING take-over writes no state event).
    tokens = await query(cluster.db_url, "SELECT lease_token FROM runs WHERE id = ANY(%s)",
                         [r[0] for r in victim_runs])
    assert all(int(t[0]) >= 2 for t in tokens), tokens
    await assert_no_duplicate_work(cluster.db_url, run_ids)

    await wait_all_mirrored(cluster.db_url)
    for run_id in run_ids:
        mirrored = await jetstream_events(cluster.nats.url, uuid.UUID(run_id))
        assert [e.seq for e in mirrored] == list(range(1, final[run_id] + 1))


async def test_nats_killed_and_restarted_mid_run(cluster: Cluster) -> None:
    replicas = cluster.alive(cluster.replicas)
    if not replicas:
        replicas = [cluster.spawn_replica().start()]
    if len(cluster.alive(cluster.workers)) < 2:
        cluster.spawn_worker()
    target = replicas[0].target
    run_ids = await start_runs([target], 3)
    followers = [Follower([target], run_id, 0) for run_id in run_ids]
    tasks = [asyncio.create_task(f.follow()) for f in followers]
    for _ in range(300):
        if min(len(f.events) for f in followers) >= 5:
            break
        await asyncio.sleep(0.05)
    cluster.nats.kill()
    heads_at_kill = sum(len(f.events) for f in followers)
    await asyncio.sleep(2.0)
    # Streams keep working without NATS (from Postgres), and the runs keep going.
    assert sum(len(f.events) for f in followers) > heads_at_kill
    cluster.nats.start()

    results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    rows = await query(cluster.db_url, "SELECT id::text, state, head_seq FROM runs WHERE id = ANY(%s)",
                       [uuid.UUID(r) for r in run_ids])
    heads = {str(r[0]): int(r[2]) for r in rows}
    assert {r[1] for r in rows} == {"completed"}
    for follower, events in zip(followers, results, strict=True):
        assert [seq for seq, _ in events] == list(range(1, heads[follower.run_id] + 1))
    await assert_no_duplicate_work(cluster.db_url, run_ids)
    await wait_all_mirrored(cluster.db_url)
    for run_id in run_ids:
        mirrored = await jetstream_events(cluster.nats.url, uuid.UUID(run_id))
        assert [e.seq for e in mirrored] == list(range(1, heads[run_id] + 1))


# The global LLM limit, in process: several limiters on their own pools stand for several workers.


@pytest.fixture
async def limit_db(pg_server_url: str) -> AsyncIterator[str]:
    with fresh_database(pg_server_url, "lace_limit") as url:
        yield url


async def test_global_llm_limit_holds_across_processes_and_survives_a_crash(limit_db: str) -> None:
    dbs = [Database(limit_db, pool_size=4) for _ in range(3)]
    limits = [GlobalLLMLimit(db, "offline", limit=3, local_limit=8, owner=f"w{i}", ttl_s=1.5, max_poll_s=0.05)
              for i, db in enumerate(dbs)]
    in_flight = peak = 0

    async def call(limit: GlobalLLMLimit) -> None:
        nonlocal in_flight, peak
        async with limit:
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1

    try:
        await asyncio.gather(*(call(limits[i % 3]) for i in range(60)))
        assert peak == 3

        # A worker dies holding two permits (no release, no renewal): they come back after the TTL.
        crashed = limits[0]
        entered = asyncio.Event()
        hold = asyncio.Event()

        async def stuck() -> None:
            async with crashed:
                entered.set()
                await hold.wait()

        holders = [asyncio.create_task(stuck()) for _ in range(2)]
        for _ in range(100):
            if crashed.in_use == 2:
                break
            await asyncio.sleep(0.02)
        assert crashed.in_use == 2
        if crashed._renew_task is not None:
            crashed._renew_task.cancel()
        crashed._held.clear()  # forget them: __aexit__ will release nothing, as after SIGKILL
        in_flight = peak = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(call(limits[1 + i % 2]) for i in range(10)))
        assert peak == 1  # only one permit free while the crashed worker's two are live
        in_flight = peak = 0
        await asyncio.sleep(max(0.0, started + 1.6 - loop.time()))
        await asyncio.gather(*(call(limits[1 + i % 2]) for i in range(30)))
        assert peak == 3  # expired permits were taken over
        hold.set()
        for task in holders:
            with contextlib.suppress(Exception):
                await task
    finally:
        for limit in limits:
            await limit.aclose()
        for db in dbs:
            await db.aclose()
