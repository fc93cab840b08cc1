"""10. Sources: retrieval time per section, AddSource cost, prompt tokens spent on passages, and
citation validity over a real run.

Retrieval: source_store.retrieve through the engine's Database (its fast-read pool) for
the queries the orchestrator makes (a section's title, intent and path), against raw psycopg
running the same SQL on one connection. AddSource: the engine's SourceLibrary.add (extraction,
splitting, one transaction) against raw psycopg inserting the same passages with executemany.
Then an offline run through the real gRPC server over an artifact with those sources: the share
of the write prompts' estimated tokens that went to passages, and how many citations name a
passage that was in the prompt of the call that wrote them (Apply makes that 100% by construction).
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime

import grpc
import psycopg

from bench.common import Context, Row, interleaved, lace_in_process, median
from lace.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
)
from lace_engine.ids import new_id
from lace_engine.llm.offline import generate_content
from lace_engine.sources import NewSource, SourceLibrary, prepare
from lace_engine.storage import source_store
from lace_engine.storage.database import Database
from lace_engine.tokens import estimate_tokens

NAME = "sources"
TOPICS = ["lithium-ion batteries", "pumped hydro", "flow batteries", "grid interconnection", "capacity markets",
          "siting and permitting", "fire safety", "levelized cost", "degradation and warranties", "solar pairing"]


def source_text(passages: int) -> str:
    """Markdown of about `passages` passages: paragraphs of the offline generator on varied topics."""
    paras: list[str] = []
    seed = 0
    while len(paras) < passages:
        topic = TOPICS[seed % len(TOPICS)]
        data = generate_content({"step": "write", "title": topic, "target_words": 70}, seed)
        paras.append(f"{topic.capitalize()}: " + " ".join(b["text"] for b in data["blocks"] if "text" in b))
        seed += 1
    return "\n\n".join(paras)


async def _artifact(target: str, words: int) -> str:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = artifact_service_pb2_grpc.ArtifactServiceStub(ch)
        made = await stub.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(artifact=artifact_pb2.Artifact(
            title="Grid storage", brief="Grid-scale energy storage for regional planners: technologies, costs, "
            "siting, policy.", target_words=words)))
        return made.artifact.id


async def run(ctx: Context) -> list[Row]:
    passages = ctx.size(1000, 1000, 100)
    queries = ctx.size(400, 100, 10)
    words = ctx.size(4000, 2000, 600)
    text = source_text(passages)
    rows: list[Row] = []
    with ctx.database(NAME) as url:
        async with lace_in_process(url) as (target, _running):
            artifact_id = uuid.UUID(await _artifact(target, words))
            scratch = uuid.UUID(await _artifact(target, words))  # AddSource timings go here
            db = Database(url, pool_size=2)
            await db.open()
            try:
                library = SourceLibrary(db)
                # AddSource: the library against raw inserts of the same rows, alternating.
                async def lace_add() -> float:
                    started = time.perf_counter()
                    await library.add(NewSource(scratch, "Storage notes", "text/markdown", text.encode()))
                    return (time.perf_counter() - started) * 1000

                async def raw_add() -> float:
                    source, body, items = prepare(new_id(), NewSource(scratch, "raw", "text/markdown",
                                                                      text.encode()), datetime.now(UTC))
                    started = time.perf_counter()
                    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
                        await conn.execute(
                            "INSERT INTO sources (id, artifact_id, title, media_type, size_bytes, char_count, "
                            "passage_count, content_hash, text) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                            (source.id, scratch, source.title, source.media_type, source.size_bytes,
                             source.char_count, source.passage_count, source.content_hash, body))
                        async with conn.cursor() as cur:
                            await cur.executemany(
                                "INSERT INTO passages (id, source_id, artifact_id, ordinal, start_offset, end_offset,"
                                " text, content_hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                                [(p.id, source.id, scratch, p.ordinal, p.start_offset, p.end_offset, p.text,
                                  p.content_hash) for p in items])
                    return (time.perf_counter() - started) * 1000

                lace_ms, raw_ms = await interleaved(ctx.size(3, 1, 1), lace_add, raw_add)
                source = await library.add(NewSource(artifact_id, "Storage notes", "text/markdown", text.encode()))
                count = source.passage_count
                rows.append(Row(f"10. AddSource ms, {count} passages", median(lace_ms), median(raw_ms), "ms",
                                baseline_label="raw psycopg executemany"))

                # Retrieval for section-like queries (title, intent, path).
                texts = [f"{TOPICS[i % len(TOPICS)]} for planners, section {i}: costs and risks of "
                         f"{TOPICS[(i * 7) % len(TOPICS)]}" for i in range(queries)]
                qs = [source_store.retrieval_query([t, "Grid storage"]) for t in texts]
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute("ANALYZE passages")

                    async def lace_q() -> float:
                        started = time.perf_counter()
                        for q in qs:
                            async with db.fast_read() as c:
                                await source_store.retrieve(c, artifact_id, q, limit=6)
                        return (time.perf_counter() - started) * 1000 / len(qs)

                    async def raw_q() -> float:
                        started = time.perf_counter()
                        for q in qs:
                            await (await conn.execute(source_store.RETRIEVE_SQL,  # the engine's own SQL
                                                      {"artifact": artifact_id, "query": q, "limit": 6})).fetchall()
                        return (time.perf_counter() - started) * 1000 / len(qs)

                    lace_r, raw_r = await interleaved(ctx.size(6, 2, 1), lace_q, raw_q)
                rows.append(Row(f"10. retrieval ms per section, {count} passages", median(lace_r),
                                median(raw_r), "ms", baseline_label="raw psycopg, same SQL"))
            finally:
                await db.aclose()

            # A real run over the artifact and its sources.
            async with grpc.aio.insecure_channel(target) as ch:
                runs = run_service_pb2_grpc.RunServiceStub(ch)
                started_run = await runs.StartRun(run_service_pb2.StartRunRequest(artifact_id=str(artifact_id)))
                async for _ in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=started_run.run.id)):
                    pass
                done = await runs.GetRun(run_service_pb2.GetRunRequest(run_id=started_run.run.id))
                if done.run.state != run_pb2.RUN_STATE_COMPLETED:
                    raise RuntimeError(f"the run ended {run_pb2.RunState.Name(done.run.state)}")
                arts = artifact_service_pb2_grpc.ArtifactServiceStub(ch)
                full = await arts.GetArtifact(artifact_service_pb2.GetArtifactRequest(
                    artifact_id=str(artifact_id), view=artifact_service_pb2.ARTIFACT_VIEW_FULL))
        with psycopg.connect(url) as sync:
            calls = sync.execute("SELECT id, context_tokens, context_manifest FROM llm_calls WHERE run_id = %s "
                                 "AND step = 'write'", (started_run.run.id,)).fetchall()
            texts_by_id: dict[str, str] = dict(sync.execute(
                "SELECT id::text, text FROM passages WHERE artifact_id = %s", (artifact_id,)).fetchall())
            written_by: dict[str, uuid.UUID] = dict(sync.execute(  # the call that last wrote each block
                "SELECT DISTINCT ON (block_id) block_id::text, llm_call_id FROM change_events WHERE artifact_id = %s "
                "AND llm_call_id IS NOT NULL ORDER BY block_id, id DESC", (artifact_id,)).fetchall())
    passage_tokens = [sum(estimate_tokens(texts_by_id[e["passage_id"]]) for e in m if e.get("passage_id"))
                      for _, _, m in calls]
    prompt_tokens = [t for _, t, _ in calls]
    rows.append(Row("10. prompt tokens on passages per write call", statistics.fmean(passage_tokens),
                    statistics.fmean(prompt_tokens), "tokens", baseline_label="whole prompt"))
    in_prompt = {call_id: {e["passage_id"] for e in m if e.get("passage_id")} for call_id, _, m in calls}
    citations = [(b.id, p) for b in full.blocks for p in b.cited_passage_ids]
    valid = sum(1 for block_id, p in citations if p in in_prompt.get(written_by[block_id], set()))
    rows.append(Row("10. citations naming a passage of their call's prompt", valid, len(citations), "citations",
                    goal="all", met=valid == len(citations) > 0, baseline_label="all citations"))
    return rows
