"""From a plan to loads, headroom against each limit, and the user count at which each
limit breaks (a sweep: every load grows with the number of users, so a binary search
over user counts finds the first that crosses a threshold)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scalekit.capacity._plan import MONTH_SECONDS, Plan

__all__ = ["Load", "LimitUse", "Projection", "project"]

Status = Literal["ok", "warning", "critical", "over"]
_MAX_USERS = 10**9


@dataclass(frozen=True, slots=True)
class SampledLoad:
    name: str
    candidates_per_month: float
    calls_per_month_low: float
    calls_per_month_high: float


@dataclass(frozen=True, slots=True)
class Load:
    """What the plan's users ask of the system at the peak (per second) and per month."""

    users: int
    concurrent_users: float
    requests_per_second: float
    requests_per_second_by_tier: dict[str, float]
    instances: int
    db_queries_per_second: float
    db_connections: float
    monthly_function_invocations: float
    db_size_bytes: float
    realtime_connections: float
    redis_memory_bytes: float
    sampled: tuple[SampledLoad, ...] = ()
    job_runs_per_month: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LimitUse:
    """One limit: the load against it, the share used, and where the sweep says it
    crosses the warning threshold and breaks (reaches 100 %); ``None`` when it never
    does below a billion users."""

    name: str
    unit: str
    load: float
    limit: float
    used: float
    headroom: float
    status: Status
    warns_at_users: int | None
    breaks_at_users: int | None


@dataclass(frozen=True, slots=True)
class Projection:
    """What a plan's load does to its limits at ``users`` users, and where it breaks first."""

    plan: str
    users: int
    warning: float
    critical: float
    load: Load
    limits: tuple[LimitUse, ...]
    first_to_break: str | None
    first_break_users: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def limit(self, name: str) -> LimitUse:
        """The :class:`LimitUse` named ``name`` (``KeyError`` if the plan has no such limit)."""
        for u in self.limits:
            if u.name == name:
                return u
        raise KeyError(name)


def load_for(plan: Plan, users: int) -> Load:
    concurrent = users * plan.peak_concurrency
    by_tier = {t.name: concurrent * t.share * t.requests_per_minute / 60 for t in plan.tiers}
    rps = sum(by_tier.values())
    instances = 0
    connections = 0.0
    if plan.app is not None:
        needed = math.ceil(rps / plan.app.requests_per_second_per_instance - 1e-9)
        instances = max(plan.app.min_instances, needed)
        connections = float(instances * plan.app.db_connections_per_instance)
    connections += sum(j.db_connections for j in plan.jobs)
    hit = sum(c.share_of_requests * c.hit_ratio for c in plan.caches)
    db_qps = rps * plan.database.queries_per_request * (1 - hit)
    runs = {j.name: MONTH_SECONDS / j.every for j in plan.jobs}
    functions = users * plan.functions.invocations_per_user_per_month + sum(
        runs[j.name]
        * (j.function_invocations_per_run + j.function_invocations_per_run_per_user * users)
        for j in plan.jobs
    )
    sampled = tuple(
        SampledLoad(
            s.name,
            users * s.calls_per_user_per_month,
            users * s.calls_per_user_per_month * s.rate[0],
            users * s.calls_per_user_per_month * s.rate[1],
        )
        for s in plan.sampled
    )
    return Load(
        users=users,
        concurrent_users=concurrent,
        requests_per_second=rps,
        requests_per_second_by_tier=by_tier,
        instances=instances,
        db_queries_per_second=db_qps,
        db_connections=connections,
        monthly_function_invocations=functions,
        db_size_bytes=plan.database.base_size + users * plan.database.bytes_per_user,
        realtime_connections=concurrent * plan.realtime.connections_per_active_user,
        redis_memory_bytes=plan.redis.base_memory
        + users * plan.redis.bytes_per_user
        + concurrent * plan.redis.bytes_per_active_user,
        sampled=sampled,
        job_runs_per_month=runs,
    )


def _limits(plan: Plan, load: Load) -> list[tuple[str, str, float, float]]:
    """``(name, unit, load, limit)`` for every limit the plan states."""
    lim = plan.limits
    out: list[tuple[str, str, float, float]] = []
    pairs: list[tuple[str, str, float, float | None]] = [
        ("db_connections", "connections", load.db_connections, lim.db_connections),
        ("monthly_function_invocations", "invocations/month",
         load.monthly_function_invocations, lim.monthly_function_invocations),
        ("db_size", "bytes", load.db_size_bytes, lim.db_size),
        ("realtime_connections", "connections", load.realtime_connections,
         lim.realtime_connections),
        ("redis_memory", "bytes", load.redis_memory_bytes, lim.redis_memory),
    ]  # fmt: skip
    for s, sl in zip(plan.sampled, load.sampled, strict=True):
        pairs.append((f"sampled:{s.name}", "calls/month", sl.calls_per_month_high, s.monthly_limit))
    for name, unit, value, limit in pairs:
        if limit is not None:
            out.append((name, unit, value, float(limit)))
    return out


def _first_users(plan: Plan, name: str, share: float) -> int | None:
    """The smallest user count whose load on ``name`` reaches ``share`` of its limit."""

    def crosses(users: int) -> bool:
        for n, _, value, limit in _limits(plan, load_for(plan, users)):
            if n == name:
                return value >= share * limit
        return False

    if crosses(1):
        return 1
    if not crosses(_MAX_USERS):
        return None
    lo, hi = 1, _MAX_USERS  # crosses(lo) is False, crosses(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if crosses(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _status(used: float, warning: float, critical: float) -> Status:
    if used >= 1:
        return "over"
    if used >= critical:
        return "critical"
    return "warning" if used >= warning else "ok"


def project(plan: Plan, *, users: int | None = None) -> Projection:
    """Project ``plan`` at its own user count (or ``users``)."""
    n = plan.users if users is None else users
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_USERS:
        raise ValueError(f"users must be an int in 1..{_MAX_USERS}, got {n!r}")
    load = load_for(plan, n)
    w, c = plan.thresholds.warning, plan.thresholds.critical
    uses = []
    for name, unit, value, limit in _limits(plan, load):
        used = value / limit
        uses.append(
            LimitUse(
                name=name,
                unit=unit,
                load=value,
                limit=limit,
                used=used,
                headroom=1 - used,
                status=_status(used, w, c),
                warns_at_users=_first_users(plan, name, w),
                breaks_at_users=_first_users(plan, name, 1.0),
            )
        )
    breaking = [u for u in uses if u.breaks_at_users is not None]
    first = min(breaking, key=lambda u: (u.breaks_at_users or 0, u.name), default=None)
    return Projection(
        plan=plan.name,
        users=n,
        warning=w,
        critical=c,
        load=load,
        limits=tuple(uses),
        first_to_break=None if first is None else first.name,
        first_break_users=None if first is None else first.breaks_at_users,
    )
