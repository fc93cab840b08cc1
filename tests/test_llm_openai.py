"""The real OpenAIProvider against the real OpenAI-compatible test server, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lace_engine.domain import StepKind
from lace_engine.llm.base import (
    LLMBadRequest,
    LLMMalformedOutput,
    LLMRefused,
    LLMRequest,
    LLMTruncated,
    LLMUnavailable,
)
from lace_engine.llm.offline import generate_content, generate_split
from lace_engine.llm.openai_provider import HTTP_TRANSPORTS, OpenAIProvider, retry_after_seconds
from lace_engine.pipeline.proposal_schema import content_schema, split_schema
from lace_engine.pipeline.proposals import parse_content, parse_split, render_task_spec
from lace_engine.tokens import estimate_tokens
from tests.support.openai_server import (
    OpenAICompatibleServer,
    bad_budgets,
    malformed,
    rate_limit,
    refusal,
    server_error,
    timeout,
    truncated,
)

ROOT = Path(__file__).resolve().parent.parent

ProviderFactory = Callable[..., OpenAIProvider]


def write_request(target: int = 300, *, seed: int = 11, max_output_tokens: int = 8192,
                  user_prefix: str = "Write the section.\n") -> LLMRequest:
    task = {"step": "write", "title": "Risks and Mitigations", "intent": "Cover the main risks.",
            "target_words": target, "depth": 2, "instruction": ""}
    return LLMRequest(step=StepKind.WRITE, system="You are a careful technical writer.",
                      user=user_prefix + render_task_spec(task), schema_name="content_proposal",
                      schema=content_schema(target).schema, task=task, seed=seed, max_output_tokens=max_output_tokens)


def split_request(target: int = 6000, count: int = 4, *, seed: int = 5) -> LLMRequest:
    task = {"step": "split", "title": "Designing a Payments Platform", "intent": "Explain the design.",
            "target_words": target, "depth": 0, "child_count": count, "instruction": ""}
    return LLMRequest(step=StepKind.SPLIT, system="You plan documents.",
                      user="Plan the sections.\n" + render_task_spec(task), schema_name="split_proposal",
                      schema=split_schema(count, target).schema, task=task, seed=seed)


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    srv = OpenAICompatibleServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture(params=HTTP_TRANSPORTS)
async def make_provider(server: OpenAICompatibleServer,
                        request: pytest.FixtureRequest) -> AsyncIterator[ProviderFactory]:
    """Builds providers aimed at the test server, with short backoff, on each HTTP transport; closes
    them afterwards."""
    made: list[OpenAIProvider] = []

    def make(**overrides: Any) -> OpenAIProvider:
        options: dict[str, Any] = {
            "api_key": "test-key", "base_url": server.base_url, "model": "test-model", "timeout_s": 5.0,
            "max_retries": 4, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "http_transport": request.param,
        }
        options.update(overrides)
        provider = OpenAIProvider(**options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


# --- happy path ------------------------------------------------------------------------------

async def test_write_round_trip_records_usage(server: OpenAICompatibleServer,
                                              make_provider: ProviderFactory) -> None:
    provider = make_provider()
    request = write_request(300)
    response = await provider.complete(request)

    assert response.data == generate_content(request.task, request.seed)
    assert sum(b.words() for b in parse_content(response.data).blocks) == 300
    assert (response.provider, response.model, response.finish_reason) == ("openai", "test-model", "stop")
    assert response.prompt_tokens == (len(request.system) + len(request.user)) // 4
    assert response.completion_tokens == len(json.dumps(response.data)) // 4
    assert response.latency_ms >= 0
    assert server.request_count == 1


async def test_a_server_that_reports_no_usage_gets_the_engines_own_estimate(
        server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    server.report_usage = False
    request = write_request(300)
    response = await make_provider().complete(request)
    assert response.prompt_tokens == estimate_tokens(request.system + request.user) > 0
    assert response.completion_tokens == estimate_tokens(json.dumps(response.data)) > 0


async def test_request_carries_strict_schema_seed_and_limit(server: OpenAICompatibleServer,
                                                            make_provider: ProviderFactory) -> None:
    await make_provider().complete(write_request(seed=1234, max_output_tokens=4000))
    sent = server.requests[-1]
    assert sent["model"] == "test-model"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "content_proposal", "schema": content_schema(300).schema, "strict": True},
    }
    assert sent["seed"] == 1234
    assert sent["max_tokens"] == 4000
    assert "max_completion_tokens" not in sent


async def test_max_completion_tokens_variant(server: OpenAICompatibleServer,
                                             make_provider: ProviderFactory) -> None:
    await make_provider(token_param="max_completion_tokens").complete(write_request(max_output_tokens=3000))
    sent = server.requests[-1]
    assert sent["max_completion_tokens"] == 3000
    assert "max_tokens" not in sent


async def test_a_proxy_named_in_the_environment_carries_the_calls(
        server: OpenAICompatibleServer, make_provider: ProviderFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test server answers a proxy's absolute-form requests; llm.invalid cannot resolve, so an
    # answer proves the call went through the proxy, on either transport.
    monkeypatch.setenv("HTTP_PROXY", f"http://{server.host}:{server.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    response = await make_provider(base_url="http://llm.invalid/v1", max_retries=0).complete(write_request())
    assert response.data == generate_content(write_request().task, write_request().seed)
    assert server.proxied_requests == 1


async def test_split_round_trip(make_provider: ProviderFactory) -> None:
    request = split_request(6000, 4)
    response = await make_provider().complete(request)
    assert response.data == generate_split(request.task, request.seed)
    assert sum(c.target_words for c in parse_split(response.data).children) == 6000


async def test_many_concurrent_calls(server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    provider = make_provider()
    requests = [write_request(100 + i, seed=i) for i in range(60)]
    responses = await asyncio.gather(*(provider.complete(r) for r in requests))
    assert [r.data for r in responses] == [generate_content(r.task, r.seed) for r in requests]
    assert server.request_count == 60


# --- retried faults --------------------------------------------------------------------------

async def test_429_waits_for_retry_after_then_succeeds(server: OpenAICompatibleServer,
                                                      make_provider: ProviderFactory) -> None:
    server.inject(rate_limit(0.6))
    started = time.perf_counter()
    response = await make_provider().complete(write_request())
    elapsed = time.perf_counter() - started
    assert server.request_count == 2
    # Backoff alone would have waited ~10 ms; the server asked for 0.6 s.
    assert elapsed >= 0.55
    assert response.latency_ms >= 550
    assert parse_content(response.data).blocks


async def test_429_honours_retry_after_ms(server: OpenAICompatibleServer,
                                          make_provider: ProviderFactory) -> None:
    server.inject(rate_limit(0.4, header="ms"))
    started = time.perf_counter()
    await make_provider().complete(write_request())
    assert time.perf_counter() - started >= 0.35
    assert server.request_count == 2


async def test_429_without_header_uses_backoff(server: OpenAICompatibleServer,
                                               make_provider: ProviderFactory) -> None:
    server.inject(rate_limit(30.0, header="none"), rate_limit(30.0, header="none"))
    await make_provider().complete(write_request())
    assert server.request_count == 3


async def test_5xx_is_retried(server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    server.inject(server_error(), server_error(503), "server_error")
    response = await make_provider().complete(write_request())
    assert server.request_count == 4
    assert response.finish_reason == "stop"


async def test_gives_up_after_max_retries(server: OpenAICompatibleServer,
                                          make_provider: ProviderFactory) -> None:
    server.inject(*[server_error(502)] * 3)
    with pytest.raises(LLMUnavailable) as info:
        await make_provider(max_retries=2).complete(write_request())
    assert server.request_count == 3
    assert "3 attempts" in info.value.message and "502" in info.value.message
    assert (info.value.provider, info.value.model) == ("openai", "test-model")
    assert not info.value.reask


async def test_timeout_is_retried(server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    server.inject(timeout(3.0))
    response = await make_provider(timeout_s=0.3).complete(write_request())
    assert server.request_count == 2
    assert response.data == generate_content(write_request().task, write_request().seed)


async def test_timeouts_on_every_attempt_give_up(server: OpenAICompatibleServer,
                                                 make_provider: ProviderFactory) -> None:
    server.inject(timeout(3.0), timeout(3.0), timeout(3.0))
    with pytest.raises(LLMUnavailable) as info:
        await make_provider(timeout_s=0.2, max_retries=2).complete(write_request())
    assert server.request_count == 3
    assert "no response within 0.2s" in info.value.message
    assert info.value.latency_ms > 0
    assert server.pending_faults == 0


async def test_unreachable_server_gives_up(make_provider: ProviderFactory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = make_provider(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(LLMUnavailable) as info:
        await provider.complete(write_request())
    assert "2 attempts" in info.value.message
    assert "connection failed" in info.value.message
    assert f"127.0.0.1:{port}" in info.value.message  # which address, on either transport


# --- faults that are not retried -------------------------------------------------------------

async def test_length_is_truncated(server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    server.inject(truncated())
    with pytest.raises(LLMTruncated) as info:
        await make_provider().complete(write_request())
    assert server.request_count == 1
    assert info.value.reask
    assert info.value.completion_tokens > 0
    assert info.value.prompt_tokens > 0


async def test_output_limit_truncates(server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    with pytest.raises(LLMTruncated) as info:
        await make_provider().complete(write_request(1000, max_output_tokens=50))
    assert info.value.completion_tokens == 50


async def test_malformed_output(server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    server.inject(malformed())
    with pytest.raises(LLMMalformedOutput) as info:
        await make_provider().complete(write_request())
    assert server.request_count == 1
    assert info.value.reask
    assert "Sure! Here is the section" in info.value.message
    assert len(info.value.message) < 400


async def test_refusal(server: OpenAICompatibleServer, make_provider: ProviderFactory) -> None:
    server.inject(refusal())
    with pytest.raises(LLMRefused) as info:
        await make_provider().complete(write_request())
    assert server.request_count == 1
    assert info.value.reask
    assert "can't help" in info.value.message


async def test_client_error_is_a_bad_request(server: OpenAICompatibleServer,
                                             make_provider: ProviderFactory) -> None:
    # No TASK line: the server answers 400, which retrying cannot fix.
    request = write_request()
    broken = LLMRequest(step=request.step, system=request.system, user="no task here",
                        schema_name=request.schema_name, schema=request.schema, task=request.task, seed=1)
    with pytest.raises(LLMBadRequest) as info:
        await make_provider().complete(broken)
    assert server.request_count == 1
    assert "HTTP 400" in info.value.message
    assert not info.value.reask


async def test_bad_budgets_only_hits_split_requests(server: OpenAICompatibleServer,
                                                    make_provider: ProviderFactory) -> None:
    provider = make_provider()
    server.inject(bad_budgets(), fault_filter="split")
    write = await provider.complete(write_request())
    assert parse_content(write.data).blocks
    assert server.pending_faults == 1
    split = await provider.complete(split_request(6000, 4))
    assert sum(c.target_words for c in parse_split(split.data).children) == 12000
    assert server.pending_faults == 0


async def test_fault_filter_on_the_server(server: OpenAICompatibleServer,
                                          make_provider: ProviderFactory) -> None:
    provider = make_provider()
    server.fault_filter = "write"
    server.inject(truncated())
    await provider.complete(split_request())
    with pytest.raises(LLMTruncated):
        await provider.complete(write_request())


def test_unknown_fault_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        OpenAICompatibleServer().inject("meteor_strike")


# --- Retry-After parsing and backoff ---------------------------------------------------------

def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(7.0)
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert retry_after_seconds({"Retry-After": past}, now=now) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"Retry-After": "-4"}) is None
    assert retry_after_seconds({}) is None


async def test_backoff_grows_with_jitter_and_caps(make_provider: ProviderFactory) -> None:
    provider = make_provider(backoff_base_s=0.5, backoff_cap_s=20.0, max_retry_after_s=60.0)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 20.0)]:
        waits = [provider.backoff_s(retry) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1
    assert provider.backoff_s(0, retry_after=7.0) == 7.0
    assert provider.backoff_s(0, retry_after=600.0) == 60.0


# --- the server as a separate process --------------------------------------------------------

async def test_server_runs_as_a_process_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.openai_server", "--port", "0", "--latency-ms", "5",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1")
        provider = OpenAIProvider(api_key="k", base_url=line.removeprefix("listening on "), timeout_s=10)
        try:
            response = await provider.complete(split_request(900, 3))
        finally:
            await provider.aclose()
        assert len(response.data["children"]) == 3
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- non-conforming servers ------------------------------------------------------------------

@contextlib.asynccontextmanager
async def serve_fixed(body: dict[str, Any] | bytes) -> AsyncIterator[str]:
    """A server (its base URL) that answers every request with `body` and status 200, like a
    misbehaving proxy."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1"
    finally:
        srv.close()
        await srv.wait_closed()


async def test_ok_status_without_choices_is_malformed(make_provider: ProviderFactory) -> None:
    async with serve_fixed({"error": {"message": "upstream hiccup"}}) as url:
        with pytest.raises(LLMMalformedOutput, match="no choices"):
            await make_provider(base_url=url).complete(write_request())


async def test_ok_status_with_a_body_that_is_not_json_is_malformed(make_provider: ProviderFactory) -> None:
    async with serve_fixed(b"<html>502 Bad Gateway</html>") as url:
        with pytest.raises(LLMMalformedOutput, match="unreadable response: <html>502 Bad Gateway"):
            await make_provider(base_url=url).complete(write_request())


async def test_fields_of_the_wrong_type_are_read_as_missing(make_provider: ProviderFactory) -> None:
    data = {"children": [{"title": "Scope", "intent": "Say what is in scope.", "target_words": 100}]}
    async with serve_fixed({
        "model": 7, "usage": {"prompt_tokens": "many", "completion_tokens": None},
        "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": json.dumps(data)}}],
    }) as url:
        response = await make_provider(base_url=url).complete(split_request())
    assert response.data == data
    assert response.model == "test-model"  # the configured one, not the number the server sent
    assert response.prompt_tokens > 0 and response.completion_tokens > 0  # estimated, not "many"


async def test_json_in_a_markdown_fence_is_accepted(make_provider: ProviderFactory) -> None:
    data = {"children": [{"title": "Scope", "intent": "Say what is in scope.", "target_words": 100}]}
    async with serve_fixed({
        "id": "x", "object": "chat.completion", "created": 0, "model": "local-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": f"```json\n{json.dumps(data)}\n```"}}],
    }) as url:
        response = await make_provider(base_url=url).complete(split_request())
    assert response.data == data
    assert response.model == "local-model"
    # No usage in the answer: estimated from the text rather than left at zero.
    assert response.prompt_tokens > 0 and response.completion_tokens > 0


async def test_sampling_parameters_travel_with_every_request(server: OpenAICompatibleServer,
                                                             make_provider: ProviderFactory) -> None:
    await make_provider().complete(write_request())
    assert "frequency_penalty" not in server.requests[-1] and "presence_penalty" not in server.requests[-1]
    await make_provider(sampling={"frequency_penalty": 1.5, "presence_penalty": 0.5}).complete(write_request())
    sent = server.requests[-1]
    assert (sent["frequency_penalty"], sent["presence_penalty"]) == (1.5, 0.5)
