"""Pure rate-limit algorithms: state and ``now`` in, a decision out. No I/O, no locks.

Each function decides for ONE window (a ``limit`` per ``period``) and returns a
:data:`WindowResult`::

    (allowed, remaining, reset_after, retry_after, new_state)

- ``remaining``/``reset_after`` describe the window after the hit when it is
  allowed and ``commit`` is true, and the window as it is otherwise;
- ``retry_after`` is 0.0 when allowed, else seconds until the same cost fits,
  ``inf`` when it never can (cost above the limit or burst);
- ``new_state`` is what the store saves if (and only if) every window of the
  policy allowed the hit: that is how several windows are all-or-nothing.

The Redis Lua scripts in ``lua/`` implement the same arithmetic on server time;
the contract suite runs both against the same expectations, and the property tests
check these functions against textbook reference models.

Conventions: windows are half-open. An event at ``t`` counts in ``[t, t + period)``;
fixed windows are aligned to multiples of ``period`` on the clock's scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

from scalekit.ratelimit._decision import Decision

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "bucket_slack",
    "WindowResult",
    "combine",
    "fixed_window",
    "gcra",
    "gcra_refund",
    "sliding_log",
    "sliding_log_refund",
    "sliding_window",
]

Algorithm: TypeAlias = Literal[
    "fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"
]
ALGORITHMS: tuple[Algorithm, ...] = (
    "fixed_window",
    "sliding_window",
    "sliding_log",
    "token_bucket",
    "gcra",
)

WindowResult: TypeAlias = tuple[bool, int, float, float, Any]

INF = math.inf
# Float slack for "is this within the limit": decisions are on integer units, so a
# remainder of 2.9999999999 is 3. Small enough to never allow an extra unit.
EPS = 1e-9
# Decisions are exact to one microsecond, the resolution of Redis TIME. Absolute
# times near 1.7e9 s (Unix time) carry float rounding of ~2.4e-7 s, so without
# this slack "now + period - now" may exceed "period" and a hit that fits exactly
# would be refused with retry_after ~0. Both backends use the same slack.
TIME_EPS = 1e-6


def bucket_slack(interval: float) -> float:
    """The time slack of the bucket algorithms: :data:`TIME_EPS`, but less than half an
    emission interval, so that at rates above 500,000/second the slack never lets a
    whole extra unit through at one instant."""
    return TIME_EPS if interval > 2 * TIME_EPS else interval / 2


def _floor(x: float) -> int:
    return max(0, math.floor(x + EPS))


def fixed_window(
    count: int, now: float, limit: int, period: float, cost: int, commit: bool = True
) -> WindowResult:
    """Fixed window: at most ``limit`` per aligned window ``[k*period, (k+1)*period)``.

    ``count`` is what the window containing ``now`` holds already.
    """
    reset_after = (math.floor(now / period) + 1) * period - now
    new = count + cost
    if new <= limit:
        if commit:
            return True, limit - new, reset_after, 0.0, new
        return True, limit - count, reset_after if count else 0.0, 0.0, count
    retry = reset_after if cost <= limit else INF
    return False, max(0, limit - count), reset_after, retry, count


def sliding_window(
    prev: int,
    cur: int,
    now: float,
    limit: int,
    period: float,
    cost: int,
    commit: bool = True,
) -> WindowResult:
    """Sliding window counter: the previous aligned window's count, weighted by how
    much of it still overlaps ``(now - period, now]``, plus the current count.

    ``new_state`` is the new current-window count (``prev`` does not change).
    """
    start = math.floor(now / period) * period
    elapsed = now - start
    weight = max(0.0, 1.0 - (elapsed + TIME_EPS) / period)
    used = prev * weight + cur
    if used + cost <= limit + EPS:
        if commit:
            after = used + cost
            reset = 2 * period - elapsed if cur + cost else period - elapsed
            return True, _floor(limit - after), reset, 0.0, cur + cost
        reset = (2 * period - elapsed) if cur else ((period - elapsed) if prev else 0.0)
        return True, _floor(limit - used), reset, 0.0, cur
    reset = (2 * period - elapsed) if cur else (period - elapsed)
    if cost > limit:
        return False, _floor(limit - used), reset, INF, cur
    if cur + cost <= limit:
        # Within this window, once enough of the previous one has slid out.
        needed = period * (1.0 - (limit - cur - cost) / prev)
        retry = needed - elapsed
    else:
        # Only after this window ends, when it becomes the weighted "previous".
        retry = (period - elapsed) + period * (1.0 - (limit - cost) / cur)
    return False, _floor(limit - used), reset, max(retry, 0.0), cur


def sliding_log(
    state: list[Any],
    now: float,
    limit: int,
    period: float,
    cost: int,
    commit: bool = True,
) -> WindowResult:
    """Sliding log (exact): every hit is remembered for ``period``.

    ``state`` is a flat list ``[total, t1, c1, t2, c2, ...]``: the hits' times and
    costs, oldest first, and their sum (flat, because a list of tuples or a deque
    per key costs several times the memory). Expired hits are pruned from it in
    place (that changes no outcome). ``new_state`` is the total after the hit; on
    commit the caller appends ``now, cost``.
    """
    total: int = state[0]
    horizon = now - period + TIME_EPS
    n = len(state)
    if n > 1 and state[1] <= horizon:
        i = 1
        while i < n and state[i] <= horizon:
            total -= state[i + 1]
            i += 2
        del state[1:i]
        state[0] = total
    if total + cost <= limit:
        if commit:
            return True, limit - total - cost, period, 0.0, total + cost
        reset = state[-2] + period - now if len(state) > 1 else 0.0
        return True, limit - total, reset, 0.0, total
    reset = state[-2] + period - now if len(state) > 1 else 0.0
    if cost > limit:
        return False, max(0, limit - total), reset, INF, total
    freed = 0
    retry = reset
    for i in range(1, len(state), 2):
        freed += state[i + 1]
        if total - freed + cost <= limit:
            retry = state[i] + period - now
            break
    return False, max(0, limit - total), reset, retry, total


def gcra(
    tat: float | None,
    now: float,
    limit: int,
    period: float,
    burst: int,
    cost: int,
    commit: bool = True,
) -> WindowResult:
    """GCRA (generic cell rate algorithm), the virtual-scheduling form; also the
    ``token_bucket`` algorithm.

    Emission interval ``T = period / limit``; up to ``burst`` units at once. The
    state is the theoretical arrival time ``tat`` (``None``: idle).

    A token bucket of capacity ``burst`` refilled continuously at ``limit/period``
    makes exactly the same decisions: its tokens are
    ``burst - (tat - now) / T``, so ``remaining`` is the whole tokens left,
    ``reset_after`` the time until the bucket is full and ``retry_after`` the time
    until ``cost`` tokens are there. scalekit implements the one algorithm once and
    offers both names; tests/property checks it against a textbook token bucket.
    """
    interval = period / limit
    tolerance = burst * interval
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    slack = tolerance + bucket_slack(interval)
    if cost <= burst and new_tat - now <= slack:
        if commit:
            return (
                True,
                min(burst - cost, _floor((slack - (new_tat - now)) / interval)),
                new_tat - now,
                0.0,
                new_tat,
            )
        return True, min(burst, _floor((slack - (base - now)) / interval)), base - now, 0.0, tat
    retry = new_tat - tolerance - now if cost <= burst else INF
    return False, min(burst, _floor((slack - (base - now)) / interval)), base - now, retry, tat


def gcra_refund(
    tat: float | None, now: float, limit: int, period: float, cost: int
) -> float | None:
    """Give ``cost`` back to a bucket: the TAT moves back by ``cost`` emission
    intervals, never before ``now`` (``None``: idle, a full bucket). A refund of a hit
    just spent restores the TAT the hit started from, so the next decision is the one
    the bucket would have made without that hit."""
    if tat is None or tat <= now:
        return None
    new = tat - cost * (period / limit)
    return new if new > now else None


def sliding_log_refund(state: list[Any], now: float, period: float, cost: int) -> None:
    """Give ``cost`` back to a log (in place): the newest hits still in the window are
    removed, newest first, the last one only in part if it cost more than what is
    left to give back. Expired hits are never touched, so a refund never gives back
    more than the window holds, and a refund of the last hit restores the log it
    started from."""
    horizon = now - period + TIME_EPS
    total: int = state[0]
    i = 1
    while i < len(state) and state[i] <= horizon:
        total -= state[i + 1]
        i += 2
    del state[1:i]
    while cost > 0 and len(state) > 1:
        last = state[-1]
        if last > cost:
            state[-1] = last - cost
            total -= cost
            break
        total -= last
        cost -= last
        del state[-2:]
    state[0] = total


def combine(
    results: Sequence[tuple[Any, ...]],
    limits: Sequence[tuple[int, float]],
    policy: str,
) -> Decision:
    """Fold per-window results into one :class:`Decision`.

    Allowed: every window allowed; the window with the fewest ``remaining`` is
    reported. Denied: the denying window with the longest ``retry_after`` is
    reported, and ``retry_after`` is that (the earliest time every window fits).
    """
    best = -1
    allowed = True
    for i, r in enumerate(results):
        if not r[0]:
            if allowed or r[3] > results[best][3]:
                best = i
            allowed = False
        elif allowed and (best < 0 or r[1] < results[best][1]):
            best = i
    r = results[best]
    limit, period = limits[best]
    return Decision(allowed, limit, r[1], r[2], 0.0 if allowed else r[3], policy, period)
