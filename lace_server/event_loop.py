"""The event loop a LACE process runs on: uvloop by default, the standard library's on request.

uvloop (libuv, in Cython) runs the same asyncio code with less CPU a callback and a socket
operation; at 64 LLM calls in flight it took ~8% off the instructions `lace serve` spends a call
(docs/performance.md, "Per-call CPU: sixth pass"). Where it is not installed (it has no Windows
build) the standard loop runs instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Runs `main` to completion on a new loop of the kind `choice` names ("uvloop" or "asyncio")."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; running on the standard asyncio loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)
