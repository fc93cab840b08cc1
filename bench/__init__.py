"""LACE benchmarks: every figure is a ratio against a baseline measured in the same run.

Run with `python -m bench [--quick]` (see bench/__main__.py and docs/performance.md).
"""
