"""Prometheus export: a collector over a :class:`~scalekit.observability.Registry`.

``prometheus-client`` is imported when this module is (``pip install
'scalekit-primitives[prometheus]'``)::

    from prometheus_client import REGISTRY
    from scalekit.observability.prometheus import ScalekitCollector
    REGISTRY.register(ScalekitCollector())

or serve :func:`scalekit.observability.metrics_app`. The collector reads the
registry at each scrape; nothing is exported between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scalekit.errors import MissingDependency
from scalekit.observability._metrics import Registry, default_registry

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        "scalekit.observability.prometheus", "prometheus", "prometheus_client"
    ) from exc

__all__ = ["ScalekitCollector", "exposition"]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class ScalekitCollector(Collector):
    """Yields every metric of ``registry`` (the default registry by default)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = default_registry if registry is None else registry

    def collect(self) -> Iterator[Metric]:
        for m in self.registry.collect():
            labels = list(m.labelnames)
            family: Any
            if m.kind == "counter":
                family = CounterMetricFamily(m.name, m.help, labels=labels, unit=m.unit)
                for s in m.samples:
                    family.add_metric([s.labels[n] for n in labels], s.value)
            elif m.kind == "gauge":
                family = GaugeMetricFamily(m.name, m.help, labels=labels, unit=m.unit)
                for s in m.samples:
                    family.add_metric([s.labels[n] for n in labels], s.value)
            else:
                family = HistogramMetricFamily(m.name, m.help, labels=labels, unit=m.unit)
                for s in m.samples:
                    family.add_metric(
                        [s.labels[n] for n in labels],
                        [(_le(b), float(c)) for b, c in s.buckets],
                        s.value,
                    )
            yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families appear as primitives register: describe nothing


def exposition(registry: Registry | None = None) -> tuple[bytes, str]:
    """The registry in the Prometheus text format: ``(body, content type)``."""
    from prometheus_client import CONTENT_TYPE_LATEST

    target = CollectorRegistry(auto_describe=False)
    target.register(ScalekitCollector(registry))
    return generate_latest(target), CONTENT_TYPE_LATEST
