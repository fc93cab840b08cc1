"""The benchmark harness itself (bench/), run at its smallest size so it cannot rot.

No timing is asserted: only that `python -m bench` runs all nine benchmarks (with their server,
client, NATS and worker processes), prints the table and writes every row with numeric LACE,
baseline and ratio figures. About 40 s on 2 cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Row prefixes each benchmark must produce (labels carry sizes that differ between modes).
EXPECTED: dict[str, list[str]] = {
    "apply_throughput": ["1. apply tx/s, 1 run", "1. apply tx/s, 32 runs",
                         "1. apply tx/s, 32 runs vs commit per event"],
    "live_latency": [f"2. live p{p}, " for _ in range(6) for p in (50, 99)],
    "replay": ["3. replay", "3. replay"],
    "engine_overhead": ["4. engine CPU ms per node", "4. wall ms per node"],
    "concurrency": [*["5. LLM calls/s vs ideal", "5. LLM calls/s vs bare client"] * 2, "5. runs/s of one call each"],
    "critical_path": ["6. critical path", "6. same, sequential"],
    "memory": ["7. server RSS peak", "7. server RSS after 3rd round"],
    "scale_out": ["8. live p50", "8. live p99", "8. runs/s, 1 worker", "8. runs/s, 2 workers", "8. runs/s, 3 workers"],
    "db_outage": ["9. run with", "9. resume delay after an outage", "9. LLM calls per applied step",
                  "9. nodes and applied steps"],
    "fanout": [*(f"13. NATS KiB received per replica, {n} replica" for n in (1, 2, 4, 1, 2)), "13. interest in"],
}


def run_bench(names: list[str], server_url: str, tmp_path: Path, timeout: float) -> dict[str, object]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", *names, "--database-url", server_url,
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, f"python -m bench failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "measure" in proc.stdout and "baseline" in proc.stdout and "met?" in proc.stdout, proc.stdout
    data: dict[str, object] = json.loads(out.read_text())
    return data


def check_rows(data: dict[str, object], names: list[str]) -> None:
    rows = data["rows"]
    assert isinstance(rows, list)
    expected = [prefix for name in names for prefix in EXPECTED[name]]
    measures = [str(r["measure"]) for r in rows]
    assert len(rows) == len(expected), measures
    for prefix, row in zip(expected, rows, strict=True):
        assert str(row["measure"]).startswith(prefix), (prefix, row)
        for key in ("lace", "baseline", "ratio"):
            value = row[key]
            assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, (key, row)
        assert not str(row["note"]).startswith(("error", "not measured")), row
        assert row["goal"] == "" or row["met"] in (True, False), row


@pytest.mark.timeout(600)
def test_bench_smoke_every_benchmark(pg_server_url: str, tmp_path: Path) -> None:
    names = list(EXPECTED)
    data = run_bench(names, pg_server_url, tmp_path, timeout=550)
    check_rows(data, names)
    header = data["header"]
    assert isinstance(header, list) and any(str(h).startswith("machine:") for h in header)


def test_bench_instructions_counts_a_run_of_a_commit(pg_server_url: str) -> None:
    """bench.instructions, the callgrind A/B of `lace serve` the per-call CPU work is measured with."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--runs", "2", "--rounds", "1", "--database-url",
         pg_server_url, "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counted = [line for line in proc.stdout.splitlines() if line.startswith("round 1 HEAD: ")]
    assert len(counted) == 1, proc.stdout
    per_run = float(counted[0].split()[3])
    assert 1 < per_run < 1000, counted  # millions of instructions: a server that did work, not a dump of nothing
    assert "HEAD: " in proc.stdout and "(1.000x)" in proc.stdout
