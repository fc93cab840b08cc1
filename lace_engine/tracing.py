"""OpenTelemetry spans of the engine (a run, its steps, context building, LLM calls, Apply).

Only the API is used here: with no SDK tracer provider installed (no OTLP endpoint configured, see
lace_server/tracing_setup.py) every span is a no-op. A run's spans continue the trace of the
StartRun call that created it, carried in the run row, whichever process executes it.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

tracer = trace.get_tracer("lace_engine")


def current_context() -> dict[str, str] | None:
    """The current trace context as W3C headers (traceparent, tracestate), None when untraced."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def context_from(carrier: Mapping[str, str] | None) -> Context | None:
    """The trace context stored by `current_context`, to parent a span on; None starts a new trace."""
    return propagate.extract(dict(carrier)) if carrier else None
