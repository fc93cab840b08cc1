"""A small IR with every block kind, nested sections and citations of two sources, built directly
(no database) for the export tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lace_engine.domain import Artifact, Block, BlockContent, BlockKind, Node, NodeState, Origin, Passage
from lace_engine.pipeline.tree import Tree

AID = uuid.UUID(int=0xA)
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
METADATA = {"generator": "lace", "artifact_id": str(AID), "artifact_version": "12", "llm_provider": "offline"}
CODE = 'fn main() {\n    println!("<b> & ```");\n}'
HEADER = ("Python", "Rust")
ROWS = (("list", "Vec<T>"), ("a|b", "match"), ("short",))

PASSAGES = {
    p.id: p for p in (
        Passage(uuid.UUID(int=0x501), uuid.UUID(int=0x601), 0, 0, 74,
                "Rust's ownership model guarantees memory safety without a garbage collector.", "h1",
                "The Rust Book"),
        Passage(uuid.UUID(int=0x502), uuid.UUID(int=0x602), 0, 10, 46, "Lifetimes are named regions of code.",
                "h2", "Notes on Lifetimes"),
    )
}
P1, P2 = PASSAGES


@dataclass(frozen=True)
class Doc:
    artifact: Artifact
    nodes: list[Node]
    blocks: dict[uuid.UUID, list[Block]]

    @property
    def tree(self) -> Tree:
        return Tree(self.nodes)

    def in_order(self) -> list[Block]:
        return [b for n in self.tree.preorder() for b in sorted(self.blocks.get(n.id, []), key=lambda b: b.ordinal)]


def _node(n: int, parent: Node | None, ordinal: int, title: str) -> Node:
    return Node(id=uuid.UUID(int=n), artifact_id=AID, parent_id=parent.id if parent else None, ordinal=ordinal,
                depth=parent.depth + 1 if parent else 0, title=title, intent="intent", target_words=100,
                state=NodeState.WRITTEN, create_time=T0)


def cited_doc() -> Doc:
    root = _node(1, None, 0, "Rust <for> Pythonistas")
    intro = _node(2, root, 0, "Introduction")
    deep = _node(3, root, 1, "Ownership & Borrowing")
    deeper = _node(4, deep, 0, "Lifetimes")
    n = iter(range(100, 1000))

    def block(node: Node, ordinal: int, content: BlockContent) -> Block:
        return Block(uuid.UUID(int=next(n)), AID, node.id, ordinal, content, Origin.LLM, False, 1, T0, T0)

    blocks = {
        root.id: [block(root, 0, BlockContent(BlockKind.PARAGRAPH, text="Opening words of the guide."))],
        intro.id: [
            block(intro, 0, BlockContent(BlockKind.PARAGRAPH, text="Memory safety matters to everyone.",
                                         citations=(P1,))),
            block(intro, 1, BlockContent(BlockKind.HEADING, text="Why Rust", heading_level=1)),
            block(intro, 2, BlockContent(BlockKind.PARAGRAPH, text="# not a heading\n- not a list")),
            block(intro, 3, BlockContent(BlockKind.BULLET_LIST, items=("fast", "safe and sound"))),
            block(intro, 4, BlockContent(BlockKind.ORDERED_LIST, items=("install", "build"))),
        ],
        deep.id: [
            block(deep, 0, BlockContent(BlockKind.CODE, text=CODE, language="rust", citations=(P1,))),
            block(deep, 1, BlockContent(BlockKind.QUOTE, text="Fearless concurrency")),
            block(deep, 2, BlockContent(BlockKind.TABLE, table_header=HEADER, table_rows=ROWS,
                                        citations=(P2, P1))),
        ],
        deeper.id: [
            block(deeper, 0, BlockContent(BlockKind.HEADING, text="Elision", heading_level=2)),
            block(deeper, 1, BlockContent(BlockKind.PARAGRAPH, text="Lifetimes are mostly inferred.",
                                          citations=(P2,))),
        ],
    }
    artifact = Artifact(AID, "Rust <for> Pythonistas", "SECRET BRIEF", "", 400, root.id, 12, 0, None, T0, T0)
    return Doc(artifact, [root, intro, deep, deeper], blocks)
