"""Realistic payloads and untimed set-up through LACE's own code (artifacts, nodes, running runs).

Content comes from the offline generator (the same prose a zero-latency run writes); events
carry the payloads the orchestrator writes. Set-up is never part of a timed figure.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from lace_engine.domain import EventType, NewEvent, Node, NodeState, Origin, Run, RunOptions, RunState
from lace_engine.ids import new_id
from lace_engine.llm.offline import generate_content
from lace_engine.pipeline import apply
from lace_engine.pipeline.apply import Mutation, NewArtifact, NodePatch, Provenance
from lace_engine.pipeline.proposals import ContentProposal, parse_content
from lace_engine.runs.lifecycle import CLAIMABLE, ON_CLAIM
from lace_engine.storage import apply_store, run_store
from lace_engine.storage.database import Database
from lace_engine.storage.event_log import Fence

BRIEF = ("A practical report on grid-scale energy storage for regional planners: technologies, costs, "
         "siting, safety, policy and procurement, with worked examples.")


def content_proposal(title: str, words: int, seed: int) -> ContentProposal:
    """What a model proposes for one leaf: blocks of about `words` words and a summary."""
    task = {"step": "write", "title": title, "intent": f"Explain {title.lower()} for planners.",
            "target_words": words, "depth": 1}
    return parse_content(generate_content(task, seed))


@dataclass
class Prepared:
    """An artifact whose root is split into PLANNED leaves, and a RUNNING run holding its lease."""

    artifact_id: uuid.UUID
    leaves: list[Node]
    run: Run
    fence: Fence


async def artifact_with_leaves(db: Database, leaves: int, leaf_words: int, *, title: str = "Storage") -> \
        tuple[uuid.UUID, list[Node]]:
    """Creates an artifact and splits its root into `leaves` PLANNED children (through write_mutation)."""
    artifact_id = new_id()
    create = apply.plan_create_artifact(artifact_id, NewArtifact(title=title, brief=BRIEF, style="",
                                                                 target_words=max(100, leaves * leaf_words)))
    root = create.node_inserts[0]
    children = tuple(
        Node(id=apply.child_node_id(root.id, i), artifact_id=artifact_id, parent_id=root.id, ordinal=i, depth=1,
             title=f"Section {i + 1}: storage topic {i + 1}", intent="Explain the topic for planners.",
             target_words=leaf_words, state=NodeState.PLANNED)
        for i in range(leaves)
    )
    async with db.transaction() as tx:
        await apply_store.write_mutation(tx, create)
        await apply_store.write_mutation(tx, Mutation(
            artifact_id=artifact_id, provenance=Provenance(origin=Origin.HUMAN), node_inserts=children,
            node_patches=(NodePatch(root.id, NodeState.SPLIT),)))
    return artifact_id, list(children)


async def running_run(db: Database, artifact_id: uuid.UUID, owner: str = "bench") -> tuple[Run, Fence]:
    """Inserts a run and takes it to RUNNING under a lease, as an executor's claim does."""
    async with db.transaction() as tx:
        run = await run_store.insert_run(tx, run_id=new_id(), artifact_id=artifact_id, scope_node_id=None,
                                         instruction="", options=RunOptions(), provider="offline",
                                         model="lace-offline-1")
    async with db.transaction() as tx:
        claim = await run_store.claim_next(tx.conn, owner=owner, ttl_s=3600, states=CLAIMABLE, run_id=run.id)
        assert claim is not None
        target = ON_CLAIM[claim.run.state]
        assert target is not None
        await run_store.transition(tx, claim.run, target, "started", fence=claim.fence)
    return claim.run, claim.fence


async def prepare(db: Database, leaves: int, leaf_words: int, owner: str = "bench") -> Prepared:
    artifact_id, nodes = await artifact_with_leaves(db, leaves, leaf_words)
    run, fence = await running_run(db, artifact_id, owner)
    return Prepared(artifact_id, nodes, run, fence)


def step_events(node_id: uuid.UUID, words: int, blocks: int, call_id: uuid.UUID, attempt: int = 1) -> \
        list[NewEvent]:
    """The run events one written leaf produces, with the orchestrator's payloads."""
    nid = str(node_id)
    return [
        NewEvent(EventType.STRATEGY_DECIDED, {"node_id": nid, "strategy": "write",
                                              "reason": f"target {words} words <= leaf size 1000"}),
        NewEvent(EventType.STEP_STARTED, {"node_id": nid, "step": "write", "attempt": attempt}),
        NewEvent(EventType.LLM_CALL_COMPLETED, {
            "call_id": str(call_id), "node_id": nid, "step": "write", "provider": "offline",
            "model": "lace-offline-1", "usage": {"prompt_tokens": 1850, "completion_tokens": words * 4 // 3},
            "latency_ms": 2400, "finish_reason": "stop", "context_tokens": 1850}),
        NewEvent(EventType.BLOCKS_APPLIED, {
            "node_id": nid, "block_ids": [str(apply.block_id_for(node_id, i)) for i in range(blocks)],
            "word_count": words, "removed_blocks": 0, "artifact_version": 2}),
        NewEvent(EventType.STEP_COMPLETED, {"node_id": nid, "step": "write", "attempts": attempt}),
    ]


def event_mix(count: int, run_id: uuid.UUID) -> list[tuple[int, str, dict[str, Any]]]:
    """`count` (seq, type, payload) of a realistic run: started, then leaf after leaf, completed last."""
    out: list[tuple[int, str, dict[str, Any]]] = [
        (1, EventType.RUN_STATE_CHANGED.value, {"from_state": "", "to_state": "pending", "reason": "run created"}),
        (2, EventType.RUN_STATE_CHANGED.value, {"from_state": "pending", "to_state": "running", "reason": "started"}),
    ]
    node = 0
    while len(out) < count - 1:
        node_id = uuid.uuid5(run_id, str(node))
        for e in step_events(node_id, 950, 9, uuid.uuid5(node_id, "call")):
            if len(out) >= count - 1:
                break
            out.append((len(out) + 1, e.type.value, e.payload))
        node += 1
    out.append((len(out) + 1, EventType.RUN_STATE_CHANGED.value,
                {"from_state": "running", "to_state": RunState.COMPLETED.value,
                 "reason": "every node in scope is written"}))
    return out
