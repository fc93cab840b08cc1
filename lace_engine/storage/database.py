"""The connection to Postgres: an async SQLAlchemy engine over psycopg 3 with a pool, and
transactions that hand their committed events to live streams only after COMMIT."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
import psycopg
import sqlalchemy.event
import sqlalchemy.exc
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from lace_engine import backoff, metrics
from lace_engine.domain import RunEvent
from lace_engine.errors import DatabaseUnavailable
from lace_engine.storage.transient import is_transient

T = TypeVar("T")


class CommitListener(Protocol):
    """Learns of the events this process's transactions write: the live hub, the NATS outbox."""

    def pending(self, run_id: uuid.UUID) -> None:
        """A transaction wrote events of the run and has not committed yet."""

    def settled(self, run_id: uuid.UUID, events: list[RunEvent] | None) -> None:
        """It committed `events`, or ended without a confirmed commit (None)."""


def sqlalchemy_url(url: str) -> str:
    """Turns a libpq URL (postgresql://...) into SQLAlchemy's psycopg 3 dialect URL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def libpq_url(url: str) -> str:
    """Turns a SQLAlchemy URL back into one libpq (psycopg) accepts."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# A pooled connection idle for longer than this is pinged before use (a database restart may
# have closed it); one handed back moments ago is not, which spares busy writers a round trip
# per transaction (the window HikariCP calls aliveBypassWindow).
PING_AFTER_IDLE_S = 0.5


async def use_orjson(conn: psycopg.AsyncConnection[Any]) -> None:
    """jsonb in and out of this connection through orjson (a third of replay's CPU was json.loads)."""
    set_json_loads(orjson.loads, conn)
    set_json_dumps(orjson.dumps, conn)


class Freshness:
    """Whether a pooled connection is handed out unchecked: it was returned less than PING_AFTER_IDLE_S
    ago, and not before the latest connection found lost. A restart or a cut network takes every
    connection at once, so one found dead (by any pool, or by a statement sent past SQLAlchemy,
    which then cannot see it) makes the others suspect too."""

    def __init__(self) -> None:
        self._lost_at = 0.0

    def trusted(self, returned_at: float) -> bool:
        return time.monotonic() - returned_at <= PING_AFTER_IDLE_S and returned_at > self._lost_at

    def lost(self) -> None:
        self._lost_at = time.monotonic()


def create_engine(url: str, *, pool_size: int = 10, freshness: Freshness | None = None) -> AsyncEngine:
    """Creates the pooled async engine; connections are checked before use after a restart."""
    fresh = freshness or Freshness()
    engine = create_async_engine(
        sqlalchemy_url(url),
        # Opened on demand and kept: with an overflow instead, QueuePool closes a connection on
        # every check-in beyond pool_size, so a burst of concurrent transactions (32 runs applying
        # at once) paid a new connection per transaction (6% of Apply's CPU).
        pool_size=pool_size,
        max_overflow=0,
        pool_recycle=1800,
        connect_args={"application_name": "lace"},
        # The psycopg dialect hands these to psycopg's own jsonb adapters on every connection.
        json_serializer=orjson.dumps,
        json_deserializer=orjson.loads,
    )
    dialect = engine.sync_engine.dialect

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["lace_idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if fresh.trusted(record.info.get("lace_idle_since", 0.0)):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise sqlalchemy.exc.DisconnectionError(f"pooled connection is gone: {exc}") from exc

    sqlalchemy.event.listen(engine.sync_engine.pool, "checkin", checkin)
    sqlalchemy.event.listen(engine.sync_engine.pool, "checkout", checkout)
    return engine


class _IdlePing:
    """The psycopg pools' check callback: a connection that `freshness` does not trust is pinged when
    handed out (the pool replaces one that fails), the same rule as the engine's pool.

    Database records when each connection goes back (`returned`), not a pool `reset` callback: with
    one, psycopg_pool hands every returned connection to a worker task, a task hop per transaction,
    and the connection is free again only when the worker has run."""

    def __init__(self, freshness: Freshness) -> None:
        self._freshness = freshness
        self._returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not self._freshness.trusted(self._returned.get(conn, 0.0)):
            await AsyncConnectionPool.check_connection(conn)

    def returned(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._returned[conn] = time.monotonic()


@contextmanager
def _outages_unavailable(freshness: Freshness, maybe_committed: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Raises DatabaseUnavailable in place of a transient error (storage.transient); others pass."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            freshness.lost()
            raise DatabaseUnavailable(f"the database is unavailable: {type(exc).__name__}: {exc}".strip(),
                                      maybe_committed=maybe_committed()) from exc
        raise


async def driver_connection(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a SQLAlchemy connection: the same session and transaction.

    The hot write path (event_log.append, apply_store.write_mutation) sends its statements here,
    pipelined, instead of through SQLAlchemy Core, whose per-statement compile and bind work
    cost several times the database's own time per Apply.
    """
    raw = await conn.get_raw_connection()
    driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
    return driver


def batched(driver: psycopg.AsyncConnection[Any]) -> contextlib.AbstractAsyncContextManager[Any]:
    """A pipeline block for statements sent together, or nothing inside a pipelined transaction, which
    is one already: a nested block syncs where it starts and ends, two round trips more (results
    read before the end still arrive, through a flush request)."""
    if driver.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
        return contextlib.nullcontext()
    return driver.pipeline()


def ids_array(param: str = "%s") -> str:
    """SQL for a uuid[] sent as the one text parameter `param`, which `ids_text` makes: psycopg dumps a
    list parameter element by element, escaping each (~20 us for a few, more for hundreds), and a
    string as it is."""
    return f"string_to_array({param}, ',')::uuid[]"


def ids_text(ids: Iterable[uuid.UUID]) -> str:
    """`ids` as the one text parameter `ids_array` takes."""
    return ",".join(map(str, ids))


async def fetch_rows(conn: AsyncConnection, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
    """The rows of one plain-SQL statement on `conn`'s psycopg connection, each a named tuple (a column
    is an attribute, as on SQLAlchemy's rows): the executor's per-run reads, where compiling and
    processing them through SQLAlchemy Core cost several times the database's answer."""
    driver = await driver_connection(conn)
    async with driver.cursor(row_factory=namedtuple_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """One plain-SQL read and what its rows become (`convert` may raise, e.g. NotFound for none)."""

    sql: str
    params: Sequence[Any] | Mapping[str, Any]
    convert: Callable[[list[Any]], T]


async def fetch(conn: AsyncConnection, query: Query[T]) -> T:
    """`query`'s result on `conn`'s psycopg connection."""
    return query.convert(await fetch_rows(conn, query.sql, query.params))


class Fetched(Generic[T]):
    """The result of a query sent in a `Reads`, there once the reads were sent."""

    __slots__ = ("_rows", "query")

    def __init__(self, query: Query[T]):
        self.query = query
        self._rows: list[Any] | None = None

    @property
    def value(self) -> T:
        if self._rows is None:
            raise RuntimeError("a query's result is read after its Reads were sent")
        return self.query.convert(self._rows)


class Reads:
    """Reads sent together on one connection in a pipeline: one round trip for all of them, where
    awaiting each in turn costs one apiece (the executor reads five things as a run ends)."""

    def __init__(self) -> None:
        self._queued: list[Fetched[Any]] = []

    def add(self, query: Query[T]) -> Fetched[T]:
        fetched = Fetched(query)
        self._queued.append(fetched)
        return fetched

    async def send(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Sends every query added, on `conn` (autocommit, or in the caller's transaction), and reads their rows."""
        cursors = []
        async with batched(conn):
            for fetched in self._queued:
                cursor = conn.cursor(row_factory=namedtuple_row)
                await cursor.execute(fetched.query.sql, fetched.query.params)
                cursors.append(cursor)
        # A pipeline's end received every result (inside one already, the first read flushes them all).
        for fetched, cursor in zip(self._queued, cursors, strict=True):
            fetched._rows = await cursor.fetchall()


class _Emitting:
    """A transaction's events, handed to the listeners once it has committed."""

    __slots__ = ("_listeners", "written")

    def __init__(self, listeners: list[CommitListener]):
        self.written: dict[uuid.UUID, list[RunEvent]] = {}
        self._listeners = listeners

    def emitted(self, events: list[RunEvent]) -> None:
        for event in events:
            self._batch(event.run_id).append(event)

    def expect(self, run_id: uuid.UUID) -> None:
        """Tells the listeners the run's events are pending before the first is known (an append
        read after COMMIT still holds back their reads of what it commits)."""
        self._batch(run_id)

    def _batch(self, run_id: uuid.UUID) -> list[RunEvent]:
        batch = self.written.get(run_id)
        if batch is None:
            batch = self.written[run_id] = []
            for listener in self._listeners:
                listener.pending(run_id)
        return batch

    def settle(self, committed: bool) -> None:
        """Tells the listeners how the transaction ended: its events, or None without a confirmed commit."""
        for run_id, events in self.written.items():
            for listener in self._listeners:
                listener.settled(run_id, events if committed else None)


class Tx(_Emitting):
    """A transaction in progress through SQLAlchemy Core; events it wrote are published once it has committed."""

    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection, listeners: list[CommitListener]):
        super().__init__(listeners)
        self.conn = conn

    async def driver(self) -> psycopg.AsyncConnection[Any]:
        """The psycopg connection under `conn`: the same transaction, for the pipelined hot write path."""
        return await driver_connection(self.conn)


class PipelinedTx(_Emitting):
    """A transaction on a plain psycopg connection in pipeline mode (`Database.pipelined_transaction`)."""

    __slots__ = ("_after_commit", "_conn")

    def __init__(self, conn: psycopg.AsyncConnection[Any], listeners: list[CommitListener]):
        super().__init__(listeners)
        self._conn = conn
        self._after_commit: list[Callable[[], Awaitable[None]]] = []

    async def driver(self) -> psycopg.AsyncConnection[Any]:
        return self._conn

    def read_after_commit(self, reader: Callable[[], Awaitable[None]]) -> None:
        """Runs `reader` once COMMIT has been answered, before the listeners learn the outcome: a
        statement whose result is read then travels with the COMMIT, one round trip. What it raises
        is the transaction's error (what it read was committed, or the statement changed nothing)."""
        self._after_commit.append(reader)

    async def after_commit(self) -> None:
        """Runs the readers `read_after_commit` registered (Database.pipelined_transaction, at COMMIT's answer)."""
        for reader in self._after_commit:
            await reader()


class _OneStatementTx(PipelinedTx):
    """`Database.one_statement`'s transaction: its driver is handed out once, for its one statement."""

    __slots__ = ("_handed_out",)

    def __init__(self, conn: psycopg.AsyncConnection[Any], listeners: list[CommitListener]):
        super().__init__(conn, listeners)
        self._handed_out = False

    async def driver(self) -> psycopg.AsyncConnection[Any]:
        # A second statement would commit on its own, apart from the first: not one transaction.
        if self._handed_out:
            raise RuntimeError("a one-statement transaction sends one statement")
        self._handed_out = True
        return await super().driver()


# What the event log and Apply write through: either kind of transaction.
WriteTx = Tx | PipelinedTx


class _Ending:
    """How far a transaction got: the Tx it opened and whether its COMMIT was under way."""

    __slots__ = ("committing", "tx")

    def __init__(self) -> None:
        self.tx: WriteTx | None = None
        self.committing = False


class Database:
    """The pools plus the after-commit hooks (the live hub; the JetStream mirror when NATS is on).

    SQLAlchemy Core serves the control plane's transactions. The executor's own writes
    (step_started, Apply, rejected calls: two or three per LLM call) run on plain psycopg
    connections, in pipeline mode (`pipelined_transaction`) or as one autocommit statement
    (`one_statement`: step_started and the journal's other appends), and the hottest reads (event history
    for StreamRun and ListRunEvents, retrieval) on a plain psycopg pool in autocommit mode:
    SQLAlchemy's connection, transaction and greenlet hand-offs cost ~0.2 ms of CPU a transaction,
    as much as the rest of a step_started commit. Each of the three pools holds up to pool_size.
    """

    def __init__(self, url: str, *, pool_size: int = 10):
        self.url = libpq_url(url)
        self._freshness = Freshness()
        self.engine = create_engine(url, pool_size=pool_size, freshness=self._freshness)
        self._idle = _IdlePing(self._freshness)
        self.read_pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncConnectionPool(
            self.url, min_size=1, max_size=pool_size, open=False,
            kwargs={"autocommit": True, "application_name": "lace-read"}, configure=use_orjson,
            check=self._idle.check,
        )
        self.write_pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncConnectionPool(
            self.url, min_size=1, max_size=pool_size, open=False,
            kwargs={"autocommit": True, "application_name": "lace-write"}, configure=use_orjson,
            check=self._idle.check,
        )
        self._listeners: list[CommitListener] = [metrics.COMMITTED_EVENTS]
        metrics.watch_pools(self)

    def pool_stats(self) -> dict[str, tuple[int, int]]:
        """{pool: (connections in use, idle)} for lace_db_pool_connections."""
        queue: Any = self.engine.sync_engine.pool
        stats = {"transactions": (int(queue.checkedout()), int(queue.checkedin()))}
        for name, pool in (("reads", self.read_pool), ("writes", self.write_pool)):
            got = pool.get_stats()
            stats[name] = (got.get("pool_size", 0) - got.get("pool_available", 0), got.get("pool_available", 0))
        return stats

    async def open(self) -> None:
        await self.read_pool.open(wait=True, timeout=30)
        await self.write_pool.open(wait=True, timeout=30)

    @asynccontextmanager
    async def _pooled(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]]) \
            -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
        """A connection of `pool`, its return time noted for the idle ping."""
        async with pool.connection() as conn:
            try:
                yield conn
            finally:
                self._idle.returned(conn)

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    @asynccontextmanager
    async def _ending(self) -> AsyncIterator[_Ending]:
        """The frame of every transaction: an outage raises DatabaseUnavailable, which says whether
        COMMIT was under way, and the listeners learn how it ended."""
        ending = _Ending()
        committed = False
        try:
            with _outages_unavailable(self._freshness, lambda: ending.committing):
                yield ending
            committed = True
        finally:
            if ending.tx is not None:
                ending.tx.settle(committed)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One explicit transaction; commit on success, rollback on any exception or cancellation.

        A lost connection or an unreachable database raises DatabaseUnavailable, which says whether
        COMMIT was under way (then the outcome is unknown) or nothing was committed.
        """
        async with self._ending() as ending, self.engine.connect() as conn, conn.begin():
            tx = ending.tx = Tx(conn, self._listeners)
            yield tx
            ending.committing = True

    @asynccontextmanager
    async def pipelined_transaction(self) -> AsyncIterator[PipelinedTx]:
        """Like `transaction`, on a write-pool connection in pipeline mode: BEGIN travels with the
        first statements and COMMIT is one round trip; for code that writes through `driver()` only."""
        async with self._ending() as ending, self._pooled(self.write_pool) as conn:
            try:
                # BEGIN and COMMIT by hand: psycopg's conn.transaction() in pipeline mode nests two
                # more pipelines, each a sync and a round trip at its exit.
                async with conn.pipeline():
                    await conn.execute("BEGIN", prepare=False)
                    tx = ending.tx = PipelinedTx(conn, self._listeners)
                    yield tx
                    ending.committing = True
                    await conn.execute("COMMIT", prepare=False)
                await tx.after_commit()
            except BaseException:
                if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    # A failed ROLLBACK leaves the connection to the pool's own check at return.
                    with contextlib.suppress(psycopg.Error):
                        await conn.rollback()
                raise

    @asynccontextmanager
    async def one_statement(self) -> AsyncIterator[PipelinedTx]:
        """A transaction of exactly one statement, on a write-pool connection in autocommit mode: no
        BEGIN or COMMIT to send (~70 us less CPU than `pipelined_transaction`); for code that writes
        through `driver()` once. Its events are published once the statement is answered."""
        async with self._ending() as ending, self._pooled(self.write_pool) as conn:
            tx = ending.tx = _OneStatementTx(conn, self._listeners)
            # The statement commits as it is answered: an outage while it is out leaves the outcome unknown.
            ending.committing = True
            yield tx
            await tx.after_commit()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (autocommit-free, released at exit); DatabaseUnavailable on an outage."""
        with _outages_unavailable(self._freshness):
            async with self.engine.connect() as conn:
                yield conn
                # COMMIT, not the pool's ROLLBACK on return: psycopg forgets the connection's prepared
                # statements at every ROLLBACK (DEALLOCATE ALL, a round trip), so each read undid
                # the preparing of Apply's statements on the connections the two paths share. On the
                # driver: it also ends what was sent to it directly, unseen by SQLAlchemy (whose own
                # rollback at return then finds nothing to do).
                await (await driver_connection(conn)).commit()

    @asynccontextmanager
    async def fast_read(self) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
        """A raw autocommit psycopg connection for single-statement hot reads; DatabaseUnavailable on an outage."""
        with _outages_unavailable(self._freshness):
            async with self._pooled(self.read_pool) as conn:
                yield conn

    async def fast_read_through_outage(
        self, read: Callable[[psycopg.AsyncConnection[tuple[object, ...]]], Awaitable[T]], *, within_s: float = 10.0,
    ) -> T:
        """`read(conn)` on a fast-read connection, tried again with backoff while the database is
        unreachable, for up to `within_s` (reads are safe to repeat); then DatabaseUnavailable."""
        deadline = time.monotonic() + within_s
        for delay in backoff.delays():
            try:
                async with self.fast_read() as conn:
                    return await read(conn)
            except DatabaseUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: backoff.delays() never ends")

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Connects afresh and asks for one row; DatabaseUnavailable while the database does not answer.

        Not through the pools: while the database is away, a pool waits up to its own timeout for a
        connection, and whoever waits out an outage needs to know now.
        """
        try:
            with _outages_unavailable(self._freshness):
                async with asyncio.timeout(timeout_s + 1.0):
                    conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                                 connect_timeout=max(1, round(timeout_s)))
                    async with conn:
                        await conn.execute("SELECT 1")
        except TimeoutError as exc:
            raise DatabaseUnavailable(f"the database did not answer within {timeout_s:.0f} s") from exc

    async def aclose(self) -> None:
        await self.read_pool.close()
        await self.write_pool.close()
        await self.engine.dispose()
