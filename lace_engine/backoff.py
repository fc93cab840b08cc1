"""Waits between tries while something is away: short at first, doubling up to a cap."""

from __future__ import annotations

from collections.abc import Iterator


def delays(first_s: float = 0.05, cap_s: float = 1.0) -> Iterator[float]:
    """first_s, 2 x first_s, ... up to cap_s, then cap_s for ever."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, cap_s)
