"""Weighted reservoir sampling: keep ``k`` items of a stream of unknown length.

Efraimidis and Spirakis (2006), "Weighted random sampling with a reservoir":
each item gets the key ``u ** (1 / w)`` (``u`` uniform in (0, 1), ``w`` its weight)
and the reservoir keeps the ``k`` largest keys. The result is a weighted sample
without replacement: the first item chosen is item *i* with probability
``w_i / sum(w)``, the next among the rest likewise, and so on.

- :class:`Reservoir` (the public one) draws a random *jump*: once the reservoir is
  full it skips over items without drawing for them, so it needs
  ``O(k log(n / k))`` random numbers instead of ``n`` (algorithm A-ExpJ);
- :class:`_OneDrawPerItem` draws one random number per item (algorithm A-Res): the
  same distribution, slower; kept as the plain reference the statistical tests hold
  :class:`Reservoir` to.

Keys are handled as logarithms (``log(u) / w``), which orders the same way as
``u ** (1 / w)`` and does not underflow for tiny weights. Not thread-safe: one
reservoir per stream (wrap it in a lock to share one).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import Generic, TypeVar

from scalekit import _validate as check
from scalekit.sampling._stages import Rng, _as_rng

__all__ = ["Reservoir"]

T = TypeVar("T")


class _Reservoir(Generic[T]):
    __slots__ = ("_heap", "_rng", "_seq", "k", "seen")

    def __init__(self, k: int, *, rng: Rng | None = None) -> None:
        self.k = check.count(k, "a reservoir's size k")
        self._rng = _as_rng(rng)
        # min-heap of (log-key, sequence number, item): the root is the smallest key
        self._heap: list[tuple[float, int, T]] = []
        self._seq = 0
        #: items offered so far
        self.seen = 0

    def _uniform(self) -> float:
        """A uniform number in (0, 1): 0 is redrawn (its log is -inf)."""
        u = self._rng()
        while u <= 0.0:
            u = self._rng()
        return u

    @staticmethod
    def _weight(weight: float) -> float:
        return check.number(weight, "a weight", minimum=0, open_minimum=True)

    def add(self, item: T, weight: float = 1.0) -> None:
        raise NotImplementedError

    def extend(self, items: Iterable[tuple[T, float]]) -> None:
        """``add`` every ``(item, weight)`` pair."""
        for item, weight in items:
            self.add(item, weight)

    def sample(self) -> list[T]:
        """The items kept, highest key first (at most ``k``)."""
        return [entry[2] for entry in sorted(self._heap, reverse=True)]

    def __len__(self) -> int:
        return len(self._heap)

    def _push(self, key: float, item: T) -> None:
        self._seq += 1
        entry = (key, self._seq, item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)


class _OneDrawPerItem(_Reservoir[T]):
    """A-Res: one random number per item; keeps the ``k`` largest ``u ** (1/w)``."""

    __slots__ = ()

    def add(self, item: T, weight: float = 1.0) -> None:
        """Offer ``item`` with ``weight`` (> 0)."""
        w = self._weight(weight)
        self.seen += 1
        key = math.log(self._uniform()) / w
        if len(self._heap) < self.k or key > self._heap[0][0]:
            self._push(key, item)


class Reservoir(_Reservoir[T]):
    """Keep a weighted sample of ``k`` items of a stream of unknown length.

    ``add(item, weight)`` offers an item; ``sample()`` returns the items kept. Once
    full it skips items by exponential jumps (A-ExpJ), drawing ``O(k log(n / k))``
    random numbers for ``n`` items. Not thread-safe: one reservoir per stream.
    """

    __slots__ = ("_jump",)

    def __init__(self, k: int, *, rng: Rng | None = None) -> None:
        super().__init__(k, rng=rng)
        self._jump = 0.0  # weight left to skip before the next insertion

    def _next_jump(self) -> None:
        # X_w = log(r) / log(T_w): the total weight to skip, T_w the smallest key.
        self._jump = math.log(self._uniform()) / self._heap[0][0]

    def add(self, item: T, weight: float = 1.0) -> None:
        """Offer ``item`` with ``weight`` (> 0)."""
        w = self._weight(weight)
        self.seen += 1
        if len(self._heap) < self.k:
            self._push(math.log(self._uniform()) / w, item)
            if len(self._heap) == self.k:
                self._next_jump()
            return
        self._jump -= w
        if self._jump > 0:
            return
        # This item is inserted: its key is drawn from (T_w, 1), i.e.
        # u2 uniform in (T_w ** w, 1), key = u2 ** (1/w); in logs: log(u2) / w.
        t_w = math.exp(self._heap[0][0] * w)  # T_w ** w
        u2 = t_w + (1.0 - t_w) * self._uniform()
        key = math.log(u2) / w if u2 < 1.0 else -1e-300
        self._push(key, item)
        self._next_jump()
