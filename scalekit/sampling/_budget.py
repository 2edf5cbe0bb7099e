"""Budgets: an adaptive sampler that aims at a target count per period, and a hard cap.

:class:`Budget` keeps, per scope (one global scope, or one per key with ``per=``)
and per period window, how many items it was asked about (``considered``) and how
many it let through (``sampled``). Its probability for the next item is what is
left of the target divided by the arrivals it expects in the rest of the window
(:func:`budget_probability`, pure). It never lets more than the target through in
one window. The counters live in memory (this process) or in Redis, where one Lua
script (``lua/budget.lua``, the same arithmetic) reads, decides and counts in one
round trip, so a fleet of processes shares one budget.

:class:`Cap` puts a rate limiter (:mod:`scalekit.ratelimit`, any algorithm and
backend) in a pipeline as a hard limit, e.g. at most 100 extractions per user per
day.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, TypeAlias, TypeVar, cast

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit._keys import build_key, escape
from scalekit.backends import BackendLike, MemoryBackend, as_backend
from scalekit.backends._guard import BackendGuard as _BackendGuard
from scalekit.backends._lua import load_script
from scalekit.backends._redis import RedisBackend
from scalekit.errors import BackendError, ConfigurationError
from scalekit.ratelimit import AsyncRateLimiter, RateLimiter
from scalekit.ratelimit._algorithms import Algorithm
from scalekit.ratelimit._policy import PolicyLike, Rate
from scalekit.sampling._hash import HashName, Id, hash_bits, hash_function
from scalekit.sampling._stages import Rng, _as_rng, _check_key, _check_name

__all__ = ["Budget", "BudgetFailurePolicy", "Cap", "budget_probability"]

T = TypeVar("T")

#: ``"skip"`` is the deprecated spelling of ``"fail_closed"`` (one release)
BudgetFailurePolicy: TypeAlias = Literal["fail_closed", "local_fallback", "skip"]

#: (sampled, probability, considered, sampled count) for one decision
Outcome: TypeAlias = tuple[bool, float, int, int]


def budget_probability(
    *,
    target: int,
    sampled: int,
    considered: int,
    previous: int | None,
    elapsed: float,
    period: float,
    expected: float | None = None,
    warmup: float = 0.01,
) -> float:
    """The probability for the next item of a window.

    ``considered`` counts the items of this window so far, this one included;
    ``sampled`` those let through before it. The arrival rate is the window's
    observed rate (over at least ``warmup`` of a period, so the first items do not
    see an absurd rate), blended with a prior rate while the window is young: the
    previous window's count (``previous``) or else ``expected`` arrivals per period.
    The probability is what is left of the target over the expected arrivals in the
    rest of the window (this item included), at most 1, and 0 once the target is
    reached. A burst raises the observed rate, so the probability falls with it;
    a shortfall raises what is left, so it climbs back. The Lua script computes the
    same expression in the same order.
    """
    left = target - sampled
    if left <= 0:
        return 0.0
    prior = previous if previous is not None and previous >= 0 else expected
    f = elapsed / period
    observed = considered / max(elapsed, warmup * period)
    rate = f * observed + (1 - f) * (prior / period) if prior is not None else observed
    rest = rate * (period - elapsed) + 1
    p = left / rest
    return 1.0 if p > 1 else p


class _MemoryBudgetStore:
    """Budget counters in this process: one dict per window, like the fixed window."""

    local = True

    def __init__(self, now: Callable[[], float], max_keys: int) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._idx: int | None = None
        self._cur: dict[str, list[int]] = {}  # scope -> [considered, sampled, previous]
        self._prev: dict[str, list[int]] = {}
        self.max_keys = max_keys

    def decide(
        self,
        scope: str,
        u: float,
        period: float,
        target: int,
        expected: float | None,
        warmup: float,
    ) -> Outcome:
        with self._lock:
            now = self._now()
            idx = math.floor(now / period)
            if idx != self._idx:
                self._prev = self._cur if self._idx == idx - 1 else {}
                self._cur = {}
                self._idx = idx
            st = self._cur.get(scope)
            if st is None:
                if len(self._cur) >= self.max_keys:
                    # Bounded: a new scope beyond max_keys is refused (never sampled).
                    return False, 0.0, 0, 0
                before = self._prev.get(scope)
                st = self._cur[scope] = [0, 0, before[0] if before is not None else -1]
            st[0] += 1
            p = budget_probability(
                target=target,
                sampled=st[1],
                considered=st[0],
                previous=st[2],
                elapsed=now - idx * period,
                period=period,
                expected=expected,
                warmup=warmup,
            )
            ok = u < p
            if ok:
                st[1] += 1
            return ok, p, st[0], st[1]

    def refund(self, scope: str, period: float) -> None:
        with self._lock:
            if self._idx == math.floor(self._now() / period):
                st = self._cur.get(scope)
                if st is not None and st[1] > 0:
                    st[1] -= 1


class _RedisBudgetStore:
    """Budget counters on Redis: one key per scope, one EVALSHA per decision."""

    local = False

    def __init__(self, backend: RedisBackend, prefix: str, name: str, rate: Rate) -> None:
        self.backend = backend
        self._script = load_script("scalekit.sampling", "budget", header="_now")
        self._refund = load_script("scalekit.sampling", "budget_refund", header="_now")
        self._prefix = prefix
        # the name is escaped like a user part: a budget "a:b" must not share keys with
        # budget "a" (the rate is code's, and exact: periods print in whole microseconds)
        self._parts = (escape(name), str(rate).replace(" ", ""))

    def key(self, scope: str) -> str:
        return build_key(self._prefix, *self._parts, tag=scope)

    def _args(
        self, u: float, period: float, target: int, expected: float | None, warmup: float
    ) -> list[str]:
        now = self.backend.server_now
        return [
            repr(now()) if now else "",
            repr(period),
            str(target),
            repr(u),
            "" if expected is None else repr(float(expected)),
            repr(warmup),
        ]

    @staticmethod
    def _outcome(reply: Any) -> Outcome:
        if isinstance(reply, bytes):
            reply = reply.decode()
        ok, p, n, c = str(reply).split()
        return ok == "1", float(p), int(float(n)), int(float(c))

    def decide(
        self,
        scope: str,
        u: float,
        period: float,
        target: int,
        expected: float | None,
        warmup: float,
    ) -> Outcome:
        args = self._args(u, period, target, expected, warmup)
        return self._outcome(self.backend.evalsha(self._script, [self.key(scope)], args))

    async def adecide(
        self,
        scope: str,
        u: float,
        period: float,
        target: int,
        expected: float | None,
        warmup: float,
    ) -> Outcome:
        args = self._args(u, period, target, expected, warmup)
        return self._outcome(await self.backend.aevalsha(self._script, [self.key(scope)], args))

    def _refund_args(self, period: float) -> list[str]:
        now = self.backend.server_now
        return [repr(now()) if now else "", repr(period)]

    def refund(self, scope: str, period: float) -> None:
        self.backend.evalsha(self._refund, [self.key(scope)], self._refund_args(period))

    async def arefund(self, scope: str, period: float) -> None:
        await self.backend.aevalsha(self._refund, [self.key(scope)], self._refund_args(period))

    def reset(self, scope: str) -> None:
        """Drop a scope's counters (what a data error about them leaves: a key of
        another type, a value the script cannot read); the window starts afresh."""
        self.backend.delete([self.key(scope)])

    async def areset(self, scope: str) -> None:
        await self.backend.adelete([self.key(scope)])


_GLOBAL = "*"


class Budget(Generic[T]):
    """An adaptive sampler aiming at ``rate``'s count per period, per scope.

    ``rate`` is a :class:`~scalekit.ratelimit.Rate` or a string such as
    ``"2500/day"`` (target 2,500 per day). Without ``per`` there is one global
    budget; with ``per=lambda m: m.user_id`` one per key. On ``backend``
    ``"redis://…"`` every process shares the counters.

    The draw is random (``rng``) or, with ``key=``, a stable hash of the item's id.
    ``expected``: the arrivals you expect per period and scope, used while the
    first window is young (later windows use the previous window's count).
    ``warmup``: the smallest part of a period over which the arrival rate is
    measured. ``on_backend_error``: ``"fail_closed"`` (the default: nothing is
    sampled while the backend is down, so costs cannot overrun; ``"skip"`` is its
    deprecated spelling) or ``"local_fallback"`` (a budget in this process of
    ``target // fallback_instances``).
    """

    kind = "budget"

    def __init__(
        self,
        rate: Rate | str,
        *,
        per: Callable[[T], str] | None = None,
        backend: BackendLike | None = None,
        name: str = "budget",
        key: Callable[[T], Id] | None = None,
        salt: str | None = None,
        hash: HashName = "crc32",
        rng: Rng | None = None,
        expected: float | None = None,
        warmup: float = 0.01,
        clock: Clock | Callable[[], float] | None = None,
        on_backend_error: BudgetFailurePolicy = "fail_closed",
        fallback_instances: int = 1,
        backend_cooldown: float = 5.0,
        prefix: str = "scalekit:sb",
    ) -> None:
        self.name = _check_name(name, "budget")
        if isinstance(rate, str):
            rate = Rate.parse(rate)
        if not isinstance(rate, Rate):
            raise ConfigurationError(
                f"Budget {name!r}: rate must be a Rate or a string like '2500/day', got {rate!r}"
            )
        self.rate = rate
        self.target = rate.limit
        self.period = rate.period
        if per is not None and not callable(per):
            raise ConfigurationError(
                f"Budget {name!r}: per must be a callable item -> str scope, got {per!r}"
            )
        self.per = per
        if key is not None:
            _check_key(key, f"Budget {name!r}")
            if rng is not None:
                raise ConfigurationError(
                    f"Budget {name!r}: pass key= (stable draws) or rng= (random draws), not both"
                )
        self.key = key
        self._hash = hash_function(hash, name if salt is None else salt)
        self._unit = 1.0 / (1 << hash_bits(hash))
        self._rng = _as_rng(rng)
        if expected is not None and (
            isinstance(expected, bool)
            or not isinstance(expected, int | float)
            or not 0 <= expected < math.inf
        ):
            raise ConfigurationError(
                f"Budget {name!r}: expected must be a number of arrivals >= 0 or None, "
                f"got {expected!r}"
            )
        self.expected = None if expected is None else float(expected)
        if isinstance(warmup, bool) or not isinstance(warmup, int | float) or not 0 < warmup <= 1:
            raise ConfigurationError(
                f"Budget {name!r}: warmup must be a fraction of the period in (0, 1], "
                f"got {warmup!r}"
            )
        self.warmup = float(warmup)
        self.on_backend_error = cast(
            BudgetFailurePolicy,
            _validate.failure_policy(
                on_backend_error,
                f"Budget {name!r}: on_backend_error",
                allowed=("fail_closed", "local_fallback"),
                deprecated={"skip": "fail_closed"},
            ),
        )
        if (
            isinstance(fallback_instances, bool)
            or not isinstance(fallback_instances, int)
            or fallback_instances < 1
        ):
            raise ConfigurationError(
                f"fallback_instances must be an int >= 1, got {fallback_instances!r}"
            )
        backend_cooldown = _validate.duration(backend_cooldown, "backend_cooldown")
        self.fallback_instances = fallback_instances
        self.clock = as_clock(clock)
        self.backend = as_backend(backend, fallback="memory://")
        self._store: _MemoryBudgetStore | _RedisBudgetStore
        if isinstance(self.backend, MemoryBackend):
            self._store = _MemoryBudgetStore(self.clock.now, self.backend.max_keys)
        else:
            self._store = _RedisBudgetStore(self.backend, prefix, self.name, rate)
        self._fallback: _MemoryBudgetStore | None = None
        self._guard = _BackendGuard(
            self.name,
            float(backend_cooldown),
            self.clock.now,
            "budget",
            logger=logging.getLogger("scalekit.sampling"),
        )
        self.degraded = 0

    # -- the pipeline's interface ---------------------------------------------------
    def _draw(self, item: T) -> float:
        if self.key is not None:
            return self._hash(self.key(item)) * self._unit
        return self._rng()

    def _scope(self, item: T) -> str:
        if self.per is None:
            return _GLOBAL
        scope = self.per(item)
        if not isinstance(scope, str) or not scope:
            raise ConfigurationError(
                f"Budget {self.name!r}: per(item) must return a non-empty str, got {scope!r}"
            )
        return scope

    def _detail(self, o: Outcome, scope: str) -> str:
        where = "" if scope is _GLOBAL else f" for {scope!r}"
        return f"{o[3]}/{self.target} sampled of {o[2]} considered this window{where}"

    def decide(self, item: T) -> tuple[bool, float, str]:
        """Draw for ``item`` and count it: (sampled, probability, detail)."""
        scope = self._scope(item)
        u = self._draw(item)
        store = self._store
        if store.local:
            o = store.decide(scope, u, self.period, self.target, self.expected, self.warmup)
            return o[0], o[1], self._detail(o, scope)

        assert isinstance(store, _RedisBudgetStore)

        def remote() -> tuple[bool, float, str]:
            o = store.decide(scope, u, self.period, self.target, self.expected, self.warmup)
            return o[0], o[1], self._detail(o, scope)

        return self._guard.call(
            remote, lambda _: self._degraded(scope, u), lambda _: store.reset(scope)
        )

    async def adecide(self, item: T) -> tuple[bool, float, str]:
        store = self._store
        if store.local:
            return self.decide(item)
        assert isinstance(store, _RedisBudgetStore)
        scope = self._scope(item)
        u = self._draw(item)

        async def remote() -> tuple[bool, float, str]:
            o = await store.adecide(scope, u, self.period, self.target, self.expected, self.warmup)
            return o[0], o[1], self._detail(o, scope)

        return await self._guard.acall(
            remote, lambda _: self._degraded(scope, u), lambda _: store.areset(scope)
        )

    def refund(self, item: T) -> None:
        """Give back the unit counted for ``item`` (a later stage refused it).

        The pipeline calls this; a failure is only counted (the unit stays spent)."""
        scope = self._scope(item)
        store = self._store
        if store.local:
            store.refund(scope, self.period)
            return
        assert isinstance(store, _RedisBudgetStore)
        self._guard.call(
            lambda: store.refund(scope, self.period),
            lambda exc: self._refund_locally(scope, exc),
            lambda _: store.reset(scope),
        )

    async def arefund(self, item: T) -> None:
        store = self._store
        if store.local:
            self.refund(item)
            return
        assert isinstance(store, _RedisBudgetStore)
        scope = self._scope(item)
        await self._guard.acall(
            lambda: store.arefund(scope, self.period),
            lambda exc: self._refund_locally(scope, exc),
            lambda _: store.areset(scope),
        )

    def _refund_locally(self, scope: str, exc: BackendError | None) -> None:
        """While Redis is skipped, a unit counted by the fallback goes back there;
        after a failure the unit stays spent."""
        if exc is None and self._fallback is not None:
            self._fallback.refund(scope, self.period)

    def _degraded(self, scope: str, u: float) -> tuple[bool, float, str]:
        self.degraded += 1
        if self.on_backend_error == "fail_closed":
            return False, 0.0, "backend unavailable: skipped (on_backend_error='fail_closed')"
        fb = self._fallback
        if fb is None:
            fb = self._fallback = _MemoryBudgetStore(self.clock.now, MemoryBackend().max_keys)
        target = max(1, self.target // self.fallback_instances)
        expected = None if self.expected is None else self.expected / self.fallback_instances
        o = fb.decide(scope, u, self.period, target, expected, self.warmup)
        return o[0], o[1], f"backend unavailable, local budget: {o[3]}/{target} this window"

    def __repr__(self) -> str:
        per = "global" if self.per is None else "per key"
        return f"Budget({str(self.rate)!r}, {per}, backend={self.backend!r}, name={self.name!r})"


class Cap(Generic[T]):
    """A hard limit in a pipeline: a rate limiter keyed by ``key(item)``.

    ``limit`` is a :class:`~scalekit.ratelimit.RateLimiter`, or a policy such as
    ``"100/day"`` from which one is built on ``backend`` with ``algorithm``
    (default ``"fixed_window"``) and ``limiter_options`` (default
    ``on_backend_error="fail_closed"``: an outage skips the work rather than
    running it unbounded). Items the cap refuses are skipped; a unit is consumed
    only for items that reach it, so put caps after the samplers.
    """

    kind = "cap"

    def __init__(
        self,
        limit: RateLimiter | PolicyLike | Mapping[str, PolicyLike],
        *,
        key: Callable[[T], str],
        name: str = "cap",
        backend: BackendLike = "memory://",
        algorithm: Algorithm = "fixed_window",
        **limiter_options: Any,
    ) -> None:
        self.name = _check_name(name, "cap")
        if not callable(key):
            raise ConfigurationError(
                f"Cap {name!r}: key must be a callable item -> str, got {key!r}"
            )
        self.key = key
        #: the one limiter: ``decide`` calls its ``hit``, ``adecide`` awaits its ``ahit``
        self.limiter: RateLimiter
        if isinstance(limit, RateLimiter):
            self.limiter = limit
        else:
            limiter_options.setdefault("on_backend_error", "fail_closed")
            limiter_options.setdefault("name", self.name)
            self.limiter = RateLimiter(
                as_backend(backend), limit, algorithm=algorithm, **limiter_options
            )

    @property
    def sync(self) -> RateLimiter:
        """Deprecated: :attr:`limiter` (one limiter serves ``decide`` and ``adecide``)."""
        warnings.warn("Cap.sync is deprecated; use Cap.limiter", DeprecationWarning, stacklevel=2)
        return self.limiter

    @property
    def async_(self) -> RateLimiter:
        """Deprecated: :attr:`limiter` (one limiter serves ``decide`` and ``adecide``)."""
        warnings.warn("Cap.async_ is deprecated; use Cap.limiter", DeprecationWarning, stacklevel=2)
        return self.limiter

    def _detail(self, d: Any) -> str:
        return f"limit {d.policy!r} reached, retry after {d.retry_after:.3g}s"

    def decide(self, item: T) -> tuple[bool, float, str]:
        if isinstance(self.limiter, AsyncRateLimiter):  # deprecated: awaitable hit()
            raise ConfigurationError(
                f"Cap {self.name!r} has an AsyncRateLimiter: use the pipeline's adecide()"
            )
        d = self.limiter.hit(self.key(item))
        return (True, 1.0, "") if d.allowed else (False, 0.0, self._detail(d))

    async def adecide(self, item: T) -> tuple[bool, float, str]:
        d = await self.limiter.ahit(self.key(item))
        return (True, 1.0, "") if d.allowed else (False, 0.0, self._detail(d))

    def __repr__(self) -> str:
        return f"Cap({self.limiter!r}, name={self.name!r})"
