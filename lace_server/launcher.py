"""`lace serve --web/--demo`: the server plus the browser front end and/or a first artifact."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from pathlib import Path

import grpc

from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
)
from lace_engine.config import Settings
from lace_engine.llm.content_style import LOCAL_PROVIDER
from lace_server.server import listen_address, start

log = logging.getLogger(__name__)

WEB_DIST = Path(__file__).resolve().parent.parent / "clients" / "web" / "dist"

DEMO_BRIEF = (
    "A practical field guide for a city's engineering team on running a small district heating "
    "network: how heat pumps, thermal storage and pipe networks fit together, how to size and "
    "operate them, what goes wrong, and how to plan the first five years."
)


async def run_demo(target: str, out: Path, words: int = 4000, *, leaf_words: int = 0,
                   sibling_concurrency: int = 4) -> None:
    """Writes one artifact through the public API, printing progress as a client would see it."""
    async with grpc.aio.insecure_channel(target) as channel:
        artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        created = await artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title="District Heating: A Field Guide", brief=DEMO_BRIEF,
                                           target_words=words),
            request_id=str(uuid.uuid4())))
        artifact = created.artifact
        run = (await runs.StartRun(run_service_pb2.StartRunRequest(
            artifact_id=artifact.id, request_id=str(uuid.uuid4()),
            options=run_pb2.RunOptions(sibling_concurrency=sibling_concurrency, leaf_words=leaf_words)))).run
        print(f"demo: artifact {artifact.id}, run {run.id}", flush=True)
        started = time.monotonic()
        written = words_so_far = 0
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
            for event in response.events:
                kind = event.WhichOneof("payload")
                if kind == "node_split":
                    titles = ", ".join(c.title for c in event.node_split.children)
                    print(f"  [{event.seq:4}] split into {len(event.node_split.children)}: {titles}", flush=True)
                elif kind == "blocks_applied":
                    written += 1
                    words_so_far += event.blocks_applied.word_count
                    print(f"  [{event.seq:4}] wrote section {written} ({words_so_far} words so far)", flush=True)
                elif kind == "proposal_rejected":
                    rejected = event.proposal_rejected
                    print(f"  [{event.seq:4}] proposal rejected (attempt {rejected.attempt}): "
                          f"{'; '.join(rejected.errors)[:160]}", flush=True)
                elif kind == "run_failed":
                    print(f"  [{event.seq:4}] run failed: {event.run_failed.reason}", flush=True)
                elif kind == "run_state_changed":
                    state = run_pb2.RunState.Name(event.run_state_changed.to_state)
                    print(f"  [{event.seq:4}] run {state}", flush=True)
        compiled = await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
            artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))
        await asyncio.to_thread(out.write_text, compiled.content)
        print(f"demo: {words_so_far} words in {time.monotonic() - started:.1f}s -> {out}", flush=True)


async def serve_with_extras(settings: Settings, listen: str, *, web: bool, web_port: int, demo: bool,
                            demo_out: Path = Path("lace-demo.md")) -> None:
    """Serves until SIGINT/SIGTERM, optionally with the grpc-web front end and a demo artifact."""
    running = await start(settings, listen)
    target = listen_address(listen, running.port)
    frontend = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        print(f"lace: serving lace.v1 on {target} (LLM provider: {running.engine.provider.name}; Ctrl-C to stop)",
              flush=True)
        if web:
            from lace_server.web import WebFrontend, upstream_tls

            if not WEB_DIST.is_dir():
                raise SystemExit(f"lace: the web UI is not built ({WEB_DIST} is missing); run scripts/build-web.sh")
            frontend = WebFrontend(running.port, web_port, WEB_DIST, grpc_tls=upstream_tls(settings))
            await frontend.start()
            print(f"lace: browser UI on http://127.0.0.1:{web_port}/ (grpc-web through Envoy)", flush=True)
        if demo and running.engine.provider.name == LOCAL_PROVIDER:
            # One section of 1,000 words, written in one call: the tiny default model often repeats
            # its sibling titles when asked to split (docs/performance.md, "A real model"), while
            # every answer the prose grammar admits passes Apply, so the demo completes.
            await run_demo(target, demo_out, 1000, leaf_words=1000, sibling_concurrency=1)
        elif demo:
            await run_demo(target, demo_out)
        await stop.wait()
    finally:
        if frontend is not None:
            await frontend.stop()
        await running.stop()
