"""Structured log events for state changes, with a stable ``event`` field.

A state change (a breaker opened, a backend went down or came back, a pool ran
out of connections) is logged once, on the ``scalekit.events`` logger, as a
record whose ``event`` attribute is one of :data:`EVENTS` and whose other fields
are attributes too (``extra=``), so JSON formatters (python-json-logger,
structlog's stdlib bridge) emit them as keys. The message repeats them as
``event key=value ...`` for plain-text logs.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Final

__all__ = ["EVENTS", "breaker_listener", "log_event"]

logger = logging.getLogger("scalekit.events")

#: the stable event names; a dashboard or an alert may match on them
EVENTS: Final = frozenset({
    "breaker.opened",
    "breaker.half_opened",
    "breaker.closed",
    "breaker.forced_open",
    "breaker.disabled",
    "backend.down",
    "backend.up",
    "pool.exhausted",
    "health.changed",
})  # fmt: skip

_LEVELS: Final = {
    "breaker.opened": logging.WARNING,
    "breaker.forced_open": logging.WARNING,
    "backend.down": logging.ERROR,
    "pool.exhausted": logging.WARNING,
}

# attribute names a LogRecord already has: an event field may not shadow them
_RESERVED: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


def log_event(event: str, /, *, level: int | None = None, **fields: Any) -> None:
    """Log one state change: ``log_event("backend.down", backend="redis", error=...)``.

    ``event`` must be one of :data:`EVENTS`; ``fields`` become record attributes
    (a field named like a ``LogRecord`` attribute is stored with an ``event_``
    prefix). The level defaults to WARNING/ERROR for bad news, INFO otherwise.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; the stable events are {sorted(EVENTS)}")
    lvl = _LEVELS.get(event, logging.INFO) if level is None else level
    if not logger.isEnabledFor(lvl):
        return
    extra = {("event_" + k if k in _RESERVED else k): v for k, v in fields.items()}
    extra["event"] = event
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    logger.log(lvl, "%s %s", event, text, extra=extra)


_warned: list[bool] = []


def breaker_listener(event: Any) -> None:
    """Deprecated, does nothing: every :class:`~scalekit.resilience.CircuitBreaker`
    logs its state changes as ``breaker.*`` events itself. Adding this listener
    warns once (``DeprecationWarning``); remove it. Goes in the next release."""
    if not _warned:
        _warned.append(True)
        warnings.warn(
            "breaker_listener is deprecated and does nothing: breakers log their "
            "breaker.* events themselves; remove the listener",
            DeprecationWarning,
            stacklevel=2,
        )
