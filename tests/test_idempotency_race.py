"""Twin requests (AIP-155): the same request_id sent twice at once has one effect and one answer."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import grpc
import psycopg
import pytest
from psycopg import sql

from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2, run_service_pb2_grpc
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from tests.conftest import serve_fresh
from tests.helpers import BRIEF, create_artifact, error_info, start_run, watch

if TYPE_CHECKING:
    from lace.v1.artifact_service_pb2_grpc import ArtifactServiceAsyncStub
    from lace.v1.run_service_pb2_grpc import RunServiceAsyncStub

T = TypeVar("T")

# The first round holds the written table, so both twins are surely in flight before either can
# commit, however busy the machine; the others race freely for the interleavings a lock cannot make.
ROUNDS = (True, False, False)


@dataclass(frozen=True, slots=True)
class Server:
    artifacts: ArtifactServiceAsyncStub
    runs: RunServiceAsyncStub
    url: str


@pytest.fixture(scope="module")
async def quiet(pg_server_url: str) -> AsyncIterator[Server]:
    """A server that executes no runs, so a run stays in the state a request left it in."""
    async with serve_fresh(pg_server_url, execute_runs=False) as (target, _, url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield Server(ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel), url)


@pytest.fixture(scope="module")
async def writing(pg_server_url: str) -> AsyncIterator[Server]:
    """A server of its own that writes runs (for blocks to edit) and is idle between them."""
    async with serve_fresh(pg_server_url) as (target, _, url):
        async with grpc.aio.insecure_channel(target) as channel:
            yield Server(ArtifactServiceStub(channel), run_service_pb2_grpc.RunServiceStub(channel), url)


async def _lock_waiters(watcher: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    row = await (await watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )).fetchone()
    assert row is not None
    return int(str(row[0]))


async def at_once(url: str, calls: tuple[Callable[[], Awaitable[T]], Callable[[], Awaitable[T]]], *,
                  hold: str | None) -> tuple[T | BaseException, T | BaseException]:
    """Sends both calls at once; with `hold`, that table takes no writes until both wait on a lock."""
    async with await psycopg.AsyncConnection.connect(url) as holder, \
            await psycopg.AsyncConnection.connect(url, autocommit=True) as watcher:
        if hold is not None:
            await holder.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(hold)))
        first, second = asyncio.ensure_future(calls[0]()), asyncio.ensure_future(calls[1]())
        # A call that fails without ever waiting (the bug this test is for) must not hang the test.
        while hold is not None and not (first.done() or second.done()):
            if await _lock_waiters(watcher) >= 2:
                break
            await asyncio.sleep(0.01)
        await holder.rollback()
        return await asyncio.gather(first, second, return_exceptions=True)


async def twins(url: str, call: Callable[[], Awaitable[T]], *, hold: str | None) -> tuple[T, T]:
    """Sends `call` twice at once (see at_once); both must succeed."""
    a, b = await at_once(url, (call, call), hold=hold)
    for result in (a, b):
        if isinstance(result, BaseException):
            raise result
    assert not isinstance(a, BaseException) and not isinstance(b, BaseException)
    return a, b


async def count(url: str, query: str, *params: object) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute(query, params)).fetchone()
        assert row is not None
        return int(str(row[0]))


async def state_changes(url: str, run_id: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        rows = await (await conn.execute(
            "SELECT payload->>'to_state' FROM run_events WHERE run_id = %s AND type = 'run_state_changed' "
            "ORDER BY seq", (run_id,))).fetchall()
    return [str(r[0]) for r in rows]


async def test_twin_create_artifact_creates_one(quiet: Server) -> None:
    for hold in ROUNDS:
        title = f"Twin {uuid.uuid4()}"
        request = artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title=title, brief=BRIEF, target_words=500), request_id=str(uuid.uuid4()))
        a, b = await twins(quiet.url, functools.partial(quiet.artifacts.CreateArtifact, request),
                           hold="artifacts" if hold else None)
        assert a == b
        assert await count(quiet.url, "SELECT count(*) FROM artifacts WHERE title = %s", title) == 1


async def test_twin_start_run_starts_one(quiet: Server) -> None:
    for hold in ROUNDS:
        artifact = await create_artifact(quiet.artifacts, 500)
        request = run_service_pb2.StartRunRequest(artifact_id=artifact.id, request_id=str(uuid.uuid4()))
        a, b = await twins(quiet.url, functools.partial(quiet.runs.StartRun, request), hold="runs" if hold else None)
        assert a == b
        assert await count(quiet.url, "SELECT count(*) FROM runs WHERE artifact_id = %s", artifact.id) == 1
        assert await state_changes(quiet.url, a.run.id) == ["pending"]


async def test_racing_starts_with_different_request_ids_start_one(quiet: Server) -> None:
    for hold in ROUNDS:
        artifact = await create_artifact(quiet.artifacts, 500)
        first, second = (functools.partial(quiet.runs.StartRun, run_service_pb2.StartRunRequest(
            artifact_id=artifact.id, request_id=str(uuid.uuid4()))) for _ in range(2))
        results = await at_once(quiet.url, (first, second), hold="runs" if hold else None)
        won = [r for r in results if isinstance(r, run_service_pb2.StartRunResponse)]
        lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(lost[0])
        assert info.reason == "ARTIFACT_HAS_ACTIVE_RUN" and info.metadata["run_id"] == won[0].run.id
        assert await count(quiet.url, "SELECT count(*) FROM runs WHERE artifact_id = %s", artifact.id) == 1


async def test_twin_edit_block_applies_once(writing: Server) -> None:
    artifact = await create_artifact(writing.artifacts, 1500)
    await watch(writing.runs, (await start_run(writing.runs, artifact.id)).id)
    view = await writing.artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
    paragraphs = [b for b in view.blocks if b.kind == artifact_pb2.BLOCK_KIND_PARAGRAPH]
    # Without expected_version nothing but the request id stops a twin from applying the edit again.
    cases = [(hold, False) for hold in ROUNDS] + [(True, True)]
    assert len(paragraphs) >= len(cases)
    for (hold, with_version), block in zip(cases, paragraphs[:len(cases)], strict=True):
        text = f"A person wrote this once ({uuid.uuid4()})."
        request = artifact_service_pb2.EditBlockRequest(
            block_id=block.id, block=artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text=text),
            expected_version=block.version if with_version else 0, request_id=str(uuid.uuid4()))
        a, b = await twins(writing.url, functools.partial(writing.artifacts.EditBlock, request),
                           hold="change_events" if hold else None)
        assert a == b
        assert a.block.text == text and a.block.version == block.version + 1
        assert await count(writing.url, "SELECT count(*) FROM change_events WHERE block_id = %s AND origin = 'human'",
                           block.id) == 1


CONTROLS: dict[str, tuple[list[str], str]] = {
    # action: (states before it, from the run's start), the state it leads to
    "pause": (["pending"], "paused"),
    "resume": (["pending", "paused"], "pending"),
    "cancel": (["pending"], "cancelled"),
}


@pytest.mark.parametrize("action", sorted(CONTROLS))
async def test_twin_control_run_transitions_once(quiet: Server, action: str) -> None:
    before, after = CONTROLS[action]

    async def control(run_id: str, request_id: str) -> run_pb2.Run:
        if action == "pause":
            return (await quiet.runs.PauseRun(run_service_pb2.PauseRunRequest(
                run_id=run_id, request_id=request_id))).run
        if action == "resume":
            return (await quiet.runs.ResumeRun(run_service_pb2.ResumeRunRequest(
                run_id=run_id, request_id=request_id))).run
        return (await quiet.runs.CancelRun(run_service_pb2.CancelRunRequest(
            run_id=run_id, request_id=request_id))).run

    for hold in ROUNDS:
        run = await start_run(quiet.runs, (await create_artifact(quiet.artifacts, 500)).id)
        if action == "resume":
            await quiet.runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
        assert await state_changes(quiet.url, run.id) == before
        key = str(uuid.uuid4())
        a, b = await twins(quiet.url, functools.partial(control, run.id, key), hold="run_events" if hold else None)
        assert a == b
        assert run_pb2.RunState.Name(a.state) == f"RUN_STATE_{after.upper()}"
        assert await state_changes(quiet.url, run.id) == [*before, after]
