"""Settings read once from the environment; every knob has a documented default (README)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lace_engine.domain import RunOptions
from lace_engine.errors import InvalidArgument


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{key}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidArgument(f"{key}={raw!r} is not a number") from None


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _choice(env: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(key, "").strip().lower()
    if raw not in allowed:
        raise InvalidArgument(f"{key}={raw!r} is not one of {', '.join(repr(a) for a in allowed if a)}",
                              metadata={"variable": key})
    return raw


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".lace")
    pool_size: int = 10
    execute_runs: bool = True
    run_options: RunOptions = field(default_factory=RunOptions)
    # 0: twice llm_concurrency (ExecutorConfig derives it).
    max_concurrent_runs: int = 0
    max_concurrent_rpcs: int = 10_000
    llm_concurrency: int = 64
    context_budget_tokens: int = 6000
    # "blocks" or "prose" (proposal_schema.content_schema); "" lets the provider's model decide.
    content_style: str = ""
    lease_ttl_s: float = 15.0
    # How long a run waits for an unreachable database before it fails (DATABASE_UNAVAILABLE).
    db_outage_s: float = 300.0
    heartbeat_s: float = 5.0
    # host:port of the Prometheus /metrics endpoint; "" is off.
    metrics_listen: str = ""
    # Committed batches a live stream may have queued before it falls back to reading Postgres.
    stream_queue_batches: int = 256
    # Who holds a run's lease. Unique among live processes: a process takes back, at start, the leases
    # a dead process of the same id left (LACE_OWNER_ID; an embedded server uses its data directory).
    owner_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    event_bus: str = "postgres"
    nats_url: str = "nats://127.0.0.1:4222"
    # How runs reach workers: "" follows event_bus ("nats": job messages on JetStream; else the claim loop).
    job_dispatch: str = ""
    nats_replicas: int = 1
    nats_events_max_age_s: float = 86400.0
    mirror_max_inflight: int = 256
    stream_fallback_s: float = 2.0
    llm_global_limit: int = 0
    llm_permit_ttl_s: float = 30.0
    # Per tenant, across every process (0: no limit): runs executing at once (the rest wait PENDING),
    # and LLM calls in flight (permits of the llm_permits table under "<provider>@<tenant>").
    tenant_max_runs: int = 0
    tenant_llm_concurrency: int = 0
    # Binary exports (pandoc, Typst) running at once in this process, and seconds each may take.
    export_concurrency: int = 2
    export_timeout_s: float = 120.0
    # The largest compiled document CompileArtifact returns; a larger one is refused (COMPILED_TOO_LARGE).
    max_compiled_bytes: int = 16 * 1024 * 1024 - 64 * 1024
    # PEM files: the server's certificate chain and key (TLS on when both are set), and the CA that
    # client certificates must chain to (mutual TLS: a client without one is refused).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # `lace serve --web` with TLS: the CA Envoy trusts for the gRPC upstream (default LACE_TLS_CERT
    # itself, right for a self-signed one), and the certificate it presents under mutual TLS.
    web_upstream_ca: str = ""
    web_client_cert: str = ""
    web_client_key: str = ""
    # What `lace serve` and `lace worker` run on: uvloop (where installed; ~8% less CPU an LLM call)
    # or the standard library's asyncio loop.
    event_loop: str = "uvloop"
    # Finished runs' events older than this many days are pruned; 0 keeps them forever.
    retention_days: float = 0.0
    retention_interval_s: float = 3600.0
    # Events one run may have; a warning event at 80%, and the run fails before a step could pass it.
    max_events_per_run: int = 100_000

    def __post_init__(self) -> None:
        if self.max_events_per_run < 0:
            raise InvalidArgument("LACE_MAX_EVENTS_PER_RUN must not be negative (0 is no limit)",
                                  metadata={"variable": "LACE_MAX_EVENTS_PER_RUN"})
        if self.retention_days < 0:
            raise InvalidArgument(f"LACE_RETENTION_DAYS={self.retention_days:g} must not be negative (0 keeps "
                                  "events forever)", metadata={"variable": "LACE_RETENTION_DAYS"})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Reads LACE_* variables; raises InvalidArgument on malformed values."""
        e = os.environ if env is None else env
        return cls(
            database_url=e.get("LACE_DATABASE_URL") or None,
            data_dir=Path(e.get("LACE_DATA_DIR", ".lace")),
            pool_size=_int(e, "LACE_DB_POOL_SIZE", 10),
            execute_runs=_bool(e, "LACE_EXECUTE_RUNS", True),
            run_options=RunOptions(
                leaf_words=_int(e, "LACE_LEAF_WORDS", 1000),
                max_depth=_int(e, "LACE_MAX_DEPTH", 4),
                sibling_concurrency=_int(e, "LACE_SIBLING_CONCURRENCY", 1),
                max_proposal_retries=_int(e, "LACE_MAX_PROPOSAL_RETRIES", 2),
            ),
            max_concurrent_runs=_int(e, "LACE_MAX_CONCURRENT_RUNS", 0),
            max_concurrent_rpcs=_int(e, "LACE_MAX_CONCURRENT_RPCS", 10_000),
            llm_concurrency=_int(e, "LACE_LLM_CONCURRENCY", 64),
            context_budget_tokens=_int(e, "LACE_CONTEXT_BUDGET_TOKENS", 6000),
            content_style=_choice(e, "LACE_CONTENT_STYLE", ("", "blocks", "prose")),
            lease_ttl_s=_float(e, "LACE_LEASE_TTL_S", 15.0),
            db_outage_s=_float(e, "LACE_DB_OUTAGE_S", 300.0),
            heartbeat_s=_float(e, "LACE_STREAM_HEARTBEAT_S", 5.0),
            metrics_listen=e.get("LACE_METRICS_LISTEN", "").strip(),
            stream_queue_batches=_int(e, "LACE_STREAM_QUEUE_BATCHES", 256),
            event_bus=e.get("LACE_EVENT_BUS", "postgres"),
            nats_url=e.get("LACE_NATS_URL", "nats://127.0.0.1:4222"),
            job_dispatch=e.get("LACE_JOB_DISPATCH", ""),
            nats_replicas=_int(e, "LACE_NATS_REPLICAS", 1),
            nats_events_max_age_s=_float(e, "LACE_NATS_EVENTS_MAX_AGE_S", 86400.0),
            mirror_max_inflight=_int(e, "LACE_MIRROR_MAX_INFLIGHT", 256),
            stream_fallback_s=_float(e, "LACE_STREAM_FALLBACK_S", 2.0),
            llm_global_limit=_int(e, "LACE_LLM_GLOBAL_LIMIT", 0),
            llm_permit_ttl_s=_float(e, "LACE_LLM_PERMIT_TTL_S", 30.0),
            tenant_max_runs=_int(e, "LACE_TENANT_MAX_RUNS", 0),
            tenant_llm_concurrency=_int(e, "LACE_TENANT_LLM_CONCURRENCY", 0),
            export_concurrency=_int(e, "LACE_EXPORT_CONCURRENCY", 2),
            export_timeout_s=_float(e, "LACE_EXPORT_TIMEOUT_S", 120.0),
            max_compiled_bytes=_int(e, "LACE_MAX_COMPILED_BYTES", 16 * 1024 * 1024 - 64 * 1024),
            tls_cert=e.get("LACE_TLS_CERT", "").strip(),
            tls_key=e.get("LACE_TLS_KEY", "").strip(),
            tls_client_ca=e.get("LACE_TLS_CLIENT_CA", "").strip(),
            web_upstream_ca=e.get("LACE_WEB_UPSTREAM_CA", "").strip(),
            web_client_cert=e.get("LACE_WEB_CLIENT_CERT", "").strip(),
            web_client_key=e.get("LACE_WEB_CLIENT_KEY", "").strip(),
            event_loop=_choice(e, "LACE_EVENT_LOOP", ("", "uvloop", "asyncio")) or "uvloop",
            retention_days=_float(e, "LACE_RETENTION_DAYS", 0.0),
            retention_interval_s=_float(e, "LACE_RETENTION_INTERVAL_S", 3600.0),
            max_events_per_run=_int(e, "LACE_MAX_EVENTS_PER_RUN", 100_000),
            **({"owner_id": e["LACE_OWNER_ID"].strip()} if e.get("LACE_OWNER_ID", "").strip() else {}),
        )
