"""The Pandoc AST built from the IR (pipeline/pandoc_ast.py): structure, ids, citations, meta. No I/O."""

from __future__ import annotations

import random
from typing import Any

from lace_engine.domain import BlockKind
from lace_engine.pipeline.pandoc_ast import PANDOC_API_VERSION, document_ast, inlines, with_span_anchors
from lace_engine.pipeline.tree import Tree
from tests.support.cited_doc import CODE, HEADER, METADATA, P1, P2, PASSAGES, ROWS, cited_doc


def text_of(inls: list[dict[str, Any]]) -> str:
    """The plain text of inlines, as a reader sees it."""
    out = []
    for el in inls:
        t, c = el["t"], el.get("c", [])
        if t == "Str":
            out.append(c)
        elif t == "Space":
            out.append(" ")
        elif t == "LineBreak":
            out.append("\n")
        elif t in ("Superscript", "Emph", "Strong"):
            out.append(text_of(c))
        elif t in ("Link", "Span"):
            out.append(text_of(c[1]))
    return "".join(out)


def walk(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every block element, depth first in document order (Divs and quotes opened)."""
    out: list[dict[str, Any]] = []
    for b in blocks:
        out.append(b)
        if b["t"] == "Div":
            out.extend(walk(b["c"][1]))
        elif b["t"] == "BlockQuote":
            out.extend(walk(b["c"]))
    return out


def ast() -> dict[str, Any]:
    doc = cited_doc()
    return document_ast(doc.artifact, doc.tree, doc.blocks, METADATA, PASSAGES)


def test_version_meta_and_title() -> None:
    a = ast()
    assert a["pandoc-api-version"] == list(PANDOC_API_VERSION)
    meta = a["meta"]
    assert text_of(meta["title"]["c"]) == "Rust <for> Pythonistas"
    assert meta["title"]["t"] == "MetaInlines"
    for key, value in METADATA.items():
        assert meta[key] == {"t": "MetaString", "c": value}
    assert meta["identifier"]["c"] == f"urn:uuid:{cited_doc().artifact.id}"
    assert meta["lang"]["c"] == "en"
    assert "SECRET BRIEF" not in repr(a)


def test_headers_levels_ids_and_order() -> None:
    doc = cited_doc()
    headers = [b["c"] for b in walk(ast()["blocks"]) if b["t"] == "Header"]
    got = [(level, ident[0], text_of(inls)) for level, ident, inls in headers]
    by_title = {n.title: n for n in doc.nodes}
    block_id = {b.content.text: b.id for bs in doc.blocks.values() for b in bs}
    # The root's title is the document title (meta), not a repeated level-1 header.
    assert got == [
        (2, f"n-{by_title['Introduction'].id}", "Introduction"),
        (3, "", "Why Rust"),
        (2, f"n-{by_title['Ownership & Borrowing'].id}", "Ownership & Borrowing"),
        (3, f"n-{by_title['Lifetimes'].id}", "Lifetimes"),
        (5, "", "Elision"),
        (2, "references", "References"),
    ]
    # A heading block's id is on its Div.
    divs = {b["c"][0][0]: b["c"][1] for b in walk(ast()["blocks"]) if b["t"] == "Div"}
    assert divs[f"b-{block_id['Why Rust']}"][0]["t"] == "Header"
    assert headers[0][1][2] == [["data-node-id", str(by_title["Introduction"].id)]]


def test_every_block_is_a_div_with_its_ids_in_document_order() -> None:
    doc = cited_doc()
    divs = [b["c"] for b in ast()["blocks"] if b["t"] == "Div"]
    assert [d[0][0] for d in divs] == [f"b-{b.id}" for b in doc.in_order()]
    for (ident, _classes, pairs), block in zip((d[0] for d in divs), doc.in_order(), strict=True):
        assert ident == f"b-{block.id}"
        assert dict(pairs) == {"data-block-id": str(block.id), "data-node-id": str(block.node_id)}
    kinds = [d[1][0]["t"] for d in divs]
    assert kinds == ["Para", "Para", "Header", "Para", "BulletList", "OrderedList", "CodeBlock", "BlockQuote",
                     "Table", "Header", "Para"]


def test_text_stays_text() -> None:
    divs = [b["c"][1] for b in ast()["blocks"] if b["t"] == "Div"]
    para = divs[3][0]
    assert para["t"] == "Para"
    assert text_of(para["c"]) == "# not a heading\n- not a list"  # a paragraph, never re-parsed
    assert inlines("  a   b \n c ") == [{"t": "Str", "c": "a"}, {"t": "Space"}, {"t": "Str", "c": "b"},
                                       {"t": "LineBreak"}, {"t": "Str", "c": "c"}]


def test_code_table_and_lists() -> None:
    els = walk(ast()["blocks"])
    code = next(e["c"] for e in els if e["t"] == "CodeBlock")
    assert code == [["", ["rust"], []], CODE]
    table = next(e["c"] for e in els if e["t"] == "Table")
    _attr, _caption, colspecs, head, bodies, _foot = table
    assert len(colspecs) == 2

    def cells(rows: list[Any]) -> list[list[str]]:
        return [[text_of(cell[4][0]["c"]) if cell[4] else "" for cell in row[1]] for row in rows]

    assert cells(head[1]) == [list(HEADER)]
    assert cells(bodies[0][3]) == [list(r) + [""] * (2 - len(r)) for r in ROWS]
    bullets = next(e["c"] for e in els if e["t"] == "BulletList")
    assert [text_of(item[0]["c"]) for item in bullets] == ["fast", "safe and sound"]
    ordered = next(e["c"] for e in els if e["t"] == "OrderedList")
    assert ordered[0] == [1, {"t": "Decimal"}, {"t": "Period"}]


def test_citations_link_to_the_numbered_references() -> None:
    doc = cited_doc()
    a = ast()
    links = [e for e in _inline_walk(a["blocks"]) if e["t"] == "Link"]
    targets = [link["c"][2][0] for link in links]
    # P1 is cited first (intro paragraph), so it is [1]; the table cites P2 then P1.
    assert targets == ["#ref-1", "#ref-1", "#ref-2", "#ref-1", "#ref-2"]
    assert [text_of(link["c"][1]) for link in links] == ["[1]", "[1]", "[2]", "[1]", "[2]"]
    assert all(link["c"][0][1] == ["cite"] for link in links)
    refs = a["blocks"][-1]
    assert refs["t"] == "OrderedList"
    spans = [item[0]["c"][0]["c"] for item in refs["c"][1]]
    assert [s[0][0] for s in spans] == ["ref-1", "ref-2"]
    assert [dict(s[0][2])["data-passage-id"] for s in spans] == [str(P1), str(P2)]
    assert text_of(spans[0][1]).startswith("The Rust Book, characters 0-74:")
    # Where a table or code block cites, a "Sources:" paragraph follows it inside the block's Div.
    table_div = next(b for b in a["blocks"] if b["t"] == "Div" and b["c"][1][0]["t"] == "Table")
    assert text_of(table_div["c"][1][1]["c"]) == "Sources: [2][1]"
    assert doc.in_order()[8].content.kind is BlockKind.TABLE


def _inline_walk(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def inl(xs: list[dict[str, Any]]) -> None:
        for x in xs:
            out.append(x)
            if x["t"] in ("Superscript", "Emph", "Strong"):
                inl(x["c"])
            elif x["t"] in ("Link", "Span"):
                inl(x["c"][1])

    for b in walk(blocks):
        if b["t"] in ("Para", "Plain"):
            inl(b["c"])
        elif b["t"] == "Header":
            inl(b["c"][2])
    return out


def test_unknown_passages_and_the_empty_document() -> None:
    doc = cited_doc()
    plain = document_ast(doc.artifact, doc.tree, doc.blocks, METADATA)  # passages unknown: still numbered
    items = plain["blocks"][-1]["c"][1]
    assert len(items) == 2
    assert "no longer available" in text_of(items[0][0]["c"])
    bare = {k: [b for b in v if not b.content.citations] for k, v in doc.blocks.items()}
    assert all(b["t"] != "Header" or b["c"][1][0] != "references"
               for b in document_ast(doc.artifact, doc.tree, bare, METADATA)["blocks"])
    empty = document_ast(doc.artifact, Tree(doc.nodes[:1]), {}, {})
    assert empty["blocks"] == []
    assert text_of(empty["meta"]["title"]["c"]) == "Rust <for> Pythonistas"


def test_same_inputs_same_ast() -> None:
    doc = cited_doc()
    rnd = random.Random(3)
    nodes = doc.nodes[:]
    rnd.shuffle(nodes)
    blocks = {k: rnd.sample(v, len(v)) for k, v in reversed(list(doc.blocks.items()))}
    again = document_ast(doc.artifact, Tree(nodes), blocks, dict(reversed(list(METADATA.items()))), PASSAGES)
    assert again == ast()


def test_span_anchors_move_block_ids_onto_their_first_text() -> None:
    doc = cited_doc()
    original = ast()
    moved = with_span_anchors(original)
    assert original == ast()  # not changed in place
    divs = [b["c"] for b in moved["blocks"] if b["t"] == "Div"]
    anchors: list[str] = []
    for (ident, _classes, pairs), inner in divs:
        first = _first_span(inner)
        if [b["t"] for b in inner] == ["CodeBlock"]:  # no text to open: the id stays on the Div
            assert ident.startswith("b-") and first is None
            anchors.append(ident)
        else:  # a cited code block's anchor opens its "Sources:" line
            assert ident == "" and first is not None and first["c"][1] == []
            anchors.append(first["c"][0][0])
        assert dict(pairs)["data-block-id"]
    assert anchors == [f"b-{b.id}" for b in doc.in_order()]


def _first_span(blocks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The block anchor opening these blocks' first text, if there is one."""
    head: dict[str, Any] = blocks[0] if blocks else {"t": ""}
    if head["t"] == "Table":  # its first header cell
        first: dict[str, Any] = head["c"][3][1][0][1][0][4][0]["c"][0]
    elif head["t"] in ("BulletList", "OrderedList"):  # its first item
        items = head["c"] if head["t"] == "BulletList" else head["c"][1]
        first = items[0][0]["c"][0]
    else:
        walked = _inline_walk(blocks)
        if not walked:
            return None
        first = walked[0]
    return first if first["t"] == "Span" and first["c"][0][0].startswith("b-") else None
