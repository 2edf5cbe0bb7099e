"""The circuit breaker's state machine: pure bookkeeping, no clock, no lock, no I/O.

Every method takes ``now`` (seconds) and returns what happened; the driver
(:class:`~scalekit.resilience.CircuitBreaker`) reads the clock, holds its lock
around these methods (never around the wrapped call) and tells listeners about
the transitions collected in :attr:`BreakerMachine.transitions`.

Tickets: a call admitted while closed carries the machine's ``epoch`` (bumped at
every transition), so the outcome of a call that started before a transition is
ignored; a probe carries a token that is valid only while that probe is pending.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from scalekit.resilience._policy import BreakerPolicy, State

__all__ = [
    "ADMIT",
    "PROBE",
    "REJECT",
    "BreakerMachine",
    "CountWindow",
    "TimeWindow",
]

ADMIT = 0  # ticket: the epoch
PROBE = 1  # ticket: the probe's token
REJECT = 2  # ticket: retry_after (seconds)

CLOSED = State.CLOSED
OPEN = State.OPEN
HALF_OPEN = State.HALF_OPEN
FORCED_OPEN = State.FORCED_OPEN
DISABLED = State.DISABLED

_BUCKETS = 10


class CountWindow:
    """The outcomes of the last ``size`` calls, with running totals."""

    __slots__ = ("_pos", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = bytearray(size)  # bit 0: failed, bit 1: slow, bit 2: present
        self._pos = 0
        self.calls = self.failures = self.slow = 0

    def add(self, now: float, failed: bool, slow: bool) -> None:
        old = self._ring[self._pos]
        if old & 4:
            self.calls -= 1
            self.failures -= old & 1
            self.slow -= (old >> 1) & 1
        self._ring[self._pos] = 4 | failed | (slow << 1)
        self._pos = (self._pos + 1) % self.size
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def expire(self, now: float) -> None:
        return None

    def reset(self) -> None:
        self._ring = bytearray(self.size)
        self._pos = 0
        self.calls = self.failures = self.slow = 0


class TimeWindow:
    """The outcomes of the calls of the last ``duration`` seconds, in 10 buckets.

    A call is forgotten between ``duration - duration/10`` and ``duration``
    seconds after it was recorded (bucket granularity).
    """

    __slots__ = ("_c", "_cur", "_f", "_s", "_width", "calls", "duration", "failures", "slow")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._width = duration / _BUCKETS
        self._c = [0] * _BUCKETS
        self._f = [0] * _BUCKETS
        self._s = [0] * _BUCKETS
        self._cur = -1  # absolute index of the newest bucket
        self.calls = self.failures = self.slow = 0

    def expire(self, now: float) -> None:
        idx = math.floor(now / self._width)
        cur = self._cur
        if idx <= cur:
            return
        if idx - cur >= _BUCKETS or cur < 0:
            self.reset()
        else:
            for a in range(cur + 1, idx + 1):
                i = a % _BUCKETS
                self.calls -= self._c[i]
                self.failures -= self._f[i]
                self.slow -= self._s[i]
                self._c[i] = self._f[i] = self._s[i] = 0
        self._cur = idx

    def add(self, now: float, failed: bool, slow: bool) -> None:
        self.expire(now)
        i = self._cur % _BUCKETS
        self._c[i] += 1
        self._f[i] += failed
        self._s[i] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def reset(self) -> None:
        self._c = [0] * _BUCKETS
        self._f = [0] * _BUCKETS
        self._s = [0] * _BUCKETS
        self.calls = self.failures = self.slow = 0


class BreakerMachine:
    """Closed / open / half-open bookkeeping for one breaker (see the module doc)."""

    __slots__ = (
        "_rng",
        "_token",
        "consecutive",
        "epoch",
        "half_open_admitted",
        "half_open_successes",
        "open_until",
        "opened_at",
        "policy",
        "probes",
        "state",
        "transitions",
        "trips",
        "window",
    )

    def __init__(self, policy: BreakerPolicy, rng: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.random
        self.state: State = CLOSED
        self.epoch = 0
        self.consecutive = 0
        self.trips = 0  # consecutive trips without a close in between
        self.open_until = 0.0
        self.opened_at: float | None = None
        self.probes: dict[int, float] = {}  # token -> deadline
        self.half_open_admitted = 0
        self.half_open_successes = 0
        self._token = 0
        self.window: CountWindow | TimeWindow | None = None
        if policy.window_size is not None:
            self.window = CountWindow(policy.window_size)
        elif policy.window_s is not None:
            self.window = TimeWindow(policy.window_s)
        #: (previous state, new state, now) for every transition, drained by the driver
        self.transitions: list[tuple[State, State, float]] = []

    # -- transitions ---------------------------------------------------------
    def _move(self, to: State, now: float) -> None:
        self.transitions.append((self.state, to, now))
        self.state = to
        self.epoch += 1
        self.probes.clear()
        self.half_open_admitted = self.half_open_successes = 0
        self.consecutive = 0
        if self.window is not None:
            self.window.reset()

    def _trip(self, now: float) -> None:
        self.trips += 1
        self.open_until = now + self.policy.open_duration_for(self.trips, self._rng())
        self.opened_at = now
        self._move(OPEN, now)

    def _close(self, now: float) -> None:
        self.trips = 0
        self.opened_at = None
        self._move(CLOSED, now)

    # -- admission -------------------------------------------------------------
    def admit(self, now: float) -> tuple[int, float]:
        """``(ADMIT, epoch)``, ``(PROBE, token)`` or ``(REJECT, retry_after)``."""
        state = self.state
        if state is CLOSED or state is DISABLED:
            return ADMIT, self.epoch
        if state is FORCED_OPEN:
            return REJECT, math.inf
        if state is OPEN:
            if now < self.open_until:
                return REJECT, self.open_until - now
            self._move(HALF_OPEN, now)
        # half-open: a probe past its deadline is a failure
        probes = self.probes
        if probes and min(probes.values()) <= now:
            self._trip(now)
            return REJECT, self.open_until - now
        if self.half_open_admitted < self.policy.half_open_max_calls:
            self.half_open_admitted += 1
            self._token += 1
            probes[self._token] = now + self.policy.probe_timeout_s
            return PROBE, self._token
        return REJECT, max(0.0, min(probes.values()) - now) if probes else 0.0

    def retry_after(self, now: float) -> float:
        """Seconds until a call could be admitted (0 when it would be now)."""
        state = self.state
        if state is FORCED_OPEN:
            return math.inf
        if state is OPEN:
            return max(0.0, self.open_until - now)
        if state is HALF_OPEN and self.half_open_admitted >= self.policy.half_open_max_calls:
            return max(0.0, min(self.probes.values()) - now) if self.probes else 0.0
        return 0.0

    # -- outcomes --------------------------------------------------------------
    def record(self, now: float, epoch: int, failed: bool, slow: bool = False) -> bool:
        """The outcome of a call admitted while closed; False if it was stale."""
        if epoch != self.epoch or self.state is not CLOSED:
            return False
        policy = self.policy
        if failed:
            self.consecutive += 1
        else:
            self.consecutive = 0
        w = self.window
        if w is not None:
            w.add(now, failed, slow)
        threshold = policy.failure_threshold
        if threshold is not None and self.consecutive >= threshold:
            self._trip(now)
        elif w is not None and w.calls >= policy.minimum_calls:
            fr = policy.failure_rate_threshold
            sr = policy.slow_call_rate_threshold
            if (fr is not None and w.failures >= fr * w.calls) or (
                sr is not None and w.slow >= sr * w.calls
            ):
                self._trip(now)
        return True

    def record_probe(self, now: float, token: int, failed: bool, slow: bool = False) -> bool:
        """The outcome of a probe; a slow probe counts as a failed one. False if stale."""
        if self.state is not HALF_OPEN or self.probes.pop(token, None) is None:
            return False
        if failed or slow:
            self._trip(now)
            return True
        self.half_open_successes += 1
        if self.half_open_successes >= self.policy.half_open_max_calls:
            self._close(now)
        return True

    def release_probe(self, token: int) -> None:
        """A probe ended with an ignored outcome: free its slot for another probe."""
        if self.state is HALF_OPEN and self.probes.pop(token, None) is not None:
            self.half_open_admitted -= 1

    # -- by hand -----------------------------------------------------------------
    def force_open(self, now: float, duration: float | None = None) -> None:
        """Open now: until :meth:`close` (``duration`` None) or for ``duration`` seconds."""
        if duration is None:
            if self.state is not FORCED_OPEN:
                self.opened_at = now
                self._move(FORCED_OPEN, now)
            return
        self.open_until = now + duration
        self.opened_at = now
        self._move(OPEN, now)

    def close(self, now: float) -> None:
        """Close now, forgetting the window and the backoff."""
        if self.state is CLOSED:  # no transition: just forget
            self.trips = 0
            self.consecutive = 0
            if self.window is not None:
                self.window.reset()
            return
        self._close(now)

    def disable(self, now: float) -> None:
        """Admit every call and record nothing until :meth:`close`."""
        if self.state is not DISABLED:
            self._move(DISABLED, now)
