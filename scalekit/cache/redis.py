"""The Redis cache backend: entries shared by a fleet, fills fenced on the server.

:class:`RedisCacheBackend` implements the remote side of
:class:`~scalekit.cache.backend.CacheBackend` on one Redis server (or a primary).

Layout (``ns`` is ``namespace=``, default ``"sk"``; ``rk`` is ``ns:<key>``)
------------------------------------------------------------------------------
==========================  ============================================================
``ns:<key>``                the entry: ``SKC1<fresh_until>|`` + a fixed binary header
                            (stored_at, ttl, both stale windows, delta, generation,
                            kind) + the serialized value; ``PX`` = the time it stays
                            servable (ttl + the longer stale window)
``ns!l:<rk>``               the fill lease of a key (a random token, ``PX`` lease ttl)
``ns!f:<rk>``               the key's fence (a counter moved by ``delete``/``set``)
``ns!f:t:<tag>``            a tag's fence; ``ns!t:<tag>`` the set of keys carrying it
``ns!f:p:<head>``           a namespace head's fence (``invalidate_namespace``)
``ns!f:*``                  the fence of ``clear()``
==========================  ============================================================

Fence keys expire after ``fence_ttl`` (default 10 minutes); a fill older than that
never stores (it could have outlived a fence it read).

Round trips
-----------
- hit: one ``GET`` (the cost a bare ``GET`` has, plus decoding);
- miss: one ``EVALSHA`` (fill_begin: fresh re-check, lease, fences), the load, one
  ``EVALSHA`` (fill_commit: fences checked, value written, tags, lease released);
- a caller that finds the lease held polls fill_begin with a short backoff (1 ms
  doubling to 50 ms) until the value is fresh, the lease is gone (then it takes it)
  or ``lock_timeout`` passes (then it loads without the lease, still fenced).

Time
----
Entries carry times of one clock the whole fleet agrees on: by default this
process' monotonic clock plus an offset to Redis ``TIME``, measured on first use
and again every ``resync`` seconds (one ``TIME`` round trip; until it succeeds, the
wall clock). Tests pass ``clock=`` (e.g. :class:`~scalekit.testing.FakeClock`),
which is then used as is. Redis' own ``PX`` expiry always runs on real time.

Values
------
Serialized with ``serializer=`` (``"json"`` by default, ``"msgpack"``, or
``"pickle"`` only by name; see :mod:`scalekit.serde`) and decoded to the type hint
the reader passes (a ``@cached`` function's return annotation). Bytes that do not
decode (another format, an older schema, a foreign writer) are a miss, counted in
``decode_errors``; nothing in them is ever executed or imported. A negative entry
for an exception stores the exception's class name and arguments; a reader turns it
back into an exception only if that class is one of its ``cache_exceptions``.

Not on Redis Cluster: tags and namespaces span hash slots (each ``@cached`` key's
own lease and fence share its ``{hash tag}``, but tag sets do not).
"""

from __future__ import annotations

import json
import math
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from scalekit._clock import MONOTONIC, Clock, as_clock
from scalekit._keys import escape
from scalekit.backends._lua import load_script
from scalekit.backends.redis import RedisBackend
from scalekit.cache.backend import CachedError, Entry, FillTicket, RemoteError
from scalekit.cache.freshness import EntryMeta
from scalekit.errors import BackendError, ConfigurationError, SerializationError
from scalekit.serde import Serializer, get_serializer

__all__ = ["RedisCacheBackend"]

_MAGIC = b"SKC1"
_HEAD = struct.Struct("<dddddqB")  # stored_at ttl swr sie delta generation kind
_VALUE, _ERROR = 0, 1
_BEGIN = load_script("scalekit.cache", "fill_begin")
_COMMIT = load_script("scalekit.cache", "fill_commit")
_INVALIDATE = load_script("scalekit.cache", "invalidate")
_RELEASE = load_script("scalekit.cache", "release")
_SCAN_BATCH = 500
_META_MEMO = 1024


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped, for ``SCAN MATCH``."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class _ServerClock:
    """This process' monotonic clock plus an offset to Redis ``TIME``."""

    __slots__ = ("_fetch", "_lock", "_next", "_offset", "_resync")

    def __init__(self, fetch: Callable[[], float], resync: float) -> None:
        self._fetch = fetch
        self._resync = resync
        self._lock = threading.Lock()
        self._offset = time.time() - time.monotonic()  # until TIME answers
        self._next = -math.inf

    def now(self) -> float:
        local = time.monotonic()
        if local >= self._next:
            self._sync(local)
        return local + self._offset

    def _sync(self, local: float) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread measures; use the current offset
        try:
            if local < self._next:
                return
            # retry a failed measurement after 5 s at most, however long resync is
            self._next = local + min(self._resync, 5.0)
            before = time.monotonic()
            try:
                server = self._fetch()
            except Exception:
                return
            after = time.monotonic()
            self._offset = server - (before + after) / 2
            self._next = after + self._resync
        finally:
            self._lock.release()

    def sleep(self, seconds: float) -> None:
        MONOTONIC.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await MONOTONIC.asleep(seconds)


class RedisCacheBackend:
    """Cache entries on Redis, shared by every process that uses the same
    ``namespace``. See the module docstring for layout, time and values.

    :param redis: a URL (``redis://``, ``rediss://``, ``unix://``) or a
        :class:`~scalekit.backends.RedisBackend` (its clients and timeouts are used).
    :param namespace: the prefix of every key (non-empty; escaped).
    :param serializer: ``"json"`` (default), ``"msgpack"``, ``"pickle"`` (opt-in by
        name) or a :class:`~scalekit.serde.Serializer`.
    :param clock: the fleet's clock for entry times; default: monotonic + Redis
        ``TIME`` offset. Pass one only in tests.
    :param lease_ttl: how long a fill lease lives (seconds): the longest one
        process' load can hold the others off a cold key.
    :param fence_ttl: how long fences live; fills older than this never store.
    :param resync: seconds between two measurements of the offset to Redis ``TIME``.
    """

    local = False

    def __init__(
        self,
        redis: str | RedisBackend,
        *,
        namespace: str = "sk",
        serializer: str | Serializer = "json",
        clock: Clock | Callable[[], float] | None = None,
        lease_ttl: float = 10.0,
        fence_ttl: float = 600.0,
        resync: float = 60.0,
    ) -> None:
        if isinstance(redis, str):
            redis = RedisBackend.from_url(redis)
        elif not isinstance(redis, RedisBackend):
            raise ConfigurationError(f"redis must be a Redis URL or a RedisBackend, got {redis!r}")
        if redis.cluster:
            raise ConfigurationError(
                "the Redis cache backend does not run on Redis Cluster (tags and "
                "namespaces span hash slots); point it at one Redis server or primary"
            )
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty str, got {namespace!r}")
        for what, value in (("lease_ttl", lease_ttl), ("fence_ttl", fence_ttl), ("resync", resync)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"{what} must be a number of seconds, got {value!r}")
            if not 0 < value < math.inf:
                raise ConfigurationError(f"{what} must be > 0 seconds, got {value!r}")
        self.redis = redis
        self.serializer: Serializer = (
            get_serializer(serializer) if isinstance(serializer, str) else serializer
        )
        if not isinstance(self.serializer, Serializer):
            raise ConfigurationError(
                f"serializer must be 'json', 'msgpack', 'pickle' or a Serializer, "
                f"got {serializer!r}"
            )
        ns = escape(namespace)
        self.namespace = namespace
        self._ns = ns + ":"
        self._lease = ns + "!l:"
        self._kfence = ns + "!f:"
        self._tfence = ns + "!f:t:"
        self._pfence = ns + "!f:p:"
        self._all = ns + "!f:*"
        self._tagset = ns + "!t:"
        self.lease_ttl = float(lease_ttl)
        self.fence_ttl = float(fence_ttl)
        self.clock: Clock = (
            as_clock(clock) if clock is not None else _ServerClock(self._server_time, resync)
        )
        self.evictions = 0  # Redis evicts by its own maxmemory policy; not seen here
        self.decode_errors = 0
        self._errors = redis._failures
        self._metas: dict[bytes, tuple[EntryMeta, int]] = {}

    def __repr__(self) -> str:
        return f"RedisCacheBackend({self.redis!r}, namespace={self.namespace!r})"

    # --- keys --------------------------------------------------------------------------

    def _rk(self, key: str) -> str:
        return self._ns + key

    def _fences(self, rk: str, tags: Iterable[str], heads: Iterable[str]) -> list[str]:
        return [
            self._kfence + rk,
            *(self._tfence + escape(t) for t in sorted(tags)),
            *(self._pfence + h for h in heads),
            self._all,
        ]

    # --- encoding ------------------------------------------------------------------------

    def _encode(self, value: object, meta: EntryMeta) -> bytes | None:
        """The stored bytes; None for an exception whose arguments do not serialize."""
        kind = _VALUE
        if isinstance(value, CachedError):
            exc = value.error
            kind = _ERROR
            try:
                payload = json.dumps(
                    [type(exc).__module__, type(exc).__qualname__, list(exc.args)],
                    allow_nan=False,
                ).encode()
            except (TypeError, ValueError):
                return None
        else:
            payload = self.serializer.dumps(value)
        fresh_until = repr(meta.stored_at + meta.ttl).encode()
        head = _HEAD.pack(
            meta.stored_at,
            meta.ttl,
            meta.stale_while_revalidate,
            meta.stale_if_error,
            meta.delta,
            meta.generation,
            kind,
        )
        return b"".join((_MAGIC, fresh_until, b"|", head, payload))

    def _decode(self, data: bytes, hint: Any) -> Entry | None:
        try:
            if not data.startswith(_MAGIC):
                raise SerializationError("not a scalekit cache entry")
            start = data.index(b"|", 4) + 1
            end = start + _HEAD.size
            head = data[start:end]
            # a hot key's header repeats on every read: decode it once (bounded memo)
            cached = self._metas.get(head)
            if cached is None:
                cached = self._meta_of(head)
            meta, kind = cached
            body = data[end:]
            if kind == _VALUE:
                return self.serializer.loads(body, hint), meta
            if kind == _ERROR:
                module, qualname, args = json.loads(body)
                return RemoteError(str(module), str(qualname), tuple(args)), meta
            raise SerializationError(f"unknown entry kind {kind}")
        except (SerializationError, ValueError, TypeError, struct.error, ConfigurationError):
            self.decode_errors += 1
            return None

    def _meta_of(self, head: bytes) -> tuple[EntryMeta, int]:
        stored_at, ttl, swr, sie, delta, generation, kind = _HEAD.unpack(head)
        meta = EntryMeta(
            stored_at=stored_at,
            ttl=ttl,
            stale_while_revalidate=swr,
            stale_if_error=sie,
            delta=delta,
            generation=generation,
        )
        metas = self._metas
        if len(metas) >= _META_MEMO:
            metas.clear()
        metas[head] = (meta, kind)
        return meta, kind

    # --- plain operations ----------------------------------------------------------------

    def _fail(self, exc: Exception) -> BackendError:
        return BackendError(f"Redis cache at {self.redis!r} failed: {exc}")

    def _server_time(self) -> float:
        seconds, micros = self.redis.sync_client.time()
        return float(seconds) + float(micros) / 1e6

    def get(self, key: str, hint: Any = None) -> Entry | None:
        try:
            data = self.redis.sync_client.get(self._rk(key))
        except self._errors as exc:
            raise self._fail(exc) from exc
        return None if data is None else self._decode(data, hint)

    async def aget(self, key: str, hint: Any = None) -> Entry | None:
        try:
            data = await self.redis.async_client().get(self._rk(key))
        except self._errors as exc:
            raise self._fail(exc) from exc
        return None if data is None else self._decode(data, hint)

    def _write_args(
        self,
        mode: str,
        key: str,
        data: bytes,
        ttl: float,
        tags: Iterable[str],
        token: str = "",
        fences: Sequence[str] = (),
        seen: Sequence[str] = (),
        age: float = 0.0,
    ) -> tuple[list[str], list[Any]]:
        rk = self._rk(key)
        fence_keys = list(fences) if fences else [self._kfence + rk]
        keys = [rk, self._lease + rk, *fence_keys, *(self._tagset + escape(t) for t in tags)]
        args: list[Any] = [
            mode,
            token,
            data,
            _ms(ttl),
            len(fence_keys),
            _ms(self.fence_ttl),
            math.floor(age * 1000),
            *seen,
        ]
        return keys, args

    def set(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        data = self._encode(value, meta)
        if data is not None:
            self.redis.evalsha(_COMMIT, *self._write_args("set", key, data, ttl, tags))

    async def aset(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        data = self._encode(value, meta)
        if data is not None:
            await self.redis.aevalsha(_COMMIT, *self._write_args("set", key, data, ttl, tags))

    def _invalidate_args(
        self, fences: Sequence[str], keys: Sequence[str], tagsets: Sequence[str]
    ) -> tuple[list[str], list[Any]]:
        return [*fences, *keys, *tagsets], [
            len(fences),
            len(keys),
            _ms(self.fence_ttl),
            self._lease,
        ]

    def _key_args(self, key: str) -> tuple[list[str], list[Any]]:
        rk = self._rk(key)
        return self._invalidate_args([self._kfence + rk], [rk], [])

    def _tag_args(self, tags: Iterable[str]) -> tuple[list[str], list[Any]]:
        names = sorted({escape(t) for t in tags})
        return self._invalidate_args(
            [self._tfence + t for t in names], [], [self._tagset + t for t in names]
        )

    def delete(self, key: str) -> bool:
        return bool(self.redis.evalsha(_INVALIDATE, *self._key_args(key)))

    async def adelete(self, key: str) -> bool:
        return bool(await self.redis.aevalsha(_INVALIDATE, *self._key_args(key)))

    def delete_tags(self, tags: Iterable[str]) -> int:
        return int(self.redis.evalsha(_INVALIDATE, *self._tag_args(tags)))

    async def adelete_tags(self, tags: Iterable[str]) -> int:
        return int(await self.redis.aevalsha(_INVALIDATE, *self._tag_args(tags)))

    def _prefix_plan(self, prefix: str) -> tuple[list[str], list[str]]:
        """The fences ``delete_prefix(prefix)`` moves and the SCAN patterns it drops."""
        if prefix:
            fences = [self._pfence + prefix]
            patterns = [
                _glob(self._ns + prefix) + "*",
                _glob(self._lease + self._ns + prefix) + "*",
            ]
        else:
            fences = [self._all]
            patterns = [
                _glob(self._ns) + "*",
                _glob(self._lease) + "*",
                _glob(self._tagset) + "*",
            ]
        return fences, patterns

    def delete_prefix(self, prefix: str) -> int:
        """Drop every key starting with ``prefix`` (SCAN in batches, not atomic:
        fills that began before are fenced; keys written meanwhile may stay)."""
        fences, patterns = self._prefix_plan(prefix)
        self.redis.evalsha(_INVALIDATE, *self._invalidate_args(fences, [], []))
        client = self.redis.sync_client
        dropped = 0
        try:
            for i, pattern in enumerate(patterns):
                batch: list[bytes] = []
                for k in client.scan_iter(match=pattern, count=_SCAN_BATCH):
                    batch.append(k)
                    if len(batch) >= _SCAN_BATCH:
                        n = client.delete(*batch)
                        dropped += n if i == 0 else 0
                        batch = []
                if batch:
                    n = client.delete(*batch)
                    dropped += n if i == 0 else 0
        except self._errors as exc:
            raise self._fail(exc) from exc
        return dropped

    async def adelete_prefix(self, prefix: str) -> int:
        fences, patterns = self._prefix_plan(prefix)
        await self.redis.aevalsha(_INVALIDATE, *self._invalidate_args(fences, [], []))
        client = self.redis.async_client()
        dropped = 0
        try:
            for i, pattern in enumerate(patterns):
                batch: list[bytes] = []
                async for k in client.scan_iter(match=pattern, count=_SCAN_BATCH):
                    batch.append(k)
                    if len(batch) >= _SCAN_BATCH:
                        n = await client.delete(*batch)
                        dropped += n if i == 0 else 0
                        batch = []
                if batch:
                    n = await client.delete(*batch)
                    dropped += n if i == 0 else 0
        except self._errors as exc:
            raise self._fail(exc) from exc
        return dropped

    def clear(self) -> None:
        """Drop every entry of this namespace (and void fills in progress)."""
        self.delete_prefix("")

    async def aclear(self) -> None:
        await self.adelete_prefix("")

    # --- fills ---------------------------------------------------------------------------

    def _begin_args(
        self, key: str, tags: frozenset[str], heads: Sequence[str], fresh: float, token: str
    ) -> tuple[list[str], list[Any]]:
        rk = self._rk(key)
        fences = self._fences(rk, tags, heads)
        return [rk, self._lease + rk, *fences], [token, _ms(self.lease_ttl), repr(fresh)]

    def _ticket(
        self,
        reply: list[Any],
        key: str,
        tags: frozenset[str],
        keys: list[str],
        token: str,
        now: float,
        hint: Any,
    ) -> FillTicket:
        state = int(reply[0])
        if state == 1:
            entry = self._decode(reply[1], hint)
            if entry is not None:
                return FillTicket("fresh", key, tags, entry=entry)
            # undecodable: load and overwrite it, without a lease (none was taken)
            state = 3
        seen = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in reply[1:])
        if len(seen) != len(keys) - 2:
            seen = ()  # a fresh-but-undecodable reply carries no fences: never stores
        return FillTicket(
            "acquired" if state == 2 else "held",
            key,
            tags,
            token=token,
            fences=tuple(keys[2:]),
            seen=seen,
            started=now,
        )

    def begin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket:
        """On a miss (``margin`` 0) or a refresh ahead of expiry: the value if it stays
        fresh for more than ``margin`` seconds from ``now``, else this caller's lease
        (or "held"), with the fences read."""
        token = secrets.token_hex(8)
        keys, args = self._begin_args(key, tags, heads, now + margin, token)
        reply = self.redis.evalsha(_BEGIN, keys, args)
        return self._ticket(reply, key, tags, keys, token, now, hint)

    async def abegin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket:
        """On a miss (``margin`` 0) or a refresh ahead of expiry: the value if it stays
        fresh for more than ``margin`` seconds from ``now``, else this caller's lease
        (or "held"), with the fences read."""
        token = secrets.token_hex(8)
        keys, args = self._begin_args(key, tags, heads, now + margin, token)
        reply = await self.redis.aevalsha(_BEGIN, keys, args)
        return self._ticket(reply, key, tags, keys, token, now, hint)

    def _commit_args(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> tuple[list[str], list[Any]] | None:
        if not ticket.seen:
            return None
        data = self._encode(value, meta)
        if data is None:
            return None
        return self._write_args(
            "fill",
            ticket.key,
            data,
            ttl,
            sorted(ticket.tags),
            token=ticket.token,
            fences=ticket.fences,
            seen=ticket.seen,
            age=max(0.0, self.clock.now() - ticket.started),
        )

    def commit_fill(self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float) -> bool:
        plan = self._commit_args(ticket, value, meta, ttl)
        if plan is None:
            self.release(ticket)
            return False
        return bool(self.redis.evalsha(_COMMIT, *plan))

    async def acommit_fill(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> bool:
        plan = self._commit_args(ticket, value, meta, ttl)
        if plan is None:
            await self.arelease(ticket)
            return False
        return bool(await self.redis.aevalsha(_COMMIT, *plan))

    def _release_args(self, ticket: FillTicket) -> tuple[list[str], list[Any]]:
        return [self._lease + self._rk(ticket.key)], [ticket.token]

    def release(self, ticket: FillTicket) -> None:
        """Give the lease back without storing (the load failed)."""
        if ticket.state == "acquired":
            self.redis.evalsha(_RELEASE, *self._release_args(ticket))

    async def arelease(self, ticket: FillTicket) -> None:
        if ticket.state == "acquired":
            await self.redis.aevalsha(_RELEASE, *self._release_args(ticket))
