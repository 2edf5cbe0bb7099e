"""Pure sampling stages: gates and the local samplers. No I/O, no clock.

A *gate* is a named predicate: an item that fails it is skipped, counted under the
gate's name. A *sampler* gives an item a probability ``p`` and draws a number ``u``
in ``[0, 1)``; the item goes on if ``u < p``. Where ``u`` comes from is the
sampler's choice:

- :class:`Fixed`: a random number (``rng``, injectable for tests);
- :class:`Keyed`: a stable hash of the item's id, so a retry, another process or
  another machine decides the same, and an id sampled at rate ``r`` is sampled at
  every rate above ``r``;
- :class:`Weighted`: ``p`` is a function of the item (e.g. :func:`ramp`), ``u`` a
  random number or, with ``key=``, a stable hash.

Samplers in one pipeline draw independently: each hashes with its own salt (its
name, unless ``salt=`` says otherwise).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, Generic, TypeAlias, TypeVar

from scalekit import _validate as check
from scalekit.errors import ConfigurationError
from scalekit.sampling._hash import HashName, Id, hash_bits, hash_function, multiplier

__all__ = ["Fixed", "Gate", "Keyed", "Rng", "Weighted", "ramp"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

#: an injectable source of uniform numbers in [0, 1): ``random.Random`` or a callable
Rng: TypeAlias = random.Random | Callable[[], float]


def _check_name(name: object, what: str) -> str:
    return check.name(name, f"a {what}'s name")


def _number(value: object, what: str) -> float:
    """What a user function returned where a number is meant, as a float."""
    if value.__class__ is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ConfigurationError(f"{what} must return a number, got {value!r}")


def _as_rng(rng: Rng | None) -> Callable[[], float]:
    if rng is None:
        return random.random
    if isinstance(rng, random.Random):
        return rng.random
    if callable(rng):
        return rng
    raise ConfigurationError(
        f"rng must be a random.Random or a callable returning a float in [0, 1), got {rng!r}"
    )


def _check_key(key: object, what: str) -> None:
    if not callable(key):
        raise ConfigurationError(
            f"{what}'s key must be a callable item -> stable id (str, bytes or int), got {key!r}"
        )


class Gate(Generic[T]):
    """A named predicate: items for which ``predicate(item)`` is false are skipped.

    >>> long_enough = Gate("long_enough", lambda text: len(text) >= 50)
    """

    kind = "gate"
    __slots__ = ("name", "predicate")

    def __init__(self, name: str, predicate: Callable[[T], bool]) -> None:
        self.name = _check_name(name, "gate")
        if not callable(predicate):
            raise ConfigurationError(
                f"gate {name!r}: predicate must be callable, got {predicate!r}"
            )
        self.predicate = predicate

    def __repr__(self) -> str:
        return f"Gate({self.name!r})"


class _Sampler(Generic[T]):
    """What the pipeline asks of a local sampler."""

    kind = "sampler"
    name: str
    #: the constant probability, or None when it depends on the item
    rate: float | None

    def probability(self, item: T) -> float:
        """``p`` for ``item`` (no draw)."""
        raise NotImplementedError

    def draw(self, item: T, p: float) -> bool:
        """Draw for ``item`` at probability ``p``: True if it goes on."""
        raise NotImplementedError


class Fixed(_Sampler[Any]):
    """Keep each item with probability ``rate``, drawn from ``rng``.

    ``rng`` is a ``random.Random`` (seed it in tests) or a callable returning a
    float in ``[0, 1)``; the default is the ``random`` module's generator.
    """

    __slots__ = ("_rng", "name", "rate")

    def __init__(self, rate: float, *, name: str = "fixed", rng: Rng | None = None) -> None:
        self.rate = check.fraction(rate, f"Fixed {name!r}: rate")
        self.name = _check_name(name, "sampler")
        self._rng = _as_rng(rng)

    def probability(self, item: object) -> float:
        return self.rate  # type: ignore[return-value]

    def draw(self, item: object, p: float) -> bool:
        return self._rng() < p

    def __repr__(self) -> str:
        return f"Fixed({self.rate!r}, name={self.name!r})"


class Keyed(_Sampler[T]):
    """Keep an item if the stable hash of ``key(item)`` falls below ``rate``.

    The same id always gets the same decision (across retries, processes and
    machines), and an id kept at rate ``r`` is kept at every rate above ``r``.
    ``key`` returns a str, bytes or int id; ``salt`` (default: ``name``) makes
    samplers with different salts independent; ``hash`` is ``"crc32"`` (fast, the
    default) or ``"blake2b"`` (use it with a secret salt when users choose ids).
    """

    __slots__ = (
        "_threshold",
        "bits",
        "hash",
        "hash_name",
        "key",
        "multiplier",
        "name",
        "rate",
        "salt",
    )

    def __init__(
        self,
        rate: float,
        *,
        key: Callable[[T], Id],
        name: str = "keyed",
        salt: str | None = None,
        hash: HashName = "crc32",
    ) -> None:
        self.rate = check.fraction(rate, f"Keyed {name!r}: rate")
        self.name = _check_name(name, "sampler")
        _check_key(key, f"Keyed {name!r}")
        self.key = key
        self.salt = name if salt is None else salt
        self.hash = hash_function(hash, self.salt)
        self.hash_name = hash
        self.multiplier = multiplier(self.salt) if hash == "crc32" else 0
        self.bits = hash_bits(hash)
        self._threshold = math.floor(self.rate * (1 << self.bits))

    @property
    def threshold(self) -> int:
        """Hashes below this integer are sampled."""
        return self._threshold

    def unit(self, item: T) -> float:
        """The item's hash as a number in ``[0, 1)``: it is kept iff this is < ``rate``."""
        return self.hash(self.key(item)) / (1 << self.bits)

    def probability(self, item: T) -> float:
        return self.rate  # type: ignore[return-value]

    def draw(self, item: T, p: float) -> bool:
        if p == self.rate:
            return self.hash(self.key(item)) < self._threshold
        return self.hash(self.key(item)) < math.floor(p * (1 << self.bits))

    def __repr__(self) -> str:
        return f"Keyed({self.rate!r}, name={self.name!r}, salt={self.salt!r})"


class Weighted(_Sampler[T]):
    """Keep an item with a probability that depends on it: ``probability(item)``.

    The function's result is clamped to ``[0, 1]`` (NaN counts as 0). With ``key=``
    the draw is a stable hash of the id (as in :class:`Keyed`); without, it comes
    from ``rng``. :func:`ramp` builds the common "20 % rising to 30 %" function.
    """

    __slots__ = ("_bits", "_hash", "_rng", "fn", "key", "name", "rate")

    def __init__(
        self,
        probability: Callable[[T], float],
        *,
        name: str = "weighted",
        key: Callable[[T], Id] | None = None,
        salt: str | None = None,
        hash: HashName = "crc32",
        rng: Rng | None = None,
    ) -> None:
        if not callable(probability):
            raise ConfigurationError(
                f"Weighted {name!r}: probability must be a callable item -> float in [0, 1], "
                f"got {probability!r}"
            )
        self.name = _check_name(name, "sampler")
        self.fn = probability
        self.rate = None
        if key is not None:
            _check_key(key, f"Weighted {name!r}")
            if rng is not None:
                raise ConfigurationError(
                    f"Weighted {name!r}: pass key= (stable draws) or rng= (random draws), not both"
                )
        self.key = key
        self._hash = hash_function(hash, name if salt is None else salt)
        self._bits = 1 << hash_bits(hash)
        self._rng = _as_rng(rng)

    def probability(self, item: T) -> float:
        p = self.fn(item)
        if p.__class__ is not float:
            p = _number(p, f"Weighted {self.name!r}: probability(item)")
        if p >= 1.0:
            return 1.0
        if p > 0.0:
            return float(p)
        return 0.0  # also NaN

    def draw(self, item: T, p: float) -> bool:
        if self.key is not None:
            return self._hash(self.key(item)) < p * self._bits
        return self._rng() < p

    def __repr__(self) -> str:
        return f"Weighted({self.fn!r}, name={self.name!r})"


def ramp(
    value: Callable[[T], float], start: tuple[float, float], end: tuple[float, float]
) -> Callable[[T], float]:
    """A probability rising linearly with ``value(item)``, flat outside the ramp.

    ``ramp(lambda m: m.conversation_length, (3, 0.20), (30, 0.30))``: 20 % for
    conversations of 3 messages or fewer, 30 % from 30 messages on, linear between.
    """
    if not callable(value):
        raise ConfigurationError(f"ramp: value must be a callable item -> number, got {value!r}")
    try:
        (x0, p0), (x1, p1) = (float(start[0]), start[1]), (float(end[0]), end[1])
    except (TypeError, ValueError, IndexError):
        raise ConfigurationError(
            f"ramp: start and end must be (value, probability) pairs, got {start!r}, {end!r}"
        ) from None
    p0 = check.fraction(p0, "ramp: the start probability")
    p1 = check.fraction(p1, "ramp: the end probability")
    if not (math.isfinite(x0) and math.isfinite(x1)) or x1 <= x0:
        raise ConfigurationError(
            f"ramp: the end value must be above the start value, got {x0!r} and {x1!r}"
        )
    slope = (p1 - p0) / (x1 - x0)

    def probability(item: T) -> float:
        x = value(item)
        if x.__class__ is not float and x.__class__ is not int:
            x = _number(x, "ramp: value(item)")
        if x <= x0:
            return p0
        if x >= x1:
            return p1
        return p0 + (x - x0) * slope

    probability.__qualname__ = f"ramp({start!r} -> {end!r})"
    return probability
