"""Chooses and configures the LLM provider from environment variables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lace_engine.errors import InvalidArgument
from lace_engine.llm.base import LLMProvider
from lace_engine.llm.cassette import RecordingProvider, ReplayProvider
from lace_engine.llm.offline import OfflineProvider

if TYPE_CHECKING:
    from lace_engine.llm.openai_provider import HttpTransport

PROVIDERS = ("offline", "openai", "local", "replay")

# Local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) ignore the key, but the SDK insists on one.
_PLACEHOLDER_KEY = "unused"


def provider_from_env(env: Mapping[str, str]) -> LLMProvider:
    """The provider LACE_LLM names, recording every exchange to LACE_LLM_RECORD=DIR when set."""
    provider = _provider(env)
    record = env.get("LACE_LLM_RECORD", "").strip()
    if record:
        return RecordingProvider(provider, Path(record))
    return provider


def _provider(env: Mapping[str, str]) -> LLMProvider:
    """Builds the provider LACE_LLM names ("openai" by default when OPENAI_API_KEY is set, else "offline").

    "local" starts a llama-server child process first (lace_engine.llm.local) and blocks until it is ready."""
    api_key = env.get("OPENAI_API_KEY", "").strip()
    choice = env.get("LACE_LLM", "").strip().lower() or ("openai" if api_key else "offline")
    if choice == "offline":
        return OfflineProvider(latency_ms=_number(env, "LACE_OFFLINE_LATENCY_MS", 0.0, minimum=0.0))
    if choice == "openai":
        # Imported here: the openai SDK takes about a second to import, which every offline
        # `lace serve` and `lace worker` would otherwise pay at start-up.
        from lace_engine.llm.openai_provider import DEFAULT_MODEL, OpenAIProvider

        base_url = env.get("OPENAI_BASE_URL", "").strip() or None
        if not api_key and base_url is None:
            raise InvalidArgument(
                "LACE_LLM=openai needs OPENAI_API_KEY, or OPENAI_BASE_URL for a local server without keys",
                metadata={"variable": "OPENAI_API_KEY"},
            )
        return OpenAIProvider(
            api_key=api_key or _PLACEHOLDER_KEY,
            base_url=base_url,
            model=env.get("LACE_LLM_MODEL", "").strip() or DEFAULT_MODEL,
            timeout_s=_number(env, "LACE_LLM_TIMEOUT_S", 120.0, minimum=0.001),
            max_retries=int(_number(env, "LACE_LLM_MAX_RETRIES", 4, minimum=0, integer=True)),
            sampling=sampling_from_env(env),
            http_transport=http_transport_from_env(env),
        )
    if choice == "replay":
        cassette = env.get("LACE_LLM_CASSETTE", "").strip()
        if not cassette or not Path(cassette).is_file():
            raise InvalidArgument(f"LACE_LLM=replay needs LACE_LLM_CASSETTE=FILE, a recorded cassette; "
                                  f"got {cassette!r}",
                                  metadata={"variable": "LACE_LLM_CASSETTE"})
        return ReplayProvider(Path(cassette))
    if choice == "local":
        from lace_engine.llm.local import start_local_provider

        # A small model on a few CPU cores takes tens of seconds a call, more while calls queue for a slot.
        return start_local_provider(env, timeout_s=_number(env, "LACE_LLM_TIMEOUT_S", 900.0, minimum=0.001),
                                    max_retries=int(_number(env, "LACE_LLM_MAX_RETRIES", 1, minimum=0, integer=True)),
                                    sampling=sampling_from_env(env), http_transport=http_transport_from_env(env))
    raise InvalidArgument(
        f"LACE_LLM={env.get('LACE_LLM', '')!r} is not a known provider; valid values: {', '.join(PROVIDERS)}",
        metadata={"variable": "LACE_LLM", "valid": ",".join(PROVIDERS)},
    )


def http_transport_from_env(env: Mapping[str, str]) -> HttpTransport:
    """LACE_LLM_HTTP: what carries the openai SDK's requests, aiohttp (the default) or httpx."""
    from lace_engine.llm.openai_provider import HTTP_TRANSPORTS

    raw = env.get("LACE_LLM_HTTP", "").strip().lower() or "aiohttp"
    for transport in HTTP_TRANSPORTS:
        if raw == transport:
            return transport
    raise InvalidArgument(f"LACE_LLM_HTTP={raw!r} is not a known HTTP transport; valid values: "
                          f"{', '.join(HTTP_TRANSPORTS)}", metadata={"variable": "LACE_LLM_HTTP",
                                                                     "valid": ",".join(HTTP_TRANSPORTS)})


# OpenAI's names and ranges; llama.cpp, vLLM and Ollama take the same.
_SAMPLING = {"frequency_penalty": "LACE_LLM_FREQUENCY_PENALTY", "presence_penalty": "LACE_LLM_PRESENCE_PENALTY"}


def sampling_from_env(env: Mapping[str, str]) -> dict[str, float]:
    """The sampling parameters set in the environment (none by default: the provider's own defaults)."""
    out: dict[str, float] = {}
    for param, variable in _SAMPLING.items():
        if env.get(variable, "").strip():
            value = _number(env, variable, 0.0, minimum=-2.0)
            if value > 2.0:
                raise InvalidArgument(f"{variable}={value:g} must be between -2 and 2", metadata={"variable": variable})
            out[param] = value
    return out


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float,
            integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"{name}={raw!r} is not {kind}", metadata={"variable": name}) from None
    if not math.isfinite(value) or value < minimum:
        raise InvalidArgument(f"{name}={raw!r} must be at least {minimum:g}", metadata={"variable": name})
    return value
