"""Database.pipelined_transaction, the executor's per-call writes: BEGIN and COMMIT sent by hand in
pipeline mode, so every way out of one must commit all of it or nothing, and hand the pool back a
connection that is idle."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from lace_engine.domain import EventType, RunEvent
from lace_engine.storage.database import Database


class Heard:
    """A commit listener that keeps what it was told."""

    def __init__(self) -> None:
        self.started: list[uuid.UUID] = []
        self.ended: list[tuple[uuid.UUID, list[RunEvent] | None]] = []

    def pending(self, run_id: uuid.UUID) -> None:
        self.started.append(run_id)

    def settled(self, run_id: uuid.UUID, events: list[RunEvent] | None) -> None:
        self.ended.append((run_id, events))


def event() -> RunEvent:
    return RunEvent(uuid.uuid4(), 1, EventType.STEP_STARTED, {"node_id": "n"}, datetime.now(UTC))


@pytest.fixture
async def db(own_database: str) -> AsyncIterator[Database]:
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY, "
                     "tag int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    database = Database(own_database, pool_size=1)  # one write connection: every test reuses it
    await database.open()
    yield database
    await database.aclose()


def rows(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM probe ORDER BY id").fetchall()]


async def insert(db: Database, *ids: int, tag: int | None = None, fail: bool = False,
                 heard: Heard | None = None) -> None:
    async with db.pipelined_transaction() as tx:
        driver = await tx.driver()
        for i in ids:
            await driver.execute("INSERT INTO probe VALUES (%s, %s)", (i, i if tag is None else tag))
        if heard is not None:
            tx.emitted([event()])
        if fail:
            raise RuntimeError("the caller gave up")


async def test_a_transaction_commits_every_statement_and_its_events_are_handed_on(
        db: Database, own_database: str) -> None:
    heard = Heard()
    db.add_listener(heard)
    await insert(db, 1, 2, heard=heard)
    assert rows(own_database) == [1, 2]
    assert len(heard.started) == 1 and heard.ended[0][1] is not None and len(heard.ended[0][1]) == 1


async def test_an_error_in_the_body_rolls_everything_back_and_the_connection_is_usable(
        db: Database, own_database: str) -> None:
    heard = Heard()
    db.add_listener(heard)
    with pytest.raises(RuntimeError, match="gave up"):
        await insert(db, 1, 2, fail=True, heard=heard)
    assert rows(own_database) == []
    assert heard.ended == [(heard.started[0], None)]
    async with db.write_pool.connection() as conn:  # the pool's one connection, handed back idle
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    await insert(db, 3)
    assert rows(own_database) == [3]


async def test_a_failing_statement_rolls_back_the_statements_before_it(db: Database, own_database: str) -> None:
    await insert(db, 1)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await insert(db, 2, 1)  # 2 is fine, 1 exists
    assert rows(own_database) == [1]
    await insert(db, 4)
    assert rows(own_database) == [1, 4]


async def test_a_failing_commit_commits_nothing(db: Database, own_database: str) -> None:
    # The deferred unique check runs at COMMIT: the statements succeed and the COMMIT fails.
    heard = Heard()
    db.add_listener(heard)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await insert(db, 1, 2, tag=7, heard=heard)
    assert rows(own_database) == []
    assert [events for _, events in heard.ended] == [None]
    await insert(db, 5)
    assert rows(own_database) == [5]


# Database.one_statement: step_started and the journal's other appends, one autocommit statement each.

async def test_one_statement_commits_as_it_is_answered_and_hands_on_its_events(
        db: Database, own_database: str) -> None:
    heard = Heard()
    db.add_listener(heard)
    async with db.one_statement() as tx:
        await (await tx.driver()).execute("INSERT INTO probe VALUES (1, 1)")
        tx.emitted([event()])
        assert rows(own_database) == [1]  # committed before the block ends: no transaction was opened
    assert len(heard.ended) == 1 and heard.ended[0][1] is not None


async def test_one_statement_refuses_a_second_statement(db: Database, own_database: str) -> None:
    with pytest.raises(RuntimeError, match="sends one statement"):
        async with db.one_statement() as tx:
            await (await tx.driver()).execute("INSERT INTO probe VALUES (1, 1)")
            await (await tx.driver()).execute("INSERT INTO probe VALUES (2, 2)")
    assert rows(own_database) == [1]


async def test_a_failing_one_statement_commits_nothing_and_its_events_are_dropped(
        db: Database, own_database: str) -> None:
    heard = Heard()
    db.add_listener(heard)
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with db.one_statement() as tx:
            tx.emitted([event()])
            await (await tx.driver()).execute("INSERT INTO probe VALUES (1, 1), (2, 1)")  # tag 1 twice
    assert rows(own_database) == []
    assert [events for _, events in heard.ended] == [None]
    await insert(db, 3)
    assert rows(own_database) == [3]
