"""An artifact as it was at any IR version, over real gRPC and PostgreSQL: GetArtifact and
CompileArtifact with `artifact_version`, rebuilt from node_versions, artifact_versions and
change_events, checked against what the run's own events and an earlier compile said then."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, start_run, watch
from tests.test_artifact_methods import update
from tests.test_review_plan import expect

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

A = artifact_service_pb2
REPO = Path(__file__).resolve().parents[1]
Stubs = tuple["ArtifactServiceAsyncStub", "RunServiceAsyncStub", str]


@pytest.fixture(scope="module")
async def server(pg_server_url: str) -> AsyncIterator[Stubs]:
    async with serve_fresh(pg_server_url) as (target, _, url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel), url


async def at(artifacts: ArtifactServiceAsyncStub, artifact_id: str, version: int) -> A.GetArtifactResponse:
    return await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact_id, view=A.ARTIFACT_VIEW_FULL,
                                                            artifact_version=version))


async def markdown(artifacts: ArtifactServiceAsyncStub, artifact_id: str, version: int = 0) -> tuple[str, int]:
    done = await artifacts.CompileArtifact(A.CompileArtifactRequest(
        artifact_id=artifact_id, format=A.COMPILE_FORMAT_MARKDOWN, artifact_version=version))
    return done.content, done.artifact_version


async def test_every_version_is_the_document_as_it_was(server: Stubs) -> None:
    artifacts, runs, _ = server
    artifact = await create_artifact(artifacts, 2500)
    run = await start_run(runs, artifact.id, leaf_words=600)
    events = await watch(runs, run.id)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    after_run, run_version = await markdown(artifacts, artifact.id)

    # Each write step's event says which blocks it applied at which version: at that version the node is
    # written with exactly those blocks; one version before, it was not written yet.
    applied = [e.blocks_applied for e in events if e.WhichOneof("payload") == "blocks_applied"]
    assert len(applied) >= 3
    for step in applied:
        then, before = await at(artifacts, artifact.id, step.artifact_version), \
            await at(artifacts, artifact.id, step.artifact_version - 1)
        node = next(n for n in then.nodes if n.id == step.node_id)
        assert node.state == artifact_pb2.NODE_STATE_WRITTEN and then.artifact.version == step.artifact_version
        assert [b.id for b in then.blocks if b.node_id == step.node_id] == list(step.block_ids)
        assert next(n for n in before.nodes if n.id == step.node_id).state == artifact_pb2.NODE_STATE_PLANNED
        assert not [b for b in before.blocks if b.node_id == step.node_id]
    # Version 1: the artifact as created, its root planned and nothing written.
    first = await at(artifacts, artifact.id, 1)
    assert [n.state for n in first.nodes] == [artifact_pb2.NODE_STATE_PLANNED] and not first.blocks
    assert first.artifact.word_count == 0 and first.artifact.title == artifact.title

    # Later changes: a person's edit, a new title, a section deleted.
    view = await at(artifacts, artifact.id, run_version)
    block = view.blocks[0]
    await artifacts.EditBlock(A.EditBlockRequest(block_id=block.id, block=artifact_pb2.Block(
        kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="Rewritten by a person."), request_id=str(uuid.uuid4())))
    await artifacts.UpdateArtifact(update(artifact.id, title="Storage, second edition"))
    last_section = [n for n in view.nodes if n.depth == 1][-1]
    await artifacts.DeleteNode(A.DeleteNodeRequest(node_id=last_section.id, request_id=str(uuid.uuid4())))
    now, current = await markdown(artifacts, artifact.id)
    assert current == run_version + 3 and "Rewritten by a person." in now and last_section.title not in now

    # The document at the run's end is byte for byte what was compiled then; now is now.
    assert await markdown(artifacts, artifact.id, run_version) == (after_run, run_version)
    assert await markdown(artifacts, artifact.id, current) == (now, current)
    edited = await at(artifacts, artifact.id, run_version + 1)
    assert edited.artifact.title == artifact.title and edited.blocks[0].text == "Rewritten by a person."
    assert (await at(artifacts, artifact.id, run_version + 2)).artifact.title == "Storage, second edition"
    assert last_section.id in {n.id for n in (await at(artifacts, artifact.id, run_version + 2)).nodes}
    assert last_section.id not in {n.id for n in (await at(artifacts, artifact.id, current)).nodes}
    # Every version compiles, and the binary formats take a version too.
    for version in range(1, current + 1):
        assert (await markdown(artifacts, artifact.id, version))[1] == version
    pdf = await artifacts.CompileArtifact(A.CompileArtifactRequest(
        artifact_id=artifact.id, format=A.COMPILE_FORMAT_DOCX, artifact_version=run_version))
    assert pdf.binary_content and pdf.artifact_version == run_version

    await expect(grpc.StatusCode.OUT_OF_RANGE, "ARTIFACT_VERSION_OUT_OF_RANGE", at(artifacts, artifact.id, current + 1))
    await expect(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", at(artifacts, artifact.id, -1))


async def test_a_version_older_than_the_kept_history_is_refused(server: Stubs) -> None:
    artifacts, runs, url = server
    artifact = await create_artifact(artifacts, 1200)
    await watch(runs, (await start_run(runs, artifact.id)).id)
    current = (await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id))).artifact.version
    # As for an artifact written before migration 0007: no history, then the migration's own backfill.
    spec = importlib.util.spec_from_file_location("ir_versions", REPO / "migrations/versions/0007_ir_versions.py")
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    with psycopg.connect(url) as conn:
        for table in ("artifact_versions", "node_versions"):
            conn.execute(f"DELETE FROM {table} WHERE artifact_id = %s", (artifact.id,))
        for backfill in (migration.BACKFILL_NODES, migration.BACKFILL_ARTIFACTS):
            conn.execute(backfill + " WHERE a.id = %s", (artifact.id,))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await at(artifacts, artifact.id, 1)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"from version {current}" in (raised.value.details() or "")
    kept = await at(artifacts, artifact.id, current)
    assert kept.artifact.version == current and kept.blocks and len(kept.nodes) > 1
    assert await markdown(artifacts, artifact.id, current) == await markdown(artifacts, artifact.id)


async def test_fork_copies_a_version_into_an_artifact_of_its_own(server: Stubs) -> None:
    artifacts, runs, url = server
    artifact = await create_artifact(artifacts, 2500)
    await watch(runs, (await start_run(runs, artifact.id, leaf_words=600)).id)
    written, version = await markdown(artifacts, artifact.id)
    original = await at(artifacts, artifact.id, version)
    person = await artifacts.CreateNode(A.CreateNodeRequest(
        parent_id=original.artifact.root_node_id, node=artifact_pb2.Node(title="Appendix", target_words=300),
        request_id=str(uuid.uuid4())))
    edited = original.blocks[0]
    await artifacts.EditBlock(A.EditBlockRequest(block_id=edited.id, block=artifact_pb2.Block(
        kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="Only in the original."), request_id=str(uuid.uuid4())))

    request = A.ForkArtifactRequest(artifact_id=artifact.id, artifact_version=version, request_id=str(uuid.uuid4()))
    fork = (await artifacts.ForkArtifact(request)).artifact
    assert (await artifacts.ForkArtifact(request)).artifact.id == fork.id  # idempotent
    assert fork.id != artifact.id and (fork.forked_from_artifact_id, fork.forked_from_version) == (artifact.id, version)
    assert fork.version == 1 and fork.word_count == original.artifact.word_count
    copy = await at(artifacts, fork.id, 1)
    # The same document, under ids of its own; the original's later edits are not in it.
    assert [(n.title, n.state, n.depth, n.target_words) for n in copy.nodes] == \
        [(n.title, n.state, n.depth, n.target_words) for n in original.nodes]
    assert [(b.kind, b.text, b.origin) for b in copy.blocks] == [(b.kind, b.text, b.origin) for b in original.blocks]
    assert not {n.id for n in copy.nodes} & {n.id for n in original.nodes}
    assert not {b.id for b in copy.blocks} & {b.id for b in original.blocks}
    forked_md, _ = await markdown(artifacts, fork.id)
    body = written.split("\n---\n", 1)[1]  # the front matter names the artifact and its version
    assert forked_md.split("\n---\n", 1)[1] == body and "Only in the original." not in forked_md
    # Forking now takes the person's section and edit too; either copy lives on by itself.
    now_fork = (await artifacts.ForkArtifact(A.ForkArtifactRequest(artifact_id=artifact.id,
                                                                   request_id=str(uuid.uuid4())))).artifact
    now_copy = await at(artifacts, now_fork.id, 1)
    assert "Appendix" in {n.title for n in now_copy.nodes} and person.node.id not in {n.id for n in now_copy.nodes}
    assert "Only in the original." in {b.text for b in now_copy.blocks}
    run = await start_run(runs, now_fork.id)  # the appendix is written in the fork only
    assert (await watch(runs, run.id))[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    appendix = next(n for n in (await at(artifacts, now_fork.id, 0)).nodes if n.title == "Appendix")
    assert appendix.state == artifact_pb2.NODE_STATE_WRITTEN
    assert next(n for n in (await at(artifacts, artifact.id, version + 2)).nodes
                if n.title == "Appendix").state == artifact_pb2.NODE_STATE_PLANNED
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), bool_and(operation = 'create') FROM change_events WHERE artifact_id = %s",
                           (fork.id,)).fetchone()
    assert row == (len(copy.blocks), True)
    await expect(grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND", artifacts.ForkArtifact(A.ForkArtifactRequest(
        artifact_id=str(uuid.uuid4()))))
