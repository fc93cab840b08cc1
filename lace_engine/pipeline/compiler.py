"""Compiles the IR into Markdown, HTML and JSON. Pure: same inputs give byte-identical output."""

from __future__ import annotations

import dataclasses
import enum
import html
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from lace_engine.domain import Artifact, Block, BlockContent, BlockKind, Node, Passage
from lace_engine.pipeline.references import References, excerpt, number_references
from lace_engine.pipeline.tree import Tree

MAX_HEADING = 6

BlocksByNode = Mapping[UUID, Sequence[Block]]
Passages = Mapping[UUID, Passage]
_NO_PASSAGES: Passages = {}


def node_heading_level(depth: int) -> int:
    """The heading level of a node's title: the root is h1, depth d is h(d+1), at most h6."""
    return min(depth + 1, MAX_HEADING)


def block_heading_level(node_depth: int, heading_level: int) -> int:
    """The level of a heading block, counted below its node's own heading, at most h6."""
    return min(node_depth + 1 + max(heading_level, 1), MAX_HEADING)


def _ordered_blocks(blocks_by_node: BlocksByNode, node_id: UUID) -> list[Block]:
    return sorted(blocks_by_node.get(node_id, ()), key=lambda b: (b.ordinal, b.id.int))


def _title(node: Node, fallback: str = "") -> str:
    return " ".join(node.title.split()) or fallback or "Untitled"


def document_blocks(tree: Tree, blocks_by_node: BlocksByNode) -> list[Block]:
    """Every block in reading order: nodes in preorder, each node's blocks by ordinal."""
    return [b for n in tree.preorder() for b in _ordered_blocks(blocks_by_node, n.id)]


def document_references(tree: Tree, blocks_by_node: BlocksByNode, passages: Passages) -> References:
    """The numbered references of the document, in the order a reader meets them."""
    return number_references(document_blocks(tree, blocks_by_node), passages)


def reference_label(passage: Passage | None) -> str:
    """How a reference list names a cited passage: its source's title and its opening words."""
    if passage is None:
        return "(a passage of a source that is no longer available)"
    title = " ".join(passage.source_title.split()) or "Untitled source"
    return f"{title}, characters {passage.start_offset}-{passage.end_offset}: \u201c{excerpt(passage.text)}\u201d"


# --------------------------------------------------------------------------- Markdown

# Plain YAML scalars that a YAML 1.1 or 1.2 reader would not turn into a bool, null or number.
_YAML_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_YAML_SPECIAL = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"})


def _yaml_scalar(value: str) -> str:
    if _YAML_PLAIN.fullmatch(value) and value.lower() not in _YAML_SPECIAL:
        return value
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value, ensure_ascii=False)


# Lines of prose that Markdown would otherwise read as structure (headings, quotes, lists,
# fences, rules, tables), so that a paragraph always stays a paragraph.
_MD_BLOCK_START = re.compile(r"^(\s*)(#|>|```|~~~|[-*+](?=\s|$)|\d+[.)](?=\s|$)|={3,}|-{3,}|\|)")


def _md_guard(text: str) -> str:
    return "\n".join(_MD_BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), line) for line in text.split("\n"))


def _md_inline(text: str) -> str:
    return " ".join(text.split())


def _md_cell(text: str) -> str:
    return _md_inline(text).replace("\\", "\\\\").replace("|", "\\|")


def _md_item(text: str, indent: int) -> str:
    # Continuation lines are indented under the item so they stay inside it.
    lines = _md_guard(text.strip()).split("\n")
    return ("\n" + " " * indent).join(line.rstrip() for line in lines)


def _md_block(content: BlockContent, depth: int) -> str:
    kind = content.kind
    if kind is BlockKind.HEADING:
        return "#" * block_heading_level(depth, content.heading_level) + " " + _md_inline(content.text)
    if kind is BlockKind.BULLET_LIST:
        return "\n".join("- " + _md_item(item, 2) for item in content.items)
    if kind is BlockKind.ORDERED_LIST:
        return "\n".join(f"{i}. " + _md_item(item, len(str(i)) + 2) for i, item in enumerate(content.items, 1))
    if kind is BlockKind.CODE:
        longest = max((len(run) for run in re.findall(r"`+", content.text)), default=0)
        fence = "`" * max(3, longest + 1)
        language = re.sub(r"[^A-Za-z0-9_+.#-]", "", content.language)
        return f"{fence}{language}\n{content.text.rstrip(chr(10))}\n{fence}"
    if kind is BlockKind.QUOTE:
        return "\n".join(("> " + line).rstrip() for line in _md_guard(content.text.strip()).split("\n"))
    if kind is BlockKind.TABLE:
        width = max([len(content.table_header), *(len(r) for r in content.table_rows)])
        if width == 0:
            return ""
        header = list(content.table_header) + [""] * (width - len(content.table_header))
        lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * width]
        for row in content.table_rows:
            cells = list(row) + [""] * (width - len(row))
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        return "\n".join(lines)
    return _md_guard(content.text.strip())


def _md_cited(block: Block, rendered: str, refs: References) -> str:
    marks = "".join(f"[^{n}]" for n in refs.numbers(block))
    if not marks:
        return rendered
    if block.content.kind in (BlockKind.PARAGRAPH, BlockKind.HEADING, BlockKind.QUOTE, BlockKind.BULLET_LIST,
                              BlockKind.ORDERED_LIST):
        return rendered + marks
    return rendered + "\n\nSources: " + marks  # a fence or a table row cannot carry a marker


def compile_markdown(artifact: Artifact, tree: Tree, blocks_by_node: BlocksByNode, metadata: Mapping[str, str],
                     passages: Passages = _NO_PASSAGES) -> str:
    """GFM with YAML front matter holding `metadata` and footnotes for citations; the brief is not printed."""
    refs = document_references(tree, blocks_by_node, passages)
    parts: list[str] = ["---"]
    parts.extend(f"{_yaml_scalar(k)}: {_yaml_scalar(metadata[k])}" for k in sorted(metadata))
    parts.append("---")
    out = ["\n".join(parts)]
    root_id = tree.root.id
    for node in tree.preorder():
        title = _title(node, artifact.title if node.id == root_id else "")
        out.append("#" * node_heading_level(node.depth) + " " + title)
        for block in _ordered_blocks(blocks_by_node, node.id):
            rendered = _md_block(block.content, node.depth)
            if rendered:
                out.append(_md_cited(block, rendered, refs))
    out.extend(f"[^{r.number}]: {_md_inline(reference_label(r.passage))}" for r in refs.entries)
    return "\n\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """\
body{font-family:Georgia,"Times New Roman",serif;line-height:1.6;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#1f2328;background:#fff}
h1,h2,h3,h4,h5,h6{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;line-height:1.25;\
margin:1.6em 0 .6em}
pre{background:#f6f8fa;padding:.8rem 1rem;overflow-x:auto;border-radius:6px;line-height:1.4}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
blockquote{margin:1em 0;padding:0 1em;border-left:.25em solid #d0d7de;color:#57606a}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #d0d7de;padding:.35em .7em;text-align:left}
th{background:#f6f8fa}"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _html_text(text: str) -> str:
    # Paragraph breaks inside one block become <br> pairs; escaping comes first.
    return "<br>\n".join(_esc(line) for line in text.strip().split("\n"))


def _html_marks(block: Block, refs: References) -> str:
    return "".join(f'<sup class="cite"><a href="#ref-{n}">[{n}]</a></sup>' for n in refs.numbers(block))


def _html_block(block: Block, depth: int, refs: References) -> str:
    content = block.content
    marks = _html_marks(block, refs)
    attrs = f'id="b-{block.id}" data-block-id="{block.id}" data-node-id="{block.node_id}"'
    kind = content.kind
    if kind is BlockKind.HEADING:
        level = block_heading_level(depth, content.heading_level)
        return f"<h{level} {attrs}>{_esc(_md_inline(content.text))}{marks}</h{level}>"
    if kind in (BlockKind.BULLET_LIST, BlockKind.ORDERED_LIST):
        tag = "ul" if kind is BlockKind.BULLET_LIST else "ol"
        items = "".join(f"<li>{_html_text(item)}</li>" for item in content.items)
        return f"<{tag} {attrs}>{items}</{tag}>" + (f"<p>{marks}</p>" if marks else "")
    if kind is BlockKind.CODE:
        language = re.sub(r"[^A-Za-z0-9_+.#-]", "", content.language)
        cls = f' class="language-{_esc(language)}"' if language else ""
        return f"<pre {attrs}><code{cls}>{_esc(content.text.rstrip(chr(10)))}</code></pre>" + (
            f"<p>Sources: {marks}</p>" if marks else "")
    if kind is BlockKind.QUOTE:
        paras = [p for p in re.split(r"\n\s*\n", content.text.strip()) if p.strip()]
        inner = "".join(f"<p>{_html_text(p)}</p>" for p in paras)
        return f"<blockquote {attrs}>{inner}{marks}</blockquote>"
    if kind is BlockKind.TABLE:
        width = max([len(content.table_header), *(len(r) for r in content.table_rows)])
        head = ""
        if content.table_header:
            cells = [*content.table_header, *[""] * (width - len(content.table_header))]
            head = "<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in cells) + "</tr></thead>"
        rows = "".join(
            "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in [*row, *[""] * (width - len(row))]) + "</tr>"
            for row in content.table_rows
        )
        return f"<table {attrs}>{head}<tbody>{rows}</tbody></table>" + (
            f"<p>Sources: {marks}</p>" if marks else "")
    return f"<p {attrs}>{_html_text(content.text)}{marks}</p>"


def compile_html(artifact: Artifact, tree: Tree, blocks_by_node: BlocksByNode, metadata: Mapping[str, str],
                 passages: Passages = _NO_PASSAGES) -> str:
    """A standalone HTML5 page; every node is a <section>, every block carries its ids, citations
    link to an anchored reference list."""
    refs = document_references(tree, blocks_by_node, passages)
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
    ]
    head.extend(f'<meta name="lace:{_esc(k)}" content="{_esc(metadata[k])}">' for k in sorted(metadata))
    head += [
        f"<title>{_esc(_md_inline(artifact.title) or 'Untitled')}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f'<article data-artifact-id="{artifact.id}">',
    ]
    body: list[str] = []
    root = tree.root

    # Iterative, with explicit closing tags, so that deep trees cannot hit the recursion limit.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            body.append("</section>")
            continue
        title = _title(node, artifact.title if node.id == root.id else "")
        level = node_heading_level(node.depth)
        body.append(f'<section id="n-{node.id}" data-node-id="{node.id}">')
        body.append(f"<h{level}>{_esc(title)}</h{level}>")
        body.extend(_html_block(b, node.depth, refs) for b in _ordered_blocks(blocks_by_node, node.id))
        stack.append((node, True))
        stack.extend((kid, False) for kid in reversed(tree.children(node.id)))
    if refs.entries:
        body.append('<section id="references"><h2>References</h2><ol>')
        body.extend(f'<li id="ref-{r.number}" data-passage-id="{r.passage_id}">{_esc(reference_label(r.passage))}</li>'
                    for r in refs.entries)
        body.append("</ol></section>")
    return "\n".join([*head, *body, "</article>", "</body>", "</html>"]) + "\n"


# --------------------------------------------------------------------------- JSON


def _jsonable(value: Any) -> Any:
    if isinstance(value, BlockContent):
        return value.to_json()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def compile_json(artifact: Artifact, tree: Tree, blocks_by_node: BlocksByNode, metadata: Mapping[str, str],
                 passages: Passages = _NO_PASSAGES) -> str:
    """The IR as JSON: metadata, artifact, nodes in document order, their blocks and the numbered
    references, keys sorted."""
    nodes = list(tree.preorder())
    blocks = document_blocks(tree, blocks_by_node)
    refs = number_references(blocks, passages)
    doc: dict[str, Any] = {
        "metadata": dict(metadata),
        "artifact": _jsonable(artifact),
        "nodes": [_jsonable(n) for n in nodes],
        "blocks": [_jsonable(b) for b in blocks],
    }
    if refs.entries:
        doc["references"] = [
            {"number": r.number, "passage_id": str(r.passage_id),
             **({"source_id": str(r.passage.source_id), "source_title": r.passage.source_title,
                 "start_offset": r.passage.start_offset, "end_offset": r.passage.end_offset,
                 "text": r.passage.text} if r.passage else {})}
            for r in refs.entries
        ]
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
