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

The windows, generations and window rotation are :mod:`scalekit.ratelimit._windows`'s;
the single-window ``hit`` fast path is :mod:`scalekit.ratelimit._fast`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from scalekit.ratelimit import _algorithms as alg
from scalekit.ratelimit import _fast
from scalekit.ratelimit._algorithms import Algorithm, WindowResult
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._fast import HitFn as HitFn
from scalekit.ratelimit._metrics import StoreCounters
from scalekit.ratelimit._policy import Policy
from scalekit.ratelimit._windows import Generations, new_window, rotate

__all__ = ["MemoryRateStore", "StoreFull"]

_new_decision = tuple.__new__


class StoreFull(Exception):
    """A new key would exceed ``max_keys``."""

    def __init__(self, rate_index: int) -> None:
        self.rate_index = rate_index


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
        self._windows: list[list[Any]] = [new_window() for _ in policy.rates]
        # log/bucket: per rate generations
        if algorithm == "sliding_log":
            self._gens = [Generations(r.period) for r in policy.rates]
        else:
            self._gens = [Generations(r.capacity * r.period / r.limit) for r in policy.rates]
        # The bucket states are times relative to this epoch: the TAT's float keeps
        # sub-microsecond emission intervals near 0, not near 1.7e9 (Unix time, a test
        # clock), where one unit at 10**7/second would round away.
        self._epoch = now() if algorithm in ("gcra", "token_bucket") else 0.0
        self._sliding = algorithm == "sliding_window"
        self._indexes = range(len(policy.rates))
        # the generic path: every window's pure function, folded by alg.combine; for
        # one window (the commonest policy) the pure function's result is the decision
        one = len(policy.rates) == 1
        self._decide: Callable[[str, int, bool], Decision] = {
            "fixed_window": self._aligned_one if one else self._aligned,
            "sliding_window": self._aligned_one if one else self._aligned,
            "sliding_log": self._sliding_log,
            "token_bucket": self._bucket_one if one else self._bucket,
            "gcra": self._bucket_one if one else self._bucket,
        }[algorithm]
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

    def _aligned_at(self, i: int, key: str, now: float, cost: int, commit: bool) -> WindowResult:
        # fixed_window and sliding_window: counts per aligned window (see _windows)
        limit, period, _cap = self._rates[i]
        w = self._windows[i]
        idx = math.floor(now / period)
        if w[0] != idx:
            rotate(w, idx, self._sliding)
        cur = w[1].get(key, 0)
        if not cur and commit and len(w[1]) >= self.max_keys:
            self._full(i)
        if self._sliding:
            prev = w[2].get(key, 0)
            return alg.sliding_window(prev, cur, now, limit, period, cost, commit)
        return alg.fixed_window(cur, now, limit, period, cost, commit)

    def _aligned(self, key: str, cost: int, commit: bool) -> Decision:
        now = self._now()
        results = [self._aligned_at(i, key, now, cost, commit) for i in self._indexes]
        if commit and all(r[0] for r in results):
            for w, r in zip(self._windows, results, strict=True):
                w[1][key] = r[4]
        return alg.combine(results, self._limits, self._name)

    def _aligned_one(self, key: str, cost: int, commit: bool) -> Decision:
        ok, remaining, reset, retry, new = self._aligned_at(0, key, self._now(), cost, commit)
        if commit and ok:
            self._windows[0][1][key] = new
        return self._one(ok, remaining, reset, retry)

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

    def _bucket_at(self, i: int, key: str, now: float, cost: int, commit: bool) -> WindowResult:
        # token_bucket and gcra: one float per key and window (alg.gcra's state)
        limit, period, cap = self._rates[i]
        g = self._gens[i]
        if now - g.start >= g.length:
            g.rotate(now)
        st = g.cur.get(key)
        if st is None:
            st = g.get(key)  # from the previous generation, if it is there
            if st is None and commit and g.size() >= self.max_keys:
                self._full(i)
        return alg.gcra(st, now, limit, period, cap, cost, commit)

    def _bucket(self, key: str, cost: int, commit: bool) -> Decision:
        now = self._now() - self._epoch
        results = [self._bucket_at(i, key, now, cost, commit) for i in self._indexes]
        if commit and all(r[0] for r in results):
            for g, r in zip(self._gens, results, strict=True):
                g.cur[key] = r[4]
        return alg.combine(results, self._limits, self._name)

    def _bucket_one(self, key: str, cost: int, commit: bool) -> Decision:
        ok, remaining, reset, retry, new = self._bucket_at(
            0, key, self._now() - self._epoch, cost, commit
        )
        if commit and ok:
            self._gens[0].cur[key] = new
        return self._one(ok, remaining, reset, retry)

    def _one(self, ok: bool, remaining: int, reset: float, retry: float) -> Decision:
        """:func:`~scalekit.ratelimit._algorithms.combine` of one window's result."""
        limit, period = self._limits[0]
        return _new_decision(
            Decision, (ok, limit, remaining, reset, retry if not ok else 0.0, self._name, period)
        )

    # -- the fast path ---------------------------------------------------------
    def fast_hit(self, slow: HitFn) -> HitFn | None:
        """A specialised ``hit`` for one window, or ``None`` if there is none: see
        :mod:`scalekit.ratelimit._fast` (what it inlines, and what keeps it equal to
        this store's generic path). ``slow`` is the generic ``hit`` it falls back to."""
        if len(self._rates) != 1:
            return None
        return _fast.hit_function(
            self.algorithm,
            slow,
            lock=self._lock,
            now=self._now,
            window=self._windows[0],
            generations=self._gens[0],
            max_keys=self.max_keys,
            allowed=self._allowed,
            denied=self._denied,
            rate=self._rates[0],
            name=self._name,
            epoch=self._epoch,
        )
