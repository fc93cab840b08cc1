"""3. Replay: StreamRun from cursor 0 over a finished run of N events, events/s at the client.

LACE: `lace serve --no-execute` in a second process, a grpc.aio client in this one reading every
batch until the stream ends after the terminal event.
Baselines, same rows: (a) raw psycopg in this process reading them in keyset batches of the
same size (1,000); (b) a bare grpc.aio server in a second process streaming the same events,
pre-built into StreamRunResponse batches of 1,000, to the same client.
The events are a realistic mix (strategy, step started, LLM call, blocks applied, step completed).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
from psycopg.types.json import Jsonb

from bench.common import Child, Context, Row, interleaved, median
from bench.fixtures import artifact_with_leaves, event_mix, running_run
from bench.raw_stream import write_batches
from lace.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from lace_engine.domain import EventType, RunEvent
from lace_engine.events.stream_run import MAX_BATCH
from lace_engine.storage.database import Database
from lace_server import convert
from tests.support.server_process import ServerProcess

NAME = "replay"


async def _fill(url: str, events: int) -> uuid.UUID:
    """A finished run with `events` events, written with COPY (set-up, untimed)."""
    db = Database(url, pool_size=2)
    await db.open()
    try:
        artifact_id, _ = await artifact_with_leaves(db, 2, 500)
        run, _ = await running_run(db, artifact_id, owner="bench-replay")
    finally:
        await db.aclose()
    mix = event_mix(events, run.id)
    start = datetime.now(UTC) - timedelta(hours=1)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute("DELETE FROM run_events WHERE run_id = %s", (run.id,))
            async with conn.cursor().copy(
                    "COPY run_events (run_id, seq, type, payload, create_time) FROM STDIN") as copy:
                for seq, etype, payload in mix:
                    await copy.write_row((run.id, seq, etype, Jsonb(payload), start + timedelta(milliseconds=seq)))
            await conn.execute("UPDATE runs SET head_seq = %s, state = 'completed', lease_owner = NULL, "
                               "end_time = now() WHERE id = %s", (len(mix), run.id))
        await conn.execute("ANALYZE run_events")
    return run.id


async def _stream(target: str, run_id: uuid.UUID, expected: int) -> float:
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        stub = run_service_pb2_grpc.RunServiceStub(ch)
        got = 0
        started = time.perf_counter()
        async for response in stub.StreamRun(run_service_pb2.StreamRunRequest(run_id=str(run_id), cursor=0)):
            got += len(response.events)
        elapsed = time.perf_counter() - started
    if got != expected:
        raise RuntimeError(f"{target} streamed {got} events, expected {expected}")
    return got / elapsed


_READ = ("SELECT run_id, seq, type, payload, create_time FROM run_events WHERE run_id = %s AND seq > %s "
         "ORDER BY seq LIMIT %s")


async def _psycopg(url: str, run_id: uuid.UUID, expected: int) -> float:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        got, last = 0, 0
        started = time.perf_counter()
        cur = conn.cursor(binary=True)  # as LACE's reader: binary results decode faster
        while True:
            await cur.execute(_READ, (run_id, last, MAX_BATCH), prepare=True)
            rows = await cur.fetchall()
            if not rows:
                break
            got += len(rows)
            last = rows[-1][1]
        elapsed = time.perf_counter() - started
    assert got == expected
    return got / elapsed


async def _prebuilt(url: str, run_id: uuid.UUID, path: str) -> None:
    """The same events as StreamRunResponse batches of MAX_BATCH, serialized for the raw server."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT run_id, seq, type, payload, create_time FROM run_events WHERE run_id = %s "
                                 "ORDER BY seq", (run_id,))
        rows = await cur.fetchall()
    batches = []
    for i in range(0, len(rows), MAX_BATCH):
        msg = run_service_pb2.StreamRunResponse(head_seq=rows[min(i + MAX_BATCH, len(rows)) - 1][1])
        for r in rows[i:i + MAX_BATCH]:
            convert.fill_run_event(msg.events.add(), RunEvent(r[0], r[1], EventType(r[2]), r[3], r[4]))
        if i + MAX_BATCH >= len(rows):
            msg.run_state = run_pb2.RUN_STATE_COMPLETED
        batches.append(msg.SerializeToString())
    write_batches(Path(path), batches)


async def run(ctx: Context) -> list[Row]:
    events = ctx.size(100_000, 10_000, 2_000)
    rounds = ctx.size(3, 1, 1)
    with ctx.database("replay") as url:
        ctx.log(f"  replay: writing {events:,} events")
        run_id = await _fill(url, events)
        path = str(ctx.workdir / "replay-batches.bin")
        await _prebuilt(url, run_id, path)
        server = ServerProcess(url, args=("serve", "--no-execute"))
        raw = await Child.python("bench.raw_stream", "replay", "--batches", path)  # boots meanwhile
        try:
            await asyncio.to_thread(server.start)
            raw_target = "127.0.0.1:" + (await raw.expect("LISTENING", 60)).split()[1]
            await _stream(server.target, run_id, events)  # warm both (connections, caches)
            await _stream(raw_target, run_id, events)

            async def lace() -> float:
                return await _stream(server.target, run_id, events)

            async def grpc_raw() -> float:
                return await _stream(raw_target, run_id, events)

            lace_r, grpc_r = await interleaved(rounds, lace, grpc_raw)
            pg_r = [await _psycopg(url, run_id, events) for _ in range(rounds)]
        finally:
            await raw.stop()
            await asyncio.to_thread(server.stop)
    lace_m, grpc_m, pg_m = median(lace_r), median(grpc_r), median(pg_r)
    slower = min(grpc_m, pg_m)
    goal_ok = lace_m >= 0.5 * slower and lace_m > 100_000
    return [
        Row(f"3. replay {events:,} events vs raw psycopg read", lace_m, pg_m, "ev/s",
            ">= 0.5x slower baseline, > 100k ev/s", goal_ok, baseline_label="psycopg"),
        Row(f"3. replay {events:,} events vs raw grpc.aio", lace_m, grpc_m, "ev/s",
            ">= 0.5x slower baseline, > 100k ev/s", goal_ok, baseline_label="pre-built grpc.aio"),
    ]
