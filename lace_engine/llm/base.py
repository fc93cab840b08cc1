"""The provider interface. At this layer a call is plain data in, plain data out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lace_engine.domain import StepKind


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One stateless call: the messages, the schema the answer must match, and the task facts."""

    step: StepKind
    system: str
    user: str
    schema_name: str
    schema: dict[str, Any]
    # The facts restated by the prompt's TASK line (see proposals.render_task_spec).
    task: dict[str, Any]
    # Deterministic per node and attempt; the offline provider seeds its generator with it.
    seed: int
    max_output_tokens: int = 8192


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """The decoded JSON answer with the accounting the run keeps."""

    data: Any
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    finish_reason: str


class LLMError(Exception):
    """A call produced no usable answer. `reask` is True when asking again with feedback may help."""

    reask = False

    def __init__(self, message: str, *, provider: str = "", model: str = "",
                 prompt_tokens: int = 0, completion_tokens: int = 0, latency_ms: int = 0):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.latency_ms = latency_ms


class LLMTruncated(LLMError):
    """The answer hit the output limit (finish_reason == "length") and was cut off."""

    reask = True


class LLMRefused(LLMError):
    """The model refused to answer."""

    reask = True


class LLMMalformedOutput(LLMError):
    """The answer is not valid JSON for the schema."""

    reask = True


class LLMUnavailable(LLMError):
    """The provider kept failing (429, 5xx, timeouts) after every retry."""


class LLMBadRequest(LLMError):
    """The provider rejected the request itself (4xx other than 429): a configuration problem."""


class LLMProvider(Protocol):
    """A stateless model endpoint. Implementations must be safe to call concurrently."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Sends one request; raises an LLMError subclass when there is no usable answer."""
        ...

    async def aclose(self) -> None:
        """Releases connections."""
        ...
