"""StreamRun's logic, transport-free: replay from Postgres, then tail live events, exactly once.

The hub's subscription does the delivery: subscribed before anything is read, it replays the
history after the cursor, then hands over live batches, de-duplicated by seq and caught up from
the database whenever it is behind. This module adds what StreamRun promises on top: it ends
after the terminal event, sends heartbeats on a quiet stream, and polls the run's head with
them, so a commit whose wake-up was lost still reaches the stream.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from lace_engine.domain import EventType, RunEvent, RunState
from lace_engine.errors import InvalidArgument
from lace_engine.events.hub import EventHub
from lace_engine.storage.event_log import Head

MAX_BATCH = 1000

ReadHead = Callable[[uuid.UUID], Awaitable[Head]]


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """Consecutive events (empty for a heartbeat) and the run's head and state as known now."""

    events: list[RunEvent]
    head_seq: int
    state: RunState | None


def is_terminal(event: RunEvent) -> bool:
    return event.type is EventType.RUN_STATE_CHANGED and RunState(event.payload["to_state"]).terminal


async def stream_run(
    hub: EventHub,
    read_head: ReadHead,
    run_id: uuid.UUID,
    cursor: int,
    *,
    heartbeat_s: float,
    batch_limit: int = MAX_BATCH,
) -> AsyncIterator[StreamBatch]:
    """Yields every event of the run with seq > cursor, in order, once; ends after the terminal event."""
    if cursor < 0:
        raise InvalidArgument("cursor must not be negative; use 0 to start from the beginning",
                              reason="NEGATIVE_CURSOR", metadata={"field": "cursor"})
    first = await read_head(run_id)  # NotFound for an unknown run
    first.check_cursor(run_id, cursor)  # CursorCompacted into pruned history
    head, state = first.seq, first.state
    sub = hub.subscribe(run_id, cursor, tenant=first.tenant)
    try:
        while not (state.terminal and sub.cursor >= head):  # a finished run, sent to its end
            events = await sub.next(batch_limit, heartbeat_s)
            if events:
                yield StreamBatch(events, sub.head, None)
                if is_terminal(events[-1]):
                    return
                continue
            polled = await read_head(run_id)  # quiet: poll the head, then a heartbeat
            head, state = polled.seq, polled.state
            if head > sub.cursor:
                sub.committed(head)  # a wake-up went missing: the next call reads the database
            elif not state.terminal:
                yield StreamBatch([], head, state)
    finally:
        sub.close()
