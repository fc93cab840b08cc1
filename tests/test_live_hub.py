"""The live hub's ordering rules, without I/O: in seq order, once, and no read-back of local commits."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lace_engine.domain import EventType, RunEvent, RunState
from lace_engine.errors import Unavailable
from lace_engine.events.hub import EventHub, Subscription
from lace_engine.events.stream_run import stream_run
from lace_engine.storage.event_log import Head

RUN = uuid.uuid4()


def events(first: int, last: int) -> list[RunEvent]:
    now = datetime.now(UTC)
    return [RunEvent(RUN, seq, EventType.STEP_STARTED, {"seq": seq}, now) for seq in range(first, last + 1)]


class Log:
    """What the hub read from 'the database' (every committed event up to `committed`)."""

    def __init__(self) -> None:
        self.committed = 0
        self.reads: list[tuple[int, int]] = []

    async def fetch(self, run_id: uuid.UUID, after: int, upto: int) -> list[RunEvent]:
        self.reads.append((after, upto))
        return events(after + 1, min(upto, self.committed))


def delivered(sub: Subscription) -> list[int]:
    """The seqs the hub queued for the subscription (and empties its queue)."""
    seqs = [e.seq for batch in sub._pending for e in batch]
    sub._pending.clear()
    return seqs


def started_hub(first_seq: int = 1) -> tuple[EventHub, Log, Subscription]:
    """A hub with one subscriber that has already seen every event before `first_seq`."""
    log = Log()
    hub = EventHub(log.fetch)
    sub = hub.subscribe(RUN, 0)
    if first_seq > 1:
        log.committed = first_seq - 1
        hub.publish(RUN, events(1, first_seq - 1))
        delivered(sub)
    return hub, log, sub


async def settle_tasks() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_local_commits_that_settle_out_of_order_reach_streams_in_order_without_reads() -> None:
    hub, log, sub = started_hub(first_seq=3)
    hub.pending(RUN)  # seq 3..4
    hub.pending(RUN)  # seq 5..6, committed after the first (row lock), but its task resumes first
    log.committed = 6
    hub.committed(RUN, 4)
    hub.committed(RUN, 6)
    hub.settled(RUN, events(5, 6))
    assert delivered(sub) == []
    hub.settled(RUN, events(3, 4))
    await settle_tasks()
    assert delivered(sub) == [3, 4, 5, 6]
    assert log.reads == []


async def test_a_notify_deferred_for_a_local_commit_that_failed_is_read_from_the_database() -> None:
    hub, log, sub = started_hub(first_seq=3)
    hub.pending(RUN)
    log.committed = 5  # the commit went through, but the client saw an error (connection lost at COMMIT)
    hub.committed(RUN, 5)
    await settle_tasks()
    assert log.reads == []
    hub.settled(RUN, None)
    await settle_tasks()
    assert log.reads == [(2, 5)]
    assert delivered(sub) == [3, 4, 5]


async def test_a_gap_from_another_process_is_read_once_and_held_events_follow_it() -> None:
    hub, log, sub = started_hub(first_seq=3)
    log.committed = 7
    hub.publish(RUN, events(6, 7))  # e.g. the JetStream tail was faster than this NOTIFY's read
    await settle_tasks()
    assert log.reads == [(2, 5)]
    assert delivered(sub) == [3, 4, 5, 6, 7]


async def test_events_that_arrive_twice_are_delivered_once() -> None:
    hub, log, sub = started_hub(first_seq=3)
    log.committed = 4
    hub.publish(RUN, events(3, 4))
    hub.publish(RUN, events(3, 4))
    hub.publish(RUN, events(4, 4))
    hub.committed(RUN, 4)
    await settle_tasks()
    assert delivered(sub) == [3, 4]
    assert log.reads == []


async def test_a_notify_for_a_remote_commit_is_read_at_once() -> None:
    hub, log, sub = started_hub(first_seq=3)
    log.committed = 4
    hub.committed(RUN, 4)
    await settle_tasks()
    assert log.reads == [(2, 4)]
    assert delivered(sub) == [3, 4]


async def test_a_quiet_wait_ends_on_the_hubs_timer_and_a_publish_ends_it_at_once() -> None:
    hub, log, sub = started_hub(first_seq=3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await sub._wait(0.2) is False  # nothing came: a heartbeat is due
    waited = loop.time() - started
    assert 0.2 <= waited < 0.2 * 1.2 + 0.1, waited

    log.committed = 3
    waiting = asyncio.ensure_future(sub._wait(30))
    await settle_tasks()
    hub.publish(RUN, events(3, 3))
    assert await asyncio.wait_for(waiting, 1) is True
    assert delivered(sub) == [3]
    sub.close()
    await hub.aclose()


@dataclass(frozen=True)
class Commit:
    """One transaction of the run: its events, whether this process made it, whether it saw COMMIT return."""

    first: int
    last: int
    local: bool
    confirmed: bool
    settle_delay: int
    notify_delay: int


commits_strategy = st.lists(
    st.tuples(st.integers(1, 3), st.booleans(), st.booleans(), st.integers(0, 4), st.integers(0, 4),
              st.booleans()),
    min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(commits_strategy)
def test_any_interleaving_of_commits_settles_and_notifies_streams_every_event_once_in_order(
        spec: list[tuple[int, bool, bool, int, int, bool]]) -> None:
    """Commits happen in seq order (the run row's lock); what this process learns of them (settle,
    NOTIFY) arrives in any order, with turns of the event loop in between. A real stream_run over
    the hub must yield 1..N, each once, without waiting for a heartbeat."""
    commits: list[Commit] = []
    seq = 0
    for size, local, confirmed, settle_delay, notify_delay, _ in spec:
        commits.append(Commit(seq + 1, seq + size, local, confirmed or not local, settle_delay, notify_delay))
        seq += size
    yields = [y for *_, y in spec]

    async def scenario() -> list[int]:
        log = Log()
        hub = EventHub(log.fetch)

        async def read_head(run_id: uuid.UUID) -> Head:
            return Head(log.committed, RunState.RUNNING, 0)

        received: list[int] = []

        async def consume() -> None:
            async for batch in stream_run(hub, read_head, RUN, 0, heartbeat_s=60):
                received.extend(e.seq for e in batch.events)

        consumer = asyncio.ensure_future(consume())
        await settle_tasks()  # subscribed, history (none) read
        # (time, order, action): a commit at time i; its settle and NOTIFY some steps later.
        actions: list[tuple[int, int, Callable[[], None]]] = []
        for i, c in enumerate(commits):
            def commit(c: Commit = c) -> None:
                if c.local:
                    hub.pending(RUN)  # emitted under the row lock, so after every earlier commit
                log.committed = c.last

            def settle(c: Commit = c) -> None:
                hub.settled(RUN, events(c.first, c.last) if c.confirmed else None)

            def notify(c: Commit = c) -> None:
                hub.committed(RUN, c.last)

            actions.append((i, 0, commit))
            if c.local:
                actions.append((i + c.settle_delay, 1 + i, settle))
            actions.append((i + c.notify_delay, 100 + i, notify))
        actions.sort(key=lambda a: (a[0], a[1]))
        for n, (_, _, act) in enumerate(actions):
            act()
            if yields[n % len(yields)]:
                await asyncio.sleep(0)
        for _ in range(50):
            if len(received) >= seq:
                break
            await asyncio.sleep(0)
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        assert not hub._local  # every pending commit settled
        await hub.aclose()
        return received

    received = asyncio.run(scenario())
    assert received == list(range(1, seq + 1)), (received, commits)


async def test_a_gap_that_never_fills_hands_the_streams_to_the_database_instead_of_holding_forever() -> None:
    log = Log()
    hub = EventHub(log.fetch, max_pending=8)
    sub = hub.subscribe(RUN, 0)
    log.committed = 2
    hub.publish(RUN, events(1, 2))
    assert delivered(sub) == [1, 2]
    # Seqs 3..4 cannot be read (log.committed stays at 2), yet later events keep arriving.
    for seq in range(5, 5 + 9):
        hub.publish(RUN, events(seq, seq))
        await settle_tasks()
    assert sub._behind and delivered(sub) == []
    assert hub.head(RUN) == 13 and not hub._held
    hub.publish(RUN, events(14, 14))  # and the hub carries on from there
    assert delivered(sub) == [14]
    sub.close()
    await hub.aclose()


def seqs(batch: list[RunEvent]) -> list[int]:
    return [e.seq for e in batch]


async def test_a_subscription_replays_its_history_then_tails_and_reads_back_what_overflowed() -> None:
    log = Log()
    hub = EventHub(log.fetch, max_pending=2)
    log.committed = 5
    sub = hub.subscribe(RUN, 1)
    assert seqs(await sub.next(3, 1)) == [2, 3, 4]  # the history after the cursor, `limit` at a time
    assert seqs(await sub.next(3, 1)) == [5]
    for seq in range(6, 9):  # three batches for a queue of two: it overflows and is dropped
        log.committed = seq
        hub.publish(RUN, events(seq, seq))
    assert seqs(await sub.next(3, 1)) == [6, 7, 8]  # read back from the database
    assert await sub.next(3, 0.05) == []  # caught up, nothing new: a heartbeat is due
    reads = len(log.reads)
    log.committed = 10
    hub.publish(RUN, events(9, 10))
    assert seqs(await sub.next(1, 1)) == [9]  # a live batch, split only past the limit
    assert seqs(await sub.next(1, 1)) == [10]
    assert len(log.reads) == reads and sub.cursor == 10
    sub.close()
    await hub.aclose()


async def test_a_head_the_subscription_did_not_receive_is_read_at_its_next_call() -> None:
    log = Log()
    hub = EventHub(log.fetch)
    sub = hub.subscribe(RUN, 0)
    assert await sub.next(10, 0.05) == []  # no history yet
    log.committed = 2  # committed, but no wake-up reached this process (a heartbeat read the head)
    sub.committed(2)
    assert seqs(await sub.next(10, 1)) == [1, 2]
    reads = len(log.reads)
    sub.committed(2)  # nothing it lacks: no read
    assert await sub.next(10, 0.05) == [] and len(log.reads) == reads
    sub.close()
    await hub.aclose()


async def test_a_hole_in_the_queue_is_read_from_the_database_and_a_closed_hub_ends_the_subscription() -> None:
    log = Log()
    hub = EventHub(log.fetch)
    sub = hub.subscribe(RUN, 0)
    assert await sub.next(10, 0.05) == []
    log.committed = 4
    hub.publish(RUN, events(3, 4))  # the first batch the hub sees: 1..2 never came through it
    assert seqs(await sub.next(10, 1)) == [1, 2, 3, 4]
    waiting = asyncio.ensure_future(sub.next(10, 30))
    await settle_tasks()
    hub.close()
    with pytest.raises(Unavailable) as ended:
        await asyncio.wait_for(waiting, 1)
    assert ended.value.reason == "SERVER_SHUTTING_DOWN" and ended.value.metadata == {"cursor": "4"}
    sub.close()
    await hub.aclose()


async def test_interest_is_per_run_not_per_stream_and_one_run_can_be_re_read_alone() -> None:
    """The NATS tail subscribes to a run while the hub has streams of it: told once when a run gets its
    first stream and once after its last; a feed restarted for one run re-reads only that run's streams."""
    log = Log()
    hub = EventHub(log.fetch)
    told: list[tuple[uuid.UUID, bool]] = []
    hub.add_interest_listener(lambda run_id, wanted: told.append((run_id, wanted)))
    other = uuid.uuid4()
    a1, a2, b = hub.subscribe(RUN, 0), hub.subscribe(RUN, 0), hub.subscribe(other, 0)
    assert told == [(RUN, True), (other, True)] and hub.runs() == {RUN, other}
    for sub in (a1, a2, b):
        sub._catching_up = False  # their history is read
    log.committed = 3
    hub.publish(RUN, events(1, 3))
    hub.feed_interrupted(other)
    assert (a1._behind, a2._behind, b._behind) == (False, False, True)
    assert hub.head(RUN) == 3
    a1.close()
    assert told[2:] == []
    a2.close()
    b.close()
    assert told[2:] == [(RUN, False), (other, False)] and hub.runs() == set()
