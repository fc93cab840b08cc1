"""DOCX, ODT, EPUB and PDF rendered by the real pandoc (and Typst) from the Pandoc AST, opened with
independent readers (python-docx, zipfile + XML, ebooklib, pypdf) and checked against the IR.
No database: the IR is built directly (tests/support/cited_doc.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import posixpath
import stat
import subprocess
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import docx
import ebooklib
import pypdf
import pytest
from ebooklib import epub

from lace_engine.domain import BlockKind
from lace_engine.errors import ExportFailed
from lace_engine.export.formats import file_name, slug
from lace_engine.export.pandoc import Exporter, ExportLimits, pandoc_path
from lace_engine.pipeline.pandoc_ast import PANDOC_API_VERSION, document_ast
from tests.helpers import in_order
from tests.support.cited_doc import CODE, HEADER, METADATA, PASSAGES, ROWS, T0, cited_doc

EPOCH = int(T0.timestamp())
SECTIONS = ["Introduction", "Why Rust", "Ownership & Borrowing", "Lifetimes", "Elision", "References"]
PARAGRAPHS = ["Opening words of the guide.", "Memory safety matters to everyone.", "Lifetimes are mostly inferred."]
REF_1 = "The Rust Book, characters 0-74"
REF_2 = "Notes on Lifetimes, characters 10-46"


def the_ast() -> dict[str, Any]:
    doc = cited_doc()
    return document_ast(doc.artifact, doc.tree, doc.blocks, METADATA, PASSAGES)


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    async def render_all() -> dict[str, bytes]:
        exporter = Exporter()
        return {fmt: await exporter.render(fmt, the_ast(), source_date_epoch=EPOCH)
                for fmt in ("docx", "odt", "epub", "pdf")}
    return asyncio.run(render_all())


def test_the_ast_version_is_the_shipped_pandocs() -> None:
    out = subprocess.run([pandoc_path(), "-f", "markdown", "-t", "json"], input=b"x", capture_output=True,
                         check=True)
    assert tuple(json.loads(out.stdout)["pandoc-api-version"]) == PANDOC_API_VERSION


def test_docx(rendered: dict[str, bytes]) -> None:
    doc = docx.Document(io.BytesIO(rendered["docx"]))
    paras = [(p.style.name if p.style is not None else "", p.text) for p in doc.paragraphs]
    assert paras[0] == ("Title", "Rust <for> Pythonistas")
    headings = [(style, text) for style, text in paras if style.startswith("Heading")]
    assert headings == [("Heading 2", "Introduction"), ("Heading 3", "Why Rust"),
                        ("Heading 2", "Ownership & Borrowing"), ("Heading 3", "Lifetimes"), ("Heading 5", "Elision"),
                        ("Heading 2", "References")]
    texts = [text for _, text in paras]
    body = "\n".join(texts)
    assert in_order(body, ["Opening words", "Introduction", "Memory safety matters to everyone.[1]", "Why Rust",
                           "# not a heading\n- not a list", "fast", "install", "Ownership", CODE, "Sources: [1]",
                           "Fearless concurrency", "Sources: [2][1]", "Lifetimes", "Elision", "inferred.[2]",
                           "References", REF_1, REF_2])
    assert ("Source Code", CODE) in paras
    assert [[c.text for c in row.cells] for row in doc.tables[0].rows] == [list(HEADER), *[
        [*r, *[""] * (2 - len(r))] for r in ROWS]]
    assert doc.core_properties.title == "Rust <for> Pythonistas"
    assert doc.core_properties.created == T0
    xml = zipfile.ZipFile(io.BytesIO(rendered["docx"])).read("word/document.xml").decode()
    # Every block and node id is a bookmark; citations are internal links to the reference bookmarks.
    ir = cited_doc()
    for block in ir.in_order():
        assert f'w:name="b-{block.id}"' in xml
    for node in ir.nodes[1:]:
        assert f'w:name="n-{node.id}"' in xml
    assert 'w:name="ref-1"' in xml and 'w:name="ref-2"' in xml
    assert xml.count('w:anchor="ref-1"') == 3 and xml.count('w:anchor="ref-2"') == 2
    custom = zipfile.ZipFile(io.BytesIO(rendered["docx"])).read("docProps/custom.xml").decode()
    assert 'name="artifact_version"><vt:lpwstr>12<' in custom


ODF = {
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
}


def odf_text(el: ElementTree.Element) -> str:
    out = [el.text or ""]
    for child in el:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "s":
            out.append(" " * int(child.get(f"{{{ODF['text']}}}c", "1")))
        elif tag == "line-break":
            out.append("\n")
        elif tag == "tab":
            out.append("\t")
        else:
            out.append(odf_text(child))
        out.append(child.tail or "")
    return "".join(out)


def test_odt(rendered: dict[str, bytes]) -> None:
    archive = zipfile.ZipFile(io.BytesIO(rendered["odt"]))
    assert archive.read("mimetype") == b"application/vnd.oasis.opendocument.text"
    root = ElementTree.fromstring(archive.read("content.xml"))
    text_ns = f"{{{ODF['text']}}}"
    body = root.find("office:body/office:text", ODF)
    assert body is not None
    headings = [(h.get(f"{text_ns}outline-level"), odf_text(h)) for h in body.iter(f"{text_ns}h")]
    assert headings == [("2", "Introduction"), ("3", "Why Rust"), ("2", "Ownership & Borrowing"),
                        ("3", "Lifetimes"), ("5", "Elision"), ("2", "References")]
    paragraphs = [odf_text(p) for p in body.iter() if p.tag in (f"{text_ns}p", f"{text_ns}h")]
    flat = "\n".join(paragraphs)
    assert in_order(flat, ["Rust <for> Pythonistas", "Opening words", "Memory safety matters to everyone.[1]",
                           "Why Rust", "# not a heading\n- not a list", "Ownership", "fn main() {",
                           'println!("<b> & ```");', "Sources: [1]", "Fearless concurrency", "Sources: [2][1]",
                           "Elision", "inferred.[2]", "References", REF_1, REF_2])
    rows = [["".join(odf_text(p) for p in c.iter(f"{text_ns}p")) for c in row.iter(f"{{{ODF['table']}}}table-cell")]
            for row in body.iter(f"{{{ODF['table']}}}table-row")]
    assert rows == [list(HEADER), *[[*r, *[""] * (2 - len(r))] for r in ROWS]]
    content = archive.read("content.xml").decode()
    assert content.count('xlink:href="#ref-1"') == 3
    assert 'text:bookmark-start text:name="ref-2"' in content
    ir = cited_doc()
    assert f'text:name="n-{ir.nodes[1].id}"' in content
    # Block ids are bookmarks opening each block's first text (a code block has none, unless it cites).
    for block in ir.in_order():
        has_text = block.content.kind is not BlockKind.CODE or bool(block.content.citations)
        assert (f'<text:bookmark text:name="b-{block.id}"' in content) == has_text


def test_epub(rendered: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "book.epub"
    path.write_bytes(rendered["epub"])
    book = epub.read_epub(str(path))
    assert book.get_metadata("DC", "title")[0][0] == "Rust <for> Pythonistas"
    assert book.get_metadata("DC", "identifier")[0][0] == f"urn:uuid:{cited_doc().artifact.id}"
    xhtml = "{http://www.w3.org/1999/xhtml}"
    spine = [book.get_item_with_id(item_id) for item_id, _ in book.spine]
    chapters = [(item.get_name(), ElementTree.fromstring(item.get_content())) for item in spine
                if item is not None and item.get_type() == ebooklib.ITEM_DOCUMENT]
    headings: list[str] = []
    block_ids: list[str] = []
    anchors: dict[str, str] = {}
    links: list[tuple[str, str]] = []
    for name, tree in chapters:
        for el in tree.iter():
            tag = el.tag.removeprefix(xhtml)
            if tag in ("h2", "h3", "h4", "h5", "h6"):
                headings.append("".join(el.itertext()))
            if el.get("data-block-id"):
                assert el.get("id") == f"b-{el.get('data-block-id')}"
                block_ids.append(el.get("data-block-id", ""))
            if el.get("id"):
                anchors[el.get("id", "")] = name
            if tag == "a" and "cite" in (el.get("class") or ""):
                links.append((name, el.get("href", "")))
    assert headings == SECTIONS
    ir = cited_doc()
    assert block_ids == [str(b.id) for b in ir.in_order()]
    # One chapter per top-level section, after the root's own blocks: the root's, Introduction, Ownership
    # (with Lifetimes inside), References.
    texts = {name: "".join(tree.itertext()) for name, tree in chapters}
    chapter_heads = [next(("".join(h.itertext()) for h in tree.iter(f"{xhtml}h2")), "") for name, tree in chapters
                     if name.startswith("text/ch")]
    assert chapter_heads == ["", "Introduction", "Ownership & Borrowing", "References"]
    # Every citation links to its reference in the references chapter.
    assert len(links) == 5
    for name, href in links:
        target_file, _, fragment = href.partition("#")
        assert fragment in ("ref-1", "ref-2")
        assert anchors[fragment] == posixpath.normpath(posixpath.join(posixpath.dirname(name), target_file))
    code = next("".join(el.itertext()) for _, tree in chapters for el in tree.iter(f"{xhtml}pre"))
    assert code == CODE
    pre = next(el for _, tree in chapters for el in tree.iter(f"{xhtml}pre"))
    assert "rust" in (pre.get("class") or "")
    cells = ["".join(td.itertext()) for _, tree in chapters for td in tree.iter() if td.tag in (f"{xhtml}td",
                                                                                                f"{xhtml}th")]
    assert cells == [*HEADER, *[c for r in ROWS for c in [*r, *[""] * (2 - len(r))]]]
    refs = "".join(texts[anchors["ref-1"]].split())
    assert "".join(REF_1.split()) in refs and "".join(REF_2.split()) in refs


def test_pdf(rendered: dict[str, bytes]) -> None:
    reader = pypdf.PdfReader(io.BytesIO(rendered["pdf"]))
    assert reader.metadata is not None and reader.metadata.title == "Rust <for> Pythonistas"
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert in_order(text, ["Rust <for> Pythonistas", "Opening words", "Introduction",
                           "Memory safety matters to everyone.[1]", "Why Rust", "# not a heading", "fast",
                           "install", "Ownership & Borrowing", "fn main() {", 'println!("<b> & ```");',
                           "Sources: [1]", "Fearless concurrency", "Python", "Rust", "list", "Vec<T>", "a|b",
                           "match", "short", "Sources: [2][1]", "Lifetimes", "Elision", "inferred.[2]",
                           "References", "1. " + REF_1, "2. " + REF_2])
    # The citation markers are links inside the document.
    annotations = [a.get_object() for page in reader.pages for a in page.get("/Annots", [])]
    assert sum(1 for a in annotations if a.get("/Subtype") == "/Link") >= 5


def test_same_ir_same_bytes(rendered: dict[str, bytes]) -> None:
    async def again() -> dict[str, bytes]:
        exporter = Exporter(ExportLimits(max_concurrent=4))
        formats = ("docx", "odt", "epub", "pdf")
        outs = await asyncio.gather(*(exporter.render(f, the_ast(), source_date_epoch=EPOCH) for f in formats))
        return dict(zip(formats, outs, strict=True))
    second = asyncio.run(again())
    for fmt, first in rendered.items():
        assert second[fmt] == first, fmt
    later = asyncio.run(Exporter().render("docx", the_ast(), source_date_epoch=EPOCH + 86400))
    assert later != rendered["docx"]  # the date is the IR's, not a constant


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


async def test_a_failing_pandoc_is_an_export_error(tmp_path: Path) -> None:
    broken = _script(tmp_path, "pandoc", "echo 'pandoc: something is wrong' >&2\nexit 3\n")
    with pytest.raises(ExportFailed) as raised:
        await Exporter(pandoc=broken).render("docx", the_ast(), source_date_epoch=EPOCH)
    assert raised.value.reason == "EXPORT_FAILED"
    assert "pandoc failed (exit status 3): pandoc: something is wrong" in raised.value.message
    with pytest.raises(ExportFailed) as missing:
        await Exporter(pandoc=str(tmp_path / "nowhere")).render("odt", the_ast(), source_date_epoch=EPOCH)
    assert "could not start pandoc" in missing.value.message
    bad = the_ast()
    bad["pandoc-api-version"] = [9, 0]
    with pytest.raises(ExportFailed) as refused:
        await Exporter().render("epub", bad, source_date_epoch=EPOCH)
    assert "pandoc failed" in refused.value.message


async def test_a_stuck_pandoc_is_stopped(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    stuck = _script(tmp_path, "pandoc", f"echo $$ > {marker}\nexec sleep 300\n")
    with pytest.raises(ExportFailed) as raised:
        await Exporter(ExportLimits(timeout_s=1.0), pandoc=stuck).render("docx", the_ast(), source_date_epoch=EPOCH)
    assert raised.value.reason == "EXPORT_TIMEOUT"
    assert "longer than 1 s" in raised.value.message
    assert not _alive(int(marker.read_text()))  # killed and reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_renders_wait_for_a_slot(tmp_path: Path) -> None:
    running = tmp_path / "running"
    running.mkdir()
    log = tmp_path / "counts"
    # Each fake pandoc notes how many renders are running while it runs, then echoes its input.
    fake = _script(tmp_path, "pandoc", f"touch {running}/$$\nls {running} | wc -l >> {log}\nsleep 0.2\n"
                                       f"rm {running}/$$\ncat\n")
    exporter = Exporter(ExportLimits(max_concurrent=2), pandoc=fake)
    outs = await asyncio.gather(*(exporter.render("docx", {"n": i}, source_date_epoch=EPOCH) for i in range(6)))
    assert [json.loads(o) for o in outs] == [{"n": i} for i in range(6)]
    counts = [int(line) for line in log.read_text().split()]
    assert len(counts) == 6 and max(counts) <= 2


def test_file_names() -> None:
    assert file_name("Rust <for> Pythonistas", "docx") == "rust-for-pythonistas.docx"
    assert file_name("Économie d'énergie: 2030", "pdf") == "economie-d-energie-2030.pdf"
    assert file_name("???", "markdown") == "artifact.md"
    assert file_name("A" * 200, "epub") == "a" * 80 + ".epub"
    assert len(slug(" ".join(["word"] * 40))) <= 80
