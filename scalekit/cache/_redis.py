"""The Redis cache backend: entries shared by a fleet, fills fenced on the server.

:class:`RedisCacheBackend` implements the remote side of
:class:`~scalekit.cache._backend.CacheBackend` on one Redis server (or a primary) or
on a Redis Cluster (``redis+cluster://``).

Layout (``ns`` is ``namespace=``, escaped; ``<h>`` 8 hex digits of a CRC-32)
-----------------------------------------------------------------------------
==============================  ========================================================
``ns:{<h(key)>}:v:<key>``       the entry: ``SKC2<fresh_until>|`` + a fixed binary
                                header (stored_at, ttl, both stale windows, delta,
                                generation, kind) + the serialized value; ``PX`` = the
                                time it stays servable (ttl + the longer stale window)
``ns:{<h(key)>}:l:<key>``       the key's fill lease (a random token, ``PX`` lease ttl)
``ns:{<h(key)>}:f:<key>``       the key's fence: created by every fill at its begin
                                (a random integer, ``PX`` fence ttl), moved by every
                                invalidation that covers the key
``ns:{<h(tag)>}:t:<tag>``       the names of the values carrying a tag (and of the
                                keys whose fills began with it)
==============================  ========================================================

The namespace is escaped (:func:`scalekit._keys.escape`: never a ``:`` or a brace)
and always followed by ``:{``, and the kind letter sits at a fixed place after the
hash tag, so the layout is injective whatever the namespace, key or tag: a
namespace such as ``tenant1!t`` can never reach ``tenant1``'s sets, leases or
fences. Keys and tags are escaped the same way (per character, so a prefix of a key stays a
prefix of its name).

Spread across shards
--------------------
A key's value, lease and fence share the hash tag ``{<h(key)>}``: each key lives in
its own slot (keys spread over every shard of a Cluster), and one script touches all
three atomically. A tag's set lives in the tag's own slot. Nothing of a namespace is
pinned to one slot.

Fences
------
A fill *registers* at its begin: ``fill_begin`` creates (or keeps) the key's fence
and reads it, in the key's slot, and adds the key to each of its tags' sets. A fill
stores only if its fence still exists with the value it read, checked atomically
with the write in the same slot (``fill_commit``). Every invalidation moves the
fences of every key it covers:

- ``delete(key)``, a direct ``set``: the key's fence, in the same script as the
  ``DEL`` / ``SET``;
- ``delete_tags(tags)``: each tag's set is taken (its members read and the set
  dropped, atomically), then every member's fence is moved and its value dropped;
- ``delete_prefix(prefix)`` / ``clear()``: ``SCAN`` finds every value, lease and
  fence of the prefix (on every primary of a Cluster) and each key found is
  invalidated like ``delete``.

Why that is enough: a fill's loader runs only after its registration (fence created
and read, tag sets joined). An invalidation that runs after the registration finds
the fill (the fence key is there, for ``SCAN`` and in the tag set) and moves its
fence, so the fill does not store (or, if it stored first, its value is dropped by
the same script that moves the fence). An invalidation that reached the key's slot
or the tag's set before the registration started before the loader ran, so the
loader reads data at least as new as the invalidation saw. Either way, a load that
began before an invalidation never stores its value after the invalidation returned.
A fence that expired, was evicted or was overwritten by someone else refuses every
fill that read it (it must exist with the value read); fence values start at a
random integer, so a fence dropped and created again is not mistaken for the old one.

Cost: one extra small key per key filled in the last ``fence_ttl`` (10 minutes by
default). On a single server everything a call touches is in one script. On a
Cluster a tagged fill joins each tag's set with one more round trip per tag (at
begin and at commit), and ``delete_tags`` costs one round trip per tag plus one per
slot holding a member; ``delete_prefix`` and ``clear`` cost a ``SCAN`` of every
primary on both.

Round trips
-----------
- hit: one ``GET`` (the cost a bare ``GET`` has, plus decoding); concurrent readers
  of one key share that ``GET`` (async: per event loop; sync: across the process'
  threads), each decoding the bytes to its own type hint;
- miss: one ``EVALSHA`` (fill_begin: fresh re-check, fence, lease), the load, one
  ``EVALSHA`` (fill_commit: fence checked, value written, tags, lease released);
- a caller that finds the lease held polls fill_begin with a short backoff (1 ms
  doubling to 50 ms) until the value is fresh, the lease is gone (then it takes it)
  or ``lock_timeout`` passes (then it loads without the lease, still fenced).

Time
----
Entries carry times of one clock the whole fleet agrees on: by default this
process' monotonic clock plus an offset to Redis ``TIME``, measured on first use
and again every ``resync`` seconds (every 5 s after a failed measurement; until one
succeeds, the wall clock). Inside a running event loop the measurement is an
asyncio task (an awaited ``TIME``): reading the clock never blocks the loop. Tests
pass ``clock=`` (e.g. :class:`~scalekit.testing.FakeClock`), which is then used as
is. Redis' own ``PX`` expiry always runs on real time.

Values
------
Serialized with ``serializer=`` (``"json"`` by default, ``"msgpack"``, or
``"pickle"`` only by name; see :mod:`scalekit.serde`) and decoded to the type hint
the reader passes (a ``@cached`` function's return annotation). Anything that does
not decode (another format, an older schema, another return type, crafted bytes,
a wrong-typed key: ``WRONGTYPE``) is a miss, counted in ``decode_errors``: the
loader runs and the entry is overwritten; never an exception, never a wait. Nothing
in stored bytes is ever executed or imported. A negative entry for an exception
stores the exception's class name and arguments (bounded JSON); a reader turns it
back into an exception only if that class is one of its ``cache_exceptions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import struct
import threading
import time
from binascii import crc_hqx
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any
from zlib import crc32

from scalekit import _validate
from scalekit._clock import MONOTONIC, Clock, as_clock
from scalekit._keys import escape
from scalekit.backends import RedisBackend
from scalekit.backends._lua import load_script
from scalekit.cache._backend import CachedError, Entry, FillTicket, RemoteError
from scalekit.cache._freshness import EntryMeta
from scalekit.errors import BackendDataError, BackendError, ConfigurationError, SerializationError
from scalekit.observability._metrics import Counter
from scalekit.serde import JsonSerializer, Serializer, get_serializer

__all__ = ["RedisCacheBackend"]

_MAGIC = b"SKC2"
_HEAD = struct.Struct("<dddddqB")  # stored_at ttl swr sie delta generation kind
_VALUE, _ERROR = 0, 1
_BEGIN = load_script("scalekit.cache", "fill_begin", header="common")
_COMMIT = load_script("scalekit.cache", "fill_commit", header="common")
_INVALIDATE = load_script("scalekit.cache", "invalidate", header="common")
_TAGSET = load_script("scalekit.cache", "tagset", header="common")
_RELEASE = load_script("scalekit.cache", "release")
_SCAN_BATCH = 500
_META_MEMO = 1024
_NAME_MEMO = 4096
_SLOTS = 16384
#: negative entries: the exception's class and arguments, always plain JSON
_PLAIN = JsonSerializer()
#: a read whose leader was cancelled: the waiters read again
_RETRY = object()

_Triple = tuple[str, str, str]  # fence, value, lease


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped, for ``SCAN MATCH``."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _tag_of(text: str) -> str:
    """The hash tag (8 hex digits) of an escaped key or tag."""
    return f"{crc32(text.encode()):08x}"


def _text(name: object) -> str | None:
    """A name read back from Redis (bytes), or None if it is not one of ours."""
    if isinstance(name, bytes):
        try:
            return name.decode()
        except UnicodeDecodeError:
            return None
    return name if isinstance(name, str) else None


class _ServerClock:
    """This process' monotonic clock plus an offset to Redis ``TIME``.

    A measurement is due at first use, every ``resync`` seconds, and 5 s after a
    failed one. Called inside a running event loop it starts an asyncio task (one
    at a time) and answers with the current offset: never a blocking call there.
    """

    __slots__ = ("_afetch", "_fetch", "_lock", "_next", "_offset", "_resync", "_tasks")

    def __init__(
        self,
        fetch: Callable[[], float],
        afetch: Callable[[], Awaitable[float]],
        resync: float,
    ) -> None:
        self._fetch = fetch
        self._afetch = afetch
        self._resync = resync
        self._lock = threading.Lock()
        self._offset = time.time() - time.monotonic()  # until TIME answers
        self._next = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        local = time.monotonic()
        if local >= self._next:
            self._sync(local)
        return local + self._offset

    def _sync(self, local: float) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if not self._lock.acquire(blocking=False):
            return  # another thread measures; use the current offset
        try:
            if local < self._next:
                return
            # retry a failed measurement after 5 s at most, however long resync is
            self._next = local + min(self._resync, 5.0)
            if loop is not None:
                task = loop.create_task(self._ameasure())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            before = time.monotonic()
            try:
                server = self._fetch()
            except Exception:
                return
            self._measured(before, server)
        finally:
            self._lock.release()

    async def _ameasure(self) -> None:
        before = time.monotonic()
        try:
            server = await self._afetch()
        except Exception:
            return
        with self._lock:
            self._measured(before, server)

    def _measured(self, before: float, server: float) -> None:
        after = time.monotonic()
        self._offset = server - (before + after) / 2
        self._next = after + self._resync

    def sleep(self, seconds: float) -> None:
        MONOTONIC.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await MONOTONIC.asleep(seconds)


class _SyncRead:
    """A ``GET`` in flight that other threads wait for (each with its own event)."""

    __slots__ = ("data", "error", "events", "finished", "retry")

    def __init__(self) -> None:
        self.data: Any = None
        self.events: list[threading.Event] = []
        self.finished = False
        self.error: Exception | None = None
        self.retry = False


def _wake(waiting: list[asyncio.Future[Any]], data: Any) -> None:
    for fut in waiting:
        if not fut.done():  # a waiter cancelled meanwhile
            fut.set_result(data)


def _server_time(reply: Any) -> float:
    seconds, micros = reply
    return float(seconds) + float(micros) / 1e6


class RedisCacheBackend:
    """Cache entries on Redis or Redis Cluster, shared by every process that uses the
    same ``namespace``. See the module docstring for layout, fences, time and values.

    :param redis: a URL (``redis://``, ``rediss://``, ``unix://``,
        ``redis+cluster://``) or a :class:`~scalekit.backends.RedisBackend` (its
        clients and timeouts are used).
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
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty str, got {namespace!r}")
        lease_ttl = _validate.duration(lease_ttl, "lease_ttl")
        fence_ttl = _validate.duration(fence_ttl, "fence_ttl")
        resync = _validate.duration(resync, "resync")
        self.redis = redis
        self.serializer: Serializer = (
            get_serializer(serializer) if isinstance(serializer, str) else serializer
        )
        if not isinstance(self.serializer, Serializer):
            raise ConfigurationError(
                f"serializer must be 'json', 'msgpack', 'pickle' or a Serializer, "
                f"got {serializer!r}"
            )
        self.namespace = namespace
        self.cluster = bool(redis.cluster)
        #: every name of this namespace starts with this: ``<escaped ns>:{``
        self._head = escape(namespace) + ":{"
        self.lease_ttl = float(lease_ttl)
        self.fence_ttl = float(fence_ttl)
        self._lease_ms = _ms(self.lease_ttl)
        self._fence_ms = _ms(self.fence_ttl)
        self.clock: Clock = (
            as_clock(clock)
            if clock is not None
            else _ServerClock(self._server_time, self._aserver_time, resync)
        )
        self.evictions = 0  # Redis evicts by its own maxmemory policy; not seen here
        #: entries that could not be decoded; a Cache built on this backend puts its
        #: own counter here (exported as ``scalekit_cache_decode_errors_total``)
        self.decode_counter = Counter()
        self._metas: dict[bytes, tuple[EntryMeta, int]] = {}
        self._names: dict[str, _Triple] = {}
        #: async reads in flight, per (event loop, value name): the waiters' futures
        self._reads: dict[tuple[asyncio.AbstractEventLoop, str], list[asyncio.Future[Any]]] = {}
        #: sync reads in flight, per value name (threads; dict.setdefault and list
        #: appends are atomic, so the leader's path takes no lock)
        self._sreads: dict[str, _SyncRead] = {}

    @property
    def decode_errors(self) -> int:
        """Entries that could not be decoded (served as misses)."""
        return int(self.decode_counter.value)

    def __repr__(self) -> str:
        return f"RedisCacheBackend({self.redis!r}, namespace={self.namespace!r})"

    # --- names -------------------------------------------------------------------------

    def _key_names(self, key: str) -> _Triple:
        """(fence, value, lease) names of ``key`` (memoised: hot keys repeat)."""
        names = self._names.get(key)
        if names is None:
            tail = escape(key)
            base = f"{self._head}{_tag_of(tail)}}}:"
            names = (base + "f:" + tail, base + "v:" + tail, base + "l:" + tail)
            if len(self._names) >= _NAME_MEMO:
                self._names.clear()
            self._names[key] = names
        return names

    def _tag_name(self, tag: str) -> str:
        tail = escape(tag)
        return f"{self._head}{_tag_of(tail)}}}:t:{tail}"

    def _parse(self, name: object) -> tuple[str, str, str] | None:
        """(kind, base, tail) of a name of this namespace read back, else None."""
        text = _text(name)
        head = self._head
        if text is None or not text.startswith(head):
            return None
        close = text.find("}", len(head))
        if close < 0 or text[close + 1 : close + 2] != ":" or text[close + 3 : close + 4] != ":":
            return None
        return text[close + 2 : close + 3], text[: close + 1], text[close + 4 :]

    def _triple_of(self, name: object) -> _Triple | None:
        """The (fence, value, lease) names of the key a value/lease/fence name is of."""
        parsed = self._parse(name)
        if parsed is None or parsed[0] not in ("v", "l", "f"):
            return None
        _, base, tail = parsed
        return base + ":f:" + tail, base + ":v:" + tail, base + ":l:" + tail

    @staticmethod
    def _slot(name: str) -> int:
        start = name.find("{")
        end = name.find("}", start + 1)
        return crc_hqx(name[start + 1 : end].encode(), 0) % _SLOTS

    # --- encoding ------------------------------------------------------------------------

    def encode_entry(self, value: object, meta: EntryMeta) -> bytes | None:
        """The stored bytes of an entry (header + payload); None for an exception whose
        arguments do not serialize. Part of the seam the tiered backend uses (its L1
        keeps what L2 would read back)."""
        kind = _VALUE
        if isinstance(value, CachedError):
            exc = value.error
            kind = _ERROR
            try:
                payload = _PLAIN.dumps(
                    [type(exc).__module__, type(exc).__qualname__, list(exc.args)]
                )
            except SerializationError:
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

    def decode_entry(self, data: Any, hint: Any) -> Entry | None:
        """The entry in ``data``, or None (a miss, counted) for anything that does not
        decode: never an exception."""
        try:
            if not isinstance(data, bytes) or not data.startswith(_MAGIC):
                raise SerializationError("not a scalekit cache entry")
            start = data.index(b"|", 4) + 1
            end = start + _HEAD.size
            head = data[start:end]
            # a hot key's header repeats on every read: decode it once (bounded memo)
            cached = self._metas.get(head)
            if cached is None:
                cached = self._meta_of(head)
            meta, kind = cached
            body = memoryview(data)[end:]
            if kind == _VALUE:
                return self.serializer.loads(body, hint), meta  # type: ignore[arg-type]
            if kind == _ERROR:
                module, qualname, args = _PLAIN.loads(body)  # type: ignore[arg-type]
                if not (
                    isinstance(module, str) and isinstance(qualname, str) and type(args) is list
                ):
                    raise SerializationError("malformed negative entry")
                return RemoteError(module, qualname, tuple(args)), meta
            raise SerializationError(f"unknown entry kind {kind}")
        except Exception:
            self.decode_counter.inc()
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

    # --- time ----------------------------------------------------------------------------

    def _server_time(self) -> float:
        return _server_time(self.redis.execute("TIME"))

    async def _aserver_time(self) -> float:
        return _server_time(await self.redis.aexecute("TIME"))

    # --- reads ---------------------------------------------------------------------------

    def _data_error(self) -> None:
        """A reply that is an error about this key's data (``WRONGTYPE``): a miss."""
        self.decode_counter.inc()

    def get(self, key: str, hint: Any = None) -> Entry | None:
        """The entry of ``key`` (None: absent or undecodable); concurrent readers of
        ``key`` in this process' threads share one ``GET``."""
        name = self._key_names(key)[1]
        reads = self._sreads
        while True:
            mine = _SyncRead()
            shared = reads.setdefault(name, mine)
            if shared is mine:
                break
            # a waiter: its own event, then the flag (the leader sets the flag, then
            # the events: whichever comes first, the waiter does not miss the end)
            done = threading.Event()
            shared.events.append(done)
            if not shared.finished:
                done.wait()
            if shared.error is not None:
                if isinstance(shared.error, BackendDataError):
                    self._data_error()
                    return None
                raise BackendError(str(shared.error)) from shared.error
            if not shared.retry:
                data = shared.data
                return None if data is None else self.decode_entry(data, hint)
        try:
            data = self.redis.execute("GET", name)
        except BaseException as exc:
            if isinstance(exc, Exception):
                mine.error = exc
            else:  # KeyboardInterrupt and the like: the waiters read again
                mine.retry = True
            if isinstance(exc, BackendDataError):
                self._data_error()
                return None
            raise
        else:
            mine.data = data
        finally:
            del reads[name]
            mine.finished = True
            for event in mine.events:
                event.set()
        return None if data is None else self.decode_entry(data, hint)

    async def aget(self, key: str, hint: Any = None) -> Entry | None:
        """:meth:`get`; concurrent readers of ``key`` in this event loop share one
        ``GET`` (each decodes the bytes to its own ``hint``). Each waiter awaits a
        future of its own (cancelling it cancels only that waiter)."""
        name = self._key_names(key)[1]
        loop = asyncio.get_running_loop()
        fkey = (loop, name)
        reads = self._reads
        while True:
            waiting = reads.get(fkey)
            if waiting is None:
                break
            mine = loop.create_future()
            waiting.append(mine)
            try:
                data = await mine
            except BackendDataError:
                self._data_error()
                return None
            if data is not _RETRY:
                return None if data is None else self.decode_entry(data, hint)
        waiting = reads[fkey] = []
        try:
            data = await self.redis.aexecute("GET", name)
        except BaseException as exc:
            for fut in waiting:
                if not fut.done():
                    if isinstance(exc, Exception):
                        fut.set_exception(exc)
                    else:  # cancelled: the waiters read again
                        fut.set_result(_RETRY)
            if isinstance(exc, BackendDataError):
                self._data_error()
                return None
            raise
        else:
            if waiting:
                # woken on the next turn: this caller goes on first (on a miss it
                # starts the fill, whose first round trip then overlaps the waiters)
                loop.call_soon(_wake, waiting, data)
        finally:
            if reads.get(fkey) is waiting:
                del reads[fkey]
        return None if data is None else self.decode_entry(data, hint)

    # --- writes --------------------------------------------------------------------------

    def _write_plan(
        self,
        mode: str,
        key: str,
        data: bytes,
        ttl: float,
        tags: Iterable[str],
        token: str = "",
        seen: bytes = b"",
        age: float = 0.0,
    ) -> tuple[list[str], list[Any], list[str]]:
        """(script keys, script args, tag sets the client joins first: Cluster)."""
        fence, value, lease = self._key_names(key)
        tagsets = [self._tag_name(t) for t in sorted(tags)]
        keys = [value, lease, fence]
        if not self.cluster:
            keys += tagsets
        args: list[Any] = [
            mode,
            token,
            data,
            _ms(ttl),
            self._fence_ms,
            math.floor(age * 1000),
            seen,
        ]
        return keys, args, tagsets if self.cluster else []

    def _join(self, tagsets: Sequence[str], value: str, ms: int, op: str = "join") -> None:
        for ts in tagsets:
            self.redis.evalsha(_TAGSET, [ts], [op, value, ms])

    async def _ajoin(self, tagsets: Sequence[str], value: str, ms: int, op: str = "join") -> None:
        if tagsets:
            await asyncio.gather(
                *(self.redis.aevalsha(_TAGSET, [ts], [op, value, ms]) for ts in tagsets)
            )

    def _store(self, keys: list[str], args: list[Any], tagsets: list[str]) -> bool:
        # on a Cluster the tag sets are joined first: a value is never stored
        # without the sets that reach it (a failure raises before the write). A fill
        # joined them at its begin: its commit only extends the sets that still
        # exist (one that is gone was taken by an invalidation: the commit is refused)
        op = "extend" if args[0] == "fill" else "join"
        self._join(tagsets, keys[0], int(args[3]), op)
        return bool(self.redis.evalsha(_COMMIT, keys, args))

    async def _astore(self, keys: list[str], args: list[Any], tagsets: list[str]) -> bool:
        op = "extend" if args[0] == "fill" else "join"
        await self._ajoin(tagsets, keys[0], int(args[3]), op)
        return bool(await self.redis.aevalsha(_COMMIT, keys, args))

    def set(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        data = self.encode_entry(value, meta)
        if data is not None:
            self._store(*self._write_plan("set", key, data, ttl, tags))

    async def aset(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        data = self.encode_entry(value, meta)
        if data is not None:
            await self._astore(*self._write_plan("set", key, data, ttl, tags))

    # --- invalidation ------------------------------------------------------------------

    def _batches(
        self, triples: Sequence[_Triple], tagsets: Sequence[str] = ()
    ) -> Iterator[tuple[list[str], list[Any]]]:
        """``invalidate`` calls for ``triples`` (and, on one server, ``tagsets``):
        one call on one server, one per slot on a Cluster."""
        if not self.cluster:
            if triples or tagsets:
                yield self._invalidate_args(triples, tagsets)
            return
        by_slot: dict[int, list[_Triple]] = {}
        for triple in triples:
            by_slot.setdefault(self._slot(triple[0]), []).append(triple)
        for group in by_slot.values():
            yield self._invalidate_args(group, ())

    def _invalidate_args(
        self, triples: Sequence[_Triple], tagsets: Sequence[str]
    ) -> tuple[list[str], list[Any]]:
        keys = [name for triple in triples for name in triple]
        keys += tagsets
        return keys, [len(triples), self._fence_ms, self._head]

    def _invalidate(self, triples: Sequence[_Triple], tagsets: Sequence[str] = ()) -> int:
        dropped = 0
        for keys, args in self._batches(triples, tagsets):
            dropped += int(self.redis.evalsha(_INVALIDATE, keys, args))
        return dropped

    async def _ainvalidate(self, triples: Sequence[_Triple], tagsets: Sequence[str] = ()) -> int:
        calls = [self.redis.aevalsha(_INVALIDATE, k, a) for k, a in self._batches(triples, tagsets)]
        return sum(int(n) for n in await asyncio.gather(*calls))

    def delete(self, key: str) -> bool:
        return bool(self._invalidate([self._key_names(key)]))

    async def adelete(self, key: str) -> bool:
        return bool(await self._ainvalidate([self._key_names(key)]))

    def _members(self, replies: Iterable[Any]) -> list[_Triple]:
        seen: dict[str, _Triple] = {}
        for members in replies:
            for m in members or ():
                triple = self._triple_of(m)
                if triple is not None:
                    seen[triple[1]] = triple
        return list(seen.values())

    def delete_tags(self, tags: Iterable[str]) -> int:
        tagsets = [self._tag_name(t) for t in sorted(set(tags))]
        if not self.cluster:
            return self._invalidate((), tagsets)
        taken = [self.redis.evalsha(_TAGSET, [ts], ["take"]) for ts in tagsets]
        return self._invalidate(self._members(taken))

    async def adelete_tags(self, tags: Iterable[str]) -> int:
        tagsets = [self._tag_name(t) for t in sorted(set(tags))]
        if not self.cluster:
            return await self._ainvalidate((), tagsets)
        taken = await asyncio.gather(
            *(self.redis.aevalsha(_TAGSET, [ts], ["take"]) for ts in tagsets)
        )
        return await self._ainvalidate(self._members(taken))

    def _pattern(self, prefix: str) -> str:
        """The ``SCAN MATCH`` pattern of ``prefix``'s names ("": the whole namespace).
        Escaping is per character, so ``escape(key)`` starts with ``escape(prefix)``
        exactly when ``key`` starts with ``prefix``."""
        if not prefix:
            return _glob(self._head) + "*"
        return _glob(self._head) + "?" * 8 + "}:[vlf]:" + _glob(escape(prefix)) + "*"

    def _sort(self, names: Iterable[Any], triples: dict[str, _Triple], sets: list[str]) -> None:
        for name in names:
            parsed = self._parse(name)
            if parsed is None:
                continue
            kind, base, tail = parsed
            if kind in ("v", "l", "f"):
                triples[tail] = (base + ":f:" + tail, base + ":v:" + tail, base + ":l:" + tail)
            elif kind == "t":
                sets.append(base + ":t:" + tail)

    def _drop_sets(self, sets: list[str]) -> None:
        for name in sets:
            self.redis.execute("DEL", name)

    def delete_prefix(self, prefix: str) -> int:
        """Invalidate every key starting with ``prefix`` (SCAN in batches, on every
        primary of a Cluster: fills in progress are fenced; keys written meanwhile
        by a direct ``set`` may stay)."""
        dropped = 0
        for names in self.redis.scan_iter(self._pattern(prefix), _SCAN_BATCH):
            triples: dict[str, _Triple] = {}
            sets: list[str] = []
            self._sort(names, triples, sets)
            dropped += self._invalidate(list(triples.values()))
            self._drop_sets(sets)
        return dropped

    async def adelete_prefix(self, prefix: str) -> int:
        dropped = 0
        async for names in self.redis.ascan_iter(self._pattern(prefix), _SCAN_BATCH):
            triples: dict[str, _Triple] = {}
            sets: list[str] = []
            self._sort(names, triples, sets)
            dropped += await self._ainvalidate(list(triples.values()))
            for name in sets:
                await self.redis.aexecute("DEL", name)
        return dropped

    def clear(self) -> None:
        """Drop every entry of this namespace (and void fills in progress)."""
        self.delete_prefix("")

    async def aclear(self) -> None:
        await self.adelete_prefix("")

    # --- fills ---------------------------------------------------------------------------

    def _begin_args(
        self, key: str, tags: frozenset[str], fresh: str, token: str
    ) -> tuple[list[str], list[Any], list[str]]:
        fence, value, lease = self._key_names(key)
        tagsets = [self._tag_name(t) for t in sorted(tags)]
        keys = [value, lease, fence]
        if not self.cluster:
            keys += tagsets
        args = [token, self._lease_ms, fresh, self._fence_ms, secrets.randbelow(2**48) + 1]
        return keys, args, tagsets if self.cluster else []

    def _ticket(
        self,
        reply: Any,
        key: str,
        tags: frozenset[str],
        token: str,
        now: float,
        fresh: float,
        hint: Any,
    ) -> FillTicket | None:
        """The ticket of a ``fill_begin`` reply; None: the "fresh" value it answered
        does not decode (or is not fresh by its own header): begin again, forced."""
        state = int(reply[0])
        if state == 1:
            entry = self.decode_entry(reply[1], hint)
            if entry is None:
                return None
            meta = entry[1]
            if not fresh < meta.stored_at + meta.ttl:
                self.decode_counter.inc()  # its prefix and its header disagree: crafted
                return None
            return FillTicket("fresh", key, tags, entry=entry)
        fence = reply[1]
        seen = fence.decode("latin-1") if isinstance(fence, bytes) else str(fence)
        return FillTicket(
            "acquired" if state == 2 else "held",
            key,
            tags,
            token=token,
            seen=(seen,),
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
        (or "held"), with the key's fence created and read (the fill registered).
        ``heads`` is not needed here: prefix invalidation finds fills by their fences."""
        fresh = now + margin
        mode = repr(fresh)
        while True:
            token = secrets.token_hex(8)
            keys, args, tagsets = self._begin_args(key, tags, mode, token)
            reply = self.redis.evalsha(_BEGIN, keys, args)
            ticket = self._ticket(reply, key, tags, token, now, fresh, hint)
            if ticket is None:
                mode = "force"
                continue
            if tagsets and ticket.state != "fresh":
                try:
                    self._join(tagsets, keys[0], self._fence_ms)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.release(ticket)
                    raise
            return ticket

    async def abegin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket:
        """The async :meth:`begin_fill`."""
        fresh = now + margin
        mode = repr(fresh)
        while True:
            token = secrets.token_hex(8)
            keys, args, tagsets = self._begin_args(key, tags, mode, token)
            reply = await self.redis.aevalsha(_BEGIN, keys, args)
            ticket = self._ticket(reply, key, tags, token, now, fresh, hint)
            if ticket is None:
                mode = "force"
                continue
            if tagsets and ticket.state != "fresh":
                try:
                    await self._ajoin(tagsets, keys[0], self._fence_ms)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await self.arelease(ticket)
                    raise
            return ticket

    def _commit_plan(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> tuple[list[str], list[Any], list[str]] | None:
        if not ticket.seen:
            return None
        data = self.encode_entry(value, meta)
        if data is None:
            return None
        return self._write_plan(
            "fill",
            ticket.key,
            data,
            ttl,
            ticket.tags,
            token=ticket.token,
            seen=ticket.seen[0].encode("latin-1"),
            age=max(0.0, self.clock.now() - ticket.started),
        )

    def commit_fill(self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float) -> bool:
        plan = self._commit_plan(ticket, value, meta, ttl)
        if plan is None:
            self.release(ticket)
            return False
        return self._store(*plan)

    async def acommit_fill(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> bool:
        plan = self._commit_plan(ticket, value, meta, ttl)
        if plan is None:
            await self.arelease(ticket)
            return False
        return await self._astore(*plan)

    def _release_args(self, ticket: FillTicket) -> tuple[list[str], list[Any]]:
        return [self._key_names(ticket.key)[2]], [ticket.token]

    def release(self, ticket: FillTicket) -> None:
        """Give the lease back without storing (the load failed)."""
        if ticket.state == "acquired":
            self.redis.evalsha(_RELEASE, *self._release_args(ticket))

    async def arelease(self, ticket: FillTicket) -> None:
        if ticket.state == "acquired":
            await self.redis.aevalsha(_RELEASE, *self._release_args(ticket))
