"""6. Critical path: a three-level artifact (~40 leaves), every LLM call taking the same latency.

LACE: a real server in this process, the offline provider with LACE_OFFLINE_LATENCY_MS, one run
started through gRPC and watched through StreamRun to its end. Root -> 8 sections -> ~5 leaves
each (max_depth 2, so the third level is written whatever its size). With sibling concurrency
on (64, above the leaf count) the ideal is the critical path: 3 calls x latency. The same
artifact shape in sequential mode (sibling_concurrency 1) is reported beside it against its
own ideal (calls x latency).
"""

from __future__ import annotations

import time

import grpc
import psycopg

from bench.common import Context, Row, lace_in_process
from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
)

NAME = "critical_path"
LEVELS = 3
WORDS = 7300
LEAF = 200


async def one_run(target: str, url: str, concurrency: int) -> tuple[float, int, int]:
    """Wall time from StartRun to the terminal event on the stream, LLM calls, leaves."""
    async with grpc.aio.insecure_channel(target) as channel:
        artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        created = await artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title="Coastal flood defences", target_words=WORDS,
                                           brief="A planning report on coastal flood defences for councils.")))
        started_at = time.perf_counter()
        started = await runs.StartRun(run_service_pb2.StartRunRequest(
            artifact_id=created.artifact.id,
            options=run_pb2.RunOptions(leaf_words=LEAF, max_depth=LEVELS - 1, sibling_concurrency=concurrency)))
        last = None
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=started.run.id)):
            if response.events:
                last = response.events[-1]
        wall = time.perf_counter() - started_at
        assert last is not None and last.run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED, last
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT (SELECT llm_calls FROM runs WHERE id = %s), count(*) FILTER (WHERE state = 'written') "
            "FROM nodes WHERE artifact_id = %s", (started.run.id, created.artifact.id))
        row = await cur.fetchone()
        assert row is not None
    return wall, int(row[0]), int(row[1])


async def run(ctx: Context) -> list[Row]:
    latency = ctx.size(0.5, 0.05, 0.02)
    with ctx.database("critical") as url:
        async with lace_in_process(url, env={"LACE_OFFLINE_LATENCY_MS": str(int(latency * 1000))}) as (target, _):
            if ctx.mode == "full":
                await one_run(target, url, 64)  # warm-up
            wall, calls, leaves = await one_run(target, url, 64)
            seq_wall, seq_calls, seq_leaves = await one_run(target, url, 1)
    ideal = LEVELS * latency
    seq_ideal = seq_calls * latency
    return [
        Row(f"6. critical path, {LEVELS} levels, {leaves} leaves, {latency:g} s/call, concurrent", wall, ideal, "s",
            "<= 1.5x ideal", wall <= 1.5 * ideal, baseline_label=f"{LEVELS} x {latency:g} s",
            note=f"{calls} LLM calls"),
        Row(f"6. same, sequential ({seq_leaves} leaves)", seq_wall, seq_ideal, "s", "", None,
            baseline_label=f"{seq_calls} calls x {latency:g} s"),
    ]
