"""Concurrency limits: at most ``limit`` calls in flight per key.

A holder takes a *lease* with a time-to-live; a crashed holder cannot leak its
slot, because an expired lease no longer counts. Long calls renew their lease.
In memory the leases live in a dict; on Redis in one sorted set per key (lease
id -> expiry on the server's clock), changed by one Lua script per operation.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from scalekit._clock import Clock, as_clock
from scalekit._keys import build_key, escape
from scalekit.backends import BackendLike, MemoryBackend, RedisBackend, as_backend
from scalekit.backends._guard import BackendGuard as _BackendGuard
from scalekit.backends._lua import load_script
from scalekit.errors import BackendError, ConcurrencyLimitExceeded, ConfigurationError
from scalekit.ratelimit.limiter import FailurePolicy, log

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
        backend: BackendLike,
        limit: int,
        *,
        lease_ttl: float = 60.0,
        name: str = "concurrency",
        clock: Clock | Callable[[], float] | None = None,
        on_backend_error: FailurePolicy = "fail_open",
        backend_cooldown: float = 5.0,
        prefix: str = "scalekit:cc",
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be an int >= 1, got {limit!r}")
        if not isinstance(lease_ttl, int | float) or not 0 < lease_ttl < math.inf:
            raise ConfigurationError(
                f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}"
            )
        if on_backend_error not in ("fail_open", "fail_closed", "local_fallback"):
            raise ConfigurationError(
                f"unknown on_backend_error {on_backend_error!r}; expected fail_open, "
                "fail_closed or local_fallback"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
        self.backend = as_backend(backend)
        self.limit = limit
        self.lease_ttl = float(lease_ttl)
        self.name = name
        self.clock = as_clock(clock)
        self.on_backend_error = on_backend_error
        self._prefix = prefix
        max_keys = self.backend.max_keys if isinstance(self.backend, MemoryBackend) else 1_000_000
        self._memory = _MemoryLeases(max_keys) if isinstance(self.backend, MemoryBackend) else None
        self._fallback = _MemoryLeases(max_keys)
        if not isinstance(backend_cooldown, int | float) or not 0 < backend_cooldown < math.inf:
            raise ConfigurationError(
                f"backend_cooldown must be a positive number of seconds, got {backend_cooldown!r}"
            )
        self._guard = _BackendGuard(
            name,
            float(backend_cooldown),
            self.clock.now,
            kind="concurrency limiter",
            logger=log,
        )
        self._script = load_script("scalekit.ratelimit", "concurrency")

    def _check_key(self, key: object) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"a concurrency key must be a non-empty str, got {key!r}")

    def _redis_call(self, op: str, key: str, lid: str) -> tuple[list[str], list[str]]:
        assert isinstance(self.backend, RedisBackend)
        now = self.backend.server_now
        keys = [build_key(self._prefix, escape(self.name), tag=key)]
        args = [op, repr(now()) if now else "", lid, str(self.limit), repr(self.lease_ttl)]
        return keys, args

    @staticmethod
    def _parse(raw: Any) -> tuple[bool, int, float]:
        return raw[0] == 1, int(raw[1]), float(raw[2])

    def _degraded(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        if self.on_backend_error == "fail_open":
            return op == "acquire" or op == "count", 0, 0.0
        if self.on_backend_error == "local_fallback":
            return self._fallback.op(op, key, lid, self.clock.now(), self.limit, self.lease_ttl)
        return False, 0, self._guard.retry_in()

    def _local(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        assert self._memory is not None
        return self._memory.op(op, key, lid, self.clock.now(), self.limit, self.lease_ttl)


class ConcurrencyLimiter(_ConcurrencyCore):
    """At most ``limit`` holders per key, for threads and sync code.

    ``with limiter.hold("user:42", timeout=2.0): ...`` waits up to ``timeout``
    seconds for a slot (``0``: don't wait, ``None``: no bound) and raises
    :class:`ConcurrencyLimitExceeded` when none frees up in time.
    """

    def _op(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        if self._memory is not None:
            return self._local(op, key, lid)
        if self._guard.skip():
            return self._degraded(op, key, lid)
        try:
            keys, args = self._redis_call(op, key, lid)
            raw = self.backend.evalsha(self._script, keys, args)  # type: ignore[union-attr]
        except BackendError as exc:
            self._guard.failure(exc)
            return self._degraded(op, key, lid)
        self._guard.success()
        return self._parse(raw)

    def try_acquire(self, key: str) -> Lease | None:
        """Take a slot now, or return ``None``."""
        self._check_key(key)
        lid = secrets.token_hex(8)
        ok, _, _ = self._op("acquire", key, lid)
        return Lease(key, lid) if ok else None

    def acquire(self, key: str, *, timeout: float | None = 0.0) -> Lease:
        """Take a slot, waiting up to ``timeout`` seconds (``None``: no bound)."""
        self._check_key(key)
        lid = secrets.token_hex(8)
        deadline = None if timeout is None else self.clock.now() + timeout
        poll = _MIN_POLL
        while True:
            ok, n, retry = self._op("acquire", key, lid)
            if ok:
                return Lease(key, lid)
            now = self.clock.now()
            wait = min(poll, retry) if retry > 0 else poll
            if deadline is not None and now + wait > deadline:
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
        self._check_key(key)
        return self._op("count", key, "")[1]

    @contextlib.contextmanager
    def hold(self, key: str, *, timeout: float | None = 0.0) -> Iterator[Lease]:
        lease = self.acquire(key, timeout=timeout)
        try:
            yield lease
        finally:
            self.release(lease)


class AsyncConcurrencyLimiter(_ConcurrencyCore):
    """The asyncio twin of :class:`ConcurrencyLimiter` (``async with limiter.hold(key)``)."""

    async def _op(self, op: str, key: str, lid: str) -> tuple[bool, int, float]:
        if self._memory is not None:
            return self._local(op, key, lid)
        if self._guard.skip():
            return self._degraded(op, key, lid)
        try:
            keys, args = self._redis_call(op, key, lid)
            raw = await self.backend.aevalsha(self._script, keys, args)  # type: ignore[union-attr]
        except BackendError as exc:
            self._guard.failure(exc)
            return self._degraded(op, key, lid)
        self._guard.success()
        return self._parse(raw)

    async def try_acquire(self, key: str) -> Lease | None:
        self._check_key(key)
        lid = secrets.token_hex(8)
        ok, _, _ = await self._op("acquire", key, lid)
        return Lease(key, lid) if ok else None

    async def acquire(self, key: str, *, timeout: float | None = 0.0) -> Lease:
        self._check_key(key)
        lid = secrets.token_hex(8)
        deadline = None if timeout is None else self.clock.now() + timeout
        poll = _MIN_POLL
        while True:
            ok, n, retry = await self._op("acquire", key, lid)
            if ok:
                return Lease(key, lid)
            now = self.clock.now()
            wait = min(poll, retry) if retry > 0 else poll
            if deadline is not None and now + wait > deadline:
                raise ConcurrencyLimitExceeded(
                    f"{n} of {self.limit} slots for {key!r} in use; none freed within {timeout}s",
                    retry_after=retry,
                )
            await self.clock.asleep(wait)
            poll = min(poll * 2, _MAX_POLL)

    async def release(self, lease: Lease) -> bool:
        return (await self._op("release", lease.key, lease.id))[0]

    async def renew(self, lease: Lease) -> bool:
        return (await self._op("renew", lease.key, lease.id))[0]

    async def in_flight(self, key: str) -> int:
        self._check_key(key)
        return (await self._op("count", key, ""))[1]

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, timeout: float | None = 0.0) -> AsyncIterator[Lease]:
        lease = await self.acquire(key, timeout=timeout)
        try:
            yield lease
        finally:
            await self.release(lease)
