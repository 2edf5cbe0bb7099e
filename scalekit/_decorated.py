"""One way from a decorated function to the primitive behind it: :func:`primitive_of`.

Every scalekit decorator (``@cached``, ``@rate_limited``, ``@circuit_breaker`` and a
``CircuitBreaker`` used as one, ``@bulkhead``, ``@retry`` with a budget, ``@sampled``)
records the object it runs on with :func:`attach`; ``primitive_of(fn, kind)`` finds
it again by its type::

    from scalekit import primitive_of
    from scalekit.ratelimit import RateLimiter

    primitive_of(search, RateLimiter).reset("user:42")

A function, not an attribute of the wrapper, so that every decorator keeps
returning exactly ``Callable[P, R]``: ``mypy --strict`` types the result from
``kind`` without a protocol, and a decorated method still binds like a method (a
callable protocol with attributes does not, under ``@classmethod``). The records
live in a tuple that ``functools.wraps`` copies to an outer wrapper, so decorators
stack in any order (``primitive_of(f, Cache)`` and ``primitive_of(f, RateLimiter)``
on one ``@rate_limited @cached`` function), and a bound method answers for its
function. The attributes older releases set (``fn.limiter``, ``fn.breaker``,
``fn.bulkhead``, ``fn.budget``, ``fn.pipeline``) still answer for one release, with
a :class:`DeprecationWarning` on use.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from scalekit.errors import ConfigurationError

__all__ = ["attach", "find", "primitive_of"]

T = TypeVar("T")

_ATTR = "__scalekit_primitives__"


def attach(wrapper: Callable[..., object], primitive: object, legacy: str | None = None) -> None:
    """Record ``primitive`` as what ``wrapper`` runs on (the one a decorator built or
    was given); ``legacy``: the deprecated attribute older releases set for it."""
    inner: tuple[object, ...] = getattr(wrapper, _ATTR, ())  # copied by functools.wraps
    setattr(wrapper, _ATTR, (primitive, *inner))  # a new tuple: the inner one stays
    if legacy is not None:
        setattr(wrapper, legacy, _DeprecatedAttribute(primitive, legacy))


def primitive_of(fn: Callable[..., object], kind: type[T]) -> T:
    """The ``kind`` object (a :class:`~scalekit.cache.Cache`, a
    :class:`~scalekit.ratelimit.RateLimiter`, a
    :class:`~scalekit.resilience.CircuitBreaker`, a
    :class:`~scalekit.resilience.Bulkhead`, a :class:`~scalekit.resilience.RetryBudget`,
    a :class:`~scalekit.sampling.Pipeline`) behind the decorated function ``fn``.

    ``fn`` may be a bound method or carry other decorators; with two decorators of
    one kind, the outermost one's object. Raises
    :class:`~scalekit.errors.ConfigurationError` if no decorator of ``fn`` uses a
    ``kind``.
    """
    if not isinstance(kind, type):
        raise ConfigurationError(f"kind must be a class such as RateLimiter, got {kind!r}")
    primitive = find(fn, kind)
    if primitive is None:
        raise ConfigurationError(
            f"{fn!r} has no {kind.__name__}: none of its scalekit decorators uses one"
        )
    return primitive


def find(fn: object, kind: type[T]) -> T | None:
    """:func:`primitive_of`, ``None`` when there is none (for the library's own use)."""
    seen: set[int] = set()
    f: Any = fn
    while f is not None and id(f) not in seen:
        seen.add(id(f))
        for primitive in getattr(f, _ATTR, ()):
            if isinstance(primitive, kind):
                return primitive
        f = getattr(f, "__wrapped__", None)
    return None


class _DeprecatedAttribute:
    """``fn.limiter`` and friends for one more release: the primitive itself behind a
    warning on every use (attribute reads and writes, calls, ``with`` blocks)."""

    __slots__ = ("_message", "_primitive")

    def __init__(self, primitive: object, name: str) -> None:
        object.__setattr__(self, "_primitive", primitive)
        object.__setattr__(
            self,
            "_message",
            f"fn.{name} is deprecated; use scalekit.primitive_of(fn, {type(primitive).__name__})",
        )

    def _target(self) -> Any:
        warnings.warn(object.__getattribute__(self, "_message"), DeprecationWarning, stacklevel=3)
        return object.__getattribute__(self, "_primitive")

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() sees the primitive's class
        return type(object.__getattribute__(self, "_primitive"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._target(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __enter__(self) -> Any:
        return self._target().__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self._target().__exit__(*exc)

    async def __aenter__(self) -> Any:
        return await self._target().__aenter__()

    async def __aexit__(self, *exc: object) -> Any:
        return await self._target().__aexit__(*exc)

    def __eq__(self, other: object) -> bool:
        return bool(self._target() == other)

    def __hash__(self) -> int:
        return hash(object.__getattribute__(self, "_primitive"))

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_primitive"))
