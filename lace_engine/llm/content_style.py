"""Which content schema a model gets: every block kind, or paragraphs only (proposal_schema.content_schema)."""

from __future__ import annotations

from lace_engine.llm.base import LLMProvider
from lace_engine.llm.cassette import ReplayProvider

LOCAL_PROVIDER = "local"
# The GGUF `LACE_LLM=local` runs when LACE_LOCAL_MODEL names no other.
DEFAULT_LOCAL_MODEL = "gemma-3-270m-q4_k_m.gguf"


def default_content_style(provider: LLMProvider) -> str:
    """"prose" for the tiny default model LACE runs itself, "blocks" for every other model.

    A 270M base model asked for free-form blocks wrote lists of numbers; a model worth choosing
    for real writing picks headings, lists and tables well. LACE_CONTENT_STYLE overrides this.
    """
    # A replay must ask with the schemas of the recording, so it takes the recorded model's style.
    name = provider.recorded_provider if isinstance(provider, ReplayProvider) else provider.name
    return "prose" if name == LOCAL_PROVIDER and provider.model == DEFAULT_LOCAL_MODEL else "blocks"
