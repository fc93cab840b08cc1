"""DBOS's side of the job: one durable workflow per document, one async `@DBOS.step()` per leaf.

As DBOS's Python docs write it: `DBOS(config={"name", "system_database_url"})` with its default
pool, `DBOS.launch()`, an `async` workflow calling an `async` step per leaf (each step's output, the
leaf's blocks, is checkpointed in the system database: that is the durable document), and after
each step a value on a durable stream (`DBOS.write_stream_async("leaves", index)`) for followers.
Recovery is DBOS's own: a restarted process's `DBOS.launch()` resumes the pending workflow,
skipping every step whose output is recorded. A second process follows with a `DBOSClient`
(`use_listen_notify=True`, so it is woken by the streams' NOTIFY rather than polling) through
`read_stream_async`; the history is `list_workflow_steps_async`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSClient, SetWorkflowID

from bench.peers.job import DOC_KEY, Leaf, TextGenerator

STREAM = "leaves"
_generator: TextGenerator | None = None


@DBOS.step()
async def write_leaf(leaf: dict[str, Any]) -> dict[str, Any]:
    assert _generator is not None
    return await _generator.write(Leaf.from_json(leaf))


@DBOS.workflow()
async def write_document(plan: list[dict[str, Any]]) -> int:
    for i, leaf in enumerate(plan):
        await write_leaf(leaf)
        await DBOS.write_stream_async(STREAM, i)
    await DBOS.close_stream_async(STREAM)
    return len(plan)


def launch(url: str, calls: Path, latency_ms: float) -> None:
    global _generator
    _generator = TextGenerator(calls, latency_ms)
    DBOS(config={"name": "lace-peers-bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()  # recovers a pending workflow of this executor, if a crash left one


def shutdown() -> None:
    DBOS.destroy()


async def run(plan: list[Leaf]) -> None:
    with SetWorkflowID(DOC_KEY):
        handle = await DBOS.start_workflow_async(write_document, [leaf.to_json() for leaf in plan])
    await handle.get_result()


async def resume() -> None:
    """Waits for the workflow DBOS.launch() recovered."""
    handle: Any = await DBOS.retrieve_workflow_async(DOC_KEY)
    await handle.get_result(polling_interval_sec=0.01)


async def document() -> list[list[dict[str, Any]]]:
    steps = await DBOS.list_workflow_steps_async(DOC_KEY)
    return [(s["output"] or {})["blocks"] for s in steps if s["function_name"].endswith("write_leaf")]




def client(url: str, listen: bool) -> DBOSClient:
    return DBOSClient(system_database_url=url, use_listen_notify=listen)


async def follow(c: DBOSClient, expected: int) -> dict[int, int]:
    seen: dict[int, int] = {}
    async for value in c.read_stream_async(DOC_KEY, STREAM):
        seen[int(value)] = time.monotonic_ns()
        if len(seen) >= expected:
            break
    return seen


async def history(c: DBOSClient) -> int:
    return len(await c.list_workflow_steps_async(DOC_KEY))
