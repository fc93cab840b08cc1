"""The README's `buf curl` examples, run as written against a live server through gRPC reflection.

The ```sh blocks between the buf-curl-examples markers run in order in one bash process (so the ids
they capture in shell variables carry over), with `$LACE` pointing at the session's server; each
block's output is then checked against what the API promises.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import serve_fresh

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BUF = REPO / "node_modules" / ".bin" / "buf"
START, END = "<!-- buf-curl-examples:start -->", "<!-- buf-curl-examples:end -->"
MARK = "@@lace-readme-block@@"
# The offline latency the README tells a reader to start the server with for the steering examples.
README_LATENCY_MS = 200
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def readme_blocks(text: str) -> list[str]:
    """The bodies of the ```sh blocks between the markers, in order."""
    assert START in text and END in text, "README.md lacks the buf-curl-examples markers"
    section = text.split(START, 1)[1].split(END, 1)[0]
    return [m.group(1) for m in re.finditer(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)]


def json_values(output: str) -> list[Any]:
    """Every JSON value in `output` (buf curl prints one document per response message)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    index = 0
    while True:
        while index < len(output) and output[index].isspace():
            index += 1
        if index >= len(output):
            return values
        value, index = decoder.raw_decode(output, index)
        values.append(value)


def streamed_events(output: str) -> list[dict[str, Any]]:
    return [event for message in json_values(output) for event in message.get("events", [])]


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [int(event["seq"]) for event in events]


@dataclass
class Context:
    """What earlier checks learned, for later ones."""

    values: dict[str, Any] = field(default_factory=dict)


def check_setup(out: str, ctx: Context) -> None:
    assert out.strip() == ""


def check_list_methods(out: str, ctx: Context) -> None:
    methods = set(out.split())
    for method in ("lace.v1.ArtifactService/CreateArtifact", "lace.v1.ArtifactService/CompileArtifact",
                   "lace.v1.RunService/StartRun", "lace.v1.RunService/StreamRun",
                   "lace.v1.RunService/PauseRun", "lace.v1.RunService/ResumeRun", "lace.v1.RunService/CancelRun"):
        assert method in methods


def check_create(out: str, ctx: Context) -> None:
    (created,) = json_values(out)
    artifact = created["artifact"]
    assert UUID.match(artifact["id"])
    assert artifact["title"] == "Tidal energy"
    assert artifact["targetWords"] == 1500
    assert UUID.match(artifact["rootNodeId"])
    ctx.values["artifact_id"] = artifact["id"]


def check_start(out: str, ctx: Context) -> None:
    (started,) = json_values(out)
    run = started["run"]
    assert UUID.match(run["id"])
    assert run["artifactId"] == ctx.values["artifact_id"]
    assert run["state"] in {"RUN_STATE_PENDING", "RUN_STATE_RUNNING"}
    ctx.values["run_id"] = run["id"]


def check_stream_all(out: str, ctx: Context) -> None:
    events = streamed_events(out)
    assert seqs(events) == list(range(1, len(events) + 1)), "every event once, in order, from seq 1"
    assert all(event["runId"] == ctx.values["run_id"] for event in events)
    kinds = {key for event in events for key in event if key not in {"runId", "seq", "createTime"}}
    assert {"runStateChanged", "nodeSplit", "blocksApplied", "llmCallCompleted", "validationReported"} <= kinds
    assert events[-1]["runStateChanged"]["toState"] == "RUN_STATE_COMPLETED"
    ctx.values["events"] = events


def check_stream_from_cursor(out: str, ctx: Context) -> None:
    events = streamed_events(out)
    everything: list[dict[str, Any]] = ctx.values["events"]
    assert seqs(events) == list(range(6, len(everything) + 1)), "resumes right after the cursor"
    assert events == everything[5:]


def check_compile(out: str, ctx: Context) -> None:
    assert out.startswith("---\n"), "Markdown with YAML front matter"
    assert "# Tidal energy" in out
    assert out.count("\n## ") >= 1
    assert 1000 < len(out.split()) < 2500


def check_second_start(out: str, ctx: Context) -> None:
    run_id = out.strip()
    assert UUID.match(run_id)
    assert run_id != ctx.values["run_id"]
    ctx.values["run2_id"] = run_id


def _run_state(out: str, ctx: Context) -> str:
    (response,) = json_values(out)
    assert response["run"]["id"] == ctx.values["run2_id"]
    state: str = response["run"]["state"]
    return state


def check_pause(out: str, ctx: Context) -> None:
    assert _run_state(out, ctx) in {"RUN_STATE_PAUSING", "RUN_STATE_PAUSED"}


def check_get(out: str, ctx: Context) -> None:
    (response,) = json_values(out)
    assert response["run"]["state"] in {"RUN_STATE_PAUSING", "RUN_STATE_PAUSED"}
    assert response["run"]["provider"] == "offline"
    assert int(response["run"]["headSeq"]) >= 2


def check_resume(out: str, ctx: Context) -> None:
    assert _run_state(out, ctx) in {"RUN_STATE_PENDING", "RUN_STATE_RUNNING"}


def check_cancel(out: str, ctx: Context) -> None:
    assert _run_state(out, ctx) in {"RUN_STATE_CANCELLING", "RUN_STATE_CANCELLED"}


def check_state_history(out: str, ctx: Context) -> None:
    (response,) = json_values(out)
    events = response["events"]
    assert all("runStateChanged" in event for event in events), "filtered to state changes"
    states = [event["runStateChanged"]["toState"].removeprefix("RUN_STATE_") for event in events]
    assert states[:2] == ["PENDING", "RUNNING"]
    assert "PAUSING" in states
    resumed = states.index("PAUSING") + 1
    assert {"PENDING", "RUNNING"} & set(states[resumed:]), f"resumed after the pause: {states}"
    assert states[-1] == "CANCELLED"
    assert "COMPLETED" not in states


@dataclass(frozen=True)
class Step:
    calls: str  # text the README block must contain, so that a reordered README fails clearly
    check: Callable[[str, Context], None]


STEPS = (
    Step("LACE=", check_setup),
    Step("--list-methods", check_list_methods),
    Step("lace.v1.ArtifactService/CreateArtifact", check_create),
    Step("lace.v1.RunService/StartRun", check_start),
    Step('\\"cursor\\": 0', check_stream_all),
    Step('\\"cursor\\": 5', check_stream_from_cursor),
    Step("lace.v1.ArtifactService/CompileArtifact", check_compile),
    Step("RUN2_ID=", check_second_start),
    Step("lace.v1.RunService/PauseRun", check_pause),
    Step("lace.v1.RunService/GetRun", check_get),
    Step("lace.v1.RunService/ResumeRun", check_resume),
    Step("lace.v1.RunService/CancelRun", check_cancel),
    Step("lace.v1.RunService/ListRunEvents", check_state_history),
)


def test_readme_has_the_examples() -> None:
    blocks = readme_blocks(README.read_text())
    assert len(blocks) == len(STEPS), f"{len(blocks)} sh blocks in the README section, {len(STEPS)} checks"
    for block, step in zip(blocks, STEPS, strict=True):
        assert step.calls in block, f"README block out of order: expected {step.calls!r} in:\n{block}"
        if "buf curl" in block:
            assert "--protocol grpc --http2-prior-knowledge" in block


async def test_readme_buf_curl_examples_run_against_a_live_server(pg_server_url: str) -> None:
    if not os.access(BUF, os.X_OK):
        pytest.skip(f"{BUF} is missing: run `npm ci` at the repository root")
    # As the README says to start it for the steering examples: with calls answered at once, the
    # second run could end before PauseRun or CancelRun arrived (it did, once the engine got faster).
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": str(README_LATENCY_MS)}) as (target, _, _):
        await _run_the_examples(target)



async def _run_the_examples(target: str) -> None:
    blocks = readme_blocks(README.read_text())
    script = "\n".join(["set -euo pipefail"] + [f"echo '{MARK}'\n{block}" for block in blocks]) + "\n"
    env = {**os.environ, "LACE": f"http://{target}", "PATH": f"{BUF.parent}{os.pathsep}{os.environ['PATH']}"}
    # The server runs on this event loop: the commands must not block it.
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 180)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    out, err = stdout.decode(), stderr.decode()
    outputs = out.split(f"{MARK}\n")[1:]
    assert process.returncode == 0, (
        f"block {len(outputs)} failed (exit {process.returncode}):\n{blocks[len(outputs) - 1]}\n"
        f"--- stdout ---\n{outputs[-1] if outputs else out}\n--- stderr ---\n{err}")
    assert len(outputs) == len(blocks) == len(STEPS)

    ctx = Context()
    for index, (block, output, step) in enumerate(zip(blocks, outputs, STEPS, strict=True), start=1):
        try:
            step.check(output, ctx)
        except AssertionError as exc:
            raise AssertionError(f"README buf curl example {index} ({step.check.__name__}): {exc}\n"
                                 f"--- block ---\n{block}--- output ---\n{output[:4000]}") from exc
