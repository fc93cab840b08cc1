"""A real SIGKILL of a real server mid-run: the run resumes elsewhere with nothing lost or doubled."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import grpc
import psycopg
import pytest

from lace.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from tests.helpers import create_artifact, start_run, watch
from tests.support.server_process import ServerProcess


def ir_counts(url: str, artifact_id: str) -> tuple[int, list[tuple[str, int, int]]]:
    with psycopg.connect(url) as conn:
        nodes = conn.execute("SELECT count(*) FROM nodes WHERE artifact_id = %s", (artifact_id,)).fetchone()
        per_node = conn.execute(
            "SELECT node_id::text, count(*), max(ordinal) FROM blocks WHERE artifact_id = %s GROUP BY node_id",
            (artifact_id,)).fetchall()
    assert nodes is not None
    return int(nodes[0]), [(str(n), int(c), int(m)) for n, c, m in per_node]


async def test_sigkill_mid_run_then_restart(own_database: str) -> None:
    env = {"LACE_OFFLINE_LATENCY_MS": "80", "LACE_LEASE_TTL_S": "2"}
    a = ServerProcess(own_database, env=env).start()
    async with grpc.aio.insecure_channel(a.target) as channel:
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        artifact = await create_artifact(ArtifactServiceStub(channel), 6000)
        run = await start_run(runs, artifact.id, sibling_concurrency=3)
        seen: list[run_pb2.RunEvent] = []
        with pytest.raises(grpc.aio.AioRpcError):
            async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
                seen.extend(response.events)
                if sum(e.WhichOneof("payload") == "blocks_applied" for e in seen) >= 2 and a.proc:
                    a.kill()  # mid-run, with LLM calls in flight
    assert seen[-1].run_state_changed.to_state != run_pb2.RUN_STATE_COMPLETED

    b = ServerProcess(own_database, env={"LACE_LEASE_TTL_S": "2"}).start()
    try:
        async with grpc.aio.insecure_channel(b.target) as channel:
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            rest = await asyncio.wait_for(watch(runs, run.id, seen[-1].seq), 90)
            everything = await watch(runs, run.id)
            final = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    finally:
        b.stop()

    received = seen + rest
    assert [e.seq for e in received] == list(range(1, len(received) + 1))  # nothing lost or reordered
    assert received == everything  # and what a newcomer replays is the same history
    assert final.state == run_pb2.RUN_STATE_COMPLETED
    states = [e.run_state_changed.to_state for e in received if e.WhichOneof("payload") == "run_state_changed"]
    assert states == [run_pb2.RUN_STATE_PENDING, run_pb2.RUN_STATE_RUNNING, run_pb2.RUN_STATE_COMPLETED]

    written = collections.Counter(e.blocks_applied.node_id for e in received
                                  if e.WhichOneof("payload") == "blocks_applied")
    assert all(n == 1 for n in written.values())  # no section applied twice
    planned = {c.node_id for e in received if e.WhichOneof("payload") == "node_split" for c in e.node_split.children}
    nodes, per_node = ir_counts(own_database, artifact.id)
    assert nodes == len(planned) + 1  # root + every planned child, once
    assert {n for n, _, _ in per_node} == set(written)
    assert all(count == top + 1 for _, count, top in per_node)  # ordinals 0..k-1, no duplicate blocks


@pytest.mark.timeout(240)
async def test_a_restarted_embedded_server_takes_back_its_runs_without_waiting_for_their_leases(
        tmp_path: Path) -> None:
    # Leases of 10 minutes: the run can only finish within this test's time if the restarted server
    # (same data directory, so the same owner id) takes back its own lease instead of waiting.
    env = {"LACE_DATA_DIR": str(tmp_path / "lace"), "LACE_LEASE_TTL_S": "600", "LACE_OFFLINE_LATENCY_MS": "100"}
    a = ServerProcess(None, env=env).start(timeout=120)
    async with grpc.aio.insecure_channel(a.target) as channel:
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        run = await start_run(runs, (await create_artifact(ArtifactServiceStub(channel), 4000)).id)
        seen: list[run_pb2.RunEvent] = []
        with pytest.raises(grpc.aio.AioRpcError):
            async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
                seen.extend(response.events)
                if any(e.WhichOneof("payload") == "blocks_applied" for e in seen) and a.proc:
                    a.kill()
    assert seen[-1].run_state_changed.to_state != run_pb2.RUN_STATE_COMPLETED  # killed while it held the lease
    b = ServerProcess(None, env=env).start(timeout=120)
    try:
        async with grpc.aio.insecure_channel(b.target) as channel:
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            rest = await asyncio.wait_for(watch(runs, run.id, seen[-1].seq), 120)
    finally:
        b.stop()
    received = seen + rest
    assert [e.seq for e in received] == list(range(1, len(received) + 1))
    assert received[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
