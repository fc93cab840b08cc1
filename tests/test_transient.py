"""Which database errors count as an outage: decided from the exception alone, without I/O."""

from __future__ import annotations

import psycopg
import psycopg.errors
import psycopg_pool
import pytest
import sqlalchemy.exc

from lace_engine.storage.transient import is_transient


def wrapped(orig: BaseException, *, invalidated: bool = False) -> sqlalchemy.exc.DBAPIError:
    """The exception SQLAlchemy raises around a driver error."""
    assert isinstance(orig, Exception)
    wrapper = sqlalchemy.exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error,
                                                 connection_invalidated=invalidated)
    assert isinstance(wrapper, sqlalchemy.exc.DBAPIError)
    return wrapper


OUTAGES = [
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),  # 57P01
    psycopg.errors.CrashShutdown("terminating connection because of crash of another server process"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),  # 57P03
    psycopg.errors.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only transaction"),  # 25006
    psycopg.errors.SerializationFailure("could not serialize access"),  # 40001
    psycopg.errors.DeadlockDetected("deadlock detected"),  # 40P01
    psycopg.errors.ConnectionFailure("connection failure"),  # class 08
    psycopg.OperationalError("server closed the connection unexpectedly"),  # from the client, no SQLSTATE
    psycopg.OperationalError("connection failed: Connection refused"),
    psycopg.InterfaceError("the connection is closed"),
    psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec"),
    sqlalchemy.exc.TimeoutError("QueuePool limit of size 20 overflow 0 reached"),
    ConnectionResetError("Connection reset by peer"),
]
REAL = [
    psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"),
    psycopg.errors.UndefinedTable('relation "runs" does not exist'),
    psycopg.errors.InvalidTextRepresentation("invalid input syntax for type uuid"),
    psycopg.errors.InvalidPassword("password authentication failed"),  # 28P01: retrying cannot help
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    ValueError("not a database error"),
    KeyError("run_id"),
]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
def test_outages_are_transient_bare_and_wrapped(exc: BaseException) -> None:
    assert is_transient(exc)
    if isinstance(exc, psycopg.Error):
        assert is_transient(wrapped(exc))


@pytest.mark.parametrize("exc", REAL, ids=lambda e: type(e).__name__)
def test_real_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)
    if isinstance(exc, psycopg.Error):
        assert not is_transient(wrapped(exc))


def test_a_connection_sqlalchemy_invalidated_is_an_outage_whatever_the_driver_said() -> None:
    assert is_transient(wrapped(psycopg.errors.QueryCanceled("canceled"), invalidated=True))
