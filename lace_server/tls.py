"""Server credentials from LACE_TLS_CERT, LACE_TLS_KEY and LACE_TLS_CLIENT_CA (mutual TLS)."""

from __future__ import annotations

from pathlib import Path

import grpc

from lace_engine.config import Settings
from lace_engine.errors import InvalidArgument


def _read(variable: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{variable}={path!r} cannot be read: {exc.strerror}",
                              metadata={"variable": variable}) from None
    if b"-----BEGIN " not in data:
        raise InvalidArgument(f"{variable}={path!r} is not a PEM file", metadata={"variable": variable})
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate and key are configured, None for plaintext; InvalidArgument if half set."""
    if not (settings.tls_cert or settings.tls_key or settings.tls_client_ca):
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise InvalidArgument("TLS needs both LACE_TLS_CERT and LACE_TLS_KEY (LACE_TLS_CLIENT_CA adds mutual TLS)",
                              metadata={"variable": "LACE_TLS_KEY" if settings.tls_cert else "LACE_TLS_CERT"})
    pair = (_read("LACE_TLS_KEY", settings.tls_key), _read("LACE_TLS_CERT", settings.tls_cert))
    client_ca = _read("LACE_TLS_CLIENT_CA", settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)
