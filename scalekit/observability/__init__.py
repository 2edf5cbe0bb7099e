"""Metrics, structured state-change events and health reports.

One in-process :class:`Registry` (``default_registry``) holds counters, gauges
and histograms by name; primitives report into it, and so do the ``stats()`` of
primitives registered as sources (``register_source``). Exporters read it:
:mod:`scalekit.observability.prometheus` and :mod:`scalekit.observability.otel`,
each behind its optional extra and imported only when used. A registry nobody
reads costs the counters and nothing else.
"""

from __future__ import annotations

from scalekit.observability._asgi import health_app, metrics_app
from scalekit.observability._events import EVENTS, breaker_listener, log_event
from scalekit.observability._health import (
    Check,
    HealthReport,
    PostgresProbe,
    Probe,
    RedisProbe,
    RegistryProbe,
    Status,
    Thresholds,
    health_report,
)
from scalekit.observability._metrics import (
    DEFAULT_BUCKETS,
    Counter,
    Family,
    Gauge,
    Histogram,
    Metric,
    Registry,
    Sample,
    default_registry,
)
from scalekit.observability._sources import SHAPES

__all__ = [
    "Check",
    "Counter",
    "DEFAULT_BUCKETS",
    "EVENTS",
    "Family",
    "Gauge",
    "HealthReport",
    "Histogram",
    "Metric",
    "PostgresProbe",
    "Probe",
    "RedisProbe",
    "Registry",
    "RegistryProbe",
    "SHAPES",
    "Sample",
    "Status",
    "Thresholds",
    "breaker_listener",
    "default_registry",
    "health_app",
    "health_report",
    "log_event",
    "metrics_app",
]
