"""The standard methods over real gRPC and PostgreSQL: UpdateArtifact (AIP-134), DeleteArtifact
(AIP-135), and ListArtifacts / ListRuns with a filter (AIP-160) and order_by (AIP-132)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    source_service_pb2,
    source_service_pb2_grpc,
)
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, error_info, start_run, until_state, watch
from tests.test_review_plan import expect

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub
    from lace.v1.source_service_pb2_grpc import SourceServiceAsyncStub

S = run_pb2
A = artifact_service_pb2
Stubs = tuple["ArtifactServiceAsyncStub", "RunServiceAsyncStub", "SourceServiceAsyncStub", str]
INVALID, PRECONDITION, NOT_FOUND = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.NOT_FOUND)


@pytest.fixture(scope="module")
async def server(pg_server_url: str) -> AsyncIterator[Stubs]:
    # Its own database, so that listings hold only this module's artifacts and runs.
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "40"}) as (target, _, url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield (ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel),
                   source_service_pb2_grpc.SourceServiceStub(channel), url)


def update(artifact_id: str, request_id: str | None = None, **fields: object) -> A.UpdateArtifactRequest:
    return A.UpdateArtifactRequest(
        artifact=artifact_pb2.Artifact(id=artifact_id, **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=list(fields)), request_id=request_id or str(uuid.uuid4()))


def delete(artifact_id: str, request_id: str | None = None, allow_missing: bool = False) -> A.DeleteArtifactRequest:
    return A.DeleteArtifactRequest(artifact_id=artifact_id, request_id=request_id or str(uuid.uuid4()),
                                   allow_missing=allow_missing)


async def root_of(artifacts: ArtifactServiceAsyncStub, artifact_id: str) -> artifact_pb2.Node:
    view = await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact_id, view=A.ARTIFACT_VIEW_FULL))
    return next(n for n in view.nodes if not n.parent_id)


async def test_update_artifact_changes_the_masked_fields_through_apply(server: Stubs) -> None:
    artifacts, runs, _, _ = server
    artifact = await create_artifact(artifacts, 1200)
    root = await root_of(artifacts, artifact.id)
    request = update(artifact.id, title="Storage, revised", style="Plain and short.", target_words=1500,
                     brief="ignored: not in the mask")
    request.update_mask.paths.remove("brief")
    got = (await artifacts.UpdateArtifact(request)).artifact
    assert (got.title, got.style, got.target_words, got.brief) == \
        ("Storage, revised", "Plain and short.", 1500, artifact.brief)
    assert got.version == artifact.version + 1
    # The root section follows: the document's heading and its budget.
    new_root = await root_of(artifacts, artifact.id)
    assert (new_root.title, new_root.target_words, new_root.intent) == ("Storage, revised", 1500, root.intent)
    # A repeat of the request is answered without a second write.
    again = (await artifacts.UpdateArtifact(request)).artifact
    assert again.version == got.version

    # The brief: the root's intent (the brief's start) follows it too.
    briefed = (await artifacts.UpdateArtifact(update(artifact.id, brief="  A short brief about batteries.  "))).artifact
    assert briefed.brief == "A short brief about batteries." and briefed.version == got.version + 1
    assert (await root_of(artifacts, artifact.id)).intent == "A short brief about batteries."

    # The run writes the updated document: its heading is the new title.
    run = await start_run(runs, artifact.id)
    assert S.RunState.Name((await watch(runs, run.id))[-1].run_state_changed.to_state) == "RUN_STATE_COMPLETED"
    compiled = await artifacts.CompileArtifact(A.CompileArtifactRequest(artifact_id=artifact.id,
                                                                        format=A.COMPILE_FORMAT_MARKDOWN))
    assert "# Storage, revised" in compiled.content

    # Once planned into sections, the length follows the sections: refused, nothing written.
    written = (await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id))).artifact
    await expect(INVALID, "TARGET_FOLLOWS_CHILDREN", artifacts.UpdateArtifact(update(artifact.id, target_words=900)))
    # The same length as now is no change to refuse.
    same = (await artifacts.UpdateArtifact(update(artifact.id, target_words=written.target_words,
                                                  title="Storage, final"))).artifact
    assert same.title == "Storage, final" and same.word_count == written.word_count


async def test_update_artifact_refuses_bad_requests_and_writes_nothing(server: Stubs) -> None:
    artifacts, runs, _, _ = server
    artifact = await create_artifact(artifacts, 1200)
    await expect(INVALID, "MISSING_FIELD", artifacts.UpdateArtifact(A.UpdateArtifactRequest(
        artifact=artifact_pb2.Artifact(id=artifact.id, title="x"))))
    await expect(INVALID, "INVALID_FIELD_MASK", artifacts.UpdateArtifact(update(artifact.id, word_count=3)))
    await expect(INVALID, "EMPTY_TITLE", artifacts.UpdateArtifact(update(artifact.id, title="   ")))
    await expect(INVALID, "EMPTY_BRIEF", artifacts.UpdateArtifact(update(artifact.id, brief="")))
    await expect(INVALID, "FIELD_TOO_LONG", artifacts.UpdateArtifact(update(artifact.id, style="s" * 2001)))
    await expect(NOT_FOUND, "ARTIFACT_NOT_FOUND", artifacts.UpdateArtifact(update(str(uuid.uuid4()), title="x")))
    reused = str(uuid.uuid4())
    await artifacts.UpdateArtifact(update(artifact.id, reused, title="Once"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await artifacts.UpdateArtifact(update(artifact.id, reused, title="Twice"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id))).artifact.version == \
        artifact.version + 1  # only the one good update

    # A running run reads the brief: no changes under it.
    run = await start_run(runs, artifact.id)
    await until_state(runs, run.id, S.RUN_STATE_RUNNING)
    await expect(PRECONDITION, "ARTIFACT_HAS_ACTIVE_RUN", artifacts.UpdateArtifact(update(artifact.id, title="x")))
    await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id, request_id=str(uuid.uuid4())))
    await watch(runs, run.id)


async def test_update_artifact_while_a_run_awaits_review_is_an_event_of_that_run(server: Stubs) -> None:
    artifacts, runs, _, _ = server
    artifact = await create_artifact(artifacts, 2500)
    run = await start_run(runs, artifact.id, review_plan=True)
    seen = await until_state(runs, run.id, S.RUN_STATE_AWAITING_REVIEW)
    got = (await artifacts.UpdateArtifact(update(artifact.id, title="Storage for planners",
                                                 style="Formal."))).artifact
    listed = await runs.ListRunEvents(run_service_pb2.ListRunEventsRequest(run_id=run.id, after_seq=seen[-1].seq))
    [edited] = listed.events
    assert edited.seq == seen[-1].seq + 1 and edited.outline_edited.kind == S.OUTLINE_EDIT_KIND_UPDATE_ARTIFACT
    assert edited.outline_edited.artifact_version == got.version
    assert edited.outline_edited.outline[0].title == "Storage for planners"
    # A planned document's length follows its sections.
    await expect(INVALID, "TARGET_FOLLOWS_CHILDREN", artifacts.UpdateArtifact(update(artifact.id, target_words=900)))
    await runs.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.id, request_id=str(uuid.uuid4())))
    assert (await watch(runs, run.id, seen[-1].seq + 1))[-1].run_state_changed.to_state == S.RUN_STATE_COMPLETED


def owned_rows(url: str, artifact_id: str, run_ids: list[str]) -> dict[str, int]:
    """How many rows of every table the artifact owns, directly or through its runs and sources."""
    with psycopg.connect(url) as conn:
        def one(sql: str, *params: object) -> int:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return int(row[0])
        by_artifact = {t: one(f"SELECT count(*) FROM {t} WHERE artifact_id = %s", artifact_id)
                       for t in ("nodes", "blocks", "change_events", "runs", "sources", "passages")}
        by_run = {t: one(f"SELECT count(*) FROM {t} WHERE run_id = ANY(%s::uuid[])", run_ids)
                  for t in ("run_events", "llm_calls", "mirror_cursors")}
        return {"artifacts": one("SELECT count(*) FROM artifacts WHERE id = %s", artifact_id), **by_artifact, **by_run}


async def test_delete_artifact_removes_everything_it_owns_in_one_go(server: Stubs) -> None:
    artifacts, runs, sources, url = server
    keep = await create_artifact(artifacts, 1200, title="Kept")
    artifact = await create_artifact(artifacts, 1200)
    await sources.AddSource(source_service_pb2.AddSourceRequest(
        artifact_id=artifact.id, title="Notes", media_type="text/markdown",
        text="Pumped hydro stores energy by moving water uphill.\n\nBatteries respond in milliseconds.",
        request_id=str(uuid.uuid4())))
    run = await start_run(runs, artifact.id)
    await watch(runs, run.id)
    block = (await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id,
                                                             view=A.ARTIFACT_VIEW_FULL))).blocks[0]
    await artifacts.EditBlock(A.EditBlockRequest(block_id=block.id, block=artifact_pb2.Block(
        kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="A person's paragraph."), request_id=str(uuid.uuid4())))
    before = owned_rows(url, artifact.id, [run.id])
    assert all(before[t] > 0 for t in ("artifacts", "nodes", "blocks", "change_events", "runs", "sources",
                                       "passages", "run_events", "llm_calls")), before
    kept_before = owned_rows(url, keep.id, [])

    request = delete(artifact.id)
    await artifacts.DeleteArtifact(request)
    assert set(owned_rows(url, artifact.id, [run.id]).values()) == {0}
    assert owned_rows(url, keep.id, []) == kept_before  # another artifact is untouched
    await expect(NOT_FOUND, "ARTIFACT_NOT_FOUND", artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id)))
    await expect(NOT_FOUND, "RUN_NOT_FOUND", runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id)))
    await expect(NOT_FOUND, "ARTIFACT_NOT_FOUND", runs.ListRuns(run_service_pb2.ListRunsRequest(
        artifact_id=artifact.id)))
    # A retry of the same request succeeds again; a new one finds nothing, unless missing is allowed.
    await artifacts.DeleteArtifact(request)
    await expect(NOT_FOUND, "ARTIFACT_NOT_FOUND", artifacts.DeleteArtifact(delete(artifact.id)))
    await artifacts.DeleteArtifact(delete(artifact.id, allow_missing=True))


async def test_delete_artifact_is_refused_while_a_run_is_active(server: Stubs) -> None:
    artifacts, runs, _, url = server
    artifact = await create_artifact(artifacts, 2500)
    run = await start_run(runs, artifact.id, review_plan=True)
    await until_state(runs, run.id, S.RUN_STATE_AWAITING_REVIEW)
    before = owned_rows(url, artifact.id, [run.id])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await artifacts.DeleteArtifact(delete(artifact.id))
    assert raised.value.code() == PRECONDITION
    info = error_info(raised.value)
    assert info.reason == "ARTIFACT_HAS_ACTIVE_RUN" and info.metadata["run_id"] == run.id
    assert owned_rows(url, artifact.id, [run.id]) == before
    await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id, request_id=str(uuid.uuid4())))
    await watch(runs, run.id)
    await artifacts.DeleteArtifact(delete(artifact.id))
    assert set(owned_rows(url, artifact.id, [run.id]).values()) == {0}


async def list_runs(runs: RunServiceAsyncStub, filter: str = "", order_by: str = "", page_size: int = 2,
                    artifact_id: str = "") -> list[str]:
    """Every run the query lists, page by page."""
    ids: list[str] = []
    token = ""
    while True:
        page = await runs.ListRuns(run_service_pb2.ListRunsRequest(
            filter=filter, order_by=order_by, page_size=page_size, page_token=token, artifact_id=artifact_id))
        ids.extend(r.id for r in page.runs)
        token = page.next_page_token
        if not token:
            return ids


async def test_list_runs_filters_and_orders_across_pages(server: Stubs) -> None:
    artifacts, runs, _, _ = server
    made: list[run_pb2.Run] = []
    for i in range(5):
        artifact = await create_artifact(artifacts, 1200, title=f"Listed {i}")
        run = await start_run(runs, artifact.id)
        if i % 2:
            await runs.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.id, request_id=str(uuid.uuid4())))
        await watch(runs, run.id)
        made.append((await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run)
    # Only this test's runs: from the first one's create_time on (the server's clock, to the microsecond).
    window = f'create_time >= "{made[0].create_time.ToDatetime(tzinfo=UTC).isoformat()}"'
    # Newest first by default, oldest first when asked, every page in order.
    assert await list_runs(runs, window) == [r.id for r in reversed(made)]
    assert await list_runs(runs, window, "create_time") == [r.id for r in made]
    completed = [r.id for r in made if r.state == S.RUN_STATE_COMPLETED]
    cancelled = [r.id for r in made if r.state == S.RUN_STATE_CANCELLED]
    assert len(completed) == 3 and len(cancelled) == 2
    assert await list_runs(runs, f"{window} AND state = COMPLETED", "create_time") == completed
    assert await list_runs(runs, f"{window} AND NOT state = RUN_STATE_COMPLETED", "create_time") == cancelled
    assert await list_runs(runs, f"state = CANCELLED OR state = COMPLETED AND {window}", "create_time",
                           page_size=1) == [r.id for r in made]
    assert await list_runs(runs, f"artifact_id = {made[2].artifact_id}") == [made[2].id]
    assert await list_runs(runs, "state = RUNNING", artifact_id=made[2].artifact_id) == []
    third = made[2].create_time.ToDatetime(tzinfo=UTC).isoformat()
    assert await list_runs(runs, f'create_time > "{third}" AND {window}', "create_time") == [r.id for r in made[3:]]

    await expect(INVALID, "INVALID_FILTER", runs.ListRuns(run_service_pb2.ListRunsRequest(filter="state = LATE")))
    await expect(INVALID, "INVALID_ORDER_BY", runs.ListRuns(run_service_pb2.ListRunsRequest(order_by="state")))
    first = await runs.ListRuns(run_service_pb2.ListRunsRequest(filter=window, page_size=1))
    assert first.next_page_token
    await expect(INVALID, "INVALID_PAGE_TOKEN", runs.ListRuns(run_service_pb2.ListRunsRequest(
        filter=f"{window} AND state = COMPLETED", page_size=1, page_token=first.next_page_token)))


async def test_list_artifacts_filters_by_time_and_orders_by_update(server: Stubs) -> None:
    artifacts, _, _, _ = server
    made = [await create_artifact(artifacts, 1200, title=f"Ordered {i}") for i in range(4)]
    await artifacts.UpdateArtifact(update(made[1].id, title="Ordered 1, touched"))
    window = f'create_time >= "{made[0].create_time.ToDatetime(tzinfo=UTC).isoformat()}"'

    async def listed(order_by: str) -> list[str]:
        ids: list[str] = []
        token = ""
        while True:
            page = await artifacts.ListArtifacts(A.ListArtifactsRequest(filter=window, order_by=order_by,
                                                                        page_size=3, page_token=token))
            ids.extend(a.id for a in page.artifacts)
            if not (token := page.next_page_token):
                return ids

    ids = [a.id for a in made]
    assert await listed("") == ids[::-1]
    assert await listed("create_time") == ids
    assert await listed("update_time desc") == [ids[1], ids[3], ids[2], ids[0]]
    await expect(INVALID, "INVALID_FILTER", artifacts.ListArtifacts(A.ListArtifactsRequest(filter="state = RUNNING")))


async def test_revert_block_restores_an_earlier_version_as_a_new_one(server: Stubs) -> None:
    artifacts, runs, _, _ = server
    artifact = await create_artifact(artifacts, 1200)
    run = await start_run(runs, artifact.id)
    await watch(runs, run.id)
    view = await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id, view=A.ARTIFACT_VIEW_FULL))
    original = next(b for b in view.blocks if b.kind == artifact_pb2.BLOCK_KIND_PARAGRAPH)
    assert original.version == 1 and original.origin == artifact_pb2.CHANGE_ORIGIN_LLM
    for text in ("First by hand.", "Second by hand."):
        await artifacts.EditBlock(A.EditBlockRequest(block_id=original.id, block=artifact_pb2.Block(
            kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text=text), request_id=str(uuid.uuid4())))

    request = A.RevertBlockRequest(block_id=original.id, block_version=1, expected_version=3,
                                   request_id=str(uuid.uuid4()))
    reverted = (await artifacts.RevertBlock(request)).block
    assert (reverted.text, reverted.version, reverted.origin, reverted.pinned) == \
        (original.text, 4, artifact_pb2.CHANGE_ORIGIN_HUMAN, True)
    assert (await artifacts.RevertBlock(request)).block.version == 4  # a repeat writes nothing more
    # And a revert can be reverted: version 3's text at version 5.
    again = (await artifacts.RevertBlock(A.RevertBlockRequest(block_id=original.id, block_version=3,
                                                              request_id=str(uuid.uuid4())))).block
    assert (again.text, again.version) == ("Second by hand.", 5)
    history = (await artifacts.ListBlockChanges(A.ListBlockChangesRequest(block_id=original.id))).change_events
    assert [(c.operation, c.after.version, c.after.text) for c in history] == [
        (artifact_pb2.CHANGE_OPERATION_CREATE, 1, original.text),
        (artifact_pb2.CHANGE_OPERATION_UPDATE, 2, "First by hand."),
        (artifact_pb2.CHANGE_OPERATION_UPDATE, 3, "Second by hand."),
        (artifact_pb2.CHANGE_OPERATION_UPDATE, 4, original.text),
        (artifact_pb2.CHANGE_OPERATION_UPDATE, 5, "Second by hand."),
    ]
    compiled = await artifacts.CompileArtifact(A.CompileArtifactRequest(artifact_id=artifact.id,
                                                                        format=A.COMPILE_FORMAT_MARKDOWN))
    assert "Second by hand." in compiled.content

    version = (await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id))).artifact.version
    for bad, code, reason in (
        (A.RevertBlockRequest(block_id=original.id, block_version=6), NOT_FOUND, "BLOCK_VERSION_NOT_FOUND"),
        (A.RevertBlockRequest(block_id=original.id, block_version=0), INVALID, "INVALID_ARGUMENT"),
        (A.RevertBlockRequest(block_id=original.id, block_version=1, expected_version=4), grpc.StatusCode.ABORTED,
         "STALE_VERSION"),
        (A.RevertBlockRequest(block_id=str(uuid.uuid4()), block_version=1), NOT_FOUND, "BLOCK_NOT_FOUND"),
    ):
        await expect(code, reason, artifacts.RevertBlock(bad))
    assert (await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id))).artifact.version == version
