"""A real TCP proxy on 127.0.0.1 that can cut every open connection on demand.

Used to break gRPC streams for real (the client sees a reset socket), rather than
faking errors inside the client: the point is to test reconnection end to end; and in
front of PostgreSQL (`unix:` upstreams too) to cut a server's database connections
mid-statement or refuse new ones for a while, as a restart or failover does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Self


class _Connection:
    """One proxied client connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def cut(self) -> None:
        for writer in (self.client, self.upstream):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # Linger 0: close with RST, the way a crashed peer or a dropped NAT entry looks.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `upstream` ("host:port" or "unix:/path/to/socket");
    `drop_all()` cuts every connection, `outage(s)` also refuses new ones for s seconds."""

    def __init__(self, upstream: str, listen_host: str = "127.0.0.1") -> None:
        self._unix = upstream.removeprefix("unix:") if upstream.startswith("unix:") else None
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port) if self._unix is None else 0)
        self.refusing = False
        self._listen_host = listen_host
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.accepted = 0
        self.dropped = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def target(self) -> str:
        """host:port to point a client at."""
        return f"{self._listen_host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._listen_host, 0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            if self._unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        conn = _Connection(writer, up_writer)
        self._connections.add(conn)
        conn.tasks = [asyncio.create_task(self._pump(reader, up_writer)),
                      asyncio.create_task(self._pump(up_reader, writer))]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._connections.discard(conn)
            for w in (writer, up_writer):
                w.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # Half-close politely on EOF; after a cut the transport is already gone.
            if not writer.transport.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()

    def drop_all(self) -> int:
        """Cuts every open connection at once (both sides get a reset); returns how many."""
        conns = list(self._connections)
        for conn in conns:
            conn.cut()
            for task in conn.tasks:
                task.cancel()
        self.dropped += len(conns)
        return len(conns)

    async def outage(self, seconds: float) -> None:
        """Cuts every connection and refuses new ones for `seconds`, as a restarting server does."""
        self.refusing = True
        try:
            self.drop_all()
            await asyncio.sleep(seconds)
        finally:
            self.refusing = False

    async def close(self) -> None:
        """Stops listening and cuts what is still open."""
        if self._server is not None:
            self._server.close()
            self.drop_all()
            await self._server.wait_closed()
            self._server = None
