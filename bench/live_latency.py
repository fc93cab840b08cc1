"""2. Live latency: COMMIT sent -> the event reaches a StreamRun client, p50 and p99.

N clients (in a separate process, one HTTP/2 connection per 250 streams) stream the same run,
so each commit fans out to N streams. The writer commits one step_started event at a time at a
fixed pace and stamps the moment just before it sends COMMIT (the same for LACE and the
baselines); clients stamp receipt on the same (system-wide monotonic) clock.

LACE, in process: the writer is the serving Engine's own `Database.transaction` +
`event_log.append` (as `RunJournal.commit` does), so events reach the
streams through the live hub. LACE, across processes: the writer is an Engine in this process,
the streams are served by a second `lace serve --no-execute` process that learns of the commit
through LISTEN/NOTIFY and reads the events from Postgres.

Baselines: the same statements with raw psycopg; in process the message is built once and put
on every stream's queue of a bare grpc.aio server; across processes a bare grpc.aio server in a
second process LISTENs, reads the new rows with raw psycopg and fans them out.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from bench.common import Child, Context, Row, bench_settings, lace_in_process, percentile
from bench.fixtures import artifact_with_leaves, running_run
from bench.raw_stream import RawLiveServer, step_started_pb
from lace_engine.domain import EventType, NewEvent
from lace_engine.llm.offline import OfflineProvider
from lace_engine.service import Engine
from lace_engine.storage import event_log
from tests.support.server_process import ServerProcess

NAME = "live_latency"

Commit = Callable[[], Awaitable[None]]


@dataclass
class Probe:
    """Commit times by seq of one run, filled in by whichever writer commits."""

    run_id: uuid.UUID
    stamps: dict[int, int]


def _payload(i: int) -> dict[str, object]:
    return {"node_id": str(uuid.UUID(int=i + 1)), "step": "write", "attempt": 1}


def lace_writer(engine: Engine, probe: Probe) -> Commit:
    """Commits through the engine; the stamp is taken just before COMMIT is sent (see `_stamp`)."""
    counter = iter(range(10**9))

    async def commit() -> None:
        async with engine.db.transaction() as tx:
            appended = await event_log.append(tx, probe.run_id,
                                              [NewEvent(EventType.STEP_STARTED, _payload(next(counter)))])
            _stamp(probe, [e.seq for e in appended.events])

    return commit


def _stamp(probe: Probe, seqs: list[int]) -> None:
    """Marks `seqs` committed now: the last moment before COMMIT is sent, the same for every writer.

    A stamp taken after COMMIT returns can be later than the receipt: the server's NOTIFY reaches
    a listener in another process before the writer's client has read COMMIT's reply (seen as a
    -0.94 ms baseline p50). Stamped before, every latency includes the COMMIT and cannot be negative.
    """
    now = time.monotonic_ns()
    for seq in seqs:
        probe.stamps[seq] = now


def raw_writer(conn: psycopg.AsyncConnection[tuple[object, ...]], probe: Probe, server: RawLiveServer | None) \
        -> Commit:
    """The same statements with raw psycopg; in process, fans the built message out itself."""
    counter = iter(range(10**9))
    run = str(probe.run_id)

    async def commit() -> None:
        payload = _payload(next(counter))
        now = datetime.now(UTC)
        async with conn.transaction():
            cur = await conn.execute("UPDATE runs SET head_seq = head_seq + 1, update_time = now() WHERE id = %s "
                                     "RETURNING head_seq", (probe.run_id,), prepare=True)
            row = await cur.fetchone()
            assert row is not None
            seq = int(str(row[0]))
            await conn.execute("INSERT INTO run_events (run_id, seq, type, payload, create_time) "
                               "VALUES (%s, %s, %s, %s, %s)",
                               (probe.run_id, seq, EventType.STEP_STARTED.value, Jsonb(payload), now), prepare=True)
            await conn.execute("SELECT pg_notify(%s, %s)", ("lace_events", f"{run}:{seq}"), prepare=True)
            _stamp(probe, [seq])
        if server is not None:
            server.publish(run, step_started_pb(run, seq, payload, now))

    return commit


async def head_of(url: str, run_id: uuid.UUID) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT head_seq FROM runs WHERE id = %s", (run_id,))
        row = await cur.fetchone()
        assert row is not None
        return int(str(row[0]))


async def measure(ctx: Context, client: Child, url: str, target: str, probe: Probe, commit: Commit, streams: int,
                  commits: int, interval: float) -> tuple[list[float], int]:
    """Latencies (ms) of `commits` commits to `streams` clients, and how many deliveries were missing.

    `client` is a bench.stream_client process, reused from one measurement to the next.
    """
    cursor = await head_of(url, probe.run_id)
    out = ctx.workdir / f"live-{uuid.uuid4().hex[:8]}.json"
    await client.send(f"OPEN {target} {streams} {out} {probe.run_id}:{cursor}")
    ready = asyncio.ensure_future(client.expect("READY", 120))
    try:
        while not ready.done():  # warm-up commits until every stream has received one
            await commit()
            await asyncio.wait({ready}, timeout=max(0.1, 2 * interval))
        ready.result()
        await asyncio.sleep(0.1)
        probe.stamps.clear()
        for _ in range(commits):
            started = time.perf_counter()
            await commit()
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
        await asyncio.sleep(max(0.2, 2 * interval))
        stamps = dict(probe.stamps)
    finally:
        ready.cancel()
        await client.send("STOP")
        await client.expect("DONE", 60)
    data = json.loads(out.read_text())
    if data["errors"]:
        raise RuntimeError(f"stream errors: {data['errors'][:3]}")
    received: dict[str, list[int]] = data["received"][str(probe.run_id)]
    latencies = [(t - stamp) / 1e6 for seq, stamp in stamps.items() for t in received.get(str(seq), [])]
    return latencies, len(stamps) * streams - len(latencies)


async def stream_client() -> Child:
    return await Child.python("bench.stream_client")


async def _new_run(engine: Engine) -> Probe:
    artifact_id, _ = await artifact_with_leaves(engine.db, 2, 500)
    run, _ = await running_run(engine.db, artifact_id, owner="bench-live")
    return Probe(run.id, {})


def _rows(where: str, streams: int, lace: list[float], base: list[float], missing: int, goal_ms: float | None) \
        -> list[Row]:
    rows = []
    for p in (50, 99):
        lp, bp = percentile(lace, p), percentile(base, p)
        goal, met = "", None
        if goal_ms is not None and p == 99:
            goal, met = f"< {goal_ms:g} ms", lp < goal_ms
        label = "raw grpc.aio + psycopg"
        note = f"{missing} deliveries missing" if missing and p == 99 else ""
        rows.append(Row(f"2. live p{p}, {streams} stream{'s' if streams > 1 else ''}, {where}", lp, bp, "ms",
                        goal, met, baseline_label=label, note=note))
    return rows


async def run(ctx: Context) -> list[Row]:
    many, most = ctx.size(100, 100, 10), ctx.size(1000, 150, 50)
    plan = [  # (streams, commits, interval s)
        (1, ctx.size(300, 20, 5), 0.01),
        (many, ctx.size(200, 15, 5), 0.03),
        (most, ctx.size(50, 5, 3), ctx.size(0.2, 0.1, 0.2)),
    ]
    goals = {("in process", 100): 10.0, ("across processes", 100): 25.0}
    client = await stream_client()
    try:
        return await _run(ctx, client, plan, goals)
    finally:
        await client.stop()


async def _run(ctx: Context, client: Child, plan: list[tuple[int, int, float]],
               goals: dict[tuple[str, int], float]) -> list[Row]:
    rows: list[Row] = []
    with ctx.database("live") as url:
        # In process: the serving engine commits.
        results: dict[tuple[str, int], tuple[list[float], list[float], int]] = {}
        async with lace_in_process(url, execute_runs=False) as (target, running):
            engine = running.engine  # type: ignore[attr-defined]
            for streams, commits, interval in plan:
                ctx.log(f"  live: {streams} streams, in process")
                probe = await _new_run(engine)
                lace, missing = await measure(ctx, client, url, target, probe, lace_writer(engine, probe),
                                              streams, commits, interval)
                raw_server = RawLiveServer()
                raw_target = await raw_server.start()
                try:
                    async with await psycopg.AsyncConnection.connect(url) as conn:
                        base_probe = await _new_run(engine)
                        base, _ = await measure(ctx, client, url, raw_target, base_probe,
                                                raw_writer(conn, base_probe, raw_server), streams, commits, interval)
                finally:
                    await raw_server.stop()
                results[("in process", streams)] = (lace, base, missing)

        # Across processes: this process commits, a second process serves the streams.
        writer = Engine(bench_settings(url, execute_runs=False), url, OfflineProvider())
        await writer.start()
        server = ServerProcess(url, args=("serve", "--no-execute"))
        raw_child = await Child.python("bench.raw_stream", "live", "--database-url", url)  # boots meanwhile
        try:
            await asyncio.to_thread(server.start)
            raw_target = "127.0.0.1:" + (await raw_child.expect("LISTENING", 60)).split()[1]
            async with await psycopg.AsyncConnection.connect(url) as conn:
                for streams, commits, interval in plan:
                    ctx.log(f"  live: {streams} streams, across processes")
                    probe = await _new_run(writer)
                    lace, missing = await measure(ctx, client, url, server.target, probe,
                                                  lace_writer(writer, probe), streams, commits, interval)
                    base_probe = await _new_run(writer)
                    base, _ = await measure(ctx, client, url, raw_target, base_probe,
                                            raw_writer(conn, base_probe, None), streams, commits, interval)
                    results[("across processes", streams)] = (lace, base, missing)
        finally:
            await raw_child.stop()
            await asyncio.to_thread(server.stop)
            await writer.aclose()
    for (where, streams), (lace, base, missing) in results.items():
        rows.extend(_rows(where, streams, lace, base, missing, goals.get((where, streams))))
    return rows
