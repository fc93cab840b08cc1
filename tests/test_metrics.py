"""Prometheus metrics on LACE_METRICS_LISTEN, scraped over HTTP after a real run.

The registry is the process's, shared by every server a test session starts, so each check is a
difference between a scrape before and one after, on label sets only this test's calls touch.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lace.v1 import artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from tests.conftest import serve_fresh
from tests.helpers import create_artifact, start_run, watch

REPO = Path(__file__).resolve().parents[1]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.timeout(120)
async def test_a_run_shows_in_the_metrics(pg_server_url: str) -> None:
    # Calls of 200 ms: the run outlasts the moment its stream opens, so some events arrive live.
    async with serve_fresh(pg_server_url, env={"LACE_OFFLINE_LATENCY_MS": "200"},
                           metrics_listen="127.0.0.1:0") as (target, running, _url), \
            grpc.aio.insecure_channel(target) as channel:
        assert running.metrics_port
        artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
        _, before = await asyncio.to_thread(scrape, running.metrics_port)
        artifact = await create_artifact(artifacts, 3000)
        run = await start_run(runs, artifact.id, leaf_words=1000, max_depth=1)
        events = await watch(runs, run.id)
        done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
        with pytest.raises(grpc.aio.AioRpcError):
            await artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(artifact_id="not-a-uuid"))
        # grpc.aio's abort() sends the status before the interceptor's `finally` counts the call, so the
        # client can see the error first: scrape until it is counted (a bound, not a timing check).
        failed = {"method": "ArtifactService/GetArtifact", "code": "INVALID_ARGUMENT"}
        for _ in range(100):
            text, after = await asyncio.to_thread(scrape, running.metrics_port)
            if value(after, "lace_rpc_requests_total", **failed) > value(before, "lace_rpc_requests_total", **failed):
                break
            await asyncio.sleep(0.05)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert done.state == run_pb2.RUN_STATE_COMPLETED
    # RPCs by method and code, and their latency.
    assert delta("lace_rpc_requests_total", method="RunService/StartRun", code="OK") == 1
    assert delta("lace_rpc_requests_total", method="RunService/StreamRun", code="OK") == 1
    assert delta("lace_rpc_requests_total", method="ArtifactService/GetArtifact", code="INVALID_ARGUMENT") == 1
    assert delta("lace_rpc_duration_seconds_count", method="RunService/StartRun") == 1
    assert delta("lace_rpc_duration_seconds_sum", method="RunService/StartRun") > 0
    # Every event the run committed, its state changes, its Apply transactions and LLM calls.
    assert delta("lace_events_committed_total") >= len(events) == done.head_seq
    assert delta("lace_run_transitions_total", state="completed") >= 1
    applied = len([e for e in events if e.WhichOneof("payload") in ("node_split", "blocks_applied")])
    assert delta("lace_apply_transactions_total", outcome="applied") >= applied > 0
    assert delta("lace_llm_calls_total", provider="offline", model=done.model, outcome="answered") >= done.llm_calls
    assert delta("lace_llm_tokens_total", provider="offline", model=done.model, kind="completion") >= \
        done.usage.completion_tokens > 0
    # Live delivery: events committed after the stream opened, each timed from commit to hand-over.
    assert delta("lace_live_delivery_lag_seconds_count") >= 1
    assert delta("lace_live_delivery_lag_seconds_sum") > 0
    # Pools, read at scrape time; no run or artifact id in any label.
    assert value(after, "lace_db_pool_connections", pool="reads", state="idle") >= 1
    assert value(after, "lace_db_pool_connections", pool="writes", state="idle") >= 1  # the run's steps
    assert run.id not in text and artifact.id not in text

    # The Grafana dashboard in deploy/ asks only for metrics the server exposes.
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    asked = {re.sub(r"_(bucket|count|sum)$", "", name) for panel in dashboard["panels"]
             for target in panel["targets"] for name in re.findall(r"lace_[a-z_]+", target["expr"])}
    exposed = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name, _ in after}
    assert asked and asked <= exposed, asked - exposed


def test_docker_compose_scrapes_the_port_every_process_serves_metrics_on() -> None:
    """docker-compose.yaml: each LACE process serves metrics on the port deploy/prometheus.yml scrapes,
    and Grafana mounts files that exist (its dashboard is the one checked above)."""
    compose = (REPO / "docker-compose.yaml").read_text()
    prometheus = (REPO / "deploy/prometheus.yml").read_text()
    listens = re.findall(r"LACE_METRICS_LISTEN: 0\.0\.0\.0:(\d+)", compose)
    assert len(listens) == 2 and len(set(listens)) == 1, "the API and the workers serve metrics"
    port = listens[0]
    assert f'targets: ["lace:{port}"]' in prometheus
    assert re.search(rf'names: \["worker"\]\s+type: A\s+port: {port}\b', prometheus)
    mounted = re.findall(r"- \./(deploy/[\w./-]+):", compose)
    assert {"deploy/prometheus.yml", "deploy/grafana-dashboard.json", "deploy/grafana/datasources.yaml",
            "deploy/grafana/dashboards.yaml"} <= set(mounted)
    for path in mounted:
        assert (REPO / path).is_file(), path
