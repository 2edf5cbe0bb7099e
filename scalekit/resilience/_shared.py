"""Breaker state shared by a fleet on Redis.

``CircuitBreaker(..., shared="redis://host:6379/0")`` (or a :class:`SharedState`)
keeps the state, the consecutive-failure count, the time-based window and the
half-open probe leases in three Redis keys under one ``{hash tag}``:

- **one round trip per outcome**: ``record.lua`` applies the outcome and answers
  with the fleet's state, which the process caches; a process whose cached view is
  *closed* admits calls without asking Redis;
- **a fleet-wide probe lease**: once open, a process whose cached view says the
  open time is up runs ``admit.lua``, which lets ``half_open_max_calls`` probes
  through for the whole fleet and rejects the rest; a probe that does not report
  within ``probe_timeout`` counts as failed;
- **Redis TIME** decides every deadline (the local clock only counts down the
  cached "retry after");
- **when Redis is down**, ``on_backend_error`` decides: ``"local_fallback"``
  (default; ``"local"`` until this release, a deprecated alias now) continues on
  this process' own breaker, seeded with the last fleet state seen;
  ``"fail_open"`` lets every call through; ``"fail_closed"`` rejects them. The
  outage is logged once and Redis is tried again after ``backend_cooldown``.

Count-based windows (``window_size``) are not shared: a fleet window is time-based
(``window_duration``).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any, Literal, cast

from scalekit import _validate
from scalekit._keys import build_key
from scalekit.backends import BackendLike, as_backend
from scalekit.backends._guard import BackendGuard as _BackendGuard
from scalekit.backends._lua import load_script
from scalekit.backends._redis import RedisBackend
from scalekit.errors import BackendDataError, BackendError, ConfigurationError
from scalekit.resilience._machine import ADMIT, PROBE, REJECT
from scalekit.resilience._policy import State

if TYPE_CHECKING:
    from scalekit.resilience._breaker import CircuitBreaker

__all__ = ["OnBackendError", "SharedState"]

#: ``"local"`` is the deprecated spelling of ``"local_fallback"`` (one release)
OnBackendError = Literal["local_fallback", "fail_open", "fail_closed", "local"]
_STATES = {s.value: s for s in State}
_OUTCOME = ("s", "f", "i")  # indexed by the breaker's outcome codes
# tickets: >= 0 from Redis (an epoch, or a probe id); <= -1 from the local breaker
# during an outage (-(epoch or token) - 1); this one records nothing (fail_open)
_UNRECORDED = -0.5


class SharedState:
    """A breaker's state on Redis (see the module documentation).

    ``poll_interval``: while another process holds the half-open probe lease, this
    process rejects calls from its cache for at most this long before asking again.
    """

    def __init__(
        self,
        backend: BackendLike | None = None,
        *,
        prefix: str = "scalekit",
        on_backend_error: OnBackendError = "local_fallback",
        backend_cooldown: float = 5.0,
        poll_interval: float = 0.5,
    ) -> None:
        b = as_backend(backend)
        if not isinstance(b, RedisBackend):
            raise ConfigurationError(
                f"shared breaker state needs a Redis backend (redis://, unix://, "
                f"redis+cluster://), got {backend!r}"
            )
        on_backend_error = cast(
            OnBackendError,
            _validate.failure_policy(
                on_backend_error,
                "SharedState(on_backend_error)",
                deprecated={"local": "local_fallback"},
            ),
        )
        backend_cooldown = _validate.duration(backend_cooldown, "backend_cooldown")
        poll_interval = _validate.duration(poll_interval, "poll_interval")
        self.backend = b
        self.prefix = prefix
        self.on_backend_error = on_backend_error
        self.backend_cooldown = float(backend_cooldown)
        self.poll_interval = float(poll_interval)
        self._breaker: CircuitBreaker | None = None
        self._lock = threading.Lock()
        # the cached fleet view: state, local time until which it holds, fleet epoch
        self._state: State | None = None
        self._until = 0.0
        self._epoch = 0
        self._tokens: dict[int, str] = {}
        self._ids = itertools.count(1)
        self._owner = f"{os.getpid()}-{id(self):x}"
        self._scripts = {
            n: load_script("scalekit.resilience", n, header="_header")
            for n in ("admit", "record", "control")
        }

    def attach(self, breaker: CircuitBreaker) -> None:
        """Bind to the breaker that owns this state (called by CircuitBreaker)."""
        if self._breaker is not None:
            raise ConfigurationError(
                "a SharedState serves one CircuitBreaker; build one per breaker"
            )
        p = breaker.policy
        if p.window_size is not None:
            raise ConfigurationError(
                "a shared breaker's window is time-based: use window_duration=, not window_size="
            )
        self._breaker = breaker
        base = build_key(self.prefix, "cb", tag=breaker.name)
        self._keys = [f"{base}:s", f"{base}:w", f"{base}:p"]
        ttl_s = max(86400.0, 2 * (p.max_open_s or p.open_s), 2 * (p.window_s or 0.0))
        self._policy_args = [
            str(p.failure_threshold or 0),
            repr(p.failure_rate_threshold or 0.0),
            repr(p.slow_call_rate_threshold or 0.0),
            repr(p.window_s or 0.0),
            str(p.minimum_calls),
            repr(p.open_s),
            repr(p.max_open_s or 0.0),
            repr(p.backoff_multiplier),
            repr(p.jitter),
        ]
        self._tail_args = [
            str(p.half_open_max_calls),
            repr(p.probe_timeout_s),
            str(int(ttl_s * 1000)),
        ]
        self._rng = breaker._m._rng
        self._now = breaker._now
        self._guard = _BackendGuard(
            breaker.name,
            self.backend_cooldown,
            self._now,
            "circuit breaker",
            logger=logging.getLogger("scalekit.resilience"),
        )

    # -- plumbing ----------------------------------------------------------------------
    @property
    def _b(self) -> CircuitBreaker:
        assert self._breaker is not None, "SharedState is not attached to a breaker"
        return self._breaker

    def _args(self, *extra: str) -> list[str]:
        server_now = self.backend.server_now
        return [
            repr(server_now()) if server_now else "",
            *self._policy_args,
            repr(self._rng()),
            *self._tail_args,
            *extra,
        ]

    def _apply(self, reply: Any) -> tuple[State, float, str]:
        """Cache the fleet view from a script reply; emit the transition seen."""
        if isinstance(reply, bytes):
            reply = reply.decode()
        st, remaining, epoch, token = str(reply).split()
        state = _STATES[st]
        left = float(remaining)
        if left < 0:
            left = math.inf
        now = self._now()
        with self._lock:
            previous = self._state
            self._state = state
            self._epoch = int(epoch)
            if state is State.HALF_OPEN:
                left = min(left, self.poll_interval)
            self._until = now + left
        if previous is not None and previous is not state:
            self._b._emit([(previous, state, now)])
        return state, left, token

    def _decision(self, state: State, left: float, token: str) -> tuple[int, float]:
        if token != "-":
            n = next(self._ids)
            self._tokens[n] = token
            return PROBE, n
        if state is State.CLOSED or state is State.DISABLED:
            return ADMIT, self._epoch
        return REJECT, left

    def _cached(self) -> tuple[int, float] | None:
        """Answer from the cached view, or None when Redis must be asked."""
        state = self._state
        if state is State.CLOSED or state is State.DISABLED:
            return ADMIT, self._epoch
        if state is None:
            return None
        left = self._until - self._now()
        if state is State.FORCED_OPEN:
            return REJECT, math.inf
        if left > 0:
            return REJECT, left
        return None

    # -- outage policy --------------------------------------------------------------------
    def _down(self, exc: BackendError | None) -> None:
        """After a failure (the guard has counted it) or while Redis is skipped (None)."""
        if (
            exc is not None
            and self.on_backend_error == "local_fallback"
            and self._state is State.OPEN
        ):
            b = self._b
            left = self._until - self._now()
            if left > 0:
                with b._lock:
                    if b._m.state is State.CLOSED:
                        b._m.force_open(self._now(), left)
                    b._m.transitions.clear()

    def _local_admit(self) -> tuple[int, float]:
        policy = self.on_backend_error
        if policy == "fail_open":
            return ADMIT, _UNRECORDED
        if policy == "fail_closed":
            return REJECT, self._guard.retry_in()
        b = self._b
        with b._lock:
            kind, ticket = b._m.admit(self._now())
            events = b._drain()
        b._emit(events)
        if kind == REJECT:
            return kind, ticket
        return kind, -ticket - 1  # negative: admitted by the local breaker

    def _local_record(self, kind: int, ticket: float, outcome: int, slow: bool) -> None:
        if ticket >= 0 or ticket == _UNRECORDED or self.on_backend_error != "local_fallback":
            return
        b = self._b
        local = int(-ticket - 1)
        now = self._now()
        with b._lock:
            m = b._m
            if outcome == 2:
                if kind == PROBE:
                    m.release_probe(local)
            elif kind == PROBE:
                m.record_probe(now, local, outcome == 1, slow)
            else:
                m.record(now, local, outcome == 1, slow)
            events = b._drain()
        b._emit(events)

    def _early(self) -> tuple[int, float] | None:
        """The admission decided by the cached view, or None (while Redis is being
        skipped the guard's degraded answer decides instead)."""
        return self._cached() if self._guard._until is None else None

    def _admit_args(self) -> list[str]:
        return self._args(f"{self._owner}:{next(self._ids)}")

    def _admitted(self, reply: Any) -> tuple[int, float]:
        return self._decision(*self._apply(reply))

    def _admit_down(self, exc: BackendError | None) -> tuple[int, float]:
        self._down(exc)
        return self._local_admit()

    # -- the driver's calls (sync) ------------------------------------------------------------
    def admit(self) -> tuple[int, float]:
        early = self._early()
        if early is not None:
            return early
        return self._guard.call(
            lambda: self._admitted(
                self.backend.evalsha(self._scripts["admit"], self._keys, self._admit_args())
            ),
            self._admit_down,
            self._reset,
        )

    def record(self, kind: int, ticket: float, outcome: int, slow: bool) -> None:
        if ticket < 0:
            self._local_record(kind, ticket, outcome, slow)
            return
        args = self._record_args(kind, ticket, outcome, slow)
        self._guard.call(
            lambda: self._recorded(self.backend.evalsha(self._scripts["record"], self._keys, args)),
            self._down,
            self._reset,
        )

    def _reset(self, exc: BackendDataError) -> None:
        """Drop the fleet's state of this breaker (closed, empty window): what a data
        error about it leaves (a key of another type, a value the scripts cannot read)."""
        self.backend.delete(self._keys)

    async def _areset(self, exc: BackendDataError) -> None:
        await self.backend.adelete(self._keys)

    def _recorded(self, reply: Any) -> None:
        self._apply(reply)

    def control(self, action: str, duration: float | None) -> None:
        """Open / close / disable the fleet's breaker (raises BackendError if Redis fails)."""
        reply = self.backend.evalsha(
            self._scripts["control"],
            self._keys,
            self._args(action, "" if duration is None else repr(duration)),
        )
        self._apply(reply)

    def refresh(self) -> State:
        """Read the fleet's state from Redis now."""
        reply = self.backend.evalsha(self._scripts["control"], self._keys, self._args("read", ""))
        return self._apply(reply)[0]

    async def arefresh(self) -> State:
        reply = await self.backend.aevalsha(
            self._scripts["control"], self._keys, self._args("read", "")
        )
        return self._apply(reply)[0]

    def _record_args(self, kind: int, ticket: float, outcome: int, slow: bool) -> list[str]:
        if kind == PROBE:
            token = self._tokens.pop(int(ticket), "-")
            return self._args("p", token, _OUTCOME[outcome], "1" if slow else "0")
        return self._args("c", str(int(ticket)), _OUTCOME[outcome], "1" if slow else "0")

    # -- async ---------------------------------------------------------------------------------
    async def aadmit(self) -> tuple[int, float]:
        early = self._early()
        if early is not None:
            return early

        async def remote() -> tuple[int, float]:
            reply = await self.backend.aevalsha(
                self._scripts["admit"], self._keys, self._admit_args()
            )
            return self._admitted(reply)

        return await self._guard.acall(remote, self._admit_down, self._areset)

    async def arecord(self, kind: int, ticket: float, outcome: int, slow: bool) -> None:
        if ticket < 0:
            self._local_record(kind, ticket, outcome, slow)
            return
        args = self._record_args(kind, ticket, outcome, slow)

        async def remote() -> None:
            self._recorded(await self.backend.aevalsha(self._scripts["record"], self._keys, args))

        await self._guard.acall(remote, self._down, self._areset)

    # -- reading -------------------------------------------------------------------------------
    def state(self) -> State:
        """The cached fleet state (CLOSED before the first answer from Redis)."""
        s = self._state
        return s if s is not None else State.CLOSED

    def view(self) -> tuple[State, float]:
        state = self.state()
        if state is State.FORCED_OPEN:
            return state, math.inf
        return state, max(0.0, self._until - self._now()) if state is not State.CLOSED else 0.0
