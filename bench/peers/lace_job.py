"""LACE's side of the job: its real gRPC server and engine, the plan written through Apply.

The plan becomes the artifact's tree through `apply_store.write_mutation` (as the other benches'
fixtures do): root SPLIT -> sections SPLIT -> leaves PLANNED. A run started with StartRun (sequential
steps, leaf size 1,000 words, so every 800-word leaf is one write) writes every leaf through the
orchestrator, Deterministic Apply and one transaction per step, exactly as `lace serve` does; the
only bench-side piece is the provider, which answers from the job's shared generator.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import psycopg

from bench.peers.job import BRIEF_TITLE, LEAF_WORDS, Leaf, Section, TextGenerator, leaves_of
from lace.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from lace_engine.domain import Node, NodeState, Origin
from lace_engine.ids import new_id
from lace_engine.llm.base import LLMBadRequest, LLMRequest, LLMResponse
from lace_engine.pipeline import apply
from lace_engine.pipeline.apply import MAX_TARGET_WORDS, Mutation, NewArtifact, NodePatch, Provenance
from lace_engine.storage import apply_store, ir_store
from lace_engine.storage.database import Database

TERMINAL = (run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED)
OPTIONS = run_pb2.RunOptions(leaf_words=1000, max_depth=4, sibling_concurrency=1)


class PeerProvider:
    """An LLMProvider answering every write from the job's generator (looked up by the node's title)."""

    def __init__(self, generator: TextGenerator, by_title: dict[str, Leaf]):
        self.generator = generator
        self.by_title = by_title

    @property
    def name(self) -> str:
        return "offline"

    @property
    def model(self) -> str:
        return "lace-offline-1"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        leaf = self.by_title.get(str(request.task.get("title", "")))
        if leaf is None or request.step.value != "write":
            raise LLMBadRequest(f"the peers job only writes planned leaves, got {request.step} {request.task}")
        data = await self.generator.write(leaf)
        return LLMResponse(data=data, provider=self.name, model=self.model, prompt_tokens=len(request.user) // 4,
                           completion_tokens=leaf.words * 4 // 3,
                           latency_ms=int((time.perf_counter() - started) * 1000), finish_reason="stop")

    async def aclose(self) -> None:
        self.generator.close()


async def create_tree(db: Database, sections: list[Section]) -> uuid.UUID:
    """The artifact with the plan as its tree (untimed set-up)."""
    artifact_id = new_id()
    # LACE accepts artifacts of at most apply.MAX_TARGET_WORDS (200,000) words: 250 leaves of 800. Larger plans
    # declare that maximum and carry the rest in the tree (the final validation then reports the length).
    total = sum(leaf.words for s in sections for leaf in s.leaves)
    create = apply.plan_create_artifact(artifact_id, NewArtifact(
        title=BRIEF_TITLE, brief="A handbook on grid-scale energy storage for regional planners.", style="",
        target_words=min(total, MAX_TARGET_WORDS)))
    root = create.node_inserts[0]
    tops: list[Node] = []
    kids: list[Node] = []
    for i, s in enumerate(sections):
        sid = apply.child_node_id(root.id, i)
        tops.append(Node(id=sid, artifact_id=artifact_id, parent_id=root.id, ordinal=i, depth=1, title=s.title,
                         intent=s.intent, target_words=len(s.leaves) * LEAF_WORDS, state=NodeState.SPLIT))
        kids.extend(Node(id=apply.child_node_id(sid, j), artifact_id=artifact_id, parent_id=sid, ordinal=j, depth=2,
                         title=leaf.title, intent=leaf.intent, target_words=leaf.words, state=NodeState.PLANNED)
                    for j, leaf in enumerate(s.leaves))
    async with db.transaction() as tx:
        await apply_store.write_mutation(tx, create)
        await apply_store.write_mutation(tx, Mutation(
            artifact_id=artifact_id, provenance=Provenance(origin=Origin.HUMAN), node_inserts=(*tops, *kids),
            node_patches=(NodePatch(root.id, NodeState.SPLIT),)))
    return artifact_id


async def only_artifact(url: str) -> uuid.UUID:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT id FROM artifacts")).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))


async def start_run(target: str, artifact_id: uuid.UUID) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        started = await runs.StartRun(run_service_pb2.StartRunRequest(artifact_id=str(artifact_id), options=OPTIONS))
        return str(started.run.id)


async def wait_run(target: str, artifact_id: uuid.UUID) -> str:
    """Watches the artifact's run through StreamRun until it ends (as a LACE client waits); its state."""
    async with grpc.aio.insecure_channel(target) as channel:
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        listed = await runs.ListRuns(run_service_pb2.ListRunsRequest(artifact_id=str(artifact_id)))
        run = listed.runs[0]
        state = run.state
        if state in TERMINAL:
            return str(run_pb2.RunState.Name(state))
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id, cursor=run.head_seq)):
            for event in response.events:
                if event.WhichOneof("payload") == "run_state_changed":
                    state = event.run_state_changed.to_state
        return str(run_pb2.RunState.Name(state))


async def document(db: Database, artifact_id: uuid.UUID, sections: list[Section]) -> list[list[dict[str, Any]]]:
    """Every leaf's blocks, in plan order, read back from Postgres."""
    async with db.read() as conn:
        nodes = await ir_store.get_nodes(conn, artifact_id)
        blocks = await ir_store.get_blocks_by_node(conn, artifact_id)
    by_title = {n.title: n for n in nodes if n.depth == 2}
    return [[b.content.to_json() for b in blocks.get(by_title[leaf.title].id, [])] for leaf in leaves_of(sections)]




async def follow(target: str, artifact_id: uuid.UUID, index_of: dict[str, int], expected: int) -> dict[int, int]:
    """A StreamRun client: monotonic ns at which each leaf's blocks_applied event arrived."""
    seen: dict[int, int] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        while True:
            listed = await runs.ListRuns(run_service_pb2.ListRunsRequest(artifact_id=str(artifact_id)))
            if listed.runs:
                break
            await asyncio.sleep(0.01)
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=listed.runs[0].id, cursor=0)):
            now = time.monotonic_ns()
            for event in response.events:
                if event.WhichOneof("payload") == "blocks_applied":
                    seen[index_of[event.blocks_applied.node_id]] = now
            if len(seen) >= expected:
                break
    return seen


async def history(target: str, artifact_id: uuid.UUID) -> int:
    """Every event of the artifact's finished run through StreamRun from cursor 0; how many."""
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        runs = run_service_pb2_grpc.RunServiceStub(ch)
        listed = await runs.ListRuns(run_service_pb2.ListRunsRequest(artifact_id=str(artifact_id)))
        got = 0
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=listed.runs[0].id, cursor=0)):
            got += len(response.events)
        return got
