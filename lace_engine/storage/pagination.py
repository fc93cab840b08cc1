"""AIP-158 page tokens: opaque to clients, bound to the query that issued them."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from lace_engine.errors import InvalidArgument

T = TypeVar("T")


def page_size(requested: int, *, default: int, maximum: int) -> int:
    """Applies the documented default and cap; negative sizes are a client error."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE",
                              metadata={"field": "page_size"})
    return default if requested == 0 else min(requested, maximum)


def _digest(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:12]


def encode(position: Any, query: Any) -> str:
    """A token resuming after `position` for the same `query` (its filter fields)."""
    raw = json.dumps({"p": position, "q": _digest(query)}, default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: Any) -> Any:
    """The position in `token`; INVALID_ARGUMENT when it is corrupt or from another query."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, digest = data["p"], data["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token is not a token this server issued", reason="INVALID_PAGE_TOKEN",
                              metadata={"field": "page_token"}) from None
    if digest != _digest(query):
        raise InvalidArgument("page_token was issued for a different query; keep the other fields the same",
                              reason="INVALID_PAGE_TOKEN", metadata={"field": "page_token"})
    return position


def page(items: list[T], size: int, query: Any, position: Callable[[T], Any]) -> tuple[list[T], str]:
    """Ends a page read with limit size + 1: its first `size` items, and a token for the rest ("" if none)."""
    if len(items) <= size:
        return items, ""
    items = items[:size]
    return items, encode(position(items[-1]), query)
