"""Table maintenance jobs on PostgreSQL: retention, archival, partitions, a locked runner.

- :class:`Retention`: delete rows older than a cutoff in keyset-ordered batches, each
  its own short transaction, resumed from a checkpoint after a crash.
- :class:`Archival`: keep the newest N rows of every parent, move the rest to an
  archive table (one ``DELETE ... RETURNING`` / ``INSERT`` statement per batch) or
  flag them; restore a parent's rows.
- :class:`Partitions`: create range partitions ahead of time, roll expired ones up
  into an aggregate, detach and drop them, report rows stuck in the default partition.
- :func:`run_every` / :class:`Runner`: a job every interval under a PostgreSQL
  advisory lock, so one worker of a fleet runs it at a time; :meth:`Runner.stats`.

Jobs take a :class:`~scalekit.pools.PgPool`, an ``asyncpg.Pool`` or an
``asyncpg.Connection``; asyncpg itself is never imported here. Input a job cannot
handle safely is refused with :class:`~scalekit.errors.MaintenanceRefused` before a
row is touched.
"""

from __future__ import annotations

from scalekit.maintenance._archival import Archival
from scalekit.maintenance._db import JobResult
from scalekit.maintenance._partitions import PartitionReport, Partitions
from scalekit.maintenance._retention import Retention
from scalekit.maintenance._runner import MaintenanceStats, Runner, run_every

__all__ = [
    "Archival",
    "JobResult",
    "MaintenanceStats",
    "PartitionReport",
    "Partitions",
    "Retention",
    "Runner",
    "run_every",
]
