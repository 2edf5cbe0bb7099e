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
from collections import deque
from collections.abc import Callable
from typing import Any

from scalekit.ratelimit import algorithms as alg
from scalekit.ratelimit.algorithms import Algorithm
from scalekit.ratelimit.decision import Decision
from scalekit.ratelimit.policy import Policy

__all__ = ["MemoryRateStore", "StoreFull"]

_new_decision = tuple.__new__


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
    ) -> None:
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
        self._decide: Callable[[str, int, bool], Decision] = getattr(self, "_" + algorithm)
        if len(policy.rates) == 1 and algorithm == "gcra":
            self._decide = self._gcra_single
        self.allowed = 0
        self.denied = 0
        self.refused_full = 0

    # -- public ------------------------------------------------------------
    def decide(self, key: str, cost: int, commit: bool) -> Decision:
        """Hit (``commit=True``) or peek; raises :class:`StoreFull`."""
        with self._lock:
            d = self._decide(key, cost, commit)
            if d[0]:
                self.allowed += 1
            else:
                self.denied += 1
            return d

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
        self.refused_full += 1
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
                st = [0, deque()]
            states.append(st)
            results.append(alg.sliding_log(st, now, limit, period, cost, commit))
        if commit and all(r[0] for r in results):
            for g, st, r in zip(self._gens, states, results, strict=True):
                st[0] = r[4]
                st[1].append((now, cost))
                g.cur[key] = st
        return alg.combine(results, self._limits, self._name)

    def _token_bucket(self, key: str, cost: int, commit: bool) -> Decision:
        now = self._now()
        results = []
        for i, (limit, period, cap) in enumerate(self._rates):
            g = self._gens[i]
            g.rotate(now)
            st = g.get(key)
            if st is None and commit and g.size() >= self.max_keys:
                self._full(i)
            results.append(alg.token_bucket(st, now, limit, period, cap, cost, commit))
        if commit and all(r[0] for r in results):
            for g, r in zip(self._gens, results, strict=True):
                g.cur[key] = r[4]
        return alg.combine(results, self._limits, self._name)

    def _gcra(self, key: str, cost: int, commit: bool) -> Decision:
        now = self._now()
        results = []
        for i, (limit, period, cap) in enumerate(self._rates):
            g = self._gens[i]
            g.rotate(now)
            st = g.get(key)
            if st is None and commit and g.size() >= self.max_keys:
                self._full(i)
            results.append(alg.gcra(st, now, limit, period, cap, cost, commit))
        if commit and all(r[0] for r in results):
            for g, r in zip(self._gens, results, strict=True):
                g.cur[key] = r[4]
        return alg.combine(results, self._limits, self._name)

    def _gcra_single(self, key: str, cost: int, commit: bool) -> Decision:
        # The hot path of the most common configuration, without the per-window
        # lists; the arithmetic is still alg.gcra's.
        now = self._now()
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
        ok, remaining, reset, retry, new = alg.gcra(st, now, limit, period, cap, cost, commit)
        if new is not None:
            cur[key] = new
        return _new_decision(Decision, (ok, limit, remaining, reset, retry, self._name, period))
