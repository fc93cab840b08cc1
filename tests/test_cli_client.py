"""The `lace` client subcommands, driven through lace_server.cli.main against the session's server."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import docx
import pytest

from lace_server.cli import main

Lace = Callable[..., Awaitable[tuple[int, str, str]]]

BRIEF = "A field guide to small wind turbines for farms."


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    # main() installs its own root handler on the captured stderr; the server shares this
    # process, so put pytest's handlers back before that stream goes away.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def lace(lace_server: tuple[str, object], capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> Lace:
    """Runs `lace ARGS --server <fixture>` in a worker thread; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("LACE_LOG_LEVEL", "WARNING")

    async def run(*args: str, server: str = lace_server[0]) -> tuple[int, str, str]:
        capsys.readouterr()
        # A thread, because main() runs its own event loop while the server needs this one.
        code = await asyncio.wait_for(asyncio.to_thread(main, [*args, "--server", server]), 90)
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_create_start_watch_compile(lace: Lace, tmp_path: Path) -> None:
    code, out, _ = await lace("create", "--title", "Small wind", "--brief", BRIEF, "--words", "1500",
                              "--style", "plain")
    assert code == 0
    artifact_id = out.strip()
    uuid.UUID(artifact_id)

    code, out, err = await lace("start", artifact_id, "--sibling-concurrency", "2", "--max-llm-calls", "500",
                                "--max-duration", "600", "--watch")
    assert code == 0, err
    assert "estimate: " in err and "LLM calls, at most" in err  # the preflight estimate, on stderr
    lines = out.splitlines()
    run_id = lines[0].strip()
    uuid.UUID(run_id)
    assert any("state PENDING -> RUNNING" in line for line in lines)
    assert any(line.startswith("[") and "wrote '" in line for line in lines)
    assert lines[-2].startswith(f"run {run_id} COMPLETED:") and "words" in lines[-2]
    # The quality report of the run, under the summary.
    assert lines[-1].startswith("quality: ") and "0 re-asks" in lines[-1] and "calls at the token limit" in lines[-1]

    markdown = tmp_path / "doc.md"
    code, out, err = await lace("compile", artifact_id, "-o", str(markdown))
    assert code == 0 and out == "" and "wrote" in err
    text = markdown.read_text()
    assert text.startswith("---") and "# Small wind" in text
    code, out, _ = await lace("compile", artifact_id, "--format", "json")
    blocks = json.loads(out)["blocks"]
    assert code == 0 and blocks
    report = tmp_path / "report.docx"
    code, out, err = await lace("compile", artifact_id, "--format", "docx", "-o", str(report))
    assert code == 0 and out == "" and "wrote" in err
    assert docx.Document(str(report)).paragraphs[0].text == "Small wind"

    code, out, _ = await lace("runs", "--artifact", artifact_id)
    assert code == 0 and run_id in out and "COMPLETED" in out
    code, out, _ = await lace("artifacts")
    assert code == 0 and artifact_id in out

    code, out, _ = await lace("events", run_id, "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    code, out, _ = await lace("events", run_id, "--after", str(len(events) - 1))
    assert code == 0 and len(out.splitlines()) == 1 and "run_state_changed" in out
    code, out, _ = await lace("events", run_id, "--type", "node_split")
    assert code == 0 and out and all("\tnode_split\t" in line for line in out.splitlines())

    # Watching again from a cursor replays the rest and ends with the same verdict.
    code, out, _ = await lace("watch", run_id, "--cursor", "3")
    assert code == 0 and "[3]" not in out and "COMPLETED" in out.splitlines()[-2]

    block_id = blocks[0]["id"]
    code, out, err = await lace("edit-block", block_id, "--text", "Written by hand.")
    assert code == 0, err
    code, out, _ = await lace("history", block_id)
    assert code == 0 and "HUMAN" in out and "Written by hand." in out
    first = out.splitlines()[1].split()
    assert first[1:4] == ["CREATE", "LLM", "1"]  # operation, origin, the block's version

    code, out, err = await lace("revert", block_id, "--version", "1")
    assert code == 0 and "has the content of version 1" in out, err
    code, out, _ = await lace("history", block_id)
    assert out.splitlines()[-1].split()[1:4] == ["UPDATE", "HUMAN", "3"] and "Written by hand." not in \
        out.splitlines()[-1]
    code, _, err = await lace("revert", block_id, "--version", "9")
    assert code == 2 and "(BLOCK_VERSION_NOT_FOUND)" in err


async def test_watch_exits_1_when_the_run_is_cancelled(lace: Lace) -> None:
    code, out, _ = await lace("create", "--title", "Cancelled", "--brief", BRIEF, "--words", "20000")
    artifact_id = out.strip()
    # --review-plan: the run is active (planning, then awaiting review) until it is cancelled, however
    # fast it would otherwise be written.
    code, out, _ = await lace("start", artifact_id, "--review-plan")
    assert code == 0
    run_id = out.strip()
    code, out, _ = await lace("cancel", run_id)
    assert code == 0 and out.startswith(f"run {run_id}: CANCEL")
    code, out, _ = await lace("watch", run_id)
    assert code == 1 and "CANCELLED" in out.splitlines()[-1]


async def test_errors_exit_2_with_the_reason(lace: Lace) -> None:
    code, out, err = await lace("watch", str(uuid.uuid4()))
    assert code == 2 and out == "" and err.startswith("lace: ") and err.rstrip().endswith("(RUN_NOT_FOUND)")
    code, _, err = await lace("pause", "not-an-id")
    assert code == 2 and "(MALFORMED_ID)" in err
    code, _, err = await lace("compile", str(uuid.uuid4()))
    assert code == 2 and "(ARTIFACT_NOT_FOUND)" in err
    code, _, err = await lace("artifacts", server="127.0.0.1:1")  # nothing listens there
    assert code == 2 and "(UNAVAILABLE)" in err


async def test_source_add_list_show_delete(lace: Lace, tmp_path: Path) -> None:
    from tests.support import source_docs

    code, out, _ = await lace("create", "--title", "Storage", "--brief", BRIEF, "--words", "600")
    artifact_id = out.strip()
    notes, report = tmp_path / "notes.md", tmp_path / "siting.pdf"
    notes.write_text(source_docs.MARKDOWN)
    report.write_bytes(source_docs.pdf_bytes())
    code, out, err = await lace("source", "add", str(notes), "--artifact", artifact_id)
    assert code == 0, err
    notes_id = out.strip()
    assert "notes:" in err and "passages" in err
    code, out, err = await lace("source", "add", str(report), "--artifact", artifact_id, "--title", "Siting")
    assert code == 0, err
    code, out, _ = await lace("source", "list", artifact_id)
    assert code == 0 and notes_id in out and "application/pdf" in out and "Siting" in out
    code, out, _ = await lace("source", "show", notes_id)
    assert code == 0 and "Lithium-ion batteries dominate" in out
    code, out, _ = await lace("source", "delete", notes_id)
    assert code == 0 and "deleted" in out
    code, out, _ = await lace("source", "list", artifact_id)
    assert code == 0 and notes_id not in out

    unknown = tmp_path / "data.xlsx"
    unknown.write_bytes(b"x")
    code, _, err = await lace("source", "add", str(unknown), "--artifact", artifact_id)
    assert code == 2 and "--type" in err


async def test_compile_refuses_binary_to_a_terminal(lace: Lace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = await lace("compile", str(uuid.uuid4()), "--format", "pdf")
    assert code == 2 and out == ""
    assert "pdf is a binary format; write it to a file with -o FILE" in err


async def test_review_flow_start_outline_node_edits_resume(lace: Lace) -> None:
    code, out, _ = await lace("create", "--title", "Farm wind", "--brief", BRIEF, "--words", "3000")
    artifact_id = out.strip()
    code, out, err = await lace("start", artifact_id, "--review-plan", "--max-depth", "1", "--watch")
    assert code == 0, err
    run_id = out.splitlines()[0].strip()
    assert "plan ready for review" in out and "AWAITING_REVIEW" in out.splitlines()[-1]
    code, out, _ = await lace("outline", artifact_id)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Farm wind  [split, ")
    sections = [line.strip().rsplit(None, 1)[-1] for line in lines[1:]]  # the ids, in order
    assert len(sections) >= 2 and all(line.startswith("  ") and "[planned, " in line for line in lines[1:])
    root = lines[0].rsplit(None, 1)[-1]

    code, out, err = await lace("node", "update", sections[0], "--title", "Siting on a farm", "--words", "700")
    assert code == 0, err
    code, out, err = await lace("node", "create", root, "--title", "Checklist", "--intent", "what to check",
                                "--words", "300", "--position", "0")
    assert code == 0, err
    created = out.strip()
    code, _, err = await lace("node", "delete", sections[-1])
    assert code == 0, err
    code, out, err = await lace("node", "move", created, "--parent", root, "--position", "1")
    assert code == 0 and "position 1" in out, err
    code, _, err = await lace("node", "delete", root)
    assert code == 2 and "(ROOT_NODE)" in err

    code, out, _ = await lace("outline", artifact_id)
    titles = [line.strip().split("  [")[0] for line in out.splitlines()[1:]]
    assert titles[:2] == ["Siting on a farm", "Checklist"] and len(titles) == len(sections)
    code, out, err = await lace("resume", run_id)
    assert code == 0 and "PENDING" in out, err
    code, out, err = await lace("watch", run_id)
    assert code == 0 and f"run {run_id} COMPLETED" in out, err
    code, out, _ = await lace("outline", artifact_id)
    assert all("[written, " in line for line in out.splitlines()[1:])
    assert [line.strip().split("  [")[0] for line in out.splitlines()[1:]] == titles


async def test_update_list_filtered_and_delete(lace: Lace) -> None:
    code, out, _ = await lace("create", "--title", "Windbreaks", "--brief", BRIEF, "--words", "900")
    artifact_id = out.strip()
    code, _, err = await lace("update", artifact_id)
    assert code == 2 and "--title" in err  # nothing to change
    code, out, err = await lace("update", artifact_id, "--title", "Windbreaks and turbines", "--words", "1100")
    assert code == 0 and "version 2, 1100 words planned" in out, err
    code, out, _ = await lace("artifacts", "--order-by", "update_time desc")
    assert code == 0 and out.splitlines()[1].startswith(artifact_id) and "Windbreaks and turbines" in out
    code, out, _ = await lace("runs", "--filter", "state = AWAITING_REVIEW AND state = COMPLETED")
    assert code == 0 and out.splitlines()[1:] == []  # no run is in both states: only the header
    code, _, err = await lace("runs", "--filter", "state = LATE")
    assert code == 2 and "(INVALID_FILTER)" in err
    code, out, _ = await lace("delete", artifact_id)
    assert code == 0 and "deleted" in out
    code, _, err = await lace("delete", artifact_id)
    assert code == 2 and "(ARTIFACT_NOT_FOUND)" in err
    code, _, _ = await lace("delete", artifact_id, "--allow-missing")
    assert code == 0


async def test_stale_sections_from_the_cli(lace: Lace) -> None:
    code, out, _ = await lace("create", "--title", "Stale wind", "--brief", BRIEF, "--words", "1600")
    artifact_id = out.strip()
    code, _, _ = await lace("start", artifact_id, "--leaf-words", "200", "--watch")
    assert code == 0
    code, _, err = await lace("start", artifact_id, "--stale")
    assert code != 0 and "nothing to rewrite" in err
    code, out, _ = await lace("outline", artifact_id)
    assert "stale:" not in out
    last_written = [line for line in out.splitlines() if "[written," in line][-1]
    node_id, title = last_written.split()[-1], last_written.strip().split("  [")[0]
    code, _, _ = await lace("node", "update", node_id, "--title", "A renamed last section")
    assert code == 0
    code, out, _ = await lace("outline", artifact_id)
    assert f"stale: section {title!r} was retitled 'A renamed last section'" in out
    code, out, err = await lace("start", artifact_id, "--stale", "--watch")
    assert code == 0, err
    code, out, _ = await lace("outline", artifact_id)
    assert "stale:" not in out
