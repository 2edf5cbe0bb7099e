"""In-process rate-limit stores: the pure algorithms plus state in dicts.

Thread- and task-safe: each store has its own lock, held only for the few dict
operations of one decision (never across a wait or any I/O). Bounded: a store
holds at most ``max_keys`` keys per window; a new key beyond that is refused
(:class:`StoreFull`) and the limiter applies its failure policy, so a live key
is never evicted and handed its quota back.

Idle keys cost nothing and are dropped when their windows end, without per-key
timers:

- fixed and sliding windows are aligned to the clock, so a whole dict of counts
  is dropped when its window is over;
- the log and bucket states live in two generations of dicts (current and
  previous). A key touched in the previous generation moves to the current one.
  Rotating every ``generation`` seconds (the time after which an untouched key's
  state is the same as no state: a full bucket, an empty log) and dropping the
  old previous generation therefore loses nothing.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, Protocol

from scalekit.ratelimit import _algorithms as alg
from scalekit.ratelimit._algorithms import Algorithm
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._metrics import StoreCounters
from scalekit.ratelimit._policy import Policy

__all__ = ["MemoryRateStore", "StoreFull"]

_new_decision = tuple.__new__


class HitFn(Protocol):
    def __call__(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision: ...


class StoreFull(Exception):
    """A new key would exceed ``max_keys``."""

    def __init__(self, rate_index: int) -> None:
        self.rate_index = rate_index


class _Generations:
    """Two generations of dicts; see the module docstring."""

    __slots__ = ("cur", "length", "prev", "start")

    def __init__(self, length: float) -> None:
        self.cur: dict[str, Any] = {}
        self.prev: dict[str, Any] = {}
        self.start = -math.inf
        self.length = length

    def rotate(self, now: float) -> None:
        if now - self.start >= self.length:
            if now - self.start >= 2 * self.length:
                self.prev = {}
            else:
                self.prev = self.cur
            self.cur = {}
            self.start = now

    def get(self, key: str) -> Any:
        v = self.cur.get(key)
        if v is None and self.prev:
            v = self.prev.pop(key, None)
            if v is not None:
                self.cur[key] = v
        return v

    def size(self) -> int:
        return len(self.cur) + len(self.prev)

    def pop(self, key: str) -> None:
        self.cur.pop(key, None)
        self.prev.pop(key, None)


class MemoryRateStore:
    """One policy's state for one algorithm, in this process."""

    local = True

    def __init__(
        self,
        algorithm: Algorithm,
        policy: Policy,
        *,
        now: Callable[[], float],
        max_keys: int,
        counters: StoreCounters | None = None,
    ) -> None:
        """``counters``: where decisions are counted (``None``: unexported counters)."""
        self.algorithm = algorithm
        self.policy = policy
        self.max_keys = max_keys
        self._now = now
        self._lock = threading.Lock()
        self._rates = [(r.limit, r.period, r.capacity) for r in policy.rates]
        self._limits = [(r.limit, r.period) for r in policy.rates]
        self._name = policy.name
        # fixed/sliding windows: per rate [window index, current counts, previous counts]
        self._windows: list[list[Any]] = [[None, {}, {}] for _ in policy.rates]
        # log/bucket: per rate generations
        if algorithm == "sliding_log":
            self._gens = [_Generations(r.period) for r in policy.rates]
        else:
            self._gens = [_Generations(r.capacity * r.period / r.limit) for r in policy.rates]
        self._bucket_fn = alg.gcra  # token_bucket is the same algorithm (see alg.gcra)
        # The bucket states are times relative to this epoch: the TAT's float keeps
        # sub-microsecond emission intervals near 0, not near 1.7e9 (Unix time, a test
        # clock), where one unit at 10**7/second would round away.
        self._epoch = now() if algorithm in ("gcra", "token_bucket") else 0.0
        self._decide: Callable[[str, int, bool], Decision] = {
            "fixed_window": self._fixed_window,
            "sliding_window": self._sliding_window,
            "sliding_log": self._sliding_log,
            "token_bucket": self._bucket,
            "gcra": self._bucket,
        }[algorithm]
        if len(policy.rates) == 1 and algorithm in ("gcra", "token_bucket"):
            self._decide = self._bucket_single
        self.counters = counters or StoreCounters(None, "", algorithm, "")
        self._allowed = self.counters.allowed.inc
        self._denied = self.counters.denied.inc

    # -- public ------------------------------------------------------------
    def decide(self, key: str, cost: int, commit: bool) -> Decision:
        """Hit (``commit=True``) or peek; raises :class:`StoreFull`."""
        with self._lock:
            d = self._decide(key, cost, commit)
            if d[0]:
                self._allowed()
            else:
                self._denied()
            return d

    def refund(self, key: str, cost: int) -> None:
        """Give back up to ``cost`` of what ``key`` spent, in every window (see
        the reference page: what a refund means for each algorithm)."""
        self.counters.refunds.inc()
        with self._lock:
            now = self._now()
            algorithm = self.algorithm
            for i, (limit, period, _cap) in enumerate(self._rates):
                if algorithm in ("fixed_window", "sliding_window"):
                    w = self._windows[i]
                    if w[0] != math.floor(now / period):
                        continue  # the window holding the hit is over: nothing to give back
                    left = w[1].get(key, 0) - cost
                    if left > 0:
                        w[1][key] = left
                    else:
                        w[1].pop(key, None)
                elif algorithm == "sliding_log":
                    g = self._gens[i]
                    g.rotate(now)
                    st = g.get(key)
                    if st is not None:
                        alg.sliding_log_refund(st, now, period, cost)
                else:
                    g = self._gens[i]
                    t = now - self._epoch
                    g.rotate(t)
                    new = alg.gcra_refund(g.get(key), t, limit, period, cost)
                    if new is None:
                        g.pop(key)
                    else:
                        g.cur[key] = new

    def reset(self, key: str) -> None:
        with self._lock:
            for w in self._windows:
                w[1].pop(key, None)
                w[2].pop(key, None)
            for g in self._gens:
                g.pop(key)

    def key_count(self) -> int:
        """Keys currently held (the largest window's count)."""
        with self._lock:
            if self.algorithm in ("fixed_window", "sliding_window"):
                return max(len(w[1]) + len(w[2]) for w in self._windows)
            return max(g.size() for g in self._gens)

    # -- algorithms (called with the lock held) -----------------------------
    def _full(self, i: int) -> None:
        self.counters.refused_full.inc()
        raise StoreFull(i)

    def _fixed_window(self, key: str, cost: int, commit: bool) -> Decision:
        now = self._now()
        results = []
        for i, (limit, period, _cap) in enumerate(self._rates):
            w = self._windows[i]
            idx = math.floor(now / period)
            if w[0] != idx:
                w[0] = idx
                w[1] = {}
            count = w[1].get(key, 0)
            if not count and commit and len(w[1]) >= self.max_keys:
                self._full(i)
            results.append(alg.fixed_window(count, now, limit, period, cost, commit))
        if commit and all(r[0] for r in results):
            for w, r in zip(self._windows, results, strict=True):
                w[1][key] = r[4]
        return alg.combine(results, self._limits, self._name)

    def _sliding_window(self, key: str, cost: int, commit: bool) -> Decision:
        now = self._now()
        results = []
        for i, (limit, period, _cap) in enumerate(self._rates):
            w = self._windows[i]
            idx = math.floor(now / period)
            if w[0] != idx:
                w[2] = w[1] if w[0] == idx - 1 else {}
                w[1] = {}
                w[0] = idx
            cur = w[1].get(key, 0)
            if not cur and commit and len(w[1]) >= self.max_keys:
                self._full(i)
            prev = w[2].get(key, 0)
            results.append(alg.sliding_window(prev, cur, now, limit, period, cost, commit))
        if commit and all(r[0] for r in results):
            for w, r in zip(self._windows, results, strict=True):
                w[1][key] = r[4]
        return alg.combine(results, self._limits, self._name)

    def _sliding_log(self, key: str, cost: int, commit: bool) -> Decision:
        now = self._now()
        results = []
        states = []
        for i, (limit, period, _cap) in enumerate(self._rates):
            g = self._gens[i]
            g.rotate(now)
            st = g.get(key)
            if st is None:
                if commit and g.size() >= self.max_keys:
                    self._full(i)
                st = [0]
            states.append(st)
            results.append(alg.sliding_log(st, now, limit, period, cost, commit))
        if commit and all(r[0] for r in results):
            for g, st, r in zip(self._gens, states, results, strict=True):
                st[0] = r[4]
                st += (now, cost)
                g.cur[key] = st
        return alg.combine(results, self._limits, self._name)

    def _bucket(self, key: str, cost: int, commit: bool) -> Decision:
        # token_bucket and gcra: one float per key and window (self._bucket_fn's state)
        now = self._now() - self._epoch
        results = []
        for i, (limit, period, cap) in enumerate(self._rates):
            g = self._gens[i]
            g.rotate(now)
            st = g.get(key)
            if st is None and commit and g.size() >= self.max_keys:
                self._full(i)
            results.append(self._bucket_fn(st, now, limit, period, cap, cost, commit))
        if commit and all(r[0] for r in results):
            for g, r in zip(self._gens, results, strict=True):
                g.cur[key] = r[4]
        return alg.combine(results, self._limits, self._name)

    def _bucket_single(self, key: str, cost: int, commit: bool) -> Decision:
        # One window without the per-window lists; the arithmetic is alg.gcra's
        # (token_bucket is the same algorithm).
        now = self._now() - self._epoch
        g = self._gens[0]
        if now - g.start >= g.length:
            g.rotate(now)
        cur = g.cur
        st = cur.get(key)
        if st is None:
            if g.prev:
                st = g.prev.pop(key, None)
            if st is None and commit and len(cur) + len(g.prev) >= self.max_keys:
                self._full(0)
        limit, period, cap = self._rates[0]
        ok, remaining, reset, retry, new = self._bucket_fn(
            st, now, limit, period, cap, cost, commit
        )
        if new is not None:
            cur[key] = new
        return _new_decision(Decision, (ok, limit, remaining, reset, retry, self._name, period))

    # -- fast paths ----------------------------------------------------------
    def fast_hit(self, slow: HitFn) -> HitFn | None:
        """A specialised ``hit`` for one window, or ``None`` if there is none.

        The hot path of the commonest configuration (one window, memory, allowed)
        runs in one Python frame: validation, lock, clock, dict and arithmetic
        inlined. Everything else -- bad arguments, tiers, a denial, a full store
        -- goes through ``slow`` (the generic path and the functions of
        :mod:`~scalekit.ratelimit._algorithms`), so a denial's numbers have one
        source. The inlined allow-path arithmetic is the same as the pure
        function's; tests/contract/test_fast_path.py checks the two agree
        decision by decision.
        """
        if len(self._rates) != 1:
            return None
        maker = {
            "gcra": self._fast_gcra,
            "token_bucket": self._fast_gcra,
            "fixed_window": self._fast_fixed_window,
            "sliding_window": self._fast_sliding_window,
        }.get(self.algorithm)
        return maker(slow) if maker is not None else None

    # Each fast function: arguments the fast path cannot take (a tier, a bad key or
    # cost, a key in the previous generation, a full store) go to ``slow`` BEFORE the
    # lock is taken; a denial is computed by the pure function under the lock.

    def _fast_gcra(self, slow: HitFn) -> HitFn:
        acquire, release = self._lock.acquire, self._lock.release
        now_fn, g, max_keys = self._now, self._gens[0], self.max_keys
        allowed, denied = self._allowed, self._denied
        limit, period, cap = self._rates[0]
        interval = period / limit
        tolerance = cap * interval
        slack = tolerance + alg.bucket_slack(interval)
        name, new, eps, gcra = self._name, _new_decision, alg.EPS, alg.gcra
        epoch = self._epoch

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
                if tat is None:
                    prev = g.prev
                    if prev:
                        tat = prev.pop(key, None)
                    if tat is not None:
                        cur[key] = tat  # touched: it moves to the current generation
                    else:
                        full = len(cur) + len(prev) >= max_keys  # decided by the slow path
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

    def _fast_fixed_window(self, slow: HitFn) -> HitFn:
        acquire, release = self._lock.acquire, self._lock.release
        now_fn, w, max_keys = self._now, self._windows[0], self.max_keys
        allowed, denied = self._allowed, self._denied
        limit, period, _ = self._rates[0]
        name, new, floor, fixed = self._name, _new_decision, math.floor, alg.fixed_window

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
                    w[0] = idx
                    w[1] = {}
                counts = w[1]
                count = counts.get(key, 0)
                if count or len(counts) < max_keys:
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

    def _fast_sliding_window(self, slow: HitFn) -> HitFn:
        acquire, release = self._lock.acquire, self._lock.release
        now_fn, w, max_keys = self._now, self._windows[0], self.max_keys
        allowed, denied = self._allowed, self._denied
        limit, period, _ = self._rates[0]
        name, new, floor, sliding = self._name, _new_decision, math.floor, alg.sliding_window
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
                    w[2] = w[1] if w[0] == idx - 1 else {}
                    w[1] = {}
                    w[0] = idx
                counts = w[1]
                cur = counts.get(key, 0)
                if cur or len(counts) < max_keys:
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
