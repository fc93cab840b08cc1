"""Compiler: structure of the Markdown, HTML and JSON exports, escaping and determinism."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from lace_engine.domain import Artifact, Block, BlockContent, BlockKind, Node, NodeState, Origin
from lace_engine.pipeline.compiler import compile_html, compile_json, compile_markdown
from lace_engine.pipeline.tree import Tree

AID = uuid.UUID(int=0xA)
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
METADATA = {"llm_provider": "offline", "generator": "lace", "artifact_version": "12", "model": 'x: "y"'}
XSS = "<script>alert('x')</script> & more"


def _node(n: int, parent: Node | None, ordinal: int, title: str) -> Node:
    return Node(
        id=uuid.UUID(int=n),
        artifact_id=AID,
        parent_id=parent.id if parent else None,
        ordinal=ordinal,
        depth=parent.depth + 1 if parent else 0,
        title=title,
        intent="intent",
        target_words=100,
        state=NodeState.WRITTEN,
        create_time=T0,
    )


def _doc() -> tuple[Artifact, list[Node], dict[uuid.UUID, list[Block]]]:
    root = _node(1, None, 0, "Rust <for> Pythonistas")
    intro = _node(2, root, 0, "Introduction")
    deep = _node(3, root, 1, "Ownership & Borrowing")
    deeper = _node(4, deep, 0, "Lifetimes")
    n = iter(range(100, 1000))

    def block(node: Node, ordinal: int, content: BlockContent) -> Block:
        return Block(uuid.UUID(int=next(n)), AID, node.id, ordinal, content, Origin.LLM, False, 1, T0, T0)

    blocks = {
        root.id: [block(root, 0, BlockContent(BlockKind.PARAGRAPH, text="Opening words."))],
        intro.id: [
            # Stored out of order on purpose: ordinal decides.
            block(intro, 1, BlockContent(BlockKind.HEADING, text="Why Rust", heading_level=1)),
            block(intro, 0, BlockContent(BlockKind.PARAGRAPH, text=XSS)),
            block(intro, 2, BlockContent(BlockKind.PARAGRAPH, text="# not a heading\n- not a list")),
            block(intro, 3, BlockContent(BlockKind.BULLET_LIST, items=("fast", "safe\nand sound"))),
            block(intro, 4, BlockContent(BlockKind.ORDERED_LIST, items=("install", "build"))),
        ],
        deep.id: [
            block(
                deep,
                0,
                BlockContent(BlockKind.CODE, text='fn main() {\n    println!("```");\n}', language="rust"),
            ),
            block(deep, 1, BlockContent(BlockKind.QUOTE, text="Fearless\nconcurrency")),
            block(
                deep,
                2,
                BlockContent(
                    BlockKind.TABLE,
                    table_header=("Python", "Rust"),
                    table_rows=(("list", "Vec<T>"), ("a|b", "match"), ("short",)),
                ),
            ),
        ],
        deeper.id: [block(deeper, 0, BlockContent(BlockKind.HEADING, text="Elision", heading_level=2))],
    }
    artifact = Artifact(AID, "Rust <for> Pythonistas", "SECRET BRIEF", "", 400, root.id, 12, 0, None, T0, T0)
    return artifact, [root, intro, deep, deeper], blocks


def test_markdown_structure() -> None:
    artifact, nodes, blocks = _doc()
    md = compile_markdown(artifact, Tree(nodes), blocks, METADATA)
    front, body = md.split("\n---\n", 1)
    assert front.split("\n") == [
        "---",
        'artifact_version: "12"',
        "generator: lace",
        "llm_provider: offline",
        'model: "x: \\"y\\""',
    ]
    assert "SECRET BRIEF" not in md
    assert md.endswith("\n") and not md.endswith("\n\n")
    lines = body.split("\n")
    headings = [line for line in lines if line.startswith("#")]
    assert headings == [
        "# Rust <for> Pythonistas",
        "## Introduction",
        "### Why Rust",
        "## Ownership & Borrowing",
        "### Lifetimes",
        "##### Elision",  # a level-2 heading block in a depth-2 node: min(2 + 1 + 2, 6)
    ]
    assert md.index(XSS) < md.index("### Why Rust")
    assert "\\# not a heading\n\\- not a list" in md
    assert "- fast\n- safe\n  and sound" in md
    assert "1. install\n2. build" in md
    assert '````rust\nfn main() {\n    println!("```");\n}\n````' in md
    assert "> Fearless\n> concurrency" in md
    assert "| Python | Rust |\n|---|---|\n| list | Vec<T> |\n| a\\|b | match |\n| short |  |" in md


def test_markdown_parses_back_to_the_same_outline() -> None:
    markdown_it = pytest.importorskip("markdown_it")
    artifact, nodes, blocks = _doc()
    md = compile_markdown(artifact, Tree(nodes), blocks, METADATA)
    body = md.split("\n---\n", 1)[1]
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(body)
    levels = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert levels == [
        ("h1", "Rust <for> Pythonistas"),
        ("h2", "Introduction"),
        ("h3", "Why Rust"),
        ("h2", "Ownership & Borrowing"),
        ("h3", "Lifetimes"),
        ("h5", "Elision"),
    ]
    types = [t.type for t in tokens]
    for expected in ("bullet_list_open", "ordered_list_open", "fence", "blockquote_open", "table_open"):
        assert expected in types
    fence = next(t for t in tokens if t.type == "fence")
    assert fence.info == "rust" and '"```"' in fence.content
    cells = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "td_open"]
    assert cells == ["list", "Vec<T>", "a|b", "match", "short", ""]


class _Collector(HTMLParser):
    VOID = frozenset({"meta", "br", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_structure_ids_and_escaping() -> None:
    artifact, nodes, blocks = _doc()
    page = compile_html(artifact, Tree(nodes), blocks, METADATA)
    assert page.startswith("<!DOCTYPE html>\n<html")
    assert page.endswith("</html>\n")
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.stack == []  # every element closed, properly nested

    metas = {a["name"]: a["content"] for t, a in parser.starts if t == "meta" and "name" in a}
    assert metas["lace:llm_provider"] == "offline"
    assert metas["lace:model"] == 'x: "y"'
    assert metas["lace:artifact_version"] == "12"

    sections = [a for t, a in parser.starts if t == "section"]
    assert [s["id"] for s in sections] == [f"n-{n.id}" for n in nodes]
    assert all(s["data-node-id"] == s["id"][2:] for s in sections)  # type: ignore[index]

    by_id = {a.get("data-block-id"): (t, a) for t, a in parser.starts if a.get("data-block-id")}
    for node_blocks in blocks.values():
        for b in node_blocks:
            tag, attrs = by_id[str(b.id)]
            assert attrs["id"] == f"b-{b.id}"
            assert attrs["data-node-id"] == str(b.node_id)
    tags = [t for t, _ in parser.starts]
    for tag in ("h1", "h2", "h3", "h5", "ul", "ol", "pre", "code", "blockquote", "table", "th", "td"):
        assert tag in tags
    assert ("code", {"class": "language-rust"}) in parser.starts

    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "<title>Rust &lt;for&gt; Pythonistas</title>" in page
    assert "<tr><td>short</td><td></td></tr>" in page  # short rows are padded to the header
    assert "Vec&lt;T&gt;" in page
    assert "SECRET BRIEF" not in page
    assert "<style>" in page


def test_json_export() -> None:
    artifact, nodes, blocks = _doc()
    text = compile_json(artifact, Tree(nodes), blocks, METADATA)
    data = json.loads(text)
    assert list(data) == ["artifact", "blocks", "metadata", "nodes"]
    assert data["metadata"] == METADATA
    assert data["artifact"]["id"] == str(AID) and data["artifact"]["version"] == 12
    assert data["artifact"]["create_time"] == T0.isoformat()
    assert [n["id"] for n in data["nodes"]] == [str(n.id) for n in nodes]
    assert data["nodes"][1]["state"] == "written" and data["nodes"][0]["parent_id"] is None
    intro_blocks = [b for b in data["blocks"] if b["node_id"] == str(nodes[1].id)]
    assert [b["ordinal"] for b in intro_blocks] == [0, 1, 2, 3, 4]
    assert intro_blocks[1]["content"] == {"kind": "heading", "text": "Why Rust", "heading_level": 1}
    assert len(data["blocks"]) == sum(len(v) for v in blocks.values())
    assert text == json.dumps(data, sort_keys=True, ensure_ascii=False, indent=2) + "\n"


def test_byte_identical_for_the_same_inputs() -> None:
    artifact, nodes, blocks = _doc()
    rnd = random.Random(5)
    shuffled_nodes = nodes[:]
    rnd.shuffle(shuffled_nodes)
    shuffled_blocks = {k: rnd.sample(v, len(v)) for k, v in reversed(list(blocks.items()))}
    reordered_meta = dict(reversed(list(METADATA.items())))
    for compile_fn in (compile_markdown, compile_html, compile_json):
        first = compile_fn(artifact, Tree(nodes), blocks, METADATA)
        second = compile_fn(artifact, Tree(shuffled_nodes), shuffled_blocks, reordered_meta)
        assert first.encode() == second.encode()


def test_empty_document() -> None:
    artifact, nodes, _ = _doc()
    tree = Tree(nodes[:1])
    assert compile_markdown(artifact, tree, {}, {}).endswith("---\n---\n\n# Rust <for> Pythonistas\n")
    assert f'<section id="n-{nodes[0].id}"' in compile_html(artifact, tree, {}, {})
    assert json.loads(compile_json(artifact, tree, {}, {}))["blocks"] == []


def test_a_reference_excerpt_leaves_out_markdown_heading_marks() -> None:
    from lace_engine.pipeline.references import excerpt

    assert excerpt("# Costs\n\nBattery pack #1 prices fell") == "Costs Battery pack #1 prices fell"
    assert excerpt(" ".join(["w"] * 41)) == " ".join(["w"] * 40) + " [...]"
