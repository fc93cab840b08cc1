"""LACE client: a typed async client (LaceClient), a blocking one (LaceSyncClient), typed errors."""

from lace_client.client import (
    DEFAULT_TARGET,
    CompiledDocument,
    CompileFormatName,
    DocumentFormatName,
    LaceClient,
    backoff_delay,
)
from lace_client.errors import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    LaceClientError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StreamGapError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from lace_client.sync import LaceSyncClient

__all__ = [
    "DEFAULT_TARGET",
    "AbortedError",
    "AlreadyExistsError",
    "CompileFormatName",
    "CompiledDocument",
    "DocumentFormatName",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "LaceClient",
    "LaceClientError",
    "LaceSyncClient",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "StreamGapError",
    "UnauthenticatedError",
    "UnavailableError",
    "backoff_delay",
    "from_rpc_error",
]
