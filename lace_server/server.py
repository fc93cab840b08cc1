"""Start-up and shutdown of the gRPC server (grpc.aio on one event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from dataclasses import dataclass, replace
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lace.v1 import (
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_service_pb2,
    run_service_pb2_grpc,
    source_service_pb2,
    source_service_pb2_grpc,
)
from lace_engine import metrics
from lace_engine.config import Settings
from lace_engine.llm.factory import provider_from_env
from lace_engine.service import Engine
from lace_engine.storage.embedded_postgres import EmbeddedPostgres
from lace_server.artifact_servicer import ArtifactServicer
from lace_server.auth import BearerAuthInterceptor, parse_api_keys
from lace_server.rpc_metrics import MetricsInterceptor
from lace_server.run_servicer import RunServicer
from lace_server.source_servicer import SourceServicer
from lace_server.status import ErrorMappingInterceptor
from lace_server.tls import server_credentials
from lace_server.tracing_setup import server_interceptors

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    artifact_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
    source_service_pb2.DESCRIPTOR.services_by_name["SourceService"].full_name,
)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Room in a CompileArtifact response for its fields other than the document (media type, file name).
RESPONSE_ENVELOPE_BYTES = 64 * 1024

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Let clients keep idle streams alive with pings, and ping them ourselves.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_concurrent_streams", 2_000),
]


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """SERVER_OPTIONS, with a send limit that fits the largest compiled document the settings allow."""
    send = max(MAX_MESSAGE_BYTES, settings.max_compiled_bytes + RESPONSE_ENVELOPE_BYTES)
    return [(k, send) if k == "grpc.max_send_message_length" else (k, v) for k, v in SERVER_OPTIONS]


@dataclass
class Running:
    server: grpc.aio.Server
    engine: Engine
    health: health.aio.HealthServicer
    port: int
    embedded: EmbeddedPostgres | None = None
    # The /metrics HTTP server (LACE_METRICS_LISTEN), when on.
    metrics_http: WSGIServer | None = None

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_http is None else int(self.metrics_http.server_address[1])

    async def stop(self, grace_s: float = 5.0) -> None:
        """Graceful: NOT_SERVING, streams end with UNAVAILABLE, in-flight unary calls finish."""
        if self.metrics_http is not None:
            await asyncio.to_thread(self.metrics_http.shutdown)
            self.metrics_http.server_close()
        await self.health.enter_graceful_shutdown()
        self.engine.close_streams()
        await self.server.stop(grace_s)
        await self.engine.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def resolve_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """LACE_DATABASE_URL when set; otherwise an embedded PostgreSQL under LACE_DATA_DIR, owned by this process.

    Raises DataDirectoryInUse when another live process owns that data directory.
    """
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir / "postgres")
    return embedded.start(), embedded


async def start(settings: Settings, listen: str, *, migrate_db: bool = True,
                env: dict[str, str] | None = None) -> Running:
    """Prepares the database, starts the engine and the server; returns once it is serving."""
    credentials = server_credentials(settings)  # a bad TLS setting fails before anything starts
    url, embedded = await asyncio.to_thread(resolve_database, settings)
    if embedded is not None and not (env if env is not None else os.environ).get("LACE_OWNER_ID"):
        # One process per data directory (its lock): an id that a restart keeps, so the restarted
        # server takes back its runs at once instead of waiting for their leases to expire.
        settings = replace(settings, owner_id=f"{socket.gethostname()}:{settings.data_dir.resolve()}")
    if migrate_db:
        from lace_engine.storage import migrate

        await asyncio.to_thread(migrate.upgrade_to_head, url)
    provider = await asyncio.to_thread(provider_from_env, dict(os.environ) if env is None else env)
    engine = Engine(settings, url, provider)
    await engine.start()

    environment = env if env is not None else os.environ
    # Tracing first: the server span is open around everything else, auth refusals included.
    interceptors: list[grpc.aio.ServerInterceptor] = [*server_interceptors(environment), MetricsInterceptor()]
    keys = environment.get("LACE_API_KEYS", "")
    if keys:
        interceptors.append(BearerAuthInterceptor(parse_api_keys(keys)))
    interceptors.append(ErrorMappingInterceptor())
    server = grpc.aio.server(interceptors=interceptors, options=server_options(settings),
                             maximum_concurrent_rpcs=settings.max_concurrent_rpcs)
    artifact_service_pb2_grpc.add_ArtifactServiceServicer_to_server(ArtifactServicer(engine), server)
    run_service_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(engine), server)
    source_service_pb2_grpc.add_SourceServiceServicer_to_server(SourceServicer(engine.sources), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_secure_port(listen, credentials) if credentials else server.add_insecure_port(listen)
    if port == 0:
        raise RuntimeError(f"could not listen on {listen}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_http = None
    if settings.metrics_listen:
        host, _, metrics_port = settings.metrics_listen.rpartition(":")
        metrics_http, _thread = prometheus_client.start_http_server(int(metrics_port), addr=host or "0.0.0.0",
                                                                    registry=metrics.REGISTRY)
    log.info("lace serving", extra={"listen": listen, "port": port, "llm": provider.name,
                                    "database": "embedded" if embedded else "external",
                                    "metrics": settings.metrics_listen or "off"})
    return Running(server=server, engine=engine, health=health_servicer, port=port, embedded=embedded,
                   metrics_http=metrics_http)


async def serve_forever(settings: Settings, listen: str, *, grace_s: float = 5.0) -> None:
    """Runs until SIGINT/SIGTERM, then shuts down gracefully."""
    running = await start(settings, listen)
    freeze_start_up_objects()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"lace: serving lace.v1 on {listen_address(listen, running.port)} (LLM provider: "
          f"{running.engine.provider.name}; Ctrl-C to stop)", flush=True)
    await stop.wait()
    log.info("shutting down")
    await running.stop(grace_s)


def freeze_start_up_objects() -> None:
    """Moves everything allocated so far (modules, descriptors, pools) out of the collector's reach.

    They live as long as the process; without this every full collection re-scans them, and a
    busy server runs many (a replay of 100,000 events spent ~15% of its CPU there).
    """
    gc.collect()
    gc.freeze()


def listen_address(listen: str, port: int) -> str:
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"
