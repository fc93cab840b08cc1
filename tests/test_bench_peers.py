"""The peers benchmark's jobs (bench/peers/) at a tiny size: each system writes the planned document.

No timing is asserted. The plan test runs everywhere; the systems' tests need the `peers` extra
(langgraph, langgraph-checkpoint-postgres, dbos), which the test suite does not install
(`scripts/bench.sh --peers` does), and are skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peers import job
from tests.support.database import fresh_database

REPO = Path(__file__).resolve().parents[1]
LEAVES = 12  # two sections: 10 leaves and 2
SYSTEMS = ("lace", "langgraph-state", "langgraph-delta", "dbos")
PEERS_INSTALLED = all(importlib.util.find_spec(m) is not None for m in ("langgraph", "dbos")) and \
    importlib.util.find_spec("langgraph.checkpoint.postgres") is not None


def test_plan_has_the_leaves_asked_for_in_lace_shape() -> None:
    sections = job.plan(LEAVES)
    leaves = job.leaves_of(sections)
    assert [len(s.leaves) for s in sections] == [10, 2]
    assert [leaf.index for leaf in leaves] == list(range(LEAVES))
    assert len({leaf.title for leaf in leaves}) == LEAVES
    assert all(leaf.words == job.LEAF_WORDS for leaf in leaves)
    # The same leaf gets the same text whoever asks, and the text has the leaf's budget.
    first = job.proposal(leaves[0])
    assert first == job.proposal(leaves[0])
    words = sum(len(b.get("text", "").split()) + sum(len(i.split()) for i in b.get("items", ()))
                + sum(len(c.split()) for c in b.get("table_header", ()))
                + sum(len(c.split()) for row in b.get("table_rows", ()) for c in row) for b in first["blocks"])
    assert words == job.LEAF_WORDS
    assert job.plan(LEAVES) == sections


def _worker(*args: str, stdin: str = "", timeout: float = 180) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "bench.peers.worker", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"worker {args[:2]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout.splitlines()


def _done(lines: list[str]) -> dict[str, object]:
    found = [line for line in lines if line.startswith("DONE ")]
    assert len(found) == 1, lines
    data: dict[str, object] = json.loads(found[0].split(" ", 1)[1])
    return data


@pytest.mark.skipif(not PEERS_INSTALLED, reason="the peers extra (langgraph, dbos) is not installed")
@pytest.mark.timeout(400)
@pytest.mark.parametrize("system", SYSTEMS)
def test_each_system_writes_the_planned_document(system: str, pg_server_url: str, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    with fresh_database(pg_server_url, f"lace_test_peers_{system.replace('-', '_')}",
                        migrate_to_head=(system == "lace")) as url:
        lines = _worker("run", system, "--db", url, "--leaves", str(LEAVES), "--calls", str(calls), stdin="GO\n")
        assert lines[0].startswith("READY") and "FINISHED" in lines, lines
        done = _done(lines)
        # The document read back from the system's own storage: every planned leaf, with the generator's text.
        assert done["leaves"] == LEAVES
        assert done["digest"] == job.expected_digest(LEAVES)
        made = job.read_calls(calls)
        assert sorted(i for i, _ in made) == list(range(LEAVES))  # one call per leaf, none twice
        history = _done(_worker("history", system, "--db", url, "--leaves", str(LEAVES)))
        count = history["count"]
        assert isinstance(count, int) and count >= LEAVES, history
