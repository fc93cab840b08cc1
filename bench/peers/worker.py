"""One system's side of the job in its own process: python -m bench.peers.worker MODE SYSTEM [options].

  run      set up (untimed), print READY, wait for GO on stdin, write every leaf, print FINISHED,
           read the document back and print DONE {json} (wall and CPU seconds of this process over
           the writing, the document's digest and leaf count);
           --resume: continue the job a killed process left (no READY/GO: the clock is the parent's)
  follow   print READY, follow the job from this process until every leaf is seen, write the
           monotonic ns at which each leaf was seen to --out, print DONE
  history  list every step/event of the finished job, print DONE {json} (seconds, count)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.peers import job

SYSTEMS = ("lace", "langgraph-state", "langgraph-delta", "dbos")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def wait_go() -> None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "GO":
        raise SystemExit(f"expected GO, got {line!r}")


class Clock:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def result(self, **extra: Any) -> dict[str, Any]:
        return {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu, **extra}


# --- run -----------------------------------------------------------------------------------------

async def run_lace(args: argparse.Namespace, sections: list[job.Section], generator: job.TextGenerator) -> None:
    from bench.common import lace_in_process
    from bench.peers import lace_job

    by_title = {leaf.title: leaf for leaf in job.leaves_of(sections)}
    # LACE_PEERS_LEASE_TTL_S: the crash row's second LACE figure, with a shorter lease than the default.
    overrides: dict[str, Any] = {}
    if os.environ.get("LACE_PEERS_LEASE_TTL_S"):
        overrides["lease_ttl_s"] = float(os.environ["LACE_PEERS_LEASE_TTL_S"])
    # LACE_PEERS_OWNER_ID: the crash row's third LACE figure, a restart under the same owner id.
    if os.environ.get("LACE_PEERS_OWNER_ID"):
        overrides["owner_id"] = os.environ["LACE_PEERS_OWNER_ID"]
    async with lace_in_process(args.db, **overrides) as (target, running):
        engine: Any = running.engine  # type: ignore[attr-defined]
        engine.executor.provider = lace_job.PeerProvider(generator, by_title)
        if args.resume:
            artifact_id = await lace_job.only_artifact(args.db)
        else:
            artifact_id = await lace_job.create_tree(engine.db, sections)
            say(f"READY {target} {artifact_id}")
            await wait_go()
        clock = Clock()
        if not args.resume:
            await lace_job.start_run(target, artifact_id)
        state = await lace_job.wait_run(target, artifact_id)
        result = clock.result()
        say("FINISHED")
        document = await lace_job.document(engine.db, artifact_id, sections)
        say("DONE " + json.dumps({**result, "digest": job.digest(document), "leaves": len(document), "state": state}))


async def run_langgraph(args: argparse.Namespace, leaves: list[job.Leaf], generator: job.TextGenerator) -> None:
    from bench.peers import langgraph_job

    variant: Any = args.system.split("-", 1)[1]
    async with langgraph_job.saver(args.db) as checkpointer:
        await checkpointer.setup()
        app = langgraph_job.graph(variant, checkpointer, generator)
        if not args.resume:
            say("READY")
            await wait_go()
        clock = Clock()
        if args.resume:
            await langgraph_job.resume(app, variant, len(leaves))
        else:
            await langgraph_job.run(app, variant, leaves)
        result = clock.result()
        say("FINISHED")
        document = await langgraph_job.document(app)
    say("DONE " + json.dumps({**result, "digest": job.digest(document), "leaves": len(document)}))


async def run_dbos(args: argparse.Namespace, leaves: list[job.Leaf]) -> None:
    from bench.peers import dbos_job

    dbos_job.launch(args.db, args.calls, args.latency_ms)
    try:
        if not args.resume:
            say("READY")
            await wait_go()
        clock = Clock()
        if args.resume:
            await dbos_job.resume()
        else:
            await dbos_job.run(leaves)
        result = clock.result()
        say("FINISHED")
        document = await dbos_job.document()
    finally:
        dbos_job.shutdown()
    say("DONE " + json.dumps({**result, "digest": job.digest(document), "leaves": len(document)}))


async def run(args: argparse.Namespace) -> None:
    sections = job.plan(args.leaves)
    leaves = job.leaves_of(sections)
    if args.system == "dbos":
        await run_dbos(args, leaves)
        return
    generator = job.TextGenerator(args.calls, args.latency_ms)
    if args.system == "lace":
        await run_lace(args, sections, generator)
    else:
        await run_langgraph(args, leaves, generator)


# --- follow --------------------------------------------------------------------------------------

async def follow(args: argparse.Namespace) -> None:
    seen: dict[int, int]
    if args.system == "lace":
        import psycopg

        from bench.peers import lace_job

        index_of = {leaf.title: leaf.index for leaf in job.leaves_of(job.plan(args.leaves))}
        async with await psycopg.AsyncConnection.connect(args.db, autocommit=True) as conn:
            rows = await (await conn.execute("SELECT id, title FROM nodes WHERE depth = 2")).fetchall()
        by_id = {str(r[0]): index_of[str(r[1])] for r in rows}
        say("READY")
        seen = await lace_job.follow(args.target, uuid.UUID(args.artifact), by_id, args.leaves)
    elif args.system.startswith("langgraph"):
        from bench.peers import langgraph_job

        async with langgraph_job.saver(args.db) as checkpointer:
            app = langgraph_job.graph(args.system.split("-", 1)[1], checkpointer, None)
            say("READY")
            seen = await langgraph_job.follow(app, args.leaves)
    else:
        from dbos import error as dbos_error

        from bench.peers import dbos_job

        client = dbos_job.client(args.db, listen=True)
        say("READY")
        try:
            while True:
                try:
                    seen = await dbos_job.follow(client, args.leaves)
                    break
                except dbos_error.DBOSNonExistentWorkflowError:
                    await asyncio.sleep(0.01)
        finally:
            client.destroy()
    await asyncio.to_thread(Path(args.out).write_text, json.dumps({str(k): v for k, v in seen.items()}))
    say("DONE")


# --- history -------------------------------------------------------------------------------------

async def history(args: argparse.Namespace) -> None:
    if args.system == "lace":
        from bench.peers import lace_job
        from tests.support.server_process import ServerProcess

        server = ServerProcess(args.db, args=("serve", "--no-execute"))
        await asyncio.to_thread(server.start)
        try:
            artifact_id = await lace_job.only_artifact(args.db)
            clock = Clock()
            count = await lace_job.history(server.target, artifact_id)
            result = clock.result(count=count, what="run events (StreamRun from cursor 0)")
        finally:
            await asyncio.to_thread(server.stop)
    elif args.system.startswith("langgraph"):
        from bench.peers import langgraph_job

        async with langgraph_job.saver(args.db) as checkpointer:
            app = langgraph_job.graph(args.system.split("-", 1)[1], checkpointer, None)
            await app.aget_state(langgraph_job.CONFIG)  # the pool's connections open outside the clock
            clock = Clock()
            count = await langgraph_job.history(app)
            result = clock.result(count=count, what="checkpoints (aget_state_history)")
    else:
        from bench.peers import dbos_job

        client = dbos_job.client(args.db, listen=False)
        try:
            clock = Clock()
            count = await dbos_job.history(client)
            result = clock.result(count=count, what="steps with outputs (list_workflow_steps_async)")
        finally:
            client.destroy()
    say("DONE " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.worker")
    parser.add_argument("mode", choices=("run", "follow", "history"))
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--db", required=True)
    parser.add_argument("--leaves", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--calls", type=Path, default=Path(os.devnull))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out", default="")
    parser.add_argument("--target", default="")
    parser.add_argument("--artifact", default="")
    args = parser.parse_args()
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    coro = {"run": run, "follow": follow, "history": history}[args.mode](args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)


if __name__ == "__main__":
    main()
