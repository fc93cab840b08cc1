"""9. Database outages: what a run pays for PostgreSQL going away under it, against the same run without.

LACE: a real server in this process whose every database connection goes through a TCP proxy
(tests/support/tcp_proxy.py). The same run (8,000 words split once into 8 leaves, written one after
another, the offline provider taking a fixed latency per call) is made twice on one server: once
undisturbed (the baseline), once with K outages of D seconds (every connection cut, none accepted for
D seconds) while it runs. Reported: the wall time; the resume delay, from the moment the database
accepts connections again to the next event the stream receives (detection, backoff, re-reading the
IR; one clock, so it cannot be negative); the LLM calls made per applied step (calls whose result was
lost with a connection are made again); and the nodes and applied steps, which must equal the
undisturbed run's (the offline text differs per run, so blocks are compared by identity instead: no
seq, node or block change is doubled, or the benchmark fails).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import grpc
import psycopg

from bench.common import Context, Row, lace_in_process
from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.llm.base import LLMProvider, LLMRequest, LLMResponse
from lace_server.server import Running
from tests.support.database import proxied_url, proxy_upstream
from tests.support.tcp_proxy import TcpProxy

NAME = "db_outage"
WORDS, LEAVES = 8000, 8


class CountingProvider:
    """The server's provider, counting the calls it is asked to make (kept or lost)."""

    def __init__(self, inner: LLMProvider):
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def one_run(target: str, url: str, proxy: TcpProxy, outages: int, outage_s: float, gap_s: float) \
        -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
        created = (await artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title="Heat networks", target_words=WORDS,
                                           brief="A guide to district heating for planners.")))).artifact
        started_at = time.perf_counter()
        run = (await runs.StartRun(run_service_pb2.StartRunRequest(
            artifact_id=created.id,
            options=run_pb2.RunOptions(leaf_words=1000, max_depth=1, sibling_concurrency=1)))).run

        # (when the database went away, when it accepted connections again), per outage.
        windows: list[tuple[float, float]] = []

        async def cut() -> None:
            for _ in range(outages):
                await asyncio.sleep(gap_s)
                gone = time.perf_counter()
                await proxy.outage(outage_s)
                windows.append((gone, time.perf_counter()))

        cutting = asyncio.create_task(cut())
        seqs: list[int] = []
        arrivals: list[float] = []
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
            seqs += [e.seq for e in response.events]
            arrivals.append(time.perf_counter())
        wall = time.perf_counter() - started_at
        finished_before_outages = not cutting.done()
        await cutting
        done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert done.state == run_pb2.RUN_STATE_COMPLETED, done.failure_reason
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) - count(DISTINCT seq) FROM run_events WHERE run_id = %s), "
            "(SELECT count(*) FROM nodes WHERE artifact_id = %s) - %s, "
            "(SELECT count(*) - count(DISTINCT block_id) FROM change_events WHERE artifact_id = %s), "
            "(SELECT count(*) FROM llm_calls WHERE run_id = %s AND outcome = 'applied'), "
            "(SELECT count(*) FROM nodes WHERE artifact_id = %s)",
            (run.id, created.id, LEAVES + 1, created.id, run.id, created.id))
        row = await cur.fetchone()
    assert row is not None
    doubled = int(row[0]) + int(row[1]) + int(row[2]) + (len(seqs) - len(set(seqs)))
    assert doubled == 0 and seqs == list(range(1, done.head_seq + 1)), (doubled, seqs)
    # The first event after each outage, if it came before the next one began.
    starts = [gone for gone, _ in windows[1:]] + [math.inf] * bool(windows)
    delays = [min(a for a in arrivals if a > back) - back for (_, back), nxt in zip(windows, starts, strict=True)
              if any(back < a < nxt for a in arrivals)]
    return {"wall": wall, "applied": int(row[3]), "steps": int(row[3]) + int(row[4]), "delays": delays,
            "cut_late": finished_before_outages}


async def run(ctx: Context) -> list[Row]:
    latency_s = ctx.size(0.5, 0.2, 0.05)
    # Outages far enough apart for the run to resume between them (the retry backs off to 1 s).
    outages, outage_s, gap_s = ctx.size(3, 2, 1), ctx.size(1.0, 0.5, 0.3), ctx.size(1.5, 1.0, 0.3)
    with ctx.database("outage") as url:
        async with TcpProxy(proxy_upstream(url)) as proxy, lace_in_process(
                proxied_url(url, proxy.target), env={"LACE_OFFLINE_LATENCY_MS": str(int(latency_s * 1000))}) as (
                target, running):
            assert isinstance(running, Running) and running.engine.executor is not None
            counting = CountingProvider(running.engine.executor.provider)
            running.engine.executor.provider = counting
            await one_run(target, url, proxy, 0, 0.0, 0.0)  # warm-up: first-run costs are in neither figure
            before = counting.calls
            base = await one_run(target, url, proxy, 0, 0.0, 0.0)
            base_calls = counting.calls - before
            hit = await one_run(target, url, proxy, outages, outage_s, gap_s)
            hit_calls = counting.calls - before - base_calls
    delay = max(hit["delays"]) if hit["delays"] else math.nan
    note = f"{outages} outages of {outage_s:g} s, {gap_s:g} s apart, {latency_s:g} s per LLM call"
    if hit["cut_late"]:
        note += "; the run ended before the last outage began"
    return [
        Row(f"9. run with {outages} x {outage_s:g} s database outages", hit["wall"], base["wall"], "s",
            baseline_label="same run, no outage", note=note),
        Row("9. resume delay after an outage, worst", delay, outage_s, "s", "< 3 s", delay < 3.0,
            baseline_label="the outage's length"),
        Row("9. LLM calls per applied step", hit_calls / hit["applied"], base_calls / base["applied"], "calls",
            baseline_label="no outage"),
        Row("9. nodes and applied steps", float(hit["steps"]), float(base["steps"]), "rows",
            "= baseline (nothing doubled)", hit["steps"] == base["steps"], baseline_label="no outage"),
    ]
