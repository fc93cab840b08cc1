"""13. Fan-out: NATS bytes each API replica receives, with 1, 2 and 4 replicas sharing 100 runs.

100 runs commit the same events (one written leaf after another: five events per commit) through a
writer Engine that leads the JetStream mirror. N API replicas (Engines with LACE_EVENT_BUS=nats, each
its own NATS connection, as `lace serve --no-execute` would have) each stream a disjoint 1/N of the
runs, two streams per run, from cursor 0 to the run's end; then 1 and 2 replicas each stream a
disjoint quarter (the other runs are written, and streamed by nobody). Measured per replica: the bytes of the
messages the NATS server sent to that replica's connection from just before the first commit to the
last run mirrored and streamed (`/connz` `out_bytes` of the server's monitoring endpoint, the
server's own count; the client's `stats['in_bytes']`, payloads only, is in the note).

Interest cost: how long 900 runs' interest takes from the hub's first stream of each to confirmed (the
tail's SUBs and one PING), beside the per-run alternative, one ordered JetStream consumer filtered on
each run's subject (created 100 at a time; nats-server 2.15 allows 1,000 per stream by default, so
5,000 runs are measured through the tail alone).

Baseline, the old design, measured in the same round: one connection holding what every replica held
before per-run interest, an ordered JetStream consumer on `lace.runs.*.*.events` delivering new
messages (its idle heartbeats and flow control included). Every old replica received that much
whatever it streamed; the new figure should be about 1/N of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import nats
import psycopg
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from bench.common import Context, Row, bench_settings, wait_for
from bench.fixtures import artifact_with_leaves, running_run, step_events
from lace_engine.domain import RunEvent, RunState
from lace_engine.events.hub import EventHub
from lace_engine.events.jetstream_tail import JetStreamTail
from lace_engine.events.nats_bus import EVENTS_STREAM, EVENTS_SUBJECTS, NatsBus, events_subject
from lace_engine.llm.offline import OfflineProvider
from lace_engine.service import Engine
from lace_engine.storage import event_log, run_store
from lace_engine.tenancy import DEFAULT_TENANT
from tests.support.nats import NatsServer

NAME = "fanout"
OLD_DESIGN = "lace-fanout-old-design"


async def make_runs(writer: Engine, count: int, leaves: int) -> list[uuid.UUID]:
    runs = []
    for i in range(count):
        artifact_id, _ = await artifact_with_leaves(writer.db, leaves, 1000, title=f"Fan-out {i}")
        run, _ = await running_run(writer.db, artifact_id, owner="bench-fanout")
        runs.append(run.id)
    return runs


async def write_runs(writer: Engine, runs: list[uuid.UUID], leaves: int) -> None:
    """Every run writes its leaves, the runs interleaved (one commit of each in turn), then ends."""
    for leaf in range(leaves):
        for run_id in runs:
            node_id = uuid.uuid5(run_id, str(leaf))
            async with writer.db.transaction() as tx:
                await event_log.append(tx, run_id, step_events(node_id, 950, 9, uuid.uuid5(node_id, "call")))
    for run_id in runs:
        async with writer.db.transaction() as tx:
            run = await run_store.get_run(tx.conn, run_id, for_update=True)
            await run_store.transition(tx, run, RunState.COMPLETED, "every node in scope is written")


async def all_mirrored(url: str, runs: list[uuid.UUID]) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM runs r LEFT JOIN mirror_cursors c ON c.run_id = r.id "
                                 "WHERE r.id = ANY(%s) AND r.head_seq > COALESCE(c.published_seq, 0)", (runs,))
        row = await cur.fetchone()
    return row is not None and int(str(row[0])) == 0


async def follow(engine: Engine, run_id: uuid.UUID) -> list[int]:
    seqs: list[int] = []
    async for batch in engine.stream_run(run_id, 0):
        seqs.extend(e.seq for e in batch.events)
    return seqs


async def until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, within_s, what=what)


def in_bytes(engine: Engine) -> int:
    """The replica's client-side count: payload bytes of the messages it received."""
    assert engine.cluster.bus is not None and engine.cluster.bus.nc is not None
    return int(engine.cluster.bus.nc.stats["in_bytes"])


async def heads_of(url: str, runs: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT id, head_seq FROM runs WHERE id = ANY(%s)", (runs,))
        return {uuid.UUID(str(r[0])): int(str(r[1])) for r in await cur.fetchall()}


@dataclass
class Round:
    server_bytes: list[int]  # per replica: what the NATS server sent to its connection
    client_bytes: list[int]  # per replica: payload bytes its client counted
    subscriptions: list[int]  # per replica: its subscriptions on run subjects
    old_bytes: int  # the old design's consumer: what every replica received before
    old_msgs: int
    events: int  # events committed (and mirrored) during the round


async def round_of(ctx: Context, url: str, server: NatsServer, writer: Engine, replicas: int, parts: int,
                   runs_n: int, leaves: int) -> Round:
    """One round on fresh runs, split into `parts` disjoint shares: replica i streams share i (the shares
    beyond the replicas are streamed by nobody) while the writer writes every run."""
    runs = await make_runs(writer, runs_n, leaves)
    await wait_for(lambda: all_mirrored(url, runs), 60, what="run creation mirrored")
    created = sum((await heads_of(url, runs)).values())
    engines = [Engine(bench_settings(url, execute_runs=False, event_bus="nats", nats_url=server.url,
                                     owner_id=f"fanout-{replicas}-{i}", pool_size=2),
                      url, OfflineProvider()) for i in range(replicas)]
    old = await nats.connect(server.url, name=OLD_DESIGN)
    old_msgs = 0

    async def count(msg: Msg) -> None:
        nonlocal old_msgs
        old_msgs += 1

    streams: list[tuple[uuid.UUID, asyncio.Task[list[int]]]] = []
    try:
        for engine in engines:
            await engine.start()
        await until(lambda: all(e.cluster.tail is not None and e.cluster.tail.live for e in engines), 30,
                    "live tails")
        # The old design's replica: one ordered consumer on every run's subject (deliver new), as before.
        await old.jetstream().subscribe(EVENTS_SUBJECTS, stream=EVENTS_STREAM, cb=count, ordered_consumer=True,
                                        deliver_policy=DeliverPolicy.NEW, idle_heartbeat=1.0,
                                        inactive_threshold=30.0)
        shares = [runs[i::parts] for i in range(replicas)]
        for engine, share in zip(engines, shares, strict=True):
            streams += [(run_id, asyncio.create_task(follow(engine, run_id))) for run_id in share for _ in range(2)]
        await until(lambda: all(e.cluster.tail is not None and set(share) <= e.cluster.tail.confirmed
                                for e, share in zip(engines, shares, strict=True)), 60,
                    "every replica subscribed to its runs")
        names = [f"lace:{e.settings.owner_id}" for e in engines]
        view = server.connz()
        subs = [sum(1 for s in view[n].get("subscriptions_list") or [] if str(s).startswith("lace.")) for n in names]
        await old.flush()
        before = {n: int(view[n]["out_bytes"]) for n in names}
        before[OLD_DESIGN] = int(server.connz()[OLD_DESIGN]["out_bytes"])
        client_before = [in_bytes(e) for e in engines]
        old_before = old_msgs

        ctx.log(f"  fanout: {replicas} replica(s) each streaming 1/{parts} of {runs_n} runs x {leaves} leaves")
        await write_runs(writer, runs, leaves)
        heads = await heads_of(url, runs)
        for run_id, task in streams:
            seqs = await asyncio.wait_for(task, 300)
            if seqs != list(range(1, heads[run_id] + 1)):
                raise AssertionError(f"run {run_id}: a stream got {len(seqs)} events, not 1..{heads[run_id]}")
        await wait_for(lambda: all_mirrored(url, runs), 60, what="every event mirrored")
        events = sum(heads.values()) - created
        await until(lambda: old_msgs - old_before >= events, 60, "the old design's consumer caught up")
        for engine in engines:
            assert engine.cluster.bus is not None and engine.cluster.bus.nc is not None
            await engine.cluster.bus.nc.flush()
        await old.flush()
        after = server.connz()
        return Round([int(after[n]["out_bytes"]) - before[n] for n in names],
                     [in_bytes(e) - b for e, b in zip(engines, client_before, strict=True)], subs,
                     int(after[OLD_DESIGN]["out_bytes"]) - before[OLD_DESIGN], old_msgs - old_before, events)
    finally:
        for _, task in streams:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await old.close()
        for engine in engines:
            await engine.aclose()


async def tail_interest_ms(server: NatsServer, runs_n: int) -> float:
    """ms from the hub's first stream of each of `runs_n` runs to the tail having confirmed them all."""

    async def nothing(run_id: uuid.UUID, after: int, upto: int) -> list[RunEvent]:
        return []

    hub = EventHub(nothing)
    bus = NatsBus(server.url, name="lace:fanout-interest")
    tail = JetStreamTail(bus, hub)
    bus.start()
    tail.start()
    try:
        await until(lambda: tail.live, 30, "a live tail")
        started = time.perf_counter()
        subs = [hub.subscribe(uuid.uuid4(), 0) for _ in range(runs_n)]
        while len(tail.confirmed) < runs_n:  # polled finely: the whole thing takes milliseconds
            if time.perf_counter() - started > 120:
                raise TimeoutError("the tail did not confirm every run")
            await asyncio.sleep(0.0005)
        elapsed_ms = (time.perf_counter() - started) * 1000
        for sub in subs:
            sub.close()
        await until(lambda: not tail.subscribed, 60, "every run unsubscribed")
    finally:
        await tail.aclose()
        await bus.aclose()
    return elapsed_ms


async def consumers_ms(server: NatsServer, runs_n: int) -> float:
    """ms to create one ordered JetStream consumer filtered on each of `runs_n` runs' subjects."""
    nc = await nats.connect(server.url, name="fanout-consumers")
    try:
        js = nc.jetstream()

        async def ignore(msg: Msg) -> None:
            pass

        async def consumer(run_id: uuid.UUID) -> None:
            await js.subscribe(events_subject(DEFAULT_TENANT, run_id), stream=EVENTS_STREAM, cb=ignore,
                               ordered_consumer=True, deliver_policy=DeliverPolicy.NEW, idle_heartbeat=1.0,
                               inactive_threshold=30.0)

        runs = [uuid.uuid4() for _ in range(runs_n)]
        started = time.perf_counter()
        for i in range(0, runs_n, 100):
            await asyncio.gather(*(consumer(r) for r in runs[i:i + 100]))
        await nc.flush()
        return (time.perf_counter() - started) * 1000
    finally:
        await nc.close()  # the ephemeral consumers go after inactive_threshold


async def run(ctx: Context) -> list[Row]:
    runs_n = ctx.size(100, 100, 8)
    leaves = ctx.size(8, 3, 2)
    # nats-server 2.15 limits a stream to 1,000 consumers by default: the per-run alternative stops there.
    interest_runs = ctx.size(900, 500, 50)
    many_runs = ctx.size(5000, 2000, 100)
    server = NatsServer(monitor=True)
    rows: list[Row] = []
    try:
        server.start()
        with ctx.database("fanout") as url:
            writer = Engine(bench_settings(url, execute_runs=False, event_bus="nats", nats_url=server.url,
                                           owner_id="fanout-writer", pool_size=4), url, OfflineProvider(),
                            serve_streams=False)
            await writer.start()
            try:
                # The writer leads the mirror, so the replicas' connections carry their live tails alone.
                await until(lambda: writer.cluster.mirror is not None and writer.cluster.mirror.is_leader, 30,
                            "the writer leading the mirror")
                # Each replica a 1/N share of all the runs (every run streamed somewhere), then 1 and 2
                # replicas streaming a quarter each: what a replica receives follows what it streams.
                for replicas, parts in ((1, 1), (2, 2), (4, 4), (1, 4), (2, 4)):
                    r = await round_of(ctx, url, server, writer, replicas, parts, runs_n, leaves)
                    got, client, subs, old_bytes = r.server_bytes, r.client_bytes, r.subscriptions, r.old_bytes
                    mean = sum(got) / len(got)
                    share = 1 / parts
                    ctx.log(f"    {replicas} replica(s), {r.events} events: server out_bytes per replica {got}, "
                            f"client in_bytes {client}, run subscriptions {subs}; old design {old_bytes} bytes, "
                            f"{r.old_msgs} msgs")
                    rows.append(Row(
                        f"13. NATS KiB received per replica, {replicas} replica{'s' if replicas > 1 else ''}, "
                        f"each streaming {len(range(0, runs_n, parts))} of {runs_n} runs",
                        mean / 1024, old_bytes / 1024, "KiB", f"<= {1.1 * share:.2f}x old (share {share:.2f})",
                        mean <= 1.1 * share * old_bytes, baseline_label="old design: every run to every replica",
                        note=f"{r.events} events committed; "
                             f"per replica {', '.join(f'{b / 1024:.0f}' for b in got)} KiB (server /connz); "
                             f"client payload bytes {', '.join(f'{b / 1024:.0f}' for b in client)} KiB; "
                             f"{subs[0]} run subscriptions per replica"))
                ctx.log(f"  fanout: interest in {interest_runs} runs, SUBs against consumers")
                lace_ms = await tail_interest_ms(server, interest_runs)
                many_ms = await tail_interest_ms(server, many_runs)
                base_ms = await consumers_ms(server, interest_runs)
                rows.append(Row(f"13. interest in {interest_runs} runs, first stream -> confirmed", lace_ms,
                                base_ms, "ms", baseline_label="an ordered JetStream consumer per run",
                                note=f"{many_runs} runs: {many_ms:.0f} ms through the tail; the per-run consumers "
                                     "stop at nats-server's default of 1,000 consumers per stream"))
            finally:
                await writer.aclose()
    finally:
        server.close()
    return rows
