"""The tiered cache backend: an in-process L1 in front of the Redis L2.

:class:`TieredCacheBackend` is a *remote* backend (``local = False``): the cache
drives it exactly like :class:`~scalekit.cache._redis.RedisCacheBackend`, whose
clock, fill protocol (leases and fences on the server) and counters it uses.

Reads
-----
``get`` answers from L1 (a :class:`~scalekit.cache._memory.MemoryCacheBackend` on
the L2's clock) when it holds the key; otherwise it reads L2 and keeps a copy in
L1 for ``min(l1_ttl, the entry's remaining storage ttl)``. The copy carries the
L2 entry's :class:`~scalekit.cache._freshness.EntryMeta`, so the cache decides
freshness (stale windows, XFetch) exactly as it would on L2. L1 holds what L2
decodes (negative entries included), together with the type hint it was decoded
to: a reader asking for another type reads L2.

Fills (``begin_fill`` / ``commit_fill`` / ``release``) run on L2; a committed value
is also kept in L1 (decoded from the bytes L2 stored, as another process would
read it), and so is the entry of a ``fresh`` ticket.

Invalidation
------------
``set``, ``delete``, ``delete_tags``, ``delete_prefix`` and ``clear`` apply to L2,
drop the matching L1 copies, then ``PUBLISH`` a small JSON message on ``channel``
(``{"sender", "kind": "keys"|"tags"|"prefix"|"clear", ...}``). Every process runs
a subscriber (a daemon thread with its own connection, started on first use) that
drops the L1 copies named by other senders' messages. An invalidation therefore
reaches other processes' L1 within the message's delivery time.

- L2 reads do not return an entry's tags, so an L1 copy read from L2 is dropped by
  *any* tag invalidation; copies of this process' own fills carry their tags.
- A copy is kept only if no invalidation was applied to L1 while it was being
  read (a per-backend epoch checked under a lock), so a read that raced with an
  invalidation never re-inserts the old value after the invalidation's message.

The connection
--------------
L1 is used only while the subscriber is subscribed. Before the ``SUBSCRIBE`` is
confirmed, after any error of the subscription connection (or no answer to a
``PING`` for a few seconds: a hung server) and while reconnecting, L1 is empty
and bypassed (reads go to L2). A successful re-subscribe clears L1 once more
(messages may have been missed meanwhile). Reconnection backs off from 0.1 s to
2 s. Each lost-connection episode is counted (``disconnects``) and logged once
(WARNING), its end at INFO. If Redis is down, L2 calls raise
:class:`~scalekit.errors.BackendError` like the Redis backend's, and the cache's
guard degrades reads to loads; L1 (flushed) serves nothing.

``l1_ttl`` bounds how long a copy outlives an invalidation whose message was lost
in a way the subscriber did not notice.

After ``os.fork()`` the child starts with an empty L1 and its own subscriber on
first use. :meth:`TieredCacheBackend.close` stops the subscriber (L1 is then
bypassed for good; L2 and the publishing of invalidations keep working).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from scalekit._clock import Clock
from scalekit._keys import escape
from scalekit.cache._backend import Entry, FillTicket
from scalekit.cache._freshness import EntryMeta
from scalekit.cache._memory import MemoryCacheBackend
from scalekit.cache._redis import RedisCacheBackend
from scalekit.errors import ConfigurationError
from scalekit.observability._metrics import Counter

__all__ = ["TieredCacheBackend"]

log = logging.getLogger("scalekit.cache")

#: the L1 tag of copies whose tags are unknown (read from L2): every tag
#: invalidation drops them
_ANY_TAG = "\x00scalekit:any-tag"
#: seconds one get_message() waits (also how quickly close() is noticed)
_POLL = 0.25
#: a silent connection is PINGed after this long, and declared dead if the PONG
#: (or anything) does not arrive within as long again
_HEARTBEAT = 2.0
#: the longest wait for the SUBSCRIBE confirmation
_CONFIRM = 5.0
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0
#: connection pool settings of the L2 client that must not be copied to ours
_POOL_PRIVATE = ("maint_notifications_pool_handler",)

_instances: weakref.WeakSet[TieredCacheBackend] = weakref.WeakSet()


def _after_fork() -> None:
    for backend in list(_instances):
        backend._forked()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork)


def _positive_seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(
            f"{what} must be a duration in seconds (int, float) or a timedelta, got {value!r}"
        )
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"{what} must be a finite duration > 0 seconds, got {value!r}")
    return float(seconds)


class TieredCacheBackend:
    """An in-process L1 in front of a Redis L2; see the module docstring.

    :param l2: the :class:`~scalekit.cache._redis.RedisCacheBackend` every process
        of the fleet shares.
    :param l1_max_entries: the bound of L1 (LRU beyond it).
    :param l1_ttl: the longest an L1 copy lives (seconds or a timedelta): the
        staleness bound if an invalidation message is lost unnoticed.
    :param channel: the Pub/Sub channel of invalidation messages; default
        ``"<namespace>!tiered"`` of the L2. Processes sharing an L2 namespace must
        use the same channel.
    :param on_message: called (in the subscriber thread) after an invalidation
        message of another process was applied to L1, with the decoded message
        (a hook for tests and metrics; it must not block for long).
    :param on_state: called (in the subscriber thread) with True when the
        subscription is confirmed (L1 in use) and False when it is lost (L1
        flushed and bypassed).
    """

    #: shared by a fleet: fenced fills, async twins (see scalekit.cache._backend)
    local = False

    def __init__(
        self,
        l2: RedisCacheBackend,
        *,
        l1_max_entries: int = 10_000,
        l1_ttl: float | timedelta = 5.0,
        channel: str | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        if not isinstance(l2, RedisCacheBackend):
            raise ConfigurationError(f"l2 must be a RedisCacheBackend, got {l2!r}")
        if channel is None:
            channel = escape(l2.namespace) + "!tiered"
        if not isinstance(channel, str) or not channel:
            raise ConfigurationError(f"channel must be a non-empty str or None, got {channel!r}")
        self.l2 = l2
        self.clock: Clock = l2.clock
        self.l1_ttl = _positive_seconds(l1_ttl, "l1_ttl")
        self.l1 = MemoryCacheBackend(max_entries=l1_max_entries, clock=self.clock)
        self.channel = channel
        self.on_message = on_message
        self.on_state = on_state
        #: lost-subscription episodes so far
        self.disconnects = 0
        #: invalidation messages of other processes applied to L1
        self.messages = 0
        self._lock = threading.Lock()  # L1 writes vs the epoch; state changes
        self._changed = threading.Condition(self._lock)
        self._epoch = 0  # moved by every invalidation applied to L1 and every flush
        self._live = False  # subscribed: L1 may be read and written
        self._closed = False
        self._episode = False  # a lost-connection episode is open (logged)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._sender = secrets.token_hex(8)
        _instances.add(self)

    def __repr__(self) -> str:
        return f"TieredCacheBackend({self.l2!r}, channel={self.channel!r})"

    # --- counters of the L2 ------------------------------------------------------

    @property
    def evictions(self) -> int:
        """Evictions of the shared store (L1's own LRU drops are not evictions:
        the entry is still in L2)."""
        return self.l2.evictions

    @property
    def decode_errors(self) -> int:
        return self.l2.decode_errors

    @property
    def decode_counter(self) -> Counter:
        """The L2's decode-error counter (a :class:`~scalekit.cache._core.Cache`
        puts its own there)."""
        return self.l2.decode_counter

    @decode_counter.setter
    def decode_counter(self, counter: Counter) -> None:
        self.l2.decode_counter = counter

    @property
    def subscribed(self) -> bool:
        """True while the subscription is confirmed and L1 is in use."""
        return self._live

    # --- the subscriber --------------------------------------------------------------

    def _ensure_started(self) -> None:
        """Start the subscriber if it is not running in this process."""
        if self._closed:
            return
        if os.getpid() != self._pid:
            self._forked()  # a fork the at-fork hook did not see
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            stop = self._stop = threading.Event()
            weakref.finalize(self, stop.set)  # an unclosed backend that is collected
            thread = threading.Thread(
                target=_subscribe_loop,
                args=(weakref.ref(self), stop),
                name=f"scalekit-cache-tiered[{self.channel}]",
                daemon=True,
            )
            self._thread = thread
            thread.start()

    def _forked(self) -> None:
        """In a forked child: nothing of the parent's subscriber is valid here."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.l1 = MemoryCacheBackend(max_entries=self.l1.max_entries, clock=self.clock)
        self._live = False
        self._episode = False
        self._epoch += 1
        self._thread = None
        self._stop = threading.Event()
        self._sender = secrets.token_hex(8)

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Start the subscriber if needed and wait until L1 is in use; True if it
        is (False after ``timeout`` seconds, or once closed)."""
        self._ensure_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._live and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
            return self._live

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the subscriber; L1 is flushed and no longer used."""
        with self._lock:
            self._closed = True
            self._live = False
            self._epoch += 1
            self.l1.clear()
            self._changed.notify_all()
            thread = self._thread
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _up(self, stop: threading.Event) -> bool:
        """The subscription is confirmed: L1 starts empty and is used."""
        with self._lock:
            if stop.is_set() or self._closed:
                return False
            self.l1.clear()
            self._epoch += 1
            self._live = True
            ended = self._episode
            self._episode = False
            self._changed.notify_all()
        if ended:
            log.info("tiered cache on channel %r: re-subscribed; L1 in use again", self.channel)
        self._notify_state(True)
        return True

    def _down(self, exc: BaseException | None) -> None:
        """The subscription is lost (``exc``) or stopped (None): flush, bypass L1."""
        with self._lock:
            was_live = self._live
            self._live = False
            self.l1.clear()
            self._epoch += 1
            starts = exc is not None and not self._episode and not self._closed
            if starts:
                self._episode = True
                self.disconnects += 1
            self._changed.notify_all()
        if starts:
            log.warning(
                "tiered cache on channel %r: invalidation subscription lost (%s); "
                "L1 flushed and bypassed until re-subscribed",
                self.channel,
                exc,
            )
        elif exc is not None:
            log.debug("tiered cache on channel %r: reconnect failed: %s", self.channel, exc)
        if was_live or starts:
            self._notify_state(False)

    def _notify_state(self, up: bool) -> None:
        hook = self.on_state
        if hook is not None:
            try:
                hook(up)
            except Exception:
                log.exception("tiered cache: on_state hook failed")

    def _pubsub_client(self) -> Any:
        """A client of its own for the subscription (a connection is held for good)."""
        import redis

        client = self.l2.redis.sync_client
        if hasattr(client, "get_default_node"):  # a Cluster: PUBLISH reaches every node
            client = client.get_default_node().redis_connection
        pool = client.connection_pool
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_PRIVATE}
        # reads happen only once data is there (get_message polls); a longer
        # socket timeout keeps a slow network from cutting a message in half
        kwargs["socket_timeout"] = max(float(kwargs.get("socket_timeout") or 0.0), 5.0)
        return redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )

    def _apply(self, data: bytes | str) -> None:
        """An invalidation message from the channel: drop the L1 copies it names
        (all of them if it cannot be understood)."""
        try:
            msg = json.loads(data)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            msg = {"kind": "clear", "invalid": True}
        if msg.get("sender") == self._sender:
            return  # this process applied it already
        kind = msg.get("kind")
        keys, tags, prefix = msg.get("keys"), msg.get("tags"), msg.get("prefix")
        with self._lock:
            self._epoch += 1
            if kind == "keys" and isinstance(keys, list):
                for key in keys:
                    if isinstance(key, str):
                        self.l1.delete(key)
            elif kind == "tags" and isinstance(tags, list):
                self.l1.delete_tags([*(t for t in tags if isinstance(t, str)), _ANY_TAG])
            elif kind == "prefix" and isinstance(prefix, str):
                self.l1.delete_prefix(prefix)
            else:
                self.l1.clear()
            self.messages += 1
        hook = self.on_message
        if hook is not None:
            try:
                hook(msg)
            except Exception:
                log.exception("tiered cache: on_message hook failed")

    # --- L1 ----------------------------------------------------------------------------

    def _keep(
        self,
        key: str,
        entry: Entry,
        hint: Any,
        epoch: int,
        tags: Iterable[str] = (_ANY_TAG,),
    ) -> None:
        """Copy ``entry`` (read or written at ``epoch``) into L1, unless an
        invalidation was applied since or the subscription is not confirmed."""
        ttl = min(self.l1_ttl, entry[1].retain_until - self.clock.now())
        if ttl <= 0:
            return
        with self._lock:
            if self._live and self._epoch == epoch:
                self.l1.set(key, (hint, entry), entry[1], ttl, tags)

    def _l1_get(self, key: str, hint: Any) -> Entry | None:
        copy = self.l1.get(key)
        if copy is None:
            return None
        kept: tuple[Any, Entry] = copy[0]  # type: ignore[assignment]
        if kept[0] is hint or kept[0] == hint:
            return kept[1]
        return None

    def _drop(self, op: Callable[[MemoryCacheBackend], object]) -> None:
        with self._lock:
            self._epoch += 1
            op(self.l1)

    def _message(self, kind: str, **fields: Any) -> bytes:
        return json.dumps({"sender": self._sender, "kind": kind, **fields}).encode()

    def _publish(self, message: bytes) -> None:
        self.l2.redis.execute("PUBLISH", self.channel, message)

    async def _apublish(self, message: bytes) -> None:
        await self.l2.redis.aexecute("PUBLISH", self.channel, message)

    # --- reads -------------------------------------------------------------------------

    def get(self, key: str, hint: Any = None) -> Entry | None:
        if self._live:
            entry = self._l1_get(key, hint)
            if entry is not None:
                return entry
        else:
            self._ensure_started()
        epoch = self._epoch
        entry = self.l2.get(key, hint)
        if entry is not None:
            self._keep(key, entry, hint, epoch)
        return entry

    async def aget(self, key: str, hint: Any = None) -> Entry | None:
        if self._live:
            entry = self._l1_get(key, hint)
            if entry is not None:
                return entry
        else:
            self._ensure_started()
        epoch = self._epoch
        entry = await self.l2.aget(key, hint)
        if entry is not None:
            self._keep(key, entry, hint, epoch)
        return entry

    # --- writes and invalidations --------------------------------------------------

    def set(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        self._ensure_started()
        try:
            self.l2.set(key, value, meta, ttl, tags)
        finally:
            self._drop(lambda l1: l1.delete(key))
        self._publish(self._message("keys", keys=[key]))

    async def aset(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        self._ensure_started()
        try:
            await self.l2.aset(key, value, meta, ttl, tags)
        finally:
            self._drop(lambda l1: l1.delete(key))
        await self._apublish(self._message("keys", keys=[key]))

    def delete(self, key: str) -> bool:
        self._ensure_started()
        try:
            existed = self.l2.delete(key)
        finally:
            self._drop(lambda l1: l1.delete(key))
        self._publish(self._message("keys", keys=[key]))
        return existed

    async def adelete(self, key: str) -> bool:
        self._ensure_started()
        try:
            existed = await self.l2.adelete(key)
        finally:
            self._drop(lambda l1: l1.delete(key))
        await self._apublish(self._message("keys", keys=[key]))
        return existed

    def delete_tags(self, tags: Iterable[str]) -> int:
        self._ensure_started()
        names = sorted(set(tags))
        try:
            dropped = self.l2.delete_tags(names)
        finally:
            self._drop(lambda l1: l1.delete_tags([*names, _ANY_TAG]))
        self._publish(self._message("tags", tags=names))
        return dropped

    async def adelete_tags(self, tags: Iterable[str]) -> int:
        self._ensure_started()
        names = sorted(set(tags))
        try:
            dropped = await self.l2.adelete_tags(names)
        finally:
            self._drop(lambda l1: l1.delete_tags([*names, _ANY_TAG]))
        await self._apublish(self._message("tags", tags=names))
        return dropped

    def delete_prefix(self, prefix: str) -> int:
        self._ensure_started()
        try:
            dropped = self.l2.delete_prefix(prefix)
        finally:
            self._drop(lambda l1: l1.delete_prefix(prefix))
        self._publish(self._message("prefix", prefix=prefix))
        return dropped

    async def adelete_prefix(self, prefix: str) -> int:
        self._ensure_started()
        try:
            dropped = await self.l2.adelete_prefix(prefix)
        finally:
            self._drop(lambda l1: l1.delete_prefix(prefix))
        await self._apublish(self._message("prefix", prefix=prefix))
        return dropped

    def clear(self) -> None:
        self._ensure_started()
        try:
            self.l2.clear()
        finally:
            self._drop(lambda l1: l1.clear())
        self._publish(self._message("clear"))

    async def aclear(self) -> None:
        self._ensure_started()
        try:
            await self.l2.aclear()
        finally:
            self._drop(lambda l1: l1.clear())
        await self._apublish(self._message("clear"))

    # --- fills (on L2) -------------------------------------------------------------

    def begin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket:
        epoch = self._epoch
        ticket = self.l2.begin_fill(key, tags, heads, now, hint, margin=margin)
        return self._began(ticket, hint, epoch)

    async def abegin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket:
        epoch = self._epoch
        ticket = await self.l2.abegin_fill(key, tags, heads, now, hint, margin=margin)
        return self._began(ticket, hint, epoch)

    def _began(self, ticket: FillTicket, hint: Any, epoch: int) -> FillTicket:
        ticket.extra["hint"] = hint
        if ticket.state == "fresh" and ticket.entry is not None:
            # replaces a stale L1 copy that sent the cache here
            self._keep(ticket.key, ticket.entry, hint, epoch)
        return ticket

    def _committed(self, ticket: FillTicket, value: object, meta: EntryMeta, epoch: int) -> None:
        """Keep a committed value in L1 as L2 stored it (decoded from its bytes)."""
        if not self._live or self._epoch != epoch:
            return
        l2 = self.l2
        data = l2.encode_entry(value, meta)
        if data is None:
            return
        hint = ticket.extra.get("hint")
        entry = l2.decode_entry(data, hint)
        if entry is not None:
            self._keep(ticket.key, entry, hint, epoch, ticket.tags)

    def commit_fill(self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float) -> bool:
        epoch = self._epoch
        stored = self.l2.commit_fill(ticket, value, meta, ttl)
        if stored:
            self._committed(ticket, value, meta, epoch)
        return stored

    async def acommit_fill(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> bool:
        epoch = self._epoch
        stored = await self.l2.acommit_fill(ticket, value, meta, ttl)
        if stored:
            self._committed(ticket, value, meta, epoch)
        return stored

    def release(self, ticket: FillTicket) -> None:
        self.l2.release(ticket)

    async def arelease(self, ticket: FillTicket) -> None:
        await self.l2.arelease(ticket)


def _subscribe_loop(ref: weakref.ref[TieredCacheBackend], stop: threading.Event) -> None:
    """The subscriber thread: subscribe, apply messages, reconnect with backoff.

    Holds its backend only weakly between steps, so an unclosed backend that is no
    longer used can be collected (its finalizer sets ``stop``)."""
    backoff = _BACKOFF_FIRST
    while not stop.is_set():
        me = ref()
        if me is None:
            return
        channel = me.channel
        pubsub: Any = None
        client: Any = None
        try:
            client = me._pubsub_client()
            pubsub = client.pubsub()
            pubsub.subscribe(channel)
            del me
            _confirm(pubsub, stop)
            me = ref()
            if me is None or not me._up(stop):
                return
            del me
            backoff = _BACKOFF_FIRST
            _listen(ref, pubsub, stop)
            return  # stopped
        except Exception as exc:
            me = ref()
            if me is None:
                return
            if stop.is_set():
                return
            me._down(exc)
            del me
        finally:
            _quietly_close(pubsub, client)
            if stop.is_set():
                me = ref()
                if me is not None:
                    me._down(None)
                del me
        if stop.wait(backoff * (0.5 + random.random())):
            return
        backoff = min(backoff * 2, _BACKOFF_MAX)


def _confirm(pubsub: Any, stop: threading.Event) -> None:
    deadline = time.monotonic() + _CONFIRM
    while not stop.is_set():
        msg = pubsub.get_message(timeout=_POLL)
        if msg is not None and msg.get("type") == "subscribe":
            return
        if time.monotonic() > deadline:
            raise TimeoutError("SUBSCRIBE was not confirmed")


def _listen(ref: weakref.ref[TieredCacheBackend], pubsub: Any, stop: threading.Event) -> None:
    last_seen = time.monotonic()
    pinged: float | None = None
    while not stop.is_set():
        msg = pubsub.get_message(timeout=_POLL)
        now = time.monotonic()
        if msg is None:
            if ref() is None:
                return  # the backend was collected without close()
            if pinged is None:
                if now - last_seen > _HEARTBEAT:
                    pubsub.ping()
                    pinged = now
            elif now - pinged > _HEARTBEAT:
                raise ConnectionError(f"no answer to PING in {_HEARTBEAT:g} s")
            continue
        last_seen, pinged = now, None
        kind = msg.get("type")
        if kind == "message":
            me = ref()
            if me is None:
                return
            me._apply(msg["data"])
            del me
        elif kind in ("unsubscribe", "punsubscribe"):
            raise ConnectionError("unsubscribed from the channel")


def _quietly_close(pubsub: Any, client: Any) -> None:
    for thing in (pubsub, client):
        if thing is not None:
            try:
                thing.close()
            except Exception:  # pragma: no cover - closing a broken connection
                pass
    if client is not None:
        try:
            client.connection_pool.disconnect()
        except Exception:  # pragma: no cover
            pass
