"""The rate limiter's one fast path: ``hit`` on a single-window in-memory store.

This module prefers speed over ease of maintenance. The commonest configuration
(one window, memory, the hit allowed) runs in one Python frame: argument check,
lock, clock, dict and the allow-path arithmetic of the pure functions ``gcra``
(also ``token_bucket``), ``fixed_window`` and ``sliding_window`` of
:mod:`scalekit.ratelimit._algorithms` written
out inline, bound to closure locals. That takes about half the CPU time of the
generic path (the limiter, then :class:`~scalekit.ratelimit._memory.MemoryRateStore`
calling the pure function: 0.66-0.89 us against 1.3-1.8 us per decision on the
benchmark machine), and it is a second copy of the allow-path arithmetic.

What keeps the copy honest:

- only the allow path is inlined. A denial is computed under the same lock by the
  pure function itself, and everything else -- a tier, a key or cost that needs
  checking, a full store -- goes to ``slow``, the generic path, before the lock
  is taken;
- window rotation and the generations are :mod:`scalekit.ratelimit._windows`'s,
  the ones the store uses;
- ``tests/contract/test_fast_path.py`` runs each function here next to the
  generic path, decision by decision, on sequences hypothesis generates (clock
  steps, costs, keys, peeks, refunds, resets, full stores). Change an algorithm
  in ``_algorithms.py`` and that test fails until the inline copy here follows.

There is no fast path for ``sliding_log`` (its state is a list walked per hit,
nothing to gain) nor for several windows (the all-or-nothing fold is the
generic path's).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, Protocol

from scalekit.ratelimit import _algorithms as alg
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._windows import Generations, rotate

__all__ = ["HitFn", "hit_function"]

_new_decision = tuple.__new__


class HitFn(Protocol):
    def __call__(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision: ...


def hit_function(
    algorithm: str,
    slow: HitFn,
    *,
    lock: threading.Lock,
    now: Callable[[], float],
    window: list[Any],
    generations: Generations,
    max_keys: int,
    allowed: Callable[[], object],
    denied: Callable[[], object],
    rate: tuple[int, float, int],
    name: str,
    epoch: float,
) -> HitFn | None:
    """The fast ``hit`` of one window of a memory store, or ``None`` if ``algorithm``
    has none. ``window`` (fixed and sliding windows) and ``generations`` (gcra,
    token_bucket; times relative to ``epoch``) are the store's own state for that
    window; ``rate`` is ``(limit, period, burst)``; ``allowed``/``denied`` count."""
    if algorithm in ("gcra", "token_bucket"):
        return _gcra(slow, lock, now, generations, max_keys, allowed, denied, rate, name, epoch)
    if algorithm == "fixed_window":
        return _fixed_window(slow, lock, now, window, max_keys, allowed, denied, rate, name)
    if algorithm == "sliding_window":
        return _sliding_window(slow, lock, now, window, max_keys, allowed, denied, rate, name)
    return None


# Each function: arguments the fast path cannot take (a tier, a bad key or cost, a
# full store) go to ``slow`` BEFORE the lock is taken or after it is released; a
# denial is computed by the pure function under the lock.


def _gcra(
    slow: HitFn,
    lock: threading.Lock,
    now_fn: Callable[[], float],
    g: Generations,
    max_keys: int,
    allowed: Callable[[], object],
    denied: Callable[[], object],
    rate: tuple[int, float, int],
    name: str,
    epoch: float,
) -> HitFn:
    acquire, release = lock.acquire, lock.release
    limit, period, cap = rate
    # alg.gcra's constants, computed once
    interval = period / limit
    tolerance = cap * interval
    slack = tolerance + alg.bucket_slack(interval)
    new, eps, gcra = _new_decision, alg.EPS, alg.gcra

    def hit(key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        if tier is not None or key.__class__ is not str or cost.__class__ is not int:
            return slow(key, cost, tier=tier)
        if cost < 1 or not key:
            return slow(key, cost)
        acquire()
        try:
            now = now_fn() - epoch
            if now - g.start >= g.length:
                g.rotate(now)
            cur = g.cur
            tat = cur.get(key)
            full = False
            if tat is None:  # Generations.get, inlined
                prev = g.prev
                if prev:
                    tat = prev.pop(key, None)
                if tat is not None:
                    cur[key] = tat  # touched: it moves to the current generation
                else:
                    full = len(cur) + len(prev) >= max_keys  # decided by the slow path
            # alg.gcra's allow path
            base = now if tat is None or tat < now else tat
            ahead = base + cost * interval - now
            if ahead <= slack and cost <= cap and not full:
                cur[key] = now + ahead
                allowed()
                left = int((slack - ahead) / interval + eps)
                return new(
                    Decision,
                    (True, limit, left if left <= cap - cost else cap - cost, ahead, 0.0, name,
                     period),
                )  # fmt: skip
            if not full:
                denied()
                _, remaining, reset, retry, _ = gcra(tat, now, limit, period, cap, cost)
                return new(Decision, (False, limit, remaining, reset, retry, name, period))
        finally:
            release()
        return slow(key, cost)

    return hit


def _fixed_window(
    slow: HitFn,
    lock: threading.Lock,
    now_fn: Callable[[], float],
    w: list[Any],
    max_keys: int,
    allowed: Callable[[], object],
    denied: Callable[[], object],
    rate: tuple[int, float, int],
    name: str,
) -> HitFn:
    acquire, release = lock.acquire, lock.release
    limit, period, _ = rate
    new, floor, fixed = _new_decision, math.floor, alg.fixed_window

    def hit(key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        if tier is not None or key.__class__ is not str or cost.__class__ is not int:
            return slow(key, cost, tier=tier)
        if cost < 1 or not key:
            return slow(key, cost)
        acquire()
        try:
            now = now_fn()
            idx = floor(now / period)
            if w[0] != idx:
                rotate(w, idx, False)
            counts = w[1]
            count = counts.get(key, 0)
            if count or len(counts) < max_keys:
                # alg.fixed_window's allow path
                if count + cost <= limit:
                    counts[key] = count + cost
                    allowed()
                    reset = (idx + 1) * period - now
                    return new(
                        Decision, (True, limit, limit - count - cost, reset, 0.0, name, period)
                    )
                denied()
                _, remaining, reset, retry, _ = fixed(count, now, limit, period, cost)
                return new(Decision, (False, limit, remaining, reset, retry, name, period))
        finally:
            release()
        return slow(key, cost)

    return hit


def _sliding_window(
    slow: HitFn,
    lock: threading.Lock,
    now_fn: Callable[[], float],
    w: list[Any],
    max_keys: int,
    allowed: Callable[[], object],
    denied: Callable[[], object],
    rate: tuple[int, float, int],
    name: str,
) -> HitFn:
    acquire, release = lock.acquire, lock.release
    limit, period, _ = rate
    new, floor, sliding = _new_decision, math.floor, alg.sliding_window
    bound, time_eps, eps = limit + alg.EPS, alg.TIME_EPS, alg.EPS

    def hit(key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        if tier is not None or key.__class__ is not str or cost.__class__ is not int:
            return slow(key, cost, tier=tier)
        if cost < 1 or not key:
            return slow(key, cost)
        acquire()
        try:
            now = now_fn()
            idx = floor(now / period)
            if w[0] != idx:
                rotate(w, idx, True)
            counts = w[1]
            cur = counts.get(key, 0)
            if cur or len(counts) < max_keys:
                # alg.sliding_window's allow path
                prev = w[2].get(key, 0) if w[2] else 0
                elapsed = now - idx * period
                weight = 1.0 - (elapsed + time_eps) / period
                used = (prev * weight if weight > 0.0 else 0.0) + cur + cost
                if used <= bound:
                    counts[key] = cur + cost
                    allowed()
                    left = int(limit - used + eps)
                    return new(
                        Decision,
                        (True, limit, left if left > 0 else 0, 2 * period - elapsed, 0.0,
                         name, period),
                    )  # fmt: skip
                denied()
                _, remaining, reset, retry, _ = sliding(prev, cur, now, limit, period, cost)
                return new(Decision, (False, limit, remaining, reset, retry, name, period))
        finally:
            release()
        return slow(key, cost)

    return hit
