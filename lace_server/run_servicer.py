"""lace.v1.RunService over the engine, including the StreamRun data plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc

from lace.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from lace_engine import metrics
from lace_engine.errors import InvalidArgument
from lace_engine.events.stream_run import StreamBatch
from lace_engine.ids import parse_id
from lace_engine.runs.lifecycle import RunAction
from lace_engine.service import Engine
from lace_server import convert
from lace_server.auth import caller_tenant

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


# Live batches (a commit's few events) recently converted, shared by the streams of a run.
_SHARED_BATCH_EVENTS = 64
_SHARED_BATCHES = 256


class RunServicer(run_service_pb2_grpc.RunServiceServicer):
    def __init__(self, engine: Engine):
        self.engine = engine
        self._recent: dict[tuple[object, ...], run_service_pb2.StreamRunResponse] = {}

    async def StartRun(
        self, request: run_service_pb2.StartRunRequest, context: Context
    ) -> run_service_pb2.StartRunResponse:
        artifact_id = parse_id(request.artifact_id, "artifact_id")
        scope = parse_id(request.scope_node_id, "scope_node_id") if request.scope_node_id else None
        run = await self.engine.start_run(artifact_id, request_id=request.request_id, scope_node_id=scope,
                                          instruction=request.instruction, options=_options(request.options),
                                          stale_only=request.stale_only, tenant=caller_tenant())
        return run_service_pb2.StartRunResponse(run=convert.run_to_pb(run))

    async def GetRun(self, request: run_service_pb2.GetRunRequest, context: Context) -> run_service_pb2.GetRunResponse:
        run = await self.engine.get_run(parse_id(request.run_id, "run_id"), tenant=caller_tenant())
        return run_service_pb2.GetRunResponse(run=convert.run_to_pb(run))

    async def ListRuns(
        self, request: run_service_pb2.ListRunsRequest, context: Context
    ) -> run_service_pb2.ListRunsResponse:
        artifact_id = parse_id(request.artifact_id, "artifact_id") if request.artifact_id else None
        items, token = await self.engine.list_runs(artifact_id, request.page_size, request.page_token,
                                                   filter=request.filter, order_by=request.order_by,
                                                   tenant=caller_tenant())
        return run_service_pb2.ListRunsResponse(runs=[convert.run_to_pb(r) for r in items], next_page_token=token)

    async def _control(self, run_id: str, action: RunAction, request_id: str,
                       options: dict[str, int] | None = None) -> run_pb2.Run:
        run = await self.engine.control_run(parse_id(run_id, "run_id"), action, request_id, options,
                                            tenant=caller_tenant())
        return convert.run_to_pb(run)

    async def PauseRun(
        self, request: run_service_pb2.PauseRunRequest, context: Context
    ) -> run_service_pb2.PauseRunResponse:
        return run_service_pb2.PauseRunResponse(run=await self._control(request.run_id, RunAction.PAUSE,
                                                                        request.request_id))

    async def ResumeRun(
        self, request: run_service_pb2.ResumeRunRequest, context: Context
    ) -> run_service_pb2.ResumeRunResponse:
        return run_service_pb2.ResumeRunResponse(run=await self._control(
            request.run_id, RunAction.RESUME, request.request_id, _options(request.options)))

    async def CancelRun(
        self, request: run_service_pb2.CancelRunRequest, context: Context
    ) -> run_service_pb2.CancelRunResponse:
        return run_service_pb2.CancelRunResponse(run=await self._control(request.run_id, RunAction.CANCEL,
                                                                         request.request_id))

    async def ListRunEvents(
        self, request: run_service_pb2.ListRunEventsRequest, context: Context
    ) -> run_service_pb2.ListRunEventsResponse:
        run_id = parse_id(request.run_id, "run_id")
        try:
            types = [convert.EVENT_TYPE_FROM_PB[t] for t in request.event_types]
        except KeyError:
            raise InvalidArgument("event_types has an unknown or UNSPECIFIED value", reason="INVALID_EVENT_TYPE",
                                  metadata={"field": "event_types"}) from None
        events, token = await self.engine.list_run_events(
            run_id, after_seq=request.after_seq, types=types, page_size=request.page_size,
            page_token=request.page_token, tenant=caller_tenant())
        response = run_service_pb2.ListRunEventsResponse(next_page_token=token)
        for e in events:
            convert.fill_run_event(response.events.add(), e)
        return response

    async def StreamRun(
        self, request: run_service_pb2.StreamRunRequest, context: Context
    ) -> AsyncIterator[run_service_pb2.StreamRunResponse]:
        run_id = parse_id(request.run_id, "run_id")
        opened = datetime.now(UTC)
        async for batch in self.engine.stream_run(run_id, request.cursor, tenant=caller_tenant()):
            response = self._stream_response(batch)
            events = batch.events
            if events and events[-1].create_time >= opened:  # replayed history is skipped in one check
                now = datetime.now(UTC)
                for event in events:
                    if event.create_time >= opened:  # live, not history replayed from the cursor
                        metrics.DELIVERY_LAG.observe((now - event.create_time).total_seconds())
            yield response

    def _stream_response(self, batch: StreamBatch) -> run_service_pb2.StreamRunResponse:
        """The message for a batch; a live batch is built once and shared by every stream of the run."""
        events = batch.events
        key: tuple[object, ...] | None = None
        if 0 < len(events) <= _SHARED_BATCH_EVENTS:
            # Seqs are canonical per run, so equal keys mean equal messages (never mutated once built).
            key = (events[0].run_id, events[0].seq, events[-1].seq, batch.head_seq, batch.state)
            shared = self._recent.get(key)
            if shared is not None:
                return shared
        response = run_service_pb2.StreamRunResponse(head_seq=batch.head_seq)
        if batch.state is not None:
            response.run_state = convert.run_state_to_pb(batch.state)
        convert.fill_run_events(response.events, events)
        if key is not None:
            self._recent[key] = response
            if len(self._recent) > _SHARED_BATCHES:
                del self._recent[next(iter(self._recent))]
        return response


def _options(o: run_pb2.RunOptions) -> dict[str, int]:
    return {"leaf_words": o.leaf_words, "max_depth": o.max_depth, "sibling_concurrency": o.sibling_concurrency,
            "max_proposal_retries": o.max_proposal_retries, "max_total_tokens": o.max_total_tokens,
            "max_llm_calls": o.max_llm_calls, "max_duration_s": convert.duration_seconds(o.max_duration),
            "review_plan": int(o.review_plan)}
