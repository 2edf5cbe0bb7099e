"""DataLoader: the loads of one event-loop tick become one batch call.

``await loader.load(key)`` queues ``key`` and returns a future's result. The first
load of a tick schedules a dispatch with ``loop.call_soon``; every load issued
before that callback runs (all the tasks an ``asyncio.gather`` started, a loop over
items, ...) joins the same batch. The dispatch calls ``batch_fn(keys)`` once per
``max_batch_size`` keys, with each key once, in first-requested order.

``batch_fn`` returns either a sequence aligned with ``keys`` (an ``Exception``
instance in a slot fails that key only) or a mapping ``key -> value`` (a missing
key gets ``default`` if given, else fails with ``KeyError``).

Caching is per request: results are remembered only inside
:func:`request_scope` (a ``contextvars`` scope, so two requests never see each
other's entries, even with a module-level loader). Failures are never cached:
neither a batch that raised nor a key that failed. Outside a scope a loader still
batches and deduplicates one tick's loads, and forgets them afterwards.

Every load has its own future, so cancelling one waiter never cancels another
waiting for the same key.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeAlias, TypeVar

from scalekit import _validate as check
from scalekit.errors import ConfigurationError
from scalekit.observability._metrics import default_registry as _metrics

__all__ = ["BatchFn", "DataLoader", "LoaderStats", "request_scope"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BatchFn: TypeAlias = Callable[[list[K]], Awaitable[Sequence[V | BaseException] | Mapping[K, V]]]

_MISSING: Any = object()
_HISTOGRAM_BUCKETS = 12  # batch sizes 1, 2-3, 4-7, ..., >= 2048

_LABEL = ("loader",)
_LOADS = _metrics.counter("scalekit_loader_loads_total", "Keys asked for.", labels=_LABEL)
_CACHE_HITS = _metrics.counter(
    "scalekit_loader_cache_hits_total", "Loads answered from the cache.", labels=_LABEL
)
_FAILED = _metrics.counter(
    "scalekit_loader_failed_batches_total", "Batches that raised.", labels=_LABEL
)
_KEY_ERRORS = _metrics.counter(
    "scalekit_loader_key_errors_total", "Keys that failed alone.", labels=_LABEL
)
#: keys per batch call: its count is the batches, its sum the keys dispatched
_SIZES = _metrics.histogram(
    "scalekit_loader_batch_size",
    "Keys per call of the batch function.",
    labels=_LABEL,
    buckets=tuple(float(2 ** (i + 1) - 1) for i in range(_HISTOGRAM_BUCKETS - 1)),
)

_SCOPE: contextvars.ContextVar[dict[DataLoader[Any, Any], _State[Any, Any]] | None] = (
    contextvars.ContextVar("scalekit_batching_scope", default=None)
)


class request_scope:
    """A request's cache scope: ``with request_scope():`` or ``async with request_scope():``.

    Inside, every :class:`DataLoader` keeps its results for the scope's lifetime;
    tasks started inside (``asyncio.gather``, ``create_task``) share the scope.
    Scopes nest: an inner scope starts empty and the outer one comes back after it.
    """

    __slots__ = ("_token",)

    def __init__(self) -> None:
        self._token: contextvars.Token[Any] | None = None

    def __enter__(self) -> Self:
        self._token = _SCOPE.set({})
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _SCOPE.reset(self._token)
            self._token = None

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoaderStats:
    """Counters of one loader (all scopes together).

    ``loads``: calls to ``load`` (``load_many`` counts each key); ``cache_hits``:
    loads answered from the scope's cache; ``keys_dispatched``: keys sent to the
    batch function; ``batches``: its calls; ``failed_batches``: calls that raised;
    ``key_errors``: keys that failed alone; ``largest_batch``; and
    ``batch_size_histogram[i]``: batches of ``2**i <= size < 2**(i+1)`` keys (the
    last bucket is open-ended).
    """

    name: str
    loads: int
    cache_hits: int
    keys_dispatched: int
    batches: int
    failed_batches: int
    key_errors: int
    largest_batch: int
    batch_size_histogram: tuple[int, ...]

    @property
    def mean_batch_size(self) -> float:
        return self.keys_dispatched / self.batches if self.batches else 0.0

    @property
    def dedupe_ratio(self) -> float:
        """Share of loads that did not send a key to the batch function (0..1)."""
        return 1.0 - self.keys_dispatched / self.loads if self.loads else 0.0


class _State(Generic[K, V]):
    """One loader's state in one scope (or, unscoped, in one event loop)."""

    __slots__ = ("cache", "inflight", "loop", "queued", "running", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, cache: bool) -> None:
        self.loop = loop
        self.cache: dict[K, V] | None = {} if cache else None
        self.inflight: dict[K, list[asyncio.Future[V]]] = {}
        self.queued: list[K] = []
        self.scheduled = False
        # the batch tasks running: the event loop keeps only weak references to
        # tasks, so a batch awaiting something nothing else holds would be collected
        # mid-flight (and its waiters never answered)
        self.running: set[asyncio.Task[None]] = set()


class DataLoader(Generic[K, V]):
    """Batch and deduplicate the loads of one tick into calls of ``batch_fn``.

    ``max_batch_size``: at most this many keys per call (``None``: no limit).
    ``cache``: remember results within a :func:`request_scope` (default True).
    ``default``: the value for keys a mapping result lacks (default: ``KeyError``).
    ``name``: for the stats (default: the batch function's name).
    """

    def __init__(
        self,
        batch_fn: BatchFn[K, V],
        *,
        max_batch_size: int | None = None,
        cache: bool = True,
        default: V = _MISSING,
        name: str | None = None,
    ) -> None:
        if not callable(batch_fn):
            raise ConfigurationError(f"batch_fn must be an async callable, got {batch_fn!r}")
        if max_batch_size is not None:
            check.count(max_batch_size, "max_batch_size (or None)")
        if name is not None:
            name = check.name(name, "name")
        self._batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.cache = bool(cache)
        self._default = default
        self.name = name or getattr(batch_fn, "__qualname__", None) or repr(batch_fn)
        self._unscoped: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _State[K, V]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # counters of this loader's own in the metrics registry
        label = self.name[:128] or "loader"
        self._loads = _LOADS.attach(self, label)
        self._cache_hits = _CACHE_HITS.attach(self, label)
        self._failed_batches = _FAILED.attach(self, label)
        self._key_errors = _KEY_ERRORS.attach(self, label)
        self._sizes = _SIZES.attach(self, label)
        self._largest = 0

    def __repr__(self) -> str:
        return f"DataLoader({self.name!r}, max_batch_size={self.max_batch_size})"

    # -- state ---------------------------------------------------------------
    def _state(self) -> _State[K, V]:
        scope = _SCOPE.get()
        if scope is not None:
            state = scope.get(self)
            if state is None:
                state = scope[self] = _State(asyncio.get_running_loop(), self.cache)
            return state
        loop = asyncio.get_running_loop()
        state = self._unscoped.get(loop)
        if state is None:
            with self._lock:
                state = self._unscoped.get(loop)
                if state is None:
                    state = self._unscoped[loop] = _State(loop, cache=False)
        return state

    # -- loading -------------------------------------------------------------
    async def load(self, key: K) -> V:
        """The value for ``key``, loaded in this tick's batch (or from the scope's cache)."""
        state = self._state()
        self._loads.inc()
        cache = state.cache
        if cache is not None and key in cache:
            self._cache_hits.inc()
            return cache[key]
        return await self._enqueue(state, key)

    def _enqueue(self, state: _State[K, V], key: K) -> asyncio.Future[V]:
        future: asyncio.Future[V] = state.loop.create_future()
        waiters = state.inflight.get(key)
        if waiters is not None:
            waiters.append(future)  # already queued or running: share its result
            return future
        state.inflight[key] = [future]
        state.queued.append(key)
        if not state.scheduled:
            state.scheduled = True
            state.loop.call_soon(self._dispatch, state)
        return future

    async def load_many(self, keys: Iterable[K], *, return_exceptions: bool = False) -> list[Any]:
        """Values for ``keys`` in their order (one batch for all of them).

        The first failing key raises, unless ``return_exceptions`` puts the
        exception in its slot instead (like ``asyncio.gather``).
        """
        state = self._state()
        cache = state.cache
        pending: list[Any] = []
        for key in keys:
            self._loads.inc()
            if cache is not None and key in cache:
                self._cache_hits.inc()
                done: asyncio.Future[V] = state.loop.create_future()
                done.set_result(cache[key])
                pending.append(done)
            else:
                pending.append(self._enqueue(state, key))
        return list(await asyncio.gather(*pending, return_exceptions=return_exceptions))

    def prime(self, key: K, value: V) -> None:
        """Put ``value`` in the current scope's cache (no-op outside a scope)."""
        if _SCOPE.get() is None:
            return
        cache = self._state().cache
        if cache is not None:
            cache[key] = value

    def clear(self, key: K | None = None) -> None:
        """Forget ``key`` (or every key) in the current scope's cache."""
        if _SCOPE.get() is None:
            return
        cache = self._state().cache
        if cache is not None:
            if key is None:
                cache.clear()
            else:
                cache.pop(key, None)

    # -- dispatching -----------------------------------------------------------
    def _dispatch(self, state: _State[K, V]) -> None:
        keys, state.queued = state.queued, []
        state.scheduled = False
        size = self.max_batch_size or len(keys) or 1
        running = state.running
        for i in range(0, len(keys), size):
            task = state.loop.create_task(self._run(state, keys[i : i + size]))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _run(self, state: _State[K, V], keys: list[K]) -> None:
        n = len(keys)
        self._sizes.observe(n)
        if n > self._largest:
            self._largest = n
        try:
            result = await self._batch_fn(keys)
            values = self._align(keys, result)
        except BaseException as exc:  # the whole batch failed: nothing is cached
            self._failed_batches.inc()
            for key in keys:
                for future in state.inflight.pop(key, ()):
                    if not future.done():
                        if isinstance(exc, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(exc)
            if isinstance(exc, Exception):
                return  # delivered to every waiter; not a failure of this task
            raise
        cache = state.cache
        for key, value in zip(keys, values, strict=True):
            waiters = state.inflight.pop(key, ())
            if isinstance(value, BaseException):
                self._key_errors.inc()
                for future in waiters:
                    if not future.done():
                        future.set_exception(value)
                continue
            if cache is not None:
                cache[key] = value
            for future in waiters:
                if not future.done():
                    future.set_result(value)

    def _align(self, keys: list[K], result: Any) -> Sequence[Any]:
        if isinstance(result, Mapping):
            default = self._default
            if default is _MISSING:
                return [result[k] if k in result else KeyError(k) for k in keys]
            return [result.get(k, default) for k in keys]
        if isinstance(result, str | bytes) or not isinstance(result, Sequence):
            raise ConfigurationError(
                f"batch function {self.name!r} must return a sequence aligned with its keys "
                f"or a mapping key -> value, got {type(result).__name__}"
            )
        if len(result) != len(keys):
            raise ConfigurationError(
                f"batch function {self.name!r} returned {len(result)} value(s) "
                f"for {len(keys)} key(s); it must return one per key, in key order"
            )
        return result

    # -- metrics ---------------------------------------------------------------
    def stats(self) -> LoaderStats:
        cumulative = [n for _, n in self._sizes.buckets()]
        per_bucket = [b - a for a, b in zip([0, *cumulative[:-1]], cumulative, strict=True)]
        return LoaderStats(
            name=self.name,
            loads=int(self._loads.value),
            cache_hits=int(self._cache_hits.value),
            keys_dispatched=int(self._sizes.sum),
            batches=self._sizes.count,
            failed_batches=int(self._failed_batches.value),
            key_errors=int(self._key_errors.value),
            largest_batch=self._largest,
            batch_size_histogram=tuple(per_bucket),
        )
