"""Stale sections against the real server (embedded PostgreSQL, gRPC over a socket, offline provider):
a change marks exactly the written sections whose prompts used what changed, and a stale_only run
rewrites exactly those."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import field_mask_pb2

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2, source_service_pb2
from tests.conftest import pg_connect
from tests.helpers import create_artifact, error_info, start_run, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub
    from lace.v1.source_service_pb2_grpc import SourceServiceAsyncStub

WRITTEN = artifact_pb2.NODE_STATE_WRITTEN


async def full(artifacts: ArtifactServiceAsyncStub, artifact_id: str) -> artifact_service_pb2.GetArtifactResponse:
    return await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact_id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))


async def written_document(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) \
        -> tuple[str, artifact_service_pb2.GetArtifactResponse]:
    """A two-level document: the root split into sections, most of them split into written leaves."""
    artifact = await create_artifact(artifacts, 3200)
    events = await watch(runs, (await start_run(runs, artifact.id, leaf_words=200)).id)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    view = await full(artifacts, artifact.id)
    assert not any(n.stale_reason for n in view.nodes)  # a first run leaves everything fresh
    return artifact.id, view


def leaves_under(view: artifact_service_pb2.GetArtifactResponse, parent_id: str) -> list[artifact_pb2.Node]:
    return sorted((n for n in view.nodes if n.parent_id == parent_id and n.state == WRITTEN), key=lambda n: n.ordinal)


def first_written_pair(view: artifact_service_pb2.GetArtifactResponse) -> tuple[artifact_pb2.Node, artifact_pb2.Node]:
    """The first two written leaves of one parent, in document order (the preorder GetArtifact returns)."""
    for n in view.nodes:
        leaves = leaves_under(view, n.id)
        if len(leaves) >= 2:
            return leaves[0], leaves[1]
    raise AssertionError("no section with two written leaves")


def without(node: artifact_pb2.Node, *fields: str) -> artifact_pb2.Node:
    copy = artifact_pb2.Node()
    copy.CopyFrom(node)
    for f in ("update_time", *fields):
        copy.ClearField(f)
    return copy


def payloads(events: list[run_pb2.RunEvent], kind: str) -> list[object]:
    return [getattr(e, kind) for e in events if e.WhichOneof("payload") == kind]


async def start_stale(runs: RunServiceAsyncStub, artifact_id: str, **fields: object) -> run_pb2.Run:
    return (await runs.StartRun(run_service_pb2.StartRunRequest(
        artifact_id=artifact_id, request_id=str(uuid.uuid4()), stale_only=True, **fields))).run  # type: ignore[arg-type]


async def test_an_edit_marks_exactly_its_dependants_and_a_stale_run_rewrites_exactly_those(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub
) -> None:
    artifact_id, before = await written_document(artifacts, runs)
    first, second = first_written_pair(before)
    # The later siblings of `first` in its parent read its summary: those, and nothing else, depend on its text.
    dependants = {n.id for n in leaves_under(before, first.parent_id) if n.ordinal > first.ordinal}
    assert second.id in dependants

    with pytest.raises(grpc.aio.AioRpcError) as nothing:
        await start_stale(runs, artifact_id)
    assert nothing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(nothing.value).reason == "NOTHING_STALE"

    target = next(b for b in before.blocks if b.node_id == first.id and b.kind == artifact_pb2.BLOCK_KIND_PARAGRAPH)
    await artifacts.EditBlock(artifact_service_pb2.EditBlockRequest(
        block_id=target.id, block=artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="A person's words."),
        expected_version=target.version, request_id=str(uuid.uuid4())))

    edited = await full(artifacts, artifact_id)
    stale = {n.id: n.stale_reason for n in edited.nodes if n.stale_reason}
    assert set(stale) == dependants
    assert stale[second.id] == (f"section {first.title!r} was edited by a person; this section's prompt used its "
                                "summary")
    # Nothing else changed: one IR version, the edited block, the edited node's word count, the marks.
    assert edited.artifact.version == before.artifact.version + 1
    old_nodes = {n.id: n for n in before.nodes}
    for n in edited.nodes:
        ignored = ("stale_reason", "word_count") if n.id in dependants | {first.id} else ()
        assert without(n, *ignored) == without(old_nodes[n.id], *ignored)
    old_blocks = {b.id: b for b in before.blocks}
    assert [b.id for b in edited.blocks if b != old_blocks[b.id]] == [target.id]

    run = await start_stale(runs, artifact_id)
    assert run.stale_only and run.estimate.llm_calls == len(dependants)
    assert (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run.stale_only
    events = await watch(runs, run.id)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    assert {p.node_id for p in payloads(events, "blocks_applied")} == dependants  # type: ignore[attr-defined]
    assert not payloads(events, "node_split")

    after = await full(artifacts, artifact_id)
    assert not any(n.stale_reason for n in after.nodes)
    new_blocks = {b.id: b for b in after.blocks}
    assert new_blocks[target.id].text == "A person's words." and new_blocks[target.id].pinned
    for block_id, old in old_blocks.items():
        if old.node_id not in dependants and block_id != target.id:
            assert new_blocks[block_id] == old
    # Fresh again: nothing to rewrite.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await start_stale(runs, artifact_id)
    assert error_info(again.value).reason == "NOTHING_STALE"


async def test_a_regeneration_marks_the_siblings_that_used_its_summary(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub
) -> None:
    artifact_id, before = await written_document(artifacts, runs)
    first, _ = first_written_pair(before)
    later = {n.id for n in leaves_under(before, first.parent_id) if n.ordinal > first.ordinal}
    assert later
    # The offline provider draws a summary from a small vocabulary, so a rewrite now and then keeps it
    # word for word; that rewrite must mark nothing (no reader's prompt would change), and the next
    # instruction draws again.
    for attempt in range(8):
        regen = (await runs.StartRun(run_service_pb2.StartRunRequest(
            artifact_id=artifact_id, scope_node_id=first.id, instruction=f"more concrete ({attempt})",
            request_id=str(uuid.uuid4())))).run
        events = await watch(runs, regen.id)
        assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
        after = await full(artifacts, artifact_id)
        rewritten = next(n for n in after.nodes if n.id == first.id)
        assert not rewritten.stale_reason
        if rewritten.summary != first.summary:
            break
        assert not payloads(events, "nodes_marked_stale")
        assert not any(n.stale_reason for n in after.nodes)
    assert rewritten.summary != first.summary, "eight rewrites kept the same summary"
    stale = {n.id: n.stale_reason for n in after.nodes if n.stale_reason}
    # Covered headings elsewhere show its title only, which did not change: only the summary's readers.
    assert set(stale) == later
    assert all(r.startswith(f"section {first.title!r} was rewritten by run {regen.id}") for r in stale.values())
    # The run reports the marks it made, in the transaction of the rewrite.
    (marked,) = payloads(events, "nodes_marked_stale")
    assert {n.node_id for n in marked.nodes} == later  # type: ignore[attr-defined]
    applied = next(e for e in events if e.WhichOneof("payload") == "blocks_applied")
    marked_event = next(e for e in events if e.WhichOneof("payload") == "nodes_marked_stale")
    assert marked_event.seq == applied.seq + 1
    assert marked.artifact_version == applied.blocks_applied.artifact_version  # type: ignore[attr-defined]

    # A stale run scoped elsewhere finds nothing; scoped to the parent, it rewrites the readers.
    # (a top-level section off `first`'s path: the tree's depth depends on how the offline provider splits)
    parents = {n.id: n.parent_id for n in after.nodes}
    path, at = set(), first.parent_id
    while at:
        path.add(at)
        at = parents[at]
    other = next(n for n in after.nodes if n.depth == 1 and n.id not in path and n.id not in later)
    with pytest.raises(grpc.aio.AioRpcError) as nothing:
        await start_stale(runs, artifact_id, scope_node_id=other.id)
    assert error_info(nothing.value).reason == "NOTHING_STALE"
    run = await start_stale(runs, artifact_id, scope_node_id=first.parent_id)
    events = await watch(runs, run.id)
    assert {p.node_id for p in payloads(events, "blocks_applied")} == later  # type: ignore[attr-defined]
    assert not any(n.stale_reason for n in (await full(artifacts, artifact_id)).nodes)


async def test_an_outline_edit_marks_the_section_and_the_siblings_that_listed_it(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub
) -> None:
    # The section written last (no other prompt covered it) needs written siblings; how the offline
    # provider splits decides whether it has any, so write documents until one has that shape.
    for _ in range(8):
        artifact_id, before = await written_document(artifacts, runs)
        last = [n for n in before.nodes if n.state == WRITTEN][-1]
        siblings = {n.id for n in leaves_under(before, last.parent_id)} - {last.id}
        if siblings:
            break
    assert siblings, "eight documents and none whose last section has written siblings"
    await artifacts.UpdateNode(artifact_service_pb2.UpdateNodeRequest(
        node=artifact_pb2.Node(id=last.id, title="A new last title"), update_mask={"paths": ["title"]},
        request_id=str(uuid.uuid4())))
    after = await full(artifacts, artifact_id)
    stale = {n.id: n.stale_reason for n in after.nodes if n.stale_reason}
    assert set(stale) == siblings | {last.id}
    assert stale[last.id] == (f"section {last.title!r} was retitled 'A new last title' after this section was "
                              "written from the old outline")
    for sibling in siblings:
        assert stale[sibling].startswith(f"section {last.title!r} was retitled")

    events = await watch(runs, (await start_stale(runs, artifact_id)).id)
    assert {p.node_id for p in payloads(events, "blocks_applied")} == siblings | {last.id}  # type: ignore[attr-defined]
    assert not any(n.stale_reason for n in (await full(artifacts, artifact_id)).nodes)


def _migration(name: str) -> object:
    path = Path(__file__).resolve().parents[1] / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _migration_backfill() -> list[str]:
    """What the upgrade from before 0008 runs on node_dependencies: 0008's backfill, then 0010's cleanup."""
    return [str(_migration("0008_stale_sections")._BACKFILL),  # type: ignore[attr-defined]
            str(_migration("0010_headings_from_manifests").CLEANUP)]  # type: ignore[attr-defined]


async def test_the_migration_backfills_what_the_writes_record(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub, database_url: str
) -> None:
    artifact_id, _ = await written_document(artifacts, runs)
    rows = ("SELECT d.node_id, d.depends_on, d.kind, d.content_hash, d.llm_call_id FROM node_dependencies d "
            "JOIN nodes n ON n.id = d.node_id WHERE n.artifact_id = %s")
    with pg_connect(database_url) as conn, conn.transaction(force_rollback=True):
        recorded = set(conn.execute(rows, (artifact_id,)).fetchall())
        assert recorded
        conn.execute("DELETE FROM node_dependencies d USING nodes n WHERE n.id = d.node_id AND n.artifact_id = %s",
                     (artifact_id,))
        for statement in _migration_backfill():
            conn.execute(statement)
        assert set(conn.execute(rows, (artifact_id,)).fetchall()) == recorded


async def test_a_revert_is_a_persons_edit_too(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    artifact_id, before = await written_document(artifacts, runs)
    first, second = first_written_pair(before)
    target = next(b for b in before.blocks if b.node_id == first.id and b.kind == artifact_pb2.BLOCK_KIND_PARAGRAPH)
    await artifacts.EditBlock(artifact_service_pb2.EditBlockRequest(
        block_id=target.id, block=artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="Edited."),
        request_id=str(uuid.uuid4())))
    assert {n.id for n in (await full(artifacts, artifact_id)).nodes if n.stale_reason} >= {second.id}
    await watch(runs, (await start_stale(runs, artifact_id)).id)
    assert not any(n.stale_reason for n in (await full(artifacts, artifact_id)).nodes)

    # Reverting the block to the model's text changes the section's text again: its readers go stale again.
    await artifacts.RevertBlock(artifact_service_pb2.RevertBlockRequest(
        block_id=target.id, block_version=target.version, request_id=str(uuid.uuid4())))
    stale = {n.id: n.stale_reason for n in (await full(artifacts, artifact_id)).nodes if n.stale_reason}
    assert stale[second.id].startswith(f"section {first.title!r} was edited by a person")


async def test_a_new_brief_or_style_marks_every_section_written_with_the_old_one(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub
) -> None:
    artifact_id, before = await written_document(artifacts, runs)
    written = {n.id for n in before.nodes if n.state == WRITTEN}
    for kind, value in (("brief", "A shorter brief: storage for planners, costs first."),
                        ("style", "Plain English, short sentences, for a council committee.")):
        await artifacts.UpdateArtifact(artifact_service_pb2.UpdateArtifactRequest(
            artifact=artifact_pb2.Artifact(id=artifact_id, **{kind: value}),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=[kind]), request_id=str(uuid.uuid4())))
        after = await full(artifacts, artifact_id)
        stale = {n.id: n.stale_reason for n in after.nodes if n.stale_reason}
        assert set(stale) == written, kind  # every prompt carries the brief and the style (written) ones only
        assert set(stale.values()) == {
            f"the artifact's {kind} was changed by a person; this section's prompt used the old one"}
        events = await watch(runs, (await start_stale(runs, artifact_id)).id)
        assert {p.node_id for p in payloads(events, "blocks_applied")} == written  # type: ignore[attr-defined]
        assert not any(n.stale_reason for n in (await full(artifacts, artifact_id)).nodes)


async def test_deleting_a_source_marks_the_sections_whose_prompts_used_its_passages(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub, sources: SourceServiceAsyncStub,
    database_url: str,
) -> None:
    artifact = await create_artifact(artifacts, 2400)
    added = {}
    for title, text in (("Costs", "Battery storage costs for grid planners fell by half in five years. " * 12),
                        ("Zoology", "Quokkas and wombats graze at dusk; zebras prefer open savanna. " * 12)):
        added[title] = (await sources.AddSource(source_service_pb2.AddSourceRequest(
            artifact_id=artifact.id, title=title, media_type="text/plain", text=text,
            request_id=str(uuid.uuid4())))).source
    events = await watch(runs, (await start_run(runs, artifact.id, leaf_words=300)).id)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED

    # Who used which source, read from the stored manifests independently of the server's query.
    used: dict[str, set[str]] = {}
    with pg_connect(database_url) as conn:
        passages = {str(r[0]): str(r[1]) for r in conn.execute(
            "SELECT id, source_id FROM passages WHERE artifact_id = %s", (artifact.id,)).fetchall()}
        for node_id, manifest in conn.execute(
                "SELECT DISTINCT ON (l.node_id) l.node_id, l.context_manifest FROM llm_calls l "
                "JOIN runs r ON r.id = l.run_id WHERE r.artifact_id = %s AND l.step = 'write' "
                "AND l.outcome = 'applied' ORDER BY l.node_id, l.create_time DESC", (artifact.id,)).fetchall():
            used[str(node_id)] = {passages[e["passage_id"]] for e in manifest  # type: ignore[attr-defined]
                                  if e.get("passage_id")}

    def readers(title: str) -> set[str]:
        return {n for n, of in used.items() if added[title].id in of}

    assert readers("Costs"), "the sections on storage costs were written from the Costs source"
    marked: dict[str, str] = {}
    for title in ("Zoology", "Costs"):
        version = (await full(artifacts, artifact.id)).artifact.version
        await sources.DeleteSource(source_service_pb2.DeleteSourceRequest(source_id=added[title].id))
        after = await full(artifacts, artifact.id)
        new = {n.id: n.stale_reason for n in after.nodes if n.stale_reason and n.id not in marked}
        assert set(new) == readers(title) - set(marked), title
        assert all(r == f"source {title!r} was deleted; this section's prompt used its passages" for r in new.values())
        # No reader, no change: the IR keeps its version.
        assert (after.artifact.version == version) == (not new)
        marked.update(new)
    version = (await full(artifacts, artifact.id)).artifact.version
    await sources.DeleteSource(source_service_pb2.DeleteSourceRequest(source_id=added["Costs"].id))
    assert (await full(artifacts, artifact.id)).artifact.version == version  # a second delete changes nothing


async def test_a_retitle_marks_every_section_whose_prompt_showed_the_title(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub, database_url: str
) -> None:
    """The first section written is in many later prompts' headings covered elsewhere, which are read
    from the stored manifests (not node_dependencies): a retitle marks exactly the prompts that
    showed its title, whatever the kind."""
    artifact_id, before = await written_document(artifacts, runs)
    first = next(n for n in before.nodes if n.state == WRITTEN)
    with pg_connect(database_url) as conn:
        latest = conn.execute(
            "SELECT DISTINCT ON (l.node_id) l.node_id, l.context_manifest FROM llm_calls l "
            "JOIN runs r ON r.id = l.run_id WHERE r.artifact_id = %s AND l.step = 'write' "
            "AND l.outcome = 'applied' ORDER BY l.node_id, l.create_time DESC", (artifact_id,)).fetchall()
    shown = {str(node): {e["kind"] for e in manifest if e.get("node_id") == first.id}  # type: ignore[attr-defined]
             for node, manifest in latest}
    readers = {node for node, kinds in shown.items() if kinds}
    covered_only = {node for node, kinds in shown.items() if kinds == {"covered_heading"}}
    assert first.id in readers and covered_only, "later sections listed the first one's heading, and only that"

    await artifacts.UpdateNode(artifact_service_pb2.UpdateNodeRequest(
        node=artifact_pb2.Node(id=first.id, title="A first title, renamed"), update_mask={"paths": ["title"]},
        request_id=str(uuid.uuid4())))
    stale = {n.id: n.stale_reason for n in (await full(artifacts, artifact_id)).nodes if n.stale_reason}
    assert set(stale) == readers
    assert all(stale[n].endswith("this section's prompt used its title among the headings covered elsewhere")
               for n in covered_only)
