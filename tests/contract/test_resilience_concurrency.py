"""The breaker locks its bookkeeping only, never the wrapped call."""

from __future__ import annotations

import threading
import time

from scalekit.resilience import CircuitBreaker


def test_four_threads_of_slow_calls_overlap() -> None:
    # Real time on purpose: this is about the wrapped call not being serialised.
    breaker = CircuitBreaker(
        "overlap",
        record=ConnectionError,
        failure_rate_threshold=0.5,
        window_size=10,
        slow_call_duration=1.0,
        slow_call_rate_threshold=1.0,
        listeners=(lambda e: None,),
    )

    @breaker
    def call() -> str:
        time.sleep(0.2)
        return "ok"

    results: list[str] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        results.append(call())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert results == ["ok"] * 4
    assert elapsed < 0.6, f"4 x 0.2 s calls took {elapsed:.3f}s: the calls were serialised"
    assert breaker.snapshot().window_calls == 4
