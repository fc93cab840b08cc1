"""What every benchmark shares: the result row and table, sizes per mode, databases and servers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

import psycopg

from lace_engine.config import Settings
from lace_engine.domain import RunOptions
from tests.support.database import fresh_database

Mode = Literal["full", "quick", "smoke"]
MODES: tuple[Mode, ...] = ("full", "quick", "smoke")

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


@dataclass
class Row:
    """One line of the table: LACE's figure, the baseline measured in the same run, and the goal."""

    measure: str
    lace: float | None
    baseline: float | None
    unit: str
    goal: str = ""
    # True/False when the row has a goal, None when it is informational.
    met: bool | None = None
    # lace / baseline unless the benchmark sets it (e.g. a goal on time, where smaller is better).
    ratio: float | None = None
    baseline_label: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.lace is not None and self.baseline:
            self.ratio = self.lace / self.baseline

    def to_json(self) -> dict[str, object]:
        return {"measure": self.measure, "lace": self.lace, "baseline": self.baseline, "unit": self.unit,
                "ratio": self.ratio, "goal": self.goal, "met": self.met, "baseline_label": self.baseline_label,
                "note": self.note}


def not_measured(measure: str, unit: str, goal: str, why: str) -> Row:
    return Row(measure, None, None, unit, goal, None, note=f"not measured: {why}")


def fmt_number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_lines(rows: Sequence[Row], *, markdown: bool = False) -> list[str]:
    """The result table: measure, LACE, baseline, ratio, goal, met?."""
    header = ["measure", "LACE", "baseline", "ratio", "goal", "met?"]
    body: list[list[str]] = []
    for r in rows:
        lace = f"{fmt_number(r.lace)} {r.unit}" if r.lace is not None else "not measured"
        base = f"{fmt_number(r.baseline)} {r.unit}" if r.baseline is not None else "—"
        if r.baseline_label and r.baseline is not None:
            base += f" ({r.baseline_label})"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None and math.isfinite(r.ratio) else "—"
        met = {True: "yes", False: "NO", None: "—"}[r.met]
        body.append([r.measure, lace, base, ratio, r.goal or "—", met])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        notes = [f"- {r.measure}: {r.note}" for r in rows if r.note]
        return lines + (["", *notes] if notes else [])
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) if body else len(header[i])
              for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i in (0, 4) else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*cells) for cells in body]
    notes = [f"  {r.measure}: {r.note}" for r in rows if r.note]
    return lines + (["", "notes:", *notes] if notes else [])


@dataclass
class Context:
    """What a benchmark gets: its size mode and a PostgreSQL server to create databases on."""

    mode: Mode
    server_url: str
    workdir: Path
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def size(self, full: T, quick: T, smoke: T) -> T:
        return {"full": full, "quick": quick, "smoke": smoke}[self.mode]

    @contextlib.contextmanager
    def database(self, prefix: str) -> Iterator[str]:
        """A fresh database migrated to head, dropped afterwards."""
        with fresh_database(self.server_url, f"lace_bench_{prefix}") as url:
            yield url


@contextlib.contextmanager
def postgres_server(database_url: str, workdir: Path) -> Iterator[tuple[str, bool]]:
    """(url, embedded): the server `database_url` names, or else an embedded PostgreSQL in
    `workdir`, stopped and deleted afterwards."""
    if database_url:
        yield database_url, False
        return
    from lace_engine.storage.embedded_postgres import EmbeddedPostgres

    embedded = EmbeddedPostgres(workdir / "pg", delete_on_stop=True)
    url = embedded.start()
    try:
        yield url, True
    finally:
        embedded.stop()


def postgres_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def bench_settings(database_url: str, **overrides: object) -> Settings:
    """Production defaults (as `lace serve` uses them) with the benchmark's overrides."""
    base = Settings(database_url=database_url,
                    run_options=RunOptions(leaf_words=1000, max_depth=4, sibling_concurrency=1,
                                           max_proposal_retries=2))
    return replace(base, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def lace_in_process(database_url: str, env: dict[str, str] | None = None,
                          **overrides: object) -> AsyncIterator[tuple[str, object]]:
    """A real LACE server (grpc.aio + Engine) in this process: yields (target, Running).

    Like `lace serve`, it freezes what exists once it is serving out of the collector's reach (the
    raw baselines that share this process gain the same).
    """
    from lace_server.server import freeze_start_up_objects, start

    running = await start(bench_settings(database_url, **overrides), "127.0.0.1:0",
                          env={"LACE_LLM": "offline", **(env or {})}, migrate_db=False)
    freeze_start_up_objects()
    try:
        yield f"127.0.0.1:{running.port}", running
    finally:
        await running.stop(1.0)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


async def interleaved(rounds: int, lace: Callable[[], Awaitable[float]],
                      baseline: Callable[[], Awaitable[float]]) -> tuple[list[float], list[float]]:
    """Alternates baseline and LACE rounds (ABAB...), so drift on a shared machine hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            b.append(await baseline())
            a.append(await lace())
        else:
            a.append(await lace())
            b.append(await baseline())
    return a, b


def python_env() -> dict[str, str]:
    """The environment for child Python processes (this repo importable, quiet logs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    return env


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class Child:
    """A child process whose stdout is read line by line (READY/LISTENING handshakes)."""

    def __init__(self, proc: asyncio.subprocess.Process, what: str):
        self.proc = proc
        self.what = what

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None, what: str = "") -> Child:
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=REPO, env=env or python_env(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=None)
        return cls(proc, what or args[-1])

    @classmethod
    async def python(cls, module: str, *args: str, env: dict[str, str] | None = None) -> Child:
        return await cls.start(sys.executable, "-m", module, *args, env=env, what=module)

    async def expect(self, prefix: str, within_s: float) -> str:
        """Reads lines until one starts with `prefix`; returns it."""
        assert self.proc.stdout is not None

        async def scan() -> str:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.what} exited ({await self.proc.wait()}) before printing {prefix}")
                text = line.decode().strip()
                if text.startswith(prefix):
                    return text

        return await asyncio.wait_for(scan(), within_s)

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self, within_s: float = 10.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), within_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def wait_for(predicate: Callable[[], Awaitable[bool]], within_s: float, interval: float = 0.05,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
