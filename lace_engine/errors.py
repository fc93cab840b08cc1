"""The engine's error hierarchy: one class per condition a caller can act on.

The transport maps each class to exactly one status code (see lace_server.status);
`reason` is a stable UPPER_SNAKE_CASE token and `metadata` carries the details.
"""

from __future__ import annotations

from collections.abc import Mapping


class LaceError(Exception):
    """Base of every error the engine raises on purpose."""

    default_reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(LaceError):
    """The request is malformed or out of range; retrying it unchanged cannot succeed."""

    default_reason = "INVALID_ARGUMENT"


class NotFound(LaceError):
    """A referenced resource does not exist."""

    default_reason = "NOT_FOUND"


class AlreadyExists(LaceError):
    """An idempotency key was reused with a different request."""

    default_reason = "REQUEST_ID_REUSED"


class FailedPrecondition(LaceError):
    """The resource is not in a state that allows the operation (e.g. an illegal run transition)."""

    default_reason = "FAILED_PRECONDITION"


class DataDirectoryInUse(FailedPrecondition):
    """Another live process owns the embedded PostgreSQL's data directory (one process per LACE_DATA_DIR)."""

    default_reason = "DATA_DIR_IN_USE"


class Aborted(LaceError):
    """A concurrency conflict (stale version, lost lease); retry after re-reading."""

    default_reason = "ABORTED"


class Unauthenticated(LaceError):
    """No valid credentials were presented."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(LaceError):
    """The caller is known but may not do this."""

    default_reason = "PERMISSION_DENIED"


class Unavailable(LaceError):
    """A dependency is down or the server is shutting down; retry with backoff."""

    default_reason = "UNAVAILABLE"


class LeaseLost(Aborted):
    """This process no longer owns the run's lease; it must stop applying at once."""

    default_reason = "LEASE_LOST"


class DatabaseUnavailable(Unavailable):
    """PostgreSQL could not be reached or dropped the connection; the work may be retried once it answers.

    `maybe_committed` is True when the connection was lost while COMMIT was under way, so whether the
    transaction's writes landed is unknown; False when nothing was committed.
    """

    default_reason = "DATABASE_UNAVAILABLE"

    def __init__(self, message: str, *, maybe_committed: bool = False):
        super().__init__(message)
        self.maybe_committed = maybe_committed


class OutOfRange(LaceError):
    """A position past what exists, or before what is kept (a cursor into pruned history)."""

    default_reason = "OUT_OF_RANGE"


class CursorCompacted(OutOfRange):
    """The cursor points into a run's pruned history; the metadata's `oldest_seq` is the oldest event
    kept. Resync: read the artifact (GetArtifact), then stream from `oldest_seq - 1`."""

    default_reason = "CURSOR_COMPACTED"


class ResourceExhausted(LaceError):
    """A limit of the server was reached (a size, a quota); the same request will fail again."""

    default_reason = "RESOURCE_EXHAUSTED"


class CompiledTooLarge(ResourceExhausted):
    """A compiled document is larger than a response may be (`LACE_MAX_COMPILED_BYTES`); it is refused,
    not streamed. The metadata names its size and the limit."""

    default_reason = "COMPILED_TOO_LARGE"


class ExportFailed(LaceError):
    """The external renderer (pandoc, Typst) of a binary format failed or ran past its time limit; the
    message says which and how. An internal error: the IR is valid whatever it holds."""

    default_reason = "EXPORT_FAILED"
