"""Builds a Pandoc AST (the JSON that `pandoc -f json` reads) from the IR. Pure: plain data in, plain data out.

The binary formats (DOCX, ODT, EPUB, PDF) are rendered by Pandoc from this AST, never from re-parsed
Markdown, so no text can turn into structure it was not (a paragraph starting with "# " stays a
paragraph) and every block keeps its identity:

- the root node's title is the document's title (`meta.title`, shown by every writer as the title
  block); every other node is a Header at `node_heading_level`, identifier `n-<node id>`;
- every block is a Div with identifier `b-<block id>` and attributes `data-block-id` and
  `data-node-id` (as in the HTML export), holding the block's own elements;
- citations are superscript `[n]` links to `#ref-n`, and the document ends with a "References"
  section (identifier `references`) whose items carry the identifiers `ref-n`, numbered as in every
  other format (`pipeline/references.py`);
- the compiler's metadata (generator, artifact id and version, provider, notice) is in `meta` as
  strings, with `lang` and an `identifier` (the artifact's URN, which EPUB requires).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from lace_engine.domain import Artifact, Block, BlockKind, Node, Passage
from lace_engine.pipeline.compiler import (
    _ordered_blocks,
    _title,
    block_heading_level,
    document_references,
    node_heading_level,
    reference_label,
)
from lace_engine.pipeline.references import References
from lace_engine.pipeline.tree import Tree

# The pandoc-types version of the pandoc that pypandoc-binary ships (pandoc 3.9); pandoc refuses a
# document whose major.minor differs.
PANDOC_API_VERSION = (1, 23, 1, 1)

REFERENCES_TITLE = "References"

Json = dict[str, Any]
Attr = list[Any]  # [identifier, [classes], [[key, value], ...]]
Passages = Mapping[UUID, Passage]
_NO_PASSAGES: Passages = {}


def attr(identifier: str = "", classes: Sequence[str] = (), pairs: Sequence[tuple[str, str]] = ()) -> Attr:
    return [identifier, list(classes), [[k, v] for k, v in pairs]]


def _el(tag: str, content: Any = None) -> Json:
    return {"t": tag} if content is None else {"t": tag, "c": content}


def inlines(text: str) -> list[Json]:
    """Text as inlines: words are Str, runs of spaces one Space, each line break a LineBreak."""
    out: list[Json] = []
    for i, line in enumerate(text.strip().split("\n")):
        if i:
            out.append(_el("LineBreak"))
        for j, word in enumerate(line.split()):
            if j:
                out.append(_el("Space"))
            out.append(_el("Str", word))
    return out


def one_line(text: str) -> list[Json]:
    """Text on one line (titles, headings, cells, reference labels): every whitespace run a Space."""
    return inlines(" ".join(text.split()))


def citation_marks(numbers: Sequence[int]) -> list[Json]:
    """Superscript [n] links to the reference list, as the HTML export shows them."""
    return [
        _el("Superscript", [_el("Link", [attr(classes=("cite",)), [_el("Str", f"[{n}]")], [f"#ref-{n}", ""]])])
        for n in numbers
    ]


def _sources_para(marks: list[Json]) -> Json:
    return _el("Para", [_el("Str", "Sources:"), _el("Space"), *marks])


def _plain_cell(text: str) -> list[Any]:
    return [attr(), _el("AlignDefault"), 1, 1, [_el("Plain", one_line(text))] if text.strip() else []]


def _row(cells: Sequence[str], width: int) -> list[Any]:
    padded = [*cells, *[""] * (width - len(cells))]
    return [attr(), [_plain_cell(c) for c in padded]]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Json | None:
    width = max([len(header), *(len(r) for r in rows)])
    if width == 0:
        return None
    colspecs = [[_el("AlignDefault"), _el("ColWidthDefault")] for _ in range(width)]
    head = [attr(), [_row(header, width)] if header else []]
    body = [attr(), 0, [], [_row(r, width) for r in rows]]
    return _el("Table", [attr(), [None, []], colspecs, head, [body], [attr(), []]])


def _code_language(language: str) -> str:
    return re.sub(r"[^A-Za-z0-9_+.#-]", "", language)


def block_elements(block: Block, depth: int, marks: list[Json]) -> list[Json]:
    """The Pandoc blocks of one IR block (without its Div), its citation marks where a reader sees them."""
    content = block.content
    kind = content.kind
    if kind is BlockKind.HEADING:
        level = block_heading_level(depth, content.heading_level)
        return [_el("Header", [level, attr(), [*one_line(content.text), *marks]])]
    if kind in (BlockKind.BULLET_LIST, BlockKind.ORDERED_LIST):
        items = [[_el("Plain", inlines(item))] for item in content.items]
        if kind is BlockKind.BULLET_LIST:
            out = [_el("BulletList", items)]
        else:
            out = [_el("OrderedList", [[1, _el("Decimal"), _el("Period")], items])]
        return out + ([_el("Para", marks)] if marks else [])
    if kind is BlockKind.CODE:
        language = _code_language(content.language)
        code = _el("CodeBlock", [attr(classes=(language,) if language else ()), content.text.rstrip("\n")])
        return [code] + ([_sources_para(marks)] if marks else [])
    if kind is BlockKind.QUOTE:
        paras = [p for p in re.split(r"\n\s*\n", content.text.strip()) if p.strip()] or [""]
        inner = [_el("Para", inlines(p)) for p in paras]
        inner[-1]["c"].extend(marks)
        return [_el("BlockQuote", inner)]
    if kind is BlockKind.TABLE:
        table = _table(content.table_header, content.table_rows)
        if table is None:
            return [_sources_para(marks)] if marks else []
        return [table] + ([_sources_para(marks)] if marks else [])
    return [_el("Para", [*inlines(content.text), *marks])]


def block_div(block: Block, depth: int, refs: References) -> Json:
    """One IR block as a Div that carries its ids, like the HTML export's elements."""
    ident = attr(f"b-{block.id}", (), (("data-block-id", str(block.id)), ("data-node-id", str(block.node_id))))
    return _el("Div", [ident, block_elements(block, depth, citation_marks(refs.numbers(block)))])


def node_header(node: Node, title: str) -> Json:
    ident = attr(f"n-{node.id}", (), (("data-node-id", str(node.id)),))
    return _el("Header", [node_heading_level(node.depth), ident, one_line(title)])


def reference_section(refs: References) -> list[Json]:
    """A "References" section at the level of the top sections, one numbered item per cited passage."""
    if not refs.entries:
        return []
    items = []
    for r in refs.entries:
        span_attr = attr(f"ref-{r.number}", (), (("data-passage-id", str(r.passage_id)),))
        items.append([_el("Plain", [_el("Span", [span_attr, one_line(reference_label(r.passage))])])])
    header = _el("Header", [node_heading_level(1), attr("references"), one_line(REFERENCES_TITLE)])
    return [header, _el("OrderedList", [[1, _el("Decimal"), _el("Period")], items])]


def _meta_string(value: str) -> Json:
    return _el("MetaString", value)


def document_meta(artifact: Artifact, title: str, metadata: Mapping[str, str]) -> Json:
    meta: Json = {k: _meta_string(metadata[k]) for k in sorted(metadata)}
    meta["title"] = _el("MetaInlines", one_line(title))
    meta["lang"] = _meta_string("en")
    meta["identifier"] = _meta_string(f"urn:uuid:{artifact.id}")
    return meta


def document_ast(artifact: Artifact, tree: Tree, blocks_by_node: Mapping[UUID, Sequence[Block]],
                 metadata: Mapping[str, str], passages: Passages = _NO_PASSAGES) -> Json:
    """The whole document as a Pandoc AST: meta, then the nodes in preorder with their blocks, then
    the reference list. The same inputs always give an equal AST."""
    refs = document_references(tree, blocks_by_node, passages)
    root = tree.root
    body: list[Json] = []
    for node in tree.preorder():
        if node.id != root.id:
            body.append(node_header(node, _title(node)))
        body.extend(block_div(b, node.depth, refs) for b in _ordered_blocks(blocks_by_node, node.id))
    body.extend(reference_section(refs))
    return {
        "pandoc-api-version": list(PANDOC_API_VERSION),
        "meta": document_meta(artifact, _title(root, artifact.title), metadata),
        "blocks": body,
    }


def _first_inlines(blocks: list[Json]) -> list[Json] | None:
    """The inline list a reader meets first in these blocks (a paragraph's, a heading's, a list
    item's, a quote's, a table cell's), or None when they hold no text (a code block)."""
    for b in blocks:
        tag, c = b["t"], b.get("c", [])
        if tag in ("Para", "Plain"):
            inls: list[Json] = c
            return inls
        if tag == "Header":
            header_inls: list[Json] = c[2]
            return header_inls
        found: list[Json] | None = None
        if tag in ("BlockQuote", "Div"):
            found = _first_inlines(c if tag == "BlockQuote" else c[1])
        elif tag == "BulletList":
            found = next((f for item in c if (f := _first_inlines(item)) is not None), None)
        elif tag == "OrderedList":
            found = next((f for item in c[1] if (f := _first_inlines(item)) is not None), None)
        elif tag == "Table":
            rows = [*c[3][1], *(r for body in c[4] for r in body[3])]
            found = next((f for row in rows for cell in row[1] if (f := _first_inlines(cell[4])) is not None), None)
        if found is not None:
            return found
    return None


def with_span_anchors(ast: Json) -> Json:
    """The AST with each block's identifier on an empty Span opening its first text instead of on its
    Div, for writers that keep Span identifiers but drop Div ones (ODT: bookmarks). A block with no
    text (a code block) keeps the identifier on its Div. Returns a new AST; `ast` is not changed."""
    out = copy.deepcopy(ast)
    for block in out["blocks"]:
        if block["t"] != "Div" or not block["c"][0][0].startswith("b-"):
            continue
        target = _first_inlines(block["c"][1])
        if target is None:
            continue
        target.insert(0, _el("Span", [attr(block["c"][0][0]), []]))
        block["c"][0][0] = ""
    return out
