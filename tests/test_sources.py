"""Sources over real gRPC: upload, extraction, limits, idempotency, listing, deletion, and the whole
citation chain of an offline run (retrieval -> prompt -> proposal -> Apply -> compiled references)."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2, source_pb2, source_service_pb2
from lace_engine.pipeline.source_text import MAX_SOURCE_BYTES
from tests.helpers import create_artifact, error_info, final_state, start_run, watch
from tests.support import source_docs

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub
    from lace.v1.source_service_pb2_grpc import SourceServiceAsyncStub


def rows(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


async def add(sources: SourceServiceAsyncStub, artifact_id: str, title: str, media_type: str, *,
              text: str | None = None, content: bytes | None = None, request_id: str = "") -> source_pb2.Source:
    request = source_service_pb2.AddSourceRequest(artifact_id=artifact_id, title=title, media_type=media_type,
                                                  request_id=request_id or str(uuid.uuid4()))
    if text is not None:
        request.text = text
    if content is not None:
        request.content = content
    return (await sources.AddSource(request)).source


async def test_a_markdown_and_a_pdf_source_are_split_into_passages_that_match_their_text(
        artifacts: ArtifactServiceAsyncStub, sources: SourceServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts)
    md = await add(sources, artifact.id, "Storage notes", "text/markdown", text=source_docs.MARKDOWN)
    pdf = await add(sources, artifact.id, "Siting and policy", "application/pdf", content=source_docs.pdf_bytes())
    assert md.passage_count >= 2 and pdf.passage_count >= 1
    assert pdf.size_bytes == len(source_docs.pdf_bytes())

    full = await sources.GetSource(source_service_pb2.GetSourceRequest(
        source_id=pdf.id, view=source_service_pb2.SOURCE_VIEW_FULL))
    text = " ".join(p.text for p in full.passages)
    assert "substations" in text and "capacity markets" in text  # both pages were read
    got = await sources.GetSource(source_service_pb2.GetSourceRequest(
        source_id=md.id, view=source_service_pb2.SOURCE_VIEW_FULL))
    assert [p.ordinal for p in got.passages] == list(range(md.passage_count))
    ends = [(p.start_offset, p.end_offset) for p in got.passages]
    assert all(a < b for a, b in ends) and all(ends[i][1] <= ends[i + 1][0] for i in range(len(ends) - 1))
    assert got.passages[0].text.startswith("# Storage technologies")
    assert all(p.source_title == "Storage notes" for p in got.passages)

    listed = await sources.ListSources(source_service_pb2.ListSourcesRequest(artifact_id=artifact.id, page_size=1))
    assert [s.id for s in listed.sources] == [md.id] and listed.next_page_token
    rest = await sources.ListSources(source_service_pb2.ListSourcesRequest(
        artifact_id=artifact.id, page_size=1, page_token=listed.next_page_token))
    assert [s.id for s in rest.sources] == [pdf.id] and not rest.next_page_token


async def test_html_is_read_with_a_parser_that_drops_scripts_and_styles(
        artifacts: ArtifactServiceAsyncStub, sources: SourceServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts)
    page = ("<html><head><title>x</title><style>p{color:red}</style></head><body><h1>Flow batteries</h1>"
            "<p>Vanadium flow batteries decouple power &amp; energy.</p><script>alert('no')</script></body></html>")
    source = await add(sources, artifact.id, "Flow", "text/html", text=page)
    full = await sources.GetSource(source_service_pb2.GetSourceRequest(
        source_id=source.id, view=source_service_pb2.SOURCE_VIEW_FULL))
    text = "\n".join(p.text for p in full.passages)
    assert "Vanadium flow batteries decouple power & energy." in text and "Flow batteries" in text
    assert "alert" not in text and "color" not in text


@pytest.mark.parametrize(("media_type", "body", "reason"), [
    ("text/markdown", {}, "MISSING_FIELD"),
    ("text/markdown", {"text": ""}, "INVALID_SOURCE"),
    ("text/markdown", {"text": "   \n\n  "}, "INVALID_SOURCE"),
    ("text/markdown", {"content": b"\xff\xfe\xfa not utf-8"}, "INVALID_SOURCE"),
    ("application/pdf", {"content": b"%PDF-1.4 this is not a pdf"}, "INVALID_SOURCE"),
    ("application/pdf", {"text": "a PDF cannot be text"}, "INVALID_SOURCE"),
    ("application/msword", {"content": b"doc"}, "UNSUPPORTED_MEDIA_TYPE"),
    ("text/plain", {"content": b"x" * (MAX_SOURCE_BYTES + 1)}, "SOURCE_TOO_LARGE"),
])
async def test_a_bad_source_is_refused_and_nothing_is_stored(
        artifacts: ArtifactServiceAsyncStub, sources: SourceServiceAsyncStub, database_url: str,
        media_type: str, body: dict[str, object], reason: str) -> None:
    artifact = await create_artifact(artifacts)
    request = source_service_pb2.AddSourceRequest(artifact_id=artifact.id, title="t", media_type=media_type,
                                                  request_id=str(uuid.uuid4()), **body)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await sources.AddSource(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert error_info(raised.value).reason == reason
    assert rows(database_url, "SELECT count(*) FROM sources WHERE artifact_id = %s", artifact.id) == [(0,)]
    assert rows(database_url, "SELECT count(*) FROM passages WHERE artifact_id = %s", artifact.id) == [(0,)]


async def test_add_source_is_idempotent_and_unknown_ids_are_not_found(
        artifacts: ArtifactServiceAsyncStub, sources: SourceServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts)
    key = str(uuid.uuid4())
    first = await add(sources, artifact.id, "Notes", "text/plain", text="Some notes on storage.", request_id=key)
    again = await add(sources, artifact.id, "Notes", "text/plain", text="Some notes on storage.", request_id=key)
    assert again.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await add(sources, artifact.id, "Notes", "text/plain", text="Other notes.", request_id=key)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await add(sources, str(uuid.uuid4()), "Notes", "text/plain", text="x y z")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await sources.GetSource(source_service_pb2.GetSourceRequest(source_id=str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).reason == "SOURCE_NOT_FOUND"


async def test_citations_run_from_retrieval_through_apply_to_the_compiled_references(
        artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub, sources: SourceServiceAsyncStub,
        database_url: str) -> None:
    artifact = await create_artifact(artifacts, words=2000)
    md = await add(sources, artifact.id, "Storage notes", "text/markdown", text=source_docs.MARKDOWN)
    pdf = await add(sources, artifact.id, "Siting and policy", "application/pdf", content=source_docs.pdf_bytes())
    run = await start_run(runs, artifact.id)
    assert final_state(await watch(runs, run.id)) == run_pb2.RUN_STATE_COMPLETED

    full = await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
    cited_blocks = [b for b in full.blocks if b.cited_passage_ids]
    assert cited_blocks, "the offline provider cites from the passages it was given"
    known = {p.id: p for s in (md, pdf) for p in (await sources.GetSource(source_service_pb2.GetSourceRequest(
        source_id=s.id, view=source_service_pb2.SOURCE_VIEW_FULL))).passages}
    assert {p for b in cited_blocks for p in b.cited_passage_ids} <= set(known)

    # Every citation names a passage that was in the prompt of the very call that wrote the block.
    for block in cited_blocks:
        manifest = rows(database_url, """
            SELECT c.context_manifest FROM change_events e JOIN llm_calls c ON c.id = e.llm_call_id
            WHERE e.block_id = %s ORDER BY e.id DESC LIMIT 1""", block.id)[0][0]
        in_prompt = {e["passage_id"] for e in manifest if e.get("passage_id")}  # type: ignore[attr-defined]
        assert set(block.cited_passage_ids) <= in_prompt
        hashes = {e["passage_id"]: e["hash"] for e in manifest if e.get("passage_id")}  # type: ignore[attr-defined]
        assert all(hashes[p] == known[p].content_hash for p in block.cited_passage_ids)

    # Provenance: the block's change carries the citations, and the passages' text comes with it.
    changes = await artifacts.ListBlockChanges(artifact_service_pb2.ListBlockChangesRequest(
        block_id=cited_blocks[0].id))
    assert list(changes.change_events[-1].after.cited_passage_ids) == list(cited_blocks[0].cited_passage_ids)
    assert {p.id for p in changes.cited_passages} == set(cited_blocks[0].cited_passage_ids)
    assert all(p.text == known[p.id].text for p in changes.cited_passages)

    # Compiled: numbered by first citation, one reference per cited passage, in every text format.
    order = list(dict.fromkeys(p for b in full.blocks for p in b.cited_passage_ids))
    compiled = json.loads((await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_JSON))).content)
    assert [r["passage_id"] for r in compiled["references"]] == order
    assert [r["number"] for r in compiled["references"]] == list(range(1, len(order) + 1))
    assert all(r["text"] == known[r["passage_id"]].text for r in compiled["references"])
    markdown = (await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
    for number, passage_id in enumerate(order, 1):
        assert f"[^{number}]: {known[passage_id].source_title}" in markdown
        assert markdown.count(f"[^{number}]") >= 2  # cited, and defined
    html = (await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_HTML))).content
    assert html.count('<li id="ref-') == len(order) and 'href="#ref-1"' in html


async def test_a_deleted_source_is_no_longer_retrieved_but_its_citations_still_resolve(
        artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub, sources: SourceServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, words=600)
    md = await add(sources, artifact.id, "Storage notes", "text/markdown", text=source_docs.MARKDOWN)
    run = await start_run(runs, artifact.id)
    assert final_state(await watch(runs, run.id)) == run_pb2.RUN_STATE_COMPLETED
    deleted = (await sources.DeleteSource(source_service_pb2.DeleteSourceRequest(source_id=md.id))).source
    assert deleted.HasField("delete_time")
    again = (await sources.DeleteSource(source_service_pb2.DeleteSourceRequest(source_id=md.id))).source
    assert again.delete_time == deleted.delete_time
    listed = await sources.ListSources(source_service_pb2.ListSourcesRequest(artifact_id=artifact.id))
    assert not listed.sources
    compiled = json.loads((await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_JSON))).content)
    assert compiled["references"] and all(r["source_title"] == "Storage notes" for r in compiled["references"])

    # A regeneration after the delete finds nothing to retrieve, so it cites nothing.
    rerun = (await runs.StartRun(run_service_pb2.StartRunRequest(
        artifact_id=artifact.id, scope_node_id=artifact.root_node_id, request_id=str(uuid.uuid4())))).run
    assert final_state(await watch(runs, rerun.id)) == run_pb2.RUN_STATE_COMPLETED
    full = await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
    assert full.blocks and not any(b.cited_passage_ids for b in full.blocks)


async def test_a_human_edit_may_cite_only_passages_of_the_artifacts_sources(
        artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub, sources: SourceServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, words=600)
    other = await create_artifact(artifacts, words=600)
    mine = await add(sources, artifact.id, "Mine", "text/plain", text="Pumped hydro needs two reservoirs.")
    theirs = await add(sources, other.id, "Theirs", "text/plain", text="Flow batteries use liquid electrolytes.")
    run = await start_run(runs, artifact.id)
    assert final_state(await watch(runs, run.id)) == run_pb2.RUN_STATE_COMPLETED
    full = await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
    block = full.blocks[0]
    mine_passage = (await sources.GetSource(source_service_pb2.GetSourceRequest(
        source_id=mine.id, view=source_service_pb2.SOURCE_VIEW_FULL))).passages[0]
    their_passage = (await sources.GetSource(source_service_pb2.GetSourceRequest(
        source_id=theirs.id, view=source_service_pb2.SOURCE_VIEW_FULL))).passages[0]

    edit = artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="Pumped hydro needs two reservoirs.",
                              cited_passage_ids=[their_passage.id])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await artifacts.EditBlock(artifact_service_pb2.EditBlockRequest(block_id=block.id, block=edit))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "INVALID_BLOCK"

    edit.cited_passage_ids[:] = [mine_passage.id]
    edited = (await artifacts.EditBlock(artifact_service_pb2.EditBlockRequest(block_id=block.id, block=edit))).block
    assert list(edited.cited_passage_ids) == [mine_passage.id] and edited.pinned
