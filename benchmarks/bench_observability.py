"""scalekit.observability: what counting costs on the hot path, on this machine.

    .venv/bin/python benchmarks/bench_observability.py            # ~20 s
    .venv/bin/python benchmarks/bench_observability.py --quick    # ~5 s

The reference rows (peers) are the two ways the primitives count today: a bare
``next()`` on an ``itertools.count`` (lock-free, read back through its repr) and
an ``int += 1`` under a ``threading.Lock``; beside them ``prometheus_client``'s
``Counter.inc()`` when it is installed. The scalekit rows are a registry child's
``inc()`` (what a primitive calls per decision), ``add(n)``, a gauge ``set`` and
a histogram ``observe``. Each case is a loop of ``n`` calls through a local
name, so the loop's own cost is in every row alike.

Then the read side: one ``collect()`` of a registry holding 50 labelled series
and 10 ``stats()`` sources (what a scrape costs; nothing is read between scrapes).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Case, Table, machine_info, print_machine, run_cases, write_json

from scalekit.observability import Registry

DISTS = ["prometheus-client"]


def counting_cases() -> list[Case]:
    def itertools_count() -> Callable[[int], Any]:
        c = itertools.count()

        def run(n: int) -> None:
            step = c.__next__
            for _ in range(n):
                step()

        return run

    def locked_int() -> Callable[[int], Any]:
        lock = threading.Lock()
        box = [0]

        def run(n: int) -> None:
            for _ in range(n):
                with lock:
                    box[0] += 1

        return run

    def prometheus_counter() -> Callable[[int], Any]:
        from prometheus_client import CollectorRegistry
        from prometheus_client import Counter as PCounter

        c = PCounter("bench", "b", ["limiter"], registry=CollectorRegistry()).labels("chat")

        def run(n: int) -> None:
            inc = c.inc
            for _ in range(n):
                inc()

        return run

    def child(kind: str) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            r = Registry()
            if kind == "gauge":
                g = r.gauge("scalekit_bench", "b", labels=("limiter",)).labels("chat")

                def run_g(n: int) -> None:
                    s = g.set
                    for i in range(n):
                        s(i)

                return run_g
            if kind == "histogram":
                h = r.histogram("scalekit_bench_seconds", "b", unit="seconds").labels()

                def run_h(n: int) -> None:
                    o = h.observe
                    for _ in range(n):
                        o(0.003)

                return run_h
            c = r.counter("scalekit_bench_total", "b", labels=("limiter",)).labels("chat")
            if kind == "add":

                def run_a(n: int) -> None:
                    a = c.add
                    for _ in range(n):
                        a(2)

                return run_a

            def run(n: int) -> None:
                inc = c.inc
                for _ in range(n):
                    inc()

            return run

        return setup

    def attr_inc() -> Callable[[int], Any]:
        r = Registry()
        c = r.counter("scalekit_bench_total", "b", labels=("limiter",)).labels("chat")

        class Primitive:  # how a primitive holds its counter: an attribute
            __slots__ = ("allowed",)

        p = Primitive()
        p.allowed = c

        def run(n: int) -> None:
            for _ in range(n):
                p.allowed.inc()

        return run

    return [
        Case("itertools.count: next(c)", itertools_count),
        Case("int += 1 under a threading.Lock", locked_int),
        Case("prometheus_client Counter.inc()", prometheus_counter),
        Case("Counter.inc() (bound, local name)", child("inc"), peer=False),
        Case("self.counter.inc() (attribute, as in a primitive)", attr_inc, peer=False),
        Case("Counter.add(2)", child("add"), peer=False),
        Case("Gauge.set(v)", child("gauge"), peer=False),
        Case("Histogram.observe(v)", child("histogram"), peer=False),
    ]


def _scraped_registry() -> tuple[Registry, list[Any]]:
    """50 labelled series and 10 cache sources (the caches returned: keep them alive)."""
    from scalekit.cache import Cache

    r = Registry()
    fam = r.counter("scalekit_bench_total", "b", labels=("limiter",))
    for i in range(50):
        fam.labels(f"l{i}").inc()
    caches = [Cache(name=f"c{i}") for i in range(10)]
    for c in caches:
        r.register_source("cache", c.stats)
    return r, caches


def collect_cases() -> list[Case]:
    def reader(read: Callable[[Registry], object]) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            r, caches = _scraped_registry()

            def run(n: int) -> None:
                for _ in range(n):
                    read(r)

            run.caches = caches  # type: ignore[attr-defined]  # the sources stay alive
            return run

        return setup

    def expo(r: Registry) -> object:
        from scalekit.observability.prometheus import exposition

        return exposition(r)

    return [
        Case(
            "Registry.collect(): 50 series + 10 cache sources", reader(Registry.collect), peer=False
        ),
        Case("Prometheus exposition of the same", reader(expo), peer=False),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    repeats = 3 if args.quick else 7
    ops = 200_000 if args.quick else 1_000_000
    info = machine_info(DISTS)
    print("# scalekit.observability benchmarks\n")
    print_machine(info)
    t1 = Table(
        "1. One increment on the hot path",
        run_cases(counting_cases(), ops=ops, repeats=repeats),
        explain="Peers: how the primitives count today, and prometheus_client.",
    )
    print(t1.render() + "\n", flush=True)
    t2 = Table(
        "2. One read of the registry (a scrape)",
        run_cases(collect_cases(), ops=200 if args.quick else 1_000, repeats=repeats),
    )
    print(t2.render() + "\n", flush=True)
    if args.json:
        write_json(
            args.json, {"machine": info, "tables": {"count": t1.as_json(), "collect": t2.as_json()}}
        )


if __name__ == "__main__":
    main()
