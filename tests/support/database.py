"""Creating and dropping throwaway databases on a test PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

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


def proxied_url(url: str, proxy_target: str) -> str:
    """`url`'s database and credentials, reached through a TcpProxy at `proxy_target` (host:port)."""
    params = conninfo_to_dict(url)
    user, password = quote(str(params.get("user") or "postgres")), quote(str(params.get("password") or ""))
    return f"postgresql://{user}:{password}@{proxy_target}/{quote(str(params.get('dbname') or 'postgres'))}"


def proxy_upstream(url: str) -> str:
    """The TcpProxy upstream of `url`'s server: "unix:<socket>" or "host:port"."""
    params = conninfo_to_dict(url)
    host, port = str(params.get("host") or "localhost"), int(params.get("port") or 5432)
    return f"unix:{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


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
