"""Bearer-token auth with scopes (health stays open), and graceful shutdown of streams."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    source_service_pb2,
)
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace_server.auth import scope_for
from lace_server.server import start
from tests.conftest import make_settings, serve_fresh
from tests.helpers import create_artifact, error_info, start_run

KEYS = "admin-key,reader-key:read,watcher-key:read+stream"


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def test_api_keys_and_scopes(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, env={"LACE_API_KEYS": KEYS}) as (target, _running, _url):
        async with grpc.aio.insecure_channel(target) as channel:
            artifacts = ArtifactServiceStub(channel)
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            request = artifact_service_pb2.CreateArtifactRequest(
                artifact=artifact_pb2.Artifact(title="T", brief="B", target_words=500), request_id=str(uuid.uuid4()))
            for metadata, code in [((), grpc.StatusCode.UNAUTHENTICATED),
                                   (bearer("wrong"), grpc.StatusCode.UNAUTHENTICATED),
                                   (bearer("reader-key"), grpc.StatusCode.PERMISSION_DENIED)]:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await artifacts.CreateArtifact(request, metadata=metadata)
                assert raised.value.code() == code
            created = (await artifacts.CreateArtifact(request, metadata=bearer("admin-key"))).artifact
            got = await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(artifact_id=created.id),
                                              metadata=bearer("reader-key"))
            assert got.artifact.id == created.id
            run = (await runs.StartRun(run_service_pb2.StartRunRequest(artifact_id=created.id),
                                       metadata=bearer("admin-key"))).run
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                async for _ in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id),
                                              metadata=bearer("reader-key")):
                    pass
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            events = [e async for r in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id),
                                                      metadata=bearer("watcher-key")) for e in r.events]
            assert events[-1].run_state_changed.to_state == run_pb2.RUN_STATE_COMPLETED
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # no credentials needed


def lace_methods() -> list[tuple[str, bool]]:
    """Every lace.v1 method as (full name, server-streaming), from the generated descriptors."""
    return [(f"/{service.full_name}/{method.name}", method.server_streaming)
            for module in (artifact_service_pb2, run_service_pb2, source_service_pb2)
            for service in module.DESCRIPTOR.services_by_name.values()
            for method in service.methods]


def test_every_lace_method_needs_a_scope() -> None:
    methods = dict(lace_methods())
    assert len(methods) >= 26  # the 26 of today; more as the API grows
    assert {m for m in methods if scope_for(m) == "read"} == {
        m for m in methods if m.rsplit("/", 1)[1].startswith(("Get", "List", "Compile"))}
    assert [m for m in methods if scope_for(m) == "stream"] == ["/lace.v1.RunService/StreamRun"]
    assert all(scope_for(m) is not None for m in methods)
    assert scope_for("/grpc.health.v1.Health/Check") is None


async def call_raw(channel: grpc.aio.Channel, method: str, streaming: bool,
                   metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    """Calls `method` with an empty request; the status it ends with (OK if it answered)."""
    try:
        if streaming:
            # No serializers: raw bytes go as they are (b"" is an empty request of any method).
            async for _ in cast(Any, channel.unary_stream(method))(b"", metadata=metadata, timeout=30):
                pass
        else:
            await cast(Any, channel.unary_unary(method))(b"", metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_no_lace_method_is_open_without_a_key(pg_server_url: str) -> None:
    """Every method of every lace.v1 service, new ones included, refuses a call without a key or with a
    reader's key where it writes; before any handler runs, so nothing is read or changed."""
    async with serve_fresh(pg_server_url, env={"LACE_API_KEYS": KEYS}) as (target, _running, _url):
        async with grpc.aio.insecure_channel(target) as channel:
            for method, streaming in lace_methods():
                assert await call_raw(channel, method, streaming, ()) == grpc.StatusCode.UNAUTHENTICATED, method
                with_reader = await call_raw(channel, method, streaming, bearer("reader-key"))
                if scope_for(method) == "read":
                    assert with_reader != grpc.StatusCode.PERMISSION_DENIED, method
                else:
                    assert with_reader == grpc.StatusCode.PERMISSION_DENIED, method


async def test_graceful_shutdown_ends_streams_with_unavailable(own_database: str) -> None:
    url = own_database
    running = await start(make_settings(database_url=url), "127.0.0.1:0",
                          env={"LACE_LLM": "offline", "LACE_OFFLINE_LATENCY_MS": "50"}, migrate_db=False)
    target = f"127.0.0.1:{running.port}"
    async with grpc.aio.insecure_channel(target) as channel:
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        artifact = await create_artifact(ArtifactServiceStub(channel), 3000)
        run = await start_run(runs, artifact.id)
        await runs.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.id))
        received: list[run_pb2.RunEvent] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
                received.extend(response.events)
                first.set()

        stream = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 10)
        stopping = asyncio.create_task(running.stop(2.0))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(stream, 10)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(ended.value)
        assert info.reason == "SERVER_SHUTTING_DOWN" and int(info.metadata["cursor"]) == received[-1].seq
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id), timeout=2)
        assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
