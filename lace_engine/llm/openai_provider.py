"""Any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, Ollama, llama.cpp) with strict JSON output.

Retries are ours, not the SDK's (the client is built with max_retries=0), so which failures are
retried, how long each wait is, and when the call gives up are explicit here and testable.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import itertools
import logging
import math
import random
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
import httpx2
import openai
import orjson
from openai import AsyncOpenAI

from lace_engine.llm.base import (
    LLMBadRequest,
    LLMError,
    LLMMalformedOutput,
    LLMRefused,
    LLMRequest,
    LLMResponse,
    LLMTruncated,
    LLMUnavailable,
)
from lace_engine.pipeline.proposal_schema import BOUND_KEYWORDS, portable_schema
from lace_engine.tokens import estimate_tokens

log = logging.getLogger(__name__)

OPENAI_PROVIDER = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"

# Besides 429 and 5xx: 408 (request timeout) and 409 (lock conflict) are transient too; the SDK's
# own retry policy treats them the same way.
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_EXCERPT_CHARS = 200

TokenParam = Literal["max_tokens", "max_completion_tokens"]
HttpTransport = Literal["aiohttp", "httpx"]
HTTP_TRANSPORTS: tuple[HttpTransport, ...] = ("aiohttp", "httpx")


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a response asks for: `retry-after-ms`, else `Retry-After` as seconds or an HTTP date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = _non_negative(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return max(0.0, parsed.timestamp() - (time.time() if now is None else now))


def _non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


def refuses_schema_bounds(message: str) -> bool:
    """Whether a 400's message says the schema used a bound keyword the provider does not support.

    Both a keyword (as JSON Schema spells it) and the word "schema" must appear: "maximum context
    length exceeded" is a 400 too, and must not switch schemas.
    """
    return "schema" in message.lower() and any(k in message for k in BOUND_KEYWORDS)


def _decode_json(content: str) -> Any:
    text = content.strip()
    # Some local servers wrap the JSON in a Markdown fence even under a response_format.
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return orjson.loads(text)


class OpenAIProvider:
    """Chat Completions with a strict json_schema response_format, and an explicit retry policy."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 20.0,
        max_retry_after_s: float = 60.0,
        token_param: TokenParam = "max_tokens",
        max_connections: int = 1000,
        connection_pools: int = 8,
        name: str = OPENAI_PROVIDER,
        sampling: Mapping[str, float] | None = None,
        http_transport: HttpTransport = "aiohttp",
    ):
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if connection_pools < 1 or max_connections < connection_pools:
            raise ValueError("need 1 <= connection_pools <= max_connections")
        if http_transport not in HTTP_TRANSPORTS:
            raise ValueError(f"http_transport must be one of {', '.join(HTTP_TRANSPORTS)}")
        self._name = name
        # Extra sampling parameters sent with every call (frequency_penalty, presence_penalty).
        self._sampling = dict(sampling or {})
        self._model = model
        self._base_url = base_url or DEFAULT_BASE_URL
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._max_retry_after_s = max_retry_after_s
        self._token_param: TokenParam = token_param
        self._jitter = random.Random()
        # httpcore (LACE_LLM_HTTP=httpx) scans every pooled connection on each request and release,
        # so one pool's cost per call grows with concurrency (3.7 ms a call at 200 in flight here);
        # calls spread round-robin over a few smaller pools cost half that. Every pool keeps all of its
        # connections alive, unlike the SDK default of 100 idle ones for the whole client.
        per_pool = -(-max_connections // connection_pools)
        self._http_transport: HttpTransport = http_transport
        self._clients = tuple(
            # base_url is always explicit so the SDK never falls back to the process environment.
            AsyncOpenAI(
                api_key=api_key,
                base_url=self._base_url,
                timeout=timeout_s,
                max_retries=0,
                http_client=sdk_http_client(
                    http_transport,
                    timeout=httpx2.Timeout(timeout_s),
                    limits=httpx2.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
                    verify=_ssl_context(),
                ),
            )
            for _ in range(connection_pools)
        )
        self._next_client = itertools.cycle(self._clients)
        # Absolute, as the SDK resolved it: a relative path is parsed and merged into base_url anew
        # for every request (~1% of a call's CPU).
        self._chat_url = f"{self._clients[0].base_url}chat/completions"
        # Set once the endpoint has refused a bounded schema: from then on every call sends the
        # portable one (proposal_schema.portable_schema), and the token budget alone bounds answers.
        self._portable_schemas = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    @property
    def sampling(self) -> dict[str, float]:
        """Sampling parameters sent with every call beyond the provider's defaults."""
        return dict(self._sampling)

    @property
    def portable_schemas(self) -> bool:
        """True once the endpoint refused a bounded schema and calls send the portable one."""
        return self._portable_schemas

    @property
    def base_url(self) -> str:
        """The endpoint's base URL, e.g. https://api.openai.com/v1."""
        return self._base_url

    @property
    def timeout_s(self) -> float:
        """The per-attempt timeout."""
        return self._timeout_s

    @property
    def http_transport(self) -> HttpTransport:
        """What carries the SDK's requests: aiohttp or httpx2's own httpcore."""
        return self._http_transport

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt before giving up."""
        return self._max_retries

    def backoff_s(self, retry: int, retry_after: float | None = None) -> float:
        """The wait before retry number `retry` (0-based).

        The server's Retry-After when it sent one (capped), else exponential backoff with jitter.
        """
        if retry_after is not None:
            return min(retry_after, self._max_retry_after_s)
        ceiling = min(self._backoff_cap_s, self._backoff_base_s * (2.0 ** retry))
        # "Equal jitter": at least half the exponential step, so waits still grow, spread enough
        # that many callers rejected together do not return together.
        return ceiling * (0.5 + 0.5 * self._jitter.random())

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Sends one request, retrying transient failures; raises an LLMError if no usable answer comes."""
        started = time.perf_counter()
        params: dict[str, Any] = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "response_format": self._response_format(request),
            self._token_param: request.max_output_tokens,
            "seed": request.seed,
            **self._sampling,
        }
        retry = 0
        while True:
            failure: Exception
            retry_after: float | None = None
            try:
                # The SDK's generic post() with cast_to=httpx.Response, its documented route for raw
                # requests and responses, rather than chat.completions.create(): create() re-walks
                # every argument against its TypedDicts (~0.5 ms a call), and building a ChatCompletion
                # model from the answer cost another ~0.13 ms over reading the JSON. Errors, retries'
                # status mapping and auth are the SDK's either way. The body goes as `content`, the
                # SDK's parameter for a body already encoded: orjson, not the standard library's json.
                answer = await next(self._next_client).post(
                    self._chat_url, content=orjson.dumps(params), cast_to=httpx2.Response
                )
                break
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status == 400 and not self._portable_schemas and refuses_schema_bounds(exc.message):
                    # Once per provider: not a retry, the same call with the schema it accepts.
                    self._portable_schemas = True
                    log.warning("%s refused a bounded JSON schema (%s); sending portable schemas without "
                                "length, count and range bounds from now on", self._base_url, _excerpt(exc.message))
                    params["response_format"] = self._response_format(request)
                    continue
                if status not in _RETRYABLE_STATUS and status < 500:
                    message = f"HTTP {status}: {_excerpt(exc.message)}"
                    raise self._error(LLMBadRequest, message, started) from exc
                failure, problem = exc, f"HTTP {status}"
                retry_after = retry_after_seconds(exc.response.headers)
            except openai.APIConnectionError as exc:  # APITimeoutError included
                failure = exc
                refused = _refused_connection(exc)
                if isinstance(exc, openai.APITimeoutError) and refused is None:
                    problem = f"no response within {self._timeout_s:g}s"
                else:
                    problem = (f"connection failed ({self._base_url}): "
                               f"{_excerpt(str(refused or exc.__cause__ or exc))}")
            except openai.OpenAIError as exc:
                raise self._error(LLMUnavailable, f"client error: {_excerpt(str(exc))}", started) from exc
            if retry >= self._max_retries:
                raise self._error(
                    LLMUnavailable, f"gave up after {retry + 1} attempts; last: {problem}", started
                ) from failure
            wait = self.backoff_s(retry, retry_after)
            log.warning("LLM call failed (%s); retry %d/%d in %.2fs",
                        problem, retry + 1, self._max_retries, wait)
            await asyncio.sleep(wait)
            retry += 1
        try:
            completion = orjson.loads(answer.content)
        except orjson.JSONDecodeError as exc:
            raise self._error(LLMMalformedOutput, f"unreadable response: {_excerpt(answer.text)}", started) from exc
        return self._response(completion if isinstance(completion, dict) else {}, request, started)

    def _response_format(self, request: LLMRequest) -> dict[str, Any]:
        schema = portable_schema(request.schema) if self._portable_schemas else request.schema
        return {"type": "json_schema", "json_schema": {"name": request.schema_name, "schema": schema, "strict": True}}

    def _response(self, completion: Mapping[str, Any], request: LLMRequest, started: float) -> LLMResponse:
        latency_ms = _elapsed_ms(started)
        # A non-conforming server's body (a 200 carrying an error object, say) can lack any field or
        # hold the wrong type in it: read each one defensively.
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message")
        message = message if isinstance(message, dict) else None
        content = message.get("content") if message is not None else None
        content = content if isinstance(content, str) else ""
        usage = completion.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        # Some compatible servers omit usage; the engine's own estimate beats recording nothing.
        prompt_tokens = _count(usage.get("prompt_tokens"), lambda: estimate_tokens(request.system + request.user))
        completion_tokens = _count(usage.get("completion_tokens"), lambda: estimate_tokens(content))
        model = completion.get("model")
        model = model if isinstance(model, str) and model else self._model

        def fail(cls: type[LLMError], message: str) -> LLMError:
            return cls(message, provider=self.name, model=model, prompt_tokens=prompt_tokens,
                       completion_tokens=completion_tokens, latency_ms=latency_ms)

        if message is None:
            raise fail(LLMMalformedOutput, "response has no choices")
        refused = message.get("refusal")
        if refused:
            raise fail(LLMRefused, f"model refused: {_excerpt(str(refused))}")
        finish_reason = choice.get("finish_reason")
        if finish_reason == "length":
            raise fail(LLMTruncated, f"output cut off at the token limit after {completion_tokens} tokens, "
                                     f"ending: {_excerpt(content[-80:])}")
        if finish_reason == "content_filter":
            raise fail(LLMRefused, "output withheld by the provider's content filter")
        if not content.strip():
            raise fail(LLMMalformedOutput, "response has no content")
        try:
            data = _decode_json(content)
        except ValueError as exc:
            raise fail(LLMMalformedOutput, f"output is not JSON ({exc}): {_excerpt(content)}") from exc
        return LLMResponse(
            data=data,
            provider=self.name,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            finish_reason=str(finish_reason or "stop"),
        )

    def _error(self, cls: type[LLMError], message: str, started: float) -> LLMError:
        return cls(message, provider=self.name, model=self._model, latency_ms=_elapsed_ms(started))

    async def aclose(self) -> None:
        """Closes the HTTP connection pool."""
        await asyncio.gather(*(client.close() for client in self._clients))


def sdk_http_client(transport: HttpTransport, **options: Any) -> httpx2.AsyncClient:
    """The SDK's own HTTP client (its defaults, then `options`) on `transport`."""
    # aiohttp under the SDK's httpx2 client (the transport its README offers for concurrency) parses
    # HTTP in C: 1.6-1.8 ms of CPU a call against 2.0-3.0 for httpcore and h11, measured on a bare
    # client at 64 in flight. httpx2 still routes proxies from the environment to it.
    if transport == "aiohttp":
        return openai.DefaultAioHttpClient(**options)
    return openai.DefaultAsyncHttpxClient(**options)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA store takes ~50 ms; every pool of every provider can share one context.
    return httpx2.create_ssl_context()


def _refused_connection(exc: BaseException) -> BaseException | None:
    """The aiohttp connection error under `exc` that is not a timeout: aiohttp's transport reports
    a refused or dropped connection to the SDK as httpx2.ConnectTimeout."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, TimeoutError):
            return cause
        cause = cause.__cause__
    return None


def _count(value: Any, otherwise: Callable[[], int]) -> int:
    """A token count the server reported, or `otherwise()` when it sent none (or not a number)."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else otherwise()


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
