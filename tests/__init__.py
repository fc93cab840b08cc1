"""LACE test suite."""
