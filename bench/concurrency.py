"""5. Concurrency: 200 runs at once against the OpenAI-compatible test server answering in 100 ms.

LACE: `lace serve` in a second process with LACE_LLM=openai pointed at the test server (a third
process), LACE_LLM_CONCURRENCY=64; 200 artifacts, 200 runs started at once through gRPC. The
figure is the steady-state rate of applied LLM calls (llm_calls rows between the 10th and the
90th percentile of their commit times), so start-up and the tail of the last runs do not count.

Baselines: the ideal for the limit (64 calls in flight / 0.1 s = 640 calls/s), and a bare
`openai.AsyncOpenAI` client with the same limit making the same kind of call to the same server
from this process (what the machine allows a client that does nothing else), on the HTTP transport
LACE's provider uses (LACE_LLM_HTTP, aiohttp by default), so the two differ by the engine alone.

The same scenario again with LACE_LLM_CONCURRENCY=8 (ideal 80 calls/s): a limit this machine's
CPU can serve, so the row shows whether the engine keeps every permit busy when it is not the
CPU that runs out. The server's CPU time per applied call is in the notes.

Last, runs of a single call each (a 300-word brief is one section: what regenerating one section
costs), 300 of them at limit 64: runs/s against the bare client's calls/s, so the ratio is what a
run's whole lifecycle (StartRun, claim, context, the call, Apply, the quality report, completion)
leaves of the rate of bare calls; the server's CPU per run is in the note.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import grpc
import psutil
import psycopg

from bench.common import Child, Context, Row, percentile, wait_for
from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
)
from lace_engine.llm.factory import http_transport_from_env
from tests.support.server_process import ServerProcess

NAME = "concurrency"
LATENCY_MS = 100
# (LACE_LLM_CONCURRENCY, runs in full / quick / smoke mode); quick needs fewer runs at limit 8,
# where 60 calls already fill the 80 calls/s for longer than the start-up.
SCENARIOS = ((64, (200, 20, 20)), (8, (200, 12, 20)))
ONE_CALL_RUNS = (300, 60, 20)
BRIEF = "A short guide to heat pumps for installers: sizing, siting, commissioning and maintenance."


async def start_runs(target: str, runs: int, words: int, leaf_words: int) -> list[str]:
    async with grpc.aio.insecure_channel(target) as channel:
        artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        created = await asyncio.gather(*(artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title=f"Heat pumps {i}", brief=BRIEF, target_words=words)))
            for i in range(runs)))
        started = await asyncio.gather(*(stub.StartRun(run_service_pb2.StartRunRequest(
            artifact_id=c.artifact.id, options=run_pb2.RunOptions(leaf_words=leaf_words, max_depth=3)))
            for c in created))
    return [s.run.id for s in started]


async def wait_runs(url: str, run_ids: list[str], within_s: float) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async def done() -> bool:
            cur = await conn.execute("SELECT count(*) FROM runs WHERE id = ANY(%s::uuid[]) AND state IN "
                                     "('completed', 'failed', 'cancelled')", (run_ids,))
            row = await cur.fetchone()
            return row is not None and int(row[0]) == len(run_ids)

        await wait_for(done, within_s, interval=0.05, what=f"{len(run_ids)} runs to finish")
        cur = await conn.execute("SELECT state, count(*) FROM runs WHERE id = ANY(%s::uuid[]) GROUP BY state",
                                 (run_ids,))
        states = {str(state): int(str(n)) for state, n in await cur.fetchall()}
        if set(states) != {"completed"}:
            raise RuntimeError(f"runs ended {states}")


async def steady_rate(url: str, run_ids: list[str]) -> tuple[float, int]:
    """Applied LLM calls per second between the 10th and 90th percentile of their commit times."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT extract(epoch FROM create_time) FROM llm_calls WHERE run_id = ANY(%s::uuid[]) "
                                 "ORDER BY create_time", (run_ids,))
        times = [float(r[0]) for r in await cur.fetchall()]
    lo, hi = percentile(times, 10), percentile(times, 90)
    inside = sum(1 for t in times if lo <= t <= hi)
    return (inside / (hi - lo) if hi > lo else float("nan")), len(times)


async def bare_client(base_url: str, calls: int, limit: int) -> float:
    """A bare AsyncOpenAI client, `limit` calls in flight, against the same server: calls/s."""
    from openai import AsyncOpenAI

    from lace_engine.llm.openai_provider import sdk_http_client

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0,
                         http_client=sdk_http_client(http_transport_from_env(os.environ)))
    gate = asyncio.Semaphore(limit)
    task = json.dumps({"step": "write", "title": "Sizing a heat pump", "intent": "How to size one.",
                       "target_words": 300, "depth": 1})

    async def one(i: int) -> None:
        async with gate:
            await client.chat.completions.create(
                model="lace-offline-1", seed=i, response_format={"type": "json_object"},
                messages=[{"role": "system", "content": "You write one section as JSON."},
                          {"role": "user", "content": f"Write the section.\n\nTASK: {task}"}])

    try:
        await asyncio.gather(*(one(i) for i in range(limit)))  # warm the connections
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return calls / (time.perf_counter() - started)
    finally:
        await client.close()


def bare_calls(calls: int, limit: int) -> int:
    """Enough calls for several rounds of `limit` in flight, capped near LACE's own count."""
    return max(min(calls, 10 * limit), 4 * limit)


async def lace_rate(ctx: Context, base_url: str, limit: int, runs: int, words: int, leaf: int) -> \
        tuple[float, int, float]:
    """Steady-state applied calls/s, calls, and the server's CPU ms per call, for one limit."""
    with ctx.database("concurrency") as url:
        server = ServerProcess(url, env={"LACE_LLM": "openai", "OPENAI_BASE_URL": base_url,
                                         "OPENAI_API_KEY": "unused", "LACE_LLM_CONCURRENCY": str(limit),
                                         "LACE_MAX_CONCURRENT_RUNS": "256"})
        await asyncio.to_thread(server.start)
        try:
            assert server.proc is not None
            ctx.log(f"  concurrency: {runs} runs, limit {limit}")
            proc = psutil.Process(server.proc.pid)
            cpu_before = sum(proc.cpu_times()[:2])
            run_ids = await start_runs(server.target, runs, words, leaf)
            await wait_runs(url, run_ids, within_s=600)
            cpu = sum(proc.cpu_times()[:2]) - cpu_before
            rate, calls = await steady_rate(url, run_ids)
        finally:
            await asyncio.to_thread(server.stop)
    return rate, calls, cpu / calls * 1000


async def run(ctx: Context) -> list[Row]:
    words, leaf = ctx.size((1500, 300), (600, 300), (300, 300))
    rows: list[Row] = []
    llm = await Child.python("tests.support.openai_server", "--latency-ms", str(LATENCY_MS))
    try:
        base_url = (await llm.expect("listening on", 30)).split()[-1]
        for limit, sizes in SCENARIOS:
            runs = ctx.size(*sizes)
            ideal = limit / (LATENCY_MS / 1000)
            rate, calls, cpu_ms = await lace_rate(ctx, base_url, limit, runs, words, leaf)
            bare = await bare_client(base_url, bare_calls(calls, limit), limit)
            label = f"{runs} runs, limit {limit}, {LATENCY_MS} ms"
            rows += [
                Row(f"5. LLM calls/s vs ideal ({label})", rate, ideal, "calls/s", ">= 0.9x ideal",
                    rate >= 0.9 * ideal, baseline_label="ideal",
                    note=f"{calls} calls; steady state = 10th..90th percentile of commit times; "
                         f"server CPU {cpu_ms:.1f} ms per call"),
                Row(f"5. LLM calls/s vs bare client ({label})", rate, bare, "calls/s", "", None,
                    baseline_label="bare AsyncOpenAI"),
            ]
        runs = ctx.size(*ONE_CALL_RUNS)
        rate, calls, cpu_ms = await lace_rate(ctx, base_url, 64, runs, 300, 300)
        bare = await bare_client(base_url, bare_calls(calls, 64), 64)
        rows.append(Row(f"5. runs/s of one call each ({runs} runs, limit 64, {LATENCY_MS} ms)", rate, bare,
                        "runs/s", "", None, baseline_label="bare AsyncOpenAI calls/s",
                        note=f"{calls} runs of one call; server CPU {cpu_ms:.1f} ms per run"))
    finally:
        await llm.stop()
    return rows
