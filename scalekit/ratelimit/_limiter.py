"""The limiter facade: one ``RateLimiter`` for sync and async callers.

Its core (:class:`_LimiterCore`) validates configuration, picks the store for a
tier, and applies the failure policy; the sync methods (``hit``, ``acquire``, ...)
and their awaitable twins (``ahit``, ``aacquire``, ...) only differ in how they
wait and talk to Redis. ``AsyncRateLimiter`` is the deprecated older shape (a
second class whose methods are awaitable under the sync names).
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit.backends import BackendLike, MemoryBackend, as_backend
from scalekit.backends._guard import BackendGuard as _BackendGuard
from scalekit.errors import (
    BackendDataError,
    BackendError,
    ConfigurationError,
    RateLimitExceeded,
)
from scalekit.ratelimit import _startup
from scalekit.ratelimit._algorithms import ALGORITHMS, Algorithm
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._memory import HitFn, MemoryRateStore, StoreFull
from scalekit.ratelimit._metrics import NO_TIER, RateLimiterStats, StoreCounters, total
from scalekit.ratelimit._policy import Policy, PolicyLike, Rate, as_policy, as_tiers
from scalekit.ratelimit._redis import RedisRateStore

__all__ = ["AsyncRateLimiter", "FailurePolicy", "RateLimiter"]

log = logging.getLogger("scalekit.ratelimit")

FailurePolicy: TypeAlias = Literal["fail_open", "fail_closed", "local_fallback"]
_FAILURE_POLICIES = ("fail_open", "fail_closed", "local_fallback")
_MAX_COST = 2**63 - 1  # above any limit: denied for ever, but a number Redis can parse

Store: TypeAlias = MemoryRateStore | RedisRateStore


class _LimiterCore:
    """Everything the sync and async limiters share."""

    def __init__(
        self,
        backend: BackendLike | None,
        policy: PolicyLike | Mapping[str, PolicyLike],
        *,
        algorithm: Algorithm = "sliding_window",
        name: str | None = None,
        clock: Clock | Callable[[], float] | None = None,
        on_backend_error: FailurePolicy = "fail_open",
        fallback_instances: int = 1,
        backend_cooldown: float = 5.0,
        max_keys: int | None = None,
        prefix: str = "scalekit:rl",
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
            )
        if on_backend_error not in _FAILURE_POLICIES:
            raise ConfigurationError(
                f"unknown on_backend_error {on_backend_error!r}; expected one of "
                f"{', '.join(_FAILURE_POLICIES)}"
            )
        fallback_instances = _validate.count(fallback_instances, "fallback_instances")
        cooldown = _validate.duration(backend_cooldown, "backend_cooldown")
        if name is not None:
            name = _validate.name(name, "name")
        prefix = _validate.name(prefix, "prefix")
        self.backend = as_backend(backend)
        self.algorithm: Algorithm = algorithm
        self.clock = as_clock(clock)
        self.on_backend_error: FailurePolicy = on_backend_error
        self.fallback_instances = fallback_instances
        if max_keys is None:
            max_keys = (
                self.backend.max_keys
                if isinstance(self.backend, MemoryBackend)
                else (MemoryBackend().max_keys)
            )
        MemoryBackend(max_keys)  # validates
        self.max_keys = max_keys
        self._prefix = prefix
        base = name or algorithm
        self.name = base

        self.tiers: dict[str, Policy] | None
        if isinstance(policy, Mapping):
            self.tiers = as_tiers(policy)
            self.policy: Policy | None = None
            self._stores: dict[str | None, Store] = {
                t: self._build(p, (base, t), t) for t, p in self.tiers.items()
            }
        else:
            self.tiers = None
            self.policy = as_policy(policy)
            self._stores = {None: self._build(self.policy, (base,), NO_TIER)}
        self._default = self._stores.get(None)
        if isinstance(self._default, MemoryRateStore):
            fast = self._default.fast_hit(self._local_hit)
            if fast is not None:
                self._install_fast_path(fast)
        self._fallbacks: dict[int, MemoryRateStore] = {}
        self._cooldown = cooldown
        self._guard = _BackendGuard(base, cooldown, self.clock.now, logger=log)
        self._lock = threading.Lock()
        self._episodes_seen = 0

    def _build(self, policy: Policy, name: tuple[str, ...], tier: str) -> Store:
        counters = StoreCounters(self, self.name, self.algorithm, tier)
        if isinstance(self.backend, MemoryBackend):
            return MemoryRateStore(
                self.algorithm, policy, now=self.clock.now, max_keys=self.max_keys,
                counters=counters,
            )  # fmt: skip
        # exact (whole microseconds): "2/3600000000" and "2/3600000400" never share keys
        rates = ",".join(f"{r.limit}/{r.period_us}" for r in policy.rates)
        return RedisRateStore(
            self.backend,
            self.algorithm,
            policy,
            prefix=self._prefix,
            name=(*name, rates),
            counters=counters,
        )

    # -- validation ------------------------------------------------------------
    def _store(self, tier: str | None) -> Store:
        store = self._stores.get(tier)
        if store is None:
            if self.tiers is None:
                raise ConfigurationError(
                    f"this limiter has no tiers (policy {self.policy}); got tier={tier!r}"
                )
            if tier is None:
                raise ConfigurationError(
                    f"this limiter is tiered; pass tier= one of {', '.join(map(repr, self.tiers))}"
                )
            raise ConfigurationError(
                f"unknown tier {tier!r}; expected one of {', '.join(map(repr, self.tiers))}"
            )
        return store

    @staticmethod
    def _checked(key: object, cost: object) -> tuple[str, int]:
        """The slow path of every call's argument check: ``key`` a non-empty ``str``
        (a ``StrEnum`` member is reduced to its value), ``cost`` an int >= 1 (not a
        ``bool``). A cost above every limit is allowed: it is denied for ever."""
        k = _validate.key(key, "a rate-limit key")
        if not k:
            raise ConfigurationError("a rate-limit key must be a non-empty str, got ''")
        return k, _validate.count(cost, "cost", maximum=_MAX_COST)

    def _install_fast_path(self, fast: HitFn) -> None:
        """Install a memory fast path (see :meth:`RateLimiter._install_fast_path`)."""

    def _local_hit(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        """``hit`` on a memory store (sync; the fast paths fall back to it)."""
        store = self._store(tier)
        if key.__class__ is not str or not key or cost.__class__ is not int or cost < 1:
            key, cost = self._checked(key, cost)
        assert isinstance(store, MemoryRateStore)
        try:
            return store.decide(key, cost, True)
        except StoreFull as exc:
            return self._on_full(store, key, cost, True, exc)

    # -- degraded decisions ----------------------------------------------------
    def _fallback_store(self, store: Store) -> MemoryRateStore:
        fb = self._fallbacks.get(id(store))
        if fb is None:
            with self._lock:
                fb = self._fallbacks.get(id(store))
                if fb is None:
                    n = self.fallback_instances
                    rates = [
                        Rate(
                            max(1, r.limit // n),
                            r.period,
                            burst=None if r.burst is None else max(1, r.burst // n),
                        )
                        for r in store.policy.rates
                    ]
                    fb = MemoryRateStore(
                        self.algorithm,
                        Policy(rates, name=store.policy.name),
                        now=self.clock.now,
                        max_keys=self.max_keys,
                    )
                    self._fallbacks[id(store)] = fb
        return fb

    def _degraded_decision(
        self, store: Store, key: str, cost: int, commit: bool, policy: FailurePolicy, retry: float
    ) -> Decision:
        store.counters.degraded.inc()
        rate = store.policy.rates[0]
        name = store.policy.name
        if policy == "local_fallback":
            try:
                return self._fallback_store(store).decide(key, cost, commit)
            except StoreFull:
                policy = "fail_closed"
        if policy == "fail_open":
            return Decision(True, rate.limit, rate.limit, 0.0, 0.0, name, rate.period)
        return Decision(False, rate.limit, 0, retry, retry, name, rate.period)

    def _on_full(self, store: Store, key: str, cost: int, commit: bool, exc: StoreFull) -> Decision:
        # counted in the store's refused_full
        if not commit:
            return store.decide(key, cost, False)
        policy: FailurePolicy = (
            "fail_open" if self.on_backend_error == "fail_open" else "fail_closed"
        )
        # A key refused now can be let in once the idle keys of this window are gone.
        return self._degraded_decision(
            store, key, cost, commit, policy, store.policy.rates[exc.rate_index].period
        )

    def _failed(self, store: Store, exc: BackendError | None) -> None:
        """Count a failed backend call (``exc``; ``None``: skipped while cooling down)
        and the outage it opened, if it did."""
        if exc is None:
            return
        store.counters.backend_errors.inc()
        with self._lock:
            opened = self._guard.episodes - self._episodes_seen
            self._episodes_seen += opened
        if opened > 0:
            store.counters.backend_episodes.add(opened)

    def _on_error(
        self, store: Store, key: str, cost: int, commit: bool, exc: BackendError | None
    ) -> Decision:
        self._failed(store, exc)
        return self._degraded_decision(
            store, key, cost, commit, self.on_backend_error, self._guard.retry_in()
        )

    def _on_data_error(self, store: Store, key: str, cost: int, commit: bool) -> Decision:
        """The store reset ``key`` after a data error and its clean state failed too
        (something keeps writing there): this one call gets the failure policy; the
        guard is not tripped, so every other key is decided as usual. A refusal says to
        retry after ``backend_cooldown`` (an ``acquire`` must not spin on such a key)."""
        return self._degraded_decision(
            store, key, cost, commit, self.on_backend_error, self._cooldown
        )

    def _refund_args(self, key: object, cost: object, tier: str | None) -> tuple[Store, str, int]:
        store = self._store(tier)
        if key.__class__ is not str or not key or cost.__class__ is not int or cost < 1:
            key, cost = self._checked(key, cost)
        return store, key, cost

    def _refund_degraded(self, store: Store, key: str, cost: int, exc: BackendError | None) -> None:
        """The backend is down: a ``local_fallback`` limiter gives back what its
        fallback store spent; the other policies spent nothing they could give back."""
        self._failed(store, exc)
        if self.on_backend_error == "local_fallback":
            self._fallback_store(store).refund(key, cost)

    @staticmethod
    def _count(store: Store, d: Decision) -> Decision:
        (store.counters.allowed if d[0] else store.counters.denied).inc()
        return d

    # -- introspection -----------------------------------------------------------
    def stats(self) -> RateLimiterStats:
        """What this limiter counted since its creation, every tier together, read
        from its counters in the metrics registry (see :class:`RateLimiterStats`).
        ``stats()["allowed"]`` still works for one release (deprecated)."""
        cs = [s.counters for s in self._stores.values()]
        return RateLimiterStats(
            allowed=total([c.allowed for c in cs]),
            denied=total([c.denied for c in cs]),
            degraded=total([c.degraded for c in cs]),
            refused_full=total([c.refused_full for c in cs]),
            backend_errors=total([c.backend_errors for c in cs]),
            backend_episodes=total([c.backend_episodes for c in cs]),
            corrupt_keys=total([c.corrupt_keys for c in cs]),
            refunds=total([c.refunds for c in cs]),
        )

    def __repr__(self) -> str:
        what = (
            str(self.policy)
            if self.tiers is None
            else {t: "; ".join(map(str, p.rates)) for t, p in self.tiers.items()}
        )
        return (
            f"{type(self).__name__}({self.backend!r}, {what!r}, algorithm={self.algorithm!r}, "
            f"name={self.name!r})"
        )


class RateLimiter(_LimiterCore):
    """A rate limiter for threads, sync code and asyncio: one object, shared by all.

    ``backend`` is a URL (``"memory://"``, ``"redis://…"``) or a backend object;
    ``policy`` a :class:`Rate`, a :class:`Policy`, a string such as
    ``"60/hour; 1000/day"``, or a mapping tier -> policy (then every call passes
    ``tier=``). See the reference page for every option.

    Sync code calls ``hit`` / ``peek`` / ``refund`` / ``reset`` / ``ping`` /
    ``acquire``; async code awaits their twins ``ahit`` / ``apeek`` / ``arefund`` /
    ``areset`` / ``aping`` / ``aacquire`` (the library's convention: see the design
    page). Both kinds of caller share the limiter's windows and counters.
    """

    def _install_fast_path(self, fast: HitFn) -> None:
        cls = type(self)
        if cls.hit is RateLimiter.hit:  # a subclass' own hit() always wins
            # One frame per hit instead of three: see MemoryRateStore.fast_hit.
            self.hit = fast  # type: ignore[method-assign]
        if cls.ahit is RateLimiter.ahit:

            async def ahit(key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
                return fast(key, cost, tier=tier)

            self.ahit = ahit  # type: ignore[method-assign]

    def hit(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        """Consume ``cost`` for ``key`` if every window allows it (else consume nothing)."""
        store = self._default if tier is None else None
        if store is None:
            store = self._store(tier)
        if key.__class__ is not str or not key or cost.__class__ is not int or cost < 1:
            key, cost = self._checked(key, cost)
        if store.local:
            try:
                return store.decide(key, cost, True)
            except StoreFull as exc:
                return self._on_full(store, key, cost, True, exc)
        return self._remote(store, key, cost, True)  # type: ignore[arg-type]

    def peek(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        """Would ``hit(key, cost)`` be allowed now? Consumes nothing."""
        store = self._store(tier)
        if key.__class__ is not str or not key or cost.__class__ is not int or cost < 1:
            key, cost = self._checked(key, cost)
        if isinstance(store, MemoryRateStore):
            return store.decide(key, cost, False)
        return self._remote(store, key, cost, False)

    def refund(self, key: str, cost: int = 1, *, tier: str | None = None) -> None:
        """Give back ``cost`` that ``key`` spent (a request whose work failed), in
        every window, never more than the current window(s) hold: see the reference
        page for what that means for each algorithm. One round trip on Redis; with
        the backend down, it follows ``on_backend_error`` and never raises."""
        store, key, cost = self._refund_args(key, cost, tier)
        if isinstance(store, MemoryRateStore):
            store.refund(key, cost)
            return
        self._guard.call(
            lambda: store.refund(key, cost),
            lambda exc: self._refund_degraded(store, key, cost, exc),
        )

    def reset(self, key: str, *, tier: str | None = None) -> None:
        """Forget ``key``'s usage in every window."""
        self._store(tier).reset(key)

    def ping(self) -> None:
        """The startup check: raise :class:`~scalekit.errors.BackendError` (naming the
        redacted URL) unless the backend answers; nothing to check on memory."""
        _startup.ping(f"rate limiter {self.name!r}", self.backend)

    def acquire(
        self, key: str, cost: int = 1, *, tier: str | None = None, timeout: float | None = None
    ) -> Decision:
        """Block until ``hit`` allows, or raise :class:`RateLimitExceeded` once the
        wait would exceed ``timeout`` seconds (``None``: no bound). Waits with the
        limiter's clock; no queue, so under contention it is not FIFO-fair."""
        timeout = _validate.timeout(timeout)
        deadline = None if timeout is None else self.clock.now() + timeout
        while True:
            d = self.hit(key, cost, tier=tier)
            if d.allowed:
                return d
            wait = d.retry_after
            if math.isinf(wait) or (deadline is not None and self.clock.now() + wait > deadline):
                raise RateLimitExceeded(d, key)
            self.clock.sleep(max(wait, 1e-6))

    def _remote(self, store: RedisRateStore, key: str, cost: int, commit: bool) -> Decision:
        try:
            return self._guard.call(
                lambda: self._count(store, store.decide(key, cost, commit)),
                lambda exc: self._on_error(store, key, cost, commit, exc),
            )
        except BackendDataError:
            return self._on_data_error(store, key, cost, commit)

    # -- async twins ------------------------------------------------------------

    async def ahit(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        """:meth:`hit` for async code."""
        store = self._default if tier is None else None
        if store is None:
            store = self._store(tier)
        if key.__class__ is not str or not key or cost.__class__ is not int or cost < 1:
            key, cost = self._checked(key, cost)
        if store.local:
            try:
                return store.decide(key, cost, True)
            except StoreFull as exc:
                return self._on_full(store, key, cost, True, exc)
        return await self._aremote(store, key, cost, True)  # type: ignore[arg-type]

    async def apeek(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        """:meth:`peek` for async code."""
        store = self._store(tier)
        if key.__class__ is not str or not key or cost.__class__ is not int or cost < 1:
            key, cost = self._checked(key, cost)
        if isinstance(store, MemoryRateStore):
            return store.decide(key, cost, False)
        return await self._aremote(store, key, cost, False)

    async def arefund(self, key: str, cost: int = 1, *, tier: str | None = None) -> None:
        """:meth:`refund` for async code."""
        store, key, cost = self._refund_args(key, cost, tier)
        if isinstance(store, MemoryRateStore):
            store.refund(key, cost)
            return

        async def refund() -> None:
            await store.arefund(key, cost)

        await self._guard.acall(refund, lambda exc: self._refund_degraded(store, key, cost, exc))

    async def areset(self, key: str, *, tier: str | None = None) -> None:
        """:meth:`reset` for async code."""
        store = self._store(tier)
        if isinstance(store, MemoryRateStore):
            store.reset(key)
        else:
            await store.areset(key)

    async def aping(self) -> None:
        """:meth:`ping` for async code."""
        await _startup.aping(f"rate limiter {self.name!r}", self.backend)

    async def aacquire(
        self, key: str, cost: int = 1, *, tier: str | None = None, timeout: float | None = None
    ) -> Decision:
        """:meth:`acquire` for async code: waits with ``clock.asleep``."""
        timeout = _validate.timeout(timeout)
        deadline = None if timeout is None else self.clock.now() + timeout
        while True:
            d = await self.ahit(key, cost, tier=tier)
            if d.allowed:
                return d
            wait = d.retry_after
            if math.isinf(wait) or (deadline is not None and self.clock.now() + wait > deadline):
                raise RateLimitExceeded(d, key)
            await self.clock.asleep(max(wait, 1e-6))

    async def _aremote(self, store: RedisRateStore, key: str, cost: int, commit: bool) -> Decision:
        async def decide() -> Decision:
            return self._count(store, await store.adecide(key, cost, commit))

        try:
            return await self._guard.acall(
                decide, lambda exc: self._on_error(store, key, cost, commit, exc)
            )
        except BackendDataError:
            return self._on_data_error(store, key, cost, commit)


_ASYNC_NAMES = "ahit / apeek / arefund / areset / aping / aacquire"


class AsyncRateLimiter(RateLimiter):
    """Deprecated: use :class:`RateLimiter`, whose awaitable methods are ``ahit``,
    ``apeek``, ``arefund``, ``areset``, ``aping`` and ``aacquire``.

    The older asyncio shape, kept for one release: the same limiter with its
    awaitable methods under the sync names (``await limiter.hit(key)``).
    Constructing one raises a :class:`DeprecationWarning`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "AsyncRateLimiter is deprecated; use RateLimiter, whose awaitable methods "
            f"are {_ASYNC_NAMES} (await limiter.ahit(key))",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)

    def _install_fast_path(self, fast: HitFn) -> None:
        super()._install_fast_path(fast)
        if type(self).hit is AsyncRateLimiter.hit:  # the awaitable hit: ahit's fast path
            self.hit = self.ahit  # type: ignore[method-assign]

    hit = RateLimiter.ahit  # type: ignore[assignment]
    peek = RateLimiter.apeek  # type: ignore[assignment]
    refund = RateLimiter.arefund  # type: ignore[assignment]
    reset = RateLimiter.areset  # type: ignore[assignment]
    ping = RateLimiter.aping  # type: ignore[assignment]
    acquire = RateLimiter.aacquire  # type: ignore[assignment]
