"""A real `lace serve` in its own OS process, for crash, restart and cross-process tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """Starts `lace serve` (or another lace subcommand) against `database_url`; kill() is a real SIGKILL.

    With `database_url=None` the process runs its embedded PostgreSQL (under LACE_DATA_DIR from `env`).
    """

    def __init__(self, database_url: str | None, *, port: int | None = None, env: Mapping[str, str] | None = None,
                 args: tuple[str, ...] = ("serve",), log_path: Path | None = None):
        self.database_url = database_url
        self.port = port or free_port()
        self.args = args
        self.extra_env = dict(env or {})
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, "LACE_LLM": "offline", "LACE_LOG_FORMAT": "text", "LACE_LOG_LEVEL": "WARNING",
               **self.extra_env}
        env.pop("LACE_DATABASE_URL", None)
        if self.database_url is not None:
            env["LACE_DATABASE_URL"] = self.database_url
        cmd = [sys.executable, "-m", "lace_server.cli", *self.args]
        if self.args[0] == "serve":
            cmd += ["--listen", self.target]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=out)
        if self.args[0] == "serve":
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"lace serve exited with {self.proc.returncode}")
            try:
                with grpc.insecure_channel(self.target) as channel:
                    from grpc_health.v1 import health_pb2, health_pb2_grpc

                    stub = health_pb2_grpc.HealthStub(channel)
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"lace serve on {self.target} not ready after {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, exactly like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
