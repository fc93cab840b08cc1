"""Baselines for the data plane: a bare grpc.aio StreamRun server with none of LACE's engine.

In process (`RawLiveServer`): the writer commits with raw psycopg, builds the event's message once
and hands it to every stream's queue. As a second process:

    python -m bench.raw_stream live --database-url URL      LISTENs on lace_events; on a NOTIFY reads
                                                            the new rows with raw psycopg and fans out
    python -m bench.raw_stream replay --batches FILE        streams pre-built StreamRunResponse batches

Both print "LISTENING <port>" when ready. Same proto, same server options as `lace serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg

from lace.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from lace_server.server import SERVER_OPTIONS

NOTIFY_CHANNEL = "lace_events"

_STEPS = {"split": run_pb2.STEP_KIND_SPLIT, "write": run_pb2.STEP_KIND_WRITE}


def step_started_pb(run_id: str, seq: int, payload: dict[str, Any], create_time: datetime) -> \
        run_service_pb2.StreamRunResponse:
    """The message a hand-written server would build for a step_started row (the latency probe)."""
    event = run_pb2.RunEvent(run_id=run_id, seq=seq, step_started=run_pb2.StepStarted(
        node_id=payload["node_id"], step=_STEPS[payload["step"]], attempt=payload["attempt"]))
    event.create_time.FromDatetime(create_time)
    return run_service_pb2.StreamRunResponse(events=[event], head_seq=seq)


class _LiveServicer(run_service_pb2_grpc.RunServiceServicer):
    def __init__(self) -> None:
        self.queues: dict[str, set[asyncio.Queue[run_service_pb2.StreamRunResponse]]] = {}

    async def StreamRun(self, request: run_service_pb2.StreamRunRequest,
                        context: Any) -> AsyncIterator[run_service_pb2.StreamRunResponse]:
        queue: asyncio.Queue[run_service_pb2.StreamRunResponse] = asyncio.Queue()
        subs = self.queues.setdefault(request.run_id, set())
        subs.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            subs.discard(queue)

    def publish(self, run_id: str, message: run_service_pb2.StreamRunResponse) -> None:
        for queue in self.queues.get(run_id, ()):
            queue.put_nowait(message)


class RawLiveServer:
    """A raw grpc.aio StreamRun server in this process; `publish` fans a message out to a run's streams."""

    def __init__(self) -> None:
        self.servicer = _LiveServicer()  # type: ignore[abstract]
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        run_service_pb2_grpc.add_RunServiceServicer_to_server(self.servicer, self.server)
        self.port = 0

    async def start(self) -> str:
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    def publish(self, run_id: str, message: run_service_pb2.StreamRunResponse) -> None:
        self.servicer.publish(run_id, message)

    async def stop(self) -> None:
        await self.server.stop(0.5)


_READ = ("SELECT seq, type, payload, create_time FROM run_events WHERE run_id = %s AND seq > %s AND seq <= %s "
         "ORDER BY seq")


async def _serve_live(database_url: str) -> None:
    raw = RawLiveServer()
    target = await raw.start()
    published: dict[str, int] = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listen, \
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as reader:
        await listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        print(f"LISTENING {target.rsplit(':', 1)[1]}", flush=True)
        async for note in listen.notifies():
            run, _, head_text = note.payload.partition(":")
            if run not in raw.servicer.queues:
                continue
            head = int(head_text)
            last = published.get(run)
            if last is None:
                last = head - 1
            if head <= last:
                continue
            cur = await reader.execute(_READ, (uuid.UUID(run), last, head), prepare=True)
            for seq, _type, payload, create_time in await cur.fetchall():
                raw.publish(run, step_started_pb(run, seq, payload, create_time))
            published[run] = head


class _ReplayServicer(run_service_pb2_grpc.RunServiceServicer):
    def __init__(self, batches: list[run_service_pb2.StreamRunResponse]):
        self.batches = batches

    async def StreamRun(self, request: run_service_pb2.StreamRunRequest,
                        context: Any) -> AsyncIterator[run_service_pb2.StreamRunResponse]:
        for batch in self.batches:
            yield batch


def write_batches(path: Path, batches: list[bytes]) -> None:
    with path.open("wb") as f:
        for b in batches:
            f.write(struct.pack("<I", len(b)))
            f.write(b)


def read_batches(path: Path) -> list[run_service_pb2.StreamRunResponse]:
    data = path.read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        pos += 4
        out.append(run_service_pb2.StreamRunResponse.FromString(data[pos:pos + size]))
        pos += size
    return out


async def _serve_replay(path: Path) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    servicer = _ReplayServicer(read_batches(path))  # type: ignore[abstract]
    run_service_pb2_grpc.add_RunServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"LISTENING {port}", flush=True)
    await server.wait_for_termination()


async def _main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(_serve_live(args.database_url) if args.mode == "live"
                               else _serve_replay(Path(args.batches)))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["live", "replay"])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--batches", default="")
    asyncio.run(_main(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
