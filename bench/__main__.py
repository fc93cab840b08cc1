"""python -m bench [--quick | --smoke] [--only NAME ...] [--json out.json] [--markdown out.md] [--database-url URL]

Runs the benchmarks in order, each on a fresh database of one PostgreSQL server (an embedded
PostgreSQL in a temporary directory unless --database-url names a server), and prints one table:
measure, LACE, baseline, ratio, goal, met?. Every baseline is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.common import Context, Mode, Row, postgres_server, postgres_version, table_lines

BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("apply_throughput", "1. Apply throughput (LACE vs raw psycopg)"),
    ("live_latency", "2. Live latency (commit -> StreamRun client)"),
    ("replay", "3. Replay from cursor 0"),
    ("engine_overhead", "4. Engine overhead per node"),
    ("concurrency", "5. Concurrency against the OpenAI-compatible test server"),
    ("critical_path", "6. Critical path with sibling concurrency"),
    ("memory", "7. Server memory"),
    ("scale_out", "8. Scale-out (JetStream, workers)"),
    ("db_outage", "9. Database outages under a run"),
    ("sources", "10. Sources: retrieval, AddSource, prompt share, citation validity"),
    ("peers", "11. Peers: the same job with LACE, LangGraph and DBOS"),
    ("versions", "12. Versions: an artifact as it was at a past version, against now"),
    ("fanout", "13. Fan-out: NATS bytes per API replica with 1, 2 and 4 replicas"),
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines(server_url: str, embedded: bool) -> list[str]:
    return [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"postgres: {postgres_version(server_url)} ({'embedded, temporary data dir' if embedded else 'external'})",
    ]


# Left out of --quick unless named with --only: minutes, not seconds, even at its quick sizes.
NOT_QUICK = ("peers",)


def select(only: list[str], mode: Mode = "full") -> list[tuple[str, str]]:
    if not only:
        return [(n, t) for n, t in BENCHMARKS if not (mode == "quick" and n in NOT_QUICK)]
    chosen = []
    for name, title in BENCHMARKS:
        if any(name == o or name.startswith(o) for o in only):
            chosen.append((name, title))
    unknown = [o for o in only if not any(n == o or n.startswith(o) for n, _ in BENCHMARKS)]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(n for n, _ in BENCHMARKS)}")
    return chosen


async def run_all(ctx: Context, chosen: list[tuple[str, str]]) -> tuple[list[Row], bool]:
    rows: list[Row] = []
    ok = True
    for name, title in chosen:
        ctx.log(f"[bench] {title} ...")
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        bench: Callable[[Context], Awaitable[list[Row]]] = module.run
        try:
            got = await bench(ctx)
        except Exception as exc:
            ok = False
            traceback.print_exc()
            got = [Row(f"{title}", None, None, "", note=f"error: {type(exc).__name__}: {exc}")]
        rows.extend(got)
        ctx.log(f"[bench] {name} done in {time.perf_counter() - started:.1f}s")
        for line in table_lines(got):
            ctx.log("    " + line)
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else "")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer iterations (under a minute), same table")
    size.add_argument("--smoke", action="store_true", help="the smallest sizes: only checks the harness works")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME",
                        help=f"run only these ({', '.join(n for n, _ in BENCHMARKS)}; a prefix is enough)")
    parser.add_argument("--json", type=Path, help="also write the rows and the machine as JSON")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    parser.add_argument("--database-url", default=os.environ.get("LACE_BENCH_DATABASE_URL", ""),
                        help="a PostgreSQL server to create the benchmark databases on "
                             "(default: an embedded PostgreSQL in a temporary directory)")
    args = parser.parse_args(argv)
    mode: Mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    chosen = select(args.only, mode)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

    workdir = Path(tempfile.mkdtemp(prefix="lace-bench-"))
    started = time.perf_counter()
    with postgres_server(args.database_url, workdir) as (server_url, embedded):
        ctx = Context(mode=mode, server_url=server_url, workdir=workdir)
        header = [f"command: python -m bench {' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}".rstrip(),
                  f"mode: {mode}", *machine_lines(server_url, embedded)]
        rows, ok = asyncio.run(run_all(ctx, chosen))
        header.append(f"wall time: {time.perf_counter() - started:.0f}s")
    print("\n".join(header))
    print()
    print("\n".join(table_lines(rows)))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "mode": mode, "rows": [r.to_json() for r in rows]},
                                        indent=2))
    if args.markdown:
        args.markdown.write_text("\n".join(["```", *header, "```", "", *table_lines(rows, markdown=True), ""]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
