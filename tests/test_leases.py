"""Lease renewal: a run outlives its TTL under one lease, and an executor stops when its lease is taken."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import grpc
import psycopg

from lace.v1 import run_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace_engine.config import Settings
from lace_engine.llm.offline import OfflineProvider
from lace_engine.pipeline.apply import NewArtifact
from lace_engine.runs.lifecycle import CLAIMABLE
from lace_engine.service import Engine
from lace_engine.storage import run_store
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, start_run, watch
from tests.support.database import fresh_database

TTL_S = 0.6


async def until(predicate: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within_s}s")
        await asyncio.sleep(0.02)


async def lease_of(url: str, run_id: str) -> tuple[str | None, int, str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT lease_owner, lease_token, state FROM runs WHERE id = %s", (run_id,))
        row = await cur.fetchone()
        assert row is not None
        return (None if row[0] is None else str(row[0])), int(str(row[1])), str(row[2])


async def test_renewals_keep_one_lease_for_a_run_longer_than_its_ttl(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "150"}, lease_ttl_s=TTL_S) as (
            target, _, url):
        async with grpc.aio.insecure_channel(target) as channel:
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            artifact = await create_artifact(ArtifactServiceStub(channel), words=3000)
            started = time.monotonic()
            run = await start_run(runs, artifact.id, leaf_words=300, max_depth=2)
            events = await watch(runs, run.id)
            took = time.monotonic() - started
        owner, token, _ = await lease_of(url, run.id)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    assert took > 3 * TTL_S, took  # several TTLs: only renewals kept the lease
    # Claimed once (token 1) and never taken over; the lease is given back at the end.
    assert (owner, token) == (None, 1)


async def test_an_executor_whose_lease_was_taken_stops_writing(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "200"}, lease_ttl_s=TTL_S) as (
            target, running, url):
        executor = running.engine.executor
        assert executor is not None
        async with grpc.aio.insecure_channel(target) as channel:
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            artifact = await create_artifact(ArtifactServiceStub(channel), words=4000)
            run = await start_run(runs, artifact.id, leaf_words=300, max_depth=3)
            await until(lambda: executor.active_runs > 0, 10)
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                # Another owner takes the run (as after a partition): a new token, a long lease.
                await conn.execute("UPDATE runs SET lease_owner = 'someone-else', lease_token = lease_token + 1, "
                                   "lease_expires = now() + interval '1 hour' WHERE id = %s", (uuid.UUID(run.id),))
                await until(lambda: executor.active_runs == 0, 10)
                cur = await conn.execute("SELECT head_seq FROM runs WHERE id = %s", (uuid.UUID(run.id),))
                head = (await cur.fetchone() or [0])[0]
                await asyncio.sleep(3 * TTL_S)
                cur = await conn.execute("SELECT head_seq FROM runs WHERE id = %s", (uuid.UUID(run.id),))
                assert (await cur.fetchone() or [0])[0] == head  # nothing more written by the old owner
        owner, token, state = await lease_of(url, run.id)
    assert (owner, token, state) == ("someone-else", 2, "running")


async def test_a_run_is_claimed_while_a_row_referencing_it_is_being_written(pg_server_url: str) -> None:
    # The mirror's cursor row (a foreign key to runs) takes FOR KEY SHARE on the run's row as the
    # run's first events are mirrored. A claim that locks FOR UPDATE SKIP LOCKED skipped the run
    # then, and its job was acked as "not claimable": the run waited for the next claim poll.
    with fresh_database(pg_server_url, "lace_claim") as url:
        engine = Engine(Settings(database_url=url, execute_runs=False, event_bus="postgres"), url,
                        OfflineProvider())
        await engine.start()
        try:
            artifact = await engine.create_artifact(NewArtifact(title="Heat networks", brief="A guide.", style="",
                                                                target_words=600))
            run = await engine.start_run(artifact.id)
            async with await psycopg.AsyncConnection.connect(url) as referencing:
                await referencing.execute("INSERT INTO mirror_cursors (run_id, published_seq, update_time) "
                                          "VALUES (%s, 1, now())", (run.id,))
                for run_id in (run.id, None):  # a job's claim of this run, and the claim loop's
                    async with engine.db.transaction() as tx:
                        claim = await asyncio.wait_for(
                            run_store.claim_next(tx.conn, owner="worker", ttl_s=0.01, states=CLAIMABLE,
                                                 run_id=run_id), 10)
                    assert claim is not None and claim.run.id == run.id
                    await asyncio.sleep(0.05)  # the 10 ms lease expires: claimable again
                await referencing.rollback()
        finally:
            await engine.aclose()
