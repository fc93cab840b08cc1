"""8. Scale-out: live latency through JetStream across replicas, and runs/s with 1-3 workers.

Live latency: this process commits through an Engine (as a worker would); an API replica
(`lace serve --no-execute`, LACE_EVENT_BUS=nats) serves 100 streams. The event mirror (leader
elected among the NATS-enabled processes) publishes the committed events to JetStream and the
replica's live tail hands them to its streams. Baseline: the bare grpc.aio server in a second
process fed by LISTEN + raw psycopg reads (as in row 2, across processes).

Workers: one API replica and N `lace worker` processes (LACE_EVENT_BUS=nats, job dispatch over
NATS), LACE_LLM=openai against the OpenAI-compatible test server with a fixed latency, each
worker limited to a few LLM calls in flight, so the ideal grows linearly with workers. Enough runs
that every worker stays busy for several rounds of calls (a single wave would measure one run's
length, not throughput). Runs/s = runs / (first StartRun -> last run end). Baseline: the same with
one worker.
"""

from __future__ import annotations

import asyncio

import psycopg

from bench import live_latency
from bench.common import Child, Context, Row, bench_settings, percentile, python_env
from bench.concurrency import start_runs, wait_runs
from lace_engine.llm.offline import OfflineProvider
from lace_engine.service import Engine
from tests.support.nats import NatsServer
from tests.support.server_process import ServerProcess

NAME = "scale_out"
PER_WORKER_LLM = 4


def nats_env(nats_url: str) -> dict[str, str]:
    return {"LACE_EVENT_BUS": "nats", "LACE_NATS_URL": nats_url, "LACE_DB_POOL_SIZE": "4",
            "LACE_STREAM_FALLBACK_S": "2"}


async def jetstream_latency(ctx: Context, url: str, replica: ServerProcess, streams: int, commits: int) -> \
        tuple[list[float], list[float], int]:
    writer = Engine(bench_settings(url, execute_runs=False), url, OfflineProvider())
    await writer.start()
    raw = await Child.python("bench.raw_stream", "live", "--database-url", url)
    client = await live_latency.stream_client()
    try:
        raw_target = "127.0.0.1:" + (await raw.expect("LISTENING", 60)).split()[1]
        probe = await live_latency._new_run(writer)
        lace, missing = await live_latency.measure(ctx, client, url, replica.target, probe,
                                                   live_latency.lace_writer(writer, probe), streams, commits, 0.03)
        base_probe = await live_latency._new_run(writer)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            base, _ = await live_latency.measure(ctx, client, url, raw_target, base_probe,
                                                 live_latency.raw_writer(conn, base_probe, None), streams, commits,
                                                 0.03)
    finally:
        await client.stop()
        await raw.stop()
        await writer.aclose()
    return lace, base, missing


async def start_worker(url: str, nats_url: str, base_url: str) -> Child:
    """A `lace worker` with PER_WORKER_LLM calls in flight (and, by default, twice that many runs)."""
    env = {**python_env(), "LACE_DATABASE_URL": url, "LACE_LLM": "openai", "OPENAI_BASE_URL": base_url,
           "OPENAI_API_KEY": "unused", "LACE_LLM_CONCURRENCY": str(PER_WORKER_LLM), "LACE_LOG_LEVEL": "WARNING",
           "LACE_LOG_FORMAT": "text", **nats_env(nats_url)}
    worker = await Child.python("lace_server.cli", "worker", env=env)
    await worker.expect("lace: worker", 60)
    return worker


async def runs_per_second(url: str, replica: ServerProcess, runs: int) -> float:
    """Runs / (first StartRun -> last run end) for `runs` runs started at once through the replica."""
    run_ids = await start_runs(replica.target, runs, 600, 300)
    await wait_runs(url, run_ids, within_s=600)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT extract(epoch FROM max(end_time) - min(create_time)) FROM runs "
                                 "WHERE id = ANY(%s::uuid[])", (run_ids,))
        row = await cur.fetchone()
        assert row is not None
    return runs / float(row[0])


async def run(ctx: Context) -> list[Row]:
    streams, commits = ctx.size(100, 100, 10), ctx.size(200, 10, 4)
    runs = ctx.size(48, 30, 3)
    latency_ms = ctx.size(200, 100, 50)
    llm = await Child.python("tests.support.openai_server", "--latency-ms", str(latency_ms))  # boots meanwhile
    nats = NatsServer()
    rows: list[Row] = []
    workers: list[Child] = []
    try:
        nats.start()
        base_url = (await llm.expect("listening on", 30)).split()[-1]
        with ctx.database("scale") as url:
            # One API replica serves both parts; workers are added one at a time.
            replica = ServerProcess(url, env=nats_env(nats.url), args=("serve", "--no-execute"))
            await asyncio.to_thread(replica.start)
            try:
                ctx.log("  scale-out: live latency through JetStream")
                lace, base, missing = await jetstream_latency(ctx, url, replica, streams, commits)
                for p in (50, 99):
                    rows.append(Row(f"8. live p{p}, {streams} streams, JetStream across replicas",
                                    percentile(lace, p), percentile(base, p), "ms", "< 25 ms" if p == 99 else "",
                                    percentile(lace, p) < 25 if p == 99 else None,
                                    baseline_label="raw LISTEN + grpc.aio",
                                    note=f"{missing} deliveries missing" if missing and p == 99 else ""))
                # Three workers boot side by side, then one leaves after each measurement (3, 2, 1):
                # the same rows as adding them one at a time, with one boot's wait instead of three.
                workers.extend(await asyncio.gather(*(start_worker(url, nats.url, base_url) for _ in range(3))))
                rates: dict[int, float] = {}
                for n in (3, 2, 1):
                    ctx.log(f"  scale-out: {n} worker(s), {runs} runs")
                    rates[n] = await runs_per_second(url, replica, runs)
                    if n > 1:
                        await workers.pop().stop()
            finally:
                for w in workers:
                    await w.stop()
                await asyncio.to_thread(replica.stop)
        for n in (1, 2, 3):
            goal = f">= {0.8 * n:.1f}x 1 worker" if n > 1 else ""
            rows.append(Row(f"8. runs/s, {n} worker{'s' if n > 1 else ''} "
                            f"({runs} runs, {PER_WORKER_LLM} LLM calls in flight per worker, {latency_ms} ms)",
                            rates[n], rates[1],
                            "runs/s", goal, rates[n] >= 0.8 * n * rates[1] if n > 1 else None,
                            baseline_label="1 worker"))
    finally:
        await llm.stop()
        nats.close()
    return rows
