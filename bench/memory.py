"""7. Memory: RSS of a `lace serve` process with 1,000 open streams and 100 active runs.

The server runs in its own process (offline provider, LACE_OFFLINE_LATENCY_MS so runs stay
active for a while); 100 runs are started at once and 1,000 streams (10 per run, from a client
process) follow them to their end. RSS is sampled every 100 ms. The same load is applied three
times: "flat" compares RSS after the third round with RSS after the first (a leak grows with every
round; one reading after one more round was within the allocator's noise either way).
Baseline: the same server's RSS once started and idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import psutil

from bench.common import Child, Context, Row
from bench.concurrency import start_runs, wait_runs
from tests.support.server_process import ServerProcess

NAME = "memory"
MB = 1024 * 1024


async def _round(ctx: Context, url: str, server: ServerProcess, proc: psutil.Process, client: Child, runs: int,
                 streams: int, words: tuple[int, int], peak: list[float]) -> None:
    run_ids = await start_runs(server.target, runs, *words)
    out = ctx.workdir / f"memory-{uuid.uuid4().hex[:8]}.json"
    await client.send(f"OPEN {server.target} {streams} {out} " + " ".join(f"{rid}:0" for rid in run_ids))

    async def sample() -> None:
        while True:
            peak.append(proc.memory_info().rss / MB)
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    try:
        await client.expect("READY", 300)
        await wait_runs(url, run_ids, within_s=600)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await client.send("STOP")
        await client.expect("DONE", 60)


async def run(ctx: Context) -> list[Row]:
    runs = ctx.size(100, 20, 10)
    streams = ctx.size(1000, 200, 50)
    words = ctx.size((1200, 300), (300, 300), (300, 300))
    with ctx.database("memory") as url:
        server = ServerProcess(url, env={"LACE_OFFLINE_LATENCY_MS": str(ctx.size(300, 50, 20))})
        client = await Child.python("bench.stream_client")  # boots while the server starts
        try:
            await asyncio.to_thread(server.start)
            assert server.proc is not None
            proc = psutil.Process(server.proc.pid)
            await asyncio.sleep(ctx.size(1.0, 0.5, 0.2))
            idle = proc.memory_info().rss / MB
            peak: list[float] = []
            after: list[float] = []
            for i in range(3):
                ctx.log(f"  memory: round {i + 1}, {runs} runs, {streams} streams")
                await _round(ctx, url, server, proc, client, runs, streams, words, peak)
                await asyncio.sleep(ctx.size(1.0, 0.5, 0.2))
                after.append(proc.memory_info().rss / MB)
        finally:
            await client.stop()
            await asyncio.to_thread(server.stop)
    top = max(peak)
    return [
        Row(f"7. server RSS peak, {streams:,} streams + {runs} runs", top, idle, "MB", "< 400 MB", top < 400,
            baseline_label="same server idle"),
        Row("7. server RSS after 3rd round vs after 1st", after[2], after[0], "MB", "flat (<= 1.1x)",
            after[2] <= 1.1 * after[0], baseline_label="after 1st round",
            note="after each round: " + ", ".join(f"{mb:.0f} MB" for mb in after)),
    ]
