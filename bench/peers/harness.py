"""11. Peers: LACE beside LangGraph and DBOS on the same job, the same PostgreSQL, in one run.

The job (bench/peers/job.py): a planned tree, root -> sections -> leaves of 800 words, every leaf
written one after another by the same deterministic offline generator, the document stored
durably. Each system runs it in its own process (bench/peers/worker.py), as its documentation
recommends, on a fresh database of the run's PostgreSQL:

* LACE: its gRPC server and engine in the process, the plan as the artifact's tree, StartRun;
* LangGraph: a StateGraph with the document in its state under AsyncPostgresSaver, twice: with an
  appending reducer (the idiomatic state) and with DeltaChannel (what a careful user picks);
* DBOS: a durable async workflow with an async step per leaf and a durable stream.

Measured side by side:
1. durable step cost as the document grows: wall and CPU ms of the writing process per leaf,
   Postgres's CPU per leaf (every backend of the server, reaped ones included) and WAL bytes per leaf
   (`pg_wal_lsn_diff` of `pg_current_wal_lsn()` around the writing), at each size;
2. crash and resume: SIGKILL of the writer when half the leaves are durable, a new process, the
   time from its spawn to the next durable leaf, LLM calls made twice (the generator's call log,
   which a SIGKILL cannot lose), and whether the document equals the uninterrupted one;
3. following from another process: the leaf's text is ready (the generator returns, before the
   system can commit it) -> a second process sees the leaf; p50 and p99 at 100 ms per call;
4. reading the history of the finished run (every event, checkpoint or step) from a new process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.common import Child, Context, Row, not_measured, percentile, python_env
from bench.peers import job
from tests.support.database import fresh_database

SYSTEMS: dict[str, str] = {
    "lace": "LACE",
    "langgraph-state": "LangGraph, document in state",
    "langgraph-delta": "LangGraph, DeltaChannel, sync",
    "dbos": "DBOS",
}
PEERS = [s for s in SYSTEMS if s != "lace"]
POLL_S = 0.005  # the harness's polling of durable leaves (crash row)


@dataclass
class Cost:
    leaves: int
    wall_ms: float
    cpu_ms: float
    pg_cpu_ms: float
    wal_bytes: float
    identical: bool


@dataclass
class SystemResult:
    cost: dict[int, Cost] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    slow_wall_ms: float | None = None  # per leaf at the follow run's latency
    crash: dict[str, Any] = field(default_factory=dict)
    crash_short_lease: dict[str, Any] = field(default_factory=dict)
    crash_stable_owner: dict[str, Any] = field(default_factory=dict)
    follow: dict[str, float] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def database(ctx: Context, system: str) -> Iterator[str]:
    with fresh_database(ctx.server_url, f"lace_bench_peers_{system.replace('-', '_')}",
                        migrate_to_head=(system == "lace")) as url:
        yield url


def postgres_cpu(url: str) -> float:
    """CPU seconds of the whole PostgreSQL server so far: postmaster, live backends, reaped backends."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        postmaster = psutil.Process(psutil.Process(int(row[0])).ppid())
    t = postmaster.cpu_times()
    total = float(t.user + t.system + t.children_user + t.children_system)
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def wal_lsn(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])


def wal_since(url: str, lsn: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,)).fetchone()
        assert row is not None
        return float(row[0])


async def writer(ctx: Context, system: str, url: str, leaves: int, latency_ms: float, calls: Path,
                 resume: bool = False, env: dict[str, str] | None = None) -> Child:
    args = ["run", system, "--db", url, "--leaves", str(leaves), "--latency-ms", str(latency_ms),
            "--calls", str(calls)]
    return await Child.python("bench.peers.worker", *args, *(["--resume"] if resume else []),
                              env={**python_env(), **(env or {})})


def done_json(line: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return data


async def step_cost(ctx: Context, system: str, url: str, leaves: int, timeout_s: float) -> Cost:
    calls = ctx.workdir / f"calls-{system}-{leaves}-{time.monotonic_ns()}"
    child = await writer(ctx, system, url, leaves, 0.0, calls)
    try:
        await child.expect("READY", 120)
        lsn, pg0 = await asyncio.to_thread(wal_lsn, url), await asyncio.to_thread(postgres_cpu, url)
        await child.send("GO")
        await child.expect("FINISHED", timeout_s)
        wal, pg1 = await asyncio.to_thread(wal_since, url, lsn), await asyncio.to_thread(postgres_cpu, url)
        result = done_json(await child.expect("DONE", timeout_s))
    finally:
        await child.stop()
    if result["leaves"] != leaves or len(job.read_calls(calls)) != leaves:
        raise RuntimeError(f"{system} wrote {result['leaves']} leaves with {len(job.read_calls(calls))} calls, "
                           f"expected {leaves}")
    if result["digest"] != job.expected_digest(leaves):
        raise RuntimeError(f"{system} stored a different document than the generator's ({leaves} leaves)")
    return Cost(leaves, result["wall_s"] * 1000 / leaves, result["cpu_s"] * 1000 / leaves,
                max(0.0, pg1 - pg0) * 1000 / leaves, wal / leaves, True)


async def history(system: str, url: str, leaves: int) -> dict[str, Any]:
    child = await Child.python("bench.peers.worker", "history", system, "--db", url, "--leaves", str(leaves))
    try:
        return done_json(await child.expect("DONE", 900))
    finally:
        await child.stop()


async def durable(conn: psycopg.AsyncConnection[Any], system: str) -> int:
    with contextlib.suppress(psycopg.errors.UndefinedTable):
        row = await (await conn.execute(job.DURABLE_LEAVES[system])).fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    return 0


async def crash(ctx: Context, system: str, url: str, leaves: int, latency_ms: float, timeout_s: float,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """SIGKILL at half the leaves, restart, time to the next durable leaf, calls twice, same document."""
    calls = ctx.workdir / f"calls-crash-{system}-{time.monotonic_ns()}"
    child = await writer(ctx, system, url, leaves, latency_ms, calls, env=env)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            await child.expect("READY", 120)
            await child.send("GO")
            deadline = time.monotonic() + timeout_s
            while await durable(conn, system) < leaves // 2:
                if time.monotonic() > deadline or child.proc.returncode is not None:
                    raise RuntimeError(f"{system} did not reach {leaves // 2} durable leaves")
                await asyncio.sleep(POLL_S)
            os.kill(child.proc.pid, signal.SIGKILL)
            await child.proc.wait()
        finally:
            await child.stop()
        await asyncio.sleep(0.2)
        at_kill = await durable(conn, system)
        if at_kill >= leaves:
            raise RuntimeError(f"{system} finished all {leaves} leaves before the SIGKILL")
        calls_before = len(job.read_calls(calls))
        spawned = time.monotonic()
        resumed = await writer(ctx, system, url, leaves, latency_ms, calls, resume=True, env=env)
        try:
            while await durable(conn, system) <= at_kill:
                if time.monotonic() - spawned > timeout_s or resumed.proc.returncode is not None:
                    raise RuntimeError(f"{system} wrote no leaf after the restart")
                await asyncio.sleep(POLL_S)
            next_leaf_s = time.monotonic() - spawned
            result = done_json(await resumed.expect("DONE", timeout_s))
        finally:
            await resumed.stop()
    made = job.read_calls(calls)
    return {"durable_at_kill": at_kill, "calls_before_kill": calls_before, "next_leaf_s": next_leaf_s,
            "calls_twice": len(made) - len({i for i, _ in made}), "leaves": result["leaves"],
            "identical": result["digest"] == job.expected_digest(leaves)}


async def follow(ctx: Context, system: str, url: str, leaves: int, latency_ms: float) -> tuple[dict[str, float], float]:
    """p50/p99 ms from a leaf's text ready to a second process seeing it; the writer's wall ms per leaf."""
    calls = ctx.workdir / f"calls-follow-{system}-{time.monotonic_ns()}"
    out = ctx.workdir / f"seen-{system}-{time.monotonic_ns()}.json"
    child = await writer(ctx, system, url, leaves, latency_ms, calls)
    follower: Child | None = None
    try:
        ready = (await child.expect("READY", 120)).split()
        extra = ["--target", ready[1], "--artifact", ready[2]] if system == "lace" else []
        follower = await Child.python("bench.peers.worker", "follow", system, "--db", url, "--leaves", str(leaves),
                                      "--out", str(out), *extra)
        await follower.expect("READY", 120)
        await asyncio.sleep(0.2)
        await child.send("GO")
        result = done_json(await child.expect("DONE", 60 + leaves * latency_ms / 100))
        await follower.expect("DONE", 60)
    finally:
        if follower is not None:
            await follower.stop()
        await child.stop()
    seen = {int(k): int(v) for k, v in json.loads(out.read_text()).items()}
    stamps = dict(job.read_calls(calls))
    warm = max(1, leaves // 10)  # the follower's first reads (connections, the run appearing) are left out
    lat = [(seen[i] - stamps[i]) / 1e6 for i in range(warm, leaves)]
    if min(lat) < 0:
        raise RuntimeError(f"{system}: a negative latency ({min(lat):.3f} ms): the stamps are wrong")
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "n": len(lat)}, result["wall_s"] * 1000 / leaves


async def run_system(ctx: Context, system: str, sizes: tuple[int, ...], history_at: int, crash_at: int,
                     follow_at: tuple[int, float], state_cap: int) -> SystemResult:
    # The smoke run's jobs are too short to kill half-way at zero latency.
    crash_latency = ctx.size(0.0, 0.0, 20.0)
    res = SystemResult()
    for n in sizes:
        if system == "langgraph-state" and n > state_cap:
            res.skipped[n] = "not run: the whole document per checkpoint (extrapolate the curve)"
            continue
        ctx.log(f"  peers: {SYSTEMS[system]}, {n:,} leaves")
        with database(ctx, system) as url:
            res.cost[n] = await step_cost(ctx, system, url, n, timeout_s=1800)
            if n == history_at:
                ctx.log(f"  peers: {SYSTEMS[system]}, history of {n:,} leaves")
                res.history = await history(system, url, n)
    ctx.log(f"  peers: {SYSTEMS[system]}, crash at 50% of {crash_at:,} leaves")
    with database(ctx, system) as url:
        res.crash = await crash(ctx, system, url, crash_at, crash_latency, timeout_s=1800)
    if system == "lace":  # the same with a 2 s lease: how much of the wait is the lease's expiry
        ctx.log(f"  peers: LACE, crash at 50% of {crash_at:,} leaves, LACE_LEASE_TTL_S=2")
        with database(ctx, system) as url:
            res.crash_short_lease = await crash(ctx, system, url, crash_at, crash_latency, timeout_s=1800,
                                                env={"LACE_PEERS_LEASE_TTL_S": "2"})
        # And as deployment.md advises for a worker a supervisor restarts: the same LACE_OWNER_ID before
        # and after, so the new process takes its runs back at once instead of waiting out the lease.
        ctx.log(f"  peers: LACE, crash at 50% of {crash_at:,} leaves, a stable LACE_OWNER_ID")
        with database(ctx, system) as url:
            res.crash_stable_owner = await crash(ctx, system, url, crash_at, crash_latency, timeout_s=1800,
                                                 env={"LACE_PEERS_OWNER_ID": "peers-writer-1"})
    n, latency = follow_at
    ctx.log(f"  peers: {SYSTEMS[system]}, followed from another process, {n} leaves at {latency:g} ms")
    with database(ctx, system) as url:
        res.follow, res.slow_wall_ms = await follow(ctx, system, url, n, latency)
    return res


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-postgres", "dbos", "psycopg",
                 "sqlalchemy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


async def run_peers(ctx: Context) -> list[Row]:
    try:
        import dbos  # noqa: F401
        import langgraph.checkpoint.postgres  # noqa: F401
    except ImportError as exc:
        return [not_measured("11. peers", "", "", f"the peers extra is not installed ({exc.name}); "
                             "scripts/bench.sh --peers installs it")]
    sizes = ctx.size((100, 1000, 5000), (100, 300), (10, 30))
    history_at = ctx.size(1000, 300, 30)
    crash_at = ctx.size(1000, 300, 30)
    # 300 leaves: the p99 of 90 (100 leaves) was one descheduled process on a shared machine.
    follow_at = ctx.size((300, 100.0), (50, 100.0), (10, 20.0))
    # LangGraph with the document in its state re-saves it every step: extrapolated, 5,000 leaves would
    # write ~15 GB of WAL in ~20 minutes (1.2 MB and 82 ms per leaf at 1,000, both growing linearly).
    state_cap = ctx.size(1000, 300, 30)
    results: dict[str, SystemResult] = {}
    for system in SYSTEMS:
        results[system] = await run_system(ctx, system, sizes, history_at, crash_at, follow_at, state_cap)
    report = {"versions": versions(), "sizes": list(sizes), "follow": list(follow_at), "crash_at": crash_at,
              "history_at": history_at, "results": {s: _json(r) for s, r in results.items()}}
    (ctx.workdir / "peers.json").write_text(json.dumps(report, indent=2))
    table = side_by_side(report)
    (ctx.workdir / "peers.md").write_text("\n".join(table) + "\n")
    for line in table:
        ctx.log("    " + line)
    with contextlib.suppress(ImportError):
        from bench.peers.plot import plot

        png = ctx.workdir / "peers-step-cost.png"
        plot(report, png)
        ctx.log(f"  peers: wrote {ctx.workdir / 'peers.json'}, {ctx.workdir / 'peers.md'} and {png}")
    return rows(report)


def _json(r: SystemResult) -> dict[str, Any]:
    return {"cost": {str(n): vars(c) for n, c in r.cost.items()}, "skipped": {str(n): s for n, s in r.skipped.items()},
            "slow_wall_ms": r.slow_wall_ms, "crash": r.crash, "crash_short_lease": r.crash_short_lease,
            "crash_stable_owner": r.crash_stable_owner,
            "follow": r.follow, "history": r.history}


# --- the table -----------------------------------------------------------------------------------

def _figures(report: dict[str, Any]) -> list[tuple[str, str, dict[str, float | None], str]]:
    """(measure, unit, value per system, goal) for every row; None where a system was not run."""
    res = report["results"]
    out: list[tuple[str, str, dict[str, float | None], str]] = []

    def cost(n: int, key: str, scale: float = 1.0) -> dict[str, float | None]:
        return {s: (res[s]["cost"][str(n)][key] * scale if str(n) in res[s]["cost"] else None) for s in SYSTEMS}

    for n in report["sizes"]:
        out.append((f"1. wall ms per leaf, {n:,} leaves, 0 ms/call", "ms", cost(n, "wall_ms"), "<= 0.5x best peer"))
    for n in report["sizes"]:
        out.append((f"1. CPU ms per leaf (writer process), {n:,} leaves", "ms", cost(n, "cpu_ms"), "<= 0.5x best peer"))
    for n in report["sizes"]:
        out.append((f"1. Postgres CPU ms per leaf, {n:,} leaves", "ms", cost(n, "pg_cpu_ms"), ""))
    for n in report["sizes"]:
        out.append((f"1. WAL KB per leaf, {n:,} leaves", "KB", cost(n, "wal_bytes", 1 / 1024), "<= 0.5x best peer"))
    fn, fl = report["follow"]
    out.append((f"1. wall ms per leaf, {fn} leaves, {fl:g} ms/call", "ms",
                {s: res[s]["slow_wall_ms"] for s in SYSTEMS}, ""))
    c = report["crash_at"]
    out.append((f"2. crash at 50% of {c:,} leaves: restart -> next durable leaf", "s",
                {s: res[s]["crash"].get("next_leaf_s") for s in SYSTEMS}, "<= 0.5x best peer"))
    short = res["lace"].get("crash_short_lease") or {}
    out.append(("2. same, LACE with LACE_LEASE_TTL_S=2 (default 15)", "s",
                {s: (short.get("next_leaf_s") if s == "lace" else res[s]["crash"].get("next_leaf_s")) for s in SYSTEMS},
                "<= 0.5x best peer"))
    stable = res["lace"].get("crash_stable_owner") or {}
    out.append(("2. same, LACE restarted with the same LACE_OWNER_ID", "s",
                {s: (stable.get("next_leaf_s") if s == "lace" else res[s]["crash"].get("next_leaf_s"))
                 for s in SYSTEMS}, "<= 0.5x best peer"))
    out.append((f"2. LLM calls made twice ({c:,} leaves)", "calls",
                {s: res[s]["crash"].get("calls_twice") for s in SYSTEMS}, "<= 0.5x best peer"))
    out.append((f"2. document identical to an uninterrupted run ({c:,} leaves)", "1=yes",
                {s: float(bool(res[s]["crash"].get("identical"))) for s in SYSTEMS}, ""))
    for p in ("p50", "p99"):
        out.append((f"3. follow from another process, {p} ({fn} leaves, {fl:g} ms/call)", "ms",
                    {s: res[s]["follow"].get(p) for s in SYSTEMS}, "<= best peer"))
    h = report["history_at"]
    out.append((f"4. read the history of a finished {h:,}-leaf run", "ms",
                {s: (res[s]["history"]["wall_s"] * 1000 if res[s]["history"] else None) for s in SYSTEMS},
                "<= 0.5x best peer"))
    out.append((f"4. items listed ({h:,}-leaf run)", "items",
                {s: (res[s]["history"].get("count") if res[s]["history"] else None) for s in SYSTEMS}, ""))
    return out


def _met(goal: str, lace: float, best: float) -> bool | None:
    if goal == "<= 0.5x best peer":
        return lace <= 0.5 * best if best > 0 else lace <= best
    if goal == "<= best peer":
        return lace <= best
    return None


def _fmt(v: float | None) -> str:
    from bench.common import fmt_number

    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt_number(v)


def side_by_side(report: dict[str, Any]) -> list[str]:
    head = ["measure", *SYSTEMS.values(), "goal", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for measure, unit, values, goal in _figures(report):
        peers = [v for s, v in values.items() if s != "lace" and v is not None]
        lace = values["lace"]
        met = _met(goal, lace, min(peers)) if goal and lace is not None and peers else None
        cells = [f"{_fmt(values[s])}" for s in SYSTEMS]
        lines.append(f"| {measure} ({unit}) | " + " | ".join(cells) +
                     f" | {goal or '—'} | {({True: 'yes', False: 'NO', None: '—'})[met]} |")
    v = report["versions"]
    lines += ["", "versions: " + ", ".join(f"{k} {x}" for k, x in v.items())]
    return lines


def rows(report: dict[str, Any]) -> list[Row]:
    out = []
    for measure, unit, values, goal in _figures(report):
        peers = {s: v for s, v in values.items() if s != "lace" and v is not None}
        lace = values["lace"]
        if not peers or lace is None:
            out.append(Row(f"11. {measure}", lace, None, unit, goal, None, note="no peer figure"))
            continue
        best = min(peers, key=lambda s: peers[s])
        note = "; ".join(f"{SYSTEMS[s]} {_fmt(v)}" for s, v in peers.items())
        out.append(Row(f"11. {measure}", lace, peers[best], unit, goal,
                       _met(goal, lace, peers[best]) if goal else None, baseline_label=SYSTEMS[best], note=note))
    return out


if __name__ == "__main__":  # python -m bench.peers.harness peers.json: the table again
    print("\n".join(side_by_side(json.loads(Path(sys.argv[1]).read_text()))))
