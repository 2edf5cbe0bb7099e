"""OpenTelemetry export: observable instruments over a
:class:`~scalekit.observability.Registry`.

``opentelemetry-api`` is imported when this module is (``pip install
'scalekit-primitives[otel]'``); the SDK and its exporters are the application's
choice::

    from opentelemetry import metrics
    from scalekit.observability.otel import instrument
    instrument(meter_provider=metrics.get_meter_provider())

Each metric family becomes one observable instrument, named like the Prometheus
metric without ``_total`` (counters become observable counters, gauges
observable gauges; a histogram becomes two observable counters, ``<name>_sum``
and ``<name>_count``, since OpenTelemetry has no observable histogram). Families
that appear later (a new primitive, a new source) get their instrument when they
appear. The callbacks read the registry once per collection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from scalekit.errors import MissingDependency
from scalekit.observability._metrics import Metric, Registry, default_registry

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency("scalekit.observability.otel", "otel", "opentelemetry-api") from exc

__all__ = ["OtelBridge", "instrument"]

_UNITS = {"seconds": "s", "bytes": "By", "ratio": "1", "": ""}
#: a collection reads the registry once: callbacks within this many seconds share it
_FRESH = 1.0


class OtelBridge:
    """The instruments created for one registry on one meter (see :func:`instrument`)."""

    def __init__(self, registry: Registry, meter: Meter) -> None:
        self.registry = registry
        self.meter = meter
        self._lock = threading.Lock()
        self._made: set[str] = set()
        self._snapshot: tuple[float, dict[str, Metric]] = (-1e9, {})
        registry._watch(self.sync)
        self.sync()

    def close(self) -> None:
        """Stop following the registry: families that appear later get no instrument
        (those made keep reporting until the meter provider shuts down). For a bridge
        on the process-wide registry whose provider goes away (tests)."""
        self.registry._unwatch(self.sync)

    def _metrics(self) -> dict[str, Metric]:
        now = time.monotonic()
        with self._lock:
            at, snap = self._snapshot
            if now - at > _FRESH:
                snap = {m.name: m for m in self.registry.collect()}
                self._snapshot = (now, snap)
            return snap

    def _callback(self, name: str, part: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            m = self._metrics().get(name)
            if m is None:
                return []
            if part == "count":
                return [Observation(s.count, dict(s.labels)) for s in m.samples]
            return [Observation(s.value, dict(s.labels)) for s in m.samples]

        return observe

    def sync(self) -> None:
        """Create the instruments of families that have none yet."""
        with self._lock:
            self._snapshot = (-1e9, {})
        for m in self.registry.collect():
            with self._lock:
                if m.name in self._made:
                    continue
                self._made.add(m.name)
            base = m.name.removesuffix("_total")
            unit = _UNITS.get(m.unit, m.unit)
            if m.kind == "counter":
                self.meter.create_observable_counter(
                    base, [self._callback(m.name, "value")], unit=unit, description=m.help
                )
            elif m.kind == "gauge":
                self.meter.create_observable_gauge(
                    base, [self._callback(m.name, "value")], unit=unit, description=m.help
                )
            else:
                self.meter.create_observable_counter(
                    f"{base}_sum", [self._callback(m.name, "value")], unit=unit,
                    description=m.help,
                )  # fmt: skip
                self.meter.create_observable_counter(
                    f"{base}_count", [self._callback(m.name, "count")],
                    description=f"{m.help} (observations)",
                )  # fmt: skip


def instrument(
    registry: Registry | None = None, *, meter_provider: MeterProvider | None = None
) -> OtelBridge:
    """Export ``registry`` (the default one) through ``meter_provider`` (the global
    one) under the meter ``"scalekit"``."""
    provider = otel_metrics.get_meter_provider() if meter_provider is None else meter_provider
    from scalekit._version import __version__

    meter = provider.get_meter("scalekit", __version__)
    return OtelBridge(default_registry if registry is None else registry, meter)
