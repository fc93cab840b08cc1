"""python -m bench.instructions [--runs N] [--words W] [--rounds R] [--database-url URL] REV [REV ...]

The instructions `lace serve` executes per run and per applied LLM call, counted by callgrind, for
each REV (a commit or branch, checked out into a temporary worktree), the REVs measured in turn,
R rounds of each. Seconds of CPU are no measure of a small change on this kind of machine: the same
commit's server CPU per call moved between 4.3 and 8.4 ms within one sitting. An instruction count
is repeatable to ~0.3% for the same code and workload within a sitting. It is not free of the
machine altogether: how many callbacks each event-loop turn finds ready moves with timing, and the
same commit counted ~10% fewer once three busy processes beside it had stopped; compare REVs
measured in turn, in one invocation, not counts from different sittings.

One measurement: `lace serve` of the REV under `valgrind --tool=callgrind` with LACE_LLM=openai
against the OpenAI-compatible test server (100 ms a call), counting zeroed once it serves; N runs
of a W-word brief started at once through gRPC, as bench 5 starts them; counting dumped when the
last has finished. 300 words (the default) is one call a run, so the count per run is the same
workload each time; at 1,500 words the number of calls a run makes varies with its plan.

What it leaves out: the kernel's share (system time, ~10% of the server's CPU here) and
PostgreSQL's and the test server's instructions. The database is migrated by this checkout, so
the REVs must share its schema. Needs valgrind (Debian: `apt install valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench import concurrency
from bench.common import Child, Context, postgres_server
from tests.support.server_process import ServerProcess

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def worktree(rev: str, root: Path) -> Iterator[Path]:
    """A detached checkout of `rev` under `root`, removed afterwards."""
    path = root / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path), rev],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)


def callgrind_total(path: Path) -> int:
    """The instruction total of one callgrind dump."""
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


async def measure(checkout: Path, ctx: Context, base_url: str, runs: int, words: int, out: Path) \
        -> tuple[int, int]:
    """(instructions, applied calls) of `runs` runs on `lace serve` from `checkout`, under callgrind."""
    with ctx.database("instructions") as url:
        server = ServerProcess(url)
        env = {**os.environ, "LACE_DATABASE_URL": url, "LACE_LLM": "openai", "OPENAI_BASE_URL": base_url,
               "OPENAI_API_KEY": "unused", "LACE_LLM_CONCURRENCY": "64", "LACE_MAX_CONCURRENT_RUNS": "256",
               # Callgrind runs the server ~50x slower: leases must outlast that.
               "LACE_LEASE_TTL_S": "600", "LACE_LOG_FORMAT": "text", "LACE_LOG_LEVEL": "WARNING"}
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p", sys.executable, "-m",
               "lace_server.cli", "serve", "--listen", server.target]
        # cwd first on sys.path under -m: the checkout's own packages, not this one's.
        server.proc = await asyncio.to_thread(subprocess.Popen, cmd, cwd=checkout, env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = server.proc.pid
        try:
            await asyncio.to_thread(server.wait_ready, 900)
            await asyncio.to_thread(control, "--zero", pid)
            run_ids = await concurrency.start_runs(server.target, runs, words, 300)
            await concurrency.wait_runs(url, run_ids, within_s=3600)
            await asyncio.to_thread(control, "--dump", pid)
            _, calls = await concurrency.steady_rate(url, run_ids)
        finally:
            await asyncio.to_thread(server.stop, 300)
    return await asyncio.to_thread(first_dump_total, out, pid), calls


def control(verb: str, pid: int) -> None:
    """callgrind_control `verb` (--zero, --dump) for the valgrind process `pid`."""
    subprocess.run(["callgrind_control", verb, str(pid)], check=True, capture_output=True)


def first_dump_total(out: Path, pid: int) -> int:
    """The instruction total of the first dump `pid` wrote into `out` (the one after zeroing)."""
    dumps = sorted(out.glob(f"callgrind.{pid}.*"))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump in {out}")
    return callgrind_total(dumps[0])


async def main_async(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="lace-instructions-"))
    results: dict[str, list[tuple[float, float]]] = {rev: [] for rev in args.revs}
    with contextlib.ExitStack() as stack:  # unwound in reverse: worktrees, PostgreSQL, then the directory
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        server_url, _ = stack.enter_context(postgres_server(args.database_url, root))
        ctx = Context("full", server_url, root)
        llm = await Child.python("tests.support.openai_server", "--latency-ms", "100")
        try:
            base_url = (await llm.expect("listening on", 30)).split()[-1]
            checkouts = {rev: stack.enter_context(worktree(rev, root)) for rev in args.revs}
            for round_ in range(args.rounds):
                for rev, checkout in checkouts.items():
                    out = Path(tempfile.mkdtemp(dir=root))
                    total, calls = await measure(checkout, ctx, base_url, args.runs, args.words, out)
                    per_run, per_call = total / args.runs / 1e6, total / calls / 1e6
                    results[rev].append((per_run, per_call))
                    print(f"round {round_ + 1} {rev}: {per_run:.3f} M instructions a run, {per_call:.3f} M a "
                          f"call ({calls} calls)", flush=True)
        finally:
            await llm.stop()
    first = args.revs[0]
    base = sum(r for r, _ in results[first]) / len(results[first])
    print(f"\n{args.runs} runs of {args.words} words, {args.rounds} rounds; mean M instructions a run "
          f"(ratio to {first}):")
    for rev, rows in results.items():
        mean = sum(r for r, _ in rows) / len(rows)
        print(f"  {rev}: {mean:.3f} ({mean / base:.3f}x)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[2])
    parser.add_argument("revs", nargs="+", metavar="REV", help="commits or branches to measure, the first the baseline")
    parser.add_argument("--runs", type=int, default=30, help="runs started at once (default 30)")
    parser.add_argument("--words", type=int, default=300, help="words a brief asks for (default 300: one call)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each REV, in turn (default 2)")
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL server to create databases on (default: an embedded one)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("bench.instructions: valgrind is not installed (Debian: apt install valgrind)", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
