"""A StreamRun load client in its own process: N streams, receive times on the shared monotonic clock.

    python -m bench.stream_client

Commands, one per line on stdin:
    OPEN <target> <streams> <out-file> <run_id>:<cursor> [<run_id>:<cursor> ...]
        opens the streams (stream i follows run i mod len(runs)); prints READY once every stream
        has received an event
    STOP
        closes them, writes {"received": {run: {seq: [t_ns, ...]}}, "errors": [...]} to the
        out-file, prints DONE
The process exits when stdin closes. CLOCK_MONOTONIC is system-wide on Linux, so receive times
compare with the commit times the writer (another process) recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import grpc

from lace.v1 import run_service_pb2, run_service_pb2_grpc

CHANNEL_STREAMS = 250


class Session:
    """One OPEN .. STOP: the streams and what they received."""

    def __init__(self, target: str, streams: int, out: str, runs: list[tuple[str, int]]):
        self.out = out
        self.runs = runs
        self.channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, -(-streams // CHANNEL_STREAMS)))]
        self.received: dict[str, dict[int, list[int]]] = {run: {} for run, _ in runs}
        self.counts = [0] * streams
        self.waiting = streams
        self.ready = asyncio.Event()
        self.errors: list[str] = []
        self.tasks = [asyncio.create_task(self.follow(i)) for i in range(streams)]
        self.announcer = asyncio.create_task(self.announce())

    async def announce(self) -> None:
        await self.ready.wait()
        print("READY", flush=True)

    async def follow(self, i: int) -> None:
        run_id, cursor = self.runs[i % len(self.runs)]
        stub = run_service_pb2_grpc.RunServiceStub(self.channels[i % len(self.channels)])
        mine = self.received[run_id]
        try:
            async for response in stub.StreamRun(run_service_pb2.StreamRunRequest(run_id=run_id, cursor=cursor)):
                now = time.monotonic_ns()
                events = response.events
                if not events:
                    continue
                for e in events:
                    mine.setdefault(e.seq, []).append(now)
                if self.counts[i] == 0:
                    self.waiting -= 1
                    if self.waiting == 0:
                        self.ready.set()
                self.counts[i] += len(events)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.errors.append(f"stream {i}: {exc.code().name}: {exc.details()}")

    async def stop(self) -> None:
        self.announcer.cancel()
        for t in self.tasks:
            t.cancel()
        for t in [*self.tasks, self.announcer]:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for ch in self.channels:
            await ch.close()
        report = json.dumps({"received": self.received, "errors": self.errors[:20], "events": sum(self.counts)})
        await asyncio.to_thread(Path(self.out).write_text, report)
        print("DONE", flush=True)


async def serve() -> int:
    session: Session | None = None
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if not line:
            break
        command, *args = line.split()
        if command == "OPEN":
            target, streams, out, *runs = args
            session = Session(target, int(streams), out,
                              [(r.split(":")[0], int(r.split(":")[1])) for r in runs])
        elif command == "STOP" and session is not None:
            await session.stop()
            session = None
    if session is not None:
        await session.stop()
    return 0


def main() -> int:
    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
