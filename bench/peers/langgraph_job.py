"""LangGraph's side of the job: a StateGraph whose state holds the document, AsyncPostgresSaver.

As LangGraph's persistence docs set it up: an `AsyncConnectionPool` (max_size 20, autocommit,
prepare_threshold 0, dict_row) under `AsyncPostgresSaver`, `setup()` once, one thread per document.
The graph is one node, `write_leaf`, looping on itself until every planned leaf is written: one
leaf per super-step, so the checkpointer saves the state after every leaf (default durability,
"async"). Two ways to hold the document in the state:

* `state` (the idiomatic one): `leaves: Annotated[list, operator.add]`, an appending reducer; each
  checkpoint stores the channel's whole value, so the bytes per step grow with the document;
* `delta`: the same list in a `DeltaChannel` (beta in LangGraph 1.2), which stores the writes and a
  full snapshot every 100 updates, run with `durability="sync"` (each checkpoint written before the
  next step starts): what a careful LangGraph user picks for a growing document whose steps cost
  money. Under the default "async" durability the graph runs ahead of its checkpoints when they are
  slower than the steps: a SIGKILL at 500 durable leaves found 1,000 leaves already generated, so
  499 LLM calls were made again after the restart (the first full run, docs/performance.md).

Resuming after a crash is `ainvoke(None, config)` on the same thread, as the docs describe.
Following from another process: LangGraph without its server offers the checkpointer; the follower
polls `aget_state` (every POLL_S) and reads how many leaves the latest checkpoint holds.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypedDict

from langgraph.channels import DeltaChannel
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench.peers.job import DOC_KEY, Leaf, TextGenerator

Variant = Literal["state", "delta"]
DURABILITY: dict[str, Literal["sync", "async"]] = {"state": "async", "delta": "sync"}
POLL_S = 0.01
CONFIG: dict[str, Any] = {"configurable": {"thread_id": DOC_KEY}}


def _concat(state: list[dict[str, Any]] | None, writes: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = list(state or [])
    for w in writes:
        out.extend(w)
    return out


class StateDoc(TypedDict):
    plan: list[dict[str, Any]]
    next: int
    leaves: Annotated[list[dict[str, Any]], operator.add]


class DeltaDoc(TypedDict):
    plan: list[dict[str, Any]]
    next: int
    leaves: Annotated[list[dict[str, Any]], DeltaChannel(_concat)]


@asynccontextmanager
async def saver(url: str) -> AsyncIterator[AsyncPostgresSaver]:
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(url, max_size=20, open=False, kwargs=kwargs) as pool:
        yield AsyncPostgresSaver(pool)  # type: ignore[arg-type, unused-ignore]


def graph(variant: Variant, checkpointer: AsyncPostgresSaver, generator: TextGenerator | None) -> Any:
    async def write_leaf(state: dict[str, Any]) -> dict[str, Any]:
        assert generator is not None
        i = int(state["next"])
        proposal = await generator.write(Leaf.from_json(state["plan"][i]))
        return {"next": i + 1, "leaves": [proposal]}

    def more(state: dict[str, Any]) -> str:
        return "write_leaf" if state["next"] < len(state["plan"]) else END

    builder: Any = StateGraph(StateDoc if variant == "state" else DeltaDoc)
    builder.add_node("write_leaf", write_leaf)
    builder.add_edge(START, "write_leaf")
    builder.add_conditional_edges("write_leaf", more, ["write_leaf", END])
    return builder.compile(checkpointer=checkpointer)


def config(leaves: int) -> dict[str, Any]:
    return {**CONFIG, "recursion_limit": leaves + 10}


async def run(app: Any, variant: Variant, plan: list[Leaf]) -> None:
    await app.ainvoke({"plan": [leaf.to_json() for leaf in plan], "next": 0, "leaves": []}, config(len(plan)),
                      durability=DURABILITY[variant])


async def resume(app: Any, variant: Variant, leaves: int) -> None:
    await app.ainvoke(None, config(leaves), durability=DURABILITY[variant])


async def document(app: Any) -> list[list[dict[str, Any]]]:
    state = await app.aget_state(CONFIG)
    return [p["blocks"] for p in state.values["leaves"]]




async def follow(app: Any, expected: int) -> dict[int, int]:
    seen: dict[int, int] = {}
    done = 0
    while done < expected:
        state = await app.aget_state(CONFIG)
        now = time.monotonic_ns()
        count = int(state.values.get("next", 0)) if state.values else 0
        for i in range(done, count):
            seen[i] = now
        done = max(done, count)
        if done < expected:
            await asyncio.sleep(POLL_S)
    return seen


async def history(app: Any) -> int:
    count = 0
    async for _ in app.aget_state_history(CONFIG):
        count += 1
    return count
