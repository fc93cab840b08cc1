"""4. Engine overhead: milliseconds of engine time per node of a ~1,000-node artifact.

LACE: a real server in this process, the offline provider with zero latency, one run started
through gRPC with sequential steps (so times add up). It covers everything per node: context,
strategy, the step_started commit, plan and Apply, events, the live hub, the final validation.
Two figures, both without the time spent inside the provider (measured around every `complete`):
  * engine CPU: this process's CPU time over the run (the engine's own cost; Postgres's is not in it);
  * wall: runs.start_time -> runs.end_time (from Postgres), i.e. including every round trip and commit.

Baseline: the same rows with raw psycopg, one node's mutation, change_events, run_events and
llm_calls row per transaction, sequentially (the apply benchmark's raw writer): its CPU and wall
per node.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import psycopg
from psycopg_pool import AsyncConnectionPool

from bench import apply_throughput
from bench.common import Context, Row, bench_settings, lace_in_process, wait_for
from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
)
from lace_engine.llm.base import LLMProvider, LLMRequest, LLMResponse
from lace_engine.llm.offline import OfflineProvider
from lace_engine.service import Engine

NAME = "engine_overhead"
LEAF_WORDS = 200


class TimedProvider:
    """Wraps the provider and adds up the wall time spent inside `complete`."""

    def __init__(self, inner: LLMProvider):
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        try:
            return await self.inner.complete(request)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run(ctx: Context) -> list[Row]:
    words = ctx.size(100_000, 10_000, 2_000)
    with ctx.database("engine") as url:
        async with lace_in_process(url) as (target, running):
            engine = running.engine  # type: ignore[attr-defined]
            assert engine.executor is not None
            timed = TimedProvider(engine.executor.provider)
            engine.executor.provider = timed
            cpu_before = time.process_time()
            async with grpc.aio.insecure_channel(target) as channel:
                artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
                runs = run_service_pb2_grpc.RunServiceStub(channel)
                created = await artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
                    artifact=artifact_pb2.Artifact(title="Grid-scale energy storage", target_words=words,
                                                   brief="A handbook on grid-scale energy storage for regional "
                                                         "planners: technologies, costs, siting, policy.")))
                started = await runs.StartRun(run_service_pb2.StartRunRequest(
                    artifact_id=created.artifact.id,
                    options=run_pb2.RunOptions(leaf_words=LEAF_WORDS, max_depth=4, sibling_concurrency=1)))
                run_id = started.run.id

                async def finished() -> bool:
                    got = await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run_id))
                    return got.run.state in (run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_FAILED)

                await wait_for(finished, within_s=900, interval=0.2, what="the engine-overhead run")
            cpu = time.process_time() - cpu_before
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT r.state, extract(epoch FROM r.end_time - r.start_time), "
                    "(SELECT count(*) FROM nodes n WHERE n.artifact_id = r.artifact_id) FROM runs r WHERE r.id = %s",
                    (run_id,))
                row = await cur.fetchone()
                assert row is not None
            state, wall, nodes = str(row[0]), float(row[1]), int(row[2])
            if state != "completed":
                raise RuntimeError(f"the run ended {state}")
            # The zero-latency provider is pure CPU in this process: its time comes off both figures.
            per_node = (wall - timed.seconds) / nodes * 1000
            cpu_per_node = (cpu - timed.seconds) / nodes * 1000

        # The floor: the same kind of rows per node with raw psycopg, one node after another
        # (an engine that executes nothing only sets up the artifacts and runs).
        setup = Engine(bench_settings(url, execute_runs=False), url, OfflineProvider())
        await setup.start()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(url, min_size=1, max_size=1, open=False)
        await pool.open(wait=True)
        try:
            await apply_throughput._measure(setup, 1, 3, "raw", pool, words=LEAF_WORDS)
            tx_s, raw_cpu = await apply_throughput.measure_detail(setup, 1, ctx.size(200, 40, 10), "raw", pool,
                                                                  words=LEAF_WORDS)
        finally:
            await pool.close()
            await setup.aclose()
    floor = 1000 / tx_s
    note = (f"run wall {wall:.1f}s, of which {timed.seconds:.2f}s inside the zero-latency offline provider "
            f"({timed.calls} calls); CPU = this process (engine, gRPC server, hub), Postgres excluded")
    return [
        Row(f"4. engine CPU ms per node ({nodes:,} nodes)", cpu_per_node, raw_cpu * 1000, "ms", "< 5 ms",
            cpu_per_node < 5, baseline_label="raw psycopg, same rows", note=note),
        Row(f"4. wall ms per node ({nodes:,} nodes, sequential)", per_node, floor, "ms", "", None,
            baseline_label="raw psycopg, same rows"),
    ]
