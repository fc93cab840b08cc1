"""Tenants over real gRPC and Postgres: keys bound to tenants, and every RPC on another tenant's ids
answers NOT_FOUND exactly as for an id that never existed, writing nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    run_pb2,
    run_service_pb2,
    source_service_pb2,
)
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace.v1.source_service_pb2_grpc import SourceServiceStub
from lace_engine.errors import InvalidArgument
from lace_server.auth import ApiKey, parse_api_keys
from tests.conftest import serve_fresh
from tests.helpers import error_info, final_state, watch

KEYS = "alpha-key@alpha,beta-key@beta,beta-reader@beta:read+stream,plain-key"


def with_key(details: Any, key: str) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {key}")
    return details._replace(metadata=metadata)


# grpc.aio files an interceptor under one kind only, so unary and streaming calls need one each.
class UnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str):
        self._key = key

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(with_key(details, self._key), request)


class StreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, key: str):
        self._key = key

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(with_key(details, self._key), request)


class Caller:
    """The three services on one channel that authenticates as one key."""

    def __init__(self, target: str, key: str):
        self.channel = grpc.aio.insecure_channel(target, interceptors=[UnaryBearer(key), StreamBearer(key)])
        self.artifacts = ArtifactServiceStub(self.channel)
        self.runs = RunServiceStub(self.channel)
        self.sources = SourceServiceStub(self.channel)


@asynccontextmanager
async def callers(target: str, *keys: str) -> AsyncIterator[list[Caller]]:
    """One Caller per key, their channels closed afterwards."""
    made = [Caller(target, key) for key in keys]
    try:
        yield made
    finally:
        for caller in made:
            await caller.channel.close()


def rid() -> str:
    return str(uuid.uuid4())


def test_keys_name_their_tenant() -> None:
    keys = parse_api_keys("k1@acme:read+stream, k2@globex, k3")
    assert keys == {"k1": ApiKey(frozenset({"read", "stream"}), "acme"),
                    "k2": ApiKey(frozenset({"read", "stream", "write"}), "globex"),
                    "k3": ApiKey(frozenset({"read", "stream", "write"}), "default")}
    for bad in ("k@", "k@Acme", "k@a b", "k@-x", "k@acme:admin", "k,k"):
        with pytest.raises(InvalidArgument):
            parse_api_keys(bad)


async def written_artifact(alpha: Caller) -> dict[str, str]:
    """An artifact of tenant alpha, written by a run, with a source: the ids the other tenant will try."""
    artifact = (await alpha.artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
        artifact=artifact_pb2.Artifact(title="Alpha's plan", brief="Private plans of tenant alpha for its depots.",
                                       target_words=2000), request_id=rid()))).artifact
    source = (await alpha.sources.AddSource(source_service_pb2.AddSourceRequest(
        artifact_id=artifact.id, title="Alpha notes", media_type="text/plain",
        text="Depot one runs on heat pumps. Depot two keeps diesel backup.", request_id=rid()))).source
    run = (await alpha.runs.StartRun(run_service_pb2.StartRunRequest(artifact_id=artifact.id,
                                                                     request_id=rid()))).run
    assert final_state(await watch(alpha.runs, run.id)) == run_pb2.RUN_STATE_COMPLETED
    full = await alpha.artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
        artifact_id=artifact.id, view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
    leaf = next(n for n in full.nodes if n.parent_id and n.state == artifact_pb2.NODE_STATE_WRITTEN)
    return {"artifact": artifact.id, "root": artifact.root_node_id, "node": leaf.id, "run": run.id,
            "source": source.id, "block": next(b.id for b in full.blocks if b.node_id == leaf.id)}


def every_rpc(c: Caller, ids: dict[str, str]) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Each lace.v1 method that takes an id, called with `ids` and otherwise valid fields."""
    a = artifact_service_pb2
    r = run_service_pb2
    s = source_service_pb2
    paragraph = artifact_pb2.Block(kind=artifact_pb2.BLOCK_KIND_PARAGRAPH, text="Another tenant's words.")
    return {
        "GetArtifact": lambda: c.artifacts.GetArtifact(a.GetArtifactRequest(
            artifact_id=ids["artifact"], view=a.ARTIFACT_VIEW_FULL)),
        "GetArtifact@version": lambda: c.artifacts.GetArtifact(a.GetArtifactRequest(
            artifact_id=ids["artifact"], artifact_version=1)),
        "UpdateArtifact": lambda: c.artifacts.UpdateArtifact(a.UpdateArtifactRequest(
            artifact=artifact_pb2.Artifact(id=ids["artifact"], title="Taken"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]), request_id=rid())),
        "DeleteArtifact": lambda: c.artifacts.DeleteArtifact(a.DeleteArtifactRequest(
            artifact_id=ids["artifact"], request_id=rid())),
        "ForkArtifact": lambda: c.artifacts.ForkArtifact(a.ForkArtifactRequest(
            artifact_id=ids["artifact"], request_id=rid())),
        "CompileArtifact": lambda: c.artifacts.CompileArtifact(a.CompileArtifactRequest(
            artifact_id=ids["artifact"], format=a.COMPILE_FORMAT_MARKDOWN)),
        "CompileArtifact@version": lambda: c.artifacts.CompileArtifact(a.CompileArtifactRequest(
            artifact_id=ids["artifact"], format=a.COMPILE_FORMAT_MARKDOWN, artifact_version=1)),
        "EditBlock": lambda: c.artifacts.EditBlock(a.EditBlockRequest(
            block_id=ids["block"], block=paragraph, request_id=rid())),
        "ListBlockChanges": lambda: c.artifacts.ListBlockChanges(a.ListBlockChangesRequest(block_id=ids["block"])),
        "RevertBlock": lambda: c.artifacts.RevertBlock(a.RevertBlockRequest(
            block_id=ids["block"], block_version=1, request_id=rid())),
        "UpdateNode": lambda: c.artifacts.UpdateNode(a.UpdateNodeRequest(
            node=artifact_pb2.Node(id=ids["node"], title="Taken"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]), request_id=rid())),
        "CreateNode": lambda: c.artifacts.CreateNode(a.CreateNodeRequest(
            parent_id=ids["root"], node=artifact_pb2.Node(title="Planted", target_words=200), request_id=rid())),
        "DeleteNode": lambda: c.artifacts.DeleteNode(a.DeleteNodeRequest(node_id=ids["node"], request_id=rid())),
        "MoveNode": lambda: c.artifacts.MoveNode(a.MoveNodeRequest(node_id=ids["node"], position=0,
                                                                   request_id=rid())),
        "StartRun": lambda: c.runs.StartRun(r.StartRunRequest(artifact_id=ids["artifact"], request_id=rid())),
        "StartRun@scope": lambda: c.runs.StartRun(r.StartRunRequest(
            artifact_id=ids["artifact"], scope_node_id=ids["node"], request_id=rid())),
        "GetRun": lambda: c.runs.GetRun(r.GetRunRequest(run_id=ids["run"])),
        "ListRuns@artifact": lambda: c.runs.ListRuns(r.ListRunsRequest(artifact_id=ids["artifact"])),
        "PauseRun": lambda: c.runs.PauseRun(r.PauseRunRequest(run_id=ids["run"], request_id=rid())),
        "ResumeRun": lambda: c.runs.ResumeRun(r.ResumeRunRequest(run_id=ids["run"], request_id=rid())),
        "CancelRun": lambda: c.runs.CancelRun(r.CancelRunRequest(run_id=ids["run"], request_id=rid())),
        "ListRunEvents": lambda: c.runs.ListRunEvents(r.ListRunEventsRequest(run_id=ids["run"])),
        "StreamRun": lambda: watch(c.runs, ids["run"]),
        "AddSource": lambda: c.sources.AddSource(s.AddSourceRequest(
            artifact_id=ids["artifact"], title="Planted", media_type="text/plain", text="x", request_id=rid())),
        "GetSource": lambda: c.sources.GetSource(s.GetSourceRequest(source_id=ids["source"])),
        "ListSources": lambda: c.sources.ListSources(s.ListSourcesRequest(artifact_id=ids["artifact"])),
        "DeleteSource": lambda: c.sources.DeleteSource(s.DeleteSourceRequest(source_id=ids["source"])),
    }


async def refusal(call: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call()
    return raised.value.code(), error_info(raised.value).reason


def table_counts(url: str) -> dict[str, int]:
    tables = ("artifacts", "nodes", "blocks", "change_events", "runs", "run_events", "sources", "idempotency_keys")
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # type: ignore[index]


async def test_another_tenants_ids_are_not_found_and_nothing_is_written(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, env={"LACE_API_KEYS": KEYS}) as (target, _running, url):
        async with callers(target, "alpha-key", "beta-key") as (alpha, beta):
            ids = await written_artifact(alpha)
            before = await alpha.artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
                artifact_id=ids["artifact"]))
            counts = table_counts(url)
            # The same RPCs with ids that never existed: what beta gets must be indistinguishable.
            nowhere = {k: str(uuid.uuid4()) for k in ids}
            for name, call in every_rpc(beta, ids).items():
                code, reason = await refusal(call)
                assert code == grpc.StatusCode.NOT_FOUND, (name, code, reason)
                assert (code, reason) == await refusal(every_rpc(beta, nowhere)[name]), name
            assert table_counts(url) == counts, "refused calls wrote nothing, not even an idempotency key"

            # Lists show each tenant its own only.
            mine = await beta.artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
                artifact=artifact_pb2.Artifact(title="Beta's", brief="Tenant beta's own document.", target_words=300),
                request_id=rid()))
            listed = await beta.artifacts.ListArtifacts(artifact_service_pb2.ListArtifactsRequest())
            assert [x.id for x in listed.artifacts] == [mine.artifact.id]
            assert not (await beta.runs.ListRuns(run_service_pb2.ListRunsRequest())).runs
            alpha_listed = await alpha.artifacts.ListArtifacts(artifact_service_pb2.ListArtifactsRequest())
            assert [x.id for x in alpha_listed.artifacts] == [ids["artifact"]]
            assert [x.id for x in (await alpha.runs.ListRuns(run_service_pb2.ListRunsRequest())).runs] == [ids["run"]]
            # And the other way round: alpha cannot reach beta's artifact either.
            with pytest.raises(grpc.aio.AioRpcError) as crossed:
                await alpha.artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(artifact_id=mine.artifact.id))
            assert crossed.value.code() == grpc.StatusCode.NOT_FOUND

            after = await alpha.artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
                artifact_id=ids["artifact"]))
            assert after.artifact == before.artifact


async def test_request_ids_are_per_tenant(pg_server_url: str) -> None:
    """One request_id used by two tenants is two requests: neither replays (nor refuses) the other's."""
    async with serve_fresh(pg_server_url, env={"LACE_API_KEYS": KEYS}) as (target, _running, _url):
        async with callers(target, "alpha-key", "beta-key") as (alpha, beta):
            shared = rid()

            def create(title: str) -> artifact_service_pb2.CreateArtifactRequest:
                return artifact_service_pb2.CreateArtifactRequest(
                    artifact=artifact_pb2.Artifact(title=title, brief="Same key, other tenant.", target_words=300),
                    request_id=shared)

            a = (await alpha.artifacts.CreateArtifact(create("Alpha"))).artifact
            b = (await beta.artifacts.CreateArtifact(create("Beta"))).artifact
            assert a.id != b.id and (a.title, b.title) == ("Alpha", "Beta")
            assert (await alpha.artifacts.CreateArtifact(create("Alpha"))).artifact.id == a.id  # a replay
            assert (await beta.artifacts.CreateArtifact(create("Beta"))).artifact.id == b.id


async def test_a_key_without_a_tenant_is_the_default_tenant_and_scopes_still_apply(pg_server_url: str) -> None:
    async with serve_fresh(pg_server_url, env={"LACE_API_KEYS": KEYS}) as (target, _running, _url):
        async with callers(target, "plain-key", "beta-reader") as (plain, beta_reader):
            made = (await plain.artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
                artifact=artifact_pb2.Artifact(title="Default's", brief="Owned by the default tenant.",
                                               target_words=300), request_id=rid()))).artifact
            got = await plain.artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(artifact_id=made.id))
            assert got.artifact.id == made.id
            # beta's read-only key: its own tenant's lists, PERMISSION_DENIED for writes, NOT_FOUND across.
            listed = await beta_reader.artifacts.ListArtifacts(artifact_service_pb2.ListArtifactsRequest())
            assert not listed.artifacts
            code, _ = await refusal(lambda: beta_reader.artifacts.GetArtifact(
                artifact_service_pb2.GetArtifactRequest(artifact_id=made.id)))
            assert code == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await beta_reader.artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
                    artifact=artifact_pb2.Artifact(title="x", brief="y", target_words=300), request_id=rid()))
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_per_tenant_limits_hold_across_runs_and_leave_other_tenants_free(pg_server_url: str) -> None:
    """LACE_TENANT_MAX_RUNS=1 and LACE_TENANT_LLM_CONCURRENCY=1: alpha's three runs execute one at a
    time, each LLM call through alpha's single permit, while beta's run does not wait behind them."""
    env = {"LACE_API_KEYS": KEYS, "LACE_OFFLINE_LATENCY_MS": "40"}
    async with serve_fresh(pg_server_url, env=env, tenant_max_runs=1, tenant_llm_concurrency=1) as (
            target, running, url):
        async with callers(target, "alpha-key", "beta-key") as (alpha, beta):
            async def start(caller: Caller, title: str) -> str:
                made = (await caller.artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
                    artifact=artifact_pb2.Artifact(title=title, brief="Depots, fleets and charging for a city.",
                                                   target_words=3000), request_id=rid()))).artifact
                return (await caller.runs.StartRun(run_service_pb2.StartRunRequest(
                    artifact_id=made.id, request_id=rid(),
                    options=run_pb2.RunOptions(sibling_concurrency=4)))).run.id

            alpha_runs = [await start(alpha, f"Alpha {i}") for i in range(3)]
            beta_run = await start(beta, "Beta")

            most_alpha_executing = 0
            with psycopg.connect(url, autocommit=True) as conn:
                for _ in range(3000):
                    executing = conn.execute(
                        "SELECT count(*) FROM runs WHERE tenant_id = 'alpha' AND lease_expires > now()").fetchone()
                    most_alpha_executing = max(most_alpha_executing, executing[0])  # type: ignore[index]
                    assert executing[0] <= 1  # type: ignore[index]
                    done = conn.execute("SELECT count(*) FROM runs WHERE end_time IS NOT NULL").fetchone()
                    if done[0] == 4:  # type: ignore[index]
                        break
                    await asyncio.sleep(0.01)
                starts: dict[str, Any] = dict(conn.execute("SELECT id::text, start_time FROM runs").fetchall())
                states = {r[0] for r in conn.execute("SELECT state FROM runs").fetchall()}
                alpha_calls = conn.execute("SELECT sum(llm_calls) FROM runs WHERE tenant_id = 'alpha'").fetchone()
                slots = conn.execute("SELECT count(*) FROM llm_permits WHERE provider = 'offline@alpha'").fetchone()
            assert states == {"completed"}
            assert most_alpha_executing == 1
            # The second and third of alpha's runs waited for the one before; beta's did not wait for them.
            ordered = sorted(alpha_runs, key=lambda r: starts[r])
            assert starts[beta_run] < starts[ordered[-1]]
            assert slots == (1,)
            executor = running.engine.executor
            assert executor is not None
            assert executor._tenant_llm["alpha"].acquired_total == alpha_calls[0] > 3  # type: ignore[index]
