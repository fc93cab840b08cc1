"""Compile time of each format for a ~100-node, ~1,000-block artifact (no database: the render only).

    .venv/bin/python -m bench.export_formats [--repeat 3]

The IR is built in memory: a root, 9 chapters and 90 sections (100 nodes), about 1,000 blocks of every
kind (paragraphs of about 60 pseudo-random words, lists, a table in every section, code in every
third, quotes, heading blocks) and citations of 60 passages. Each format is compiled the way
Engine.compile does it (the text renderers, or the Pandoc AST and the exporter's subprocesses) and
timed on the wall clock; the median of the repeats is printed with the document's size.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime

import pypandoc

from lace_engine.domain import Artifact, Block, BlockContent, BlockKind, Node, NodeState, Origin, Passage
from lace_engine.export.pandoc import Exporter
from lace_engine.pipeline.compiler import compile_html, compile_json, compile_markdown
from lace_engine.pipeline.pandoc_ast import document_ast
from lace_engine.pipeline.tree import Tree

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORDS = [f"{a}{b}" for a in ("stor", "grid", "cell", "heat", "flow", "load", "peak", "cost", "site", "plan")
         for b in ("age", "ing", "er", "ed", "s", "ion", "al", "ity", "ive", "ure")]


def build(seed: int = 7) -> tuple[Artifact, Tree, dict[uuid.UUID, list[Block]], dict[uuid.UUID, Passage]]:
    rnd = random.Random(seed)
    aid = uuid.UUID(int=1)

    def words(n: int) -> str:
        return " ".join(rnd.choice(WORDS) for _ in range(n)).capitalize() + "."

    def node(n: int, parent: Node | None, ordinal: int) -> Node:
        return Node(uuid.UUID(int=1000 + n), aid, parent.id if parent else None, ordinal,
                    parent.depth + 1 if parent else 0, words(rnd.randint(2, 5)).rstrip("."), "intent", 1000,
                    NodeState.WRITTEN, create_time=T0)

    passages = {p.id: p for p in (Passage(uuid.UUID(int=50_000 + i), uuid.UUID(int=60_000 + i % 3), i, i * 400,
                                          i * 400 + 380, words(60), f"h{i}", f"Source {i % 3 + 1}")
                                  for i in range(60))}
    cited = list(passages)
    root = node(0, None, 0)
    nodes = [root]
    blocks: dict[uuid.UUID, list[Block]] = {}
    serial = iter(range(100_000, 1_000_000))

    def add(owner: Node, content: BlockContent) -> None:
        own = blocks.setdefault(owner.id, [])
        own.append(Block(uuid.UUID(int=next(serial)), aid, owner.id, len(own), content, Origin.LLM, False, 1, T0, T0))

    add(root, BlockContent(BlockKind.PARAGRAPH, text=words(80)))
    for c in range(9):
        chapter = node(len(nodes), root, c)
        nodes.append(chapter)
        add(chapter, BlockContent(BlockKind.PARAGRAPH, text=words(60)))
        for s in range(10):
            section = node(len(nodes), chapter, s)
            nodes.append(section)
            for b in range(11):
                if b == 3:
                    add(section, BlockContent(BlockKind.HEADING, text=words(4).rstrip("."), heading_level=1))
                elif b == 5:
                    add(section, BlockContent(BlockKind.TABLE, table_header=("Option", "Cost", "Note"),
                                              table_rows=tuple((words(2), str(rnd.randint(1, 999)), words(5))
                                                               for _ in range(4)),
                                              citations=(rnd.choice(cited),)))
                elif b == 7:
                    add(section, BlockContent(BlockKind.BULLET_LIST, items=tuple(words(8) for _ in range(4))))
                elif b == 8 and s % 3 == 0:
                    add(section, BlockContent(BlockKind.CODE, language="python",
                                              text="def cost(kwh: float) -> float:\n    return kwh * 0.12\n"))
                elif b == 9 and s % 2 == 0:
                    add(section, BlockContent(BlockKind.QUOTE, text=words(20)))
                else:
                    cites = (rnd.choice(cited),) if rnd.random() < 0.3 else ()
                    add(section, BlockContent(BlockKind.PARAGRAPH, text=words(60), citations=cites))
    artifact = Artifact(aid, "A Handbook of Grid-scale Storage", "brief", "", 60_000, root.id, 1, 0, None, T0, T0)
    return artifact, Tree(nodes), blocks, passages


async def main(repeat: int) -> None:
    artifact, tree, blocks, passages = build()
    metadata = {"generator": "lace", "artifact_id": str(artifact.id), "artifact_version": "1",
                "llm_provider": "offline"}
    n_blocks = sum(len(v) for v in blocks.values())
    n_words = sum(b.content.words() for v in blocks.values() for b in v)
    print(f"{len(list(tree.preorder()))} nodes, {n_blocks} blocks, {n_words:,} words, {len(passages)} passages; "
          f"pandoc {pypandoc.get_pandoc_version()}; median of {repeat}")
    exporter = Exporter()
    epoch = int(artifact.update_time.timestamp())
    print(f"{'format':<9}{'ms':>8}{'bytes':>12}")
    for fmt in ("markdown", "html", "json", "docx", "odt", "epub", "pdf"):
        times: list[float] = []
        size = 0
        for _ in range(repeat):
            start = time.perf_counter()
            if fmt in ("markdown", "html", "json"):
                render = {"markdown": compile_markdown, "html": compile_html, "json": compile_json}[fmt]
                size = len(render(artifact, tree, blocks, metadata, passages).encode())
            else:
                ast = document_ast(artifact, tree, blocks, metadata, passages)
                size = len(await exporter.render(fmt, ast, source_date_epoch=epoch))
            times.append((time.perf_counter() - start) * 1000)
        print(f"{fmt:<9}{statistics.median(times):>8.0f}{size:>12,}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args().repeat))
