"""Record and replay LLM exchanges (cassettes): a run's real model output, reproduced bit for bit.

`LACE_LLM_RECORD=DIR` wraps the configured provider and appends every exchange of the process to
`DIR/cassette.jsonl`: the request's digest, the answer (decoded JSON), usage, finish reason, model,
or the error it raised. `LACE_LLM=replay` with `LACE_LLM_CASSETTE=FILE` serves those answers again.

The digest covers what the model saw: system and user messages, schema name and schema, and the
output budget. It leaves out the seed, which LACE derives from run and node ids that differ from
one run to the next; a digest seen several times is answered in recorded order. Replaying a run's
cassette over the same brief therefore reproduces the same proposals, hence the same IR, blocks and
event payloads, except for ids, timestamps and latencies (docs/engine.md says exactly which).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from lace_engine.llm.base import (
    LLMBadRequest,
    LLMError,
    LLMMalformedOutput,
    LLMProvider,
    LLMRefused,
    LLMRequest,
    LLMResponse,
    LLMTruncated,
    LLMUnavailable,
)

REPLAY_PROVIDER = "replay"
CASSETTE_FILE = "cassette.jsonl"
_ERRORS: dict[str, type[LLMError]] = {cls.__name__: cls for cls in (
    LLMError, LLMTruncated, LLMRefused, LLMMalformedOutput, LLMUnavailable, LLMBadRequest)}


def request_digest(request: LLMRequest) -> str:
    """SHA-256 of what the model is shown: messages, schema and output budget (not the seed)."""
    shown = {"system": request.system, "user": request.user, "schema_name": request.schema_name,
             "schema": request.schema, "max_output_tokens": request.max_output_tokens}
    return hashlib.sha256(json.dumps(shown, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def exchange_record(digest: str, response: LLMResponse | None, error: LLMError | None) -> dict[str, Any]:
    """One cassette line, for an answer or for the error the provider raised."""
    if response is not None:
        return {"digest": digest, "provider": response.provider, "model": response.model, "data": response.data,
                "prompt_tokens": response.prompt_tokens, "completion_tokens": response.completion_tokens,
                "latency_ms": response.latency_ms, "finish_reason": response.finish_reason}
    assert error is not None
    return {"digest": digest, "provider": error.provider, "model": error.model, "error": type(error).__name__,
            "message": error.message, "prompt_tokens": error.prompt_tokens,
            "completion_tokens": error.completion_tokens, "latency_ms": error.latency_ms}


class RecordingProvider:
    """Passes every call through to `inner` and appends the exchange to a cassette file."""

    def __init__(self, inner: LLMProvider, directory: Path):
        self.inner = inner
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / CASSETTE_FILE
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    async def complete(self, request: LLMRequest) -> LLMResponse:
        digest = request_digest(request)
        try:
            response = await self.inner.complete(request)
        except LLMError as err:
            await self._append(exchange_record(digest, None, err))
            raise
        await self._append(exchange_record(digest, response, None))
        return response

    async def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        async with self._lock:  # one line at a time, in the order calls finished
            await asyncio.to_thread(self._write, line)

    def _write(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayProvider:
    """Answers from a cassette; a request it has no recording for is a bad request, never a guess."""

    def __init__(self, cassette: Path):
        self.path = cassette
        self._by_digest: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        lines = cassette.read_text(encoding="utf-8").splitlines()
        for line in lines:
            if line.strip():
                record = json.loads(line)
                self._by_digest[record["digest"]].append(record)
        first: dict[str, Any] = next((json.loads(line) for line in lines if line.strip()), {})
        self._model = str(first.get("model", ""))
        self._recorded_provider = str(first.get("provider", ""))

    @property
    def name(self) -> str:
        return REPLAY_PROVIDER

    @property
    def model(self) -> str:
        return self._model

    @property
    def recorded_provider(self) -> str:
        """The provider the cassette was recorded from ("local", "openai", ...)."""
        return self._recorded_provider

    @property
    def remaining(self) -> int:
        """Recorded exchanges not served yet."""
        return sum(len(q) for q in self._by_digest.values())

    async def complete(self, request: LLMRequest) -> LLMResponse:
        queue = self._by_digest.get(request_digest(request))
        if not queue:
            raise LLMBadRequest(f"the cassette {self.path.name} has no recording of this request "
                                f"(step {request.step.value}, schema {request.schema_name}): re-record it",
                                provider=REPLAY_PROVIDER, model=self._model)
        record = queue.popleft()
        common = {"provider": REPLAY_PROVIDER, "model": record["model"], "prompt_tokens": record["prompt_tokens"],
                  "completion_tokens": record["completion_tokens"], "latency_ms": record["latency_ms"]}
        if "error" in record:
            raise _ERRORS.get(record["error"], LLMError)(record["message"], **common)
        return LLMResponse(data=record["data"], finish_reason=record["finish_reason"], **common)

    async def aclose(self) -> None:
        return None
