"""The job every system runs, and what the systems share: the plan, the text generator, the document.

The plan has LACE's shape: a root split into sections, each section split into leaves of
`LEAF_WORDS` words (the tree LACE's own Strategy Selector builds for a long artifact, here with
`LEAF_FANOUT` leaves per section so that every size has exactly the leaves asked for). It is the
job's input for every system (untimed set-up); each system then *writes* every leaf, one after
another, with the same deterministic offline generator (`lace_engine.llm.offline.generate_content`,
seeded from the leaf's title so the same leaf gets the same text whichever system asks), stores the
document durably, and can be followed from another process.

Every "LLM call" appends `index monotonic_ns` to a calls file with one `write(2)` on an O_APPEND
descriptor: it survives a SIGKILL of the writer, so calls made twice are counted across a crash,
and the stamp is the moment the leaf's text exists, which is before any system can commit it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lace_engine.llm.offline import generate_content, generate_split

LEAF_WORDS = 800
LEAF_FANOUT = 10
DOC_KEY = "peers-doc"  # LangGraph's thread id and DBOS's workflow id
BRIEF_TITLE = "Grid-scale energy storage"
# How many leaves are durable, for the harness (the crash row), read from each system's own tables:
# LACE's written leaf nodes; the step of LangGraph's latest checkpoint (-1 is the input, 0 the
# first loop, then one step per leaf); DBOS's recorded outputs of the leaf step.
DURABLE_LEAVES = {
    "lace": "SELECT count(*) FROM nodes WHERE depth = 2 AND state = 'written'",
    "langgraph-state": f"SELECT max((metadata->>'step')::int) FROM checkpoints WHERE thread_id = '{DOC_KEY}'",
    "langgraph-delta": f"SELECT max((metadata->>'step')::int) FROM checkpoints WHERE thread_id = '{DOC_KEY}'",
    "dbos": f"SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = '{DOC_KEY}' "
            "AND function_name LIKE '%write_leaf'",
}
BLOCK_FIELDS = ("kind", "text", "heading_level", "items", "language", "table_header", "table_rows")


@dataclass(frozen=True, slots=True)
class Leaf:
    index: int
    section: int
    ordinal: int  # within its section
    title: str
    intent: str
    words: int

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "section": self.section, "ordinal": self.ordinal, "title": self.title,
                "intent": self.intent, "words": self.words}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Leaf:
        return cls(int(data["index"]), int(data["section"]), int(data["ordinal"]), str(data["title"]),
                   str(data["intent"]), int(data["words"]))


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    intent: str
    leaves: tuple[Leaf, ...]


def plan(leaves: int) -> list[Section]:
    """Root -> ceil(leaves / LEAF_FANOUT) sections -> `leaves` leaves of LEAF_WORDS words, deterministic."""
    if leaves < 1:
        raise ValueError("at least one leaf")
    count = -(-leaves // LEAF_FANOUT)
    tops = generate_split({"step": "split", "title": BRIEF_TITLE, "target_words": leaves * LEAF_WORDS,
                           "child_count": count, "depth": 0}, 1)["children"]
    sections: list[Section] = []
    index = 0
    for s, top in enumerate(tops):
        n = min(LEAF_FANOUT, leaves - index)
        title = f"{s + 1}. {top['title']}"
        kids = generate_split({"step": "split", "title": title, "target_words": n * LEAF_WORDS, "child_count": n,
                               "depth": 1}, 1)["children"] if n > 1 else [{"title": "Details", "intent": top["intent"]}]
        leaf_list = []
        for j, kid in enumerate(kids):
            leaf_list.append(Leaf(index, s, j, f"{s + 1}.{j + 1} {kid['title']}", str(kid["intent"]), LEAF_WORDS))
            index += 1
        sections.append(Section(title, str(top["intent"]), tuple(leaf_list)))
    return sections


def leaves_of(sections: list[Section]) -> list[Leaf]:
    return [leaf for s in sections for leaf in s.leaves]


def proposal(leaf: Leaf) -> dict[str, Any]:
    """What the offline "model" answers for a leaf: {"blocks": [...], "summary": ...}, the same everywhere."""
    task = {"step": "write", "title": leaf.title, "intent": leaf.intent, "target_words": leaf.words, "depth": 2}
    return generate_content(task, zlib.crc32(leaf.title.encode()))


class TextGenerator:
    """The job's LLM: the offline generator with an optional latency, logging every call to `calls_path`."""

    def __init__(self, calls_path: Path, latency_ms: float = 0.0):
        self.latency_s = latency_ms / 1000.0
        self._fd = os.open(calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def write(self, leaf: Leaf) -> dict[str, Any]:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        out = proposal(leaf)
        os.write(self._fd, f"{leaf.index} {time.monotonic_ns()}\n".encode())
        return out

    def close(self) -> None:
        os.close(self._fd)


def read_calls(path: Path) -> list[tuple[int, int]]:
    """(leaf index, monotonic ns when its text was ready) for every call, in call order."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), int(parts[1])))
    return out


def canonical_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks as comparable dicts: the content fields, empty ones left out (as BlockContent.to_json)."""
    return [{k: b[k] for k in BLOCK_FIELDS if b.get(k)} for b in blocks]


def digest(document: list[list[dict[str, Any]]]) -> str:
    """SHA-256 of the document: every leaf's canonical blocks, in plan order."""
    h = hashlib.sha256()
    for blocks in document:
        h.update(json.dumps(canonical_blocks(blocks), sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def expected_digest(leaves: int) -> str:
    """The digest of the document every system should produce for a plan of `leaves` leaves."""
    return digest([proposal(leaf)["blocks"] for leaf in leaves_of(plan(leaves))])
