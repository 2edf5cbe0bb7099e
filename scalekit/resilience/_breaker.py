"""The circuit breaker driver: one object for threads and asyncio tasks.

The bookkeeping lives in :class:`~scalekit.resilience._machine.BreakerMachine`;
this module reads the clock, holds a lock around the machine (never around the
wrapped call), classifies outcomes, calls listeners and fallbacks, and talks to
the optional shared state on Redis.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeAlias, TypeVar, cast, overload

from scalekit import _validate as check
from scalekit._clock import Clock, as_clock
from scalekit._decorated import attach
from scalekit.errors import CircuitOpenError, ConfigurationError
from scalekit.observability._events import log_event
from scalekit.observability._metrics import default_registry as _metrics
from scalekit.resilience._machine import ADMIT, PROBE, REJECT, BreakerMachine
from scalekit.resilience._policy import BreakerPolicy, State

if TYPE_CHECKING:
    from scalekit.backends import BackendLike
    from scalekit.resilience._shared import SharedState

__all__ = [
    "BreakerEvent",
    "BreakerRegistry",
    "BreakerSnapshot",
    "CircuitBreaker",
    "ExceptionSpec",
    "circuit_breaker",
    "default_registry",
]

log = logging.getLogger("scalekit.resilience")

P = ParamSpec("P")
R = TypeVar("R")

ExceptionSpec: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
EventKind = Literal["success", "failure", "ignored", "rejected", "state_change"]

_CLOSED = State.CLOSED

# outcome codes
_SUCCESS = 0
_FAILURE = 1
_IGNORED = 2


_STATES = tuple(State)
_EVENT_OF = {
    State.OPEN: "breaker.opened",
    State.HALF_OPEN: "breaker.half_opened",
    State.CLOSED: "breaker.closed",
    State.FORCED_OPEN: "breaker.forced_open",
    State.DISABLED: "breaker.disabled",
}

# the breaker's families in the metrics registry (created once, here)
_CALLS = _metrics.counter(
    "scalekit_breaker_calls_total", "Calls through the breaker.", labels=("breaker",)
)
_FAILURES = _metrics.counter(
    "scalekit_breaker_failures_total", "Calls recorded as failures.", labels=("breaker",)
)
_IGNORED_C = _metrics.counter(
    "scalekit_breaker_ignored_total", "Calls neither success nor failure.", labels=("breaker",)
)
_REJECTED = _metrics.counter(
    "scalekit_breaker_rejected_total", "Calls refused while open.", labels=("breaker",)
)
_TRANSITIONS = _metrics.counter(
    "scalekit_breaker_transitions_total",
    "State changes, by the state entered.",
    labels=("breaker", "state"),
)
_STATE = _metrics.gauge(
    "scalekit_breaker_state", "1 for the breaker's current state.", labels=("breaker", "state")
)


def _state_gauge(ref: weakref.ref[CircuitBreaker], state: State) -> Callable[[], float]:
    def read() -> float:
        b = ref()
        return 1.0 if b is not None and b.state is state else 0.0

    return read


def _matcher(name: str, spec: ExceptionSpec | None) -> Callable[[BaseException], bool]:
    if spec is None:
        return lambda exc: False
    if isinstance(spec, type) and issubclass(spec, BaseException):
        cls = spec
        return lambda exc: isinstance(exc, cls)
    if isinstance(spec, tuple):
        for c in spec:
            if not (isinstance(c, type) and issubclass(c, BaseException)):
                raise ConfigurationError(
                    f"{name} must be exception classes or a predicate, got {c!r} in {spec!r}"
                )
        classes = spec
        return lambda exc: isinstance(exc, classes)
    if callable(spec):
        return cast(Callable[[BaseException], bool], spec)
    raise ConfigurationError(
        f"{name} must be an exception class, a tuple of them, or a predicate, got {spec!r}"
    )


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """What a listener receives: one outcome or one transition.

    ``kind`` is ``"success"``, ``"failure"``, ``"ignored"``, ``"rejected"`` or
    ``"state_change"`` (then ``previous`` is the state left and ``state`` the one
    entered). ``duration`` is the call's duration when the breaker measured it.
    """

    breaker: str
    kind: EventKind
    state: State
    previous: State | None = None
    at: float = 0.0
    duration: float | None = None
    exception: BaseException | None = None


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state and counters at one moment."""

    name: str
    state: State
    retry_after: float
    consecutive_failures: int
    window_calls: int
    failure_rate: float
    slow_call_rate: float
    trips: int
    calls: int
    successes: int
    failures: int
    ignored: int
    rejected: int
    shared: bool


class CircuitBreaker:
    """A circuit breaker; the instance is a decorator for sync and async functions.

    >>> breaker = CircuitBreaker("payments", record=ConnectionError, failure_threshold=3)
    >>> @breaker
    ... def charge(amount: int) -> str:
    ...     return f"charged {amount}"
    >>> charge(5)
    'charged 5'

    ``record`` says which exceptions are failures (classes or a predicate; there is
    no catch-all default); ``ignore`` which ones are neither success nor failure
    (checked first); any other exception counts as a success (the dependency
    answered). ``failure_result`` is a predicate on return values: ``True`` records
    a failure while still returning the value (an HTTP 503 response, say).

    The policy is a :class:`BreakerPolicy`, or its fields as keywords
    (``failure_threshold=5, open_duration=30.0, half_open_max_calls=1, ...``).

    ``fallback(exc, *args, **kwargs)`` answers instead of raising when the call is
    rejected (``CircuitOpenError``) or fails with a recorded exception; for async
    functions it may be a coroutine function.

    ``shared`` puts the state on Redis for a fleet (see :mod:`scalekit.resilience._shared`).
    ``clock`` (monotonic by default) and ``rng`` (``random.random``) are injectable.
    """

    def __init__(
        self,
        name: str = "breaker",
        *,
        record: ExceptionSpec,
        ignore: ExceptionSpec | None = None,
        failure_result: Callable[[Any], bool] | None = None,
        policy: BreakerPolicy | None = None,
        fallback: Callable[..., Any] | None = None,
        listeners: tuple[Callable[[BreakerEvent], None], ...] = (),
        shared: SharedState | BackendLike | None = None,
        registry: BreakerRegistry | None = None,
        clock: Clock | Callable[[], float] | None = None,
        rng: Callable[[], float] | None = None,
        **policy_options: Any,
    ) -> None:
        name = check.name(name, "name")
        if policy is None:
            try:
                policy = BreakerPolicy(**policy_options)
            except TypeError as exc:
                raise ConfigurationError(f"CircuitBreaker: {exc}") from None
        elif policy_options:
            raise ConfigurationError(
                f"give policy= or policy keywords, not both (got {sorted(policy_options)})"
            )
        elif not isinstance(policy, BreakerPolicy):
            raise ConfigurationError(f"policy must be a BreakerPolicy, got {policy!r}")
        if failure_result is not None and not callable(failure_result):
            raise ConfigurationError(f"failure_result must be a predicate, got {failure_result!r}")
        if fallback is not None and not callable(fallback):
            raise ConfigurationError(f"fallback must be callable, got {fallback!r}")
        self.name = name
        self.policy = policy
        self.clock = as_clock(clock)
        self._now = self.clock.now
        self._is_recorded = _matcher("record", record)
        self._is_ignored = _matcher("ignore", ignore)
        self._failure_result = failure_result
        self._fallback = fallback
        self._lock = threading.Lock()
        self._m = BreakerMachine(policy, rng)
        self._listeners: list[Callable[[BreakerEvent], None]] = list(listeners)
        self._timed = policy.slow_s is not None
        self._slow_s = policy.slow_s if policy.slow_s is not None else float("inf")
        self._time_window = policy.window_s is not None
        # counters of this breaker's own in the metrics registry; inc() is one C call
        self._calls = _CALLS.attach(self, name)
        self._failures = _FAILURES.attach(self, name)
        self._ignored = _IGNORED_C.attach(self, name)
        self._rejected = _REJECTED.attach(self, name)
        self._transitions = {s: _TRANSITIONS.attach(self, name, s.value) for s in _STATES}
        ref = weakref.ref(self)
        for st in _STATES:
            _STATE.attach(self, name, st.value).set_function(_state_gauge(ref, st))
        if shared is not None and not hasattr(shared, "attach"):
            from scalekit.resilience._shared import SharedState

            shared = SharedState(shared)
        self._shared = cast("SharedState | None", shared)
        if self._shared is not None:
            self._shared.attach(self)
        if registry is not None:
            registry.register(self)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value!r})"

    # -- state, by hand ------------------------------------------------------------
    @property
    def state(self) -> State:
        """The current state (an OPEN breaker whose time is up still reads OPEN
        until a call asks to be admitted)."""
        if self._shared is not None:
            return self._shared.state()
        return self._m.state

    def open(self, duration: float | timedelta | None = None) -> None:
        """Open now: until :meth:`close` (``duration`` None) or for ``duration``."""
        self._by_hand("open", check.optional_duration(duration, "duration"))

    def close(self) -> None:
        """Close now (also ends ``disable()``), forgetting failures and backoff."""
        self._by_hand("close", None)

    def disable(self) -> None:
        """Let every call through and record nothing, until :meth:`close`."""
        self._by_hand("disable", None)

    def _by_hand(self, action: str, duration: float | None) -> None:
        shared = self._shared
        if shared is not None:
            shared.control(action, duration)  # the fleet's transition is emitted there
        with self._lock:
            m = self._m
            now = self._now()
            if action == "open":
                m.force_open(now, duration)
            elif action == "close":
                m.close(now)
            else:
                m.disable(now)
            events = self._drain()
        if shared is None:
            self._emit(events)

    def add_listener(self, listener: Callable[[BreakerEvent], None]) -> None:
        """Call ``listener(event)`` for every outcome and transition (outside the lock)."""
        if not callable(listener):
            raise ConfigurationError(f"a listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[BreakerEvent], None]) -> None:
        self._listeners.remove(listener)

    def stats(self) -> BreakerSnapshot:
        """The same frozen snapshot as :meth:`snapshot`, under the name every
        primitive's statistics have."""
        return self.snapshot()

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            m = self._m
            now = self._now()
            w = m.window
            calls = w.calls if w is not None else 0
            snap_state = m.state
            retry_after = m.retry_after(now)
            consecutive = m.consecutive
            fr = w.failures / calls if w is not None and calls else 0.0
            sr = w.slow / calls if w is not None and calls else 0.0
            trips = m.trips
        if self._shared is not None:
            snap_state, retry_after = self._shared.view()
        total = int(self._calls.value)
        failures = int(self._failures.value)
        ignored = int(self._ignored.value)
        return BreakerSnapshot(
            name=self.name,
            state=snap_state,
            retry_after=retry_after,
            consecutive_failures=consecutive,
            window_calls=calls,
            failure_rate=fr,
            slow_call_rate=sr,
            trips=trips,
            calls=total,
            successes=total - failures - ignored,
            failures=failures,
            ignored=ignored,
            rejected=int(self._rejected.value),
            shared=self._shared is not None,
        )

    # -- events ---------------------------------------------------------------------
    def _drain(self) -> list[tuple[State, State, float]] | None:
        """Take the machine's transitions (call with the lock held)."""
        m = self._m
        if not m.transitions:
            return None
        events, m.transitions = m.transitions, []
        return events

    def _emit(self, transitions: list[tuple[State, State, float]] | None) -> None:
        if not transitions:
            return
        for prev, new, at in transitions:
            self._transitions[new].inc()
            log_event(_EVENT_OF[new], breaker=self.name, state=new.value, previous=prev.value)
            if self._listeners:
                self._notify(BreakerEvent(self.name, "state_change", new, prev, at))

    def _notify(self, event: BreakerEvent) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("circuit breaker %r: listener %r failed", self.name, listener)

    def _outcome_event(
        self, kind: EventKind, duration: float | None, exc: BaseException | None
    ) -> None:
        self._notify(BreakerEvent(self.name, kind, self._m.state, None, self._now(), duration, exc))

    # -- the core shared by every wrapper ----------------------------------------------
    def _admit(self) -> tuple[int, float]:
        """Admit or reject one call: ``(kind, ticket)`` (see machine.admit)."""
        shared = self._shared
        if shared is not None:
            return shared.admit()
        with self._lock:
            decision = self._m.admit(self._now())
            events = self._drain()
        self._emit(events)
        return decision

    def _rejected_error(self, retry_after: float) -> CircuitOpenError:
        self._rejected.inc()
        state = self.state
        if self._listeners:
            self._outcome_event("rejected", None, None)
        return CircuitOpenError(self.name, state.value, retry_after)

    def _classify(self, exc: BaseException) -> int:
        if self._is_ignored(exc) or not isinstance(exc, Exception):
            return _IGNORED  # also CancelledError, KeyboardInterrupt, SystemExit
        return _FAILURE if self._is_recorded(exc) else _SUCCESS

    def _finish(
        self,
        kind: int,
        ticket: float,
        outcome: int,
        start: float,
        exc: BaseException | None,
    ) -> None:
        """Record one outcome of an admitted call."""
        self._calls.inc()
        now = self._now()
        duration = now - start if self._timed else None
        slow = duration is not None and duration >= self._slow_s
        if outcome == _FAILURE:
            self._failures.inc()
        elif outcome == _IGNORED:
            self._ignored.inc()
        shared = self._shared
        if shared is not None:
            shared.record(kind, ticket, outcome, slow)
        else:
            with self._lock:
                m = self._m
                if outcome == _IGNORED:
                    if kind == PROBE:
                        m.release_probe(int(ticket))
                elif kind == PROBE:
                    m.record_probe(now, int(ticket), outcome == _FAILURE, slow)
                elif outcome == _FAILURE or m.consecutive or m.window is not None:
                    m.record(now, int(ticket), outcome == _FAILURE, slow)
                events = self._drain()
            self._emit(events)
        if self._listeners:
            ev: EventKind = (
                "failure"
                if outcome == _FAILURE
                else "ignored"
                if outcome == _IGNORED
                else "success"
            )
            self._outcome_event(ev, duration, exc)

    async def _afinish(
        self, kind: int, ticket: float, outcome: int, start: float, exc: BaseException | None
    ) -> None:
        shared = self._shared
        if shared is None:
            self._finish(kind, ticket, outcome, start, exc)
            return
        # same as _finish, but the round trip to Redis is awaited
        self._calls.inc()
        duration = self._now() - start if self._timed else None
        slow = duration is not None and duration >= self._slow_s
        if outcome == _FAILURE:
            self._failures.inc()
        elif outcome == _IGNORED:
            self._ignored.inc()
        await shared.arecord(kind, ticket, outcome, slow)
        if self._listeners:
            ev: EventKind = (
                "failure"
                if outcome == _FAILURE
                else "ignored"
                if outcome == _IGNORED
                else "success"
            )
            self._outcome_event(ev, duration, exc)

    def _fast_exception(self, exc: BaseException, epoch: int) -> bool:
        """Record an exception raised on the fast path; True for a recorded failure."""
        outcome = self._classify(exc)
        self._finish(ADMIT, epoch, outcome, 0.0, exc)
        return outcome == _FAILURE

    def _fast_result(self, result: Any, epoch: int) -> None:
        """Record a fast-path result that needs more than the call counter."""
        bad = self._failure_result
        m = self._m
        if bad is not None and bad(result):
            self._finish(ADMIT, epoch, _FAILURE, 0.0, None)
        elif self._listeners or m.consecutive:
            self._finish(ADMIT, epoch, _SUCCESS, 0.0, None)
        else:  # a window: record the success (it may complete the minimum and trip)
            with self._lock:
                m.record(self._now(), epoch, False)
                moved = self._drain()
            self._emit(moved)
            self._calls.inc()

    # -- calling -------------------------------------------------------------------------
    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function (inspected once, here)."""
        if not callable(fn):
            raise ConfigurationError(f"CircuitBreaker decorates a callable, got {fn!r}")
        wrapper: Callable[P, Any] = (
            self._wrap_async(fn) if inspect.iscoroutinefunction(fn) else self._wrap_sync(fn)
        )
        attach(wrapper, self, "breaker")
        return wrapper

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` through the breaker."""
        return self._wrap_sync(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        return await self._wrap_async(fn)(*args, **kwargs)

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        m = self._m
        calls = self._calls.tick
        listeners = self._listeners
        bad_result = self._failure_result
        fallback = self._fallback
        now_fn = self._now
        fast_exception = self._fast_exception
        fast_result = self._fast_result
        # the fast path: closed, nothing to time, no shared state; and on success
        # just a counter unless a result predicate, a window or a failure run needs more
        simple = bad_result is None and m.window is None
        fast = not self._timed and self._shared is None
        finish = self._finish

        def general(*args: P.args, **kwargs: P.kwargs) -> R:
            kind, ticket = self._admit()
            if kind == REJECT:
                err = self._rejected_error(ticket)
                if fallback is not None:
                    return cast(R, fallback(err, *args, **kwargs))
                raise err
            start = now_fn()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                outcome = self._classify(exc)
                finish(kind, ticket, outcome, start, exc)
                if fallback is not None and outcome == _FAILURE:
                    return cast(R, fallback(exc, *args, **kwargs))
                raise
            failed = bad_result is not None and bad_result(result)
            finish(kind, ticket, _FAILURE if failed else _SUCCESS, start, None)
            return result

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if m.state is not _CLOSED or not fast:
                return general(*args, **kwargs)
            epoch = m.epoch
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                if fast_exception(exc, epoch) and fallback is not None:
                    return cast(R, fallback(exc, *args, **kwargs))
                raise
            if simple and not m.consecutive and not listeners:
                next(calls)
            else:
                fast_result(result, epoch)
            return result

        return wrapper

    def _wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        m = self._m
        calls = self._calls.tick
        listeners = self._listeners
        bad_result = self._failure_result
        fallback = self._fallback
        now_fn = self._now
        fast_exception = self._fast_exception
        fast_result = self._fast_result
        # the fast path: closed, nothing to time, no shared state; and on success
        # just a counter unless a result predicate, a window or a failure run needs more
        simple = bad_result is None and m.window is None
        fast = not self._timed and self._shared is None
        afinish = self._afinish

        async def fall_back(exc: BaseException, args: Any, kwargs: Any) -> R:
            assert fallback is not None
            value = fallback(exc, *args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return cast(R, value)

        async def general(*args: P.args, **kwargs: P.kwargs) -> R:
            shared = self._shared
            if shared is not None:
                kind, ticket = await shared.aadmit()
            else:
                kind, ticket = self._admit()
            if kind == REJECT:
                err = self._rejected_error(ticket)
                if fallback is not None:
                    return await fall_back(err, args, kwargs)
                raise err
            start = now_fn()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                outcome = self._classify(exc)
                await afinish(kind, ticket, outcome, start, exc)
                if fallback is not None and outcome == _FAILURE:
                    return await fall_back(exc, args, kwargs)
                raise
            failed = bad_result is not None and bad_result(result)
            await afinish(kind, ticket, _FAILURE if failed else _SUCCESS, start, None)
            return result

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if m.state is not _CLOSED or not fast:
                return await general(*args, **kwargs)
            epoch = m.epoch
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if fast_exception(exc, epoch) and fallback is not None:
                    return await fall_back(exc, args, kwargs)
                raise
            if simple and not m.consecutive and not listeners:
                next(calls)
            else:
                fast_result(result, epoch)
            return result

        return wrapper


def circuit_breaker(
    name: str = "breaker",
    *,
    record: ExceptionSpec,
    **options: Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate one function with a breaker of its own (options as :class:`CircuitBreaker`).

    To share one breaker between several functions, build a :class:`CircuitBreaker`
    and decorate each function with it.
    """
    breaker = CircuitBreaker(name, record=record, **options)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return breaker(fn)

    return decorate


class BreakerRegistry:
    """Named breakers, for dashboards and health checks: ``snapshot()`` reads them all.

    Breakers are held weakly: one that nothing else references disappears.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: weakref.WeakValueDictionary[str, CircuitBreaker] = (
            weakref.WeakValueDictionary()
        )

    def register(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Add ``breaker``; another live breaker with the same name is an error."""
        with self._lock:
            current = self._breakers.get(breaker.name)
            if current is not None and current is not breaker:
                raise ConfigurationError(
                    f"a circuit breaker named {breaker.name!r} is already registered; "
                    "use registry.get() to share it, or pick another name"
                )
            self._breakers[breaker.name] = breaker
        return breaker

    def get(self, name: str) -> CircuitBreaker | None:
        return self._breakers.get(name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._breakers.pop(name, None)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def stats(self) -> dict[str, BreakerSnapshot]:
        """:meth:`snapshot` under the name every primitive's statistics have."""
        return self.snapshot()

    def snapshot(self) -> dict[str, BreakerSnapshot]:
        """Every registered breaker's :class:`BreakerSnapshot`, by name."""
        return {b.name: b.snapshot() for b in self}


#: a process-wide registry, for applications that want one
default_registry = BreakerRegistry()
