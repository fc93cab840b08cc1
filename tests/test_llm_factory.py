"""Choosing and configuring the provider from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from lace_engine.config import Settings
from lace_engine.errors import InvalidArgument
from lace_engine.llm.base import LLMProvider
from lace_engine.llm.content_style import DEFAULT_LOCAL_MODEL, default_content_style
from lace_engine.llm.factory import provider_from_env
from lace_engine.llm.offline import OfflineProvider
from lace_engine.llm.openai_provider import OpenAIProvider


async def build(env: dict[str, str]) -> LLMProvider:
    provider = provider_from_env(env)
    # Only the OpenAI provider holds connections; closing each one keeps the test run tidy.
    await provider.aclose()
    return provider


async def test_offline_by_default() -> None:
    provider = await build({})
    assert isinstance(provider, OfflineProvider)
    assert (provider.name, provider.model, provider.latency_ms) == ("offline", "lace-offline-1", 0)


async def test_openai_by_default_when_a_key_is_set() -> None:
    provider = await build({"OPENAI_API_KEY": "sk-test"})
    assert isinstance(provider, OpenAIProvider)
    assert provider.name == "openai"
    assert provider.model == "gpt-4o-mini"
    assert provider.base_url == "https://api.openai.com/v1"
    assert provider.timeout_s == 120
    assert provider.max_retries == 4
    assert provider.http_transport == "aiohttp"


async def test_explicit_offline_wins_over_a_key() -> None:
    provider = await build({"LACE_LLM": "offline", "OPENAI_API_KEY": "sk-test", "LACE_OFFLINE_LATENCY_MS": "25"})
    assert isinstance(provider, OfflineProvider)
    assert provider.latency_ms == 25


async def test_openai_settings_are_read() -> None:
    provider = await build({
        "LACE_LLM": " OpenAI ",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
        "LACE_LLM_MODEL": "qwen2.5-7b-instruct",
        "LACE_LLM_TIMEOUT_S": "30.5",
        "LACE_LLM_MAX_RETRIES": "0",
        "LACE_LLM_HTTP": " HTTPX ",
    })
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "http://127.0.0.1:8000/v1"
    assert provider.model == "qwen2.5-7b-instruct"
    assert provider.timeout_s == 30.5
    assert provider.max_retries == 0
    assert provider.http_transport == "httpx"


async def test_local_server_needs_no_key() -> None:
    provider = await build({"LACE_LLM": "openai", "OPENAI_BASE_URL": "http://localhost:11434/v1"})
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "http://localhost:11434/v1"


def test_openai_without_key_or_url_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="OPENAI_API_KEY"):
        provider_from_env({"LACE_LLM": "openai"})


def test_unknown_provider_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as info:
        provider_from_env({"LACE_LLM": "anthropic"})
    assert "'anthropic'" in info.value.message
    assert "offline" in info.value.message and "openai" in info.value.message
    assert info.value.reason == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("name", "value"), [
    ("LACE_LLM_TIMEOUT_S", "soon"),
    ("LACE_LLM_TIMEOUT_S", "0"),
    ("LACE_LLM_TIMEOUT_S", "nan"),
    ("LACE_LLM_MAX_RETRIES", "-1"),
    ("LACE_LLM_MAX_RETRIES", "2.5"),
])
def test_bad_openai_numbers_are_refused(name: str, value: str) -> None:
    with pytest.raises(InvalidArgument, match=name):
        provider_from_env({"LACE_LLM": "openai", "OPENAI_API_KEY": "sk-test", name: value})


def test_unknown_http_transport_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as info:
        provider_from_env({"LACE_LLM": "openai", "OPENAI_API_KEY": "sk-test", "LACE_LLM_HTTP": "curl"})
    assert "'curl'" in info.value.message and "aiohttp, httpx" in info.value.message
    assert info.value.metadata["variable"] == "LACE_LLM_HTTP"


@pytest.mark.parametrize("value", ["fast", "-5", "inf"])
def test_bad_offline_latency_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="LACE_OFFLINE_LATENCY_MS"):
        provider_from_env({"LACE_OFFLINE_LATENCY_MS": value})


async def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-process")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere.invalid/v1")
    monkeypatch.setenv("LACE_LLM", "openai")
    assert isinstance(await build({}), OfflineProvider)
    provider = await build({"OPENAI_API_KEY": "sk-test"})
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(("variable", "value"), [
    ("LACE_LOCAL_MODEL", "/nonexistent/model.gguf"), ("LACE_LLAMA_SERVER", "/nonexistent/llama-server"),
    ("LACE_LOCAL_SLOTS", "0"), ("LACE_LOCAL_THREADS", "many"),
])
def test_local_provider_names_the_bad_variable_and_starts_nothing(variable: str, value: str, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    env = {"LACE_LLM": "local", "LACE_LOCAL_MODEL": str(model), "LACE_LLAMA_SERVER": str(model), variable: value}
    with pytest.raises(InvalidArgument) as raised:
        provider_from_env(env)
    assert value in raised.value.message and raised.value.metadata["variable"] == variable


def test_content_style_defaults_to_prose_only_for_the_tiny_local_model() -> None:
    assert default_content_style(OfflineProvider()) == "blocks"
    assert default_content_style(OpenAIProvider(api_key="k", model=DEFAULT_LOCAL_MODEL)) == "blocks"
    assert default_content_style(OpenAIProvider(api_key="k", model=DEFAULT_LOCAL_MODEL, name="local")) == "prose"
    assert default_content_style(OpenAIProvider(api_key="k", model="qwen2.5-7b.gguf", name="local")) == "blocks"
    assert Settings.from_env({"LACE_CONTENT_STYLE": "Prose"}).content_style == "prose"
    with pytest.raises(InvalidArgument):
        Settings.from_env({"LACE_CONTENT_STYLE": "poetry"})


async def test_sampling_penalties_are_sent_only_when_set() -> None:
    provider = await build({"LACE_LLM": "openai", "OPENAI_API_KEY": "k"})
    assert isinstance(provider, OpenAIProvider) and provider.sampling == {}
    provider = await build({"LACE_LLM": "openai", "OPENAI_API_KEY": "k", "LACE_LLM_FREQUENCY_PENALTY": "0.5",
                            "LACE_LLM_PRESENCE_PENALTY": "-1"})
    assert isinstance(provider, OpenAIProvider)
    assert provider.sampling == {"frequency_penalty": 0.5, "presence_penalty": -1.0}
    for bad in ("3", "-2.5", "lots"):
        with pytest.raises(InvalidArgument):
            provider_from_env({"LACE_LLM": "openai", "OPENAI_API_KEY": "k", "LACE_LLM_PRESENCE_PENALTY": bad})
