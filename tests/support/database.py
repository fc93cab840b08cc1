"""Creating and dropping throwaway databases on a test PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from lace_engine.storage import migrate


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def create_database(server_url: str, name: str, *, migrate_to_head: bool) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(server_url, name)
    if migrate_to_head:
        migrate.upgrade(url)
    return url


def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def fresh_database(server_url: str, prefix: str, *, migrate_to_head: bool = True) -> Iterator[str]:
    """A database of its own with a unique name (migrated unless told otherwise), dropped afterwards."""
    url = create_database(server_url, f"{prefix}_{uuid.uuid4().hex[:10]}", migrate_to_head=migrate_to_head)
    try:
        yield url
    finally:
        drop_database(server_url, url)
