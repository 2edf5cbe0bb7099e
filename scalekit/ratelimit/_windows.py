"""The state containers of the in-memory rate-limit store: aligned windows and
generations. Window rotation is written here, once; the store
(:class:`~scalekit.ratelimit._memory.MemoryRateStore`) and its fast paths
(:mod:`scalekit.ratelimit._fast`) call it.

- An aligned window (fixed and sliding windows) is a list ``[index, current
  counts, previous counts]``: ``index`` is ``floor(now / period)``, the counts
  are dicts key -> units. A list, not an object, because the fast paths read it
  on every hit.
- :class:`Generations` holds the log and bucket states (see the store's module
  docstring for why two generations lose nothing).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Generations", "new_window", "rotate"]


def new_window() -> list[Any]:
    """An aligned window that holds nothing yet (no window index)."""
    return [None, {}, {}]


def rotate(w: list[Any], idx: int, keep_previous: bool) -> None:
    """Make ``w`` the aligned window ``idx`` (call it when ``w[0] != idx``).

    The current counts start empty. ``keep_previous`` (the sliding window, which
    weighs the previous window's counts) keeps the counts of the window that just
    ended as the previous counts when it is ``idx - 1``; otherwise (a fixed window,
    or a gap of a whole window) the previous counts are empty too.
    """
    w[2] = w[1] if keep_previous and w[0] == idx - 1 else {}
    w[1] = {}
    w[0] = idx


class Generations:
    """Two generations of dicts: a key touched in the previous generation moves to
    the current one; every ``length`` seconds the previous generation is dropped."""

    __slots__ = ("cur", "length", "prev", "start")

    def __init__(self, length: float) -> None:
        self.cur: dict[str, Any] = {}
        self.prev: dict[str, Any] = {}
        self.start = -math.inf
        self.length = length

    def rotate(self, now: float) -> None:
        if now - self.start >= self.length:
            if now - self.start >= 2 * self.length:
                self.prev = {}
            else:
                self.prev = self.cur
            self.cur = {}
            self.start = now

    def get(self, key: str) -> Any:
        v = self.cur.get(key)
        if v is None and self.prev:
            v = self.prev.pop(key, None)
            if v is not None:
                self.cur[key] = v
        return v

    def size(self) -> int:
        return len(self.cur) + len(self.prev)

    def pop(self, key: str) -> None:
        self.cur.pop(key, None)
        self.prev.pop(key, None)
