"""run_store's StartRun write and database.Reads, against a real PostgreSQL: the INSERT and the first
event travel in one round trip, and what comes back is the row as it was committed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from lace_engine.domain import RunOptions, RunState
from lace_engine.errors import FailedPrecondition, NotFound
from lace_engine.pipeline.apply import NewArtifact, plan_create_artifact
from lace_engine.storage import apply_store, event_log, ir_store, run_store
from lace_engine.storage.database import Database, Reads


@pytest.fixture
async def db(own_database: str) -> AsyncIterator[Database]:
    database = Database(own_database, pool_size=2)
    await database.open()
    yield database
    await database.aclose()


async def new_artifact(db: Database) -> uuid.UUID:
    artifact_id = uuid.uuid4()
    async with db.transaction() as tx:
        await apply_store.write_mutation(tx, plan_create_artifact(artifact_id, NewArtifact(
            title="Run store", brief="Runs and their first event.", style="", target_words=500)))
    return artifact_id


async def insert(db: Database, artifact_id: uuid.UUID) -> uuid.UUID:
    run_id = uuid.uuid4()
    async with db.transaction() as tx:
        await run_store.insert_run(tx, run_id=run_id, artifact_id=artifact_id, scope_node_id=None,
                                   instruction="be brief", options=RunOptions(), provider="offline", model="m1",
                                   estimate={"llm_calls": 3})
    return run_id


async def test_insert_run_returns_the_committed_row_with_its_first_event(db: Database) -> None:
    artifact_id = await new_artifact(db)
    run_id = uuid.uuid4()
    async with db.transaction() as tx:
        returned = await run_store.insert_run(
            tx, run_id=run_id, artifact_id=artifact_id, scope_node_id=None, instruction="be brief",
            options=RunOptions(leaf_words=300), provider="offline", model="m1", estimate={"llm_calls": 3},
            trace_context={"traceparent": "00-abc-def-01"})
    async with db.read() as conn:
        stored = await run_store.get_run(conn, run_id)
    assert returned == stored
    assert (stored.state, stored.head_seq, stored.instruction) == (RunState.PENDING, 1, "be brief")
    async with db.fast_read() as conn:
        events = await event_log.read(conn, run_id, after_seq=0, limit=10)
    assert [(e.seq, e.payload["to_state"]) for e in events] == [(1, "pending")]


async def test_a_second_run_of_an_artifact_names_the_active_one_and_writes_nothing(db: Database) -> None:
    artifact_id = await new_artifact(db)
    first = await insert(db, artifact_id)
    with pytest.raises(FailedPrecondition) as raised:
        await insert(db, artifact_id)
    assert raised.value.reason == "ARTIFACT_HAS_ACTIVE_RUN"
    assert raised.value.metadata["run_id"] == str(first)
    async with db.fast_read() as conn:
        cur = await conn.execute("SELECT count(*) FROM runs WHERE artifact_id = %s", (artifact_id,))
        assert await cur.fetchone() == (1,)
        cur = await conn.execute("SELECT count(*) FROM run_events e JOIN runs r ON r.id = e.run_id "
                                 "WHERE r.artifact_id = %s", (artifact_id,))
        assert await cur.fetchone() == (1,)


async def test_reads_sent_together_come_back_each_to_its_query(db: Database) -> None:
    artifact_id = await new_artifact(db)
    reads = Reads()
    nodes = reads.add(ir_store.nodes_query(artifact_id))
    artifact = reads.add(ir_store.artifact_query(artifact_id))
    missing = reads.add(ir_store.artifact_query(uuid.uuid4()))
    with pytest.raises(RuntimeError):
        _ = artifact.value  # not sent yet
    async with db.fast_read() as conn:
        await reads.send(conn)
    assert artifact.value.id == artifact_id and artifact.value.title == "Run store"
    assert [n.id for n in nodes.value] == [artifact.value.root_node_id]
    with pytest.raises(NotFound):
        _ = missing.value
