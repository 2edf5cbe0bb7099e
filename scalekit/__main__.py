"""``python -m scalekit`` / the ``scalekit`` console script.

``demo``: the example services run with the primitives off and on, measured on a real
PostgreSQL (:mod:`scalekit._demo`). ``tour``: a short, self-explaining tour on the memory
backend: rate limits, the query cache, circuit breakers and retries, and sampling.
``capacity plan.toml``: a capacity
plan's load and headroom. ``limits``, ``breaker``, ``cache`` and ``health``: the
operations commands of :mod:`scalekit._cli` (exit codes documented there).

Time in the tour is simulated with :class:`scalekit.testing.FakeClock`, so an hour
of traffic runs in milliseconds; the speed figure at the end is measured for real.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from scalekit import ConcurrencyLimiter, RateLimiter, __version__
from scalekit.ratelimit import ALGORITHMS
from scalekit.testing import FakeClock


def _title(text: str) -> None:
    print(f"\n== {text}")


def demo_chat() -> None:
    _title("A chat endpoint: 60 messages/hour per user")
    clock = FakeClock()
    chat = RateLimiter("memory://", "60/hour", clock=clock)
    results = [chat.hit("user:alice") for _ in range(65)]
    allowed = sum(d.allowed for d in results)
    last = results[-1]
    print(f"alice sends 65 messages at once: {allowed} allowed, {65 - allowed} refused")
    print(f"the refusal says: retry_after={last.retry_after:.0f}s, remaining={last.remaining}")
    print(f"bob is unaffected: allowed={chat.hit('user:bob').allowed}")
    clock.advance(last.retry_after)
    print(f"after waiting retry_after, alice may post again: {chat.hit('user:alice').allowed}")


def demo_tiers() -> None:
    _title("Tiers chosen per call: free 20/minute, paid 100/minute")
    clock = FakeClock()
    api = RateLimiter("memory://", {"free": "20/minute", "paid": "100/minute"}, clock=clock)
    for tier in ("free", "paid"):
        n = sum(api.hit(f"user:{tier}", tier=tier).allowed for _ in range(150))
        print(f"{tier:>4}: 150 requests in one minute -> {n} allowed")


def demo_multi_window() -> None:
    _title("Several windows, all-or-nothing: '3/minute; 5/hour'")
    clock = FakeClock()
    lim = RateLimiter("memory://", "3/minute; 5/hour", clock=clock)
    line = []
    for minute in range(4):
        got = "".join("+" if lim.hit("k").allowed else "." for _ in range(4))
        line.append(f"minute {minute}: {got}")
        clock.advance(60)
    print("  ".join(line) + "   (+ allowed, . refused)")
    print("a refused hit consumes from no window, so the hour's 5 are spent exactly")


def demo_boundary_burst() -> None:
    _title("Why the algorithm matters: a burst across a window boundary (limit 10/minute)")
    for algorithm in ALGORITHMS:
        clock = FakeClock(start=1_700_000_080.0)  # 20 s before a minute boundary
        lim = RateLimiter("memory://", "10/minute", algorithm=algorithm, clock=clock)
        first = sum(lim.hit("k").allowed for _ in range(10))
        clock.advance(20.5)  # just after the boundary
        second = sum(lim.hit("k").allowed for _ in range(10))
        print(f"{algorithm:>15}: {first} + {second} = {first + second} allowed within 21 seconds")
    print("fixed_window lets 2x the limit through at a boundary; the buckets add only what")
    print("refilled in those 20 s (10/minute), the sliding windows nothing")


def demo_cost_and_concurrency() -> None:
    _title("Costs and concurrency")
    clock = FakeClock()
    images = RateLimiter("memory://", "3/day", clock=clock)
    d = images.hit("user:alice", cost=4)
    print(f"a request costing 4 against 3/day: allowed={d.allowed}, retry_after={d.retry_after}")
    jobs = ConcurrencyLimiter("memory://", 2, lease_ttl=30, clock=clock)
    a, b, c = (jobs.try_acquire("user:alice") for _ in range(3))
    print(f"3 jobs asking for 2 slots: {[x is not None for x in (a, b, c)]}")
    clock.advance(31)
    print(
        "the holders crashed without releasing; 31 s later their leases expired: "
        f"{jobs.try_acquire('user:alice') is not None}"
    )


def demo_cache() -> None:
    import asyncio

    from scalekit.cache import Cache, cached

    _title("A query cache: @cached(ttl=300), one load per cold key, stale-while-revalidate")
    clock = FakeClock()
    cache = Cache("memory://", name="demo", clock=clock)
    queries: list[int] = []

    @cached(ttl=300, stale_while_revalidate=60, cache=cache)
    async def conversation_meta(conversation_id: int) -> dict[str, int]:
        queries.append(conversation_id)
        await asyncio.sleep(0.01)  # the database query
        return {"id": conversation_id, "messages": 40 + len(queries)}

    async def run() -> None:
        burst = await asyncio.gather(*(conversation_meta(7) for _ in range(1000)))
        print(
            f"1,000 concurrent requests on a cold key: {len(queries)} query, {len(burst)} answers"
        )
        clock.advance(310)  # expired 10 s ago, inside the 60 s stale window
        stale = await conversation_meta(7)
        print(f"after expiry the next caller gets the stale value at once: {stale}")
        await cache.adrain()  # the one background refresh
        print(f"...while one refresh ran in the background: {await conversation_meta(7)}")

    asyncio.run(run())
    s = cache.stats()
    print(
        f"stats: misses={s.misses} (callers that found nothing; they shared "
        f"{s.loads - 1} load), stale_served={s.stale_served}, hits={s.hits}, loads={s.loads}"
    )
    print("same code shared by a fleet: Cache('redis://localhost:6379/0') or 'tiered+redis://'")


def demo_resilience() -> None:
    from scalekit.errors import CircuitOpenError
    from scalekit.resilience import CircuitBreaker

    _title("A circuit breaker around a flaky LLM provider (3 failures open it for 30 s)")
    clock = FakeClock()
    breaker = CircuitBreaker(
        "llm", record=ConnectionError, failure_threshold=3, open_duration=30.0, clock=clock
    )
    calls = {"n": 0, "up": False}

    @breaker
    def complete(prompt: str) -> str:
        calls["n"] += 1
        if not calls["up"]:
            raise ConnectionError("503 from the provider")
        return prompt.upper()

    outcomes = []
    for _ in range(6):
        try:
            outcomes.append(complete("hi"))
        except ConnectionError:
            outcomes.append("failed")
        except CircuitOpenError as exc:
            outcomes.append(f"rejected (retry in {exc.retry_after:.0f}s)")
    print(f"6 calls: {outcomes}")
    print(f"the provider saw {calls['n']} of them; the rest failed fast without waiting")
    clock.advance(30)
    calls["up"] = True
    print(f"30 s later one probe goes through and closes it: {complete('hi')!r}")


def demo_sampling() -> None:
    from typing import NamedTuple

    from scalekit.sampling import Gate, Pipeline, Weighted, ramp

    class Message(NamedTuple):
        id: str
        text: str
        conversation_length: int

    _title("Sampling expensive background work: skip short and young, keep 20-30 %")
    extraction: Pipeline[Message] = Pipeline(
        Gate("long_enough", lambda m: len(m.text) >= 50),
        Gate("mature", lambda m: m.conversation_length >= 3),
        Weighted(
            ramp(lambda m: m.conversation_length, (3, 0.20), (30, 0.30)),
            key=lambda m: m.id,
            name="by_maturity",
        ),
        name="memory_extraction",
    )
    long_text = "x" * 80
    messages = [Message(f"m{i}", long_text if i % 4 else "ok", i % 40) for i in range(20_000)]
    kept = sum(bool(extraction.decide(m)) for m in messages)
    st = extraction.stats()
    gated = len(messages) - st.skipped["long_enough"] - st.skipped["mature"]
    print(
        f"20,000 messages -> {kept} extractions: {kept / gated:.1%} of the {gated:,} "
        f"that pass the gates; skipped: {st.skipped}"
    )
    print(f"why: {extraction.decide(messages[5]).explain()}")
    print("the same message always gets the same decision (a stable hash of its id)")


def demo_speed(quick: bool) -> None:
    _title("Speed (measured now, real clock)")
    n = 50_000 if quick else 300_000
    keys = [f"user:{i}" for i in range(10_000)]
    for algorithm in ("gcra", "sliding_window"):
        lim = RateLimiter("memory://", "1000000/hour", algorithm=algorithm)
        hit = lim.hit
        for k in keys:
            hit(k)
        began = time.process_time()
        for i in range(n):
            hit(keys[i % 10_000])
        cpu = time.process_time() - began
        print(f"{algorithm:>15}: {cpu / n * 1e6:.2f} us CPU per decision over 10,000 keys")
    print("side-by-side comparisons with peer libraries: python3 dev.py bench")


def cmd_tour(args: argparse.Namespace) -> int:
    print(f"scalekit {__version__} tour: the primitives on the in-memory backend")
    print("(time is simulated with FakeClock, so an hour passes instantly)")
    demo_chat()
    demo_tiers()
    demo_multi_window()
    demo_boundary_burst()
    demo_cost_and_concurrency()
    demo_cache()
    demo_resilience()
    demo_sampling()
    demo_speed(args.quick)
    print("\nSame code on Redis: RateLimiter('redis://localhost:6379/0', '60/hour')")
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    from scalekit.capacity import (
        PlanError,
        load_plan,
        project,
        render_html,
        render_json,
        render_text,
    )

    try:
        plan = load_plan(args.plan)
        projection = project(plan, users=args.users)
    except (PlanError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    render = render_json if args.json else render_html if args.html else render_text
    print(render(projection))
    return 0


_DESCRIPTION = """\
scalekit: scaling primitives for Python services. The operations commands
(limits, breaker, cache, health) act on --redis-url or SCALEKIT_REDIS_URL and
print JSON with --json; 'scalekit COMMAND --help' explains each one.
"""


def main(argv: Sequence[str] | None = None) -> int:
    from scalekit._cli import EPILOG, USAGE, add_commands, run
    from scalekit._demo import add_parser as add_demo_parser

    parser = argparse.ArgumentParser(
        prog="scalekit",
        description=_DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scalekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_demo_parser(sub)
    tour = sub.add_parser("tour", help="a short tour of the primitives on the memory backend")
    tour.add_argument("--quick", action="store_true", help="shorter speed measurement")
    tour.set_defaults(func=cmd_tour)
    cap = sub.add_parser(
        "capacity",
        help="project load and headroom from a TOML plan file",
        description="Project a capacity plan: load, headroom against every limit at the "
        "warning/critical thresholds, and the user count at which each limit breaks.",
    )
    cap.add_argument("plan", help="the plan file (TOML); see examples/capacity/")
    out = cap.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the projection as JSON")
    out.add_argument("--html", action="store_true", help="print an HTML page with a chart")
    cap.add_argument("--users", type=int, help="project at this many users instead")
    cap.set_defaults(func=cmd_capacity)
    add_commands(sub)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:  # the list of commands, and a usage error for scripts
        parser.print_help(sys.stderr)
        return USAGE
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
