"""Turns OpenTelemetry tracing on when an OTLP endpoint is configured, and off otherwise.

The standard OTLP variables decide (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
with OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS and the rest read by the exporter itself). A host
process that installed its own SDK tracer provider first (a test, an embedding application) keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configure_tracing(env: Mapping[str, str]) -> bool:
    """Whether spans are recorded: an SDK provider was installed before, or one is installed now."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True
    endpoint = next((env[k] for k in _ENDPOINTS if env.get(k)), "")
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "lace"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: spans are exported by OTLP to %s", endpoint)
    return True


def server_interceptors(env: Mapping[str, str]) -> list[grpc.aio.ServerInterceptor]:
    """The transport's tracing interceptor when tracing is on: it continues a client's trace context."""
    if not configure_tracing(env):
        return []
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]
    return [interceptor]
