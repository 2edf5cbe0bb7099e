"""``@cached``: one decorator for sync and async functions and methods.

The function is inspected once, at decoration time (``inspect.iscoroutinefunction``)
and gets a sync or an async wrapper; both call one :class:`~scalekit.cache._core.Cache`
(``get_or_load`` / ``aget_or_load``). ``ParamSpec`` keeps the signature, so
``mypy --strict`` sees the original parameter and return types.

Keys come from :class:`~scalekit.cache._keys.KeyBuilder` (defaults applied, so
``f(1)`` and ``f(a=1)`` share an entry; ``self`` of methods left out, ``cls``
kept). ``key=`` replaces the argument part with your own string, still under the
function's ``<prefix>:<namespace>:v<version>:`` head, so namespace/version
invalidation covers it. ``tags=`` is a collection of tags or a callable receiving
the function's arguments and returning them.

Without ``cache=``, the process-wide :func:`~scalekit.cache._core.default_cache`
(bounded, in memory) is used, chosen at decoration time.

Invalidation of one call: :func:`invalidate(fn, *args, **kwargs)
<invalidate>` (:func:`ainvalidate` in async code); its key: :func:`cache_key`;
the cache: ``scalekit.primitive_of(fn, Cache)``, the one accessor of every
decorator (:func:`cache_of` is its deprecated older name). These are
functions rather than attributes of the wrapper so that the wrapper's type stays
exactly ``Callable[P, R]`` (a callable protocol with extra attributes would not
bind as a method under mypy).
"""

from __future__ import annotations

import functools
import inspect
import typing
import warnings
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from scalekit._decorated import attach
from scalekit.cache._backend import CachedError
from scalekit.cache._core import Cache, CacheOptions, default_cache
from scalekit.cache._freshness import EntryMeta, Freshness
from scalekit.cache._keys import KeyBuilder
from scalekit.cache._options import check_tags as _check_tags
from scalekit.errors import ConfigurationError

__all__ = ["ainvalidate", "cache_key", "cache_of", "cached", "invalidate"]

P = ParamSpec("P")
R = TypeVar("R")

_ATTR = "__scalekit_cached__"
_FRESH = Freshness.FRESH


class _Binding:
    """What a decorated function knows: its cache and how to compute its keys."""

    __slots__ = ("cache", "key")

    def __init__(self, cache: Cache, key: Callable[..., str]) -> None:
        self.cache = cache
        self.key = key


def cached(
    *,
    ttl: float | timedelta,
    key: Callable[..., str] | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] = (),
    cache: Cache | None = None,
    namespace: str | None = None,
    version: int | str = 1,
    ignore: Iterable[str] = (),
    stale_while_revalidate: float | timedelta = 0.0,
    stale_if_error: float | timedelta = 0.0,
    beta: float = 1.0,
    cache_none: bool = False,
    cache_exceptions: tuple[type[Exception], ...] = (),
    negative_ttl: float | timedelta | None = None,
    lock_timeout: float | timedelta | None = 10.0,
    type_hint: Any = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache a function's results for ``ttl`` seconds; see the module docstrings.

    :param key: a callable receiving the function's arguments and returning the
        argument part of the key (default: every argument, via ``KeyBuilder``).
    :param tags: tags of every entry, or a callable receiving the arguments.
    :param cache: the :class:`Cache` (default: the process-wide memory cache).
    :param namespace, version, ignore: passed to ``KeyBuilder``.
    :param stale_while_revalidate, stale_if_error, beta, cache_none,
        cache_exceptions, negative_ttl, lock_timeout: see :class:`CacheOptions`.
    :param type_hint: the type a remote backend decodes hits to (default: the
        return annotation; a forward reference is resolved at the first call, and
        one still undefined then raises :class:`~scalekit.errors.ConfigurationError`).

    Invalid values raise :class:`~scalekit.errors.ConfigurationError` at decoration.
    """
    opts = CacheOptions(
        ttl=ttl,
        stale_while_revalidate=stale_while_revalidate,
        stale_if_error=stale_if_error,
        beta=beta,
        cache_none=cache_none,
        cache_exceptions=cache_exceptions,
        negative_ttl=negative_ttl,
        lock_timeout=lock_timeout,
    )
    if cache is not None and not isinstance(cache, Cache):
        raise ConfigurationError(f"cache must be a Cache, got {cache!r}")
    if key is not None and not callable(key):
        raise ConfigurationError(f"key must be a callable returning a str, got {key!r}")
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be a collection of str, e.g. ({tags!r},)")
    tag_fn: Callable[..., Iterable[str]] | None = tags if callable(tags) else None
    # static tags are checked once, here; a tags= callable's answer on every load
    static_tags = frozenset() if tag_fn is not None else _check_tags(cast(Iterable[str], tags))

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        c = cache if cache is not None else default_cache()
        builder: KeyBuilder[P] = KeyBuilder(
            fn, namespace=namespace, version=version, ignore=ignore, prefix=c.prefix
        )
        make_key: Callable[..., str] = builder.function() if key is None else builder.custom(key)

        def entry_tags(args: tuple[Any, ...], kwargs: dict[str, Any]) -> frozenset[str]:
            return static_tags if tag_fn is None else _check_tags(tag_fn(*args, **kwargs))

        # what a remote backend needs: the namespace heads its fills are fenced by
        # (invalidate_namespace) and the type values decode to (the return annotation)
        heads = builder.heads
        # an in-process backend keeps the objects themselves: only a remote one
        # decodes, and needs the type (a forward reference: resolved at first call)
        hint: Any = type_hint if type_hint is not None or c._in_process else _return_hint(fn)
        pending = hint is _PENDING
        if pending:
            hint = None

        # The hit path: key, read, classify; a plain FRESH hit is answered here (a
        # cached exception re-raised), before any loader, tags or single-flight.
        # Every other state continues where get_or_load would after its read.
        read = c._reader(opts, hint)
        aread = None if c._in_process else c._areader(opts, hint)
        # this function's namespace's counters, resolved once: the hit path counts on
        # them with one next(), no lookup (see scalekit.cache._metrics)
        counters = c._metrics.of(builder.namespace)
        hits = counters.hits.tick

        def resolve() -> None:
            """The first call's resolution of a forward-referenced return type."""
            nonlocal hint, read, aread, pending
            hint = _return_hint(fn, strict=True)
            read = c._reader(opts, hint)
            aread = c._areader(opts, hint)
            pending = False

        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            async def amiss(
                k: str,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
                entry: tuple[object, EntryMeta] | None,
                state: Freshness | None,
            ) -> Any:
                return await c._aserve_or_load(
                    k,
                    lambda: afn(*args, **kwargs),
                    entry_tags(args, kwargs),
                    opts,
                    entry,
                    state,
                    heads,
                    hint,
                    counters,
                )

            if c._in_process:  # the read is a plain call: nothing to await on a hit

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    k = make_key(*args, **kwargs)
                    entry, state = read(k)
                    if state is _FRESH and entry is not None:
                        next(hits)
                        value = entry[0]
                        if type(value) is CachedError:
                            value.reraise()
                        return value
                    return await amiss(k, args, kwargs, entry, state)

            else:

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    if pending:
                        resolve()
                    k = make_key(*args, **kwargs)
                    assert aread is not None
                    entry, state = await aread(k)
                    if state is _FRESH and entry is not None:
                        next(hits)
                        value = entry[0]
                        if type(value) is CachedError:
                            value.reraise()
                        return value
                    return await amiss(k, args, kwargs, entry, state)

            setattr(async_wrapper, _ATTR, _Binding(c, make_key))
            attach(async_wrapper, c)
            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if pending:
                resolve()
            k = make_key(*args, **kwargs)
            entry, state = read(k)
            if state is _FRESH and entry is not None:
                next(hits)
                value = entry[0]
                if type(value) is CachedError:
                    value.reraise()
                return cast(R, value)
            return c._serve_or_load(
                k,
                lambda: fn(*args, **kwargs),
                entry_tags(args, kwargs),
                opts,
                entry,
                state,
                heads,
                hint,
                counters,
            )

        setattr(sync_wrapper, _ATTR, _Binding(c, make_key))
        attach(sync_wrapper, c)
        return sync_wrapper

    return decorate


#: a return annotation not resolvable yet (a forward reference): resolved at first call
_PENDING: Any = object()


def _return_hint(fn: Callable[..., object], *, strict: bool = False) -> Any:
    """The return annotation values decode to on a remote backend (``None``: none);
    ``_PENDING`` if it names what is not defined yet, unless ``strict``: then a
    :class:`ConfigurationError` naming the function and the fix."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        if not strict:
            return _PENDING
        raise ConfigurationError(
            f"@cached {fn.__qualname__}: its return annotation cannot be resolved "
            f"({type(exc).__name__}: {exc}); define the type before the first call "
            "or pass type_hint="
        ) from exc
    hint = hints.get("return")
    return None if hint is type(None) else hint


def _binding(fn: Callable[..., object]) -> _Binding:
    binding = getattr(fn, _ATTR, None)
    if not isinstance(binding, _Binding):
        raise ConfigurationError(f"{fn!r} is not a function decorated with @cached")
    return binding


def cache_of(fn: Callable[..., object]) -> Cache:
    """Deprecated: ``scalekit.primitive_of(fn, Cache)``, the one accessor of every
    decorator. The :class:`Cache` a ``@cached`` function uses."""
    warnings.warn(
        "cache_of(fn) is deprecated; use scalekit.primitive_of(fn, Cache)",
        DeprecationWarning,
        stacklevel=2,
    )
    return _binding(fn).cache


def cache_key(fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> str:
    """The key of the call ``fn(*args, **kwargs)`` of a ``@cached`` function; ``fn``
    may be a bound method (``cache_key(svc.get, 1)``)."""
    b = _binding(fn)
    if inspect.ismethod(fn):
        return b.key(fn.__self__, *args, **kwargs)
    return b.key(*args, **kwargs)


def invalidate(fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> bool:
    """Drop the entry of the call ``fn(*args, **kwargs)`` (and void loads of it in
    progress); True if it was cached."""
    return _binding(fn).cache.delete(cache_key(fn, *args, **kwargs))


async def ainvalidate(fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> bool:
    """:func:`invalidate` for async code (the cache's :meth:`~Cache.adelete`)."""
    return await _binding(fn).cache.adelete(cache_key(fn, *args, **kwargs))
