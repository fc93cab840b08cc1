"""lace_client against a real server: CRUD, typed errors, idempotency, and a watch that survives cut connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from lace.v1 import artifact_pb2, run_pb2, run_service_pb2
from lace_client import (
    FailedPreconditionError,
    InvalidArgumentError,
    LaceClient,
    LaceClientError,
    LaceSyncClient,
    NotFoundError,
    PermissionDeniedError,
    StreamGapError,
    UnauthenticatedError,
    UnavailableError,
)
from lace_engine.config import Settings
from tests.support.tcp_proxy import TcpProxy

BRIEF = "A practical report on heat pumps for owners of older homes."
TERMINAL = {run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}


@pytest.fixture
async def client(lace_server: tuple[str, object]) -> AsyncIterator[LaceClient]:
    async with LaceClient.connect(lace_server[0]) as c:
        yield c


def is_terminal(event: run_pb2.RunEvent) -> bool:
    return event.WhichOneof("payload") == "run_state_changed" and event.run_state_changed.to_state in TERMINAL


async def collect(client: LaceClient, run_id: str, cursor: int = 0) -> list[run_pb2.RunEvent]:
    return [e async for e in client.watch(run_id, cursor)]


async def test_artifact_and_run_round_trip(client: LaceClient) -> None:
    artifact = await client.create_artifact("Heat pumps", BRIEF, 1200, style="plain, concrete")
    assert artifact.id and artifact.root_node_id and artifact.style == "plain, concrete"
    assert (await client.get_artifact(artifact.id)).artifact.title == "Heat pumps"
    listed = [a.id async for a in client.list_artifacts(page_size=2)]  # several pages
    assert artifact.id in listed and len(listed) == len(set(listed))

    run = await client.start_run(artifact.id, options=run_pb2.RunOptions(sibling_concurrency=2))
    assert run.options.sibling_concurrency == 2
    events = await asyncio.wait_for(collect(client, run.id), 60)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert is_terminal(events[-1]) and events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
    assert [e.seq for e in await asyncio.wait_for(collect(client, run.id, cursor=3), 30)] == \
        list(range(4, len(events) + 1))
    assert await collect(client, run.id, cursor=len(events)) == []  # at the end of a finished run

    stored = [e async for e in client.list_events(run.id, page_size=7)]
    assert stored == events
    applied = [e async for e in client.list_events(run.id, event_types=[run_pb2.RUN_EVENT_TYPE_BLOCKS_APPLIED])]
    assert applied and {e.WhichOneof("payload") for e in applied} == {"blocks_applied"}

    done = await client.get_run(run.id)
    assert done.state == run_pb2.RUN_STATE_COMPLETED and done.head_seq == len(events)
    assert run.id in [r.id async for r in client.list_runs(artifact.id)]
    assert run.id in [r.id async for r in client.list_runs()]
    assert [r.id async for r in client.list_runs(artifact.id, filter="state = COMPLETED")] == [run.id]
    assert [r.id async for r in client.list_runs(artifact.id, filter="state != COMPLETED")] == []

    written = (await client.get_artifact(artifact.id)).artifact
    updated = await client.update_artifact(artifact.id, title="Heat pumps in old homes")
    assert updated.title == "Heat pumps in old homes" and updated.version == written.version + 1
    since = updated.update_time.ToJsonString()
    assert artifact.id in [a.id async for a in client.list_artifacts(filter=f'update_time >= "{since}"')]

    markdown = await client.compile(artifact.id)
    assert markdown.startswith("---") and "\n## " in markdown and "# Heat pumps in old homes" in markdown
    assert "<html" in (await client.compile(artifact.id, "html")).lower()
    assert artifact.id in await client.compile(artifact.id, "json")
    with pytest.raises(ValueError, match="compile_document"):
        await client.compile(artifact.id, "pdf")  # type: ignore[arg-type]
    pdf = await client.compile_document(artifact.id, "pdf")
    assert pdf.binary and pdf.data.startswith(b"%PDF-") and pdf.media_type == "application/pdf"
    assert pdf.file_name.endswith(".pdf") and pdf.artifact_version == done_artifact_version(markdown)
    as_bytes = await client.compile_document(artifact.id)
    assert not as_bytes.binary and as_bytes.data.decode() == markdown and as_bytes.file_name.endswith(".md")

    full = await client.get_artifact(artifact.id, full=True)
    paragraph = next(b for b in full.blocks if b.kind == artifact_pb2.BLOCK_KIND_PARAGRAPH)
    edited = await client.edit_block(paragraph.id, "A sentence written by a person.",
                                     expected_version=paragraph.version)
    assert edited.pinned and edited.origin == artifact_pb2.CHANGE_ORIGIN_HUMAN
    history = [c async for c in client.block_history(paragraph.id)]
    assert [c.operation for c in history][-1] == artifact_pb2.CHANGE_OPERATION_UPDATE
    assert history[-1].after.text == "A sentence written by a person."
    assert "A sentence written by a person." in await client.compile(artifact.id)

    await client.delete_artifact(artifact.id)
    with pytest.raises(NotFoundError):
        await client.get_run(run.id)  # its runs went with it
    await client.delete_artifact(artifact.id, allow_missing=True)


def done_artifact_version(markdown: str) -> int:
    """The artifact version a compiled Markdown document names in its front matter."""
    line = next(line for line in markdown.splitlines() if line.startswith("artifact_version:"))
    return int(line.split(":", 1)[1].strip().strip('"'))


async def test_create_is_idempotent_by_request_id(client: LaceClient) -> None:
    key = str(uuid.uuid4())
    first = await client.create_artifact("Once", BRIEF, 500, request_id=key)
    again = await client.create_artifact("Once", BRIEF, 500, request_id=key)
    assert again.id == first.id
    other = await client.create_artifact("Once", BRIEF, 500)  # a fresh key each call
    assert other.id != first.id


async def test_errors_are_typed_and_carry_the_server_reason(client: LaceClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        await client.get_artifact(str(uuid.uuid4()))
    assert missing.value.reason == "ARTIFACT_NOT_FOUND" and missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.domain == "lace.dev"

    with pytest.raises(InvalidArgumentError) as malformed:
        await client.get_run("not-a-uuid")
    assert malformed.value.reason == "MALFORMED_ID" and malformed.value.metadata == {"field": "run_id"}
    assert "MALFORMED_ID" in str(malformed.value)

    with pytest.raises(NotFoundError) as unknown_run:  # not retried: raised at once
        await asyncio.wait_for(collect(client, str(uuid.uuid4())), 10)
    assert unknown_run.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(InvalidArgumentError) as negative:
        await collect(client, str(uuid.uuid4()), cursor=-1)
    assert negative.value.reason == "NEGATIVE_CURSOR"

    artifact = await client.create_artifact("Busy", BRIEF, 20_000)
    run = await client.start_run(artifact.id)
    try:
        with pytest.raises(FailedPreconditionError) as busy:
            await client.start_run(artifact.id)
        assert busy.value.reason == "ARTIFACT_HAS_ACTIVE_RUN"
    finally:
        await client.cancel_run(run.id)
    events = await asyncio.wait_for(collect(client, run.id), 60)
    assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_CANCELLED
    with pytest.raises(FailedPreconditionError) as ended:
        await client.cancel_run(run.id)
    assert ended.value.reason == "ILLEGAL_RUN_TRANSITION"


async def test_pause_and_resume(client: LaceClient) -> None:
    artifact = await client.create_artifact("Paused", BRIEF, 20_000)
    run = await client.start_run(artifact.id)
    paused = await client.pause_run(run.id)
    assert paused.state in {run_pb2.RUN_STATE_PAUSING, run_pb2.RUN_STATE_PAUSED}
    for _ in range(300):  # a bound, not a timing assertion: PAUSING ends when in-flight calls finish
        if (await client.get_run(run.id)).state == run_pb2.RUN_STATE_PAUSED:
            break
        await asyncio.sleep(0.05)
    assert (await client.get_run(run.id)).state == run_pb2.RUN_STATE_PAUSED
    assert (await client.resume_run(run.id)).state in {run_pb2.RUN_STATE_PENDING, run_pb2.RUN_STATE_RUNNING}
    events = await asyncio.wait_for(collect(client, run.id), 120)
    states = [e.run_state_changed.to_state for e in events if e.WhichOneof("payload") == "run_state_changed"]
    assert run_pb2.RUN_STATE_PAUSED in states and states[-1] == run_pb2.RUN_STATE_COMPLETED


async def test_watch_survives_connections_cut_mid_run(lace_server: tuple[str, object], client: LaceClient) -> None:
    # A 20,000-word run lasts a few seconds with the offline provider: long enough to cut it live.
    artifact = await client.create_artifact("Long report", BRIEF, 20_000)
    run = await client.start_run(artifact.id)
    reconnects: list[int] = []
    cuts = cuts_while_live = 0
    seqs: list[int] = []
    last: run_pb2.RunEvent | None = None
    async with TcpProxy(lace_server[0]) as proxy, LaceClient.connect(proxy.target) as watcher:

        async def consume() -> None:
            nonlocal last, cuts, cuts_while_live
            next_cut = 2
            async for event in watcher.watch(run.id, on_reconnect=lambda n, err, delay: reconnects.append(n)):
                seqs.append(event.seq)
                last = event
                # Cut every few events, but only once a new connection is up: events of one
                # response are still being yielded after the cut that ended their stream.
                if len(seqs) >= next_cut and cuts < 6 and proxy.open_connections:
                    live = (await client.get_run(run.id)).state not in TERMINAL
                    if proxy.drop_all():
                        cuts += 1
                        cuts_while_live += live
                        next_cut = len(seqs) + 3

        await asyncio.wait_for(consume(), 120)
    assert seqs == list(range(1, len(seqs) + 1))
    assert last is not None and is_terminal(last)
    # A cut can land just after the server ended the stream with OK (the run finished): that one
    # needs no reconnect.
    assert cuts >= 3 and len(reconnects) >= cuts - 1
    assert cuts_while_live >= 1, "the run ended before any cut; make it longer"
    assert seqs == [e.seq async for e in client.list_events(run.id)]


async def test_watch_gives_up_after_max_reconnects() -> None:
    delays: list[float] = []
    async with LaceClient.connect("127.0.0.1:1") as nowhere:  # nothing listens on port 1
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(collect_with(nowhere, max_reconnects=2, delays=delays), 30)
    assert len(delays) == 2 and all(0 < d <= 5.0 for d in delays)


async def collect_with(client: LaceClient, *, max_reconnects: int, delays: list[float]) -> None:
    async for _ in client.watch(str(uuid.uuid4()), max_reconnects=max_reconnects,
                                on_reconnect=lambda n, err, delay: delays.append(delay)):
        pass


Script = list[tuple[list[int], grpc.StatusCode | None]]


class ScriptedStream:
    """A fake StreamRun: per call, the seqs to send and the status to fail with afterwards (None: end OK)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.cursors: list[int] = []

    async def stream_run(self, request: run_service_pb2.StreamRunRequest,
                       context: grpc.aio.ServicerContext[run_service_pb2.StreamRunRequest,
                                                         run_service_pb2.StreamRunResponse],
                       ) -> AsyncIterator[run_service_pb2.StreamRunResponse]:
        self.cursors.append(request.cursor)
        seqs, failure = self.script[len(self.cursors) - 1]
        for seq in seqs:
            yield run_service_pb2.StreamRunResponse(events=[run_pb2.RunEvent(run_id=request.run_id, seq=seq)],
                                                    head_seq=seq)
        yield run_service_pb2.StreamRunResponse(head_seq=seqs[-1] if seqs else 0)  # a heartbeat
        if failure is not None:
            await context.abort(failure, "scripted failure")


async def serve_script(script: Script) -> tuple[grpc.aio.Server, int, ScriptedStream]:
    stream = ScriptedStream(script)
    handler = grpc.unary_stream_rpc_method_handler(
        stream.stream_run, request_deserializer=run_service_pb2.StreamRunRequest.FromString,
        response_serializer=run_service_pb2.StreamRunResponse.SerializeToString)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("lace.v1.RunService",
                                                                          {"StreamRun": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, stream


async def test_watch_resumes_from_its_cursor_drops_repeats_and_refuses_gaps() -> None:
    server, port, servicer = await serve_script([
        ([1, 2, 3], grpc.StatusCode.UNAVAILABLE),
        ([2, 3, 4, 5], None),  # a misbehaving server repeating events: dropped, not yielded twice
    ])
    try:
        async with LaceClient.connect(f"127.0.0.1:{port}") as c:
            assert [e.seq for e in await collect(c, "r", cursor=0)] == [1, 2, 3, 4, 5]
        assert servicer.cursors == [0, 3]
    finally:
        await server.stop(None)

    server, port, _ = await serve_script([([1, 2, 4], None)])
    try:
        async with LaceClient.connect(f"127.0.0.1:{port}") as c:
            seen: list[int] = []
            with pytest.raises(StreamGapError) as gap:
                async for e in c.watch("r"):
                    seen.append(e.seq)
            assert seen == [1, 2] and gap.value.reason == "SEQ_GAP"
    finally:
        await server.stop(None)

    server, port, servicer = await serve_script([([1], grpc.StatusCode.INTERNAL)])
    try:
        async with LaceClient.connect(f"127.0.0.1:{port}") as c:
            with pytest.raises(LaceClientError) as internal:  # not a transport reset: not retried
                await collect(c, "r")
            assert internal.value.code == grpc.StatusCode.INTERNAL and servicer.cursors == [0]
    finally:
        await server.stop(None)


async def test_bearer_token_is_sent_on_every_call(database_url: str) -> None:
    from lace_server.server import start

    settings = Settings(database_url=database_url, execute_runs=False)  # an API-only second server
    running = await start(settings, "127.0.0.1:0",
                          env={"LACE_LLM": "offline", "LACE_API_KEYS": "all-key,ro-key:read+stream"})
    target = f"127.0.0.1:{running.port}"
    try:
        async with LaceClient.connect(target) as anonymous:
            with pytest.raises(UnauthenticatedError):
                await anonymous.get_artifact(str(uuid.uuid4()))
        async with LaceClient.connect(target, token="ro-key") as reader:
            with pytest.raises(PermissionDeniedError):
                await reader.create_artifact("No", BRIEF, 500)
            with pytest.raises(NotFoundError):  # the stream carried the token too
                await collect(reader, str(uuid.uuid4()))
        async with LaceClient.connect(target, token="all-key") as writer:
            created = await writer.create_artifact("Yes", BRIEF, 500)
            assert (await writer.get_artifact(created.id)).artifact.id == created.id
    finally:
        await running.stop(0.5)


def sync_session(target: str) -> tuple[list[int], str, str]:
    with LaceSyncClient.connect(target) as c:
        artifact = c.create_artifact("Sync", BRIEF, 800)
        run = c.start_run(artifact.id)
        seqs = [e.seq for e in c.watch(run.id)]
        first_two: list[int] = []
        for e in c.list_events(run.id):  # stopping early closes the iterator cleanly
            first_two.append(e.seq)
            if len(first_two) == 2:
                break
        assert first_two == [1, 2]
        assert c.get_run(run.id).state == run_pb2.RUN_STATE_COMPLETED
        with pytest.raises(NotFoundError) as missing:
            c.get_artifact(str(uuid.uuid4()))
        return seqs, c.compile(artifact.id), missing.value.reason


async def test_sync_client(lace_server: tuple[str, object]) -> None:
    # In a worker thread: the session's loop must keep running to serve the calls.
    seqs, markdown, reason = await asyncio.wait_for(asyncio.to_thread(sync_session, lace_server[0]), 60)
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 3
    assert "\n## " in markdown or "\n# " in markdown
    assert reason == "ARTIFACT_NOT_FOUND"
