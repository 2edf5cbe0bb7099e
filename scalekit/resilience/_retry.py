"""``@retry``: tenacity underneath, plus what a fleet needs on top of it.

- A **retry budget** shared across calls: retries stay under a fraction of the
  calls (10 % by default, plus a small floor per second), so a failing
  dependency does not get 3x its normal load from retries.
- **No retry while a breaker is open**: a :class:`~scalekit.errors.CircuitOpenError`
  is never retried, nor is anything once the wrapped function's breaker is open.
- **Retry-After honoured**: the wait is at least what the exception asks for
  (``exc.retry_after``, or an HTTP response's ``Retry-After`` header).
- **An overall deadline** (``timeout=``) that nested calls inherit through
  contextvars (see :mod:`scalekit.resilience._timeouts`); no retry is started that
  would end after it.
- **A free first attempt**: the function is called directly; tenacity's state is
  built only after a failure.

tenacity is an optional extra (``pip install 'scalekit-primitives[retry]'``): its
presence is checked when ``@retry`` is applied, and it is imported when a decorated
function first fails.
"""

from __future__ import annotations

import email.utils
import functools
import importlib.util
import inspect
import math
import random
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from scalekit import _validate as check
from scalekit._clock import Clock, as_clock
from scalekit._decorated import attach, find
from scalekit.errors import CircuitOpenError, ConfigurationError, MissingDependency
from scalekit.observability._metrics import default_registry as _metrics
from scalekit.resilience._breaker import CircuitBreaker, ExceptionSpec, _matcher
from scalekit.resilience._policy import State
from scalekit.resilience._timeouts import _DEADLINE, _narrowed, remaining

__all__ = ["RetryBudget", "RetryStats", "retry", "retry_after_from"]

P = ParamSpec("P")
R = TypeVar("R")

_BUCKETS = 10

_CALLS = _metrics.counter(
    "scalekit_retry_calls_total",
    "Calls seen by the retry budget (first attempts).",
    labels=("budget",),
)
_RETRIES = _metrics.counter(
    "scalekit_retry_retries_total",
    "Retries granted (attempts after the first).",
    labels=("budget",),
)
_REFUSED = _metrics.counter(
    "scalekit_retry_refused_total",
    "Retries refused: the budget was exhausted.",
    labels=("budget",),
)


def _require_tenacity() -> None:
    """Fail at decoration time, not at the first failure in production."""
    if importlib.util.find_spec("tenacity") is None:
        raise MissingDependency("scalekit.resilience.retry", "retry", "tenacity")


def _import_tenacity() -> Any:
    try:
        import tenacity
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise MissingDependency("scalekit.resilience.retry", "retry", "tenacity") from exc
    return tenacity


@dataclass(frozen=True, slots=True)
class RetryStats:
    """A budget's counters: calls seen, retries granted and refused (in total)."""

    name: str
    calls: int
    retries: int
    refused: int


class RetryBudget:
    """Retries allowed: ``ratio`` of the calls of the last ``window`` seconds, plus a
    reserve of ``min_per_second * window`` retries per window (so a quiet service
    can still retry). Share one budget between everything that calls the same
    dependency.

    Counting a call is one atomic ``next()`` (no lock); the window is evaluated
    only when a retry asks for the budget.
    """

    def __init__(
        self,
        ratio: float = 0.1,
        *,
        window: float | timedelta = 10.0,
        min_per_second: float = 1.0,
        clock: Clock | Callable[[], float] | None = None,
        name: str = "retry",
    ) -> None:
        self.name = check.name(name, "name")
        self.ratio = check.number(ratio, "ratio (0.1 = 10 %)", minimum=0, maximum=10)
        self.window = check.duration(window, "window")
        self.min_per_second = check.number(min_per_second, "min_per_second", minimum=0)
        self._now = as_clock(clock).now
        self._lock = threading.Lock()
        self._calls = _CALLS.attach(self, self.name)
        self._retries = _RETRIES.attach(self, self.name)
        self._refused = _REFUSED.attach(self, self.name)
        self._width = self.window / _BUCKETS
        # per bucket with an observation: [absolute bucket index, first seen (time,
        # calls counter), last seen (time, calls counter), retries granted in it]
        now = self._now()
        self._marks: list[list[Any]] = [[math.floor(now / self._width), now, 0, now, 0, 0]]

    def record_call(self) -> None:
        """Count one call (the first attempt; retries are not calls)."""
        self._calls.inc()

    def _calls_now(self) -> int:
        return int(self._calls.value)

    def try_retry(self) -> bool:
        """Take one retry from the budget; False (and counted) when it is spent."""
        with self._lock:
            now = self._now()
            idx = math.floor(now / self._width)
            calls = self._calls_now()
            marks = self._marks
            last = marks[-1]
            if last[0] != idx:
                last = [idx, now, calls, now, calls, 0]
                marks.append(last)
            else:
                last[3], last[4] = now, calls
            start = idx - _BUCKETS + 1  # the oldest bucket inside the window
            dropped = None
            while marks[0][0] < start:
                dropped = marks.pop(0)
            if dropped is not None and marks[0][0] > start:
                # no observation where the window starts: interpolate between the last
                # one before it and the first one after it
                t0, c0 = dropped[3], dropped[4]
                t1, c1 = marks[0][1], marks[0][2]
                t = start * self._width
                c = c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
                marks.insert(0, [start, t, int(c), t, int(c), 0])
            first = marks[0]
            window_calls = calls - int(first[2])
            retries = sum(int(m[5]) for m in marks)
            allowed = self.ratio * window_calls + self.min_per_second * self.window
            if retries + 1 > allowed:
                self._refused.inc()
                return False
            last[5] += 1
            self._retries.inc()
            return True

    def stats(self) -> RetryStats:
        return RetryStats(
            self.name, self._calls_now(), int(self._retries.value), int(self._refused.value)
        )

    def __repr__(self) -> str:
        return (
            f"RetryBudget(name={self.name!r}, ratio={self.ratio}, window={self.window}, "
            f"min_per_second={self.min_per_second})"
        )


_DELTA_SECONDS = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?", re.ASCII)


def retry_after_from(exc: BaseException) -> float | None:
    """Seconds the exception asks to wait: ``exc.retry_after`` (scalekit's own
    errors), else a ``Retry-After`` header on ``exc.response`` (httpx, requests):
    delta-seconds or an HTTP date."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        raw = headers.get("retry-after") or headers.get("Retry-After")
    except Exception:
        return None
    if not raw:
        return None
    raw = str(raw).strip()
    if _DELTA_SECONDS.fullmatch(raw):  # ASCII only: float() also takes "1_0", "nan", Arabic digits
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    import datetime as _dt

    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, (when - _dt.datetime.now(_dt.UTC)).total_seconds())


def _attach_budget(wrapper: Callable[..., object], budget: RetryBudget | None) -> None:
    if budget is not None:
        attach(wrapper, budget, "budget")
    else:
        wrapper.budget = None  # type: ignore[attr-defined]  # deprecated, like fn.budget


def retry(
    *,
    on: ExceptionSpec,
    attempts: int | None = 3,
    timeout: float | timedelta | None = None,
    wait_initial: float | timedelta = 0.1,
    wait_max: float | timedelta = 5.0,
    wait_exp_base: float = 2.0,
    wait_jitter: float | timedelta = 0.1,
    budget: RetryBudget | bool = True,
    retry_after: Callable[[BaseException], float | None] | None = retry_after_from,
    max_retry_after: float | timedelta = 60.0,
    breaker: CircuitBreaker | None = None,
    stop: Any = None,
    wait: Any = None,
    before_sleep: Callable[[Any], Any] | None = None,
    clock: Clock | Callable[[], float] | None = None,
    rng: Callable[[], float] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry a sync or async function on the exceptions ``on`` names (required).

    Waits: ``wait_initial * wait_exp_base ** (retry - 1)`` capped at ``wait_max``,
    plus up to ``wait_jitter`` seconds of random jitter, and at least the
    exception's Retry-After (see :func:`retry_after_from`; capped at
    ``max_retry_after``, past which the call gives up). tenacity ``wait=`` and
    ``stop=`` strategies may replace the wait and add a stop condition.

    ``attempts`` counts the first call (``None``: no limit but the others).
    ``timeout`` is the overall deadline for all attempts, inherited by nested calls.
    ``budget``: ``True`` gives this function a budget of its own
    (:class:`RetryBudget` defaults), a :class:`RetryBudget` is shared, ``False``
    disables it. ``breaker``: no retry while it is open (found automatically on a
    function decorated by a :class:`~scalekit.resilience.CircuitBreaker`).

    When the retries stop, the last exception is re-raised.
    """
    _require_tenacity()
    is_retryable = _matcher("on", on)
    if attempts is not None:
        check.count(attempts, "attempts (or None)")
    overall = check.optional_duration(timeout, "timeout")
    w_initial = check.duration(wait_initial, "wait_initial", allow_zero=True)
    w_max = check.duration(wait_max, "wait_max", allow_zero=True)
    w_jitter = check.duration(wait_jitter, "wait_jitter", allow_zero=True)
    max_ra = check.duration(max_retry_after, "max_retry_after", allow_zero=True)
    wait_exp_base = check.number(wait_exp_base, "wait_exp_base", minimum=1)
    if budget is True:
        the_budget: RetryBudget | None = RetryBudget(clock=clock)
    elif budget is False:
        the_budget = None
    elif isinstance(budget, RetryBudget):
        the_budget = budget
    else:
        raise ConfigurationError(f"budget must be a RetryBudget, True or False, got {budget!r}")
    if retry_after is not None and not callable(retry_after):
        raise ConfigurationError(f"retry_after must be callable or None, got {retry_after!r}")
    the_clock = as_clock(clock)
    now = the_clock.now
    draw = rng if rng is not None else random.random
    # one C call per first attempt (the budget's counter in the metrics registry)
    count_call = the_budget._calls.inc if the_budget is not None else None

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        guard: CircuitBreaker | None = breaker or find(fn, CircuitBreaker)

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, CircuitOpenError):
                return False  # never hammer an open breaker
            return is_retryable(exc)

        def build(tenacity: Any, sleep: Any) -> dict[str, Any]:
            planned: dict[int, float | None] = {}

            def plan(rs: Any) -> float | None:
                """The wait before the next attempt, or None to stop (memoised)."""
                n = rs.attempt_number
                if n in planned:
                    return planned[n]
                exc = rs.outcome.exception() if rs.outcome is not None else None
                if wait is not None:
                    delay = float(wait(rs))
                else:
                    try:
                        delay = min(w_max, w_initial * wait_exp_base ** min(n - 1, 64))
                    except OverflowError:  # a large base: the cap long since reached
                        delay = w_max
                    delay += w_jitter * draw()
                if retry_after is not None and exc is not None:
                    ra = retry_after(exc)
                    if ra is not None:
                        if ra > max_ra:
                            planned[n] = None
                            return None
                        delay = max(delay, ra)
                left = remaining()
                if left is not None and delay >= left:
                    planned[n] = None  # the next attempt could not finish in time
                    return None
                planned[n] = delay
                return delay

            def stop_fn(rs: Any) -> bool:
                if attempts is not None and rs.attempt_number >= attempts:
                    return True
                if stop is not None and stop(rs):
                    return True
                if guard is not None and guard.state in (State.OPEN, State.FORCED_OPEN):
                    return True
                if plan(rs) is None:
                    return True
                return the_budget is not None and not the_budget.try_retry()

            def wait_fn(rs: Any) -> float:
                return plan(rs) or 0.0

            kw: dict[str, Any] = {
                "stop": stop_fn,
                "wait": wait_fn,
                "retry": tenacity.retry_if_exception(should_retry),
                "sleep": sleep,
                "reraise": True,
            }
            if before_sleep is not None:
                kw["before_sleep"] = before_sleep
            return kw

        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            async def aretrying(first: BaseException, args: Any, kwargs: Any) -> Any:
                tenacity = _import_tenacity()
                pending = [first]

                async def attempt(*a: Any, **k: Any) -> Any:
                    if pending:
                        raise pending.pop()
                    return await afn(*a, **k)

                r = tenacity.AsyncRetrying(**build(tenacity, the_clock.asleep))
                return await r(attempt, *args, **kwargs)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                if count_call is not None:
                    count_call()
                token = None if overall is None else _DEADLINE.set(_narrowed(overall, now))
                try:
                    return await afn(*args, **kwargs)
                except BaseException as exc:
                    if not should_retry(exc):
                        raise
                    return await aretrying(exc, args, kwargs)
                finally:
                    if token is not None:
                        _DEADLINE.reset(token)

            _attach_budget(async_wrapper, the_budget)
            return cast(Callable[P, R], async_wrapper)

        def retrying(first: BaseException, args: Any, kwargs: Any) -> R:
            tenacity = _import_tenacity()
            pending = [first]

            def attempt(*a: Any, **k: Any) -> R:
                if pending:
                    raise pending.pop()
                return fn(*a, **k)

            r = tenacity.Retrying(**build(tenacity, the_clock.sleep))
            return cast(R, r(attempt, *args, **kwargs))

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if count_call is not None:
                count_call()
            token = None if overall is None else _DEADLINE.set(_narrowed(overall, now))
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                if not should_retry(exc):
                    raise
                return retrying(exc, args, kwargs)
            finally:
                if token is not None:
                    _DEADLINE.reset(token)

        _attach_budget(sync_wrapper, the_budget)
        return sync_wrapper

    return decorate
