"""Concurrency limits: at most ``limit`` calls in flight per key.

A holder takes a *lease* with a time-to-live; a crashed holder cannot leak its
slot, because an expired lease no longer counts. Long calls renew their lease.
In memory the leases live in a dict; on Redis in one sorted set per key (lease
id -> expiry on the server's clock), changed by one Lua script per operation.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit._keys import build_key, escape
from scalekit.backends import BackendLike, MemoryBackend, RedisBackend, as_backend
from scalekit.backends._guard import BackendGuard as _BackendGuard
from scalekit.backends._lua import load_script
from scalekit.errors import (
    BackendDataError,
    BackendError,
    ConcurrencyLimitExceeded,
    ConfigurationError,
)
from scalekit.ratelimit import _metrics, _startup
from scalekit.ratelimit._limiter import FailurePolicy, log
from scalekit.ratelimit._redis import FORMAT_VERSION

__all__ = ["AsyncConcurrencyLimiter", "ConcurrencyLimiter", "Lease"]

_MIN_POLL = 0.005
_MAX_POLL = 0.1


@dataclass(frozen=True, slots=True)
class Lease:
    """A held slot: the key and a random lease id."""

    key: str
    id: str


class _MemoryLeases:
    """Leases in this process: key -> {lease id: expiry}."""

    def __init__(self, max_keys: int) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, dict[str, float]] = {}
        self._max_keys = max_keys

    def _live(self, key: str, now: float) -> dict[str, float] | None:
        held = self._leases.get(key)
        if held is not None:
            for lid in [lid for lid, exp in held.items() if exp <= now]:
                del held[lid]
            if not held:
                del self._leases[key]
                return None
        return held

    def op(
        self, op: str, key: str, lid: str, now: float, limit: int, ttl: float
    ) -> tuple[bool, int, float]:
        with self._lock:
            held = self._live(key, now)
            if op == "acquire":
                if held is None:
                    if len(self._leases) >= self._max_keys:
                        return False, 0, ttl
                    held = self._leases[key] = {}
                if len(held) < limit:
                    held[lid] = now + ttl
                    return True, len(held), 0.0
                return False, len(held), min(held.values()) - now
            if held is None:
                return False, 0, 0.0
            if op == "release":
                ok = held.pop(lid, None) is not None
                if not held:
                    del self._leases[key]
                return ok, len(held), 0.0
            if op == "renew":
                if lid in held:
                    held[lid] = now + ttl
                    return True, len(held), 0.0
                return False, len(held), 0.0
            return True, len(held), 0.0


class _ConcurrencyCore:
    def __init__(
        self,
        backend: BackendLike | None,
        limit: int,
        *,
        lease_ttl: float = 60.0,
        name: str = "concurrency",
        clock: Clock | Callable[[], float] | None = None,
        on_backend_error: FailurePolicy = "fail_open",
        backend_cooldown: float = 5.0,
        prefix: str = "scalekit:cc",
    ) -> None:
        limit = _validate.count(limit, "limit")
        ttl = _validate.duration(lease_ttl, "lease_ttl")
        cooldown = _validate.duration(backend_cooldown, "backend_cooldown")
        name = _validate.name(name, "name")
        if on_backend_error not in ("fail_open", "fail_closed", "local_fallback"):
            raise ConfigurationError(
                f"unknown on_backend_error {on_backend_error!r}; expected fail_open, "
                "fail_closed or local_fallback"
            )
        self.backend = as_backend(backend)
        self.limit = limit
        self.lease_ttl = ttl
        self._ttl_us = str(max(1, round(ttl * 1_000_000)))
        self.name = name
        self.clock = as_clock(clock)
        self.on_backend_error = on_backend_error
        self._prefix = prefix
        max_keys = self.backend.max_keys if isinstance(self.backend, MemoryBackend) else 1_000_000
        self._memory = _MemoryLeases(max_keys) if isinstance(self.backend, MemoryBackend) else None
        self._fallback = _MemoryLeases(max_keys)
        label = name[:128]
        self._acquired = _metrics.attach(_metrics.CC_ACQUIRED, self, label)
        self._rejected = _metrics.attach(_metrics.CC_REJECTED, self, label)
        self._degraded_count = _metrics.attach(_metrics.CC_DEGRADED, self, label)
        self._errors = _metrics.attach(_metrics.CC_BACKEND_ERRORS, self, label)
        self._corrupt_count = _metrics.attach(_metrics.CC_CORRUPT_KEYS, self, label)
        self._guard = _BackendGuard(
            name,
            cooldown,
            self.clock.now,
            kind="concurrency limiter",
            logger=log,
        )
        self._script = load_script("scalekit.ratelimit", "concurrency")

    @property
    def corrupt_keys(self) -> int:
        """Keys reset after a data error (also in :meth:`stats`)."""
        return int(self._corrupt_count.value)

    def stats(self) -> _metrics.ConcurrencyStats:
        """What this limiter counted since its creation, read from its counters in
        the metrics registry (see :class:`~scalekit.ratelimit.ConcurrencyStats`)."""
        return _metrics.ConcurrencyStats(
            acquired=int(self._acquired.value),
            rejected=int(self._rejected.value),
            degraded=int(self._degraded_count.value),
            backend_errors=int(self._errors.value),
            corrupt_keys=int(self._corrupt_count.value),
        )

    def _granted(self, key: str, lid: str, ok: bool) -> Lease | None:
        if ok:
            self._acquired.inc()
            return Lease(key, lid)
        self._rejected.inc()
        return None

    def _on_backend_error(
        self, op: str, key: str, lid: str, exc: BackendError | None
    ) -> tuple[bool, int, float]:
        if exc is not None:
            self._errors.inc()
        return self._degraded(op, key, lid)

    @staticmethod
    def _check_key(key: object) -> str:
        k = _validate.key(key, "a concurrency key")
        if not k:
            raise ConfigurationError("a concurrency key must be a non-empty str, got ''")
        return k

    def _redis_call(self, op: str, key: str, lid: str) -> tuple[list[str], list[str]]:
        assert isinstance(self.backend, RedisBackend)
        now = self.backend.server_now
        # the format version in the key: state of an older layout is never read
        keys = [build_key(self._prefix, FORMAT_VERSION, escape(self.name), tag=key)]
        us = str(int(now() * 1_000_000)) if now else ""
        args = [op, us, lid, str(self.limit), self._ttl_us]
        return keys, args

    @staticmethod
    def _parse(raw: Any) -> tuple[bool, int, float]:
        return raw[0] == 1, int(raw[1]), int(raw[2]) / 1e6

    def _corrupt(self, key: str, exc: BackendDataError) -> list[str]:
        """A data error on ``key``'s lease set (a wrong type): count it; the keys to
        reset (the guard logs it, once per cooldown)."""
        self._corrupt_count.inc()
        return self._redis_call("count", key, "")[0]

    def _degraded(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        self._degraded_count.inc()
        if self.on_backend_error == "fail_open":
            return op == "acquire" or op == "count", 0, 0.0
        if self.on_backend_error == "local_fallback":
            return self._fallback.op(op, key, lid, self.clock.now(), self.limit, self.lease_ttl)
        return False, 0, self._guard.retry_in()

    def _local(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        assert self._memory is not None
        return self._memory.op(op, key, lid, self.clock.now(), self.limit, self.lease_ttl)


class ConcurrencyLimiter(_ConcurrencyCore):
    """At most ``limit`` holders per key, for threads, sync code and asyncio.

    ``with limiter.hold("user:42", timeout=2.0): ...`` waits up to ``timeout``
    seconds for a slot (``0``: don't wait, ``None``: no bound) and raises
    :class:`ConcurrencyLimitExceeded` when none frees up in time; async code
    writes ``async with limiter.ahold(...)``. Every method has an awaitable twin
    with an ``a`` prefix (``atry_acquire``, ``aacquire``, ``arelease``,
    ``arenew``, ``ain_flight``, ``aping``): the library's convention, see the
    design page. Sync and async holders share the same slots.
    """

    def _op(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        if self._memory is not None:
            return self._local(op, key, lid)
        backend = self.backend
        assert isinstance(backend, RedisBackend)

        keys, args = self._redis_call(op, key, lid)
        # a data error on the lease set is that key's problem: the guard resets it and
        # decides again; corrupt again at once, this call alone gets the failure policy
        return self._guard.call(
            lambda: self._parse(backend.evalsha(self._script, keys, args)),
            lambda exc: self._on_backend_error(op, key, lid, exc),
            lambda exc: backend.delete(self._corrupt(key, exc)),
        )

    def try_acquire(self, key: str) -> Lease | None:
        """Take a slot now, or return ``None``."""
        key = self._check_key(key)
        lid = secrets.token_hex(8)
        ok, _, _ = self._op("acquire", key, lid)
        return self._granted(key, lid, ok)

    def acquire(self, key: str, *, timeout: float | None = 0.0) -> Lease:
        """Take a slot, waiting up to ``timeout`` seconds (``None``: no bound)."""
        key = self._check_key(key)
        timeout = _validate.timeout(timeout)
        lid = secrets.token_hex(8)
        deadline = None if timeout is None else self.clock.now() + timeout
        poll = _MIN_POLL
        while True:
            ok, n, retry = self._op("acquire", key, lid)
            if ok:
                self._acquired.inc()
                return Lease(key, lid)
            now = self.clock.now()
            wait = min(poll, retry) if retry > 0 else poll
            if deadline is not None and now + wait > deadline:
                self._rejected.inc()
                raise ConcurrencyLimitExceeded(
                    f"{n} of {self.limit} slots for {key!r} in use; none freed within {timeout}s",
                    retry_after=retry,
                )
            self.clock.sleep(wait)
            poll = min(poll * 2, _MAX_POLL)

    def release(self, lease: Lease) -> bool:
        """Give the slot back; false if it had expired (or was released) already."""
        return self._op("release", lease.key, lease.id)[0]

    def renew(self, lease: Lease) -> bool:
        """Extend the lease by ``lease_ttl``; false if it had expired already."""
        return self._op("renew", lease.key, lease.id)[0]

    def in_flight(self, key: str) -> int:
        """Live leases for ``key``."""
        key = self._check_key(key)
        return self._op("count", key, "")[1]

    def ping(self) -> None:
        """The startup check: see :meth:`scalekit.ratelimit.RateLimiter.ping`."""
        _startup.ping(f"concurrency limiter {self.name!r}", self.backend)

    @contextlib.contextmanager
    def hold(self, key: str, *, timeout: float | None = 0.0) -> Iterator[Lease]:
        """Hold a slot for the ``with`` block (:meth:`acquire`, then :meth:`release`)."""
        lease = self.acquire(key, timeout=timeout)
        try:
            yield lease
        finally:
            self.release(lease)

    # -- async twins ------------------------------------------------------------

    async def _aop(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        if self._memory is not None:
            return self._local(op, key, lid)
        backend = self.backend
        assert isinstance(backend, RedisBackend)

        keys, args = self._redis_call(op, key, lid)

        async def call() -> tuple[bool, int, float]:
            return self._parse(await backend.aevalsha(self._script, keys, args))

        return await self._guard.acall(
            call,
            lambda exc: self._on_backend_error(op, key, lid, exc),
            lambda exc: backend.adelete(self._corrupt(key, exc)),
        )

    async def atry_acquire(self, key: str) -> Lease | None:
        """:meth:`try_acquire` for async code."""
        key = self._check_key(key)
        lid = secrets.token_hex(8)
        ok, _, _ = await self._aop("acquire", key, lid)
        return self._granted(key, lid, ok)

    async def aacquire(self, key: str, *, timeout: float | None = 0.0) -> Lease:
        """:meth:`acquire` for async code: waits with ``clock.asleep``."""
        key = self._check_key(key)
        timeout = _validate.timeout(timeout)
        lid = secrets.token_hex(8)
        deadline = None if timeout is None else self.clock.now() + timeout
        poll = _MIN_POLL
        while True:
            ok, n, retry = await self._aop("acquire", key, lid)
            if ok:
                self._acquired.inc()
                return Lease(key, lid)
            now = self.clock.now()
            wait = min(poll, retry) if retry > 0 else poll
            if deadline is not None and now + wait > deadline:
                self._rejected.inc()
                raise ConcurrencyLimitExceeded(
                    f"{n} of {self.limit} slots for {key!r} in use; none freed within {timeout}s",
                    retry_after=retry,
                )
            await self.clock.asleep(wait)
            poll = min(poll * 2, _MAX_POLL)

    async def arelease(self, lease: Lease) -> bool:
        """:meth:`release` for async code."""
        return (await self._aop("release", lease.key, lease.id))[0]

    async def arenew(self, lease: Lease) -> bool:
        """:meth:`renew` for async code."""
        return (await self._aop("renew", lease.key, lease.id))[0]

    async def ain_flight(self, key: str) -> int:
        """:meth:`in_flight` for async code."""
        key = self._check_key(key)
        return (await self._aop("count", key, ""))[1]

    async def aping(self) -> None:
        """:meth:`ping` for async code."""
        await _startup.aping(f"concurrency limiter {self.name!r}", self.backend)

    @contextlib.asynccontextmanager
    async def ahold(self, key: str, *, timeout: float | None = 0.0) -> AsyncIterator[Lease]:
        """:meth:`hold` for async code: ``async with limiter.ahold(key): ...``."""
        lease = await self.aacquire(key, timeout=timeout)
        try:
            yield lease
        finally:
            await self.arelease(lease)


class AsyncConcurrencyLimiter(ConcurrencyLimiter):
    """Deprecated: use :class:`ConcurrencyLimiter`, whose awaitable methods are
    ``atry_acquire``, ``aacquire``, ``arelease``, ``arenew``, ``ain_flight``,
    ``aping`` and ``ahold``.

    The older asyncio shape, kept for one release: the same limiter with its
    awaitable methods under the sync names (``async with limiter.hold(key)``).
    Constructing one raises a :class:`DeprecationWarning`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "AsyncConcurrencyLimiter is deprecated; use ConcurrencyLimiter, whose awaitable "
            "methods are atry_acquire / aacquire / arelease / arenew / ain_flight / aping "
            "and ahold (async with limiter.ahold(key))",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)

    try_acquire = ConcurrencyLimiter.atry_acquire  # type: ignore[assignment]
    acquire = ConcurrencyLimiter.aacquire  # type: ignore[assignment]
    release = ConcurrencyLimiter.arelease  # type: ignore[assignment]
    renew = ConcurrencyLimiter.arenew  # type: ignore[assignment]
    in_flight = ConcurrencyLimiter.ain_flight  # type: ignore[assignment]
    ping = ConcurrencyLimiter.aping  # type: ignore[assignment]
    hold = ConcurrencyLimiter.ahold  # type: ignore[assignment]
