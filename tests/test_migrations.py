"""Alembic migrations: an empty database goes to head and back down cleanly."""

from __future__ import annotations

import psycopg

from lace_engine.storage import migrate
from lace_engine.storage.schema import metadata


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_upgrade_to_head_and_back_down(empty_database: str) -> None:
    assert tables(empty_database) == set()
    migrate.upgrade(empty_database)
    assert set(metadata.tables) <= tables(empty_database)
    with psycopg.connect(empty_database) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert row is not None and row[0] == migrate.head_revision() == migrate.HEAD_REVISION
    assert migrate.current_revision(empty_database) == migrate.HEAD_REVISION
    migrate.downgrade(empty_database, "base")
    assert tables(empty_database) == {"alembic_version"}
    assert migrate.current_revision(empty_database) is None
    migrate.upgrade(empty_database)  # and up again: downgrades leave nothing behind
    assert set(metadata.tables) <= tables(empty_database)


def test_start_up_upgrades_only_a_database_behind_head(empty_database: str) -> None:
    assert migrate.current_revision(empty_database) is None
    migrate.upgrade_to_head(empty_database)
    assert migrate.current_revision(empty_database) == migrate.HEAD_REVISION
    migrate.downgrade(empty_database, "0001")
    assert migrate.current_revision(empty_database) == "0001"
    migrate.upgrade_to_head(empty_database)
    assert migrate.current_revision(empty_database) == migrate.HEAD_REVISION
    assert set(metadata.tables) <= tables(empty_database)
