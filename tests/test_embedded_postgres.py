"""The embedded PostgreSQL belongs to its `lace serve` (issue #17): real processes, SIGKILLed and SIGTERMed.

Each test runs `lace serve` with no LACE_DATABASE_URL on a data directory of its own and checks the
operating system, not the code: which processes run, what postmaster.pid says, what the refused
process printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from lace.v1 import artifact_pb2, artifact_service_pb2
from lace.v1.artifact_service_pb2_grpc import ArtifactServiceStub
from lace_engine.storage.embedded_postgres import SYSTEM_USER
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.timeout(240)

START_S = 120.0  # initdb, start-up and migrations on a busy two-core machine
GONE_S = 30.0


class DataDir:
    """A LACE_DATA_DIR, the `lace serve` processes started on it, and what the OS says about its postgres."""

    def __init__(self, root: Path):
        self.root = root
        self.pgdata = (root / "postgres").resolve()
        self.servers: list[ServerProcess] = []

    def serve(self) -> ServerProcess:
        """Starts `lace serve` on the embedded database and waits until it is SERVING."""
        server = ServerProcess(None, env={"LACE_DATA_DIR": str(self.root)},
                               log_path=self.root.parent / f"serve-{len(self.servers)}.log")
        self.servers.append(server)
        return server.start(START_S)

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])

    def holders(self) -> list[int]:
        """Live processes working in the postgres data directory (a postmaster and its children)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == self.pgdata:
                    found.append(proc.pid)
            except psutil.Error:
                continue
        return found

    def assert_released(self, *postmasters: int) -> None:
        """No postgres is left on the directory: postmaster.pid removed, the postmasters and their children gone."""
        assert not (self.pgdata / "postmaster.pid").exists(), "postgres was not shut down cleanly"
        for pid in postmasters:
            wait_gone(pid)
        wait_until(lambda: not self.holders(), GONE_S, "every postgres process of the data directory to exit")

    def clean_up(self) -> None:
        """After a failed test: end what it left running (all of it started here)."""
        for server in self.servers:
            server.stop(10)
        for pid in self.holders():
            with_signal(pid, signal.SIGQUIT)  # immediate shutdown of a postmaster; children follow
        time.sleep(0.5)
        for pid in self.holders():
            with_signal(pid, signal.SIGKILL)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[DataDir]:
    d = DataDir(tmp_path / "lace")
    try:
        yield d
    finally:
        d.clean_up()


def alive(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


def with_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pid: int) -> None:
    wait_until(lambda: not alive(pid), GONE_S, f"process {pid} to exit")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def assert_serves(server: ServerProcess) -> None:
    """A write and a read through the API: the server's database works."""
    with grpc.insecure_channel(server.target) as channel:
        artifacts = ArtifactServiceStub(channel)
        created = artifacts.CreateArtifact(artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(title="Embedded", brief="B", target_words=500),
            request_id=str(uuid.uuid4())), timeout=30).artifact
        got = artifacts.GetArtifact(artifact_service_pb2.GetArtifactRequest(artifact_id=created.id), timeout=30)
        assert got.artifact.title == "Embedded"


def test_a_postgres_left_by_a_crash_is_adopted_and_stopped_on_shutdown(data_dir: DataDir) -> None:
    data_dir.serve()
    postmaster = data_dir.postmaster_pid()
    for _crash in range(2):  # repeated crashes must not pile servers up either
        data_dir.servers[-1].kill()
        assert alive(postmaster), "a SIGKILLed lace serve leaves its postgres running (the case under test)"
        again = data_dir.serve()
        assert data_dir.postmaster_pid() == postmaster, "the restarted server adopts the running postgres"
        assert_serves(again)

    assert data_dir.servers[-1].stop() == 0
    data_dir.assert_released(postmaster)


def test_a_stale_postmaster_pid_does_not_prevent_start(data_dir: DataDir) -> None:
    data_dir.serve()
    pid_file = data_dir.pgdata / "postmaster.pid"
    # A real crash of both: lace serve, then its postmaster (the OOM killer's choice); the file stays.
    crashed = data_dir.postmaster_pid()
    data_dir.servers[-1].kill()
    os.kill(crashed, signal.SIGKILL)
    wait_gone(crashed)
    assert pid_file.exists()

    restarted = data_dir.serve()  # the pid in postmaster.pid is dead
    assert data_dir.postmaster_pid() != crashed
    assert_serves(restarted)

    # After a reboot or a container restart the old pid often belongs to another program; postgres
    # wrote it in postmaster.pid and in its socket's lock file, and refuses to start over either
    # when that program runs as postgres's own user (kill(pid, 0) succeeds).
    crashed = data_dir.postmaster_pid()
    restarted.kill()
    os.kill(crashed, signal.SIGKILL)
    wait_gone(crashed)
    lock_files = [pid_file, data_dir.pgdata / ".s.PGSQL.5432.lock"]
    with subprocess.Popen(["sleep", "300"], user=SYSTEM_USER if os.geteuid() == 0 else None) as stranger:
        try:
            for path in lock_files:
                lines = path.read_text().splitlines()
                assert lines[0] == str(crashed)
                path.write_text("\n".join([str(stranger.pid), *lines[1:]]) + "\n")
            restarted = data_dir.serve()
            assert data_dir.postmaster_pid() not in (stranger.pid, crashed)
            assert_serves(restarted)
            assert stranger.poll() is None, "the unrelated process named by the stale file is left alone"
        finally:
            stranger.kill()

    postmaster = data_dir.postmaster_pid()
    assert restarted.stop() == 0
    data_dir.assert_released(postmaster)


def test_a_second_server_on_the_same_data_directory_is_refused(data_dir: DataDir) -> None:
    first = data_dir.serve()
    assert first.proc is not None
    postmaster = data_dir.postmaster_pid()

    with pytest.raises(RuntimeError, match="lace serve exited with 2"):
        data_dir.serve()
    second_log = data_dir.servers[-1].log_path
    assert second_log is not None
    message = second_log.read_text()
    assert str(data_dir.pgdata) in message and f"pid {first.proc.pid}" in message, message
    assert "LACE_DATA_DIR" in message and "LACE_DATABASE_URL" in message, message

    assert first.proc.poll() is None
    assert data_dir.postmaster_pid() == postmaster and alive(postmaster)
    assert_serves(first)
    assert first.stop() == 0
    data_dir.assert_released(postmaster)
