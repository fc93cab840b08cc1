"""12. Versions: reading and compiling an artifact as it was at a past IR version, against now.

    .venv/bin/python -m bench --only versions

A run of the offline provider writes a document of N leaves (1,000 at full size: 200,000 words in
sections of 200). Then, alternating rounds, CompileArtifact (Markdown) and GetArtifact (FULL) at a
past version (the middle of the run) and at the current version through the history are timed
against the same calls without a version (the live tables), over gRPC from this process. The
history's size per written leaf (node_versions and artifact_versions) is reported beside.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import psycopg

from bench.common import Context, Row, interleaved, lace_in_process, median
from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
)

NAME = "versions"
A = artifact_service_pb2


async def run(ctx: Context) -> list[Row]:
    leaves = ctx.size(1000, 200, 10)
    rounds = ctx.size(7, 5, 3)
    with ctx.database(NAME) as url:
        async with lace_in_process(url) as (target, _running):
            async with grpc.aio.insecure_channel(target, options=[
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024)]) as channel:
                artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
                runs = run_service_pb2_grpc.RunServiceStub(channel)
                artifact = (await artifacts.CreateArtifact(A.CreateArtifactRequest(
                    artifact=artifact_pb2.Artifact(title="Versions", brief="A long report to look back on.",
                                                   target_words=leaves * 200),
                    request_id=str(uuid.uuid4())))).artifact
                started = (await runs.StartRun(run_service_pb2.StartRunRequest(
                    artifact_id=artifact.id, request_id=str(uuid.uuid4()),
                    options=run_pb2.RunOptions(leaf_words=200, max_depth=4, sibling_concurrency=8)))).run
                async for _ in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=started.id)):
                    pass
                done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=started.id))).run
                ctx.log(f"versions: {done.nodes_written} leaves written, state {run_pb2.RunState.Name(done.state)}")
                current = (await artifacts.GetArtifact(A.GetArtifactRequest(artifact_id=artifact.id))).artifact.version
                past = current // 2

                def timed(call: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[float]]:
                    async def once() -> float:
                        began = time.perf_counter()
                        await call()
                        return (time.perf_counter() - began) * 1000
                    return once

                def compile_at(version: int) -> Callable[[], Awaitable[float]]:
                    return timed(lambda: artifacts.CompileArtifact(A.CompileArtifactRequest(
                        artifact_id=artifact.id, format=A.COMPILE_FORMAT_MARKDOWN, artifact_version=version)))

                def get_at(version: int) -> Callable[[], Awaitable[float]]:
                    return timed(lambda: artifacts.GetArtifact(A.GetArtifactRequest(
                        artifact_id=artifact.id, view=A.ARTIFACT_VIEW_FULL, artifact_version=version)))

                rows: list[Row] = []
                for label, lace, baseline in (
                        (f"compile Markdown at a past version (v{past} of v{current}), {leaves} leaves",
                         compile_at(past), compile_at(0)),
                        (f"compile Markdown at the current version through the history, {leaves} leaves",
                         compile_at(current), compile_at(0)),
                        (f"GetArtifact FULL at a past version, {leaves} leaves", get_at(past), get_at(0))):
                    a, b = await interleaved(rounds, lace, baseline)
                    rows.append(Row(label, median(a), median(b), "ms", baseline_label="the same call, now"))
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT pg_total_relation_size('node_versions') + pg_total_relation_size('artifact_versions'), "
                    "(SELECT count(*) FROM node_versions)").fetchone()
                assert row is not None
            history_bytes, history_rows = int(row[0]), int(row[1])
            rows.append(Row(f"history kept per written leaf ({history_rows} node versions)",
                            history_bytes / max(1, done.nodes_written), None, "bytes",
                            note="node_versions + artifact_versions, tables and indexes"))
    return rows
