"""Identifiers: time-ordered UUIDs (version 7) so that new rows append to B-tree indexes."""

from __future__ import annotations

import os
import time
import uuid

from lace_engine.errors import InvalidArgument


def new_id() -> uuid.UUID:
    """Returns a fresh UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def parse_id(value: str, field: str) -> uuid.UUID:
    """Parses a client-supplied id, raising InvalidArgument naming the field when it is malformed."""
    if not value:
        raise InvalidArgument(f"{field} is required", reason="MISSING_FIELD", metadata={"field": field})
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} {value[:80]!r} is not a valid id (expected a UUID such as "
            "'0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b')",
            reason="MALFORMED_ID",
            metadata={"field": field},
        ) from None
