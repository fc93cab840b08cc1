"""Retention: the events of runs that finished long enough ago are pruned in small batches.

Each batch is one transaction that takes a transaction-scoped advisory lock, so at most one process
prunes at a time however many run the loop; a process that does not get it skips the pass. The
run row is locked too, so a ResumeRun of that run waits, and only terminal runs are chosen: an
active run is never pruned. Its last event (the terminal state change) is always kept, so a reader
that resumes from `compacted_seq` still learns how the run ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from lace_engine.domain import TERMINAL_RUN_STATES
from lace_engine.storage.database import Database, driver_connection

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the pruner ("LACEPRUN" read as a signed 64-bit integer).
PRUNER_LOCK_KEY = int.from_bytes(b"LACEPRUN", "big", signed=True)
BATCH_EVENTS = 5000

_TERMINAL = [s.value for s in TERMINAL_RUN_STATES]
# One run's next slice: up to `batch` events after its compacted_seq, never its last event.
_PRUNE_SLICE = """
WITH victim AS (
  SELECT id, compacted_seq AS done, LEAST(head_seq - 1, compacted_seq + %(batch)s) AS upto FROM runs
  WHERE state = ANY(%(terminal)s) AND end_time < %(cutoff)s AND compacted_seq < head_seq - 1
  ORDER BY end_time LIMIT 1 FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM run_events e USING victim v WHERE e.run_id = v.id AND e.seq > v.done AND e.seq <= v.upto
  RETURNING 1
)
UPDATE runs r SET compacted_seq = v.upto FROM victim v WHERE r.id = v.id
RETURNING (SELECT count(*) FROM gone)
"""


async def prune_batch(db: Database, cutoff: datetime, batch: int = BATCH_EVENTS) -> int | None:
    """Prunes one slice of one run that ended before `cutoff`: the events deleted, 0 when nothing is
    left to prune, None when another process holds the pruner's lock."""
    async with db.transaction() as tx:
        conn = await driver_connection(tx.conn)
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNER_LOCK_KEY,))
        locked = await cur.fetchone()
        if not (locked and locked[0]):
            return None
        cur = await conn.execute(_PRUNE_SLICE, {"batch": batch, "terminal": _TERMINAL, "cutoff": cutoff})
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def prune(db: Database, cutoff: datetime, *, batch: int = BATCH_EVENTS, pause_s: float = 0.05) -> int:
    """Prunes every finished run that ended before `cutoff`, slice by slice; the events deleted."""
    total = 0
    while True:
        deleted = await prune_batch(db, cutoff, batch)
        if not deleted:  # done, or another process is at it
            return total
        total += deleted
        await asyncio.sleep(pause_s)  # leave room for everyone else between slices


class RetentionPruner:
    """Runs `prune` every `interval_s` for events older than `days` (LACE_RETENTION_DAYS)."""

    def __init__(self, db: Database, days: float, interval_s: float = 3600.0):
        self.db = db
        self.days = days
        self.interval_s = interval_s
        self.pruned_total = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="lace-retention")

    async def _loop(self) -> None:
        while True:
            try:
                pruned = await prune(self.db, datetime.now(UTC) - timedelta(days=self.days))
                if pruned:
                    self.pruned_total += pruned
                    log.info("retention: pruned %d events of runs that ended over %g days ago", pruned, self.days)
            except Exception:
                log.exception("retention: a pass failed; trying again next time")
            await asyncio.sleep(self.interval_s)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
