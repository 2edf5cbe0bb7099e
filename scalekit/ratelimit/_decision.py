"""The one decision object every rate-limit algorithm and backend returns."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Decision"]


class Decision(NamedTuple):
    """The outcome of ``hit`` or ``peek``.

    - ``allowed``: whether the call may proceed (for ``hit``: it was counted).
    - ``limit``: the limit of the reported window (the most restrictive one).
    - ``remaining``: what that window still allows after this decision.
    - ``reset_after``: seconds until that window is back to its full limit.
    - ``retry_after``: ``0.0`` when allowed; otherwise seconds until the same call
      could be allowed, ``math.inf`` when never (its cost is above the limit).
    - ``policy``: the policy's name (a tier name for tiered limiters).
    - ``period``: the reported window's length in seconds.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    policy: str
    period: float

    def __bool__(self) -> bool:  # `if limiter.hit(key):` reads naturally
        return self.allowed
