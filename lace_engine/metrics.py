"""This process's Prometheus metrics, in one registry that `lace serve` exposes on LACE_METRICS_LISTEN.

Names follow Prometheus conventions: the unit in the name (`_seconds`, `_tokens`), `_total` on
counters (added by the client library), and labels from bounded sets only (RPC method and status
code, provider and model, outcome, state), never a run or artifact id. Recording costs a few
hundred nanoseconds whether or not anything scrapes them.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lace_engine.domain import EventType, RunEvent

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LLM = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

RPC_REQUESTS = Counter("lace_rpc_requests", "RPCs answered, by method and status code.", ["method", "code"],
                       registry=REGISTRY)
RPC_DURATION = Histogram("lace_rpc_duration_seconds", "Time to answer a unary RPC, by method.", ["method"],
                         buckets=_FAST, registry=REGISTRY)
STREAMS_OPEN = Gauge("lace_streams_open", "StreamRun calls open now.", registry=REGISTRY)
# Both lags run from an event's create_time, stamped by its writer just before COMMIT is sent, so
# they include the commit itself; across hosts they include the hosts' clock offset too.
DELIVERY_LAG = Histogram("lace_live_delivery_lag_seconds", "Time from an event's commit to its StreamRun message "
                         "being handed to the transport, for events committed after the stream opened.",
                         buckets=_FAST, registry=REGISTRY)
MIRROR_LAG = Histogram("lace_mirror_lag_seconds", "Time from an event's commit to JetStream's acknowledgement of "
                       "its mirrored copy.", buckets=_FAST, registry=REGISTRY)
MIRROR_BACKLOG = Gauge("lace_mirror_backlog_events", "Committed events the mirror's leader has not yet seen "
                       "acknowledged by JetStream, as of its last pass (0 where this process does not lead).",
                       registry=REGISTRY)
TAIL_RUNS = Gauge("lace_live_tail_runs", "Runs this API replica holds a NATS subscription for: one per run it "
                  "streams (LACE_EVENT_BUS=nats).", registry=REGISTRY)
TAIL_RECEIVED_BYTES = Counter("lace_live_tail_received_bytes", "Payload bytes of mirrored run events this "
                              "replica's live tail received through NATS.", registry=REGISTRY)
EVENTS_COMMITTED = Counter("lace_events_committed", "Run events committed by this process.", registry=REGISTRY)
RUN_TRANSITIONS = Counter("lace_run_transitions", "Run state changes committed by this process, by the state "
                          "entered.", ["state"], registry=REGISTRY)
RUNS_EXECUTING = Gauge("lace_runs_executing", "Runs this process executes now.", registry=REGISTRY)
LEASE_TAKEOVERS = Counter("lace_lease_takeovers", "Runs taken over after their executor's lease expired.",
                          registry=REGISTRY)
APPLY_TRANSACTIONS = Counter("lace_apply_transactions", "Apply transactions of run steps, by outcome (applied, "
                             "aborted: the IR moved under the plan).", ["outcome"], registry=REGISTRY)
APPLY_DURATION = Histogram("lace_apply_duration_seconds", "Time of one run step's Apply transaction.",
                           buckets=_FAST, registry=REGISTRY)
LLM_CALLS = Counter("lace_llm_calls", "LLM calls, by provider, model and outcome (answered, or the error's kind).",
                    ["provider", "model", "outcome"], registry=REGISTRY)
LLM_DURATION = Histogram("lace_llm_call_duration_seconds", "Time of one LLM call, by provider.", ["provider"],
                         buckets=_LLM, registry=REGISTRY)
LLM_TOKENS = Counter("lace_llm_tokens", "Tokens of LLM calls, by provider, model and kind (prompt, completion).",
                     ["provider", "model", "kind"], registry=REGISTRY)


class PoolStats(Protocol):
    def pool_stats(self) -> dict[str, tuple[int, int]]:
        """{pool name: (connections in use, idle connections)}."""


class _PoolCollector(Collector):
    """Connections of every open Database of this process, read at scrape time."""

    def __init__(self) -> None:
        self.databases: weakref.WeakSet[PoolStats] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("lace_db_pool_connections", "Database connections, by pool and state.",
                                   labels=["pool", "state"])
        totals: dict[tuple[str, str], int] = {}
        for db in list(self.databases):
            for pool, (in_use, idle) in db.pool_stats().items():
                totals[(pool, "in_use")] = totals.get((pool, "in_use"), 0) + in_use
                totals[(pool, "idle")] = totals.get((pool, "idle"), 0) + idle
        for (pool, state), value in sorted(totals.items()):
            family.add_metric([pool, state], value)
        yield family


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


class CommittedEvents:
    """A Database commit listener: counts the events and run state changes this process commits."""

    def pending(self, run_id: uuid.UUID) -> None:
        pass

    def settled(self, run_id: uuid.UUID, events: list[RunEvent] | None) -> None:
        if not events:
            return
        EVENTS_COMMITTED.inc(len(events))
        for event in events:
            if event.type is EventType.RUN_STATE_CHANGED:
                RUN_TRANSITIONS.labels(str(event.payload.get("to_state", ""))).inc()


COMMITTED_EVENTS = CommittedEvents()


def watch_pools(db: PoolStats) -> None:
    """Reports `db`'s pools in lace_db_pool_connections while it lives."""
    _POOLS.databases.add(db)
