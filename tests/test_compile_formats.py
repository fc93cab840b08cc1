"""CompileArtifact in all seven formats over real gRPC, after a real offline run that cites a Markdown and a
PDF source; the size limit."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import docx
import ebooklib
import grpc
import pypdf
import pytest
from ebooklib import epub

from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2_grpc,
    source_service_pb2,
)
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, error_info, final_state, in_order, start_run, watch
from tests.support import source_docs

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub
    from lace.v1.source_service_pb2_grpc import SourceServiceAsyncStub

F = artifact_service_pb2
TEXT = {F.COMPILE_FORMAT_MARKDOWN: ("text/markdown", ".md"), F.COMPILE_FORMAT_HTML: ("text/html", ".html"),
        F.COMPILE_FORMAT_JSON: ("application/json", ".json")}
BINARY = {
    F.COMPILE_FORMAT_DOCX: ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"),
    F.COMPILE_FORMAT_ODT: ("application/vnd.oasis.opendocument.text", ".odt"),
    F.COMPILE_FORMAT_EPUB: ("application/epub+zip", ".epub"),
    F.COMPILE_FORMAT_PDF: ("application/pdf", ".pdf"),
}
CODE = "def storage_cost(kwh: float) -> float:\n    return kwh * 0.12  # <per kWh>"


async def written_artifact(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub,
                           words: int, title: str, sources: SourceServiceAsyncStub | None = None,
                           ) -> artifact_service_pb2.GetArtifactResponse:
    artifact = await create_artifact(artifacts, words, title=title)
    if sources is not None:  # a Markdown note and a PDF report for the offline provider to cite
        for source_title, media_type, kind in (("Storage notes", "text/markdown", "text"),
                                               ("Siting and policy", "application/pdf", "content")):
            request = source_service_pb2.AddSourceRequest(artifact_id=artifact.id, title=source_title,
                                                          media_type=media_type, request_id=str(uuid.uuid4()))
            if kind == "text":
                request.text = source_docs.MARKDOWN
            else:
                request.content = source_docs.pdf_bytes()
            await sources.AddSource(request)
    run = await start_run(runs, artifact.id)
    assert final_state(await asyncio.wait_for(watch(runs, run.id), 120)) == run_pb2.RUN_STATE_COMPLETED
    return await artifacts.GetArtifact(F.GetArtifactRequest(artifact_id=artifact.id, view=F.ARTIFACT_VIEW_FULL))


async def test_an_offline_run_compiles_to_all_seven_formats(artifacts: ArtifactServiceAsyncStub,
                                                            runs: RunServiceAsyncStub, sources: SourceServiceAsyncStub,
                                                            tmp_path: Path) -> None:
    full = await written_artifact(artifacts, runs, 3000, "Grid Storage: A Planner's Guide", sources)
    # A code block, written as a human edit, so that every kind the IR knows can be checked.
    paragraph = next(b for b in full.blocks if b.kind == artifact_pb2.BLOCK_KIND_PARAGRAPH and b.ordinal > 0)
    await artifacts.EditBlock(F.EditBlockRequest(block_id=paragraph.id, block=artifact_pb2.Block(
        kind=artifact_pb2.BLOCK_KIND_CODE, text=CODE, language="python")))
    full = await artifacts.GetArtifact(F.GetArtifactRequest(artifact_id=full.artifact.id, view=F.ARTIFACT_VIEW_FULL))
    titles = [n.title for n in full.nodes if n.parent_id]  # document order, the root's is the document title
    assert len(titles) >= 3
    # The run cited the sources; every format lists the same references, each opening with its source.
    cited = {p for b in full.blocks for p in b.cited_passage_ids}
    assert cited
    html_refs = (await artifacts.CompileArtifact(F.CompileArtifactRequest(
        artifact_id=full.artifact.id, format=F.COMPILE_FORMAT_HTML))).content.split('<section id="references">')[1]
    labels = re.findall(r'<li id="ref-\d+" data-passage-id="[^"]+">([^<]+)</li>', html_refs)
    assert len(labels) == len(cited)
    sources_in_order = [html.unescape(label).split(", characters ")[0] for label in labels]
    assert set(sources_in_order) <= {"Storage notes", "Siting and policy"}

    compiled = {}
    for fmt in (*TEXT, *BINARY):
        response = await artifacts.CompileArtifact(F.CompileArtifactRequest(artifact_id=full.artifact.id, format=fmt))
        media_type, extension = {**TEXT, **BINARY}[fmt]
        assert response.media_type == media_type
        assert response.file_name == "grid-storage-a-planner-s-guide" + extension
        assert response.artifact_version == full.artifact.version
        if fmt in BINARY:
            assert response.binary_content and not response.content
            compiled[fmt] = response.binary_content
        else:
            assert response.content and not response.binary_content
            compiled[fmt] = response.content.encode()

    markdown = compiled[F.COMPILE_FORMAT_MARKDOWN].decode()
    assert all(f"[^{n}]: {name}" in markdown for n, name in enumerate(sources_in_order, 1))
    assert in_order(markdown, [f"## {titles[0]}", *titles[1:]]) and f"```python\n{CODE}\n```" in markdown
    assert f'id="b-{paragraph.id}"' in compiled[F.COMPILE_FORMAT_HTML].decode()
    assert json.loads(compiled[F.COMPILE_FORMAT_JSON])["artifact"]["id"] == full.artifact.id

    document = docx.Document(io.BytesIO(compiled[F.COMPILE_FORMAT_DOCX]))
    headings = [p.text for p in document.paragraphs if p.style is not None and p.style.name.startswith("Heading")]
    assert in_order("\n".join(headings), titles)
    assert document.paragraphs[0].text == full.artifact.title
    assert CODE in [p.text for p in document.paragraphs]
    assert headings[-1] == "References"
    assert [p.text.split(", characters ")[0] for p in document.paragraphs[-len(labels):]] == sources_in_order

    odt = zipfile.ZipFile(io.BytesIO(compiled[F.COMPILE_FORMAT_ODT]))
    content = odt.read("content.xml").decode()
    assert in_order(content, [_xml(t) for t in titles])
    assert f'text:name="n-{full.nodes[1].id}"' in content
    assert all(f'text:name="ref-{n}"' in content for n in range(1, len(labels) + 1))
    assert in_order(content, ["References", *sources_in_order])

    path = tmp_path / "doc.epub"
    path.write_bytes(compiled[F.COMPILE_FORMAT_EPUB])
    book = epub.read_epub(str(path))
    xhtml = "".join(item.get_content().decode() for item in book.get_items_of_type(ebooklib.ITEM_DOCUMENT)
                    if item.get_name().startswith("text/ch"))
    assert in_order(xhtml, [_xml(t) for t in titles])
    assert f'data-block-id="{paragraph.id}"' in xhtml
    assert in_order(xhtml, ["References", *(f'id="ref-{n}"' for n in range(1, len(labels) + 1))])

    pdf = pypdf.PdfReader(io.BytesIO(compiled[F.COMPILE_FORMAT_PDF]))
    text = " ".join(" ".join(page.extract_text().split()) for page in pdf.pages)
    assert in_order(text, [full.artifact.title, *titles])
    assert "return kwh * 0.12 # <per kWh>" in text
    assert in_order(text, ["References", *(f"{n}. {name}" for n, name in enumerate(sources_in_order, 1))])

    # The same IR version compiles to the same bytes.
    again = await artifacts.CompileArtifact(F.CompileArtifactRequest(artifact_id=full.artifact.id,
                                                                     format=F.COMPILE_FORMAT_DOCX))
    assert again.binary_content == compiled[F.COMPILE_FORMAT_DOCX]


def _xml(text: str) -> str:
    return html.escape(text, quote=False)


async def test_a_document_over_the_limit_is_refused(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, max_compiled_bytes=10_000) as (target, _running, _url), \
            grpc.aio.insecure_channel(target) as channel:
        artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        full = await written_artifact(artifacts, runs, 400, "Small")
        md = await artifacts.CompileArtifact(F.CompileArtifactRequest(artifact_id=full.artifact.id,
                                                                      format=F.COMPILE_FORMAT_MARKDOWN))
        assert 0 < len(md.content.encode()) <= 10_000
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await artifacts.CompileArtifact(F.CompileArtifactRequest(artifact_id=full.artifact.id,
                                                                     format=F.COMPILE_FORMAT_PDF))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(raised.value)
    assert info.reason == "COMPILED_TOO_LARGE"
    size = int(info.metadata["size_bytes"])
    assert size > 10_000 and info.metadata["limit_bytes"] == "10000" and info.metadata["format"] == "pdf"
    details = raised.value.details() or ""
    assert f"{size:,} bytes" in details and "10,000 bytes" in details
