"""scalekit.resilience overhead on the success path next to its peers, in one process.

    .venv/bin/python benchmarks/bench_resilience.py            # full run (~60 s)
    .venv/bin/python benchmarks/bench_resilience.py --quick    # ~15 s, smaller samples

What is measured (method: benchmarks/README.md): the cost of a SUCCESSFUL call of a
decorated function in a tight loop, next to the bare call of the same function in
the same loop; the *overhead* is decorated minus bare, per op.

Sections:

1. ``breaker-sync``   a closed breaker around ``f(x)``: scalekit (consecutive failures,
   and a 100-call failure-rate window), pybreaker, circuitbreaker, purgatory, aiobreaker
2. ``breaker-async``  the same around ``await g(x)`` inside one running loop
3. ``retry-sync``     a retry decorator whose first attempt succeeds: scalekit, tenacity,
   stamina
4. ``retry-async``    the same, async

Peers that are not installed are reported as errors, not fatal:
``.venv/bin/pip install pybreaker aiobreaker purgatory circuitbreaker tenacity stamina``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Case, Result, Table, machine_info, print_machine, run_cases, write_json

DISTS = (
    "scalekit-primitives",
    "pybreaker",
    "aiobreaker",
    "purgatory",
    "circuitbreaker",
    "tenacity",
    "stamina",
)
TARGETS = {  # the issue: overhead over the bare call, ns
    "breaker-sync": 700.0,
    "breaker-async": 1000.0,
    "retry-sync": 2000.0,
    "retry-async": 2000.0,
}

_LOOP: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def f(x: int) -> int:
    return x + 1


async def g(x: int) -> int:
    return x + 1


def sync_runner(fn: Callable[[int], Any]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            fn(i)

    return run


def async_runner(fn: Callable[[int], Any]) -> Callable[[int], None]:
    async def many(n: int) -> None:
        for i in range(n):
            await fn(i)

    def run(n: int) -> None:
        loop().run_until_complete(many(n))

    return run


# --------------------------------------------------------------------------- contenders


def breaker_cases(kind: str) -> list[Case]:
    is_async = kind == "async"
    base = g if is_async else f
    runner = async_runner if is_async else sync_runner

    def bare() -> Callable[[int], None]:
        return runner(base)

    def scalekit_consecutive() -> Callable[[int], None]:
        from scalekit.resilience import CircuitBreaker

        b = CircuitBreaker("bench", record=ConnectionError, failure_threshold=5, open_duration=30)
        return runner(b(base))

    def scalekit_window() -> Callable[[int], None]:
        from scalekit.resilience import CircuitBreaker

        b = CircuitBreaker(
            "bench-window",
            record=ConnectionError,
            failure_threshold=None,
            failure_rate_threshold=0.5,
            window_size=100,
        )
        return runner(b(base))

    def pybreaker_() -> Callable[[int], None]:
        import pybreaker

        if is_async:
            raise RuntimeError("pybreaker's async support needs tornado; not measured")
        b = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
        return runner(b(base))

    def aiobreaker_() -> Callable[[int], None]:
        from aiobreaker import CircuitBreaker

        b = CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))
        return runner(b(base))

    def purgatory_() -> Callable[[int], None]:
        if is_async:
            from purgatory import AsyncCircuitBreakerFactory

            af = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
            return runner(af("bench")(base))
        from purgatory import SyncCircuitBreakerFactory

        sf = SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
        return runner(sf("bench")(base))

    def circuitbreaker_() -> Callable[[int], None]:
        from circuitbreaker import circuit

        return runner(circuit(failure_threshold=5, recovery_timeout=30)(base))

    return [
        Case("bare call (baseline)", bare, peer=False),
        Case("scalekit CircuitBreaker (consecutive)", scalekit_consecutive, peer=False),
        Case("scalekit CircuitBreaker (rate window of 100)", scalekit_window, peer=False),
        Case("pybreaker", pybreaker_),
        Case("circuitbreaker", circuitbreaker_),
        Case("purgatory", purgatory_),
        Case("aiobreaker", aiobreaker_),
    ]


def retry_cases(kind: str) -> list[Case]:
    is_async = kind == "async"
    base = g if is_async else f
    runner = async_runner if is_async else sync_runner

    def bare() -> Callable[[int], None]:
        return runner(base)

    def scalekit_retry() -> Callable[[int], None]:
        from scalekit.resilience import retry

        return runner(retry(on=ConnectionError, attempts=3)(base))

    def scalekit_retry_deadline() -> Callable[[int], None]:
        from scalekit.resilience import retry

        return runner(retry(on=ConnectionError, attempts=3, timeout=45.0)(base))

    def tenacity_() -> Callable[[int], None]:
        import tenacity

        return runner(
            tenacity.retry(
                stop=tenacity.stop_after_attempt(3),
                retry=tenacity.retry_if_exception_type(ConnectionError),
                wait=tenacity.wait_exponential_jitter(),
            )(base)
        )

    def stamina_() -> Callable[[int], None]:
        import stamina

        return runner(stamina.retry(on=ConnectionError, attempts=3)(base))

    return [
        Case("bare call (baseline)", bare, peer=False),
        Case("scalekit @retry", scalekit_retry, peer=False),
        Case("scalekit @retry(timeout=45)", scalekit_retry_deadline, peer=False),
        Case("tenacity", tenacity_),
        Case("stamina", stamina_),
    ]


# --------------------------------------------------------------------------- report


def _ns(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f} ns"


def render_overhead(section: str, results: list[Result]) -> str:
    bare = results[0]
    if bare.error:
        return "No baseline: no overhead."
    rows = [r for r in results[1:] if r.error is None]
    peers = [r for r in rows if r.peer]
    best = min(peers, key=lambda r: r.cpu_ns) if peers else None
    lines = [
        f"Baseline, the bare call in the same loop: {_ns(bare.cpu_ns)} CPU, "
        f"{_ns(bare.wall_ns)} wall per op.",
        "",
        "| implementation | raw CPU/op | overhead CPU/op | overhead wall/op "
        "| overhead ÷ best peer's |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in rows:
        oc = r.cpu_ns - bare.cpu_ns
        ratio = "-"
        if best is not None and best.cpu_ns - bare.cpu_ns > 0:
            ratio = f"{oc / (best.cpu_ns - bare.cpu_ns):.2f}x"
        name = r.name if r.peer else f"**{r.name}**"
        lines.append(
            f"| {name} | {_ns(r.cpu_ns)} | {_ns(oc)} | {_ns(r.wall_ns - bare.wall_ns)} | {ratio} |"
        )
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | not measured: {r.error} | | | |")
    target = TARGETS[section]
    ours = [r for r in rows if not r.peer]
    if ours:
        first = ours[0]
        over = first.cpu_ns - bare.cpu_ns
        verdict = "met" if over <= target else "MISSED"
        lines += [
            "",
            f"Target for {first.name}: overhead <= {target:,.0f} ns; measured {over:,.0f} ns "
            f"(CPU, median): {verdict}.",
        ]
    return "\n".join(lines)


TITLES = {
    "breaker-sync": "Circuit breaker, closed, successful sync call",
    "breaker-async": "Circuit breaker, closed, successful async call",
    "retry-sync": "Retry decorator, first attempt succeeds, sync",
    "retry-async": "Retry decorator, first attempt succeeds, async",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller samples (~15 s)")
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    ap.add_argument("--sections", default=",".join(TITLES), help="comma-separated subset")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--ops", type=int)
    args = ap.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    repeats = args.repeats or (3 if args.quick else 9)
    ops = args.ops or (20_000 if args.quick else 100_000)

    started = time.perf_counter()
    info = machine_info(DISTS)
    payload: dict[str, Any] = {"machine": info, "tables": {}, "quick": args.quick}
    print("# scalekit.resilience success-path overhead benchmarks\n")
    print_machine(info)
    try:
        for section in sections:
            print(f"[{section}]", file=sys.stderr, flush=True)
            what, kind = section.split("-")
            cases = breaker_cases(kind) if what == "breaker" else retry_cases(kind)
            n = ops if kind == "sync" else ops // 2
            results = run_cases(cases, ops=n, repeats=repeats)
            table = Table(
                TITLES[section],
                results[1:],
                explain="Raw cost per call of the decorated function; ratios are to the "
                "best peer's raw cost.",
            )
            print(table.render() + "\n")
            print(render_overhead(section, results) + "\n", flush=True)
            payload["tables"][section] = {
                "baseline": Table("baseline", results[:1]).as_json(),
                **table.as_json(),
            }
    finally:
        if _LOOP is not None:
            _LOOP.close()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(
        f"_Total time: {time.perf_counter() - started:.0f} s; load average at the end: "
        f"{' '.join(load)}._"
    )
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
