"""Five briefs written by a real model: LACE_LLM=local (llama-server with Gemma 3 270M unless
LACE_LOCAL_MODEL names another GGUF), through a real LACE server, one run after another.

    python -m bench.real_model [--database-url URL] [--out DIR] [--only N ...] [--record DIR]

Prints, per brief and in total: how the run ended, proposals applied on the first attempt and
within the retry limit, re-asks, repairs, calls that ran to their output limit, tokens per written
word, LongWriter's length score S_l of the document, and wall seconds per 1,000 words. Each
compiled document is saved under --out, to be read: the figures say nothing of what it says.
Not a ratio table: there is no baseline to run a model against on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.common import bench_settings
from lace.v1 import artifact_pb2, artifact_service_pb2, run_pb2, run_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace.v1.run_service_pb2_grpc import RunServiceStub
from lace_engine.pipeline.quality import AT_LIMIT
from tests.support.database import fresh_database


@dataclass(frozen=True)
class Brief:
    title: str
    brief: str
    words: int


BRIEFS = (
    Brief("Composting at home", "A practical guide to composting kitchen and garden waste, for beginners.", 600),
    Brief("Cycling to work", "Why and how to start cycling to work: bikes, routes, safety, weather and costs.", 1000),
    Brief("Rainwater harvesting", "A guide for homeowners on collecting and using rainwater: tanks, filters, "
          "rules and maintenance.", 1500),
    Brief("Running a book club", "How to start and run a book club that lasts: members, choosing books, "
          "meetings and discussions.", 2000),
    Brief("Heat pumps for homes", "A report on air-source heat pumps for homeowners: how they work, sizing, "
          "installation, running costs and grants.", 3000),
)
LEAF_WORDS = 700


@dataclass
class Result:
    brief: Brief
    state: str
    steps: int
    first_attempt: int
    within_limit: int
    reasks: int
    repairs: int
    at_limit: int
    calls: int
    completion_tokens: int
    words: int
    length_score: float
    wall_s: float
    failure: str
    repetition: float
    duplicate_headings: int


def _save(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _of(events: list[run_pb2.RunEvent], kind: str) -> list[run_pb2.RunEvent]:
    return [e for e in events if e.WhichOneof("payload") == kind]


async def run_brief(target: str, brief: Brief, out: Path) -> Result:
    async with grpc.aio.insecure_channel(target) as channel:
        artifacts, runs = ArtifactServiceStub(channel), RunServiceStub(channel)
        artifact = (await artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title=brief.title, brief=brief.brief, target_words=brief.words)))).artifact
        started = time.monotonic()
        run = (await runs.StartRun(run_service_pb2.StartRunRequest(
            artifact_id=artifact.id, options=run_pb2.RunOptions(leaf_words=LEAF_WORDS, max_proposal_retries=2)))).run
        events: list[run_pb2.RunEvent] = []
        async for response in runs.StreamRun(run_service_pb2.StreamRunRequest(run_id=run.id)):
            events.extend(response.events)
        wall = time.monotonic() - started
        done = (await runs.GetRun(run_service_pb2.GetRunRequest(run_id=run.id))).run
        md = (await artifacts.CompileArtifact(artifact_service_pb2.CompileArtifactRequest(
            artifact_id=artifact.id, format=artifact_service_pb2.COMPILE_FORMAT_MARKDOWN))).content
    await asyncio.to_thread(_save, out / f"{brief.words:05d}-{brief.title.lower().replace(' ', '-')}.md", md)
    completed = [e.step_completed for e in _of(events, "step_completed")]
    calls = [e.llm_call_completed for e in _of(events, "llm_call_completed")]
    reports = _of(events, "validation_reported")
    failed = _of(events, "run_failed")
    return Result(
        brief=brief, state=run_pb2.RunState.Name(done.state).removeprefix("RUN_STATE_"),
        steps=len({e.step_started.node_id for e in _of(events, "step_started")}),
        first_attempt=sum(1 for c in completed if c.attempts == 1), within_limit=len(completed),
        reasks=len(_of(events, "proposal_rejected")),
        repairs=sum(len(e.node_split.repairs) for e in _of(events, "node_split"))
        + sum(len(e.blocks_applied.repairs) for e in _of(events, "blocks_applied")),
        at_limit=sum(1 for c in calls if c.finish_reason in AT_LIMIT), calls=len(calls),
        completion_tokens=done.usage.completion_tokens, words=done.words_written,
        length_score=reports[-1].validation_reported.report.document_length_score if reports else 0.0,
        wall_s=wall, failure=failed[0].run_failed.reason if failed else "",
        repetition=done.validation.quality.repetition, duplicate_headings=done.validation.quality.duplicate_headings,
    )


def table(results: list[Result]) -> list[str]:
    lines = ["| brief | words | state | steps applied (1st try) | re-asks | repairs | calls at limit | "
             "tokens/word | S_l | repeated 8-grams | duplicate headings | s per 1,000 words |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        per_word = r.completion_tokens / r.words if r.words else float("nan")
        per_k = r.wall_s / r.words * 1000 if r.words else float("nan")
        lines.append(f"| {r.brief.title} | {r.words}/{r.brief.words} | {r.state} | {r.within_limit}/{r.steps} "
                     f"({r.first_attempt}) | {r.reasks} | {r.repairs} | {r.at_limit}/{r.calls} | {per_word:.2f} | "
                     f"{r.length_score:.0f} | {r.repetition:.0%} | {r.duplicate_headings} | {per_k:.0f} |")
    steps = sum(r.steps for r in results)
    applied = sum(r.within_limit for r in results)
    done = sum(r.state == "COMPLETED" for r in results)
    lines.append("")
    lines.append(f"runs completed {done}/{len(results)}; steps applied within the retry limit "
                 f"{applied}/{steps} ({100 * applied / max(steps, 1):.0f}%); calls at the token limit "
                 f"{sum(r.at_limit for r in results)}/{sum(r.calls for r in results)}")
    lines.extend(f"- {r.brief.title}: {r.failure}" for r in results if r.failure)
    return lines


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_model", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server to create a fresh database on")
    parser.add_argument("--out", type=Path, default=Path("bench-real-model"), help="where compiled documents go")
    parser.add_argument("--only", type=int, nargs="*", help="brief numbers (1-5) to run")
    parser.add_argument("--record", type=Path, help="also record every exchange into DIR/cassette.jsonl")
    args = parser.parse_args(argv)
    from lace_server.server import start

    chosen = [b for i, b in enumerate(BRIEFS, 1) if not args.only or i in args.only]
    with fresh_database(args.database_url, "lace_bench_real") as url:
        env = {"LACE_LLM": "local", **({"LACE_LLM_RECORD": str(args.record)} if args.record else {})}
        running = await start(bench_settings(url), "127.0.0.1:0", env=env, migrate_db=False)
        try:
            results = []
            for brief in chosen:
                print(f"[real-model] {brief.title} ({brief.words} words)", file=sys.stderr, flush=True)
                results.append(await run_brief(f"127.0.0.1:{running.port}", brief, args.out))
        finally:
            await running.stop(1.0)
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
