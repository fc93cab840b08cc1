"""`lace worker`: executes runs and serves no API (one of many worker processes).

A worker is an Engine without a gRPC server and without live streams: it takes
runs from the job queue (LACE_JOB_DISPATCH=nats) and from its periodic claim
loop, holds each run's lease in Postgres with a fencing token, and (with
LACE_EVENT_BUS=nats) may be elected the event mirror's publisher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import replace

from lace_engine.config import Settings
from lace_engine.errors import InvalidArgument
from lace_server import event_loop

log = logging.getLogger(__name__)


def add_worker_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `lace worker` to the `lace` command's subparsers."""
    worker = sub.add_parser("worker", help="execute runs without serving the API (needs LACE_DATABASE_URL)")
    worker.add_argument("--max-concurrent-runs", type=int, default=0,
                        help="runs this worker executes at once (default LACE_MAX_CONCURRENT_RUNS)")
    worker.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.max_concurrent_runs > 0:
        settings = replace(settings, max_concurrent_runs=args.max_concurrent_runs)
    event_loop.run(run_worker(settings), settings.event_loop)
    return 0


async def run_worker(settings: Settings, env: dict[str, str] | None = None,
                     stop: asyncio.Event | None = None) -> None:
    """Runs a worker until SIGINT/SIGTERM (or `stop` is set), then stops claiming and releases its leases."""
    url = settings.database_url
    if not url:
        raise InvalidArgument("lace worker needs LACE_DATABASE_URL: workers share one PostgreSQL with the API "
                              "(the embedded database serves a single process)",
                              metadata={"variable": "LACE_DATABASE_URL"})
    # Imported here: the engine (and the openai client) cost a second to import, and every
    # `lace` subcommand builds this parser.
    from lace_engine.llm.factory import provider_from_env
    from lace_engine.service import Engine
    from lace_server.server import freeze_start_up_objects
    from lace_server.tracing_setup import configure_tracing

    settings = replace(settings, execute_runs=True)
    configure_tracing(os.environ if env is None else env)  # a run's spans continue its StartRun's trace
    provider = await asyncio.to_thread(provider_from_env, dict(os.environ) if env is None else env)
    engine = Engine(settings, url, provider, serve_streams=False)
    await engine.start()
    freeze_start_up_objects()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(f"lace: worker {settings.owner_id} executing runs (LLM provider: {provider.name}; "
          f"event bus: {settings.event_bus}; job dispatch: {settings.job_dispatch or settings.event_bus})",
          flush=True)
    try:
        await stop.wait()
    finally:
        log.info("worker shutting down")
        await engine.aclose()
