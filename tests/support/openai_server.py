"""A real OpenAI-compatible HTTP/1.1 server that answers from the offline generators, with fault injection.

Tests point the real OpenAIProvider at it; benchmarks run it as a separate process:

    python -m tests.support.openai_server --port 8711 --latency-ms 100

It speaks just enough HTTP/1.1 for HTTP clients such as the `openai` SDK (keep-alive,
Content-Length bodies) on a bare asyncio.Protocol, so that per-request overhead stays far below
the simulated model latency even with hundreds of requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import itertools
import json
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from lace_engine.llm.offline import OFFLINE_MODEL, generate_content, generate_split
from lace_engine.pipeline.proposals import parse_task_spec

log = logging.getLogger(__name__)

StepFilter = Literal["split", "write"]
RetryHeader = Literal["seconds", "ms", "date", "none"]


# --- Faults: each is consumed by exactly one request, in the order injected. ----------------

@dataclass(frozen=True, slots=True)
class RateLimit:
    """HTTP 429 with the wait in a `Retry-After` (seconds or HTTP date) or `retry-after-ms` header."""

    retry_after_s: float = 1.0
    header: RetryHeader = "seconds"


@dataclass(frozen=True, slots=True)
class ServerError:
    """An HTTP 5xx error."""

    status: int = 500


@dataclass(frozen=True, slots=True)
class Timeout:
    """Sleeps `delay_s` (longer than the client's timeout) before answering normally."""

    delay_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Truncated:
    """finish_reason "length" with the JSON cut off half way."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """Content that is not JSON."""


@dataclass(frozen=True, slots=True)
class BadBudgets:
    """For a split request: children whose budgets add up to twice the target."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """message.refusal set and content null."""


Fault = RateLimit | ServerError | Timeout | Truncated | Malformed | BadBudgets | Refusal


def rate_limit(retry_after_s: float = 1.0, header: RetryHeader = "seconds") -> RateLimit:
    """A 429 asking the client to wait `retry_after_s`."""
    return RateLimit(retry_after_s, header)


def server_error(status: int = 500) -> ServerError:
    """A 5xx error."""
    return ServerError(status)


def timeout(delay_s: float = 5.0) -> Timeout:
    """No answer for `delay_s` seconds."""
    return Timeout(delay_s)


def truncated() -> Truncated:
    """An answer cut off at the token limit."""
    return Truncated()


def malformed() -> Malformed:
    """An answer that is not JSON."""
    return Malformed()


def bad_budgets() -> BadBudgets:
    """A split whose budgets sum to about twice the target."""
    return BadBudgets()


def refusal() -> Refusal:
    """A refusal instead of content."""
    return Refusal()


_FAULTS_BY_NAME: dict[str, Fault] = {
    "rate_limit": RateLimit(), "server_error": ServerError(), "timeout": Timeout(), "truncated": Truncated(),
    "malformed": Malformed(), "bad_budgets": BadBudgets(), "refusal": Refusal(),
}


# --- The server. ------------------------------------------------------------------------------

_Reply = tuple[int, list[tuple[str, str]], bytes]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 32 * 1024 * 1024
_REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


class OpenAICompatibleServer:
    """POST /v1/chat/completions answered by generate_split/generate_content, plus injectable faults."""

    def __init__(self, latency_ms: float = 0, host: str = "127.0.0.1", port: int = 0,
                 fault_filter: StepFilter | None = None, rejected_keywords: frozenset[str] = frozenset()):
        self.latency_ms = latency_ms
        # JSON Schema keywords this server refuses in a response_format with HTTP 400, as some
        # providers' strict modes do (OpenAI's refuses maxLength, for one).
        self.rejected_keywords = rejected_keywords
        # Some compatible servers send no usage object at all.
        self.report_usage = True
        self.host = host
        self.port = port
        # Default step filter for injected faults that were given none of their own.
        self.fault_filter: StepFilter | None = fault_filter
        # Chat completion requests received, faulted ones included.
        self.request_count = 0
        # Requests that came in a proxy's absolute form (http://host/path).
        self.proxied_requests = 0
        # The most recent chat request bodies, for tests to inspect what the client sent.
        self.requests: deque[dict[str, Any]] = deque(maxlen=64)
        self._faults: deque[tuple[Fault, StepFilter | None]] = deque()
        self._server: asyncio.Server | None = None
        self._connections: set[_HttpConnection] = set()
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL clients use, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pending_faults(self) -> int:
        """Injected faults not yet consumed."""
        return len(self._faults)

    def inject(self, *faults: Fault | str, fault_filter: StepFilter | None = None) -> None:
        """Queues faults, consumed one per request in order; `fault_filter` limits them to one step.

        While the fault at the head of the queue is for the other step, requests pass untouched.
        """
        for fault in faults:
            if isinstance(fault, str):
                if fault not in _FAULTS_BY_NAME:
                    raise ValueError(f"unknown fault {fault!r}; known: {', '.join(_FAULTS_BY_NAME)}")
                fault = _FAULTS_BY_NAME[fault]
            self._faults.append((fault, fault_filter))

    def clear_faults(self) -> None:
        """Drops every fault not yet consumed."""
        self._faults.clear()

    async def start(self) -> None:
        """Binds and starts serving; with port 0, `port` is the one the OS chose."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HttpConnection(self), self.host, self.port,
                                                backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stops listening, drops open connections and cancels requests in flight."""
        if self._server is None:
            return
        self._server.close()
        tasks = [c.abort() for c in list(self._connections)]
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> OpenAICompatibleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _take_fault(self, step: str) -> Fault | None:
        if not self._faults:
            return None
        fault, only = self._faults[0]
        only = only or self.fault_filter
        if only is not None and only != step:
            return None
        self._faults.popleft()
        return fault

    async def handle(self, method: str, path: str, body: bytes) -> _Reply:
        """Routes one HTTP request to its reply."""
        path = path.split("?", 1)[0]
        if path.startswith(("http://", "https://")):
            # The absolute form a client sends to a proxy (RFC 9112, 3.2.2): this server is one too.
            self.proxied_requests += 1
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                return _error(405, "use POST")
            return await self._chat(body)
        if path in ("/v1/models", "/models") and method == "GET":
            return _json(200, {"object": "list",
                               "data": [{"id": OFFLINE_MODEL, "object": "model", "owned_by": "lace"}]})
        if path == "/health":
            return _json(200, {"status": "ok"})
        return _error(404, f"no route for {method} {path}")

    async def _chat(self, body: bytes) -> _Reply:
        self.request_count += 1
        try:
            req = json.loads(body)
            messages = req["messages"]
            user = next(_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user")
            system = "".join(
                _text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
            )
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            return _error(400, "expected a JSON body with a 'messages' array holding a user message")
        try:
            task = _task_of(user)
        except ValueError as exc:
            return _error(400, f"the last user message has no usable TASK line: {exc}")
        self.requests.append(req)
        step = str(task.get("step", ""))
        schema = (req.get("response_format") or {}).get("json_schema", {}).get("schema")
        unsupported = sorted(self.rejected_keywords & schema_keys(schema))
        if unsupported:
            return _error(400, f"Invalid schema for response_format: '{unsupported[0]}' is not permitted.",
                          kind="invalid_request_error")

        fault = self._take_fault(step)
        if isinstance(fault, RateLimit):
            return _error(429, "rate limit reached; retry later", headers=_retry_headers(fault),
                          kind="rate_limit_exceeded")
        if isinstance(fault, ServerError):
            return _error(fault.status, "the server had an error while processing your request",
                          kind="server_error")
        if isinstance(fault, Timeout):
            await asyncio.sleep(fault.delay_s)
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000.0)

        seed = req.get("seed") or 0
        try:
            if step == "split":
                data = generate_split(task, int(seed))
                if isinstance(fault, BadBudgets):
                    for child in data["children"]:
                        child["target_words"] *= 2
            elif step == "write":
                data = generate_content(task, int(seed))
            else:
                return _error(400, f"TASK step {step!r} is neither 'split' nor 'write'")
        except (ValueError, TypeError) as exc:
            return _error(400, f"unusable TASK: {exc}")

        answer = json.dumps(data)
        content: str | None = answer
        refused: str | None = None
        finish = "stop"
        limit = req.get("max_tokens") or req.get("max_completion_tokens")
        if isinstance(fault, Truncated):
            content, finish = answer[: len(answer) // 2], "length"
        elif isinstance(fault, Malformed):
            content = "Sure! Here is the section you asked for:\n\n" + answer[: len(answer) // 3]
        elif isinstance(fault, Refusal):
            content, refused = None, _REFUSAL_TEXT
        elif isinstance(limit, int) and limit > 0 and len(answer) // 4 > limit:
            # Behave like a real model at its output limit.
            content, finish = answer[: limit * 4], "length"

        prompt_tokens = (len(system) + len(user)) // 4
        completion_tokens = len(content if content is not None else refused or "") // 4
        return _json(200, {
            "id": f"chatcmpl-lace-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model") or OFFLINE_MODEL,
            "system_fingerprint": "lace-test",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refused},
                "logprobs": None,
                "finish_reason": finish,
            }],
            **({"usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}} if self.report_usage else {}),
        })


def schema_keys(schema: Any) -> set[str]:
    """Every key used anywhere in a JSON Schema (property names included; enough for a refusal check)."""
    if isinstance(schema, dict):
        return set(schema).union(*(schema_keys(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(schema_keys(v) for v in schema))
    return set()


def _task_of(prompt: str) -> dict[str, Any]:
    # The TASK line ends the prompt: parsing only its tail spares a regex scan of the whole
    # context, a sizeable share of the per-request cost with large prompts.
    start = prompt.rfind("\nTASK: ")
    if start >= 0:
        with contextlib.suppress(ValueError):
            return parse_task_spec(prompt[start + 1:])
    return parse_task_spec(prompt)


def _text(content: Any) -> str:
    # Message content is a string, or a list of typed parts of which the text ones count.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise TypeError("message content must be a string or a list of parts")


def _retry_headers(fault: RateLimit) -> list[tuple[str, str]]:
    if fault.header == "seconds":
        return [("Retry-After", f"{fault.retry_after_s:g}")]
    if fault.header == "ms":
        return [("retry-after-ms", f"{fault.retry_after_s * 1000:g}")]
    if fault.header == "date":
        return [("Retry-After", email.utils.formatdate(time.time() + fault.retry_after_s, usegmt=True))]
    return []


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> _Reply:
    return status, [("Content-Type", "application/json"), *(headers or [])], json.dumps(payload).encode()


def _error(status: int, message: str, *, headers: list[tuple[str, str]] | None = None,
           kind: str = "invalid_request_error") -> _Reply:
    return _json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers)


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests on it are answered one at a time, in order."""

    def __init__(self, server: OpenAICompatibleServer):
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._task: asyncio.Task[None] | None = None
        # The parsed head of a request whose body has not fully arrived yet.
        self._head: tuple[int, str, str, int, bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None
        # The client gave up (e.g. its timeout fired): stop working on its answer.
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def abort(self) -> asyncio.Task[None] | None:
        task = self._task
        if self._transport is not None:
            self._transport.abort()
        if task is not None and not task.done():
            task.cancel()
            return task
        return None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._task is None:
            self._next_request()

    def _next_request(self) -> None:
        transport = self._transport
        if transport is None:
            return
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._fail(431, "request head too large")
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._fail(400, "malformed request line")
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    self._fail(400, "malformed header line")
                    return
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._fail(411, "chunked request bodies are not supported; send Content-Length")
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._fail(400, "bad Content-Length")
                return
            if length < 0 or length > _MAX_BODY:
                self._fail(413, "request body too large")
                return
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
            self._head = (end + 4, method, target, length, keep_alive)
            if headers.get("expect", "").lower() == "100-continue" and len(buf) < end + 4 + length:
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        start, method, target, length, keep_alive = self._head
        if len(buf) < start + length:
            return
        body = bytes(buf[start:start + length])
        del buf[:start + length]
        self._head = None
        self._task = asyncio.get_running_loop().create_task(self._respond(method, target, body, keep_alive))

    async def _respond(self, method: str, target: str, body: bytes, keep_alive: bool) -> None:
        try:
            status, headers, payload = await self._server.handle(method, target, body)
        except Exception:
            log.exception("test server failed on %s %s", method, target)
            status, headers, payload = _error(500, "internal error in the test server", kind="server_error")
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                f"Content-Length: {len(payload)}",
                "Connection: keep-alive" if keep_alive else "Connection: close"]
        head.extend(f"{k}: {v}" for k, v in headers)
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        self._task = None
        if not keep_alive:
            transport.close()
        elif self._buf:
            self._next_request()

    def _fail(self, status: int, message: str) -> None:
        # The stream cannot be trusted past a framing error, so answer and close.
        if self._transport is None:
            return
        _, _, payload = _error(status, message)
        self._transport.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode("latin-1") + payload
        )
        self._transport.close()
        self._buf.clear()


async def _serve(host: str, port: int, latency_ms: float) -> None:
    server = OpenAICompatibleServer(latency_ms=latency_ms, host=host, port=port)
    await server.start()
    print(f"listening on {server.base_url}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated model latency per request")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.latency_ms))


if __name__ == "__main__":
    main()
