"""OpenTelemetry: a client's trace continues through StartRun into the run's steps, executed by
another engine that only shares the database, read back from an in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lace.v1 import run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.llm.offline import OfflineProvider
from lace_engine.service import Engine
from tests.conftest import make_settings, serve_fresh
from tests.helpers import create_artifact, start_run, watch


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the process's SDK tracer provider (installed here if none is)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()  # later tests' spans go nowhere
    exporter.clear()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


@pytest.mark.timeout(120)
async def test_a_clients_trace_runs_through_start_run_into_the_steps_of_a_worker(
        pg_server_url: str, spans: InMemorySpanExporter) -> None:
    async with serve_fresh(pg_server_url, execute_runs=False) as (target, _running, url):
        worker = Engine(make_settings(database_url=url, owner_id="trace-worker"), url, OfflineProvider(),
                        serve_streams=False)
        await worker.start()
        try:
            client_tracing = aio_client_interceptors()  # type: ignore[no-untyped-call]
            async with grpc.aio.insecure_channel(target, interceptors=client_tracing) as channel:
                artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
                artifact = await create_artifact(artifacts, 2000)
                with trace.get_tracer("test").start_as_current_span("client: write a report") as root:
                    run = await start_run(runs, artifact.id, leaf_words=1000)
                events = await asyncio.wait_for(watch(runs, run.id), 60)
                done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
        finally:
            await worker.aclose()
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT trace_context FROM runs WHERE id = %s", (run.id,)).fetchone()

    assert done.state == run_pb2.RUN_STATE_COMPLETED and events
    trace_id = root.get_span_context().trace_id
    assert stored is not None and f"{trace_id:032x}" in stored[0]["traceparent"]
    finished = spans.get_finished_spans()
    mine = tuple(s for s in finished if s.context is not None and s.context.trace_id == trace_id)
    by_id = {s.context.span_id: s for s in mine if s.context is not None}

    # The server continued the client's call: StartRun's server span is a child of the client's span.
    (server,) = [s for s in mine if s.name.endswith("RunService/StartRun") and s.kind is trace.SpanKind.SERVER]
    assert server.parent is not None and by_id[server.parent.span_id].kind is trace.SpanKind.CLIENT
    # The worker's run span continues it, from the trace context stored in the run row.
    (run_span,) = named(mine, "lace.run")
    assert run_span.parent is not None and run_span.parent.span_id == server.context.span_id
    assert run_span.attributes is not None and run_span.attributes["lace.run_id"] == run.id
    steps = named(mine, "lace.step")
    assert len(steps) == done.llm_calls >= 3  # a split and its written children, each once
    assert all(s.parent is not None and by_id[s.parent.span_id].name in ("lace.run", "lace.step") for s in steps)
    for name in ("lace.context", "lace.llm_call", "lace.apply"):
        found = named(mine, name)
        assert len(found) == done.llm_calls, name
        assert all(s.parent is not None and by_id[s.parent.span_id].name == "lace.step" for s in found), name
    calls = named(mine, "lace.llm_call")
    tokens = [s.attributes.get("lace.completion_tokens") if s.attributes else None for s in calls]
    assert sum(t for t in tokens if isinstance(t, int)) == done.usage.completion_tokens
