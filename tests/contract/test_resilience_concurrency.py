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


def test_bulkhead_never_exceeds_its_slots_under_threads() -> None:
    import sys

    from scalekit.resilience import Bulkhead

    bh = Bulkhead("stress", max_concurrent=3, max_queued=100)
    lock = threading.Lock()
    running = 0
    peak = 0

    @bh
    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0)  # let the others in
        with lock:
            running -= 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=lambda: [work() for _ in range(50)]) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    stats = bh.stats()
    assert peak <= 3
    assert (stats.admitted, stats.rejected, stats.running, stats.queued) == (1000, 0, 0, 0)
