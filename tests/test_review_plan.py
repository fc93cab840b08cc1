"""Review the plan before writing, over real gRPC and PostgreSQL: a review_plan run stops in
AWAITING_REVIEW with the outline, people edit it (UpdateNode, CreateNode, DeleteNode, MoveNode),
ResumeRun writes exactly the edited outline; illegal edits write nothing; cancel and a restart."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, error_info, in_order, start_run, until_state, watch
from tests.support.server_process import ServerProcess

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

S = run_pb2
Stubs = tuple["ArtifactServiceAsyncStub", "RunServiceAsyncStub", str]


@pytest.fixture(scope="module")
async def server(pg_server_url: str) -> AsyncIterator[Stubs]:
    # A little model latency, so that a run started in a test is still going when the test looks.
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "40"}) as (target, _, url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel), url


def counts(url: str, artifact_id: str, run_id: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        def one(sql: str, *params: str) -> int:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return int(row[0])
        return {
            "nodes": one("SELECT count(*) FROM nodes WHERE artifact_id = %s", artifact_id),
            "blocks": one("SELECT count(*) FROM blocks WHERE artifact_id = %s", artifact_id),
            "changes": one("SELECT count(*) FROM change_events WHERE artifact_id = %s", artifact_id),
            "events": one("SELECT count(*) FROM run_events WHERE run_id = %s", run_id),
            "version": one("SELECT version FROM artifacts WHERE id = %s", artifact_id),
            "keys": one("SELECT count(*) FROM idempotency_keys"),
        }


def outline_of(url: str, artifact_id: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, parent_id, ordinal, depth, title, intent, target_words, state FROM nodes "
                            "WHERE artifact_id = %s ORDER BY id", (artifact_id,)).fetchall()


async def full(artifacts: ArtifactServiceAsyncStub, artifact_id: str) -> artifact_service_pb2.GetArtifactResponse:
    return await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact_id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))


def children(view: artifact_service_pb2.GetArtifactResponse, parent_id: str) -> list[artifact_pb2.Node]:
    return sorted((n for n in view.nodes if n.parent_id == parent_id), key=lambda n: n.ordinal)


async def expect(code: grpc.StatusCode, reason: str, call: Awaitable[object]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, (raised.value.code(), raised.value.details())
    assert error_info(raised.value).reason == reason, raised.value.details()


async def review_run(artifacts: ArtifactServiceAsyncStub, runs: RunServiceAsyncStub, words: int,
                     **options: object) -> tuple[artifact_pb2.Artifact, run_pb2.Run, list[run_pb2.RunEvent]]:
    artifact = await create_artifact(artifacts, words)
    run = await start_run(runs, artifact.id, review_plan=True, **options)
    assert run.options.review_plan
    events = await until_state(runs, run.id, S.RUN_STATE_AWAITING_REVIEW)
    return artifact, run, events


def update(node_id: str, request_id: str | None = None, **fields: object) -> artifact_service_pb2.UpdateNodeRequest:
    return artifact_service_pb2.UpdateNodeRequest(
        node=artifact_pb2.Node(id=node_id, **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=list(fields)), request_id=request_id or str(uuid.uuid4()))


def create(parent_id: str, title: str, words: int, position: int | None = None, intent: str = "",
           request_id: str | None = None) -> artifact_service_pb2.CreateNodeRequest:
    request = artifact_service_pb2.CreateNodeRequest(
        parent_id=parent_id, node=artifact_pb2.Node(title=title, intent=intent, target_words=words),
        request_id=request_id or str(uuid.uuid4()))
    if position is not None:
        request.position = position
    return request


def move(node_id: str, parent_id: str = "", position: int | None = None,
         request_id: str | None = None) -> artifact_service_pb2.MoveNodeRequest:
    request = artifact_service_pb2.MoveNodeRequest(node_id=node_id, parent_id=parent_id,
                                                   request_id=request_id or str(uuid.uuid4()))
    if position is not None:
        request.position = position
    return request


def delete(node_id: str, request_id: str | None = None) -> artifact_service_pb2.DeleteNodeRequest:
    return artifact_service_pb2.DeleteNodeRequest(node_id=node_id, request_id=request_id or str(uuid.uuid4()))


async def test_review_edit_then_resume_writes_exactly_the_edited_outline(server: Stubs) -> None:
    artifacts, runs, url = server
    # max_depth 1: the root's four children are the sections written (whatever budgets the split gives).
    artifact, run, events = await review_run(artifacts, runs, 4000, max_depth=1)
    # Planned, nothing written: every node PLANNED or SPLIT, no block, no content step.
    kinds = [e.WhichOneof("payload") for e in events]
    assert "blocks_applied" not in kinds and "node_split" in kinds
    assert kinds[-2:] == ["plan_ready", "run_state_changed"]
    ready = events[-2].plan_ready
    view = await full(artifacts, artifact.id)
    assert {n.state for n in view.nodes} <= {artifact_pb2.NODE_STATE_PLANNED, artifact_pb2.NODE_STATE_SPLIT}
    assert [p.node_id for p in ready.outline] == [n.id for n in view.nodes]
    assert ready.artifact_version == view.artifact.version
    assert counts(url, artifact.id, run.id)["blocks"] == 0
    got = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert got.state == S.RUN_STATE_AWAITING_REVIEW

    root = artifact.root_node_id
    first, second, third, fourth = children(view, root)
    # Update (with idempotency: a repeat changes nothing more).
    rid = str(uuid.uuid4())
    edited = (await artifacts.UpdateNode(update(first.id, rid, title="Why storage matters now",
                                                target_words=600))).node
    assert edited.title == "Why storage matters now" and edited.target_words == 600
    before = counts(url, artifact.id, run.id)
    again = (await artifacts.UpdateNode(update(first.id, rid, title="Why storage matters now",
                                               target_words=600))).node
    assert again.id == edited.id and counts(url, artifact.id, run.id) == before
    # Create at position 1 (idempotent too: one node, the same id).
    rid = str(uuid.uuid4())
    created = (await artifacts.CreateNode(create(root, "A planner's checklist", 300, 1, "A short checklist", rid))).node
    assert created.state == artifact_pb2.NODE_STATE_PLANNED and created.ordinal == 1
    before = counts(url, artifact.id, run.id)
    assert (await artifacts.CreateNode(create(root, "A planner's checklist", 300, 1, "A short checklist",
                                              rid))).node.id == created.id
    assert counts(url, artifact.id, run.id) == before
    # Delete (idempotent: the repeat answers with the artifact, nothing more is deleted).
    rid = str(uuid.uuid4())
    await artifacts.DeleteNode(delete(third.id, rid))
    before = counts(url, artifact.id, run.id)
    assert (await artifacts.DeleteNode(delete(third.id, rid))).artifact.id == artifact.id
    assert counts(url, artifact.id, run.id) == before
    # Move the last section to the front (idempotent).
    rid = str(uuid.uuid4())
    assert (await artifacts.MoveNode(move(fourth.id, position=0, request_id=rid))).node.ordinal == 0
    before = counts(url, artifact.id, run.id)
    assert (await artifacts.MoveNode(move(fourth.id, position=0, request_id=rid))).node.ordinal == 0
    assert counts(url, artifact.id, run.id) == before

    view = await full(artifacts, artifact.id)
    expected = [fourth.title, "Why storage matters now", "A planner's checklist", second.title]
    assert [n.title for n in children(view, root)] == expected
    assert [n.ordinal for n in children(view, root)] == [0, 1, 2, 3]
    total = sum(n.target_words for n in children(view, root))
    assert view.artifact.target_words == total == view.nodes[0].target_words  # the budget follows the children
    assert third.id not in {n.id for n in view.nodes}

    await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id, request_id=str(uuid.uuid4())))
    everything = await asyncio.wait_for(watch(runs, run.id), 120)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    states = [e.run_state_changed.to_state for e in everything if e.WhichOneof("payload") == "run_state_changed"]
    assert states == [S.RUN_STATE_PENDING, S.RUN_STATE_RUNNING, S.RUN_STATE_AWAITING_REVIEW, S.RUN_STATE_PENDING,
                      S.RUN_STATE_RUNNING, S.RUN_STATE_COMPLETED]
    edits = [e.outline_edited for e in everything if e.WhichOneof("payload") == "outline_edited"]
    assert [e.kind for e in edits] == [S.OUTLINE_EDIT_KIND_UPDATE, S.OUTLINE_EDIT_KIND_CREATE,
                                      S.OUTLINE_EDIT_KIND_DELETE, S.OUTLINE_EDIT_KIND_MOVE]
    assert [p.title for p in edits[-1].outline if p.parent_id == root] == expected
    # No second planning pass: the only splits are the ones before the review.
    at_review = next(e.seq for e in everything if e.WhichOneof("payload") == "plan_ready")
    assert not [e for e in everything if e.seq > at_review and e.WhichOneof("payload") == "node_split"]

    view = await full(artifacts, artifact.id)
    assert [n.title for n in children(view, root)] == expected
    leaves = [n for n in view.nodes if not children(view, n.id)]
    assert all(n.state == artifact_pb2.NODE_STATE_WRITTEN for n in leaves)
    written = collections.Counter(e.blocks_applied.node_id for e in everything
                                  if e.WhichOneof("payload") == "blocks_applied")
    assert set(written) == {n.id for n in leaves} and set(written.values()) == {1}
    assert created.id in written and third.id not in written
    assert {b.node_id for b in view.blocks} == {n.id for n in leaves}
    doc = (await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
        artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
    assert in_order(doc, [f"## {t}" for t in expected])
    assert third.title not in doc


async def test_a_created_section_is_written_like_any_other_and_split_when_it_is_big(server: Stubs) -> None:
    artifacts, runs, _url = server
    # 600 words fit one call: the plan is the root alone, and people give it sections.
    artifact, run, events = await review_run(artifacts, runs, 600)
    assert [p.node_id for p in events[-2].plan_ready.outline] == [artifact.root_node_id]
    big = (await artifacts.CreateNode(create(artifact.root_node_id, "The long chapter", 2500))).node
    small = (await artifacts.CreateNode(create(artifact.root_node_id, "A short note", 300, 0))).node
    view = await full(artifacts, artifact.id)
    assert view.nodes[0].state == artifact_pb2.NODE_STATE_SPLIT and view.artifact.target_words == 2800
    assert [n.id for n in children(view, artifact.root_node_id)] == [small.id, big.id]
    await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id))
    everything = await asyncio.wait_for(watch(runs, run.id), 120)
    assert everything[-1].run_state_changed.to_state == S.RUN_STATE_COMPLETED
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    view = await full(artifacts, artifact.id)
    by_id = {n.id: n for n in view.nodes}
    assert by_id[small.id].state == artifact_pb2.NODE_STATE_WRITTEN  # fits one call: written
    assert by_id[big.id].state == artifact_pb2.NODE_STATE_SPLIT  # 2500 > leaf_words: split, then written
    assert len(children(view, big.id)) == 3
    assert all(n.state == artifact_pb2.NODE_STATE_WRITTEN for n in view.nodes if not children(view, n.id))


async def test_illegal_edits_are_refused_and_write_nothing(server: Stubs) -> None:
    artifacts, runs, url = server
    artifact, run, _ = await review_run(artifacts, runs, 3000, max_depth=1)
    root = artifact.root_node_id
    view = await full(artifacts, artifact.id)
    first, second, *_ = children(view, root)
    # A section with one child (an edit that is legal), for the last-child rule.
    await artifacts.CreateNode(create(root, "Appendix", 200))
    view = await full(artifacts, artifact.id)
    before = counts(url, artifact.id, run.id)
    outline = outline_of(url, artifact.id)
    bad = artifact_service_pb2
    INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    cases: list[tuple[grpc.StatusCode, str, Awaitable[object]]] = [
        (INVALID, "ROOT_NODE", artifacts.DeleteNode(delete(root))),
        (INVALID, "ROOT_NODE", artifacts.MoveNode(move(root, first.id))),
        (INVALID, "MOVE_CYCLE", artifacts.MoveNode(move(first.id, first.id))),
        (INVALID, "POSITION_OUT_OF_RANGE", artifacts.CreateNode(create(root, "Late", 200, 99))),
        (INVALID, "POSITION_OUT_OF_RANGE", artifacts.MoveNode(move(first.id, position=-1))),
        (INVALID, "DEPTH_EXCEEDED", artifacts.CreateNode(create(first.id, "Too deep", 200))),
        (INVALID, "DEPTH_EXCEEDED", artifacts.MoveNode(move(second.id, first.id))),
        (INVALID, "DUPLICATE_TITLE", artifacts.CreateNode(create(root, first.title.upper(), 200))),
        (INVALID, "DUPLICATE_TITLE", artifacts.UpdateNode(update(second.id, title=first.title))),
        (INVALID, "EMPTY_TITLE", artifacts.UpdateNode(update(first.id, title="  "))),
        (INVALID, "TARGET_FOLLOWS_CHILDREN", artifacts.UpdateNode(update(root, target_words=9000))),
        (INVALID, "TARGET_WORDS_OUT_OF_RANGE", artifacts.UpdateNode(update(first.id, target_words=10))),
        (INVALID, "MISSING_FIELD", artifacts.UpdateNode(bad.UpdateNodeRequest(node=artifact_pb2.Node(id=first.id)))),
        (INVALID, "INVALID_FIELD_MASK", artifacts.UpdateNode(bad.UpdateNodeRequest(
            node=artifact_pb2.Node(id=first.id), update_mask=field_mask_pb2.FieldMask(paths=["state"])))),
        (INVALID, "MALFORMED_ID", artifacts.DeleteNode(delete("not-a-node"))),
        (grpc.StatusCode.NOT_FOUND, "NODE_NOT_FOUND", artifacts.DeleteNode(delete(str(uuid.uuid4())))),
        (PRECONDITION, "ILLEGAL_RUN_TRANSITION", runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))),
    ]
    for code, reason, call in cases:
        await expect(code, reason, call)
    # The last child of a section is not deleted nor moved away: give one section a single child.
    await expect(INVALID, "DEPTH_EXCEEDED", artifacts.CreateNode(create(second.id, "Only child", 100)))
    assert counts(url, artifact.id, run.id) == before and outline_of(url, artifact.id) == outline
    got = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
    assert got.state == S.RUN_STATE_AWAITING_REVIEW
    await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id))

    # Without a run (and a deeper limit): the last-child rule, and a section with written content.
    other = await create_artifact(artifacts, 600)
    parent = (await artifacts.CreateNode(create(other.root_node_id, "Part one", 300))).node
    await artifacts.CreateNode(create(other.root_node_id, "Part two", 300))
    only = (await artifacts.CreateNode(create(parent.id, "Only section", 300))).node
    outline = outline_of(url, other.id)
    await expect(PRECONDITION, "LAST_CHILD", artifacts.DeleteNode(delete(only.id)))
    await expect(PRECONDITION, "LAST_CHILD", artifacts.MoveNode(move(only.id, other.root_node_id)))
    assert outline_of(url, other.id) == outline

    # An active run that does not await review: its artifact's outline is not edited.
    busy = await create_artifact(artifacts, 5000)
    running = await start_run(runs, busy.id)
    paused = (await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=running.id))).run
    assert paused.state in (S.RUN_STATE_PAUSING, S.RUN_STATE_PAUSED)
    before = counts(url, busy.id, running.id)
    await expect(PRECONDITION, "ARTIFACT_HAS_ACTIVE_RUN", artifacts.UpdateNode(update(busy.root_node_id, title="X")))
    await expect(PRECONDITION, "ARTIFACT_HAS_ACTIVE_RUN", artifacts.CreateNode(create(busy.root_node_id, "X", 100)))
    await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=running.id))
    after = counts(url, busy.id, running.id)
    assert {k: v for k, v in after.items() if k not in ("events", "keys")} == \
        {k: v for k, v in before.items() if k not in ("events", "keys")}


async def test_written_sections_are_frozen_while_a_regeneration_awaits_review(server: Stubs) -> None:
    artifacts, runs, url = server
    artifact = await create_artifact(artifacts, 2000)
    done = await start_run(runs, artifact.id)
    await asyncio.wait_for(watch(runs, done.id), 120)
    view = await full(artifacts, artifact.id)
    leaves = [n for n in view.nodes if not children(view, n.id)]
    first, second = leaves[0], leaves[-1]
    assert first.state == second.state == artifact_pb2.NODE_STATE_WRITTEN
    regen = (await runs.StartRun(run_service_pb2.StartRunRequest(
        artifact_id=artifact.id, scope_node_id=first.id, request_id=str(uuid.uuid4()),
        options=run_pb2.RunOptions(review_plan=True)))).run
    await until_state(runs, regen.id, S.RUN_STATE_AWAITING_REVIEW)
    before = counts(url, artifact.id, regen.id)
    await expect(grpc.StatusCode.FAILED_PRECONDITION, "NODE_WRITTEN",
                 artifacts.UpdateNode(update(first.id, title="Renamed")))
    await expect(grpc.StatusCode.FAILED_PRECONDITION, "NODE_WRITTEN", artifacts.DeleteNode(delete(second.id)))
    await expect(grpc.StatusCode.FAILED_PRECONDITION, "NODE_WRITTEN", artifacts.MoveNode(move(second.id, position=0)))
    await expect(grpc.StatusCode.FAILED_PRECONDITION, "PARENT_WRITTEN",
                 artifacts.CreateNode(create(first.id, "Under a written one", 100)))
    assert counts(url, artifact.id, regen.id) == before
    await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=regen.id))
    # With no run active, a written section may go: its blocks get DELETE change events (origin human).
    top = children(view, artifact.root_node_id)[-1]
    gone = {top.id} | {n.id for n in view.nodes if n.parent_id == top.id}
    blocks = [b for b in view.blocks if b.node_id in gone]
    assert blocks
    await artifacts.DeleteNode(delete(top.id))
    for b in blocks:
        history = (await artifacts.ListBlockChanges(artifact_service_pb2.ListBlockChangesRequest(
            block_id=b.id))).change_events
        assert history[-1].operation == artifact_pb2.CHANGE_OPERATION_DELETE
        assert history[-1].origin == artifact_pb2.CHANGE_ORIGIN_HUMAN
    after = await full(artifacts, artifact.id)
    assert after.artifact.word_count == view.artifact.word_count - sum(n.word_count for n in view.nodes if n.id in gone)
    assert after.artifact.target_words == sum(n.target_words for n in children(after, artifact.root_node_id))
    assert not gone & {n.id for n in after.nodes} and not gone & {b.node_id for b in after.blocks}


async def test_cancel_while_awaiting_review(server: Stubs) -> None:
    artifacts, runs, url = server
    artifact, run, _ = await review_run(artifacts, runs, 3000)
    cancelled = (await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id))).run
    assert cancelled.state == S.RUN_STATE_CANCELLED
    events = await asyncio.wait_for(watch(runs, run.id), 60)  # a cancelled run's stream ends
    assert events[-1].run_state_changed.to_state == S.RUN_STATE_CANCELLED
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert counts(url, artifact.id, run.id)["blocks"] == 0
    await expect(grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_RUN_TRANSITION",
                 runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id)))
    # No active run now: the outline is editable, and no run event is written for it.
    view = await full(artifacts, artifact.id)
    assert not view.artifact.active_run_id
    first = children(view, artifact.root_node_id)[0]
    await artifacts.UpdateNode(update(first.id, title="Edited after the cancel"))
    assert counts(url, artifact.id, run.id)["events"] == len(events)


async def test_a_restart_keeps_the_run_waiting_and_resume_completes_it(own_database: str) -> None:
    env = {"LACE_LEASE_TTL_S": "2"}
    a = ServerProcess(own_database, env=env).start()
    try:
        async with grpc.aio.insecure_channel(a.target) as channel:
            artifacts, runs = ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel)
            artifact, run, seen = await review_run(artifacts, runs, 3000)
    finally:
        a.kill()  # SIGKILL while the run awaits review
    with psycopg.connect(own_database) as conn:
        row = conn.execute("SELECT state, lease_owner, head_seq FROM runs WHERE id = %s", (run.id,)).fetchone()
    assert row == ("awaiting_review", None, seen[-1].seq)  # waiting, with no lease to expire

    b = ServerProcess(own_database, env=env).start()
    try:
        async with grpc.aio.insecure_channel(b.target) as channel:
            artifacts, runs = ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel)
            # B's executor claims what is claimable as it starts; a run that awaits review is not.
            probe = await create_artifact(artifacts, 600)
            await asyncio.wait_for(watch(runs, (await start_run(runs, probe.id)).id), 60)
            got = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
            assert got.state == S.RUN_STATE_AWAITING_REVIEW and got.head_seq == seen[-1].seq
            view = await full(artifacts, artifact.id)
            await artifacts.DeleteNode(delete(children(view, artifact.root_node_id)[-1].id))
            await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id))
            everything = await asyncio.wait_for(watch(runs, run.id), 120)
            view = await full(artifacts, artifact.id)
    finally:
        b.stop()
    assert everything[:len(seen)] == seen
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    assert everything[-1].run_state_changed.to_state == S.RUN_STATE_COMPLETED
    leaves = [n for n in view.nodes if not children(view, n.id)]
    assert leaves and all(n.state == artifact_pb2.NODE_STATE_WRITTEN for n in leaves)
