"""How many runs one process holds: twice its LLM limit unless set."""

from __future__ import annotations

from lace_engine.config import Settings
from lace_engine.runs.orchestrator import ExecutorConfig


def test_runs_per_process_default_to_twice_the_llm_limit_unless_set() -> None:
    assert ExecutorConfig(owner_id="w", llm_concurrency=4).max_concurrent_runs == 8
    assert ExecutorConfig(owner_id="w", llm_concurrency=4, max_concurrent_runs=3).max_concurrent_runs == 3
    settings = Settings.from_env({"LACE_LLM_CONCURRENCY": "5"})
    assert ExecutorConfig(owner_id="w", llm_concurrency=settings.llm_concurrency,
                          max_concurrent_runs=settings.max_concurrent_runs).max_concurrent_runs == 10
    settings = Settings.from_env({"LACE_MAX_CONCURRENT_RUNS": "7"})
    assert settings.max_concurrent_runs == 7
