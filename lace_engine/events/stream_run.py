"""StreamRun's logic, transport-free: replay from Postgres, then tail live events, exactly once.

Order of operations: subscribe to the hub first, then read history, so no commit
can fall between the two; de-duplicate by seq; fill any gap from the database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from lace_engine.errors import InvalidArgument, Unavailable
from lace_engine.events.hub import EventHub
from lace_engine.model import EventType, RunEvent, RunState

MAX_BATCH = 1000

ReadEvents = Callable[[uuid.UUID, int, int], Awaitable[list[RunEvent]]]
ReadHead = Callable[[uuid.UUID], Awaitable[tuple[int, RunState]]]


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
    read_events: ReadEvents,
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
    head, state = await read_head(run_id)  # NotFound for an unknown run
    sub = hub.subscribe(run_id)
    try:
        last = cursor

        def check_open() -> None:
            if hub.closed:
                raise Unavailable("the server is shutting down; reconnect with your cursor",
                                  reason="SERVER_SHUTTING_DOWN", metadata={"cursor": str(last)})

        async def catch_up() -> AsyncIterator[StreamBatch]:
            nonlocal last
            while True:
                check_open()
                batch = await read_events(run_id, last, batch_limit)
                if not batch:
                    return
                last = batch[-1].seq
                yield StreamBatch(batch, max(last, hub.head(run_id) or 0), None)
                if is_terminal(batch[-1]) or len(batch) < batch_limit:
                    return

        async for out in catch_up():
            yield out
            if is_terminal(out.events[-1]):
                return
        if state.terminal and last >= head:
            return

        while True:
            ready = await sub.wait(heartbeat_s)
            check_open()
            if not ready:
                head, state = await read_head(run_id)
                if state.terminal and last >= head:
                    return
                if head > last:  # missed wake-up: fill from the database
                    sub.woken = True
                    continue
                yield StreamBatch([], head, state)
                continue
            if sub.overflowed or sub.woken:
                sub.drain()
                sub.reset()
                async for out in catch_up():
                    yield out
                    if is_terminal(out.events[-1]):
                        return
                continue
            for events in sub.drain():
                fresh = [e for e in events if e.seq > last]
                if not fresh:
                    continue
                if fresh[0].seq != last + 1:
                    # A commit published out of order (or before we subscribed): read the gap.
                    gap = await read_events(run_id, last, fresh[0].seq - last - 1)
                    fresh = [e for e in gap if e.seq > last] + fresh
                    if [e.seq for e in fresh] != list(range(last + 1, last + 1 + len(fresh))):
                        sub.woken = True
                        break
                for start in range(0, len(fresh), batch_limit):
                    chunk = fresh[start:start + batch_limit]
                    last = chunk[-1].seq
                    yield StreamBatch(chunk, max(last, hub.head(run_id) or 0), None)
                    if is_terminal(chunk[-1]):
                        return
    finally:
        sub.close()
