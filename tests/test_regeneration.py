"""Regeneration of a subtree, human edits through Apply, pinning, and block history (provenance)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import pytest

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2
from tests.helpers import create_artifact, error_info, start_run, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub


async def full(artifacts: ArtifactServiceAsyncStub, artifact_id: str) -> artifact_service_pb2.GetArtifactResponse:
    return await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact_id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))


def subtree(view: artifact_service_pb2.GetArtifactResponse, root: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for n in view.nodes:
        children.setdefault(n.parent_id, []).append(n.id)
    out, stack = set(), [root]
    while stack:
        node = stack.pop()
        out.add(node)
        stack.extend(children.get(node, []))
    return out


async def test_regenerate_a_subtree_keeps_everything_else_and_pinned_edits(
    artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub
) -> None:
    artifact = await create_artifact(artifacts, 4000)
    first = await start_run(runs, artifact.id)
    await watch(runs, first.id)
    before = await full(artifacts, artifact.id)
    scope = next(n for n in before.nodes if n.depth == 1 and n.state == artifact_pb2.NODE_STATE_SPLIT)
    inside = subtree(before, scope.id)
    leaves_inside = [n for n in before.nodes if n.id in inside and n.state == artifact_pb2.NODE_STATE_WRITTEN]
    assert len(leaves_inside) >= 2
    outside = {b.id: b for b in before.blocks if b.node_id not in inside}

    # A person edits one paragraph in the first leaf: it goes through Apply and is pinned.
    pinned_leaf = leaves_inside[0]
    target = next(b for b in before.blocks
                  if b.node_id == pinned_leaf.id and b.kind == artifact_pb2.BLOCK_KIND_PARAGRAPH)
    edit = artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="A person rewrote this paragraph.")
    edited = (await artifacts.EditBlock(artifact_service_pb2.EditBlockRequest(
        block_id=target.id, block=edit, expected_version=target.version, request_id=str(uuid.uuid4())))).block
    assert edited.pinned and edited.origin == artifact_pb2.CHANGE_ORIGIN_HUMAN and edited.version == target.version + 1
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await artifacts.EditBlock(artifact_service_pb2.EditBlockRequest(
            block_id=target.id, block=edit, expected_version=target.version))
    assert stale.value.code() == grpc.StatusCode.ABORTED and error_info(stale.value).reason == "STALE_VERSION"

    regen = (await runs.StartRun(run_service_pb2.StartRunRequest(
        artifact_id=artifact.id, scope_node_id=scope.id, instruction="shorter, more concrete",
        request_id=str(uuid.uuid4())))).run
    assert regen.scope_node_id == scope.id and regen.instruction == "shorter, more concrete"
    events = await watch(runs, regen.id)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    rewritten = {e.blocks_applied.node_id for e in events if e.WhichOneof("payload") == "blocks_applied"}
    skipped = {e.node_skipped.node_id for e in events if e.WhichOneof("payload") == "node_skipped"}
    assert skipped == {pinned_leaf.id}
    assert rewritten == {n.id for n in leaves_inside} - {pinned_leaf.id}
    assert not any(e.WhichOneof("payload") == "node_split" for e in events)  # structure kept

    after = await full(artifacts, artifact.id)
    after_blocks = {b.id: b for b in after.blocks}
    for block_id, old in outside.items():  # nothing outside the scope changed
        assert after_blocks[block_id] == old
    assert after_blocks[target.id].text == "A person rewrote this paragraph." and after_blocks[target.id].pinned
    for leaf in rewritten:
        assert any(b.version > 1 for b in after.blocks if b.node_id == leaf)

    # Old versions stay recoverable through the block's history.
    changed = next(b for b in after.blocks if b.node_id in rewritten and b.version == 2)
    old_text = next(b for b in before.blocks if b.id == changed.id).text
    history = (await artifacts.ListBlockChanges(artifact_service_pb2.ListBlockChangesRequest(
        block_id=changed.id))).change_events
    assert [c.operation for c in history] == [artifact_pb2.CHANGE_OPERATION_CREATE,
                                              artifact_pb2.CHANGE_OPERATION_UPDATE]
    assert [c.run_id for c in history] == [first.id, regen.id]
    assert all(c.origin == artifact_pb2.CHANGE_ORIGIN_LLM and c.llm_call_id and c.model for c in history)
    assert history[1].before.text == old_text and history[1].after.text == changed.text
    human = (await artifacts.ListBlockChanges(artifact_service_pb2.ListBlockChangesRequest(
        block_id=target.id))).change_events
    assert human[-1].origin == artifact_pb2.CHANGE_ORIGIN_HUMAN and not human[-1].run_id


async def test_edit_block_validation(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub) -> None:
    artifact = await create_artifact(artifacts, 500)
    await watch(runs, (await start_run(runs, artifact.id)).id)
    block = (await full(artifacts, artifact.id)).blocks[0]
    for bad, reason in [
        (artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="  "), "INVALID_BLOCK"),
        (artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_HEADING, text="H", heading_level=9), "INVALID_BLOCK"),
        (artifact_pb2.Block(text="no kind"), "MISSING_FIELD"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await artifacts.EditBlock(artifact_service_pb2.EditBlockRequest(block_id=block.id, block=bad))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(raised.value).reason == reason
    unchanged = (await full(artifacts, artifact.id)).blocks[0]
    assert unchanged == block
