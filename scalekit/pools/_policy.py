"""Pure decisions of the pools: no I/O, no clock reads (``now`` is passed in).

* which driver options a declared pooler mode needs;
* when a connection expires (maximum lifetime with jitter) and when it needs a
  ping before use (idle for longer than ``pre_ping_after``);
* whether ``processes x max_size`` fits the server's ``max_connections``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = [
    "CapacityReport",
    "POOLER_MODES",
    "PoolerMode",
    "capacity_report",
    "expires_at",
    "needs_ping",
    "pooler_options",
]

PoolerMode: TypeAlias = Literal["direct", "pgbouncer-transaction", "pgbouncer-session", "supavisor"]
POOLER_MODES: tuple[PoolerMode, ...] = (
    "direct",
    "pgbouncer-transaction",
    "pgbouncer-session",
    "supavisor",
)
# Modes where consecutive transactions of one client connection may run on
# different server connections: named prepared statements do not survive there.
TRANSACTION_POOLING: frozenset[str] = frozenset({"pgbouncer-transaction", "supavisor"})


def pooler_options(mode: PoolerMode) -> dict[str, Any]:
    """asyncpg ``connect()`` options that a pooler mode requires.

    In transaction pooling (PgBouncer ``pool_mode=transaction``, Supavisor's
    transaction port) a named prepared statement lives on one server connection
    while the next query may run on another, so asyncpg's statement cache must be
    off: it then uses the unnamed statement, which lives within one query. Session
    pooling and direct connections keep the cache.
    """
    if mode in TRANSACTION_POOLING:
        return {"statement_cache_size": 0, "max_cached_statement_lifetime": 0}
    return {}


def expires_at(born: float, lifetime: float | None, jitter: float, rng: random.Random) -> float:
    """When a connection born at ``born`` must be replaced; ``math.inf`` for never.

    The lifetime is shortened by a random fraction in ``[0, jitter]`` so that the
    connections opened together (at start-up) are not all replaced at once.
    """
    if lifetime is None:
        return math.inf
    return born + lifetime * (1.0 - jitter * rng.random())


def needs_ping(now: float, last_used: float, pre_ping_after: float | None) -> bool:
    """Whether a connection idle since ``last_used`` is pinged before it is handed out."""
    return pre_ping_after is not None and now - last_used >= pre_ping_after


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityReport:
    """Outcome of the start-up check ``processes x max_size <= available``.

    ``available`` is ``max_connections`` minus the server's own reserved slots
    (``superuser_reserved_connections``, and ``reserved_connections`` on
    PostgreSQL >= 16) minus the caller's ``reserve`` (other clients: migrations,
    consoles, replicas, monitoring).
    """

    processes: int
    max_size: int
    max_connections: int
    server_reserved: int
    reserve: int

    @property
    def demand(self) -> int:
        return self.processes * self.max_size

    @property
    def available(self) -> int:
        return self.max_connections - self.server_reserved - self.reserve

    @property
    def ok(self) -> bool:
        return self.demand <= self.available

    @property
    def message(self) -> str:
        verdict = "fits" if self.ok else "does NOT fit"
        text = (
            f"{self.processes} process(es) x max_size {self.max_size} = {self.demand} "
            f"connection(s) {verdict} in max_connections {self.max_connections} - "
            f"server-reserved {self.server_reserved} - reserve {self.reserve} = {self.available}"
        )
        if not self.ok:
            per_process = max(self.available // max(self.processes, 1), 0)
            text += (
                f"; lower max_size to <= {per_process}, run fewer processes, put a "
                "transaction pooler (PgBouncer, Supavisor) in front, or raise max_connections"
            )
        return text


def capacity_report(
    *,
    processes: int,
    max_size: int,
    max_connections: int,
    server_reserved: int,
    reserve: int,
) -> CapacityReport:
    return CapacityReport(
        processes=processes,
        max_size=max_size,
        max_connections=max_connections,
        server_reserved=server_reserved,
        reserve=reserve,
    )
