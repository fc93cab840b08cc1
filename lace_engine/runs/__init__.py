"""Executing runs: the orchestrator, its journal of writes under a lease, the run lifecycle, LLM
concurrency limits and job dispatch.
"""
