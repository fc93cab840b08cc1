"""Which database errors are an outage (retry when the database answers) and which are real errors.

A restart, a failover or a network cut shows up as a lost connection (SQLSTATE class 08), an
administrator or crash shutdown (57P01, 57P02), a server still starting (57P03), a standby refusing
writes after a failover (25006), or a pool that could not hand out a connection in time. A
serialization failure or deadlock (40001, 40P01) is the same kind of thing for one transaction: the
work is sound and succeeds when tried again. Everything else (a constraint, a syntax error, a bad
value) would fail again and is not transient.
"""

from __future__ import annotations

import psycopg
import psycopg_pool
import sqlalchemy.exc

TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "25006", "40001", "40P01"})


def is_transient(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) means the database is unreachable or the work should be retried."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and is_transient(exc.orig)
    if isinstance(exc, sqlalchemy.exc.TimeoutError | psycopg_pool.PoolTimeout | ConnectionError):
        return True  # no connection within the pool's timeout, or the socket was refused or reset
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            # Raised by the client itself: the connection closed or broke, not a server verdict.
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return state.startswith("08") or state in TRANSIENT_SQLSTATES
    return False
