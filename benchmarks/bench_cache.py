"""scalekit.cache ``@cached`` in-memory hit overhead next to its peers, in one process.

    .venv/bin/python benchmarks/bench_cache.py            # full run (~60-90 s)
    .venv/bin/python benchmarks/bench_cache.py --quick    # ~20 s, smaller samples
    .venv/bin/python benchmarks/bench_cache.py --profile  # plus a cProfile of scalekit's hit path

What is measured (see benchmarks/README.md for the method): the cost of a cache HIT
of a decorated function, in a tight loop, next to the bare call of the same
function in the same kind of loop; the *overhead* is decorated minus bare, per op.

Sections:

1. ``sync-hot``    ``f(user_id)`` on one key
2. ``sync-10k``    ``f(user_id)`` cycling over 10,000 keys (pre-warmed)
3. ``async-hot``   ``await g(user_id)`` on one key, inside one running event loop
4. ``async-10k``   ``await g(user_id)`` cycling over 10,000 keys (pre-warmed)
5. ``breakdown``   where scalekit's sync hit spends its time (components timed alone)

Every contender's function counts its own executions, so each row shows the loader
calls per 1,000 ops during the timed repeats (0 means every op was a hit).

Peers that are not installed are reported as errors, not fatal:
``.venv/bin/pip install cachetools cashews aiocache dogpile.cache``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import pstats
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Case, Result, Table, machine_info, print_machine, run_cases, write_json

DISTS = ("scalekit-primitives", "cachetools", "dogpile.cache", "cashews", "aiocache")
N_KEYS = 10_000
KEYS = list(range(N_KEYS))
HOT_KEY = 42
TTL = 600
TARGET_NS = 1000.0  # the issue: hit overhead over the bare call <= 1 µs

# --------------------------------------------------------------------------- functions


class Counter:
    """Counts executions of one contender's function; ``after`` reports per 1k ops."""

    def __init__(self, ops: int) -> None:
        self.n = 0
        self.ops = ops
        self._mark = 0

    def before(self) -> None:
        self._mark = self.n

    def after(self) -> float:
        return (self.n - self._mark) * 1000 / self.ops


def sync_fn(counter: Counter) -> Callable[[int], int]:
    def f(user_id: int) -> int:
        counter.n += 1
        return user_id * 2

    return f


def async_fn(counter: Counter) -> Callable[[int], Awaitable[int]]:
    async def g(user_id: int) -> int:
        counter.n += 1
        return user_id * 2

    return g


# --------------------------------------------------------------------------- loops


def sync_loop(fn: Callable[[int], Any], scenario: str) -> Callable[[int], None]:
    if scenario == "hot":

        def run_hot(n: int) -> None:
            for k in itertools.repeat(HOT_KEY, n):
                fn(k)

        return run_hot

    keys = itertools.cycle(KEYS)  # carries on across repeats: every key gets visited

    def run_spread(n: int) -> None:
        for k in itertools.islice(keys, n):
            fn(k)

    return run_spread


_LOOP: asyncio.AbstractEventLoop | None = None


def event_loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def async_loop(fn: Callable[[int], Awaitable[Any]], scenario: str) -> Callable[[int], None]:
    loop = event_loop()
    if scenario == "hot":

        async def many_hot(n: int) -> None:
            for k in itertools.repeat(HOT_KEY, n):
                await fn(k)

        return lambda n: loop.run_until_complete(many_hot(n))

    keys = itertools.cycle(KEYS)

    async def many_spread(n: int) -> None:
        for k in itertools.islice(keys, n):
            await fn(k)

    return lambda n: loop.run_until_complete(many_spread(n))


def prewarm(run: Callable[[int], None], scenario: str) -> None:
    run(1 if scenario == "hot" else N_KEYS)


# --------------------------------------------------------------------------- contenders
# Each factory takes the contender's Counter and returns the decorated function.
# (name, peer, single-flight, factory)

Factory = Callable[[Counter], Callable[[int], Any]]


def sk_sync_default(c: Counter) -> Callable[[int], Any]:
    from scalekit.cache import cached

    return cached(ttl=TTL)(sync_fn(c))


def sk_sync_small(c: Counter) -> Callable[[int], Any]:
    """Diagnostic: a cache bounded at the default 10,000 holding one key more than that."""
    from scalekit.cache import Cache, cached

    cache = Cache("memory://", name="bench-10001")
    other = cached(ttl=TTL, cache=cache, namespace="other")(sync_fn(Counter(1)))
    f = cached(ttl=TTL, cache=cache)(sync_fn(c))

    def call(user_id: int) -> int:
        if user_id == 0:  # once per cycle: keep a 10,001st key alive
            other(0)
        return f(user_id)

    return call


def ct_plain(c: Counter) -> Callable[[int], Any]:
    from cachetools import TTLCache, cached

    return cached(TTLCache(maxsize=20_000, ttl=TTL))(sync_fn(c))


def ct_lock(c: Counter) -> Callable[[int], Any]:
    from cachetools import TTLCache, cached

    return cached(TTLCache(maxsize=20_000, ttl=TTL), lock=threading.Lock())(sync_fn(c))


def ct_condition(c: Counter) -> Callable[[int], Any]:
    from cachetools import TTLCache, cached

    return cached(TTLCache(maxsize=20_000, ttl=TTL), condition=threading.Condition())(sync_fn(c))


_dogpile_seq = itertools.count()


def dogpile(c: Counter) -> Callable[[int], Any]:
    from dogpile.cache import make_region

    region = make_region().configure("dogpile.cache.memory", expiration_time=TTL)
    fn = sync_fn(c)
    fn.__name__ = f"f{next(_dogpile_seq)}"  # distinct key namespace per region
    return region.cache_on_arguments()(fn)


def sk_async_default(c: Counter) -> Callable[[int], Any]:
    from scalekit.cache import cached

    return cached(ttl=TTL)(async_fn(c))


_cashews_ready = False
_cashews_seq = itertools.count()


def _cashews(c: Counter, *, lock: bool) -> Callable[[int], Any]:
    global _cashews_ready
    from cashews import cache

    if not _cashews_ready:
        # mem:// holds 1,000 entries by default: 10,000 keys would all miss
        cache.setup(f"mem://?size={4 * N_KEYS}")
        _cashews_ready = True
    fn = async_fn(c)
    fn.__name__ = f"g{next(_cashews_seq)}"
    return cache(ttl=TTL, lock=lock)(fn)


def cashews_plain(c: Counter) -> Callable[[int], Any]:
    return _cashews(c, lock=False)


def cashews_lock(c: Counter) -> Callable[[int], Any]:
    return _cashews(c, lock=True)


def aiocache_plain(c: Counter) -> Callable[[int], Any]:
    from aiocache import SimpleMemoryCache, cached

    return cached(ttl=TTL, cache=SimpleMemoryCache)(async_fn(c))


def aiocache_stampede(c: Counter) -> Callable[[int], Any]:
    from aiocache import SimpleMemoryCache, cached_stampede

    return cached_stampede(ttl=TTL, lease=2, cache=SimpleMemoryCache)(async_fn(c))


SYNC: list[tuple[str, bool, str, Factory]] = [
    ("scalekit @cached(ttl=600) (default cache)", False, "yes", sk_sync_default),
    ("cachetools @cached(TTLCache) no lock", True, "no (not thread-safe)", ct_plain),
    ("cachetools @cached(TTLCache, lock=Lock())", True, "no", ct_lock),
    ("cachetools @cached(TTLCache, condition=Condition())", True, "yes", ct_condition),
    ("dogpile.cache memory region @cache_on_arguments()", True, "yes", dogpile),
]
SYNC_DIAG: list[tuple[str, bool, str, Factory]] = [
    (
        "(diagnostic) scalekit, cache bound 10,000 (the default), 10,001 keys live",
        False,
        "yes",
        sk_sync_small,
    ),
]
ASYNC: list[tuple[str, bool, str, Factory]] = [
    ("scalekit @cached(ttl=600) (default cache)", False, "yes", sk_async_default),
    ("cashews mem:// @cache(ttl=600)", True, "no", cashews_plain),
    ("cashews mem:// @cache(ttl=600, lock=True)", True, "yes", cashews_lock),
    ("aiocache @cached(ttl=600, SimpleMemoryCache)", True, "no", aiocache_plain),
    ("aiocache @cached_stampede(ttl=600, lease=2)", True, "yes (lease lock)", aiocache_stampede),
]

TITLES = {
    ("sync", "hot"): "1. sync hit, one hot key",
    ("sync", "spread"): "2. sync hit, cycling over 10,000 keys (pre-warmed)",
    ("async", "hot"): "3. async hit (await in one running loop), one hot key",
    ("async", "spread"): "4. async hit (await in one running loop), cycling over 10,000 keys",
}


def build_cases(
    kind: str, scenario: str, ops: int
) -> tuple[list[Case], dict[str, str], dict[str, Counter]]:
    contenders = list(SYNC if kind == "sync" else ASYNC)
    if kind == "sync" and scenario == "spread":
        contenders += SYNC_DIAG
    loop_of = sync_loop if kind == "sync" else async_loop
    make_bare = sync_fn if kind == "sync" else async_fn
    cases: list[Case] = []
    flight: dict[str, str] = {}
    counters: dict[str, Counter] = {}

    bare_counter = Counter(ops)
    cases.append(
        Case(
            "bare call (baseline)",
            lambda: loop_of(make_bare(bare_counter), scenario),
            peer=True,
        )
    )
    for name, peer, sf, factory in contenders:

        def setup(factory: Factory = factory, c: Counter | None = None) -> Callable[[int], None]:
            assert c is not None
            run = loop_of(factory(c), scenario)
            prewarm(run, scenario)
            return run

        c = Counter(ops)
        counters[name] = c
        flight[name] = sf
        cases.append(
            Case(
                name,
                lambda setup=setup, c=c: setup(c=c),
                peer=peer,
                before=c.before,
                after=c.after,
                extra_name="loads/1k ops",
            )
        )
    return cases, flight, counters


def _ns(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f} ns"


def render_overhead(results: list[Result], flight: dict[str, str]) -> str:
    bare = results[0]
    if bare.error:
        return "No baseline: no overhead."
    rows = [r for r in results[1:] if r.error is None]
    peers = [r for r in rows if r.peer]
    best = min(peers, key=lambda r: r.cpu_ns - bare.cpu_ns) if peers else None
    lines = [
        f"Baseline, the bare call in the same loop: {_ns(bare.cpu_ns)} CPU, {_ns(bare.wall_ns)} wall per op.",
        "",
        "| implementation | single-flight | raw CPU/op | overhead CPU/op | raw wall/op "
        "| overhead wall/op | overhead ÷ best peer's | loads/1k ops |",
        "|---|:-:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        oc = r.cpu_ns - bare.cpu_ns
        ow = r.wall_ns - bare.wall_ns
        ratio = "-"
        if best is not None and best.cpu_ns - bare.cpu_ns > 0:
            ratio = f"{oc / (best.cpu_ns - bare.cpu_ns):.2f}x"
        name = r.name if r.peer else f"**{r.name}**"
        loads = r.extra.get("loads/1k ops", float("nan"))
        lines.append(
            f"| {name} | {flight.get(r.name, '?')} | {_ns(r.cpu_ns)} | {_ns(oc)} "
            f"| {_ns(r.wall_ns)} | {_ns(ow)} | {ratio} | {loads:,.1f} |"
        )
    if best is not None:
        lines += ["", f"Smallest peer overhead (CPU): {best.name}."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- breakdown


def _best_ns(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def breakdown(n: int) -> list[tuple[str, float]]:
    """Time the pieces of scalekit's sync hit path alone (best of 5, wall, one key)."""
    from scalekit.cache import Cache, CacheOptions, cache_key, cached
    from scalekit.cache._freshness import classify_unchecked
    from scalekit.cache._keys import KeyBuilder

    cache = Cache("memory://", name="breakdown")
    c = Counter(n)
    bare = sync_fn(c)
    f = cached(ttl=TTL, cache=cache)(sync_fn(c))
    f(HOT_KEY)
    key = cache_key(f, HOT_KEY)
    opts = CacheOptions(ttl=TTL)
    builder = KeyBuilder(sync_fn(c), prefix=cache.prefix).function()
    meta = cache.backend.get(key)
    assert meta is not None
    entry_meta = meta[1]
    backend = cache.backend
    now = time.monotonic
    lock = threading.Lock()
    loader = lambda: bare(HOT_KEY)  # noqa: E731
    rep = itertools.repeat

    def t_loop() -> None:
        for _ in rep(None, n):
            pass

    def t_bare() -> None:
        for _ in rep(None, n):
            bare(HOT_KEY)

    def t_key() -> None:
        for _ in rep(None, n):
            builder(HOT_KEY)

    def t_backend_get() -> None:
        for _ in rep(None, n):
            backend.get(key)

    def t_now() -> None:
        for _ in rep(None, n):
            now()

    def t_classify() -> None:
        t = now()
        draw = cache._draw
        for _ in rep(None, n):
            classify_unchecked(entry_meta, t, 1.0, draw)

    def t_lock() -> None:
        for _ in rep(None, n):
            with lock:
                pass

    def t_count() -> None:
        hits = cache._metrics.direct.hits.tick
        for _ in rep(None, n):
            next(hits)

    def t_read() -> None:
        read = cache._reader(opts)
        for _ in rep(None, n):
            read(key)

    def t_get_or_load() -> None:
        for _ in rep(None, n):
            cache.get_or_load(key, loader, options=opts)

    def t_wrapper() -> None:
        for _ in rep(None, n):
            f(HOT_KEY)

    loop_ns = _best_ns(t_loop, n)
    rows = [
        ("bare f(k)", t_bare),
        ("KeyBuilder(...).function()(k) -> key string", t_key),
        (
            "MemoryCacheBackend.get(key) (lock-free: OrderedDict get, monotonic, move_to_end)",
            t_backend_get,
        ),
        ("  of which time.monotonic()", t_now),
        ("for reference: uncontended `with threading.Lock()`", t_lock),
        ("classify_unchecked(meta, now, beta, draw) (no draw far from expiry)", t_classify),
        ("next(hit counter)", t_count),
        ("Cache._reader(opts)(key): the hit path's read (get + now + classify)", t_read),
        ("Cache.get_or_load(key, loader) hit, key and loader prebuilt", t_get_or_load),
        ("@cached wrapper f(k) hit (everything)", t_wrapper),
    ]
    return [(label, _best_ns(fn, n) - loop_ns) for label, fn in rows]


def render_breakdown(rows: list[tuple[str, float]]) -> str:
    lines = [
        "### 5. Where scalekit's sync hit spends its time (components timed alone)",
        "",
        "Each piece in its own loop, best of 5, wall ns/op, empty-loop cost subtracted. "
        "The pieces overlap (indented rows are inside the row above); "
        "they do not add up exactly to the whole.",
        "",
        "| piece | ns/op |",
        "|---|--:|",
    ]
    lines += [f"| {label} | {ns:,.0f} |" for label, ns in rows]
    return "\n".join(lines)


def profile(n: int) -> str:
    """cProfile of n sync and n async scalekit hits (tottime; cProfile inflates
    per-call costs, so read the proportions, not the absolute times)."""
    from scalekit.cache import Cache, cached

    cache = Cache("memory://", name="profile")
    f = cached(ttl=TTL, cache=cache)(sync_fn(Counter(n)))
    g = cached(ttl=TTL, cache=cache)(async_fn(Counter(n)))
    f(HOT_KEY)
    loop = event_loop()
    loop.run_until_complete(g(HOT_KEY))

    async def many(n: int) -> None:
        for _ in range(n):
            await g(HOT_KEY)

    out = []
    for label, call in (
        ("sync", lambda: [f(HOT_KEY) for _ in range(n)]),
        ("async", lambda: loop.run_until_complete(many(n))),
    ):
        pr = cProfile.Profile()
        pr.enable()
        call()
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(14)
        body = s.getvalue().strip().splitlines()
        start = next((i for i, x in enumerate(body) if "ncalls" in x), 0)
        out += [f"#### cProfile, {n:,} {label} hits, by tottime", "", "```"]
        out += body[start:]
        out += ["```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def targets(all_results: dict[tuple[str, str], list[Result]]) -> str:
    lines = [
        "## Target (from the issue)",
        "",
        "In-memory hit overhead over the bare call ≤ 1 µs, sync and async, single-flight on, "
        "one hot key and 10,000 keys (scalekit's single-flight is always on). "
        "Judged on the median CPU overhead; wall shown too.",
        "",
    ]
    for (kind, scenario), results in all_results.items():
        bare = results[0]
        sk = next((r for r in results if not r.peer and r.error is None), None)
        if sk is None or bare.error:
            lines.append(f"- {kind} {scenario}: no measurement")
            continue
        oc = sk.cpu_ns - bare.cpu_ns
        ow = sk.wall_ns - bare.wall_ns
        verdict = "met" if oc <= TARGET_NS else "NOT met"
        loads = sk.extra.get("loads/1k ops", float("nan"))
        where = "one hot key" if scenario == "hot" else "10,000 keys"
        lines.append(
            f"- {kind}, {where}: overhead {oc / 1000:.3f} µs CPU / {ow / 1000:.3f} µs wall "
            f"→ **{verdict}** (loads/1k ops during timing: {loads:g})"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller samples (~20 s)")
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    ap.add_argument(
        "--sections",
        default="sync-hot,sync-10k,async-hot,async-10k,breakdown",
        help="comma-separated subset of sync-hot,sync-10k,async-hot,async-10k,breakdown",
    )
    ap.add_argument("--repeats", type=int, help="override the number of timed repeats")
    ap.add_argument("--ops", type=int, help="override the ops per repeat")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of the hit path")
    args = ap.parse_args()

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    repeats = args.repeats or (3 if args.quick else 7)
    # the async peers cost 25-150 µs per hit on a slow machine: fewer ops keep the
    # full run under ~90 s (a repeat still lasts tens of milliseconds or more)
    sync_ops = args.ops or (10_000 if args.quick else 30_000)
    async_ops = args.ops or (3_000 if args.quick else 10_000)

    started = time.perf_counter()
    info = machine_info(DISTS)
    payload: dict[str, Any] = {"machine": info, "tables": {}, "quick": args.quick}
    print("# scalekit.cache @cached hit-overhead benchmarks\n")
    print_machine(info)
    all_results: dict[tuple[str, str], list[Result]] = {}
    try:
        for kind in ("sync", "async"):
            for scenario, label in (("hot", "hot"), ("spread", "10k")):
                section = f"{kind}-{label}"
                if section not in sections:
                    continue
                print(f"[{section}]", file=sys.stderr, flush=True)
                if kind == "async" or scenario == "spread":
                    # the default cache holds 10,000 entries: give each section the
                    # whole bound (the hot key and 10,000 keys of another section
                    # would not fit beside these 10,000; see the diagnostic row)
                    from scalekit.cache import default_cache

                    default_cache().clear()
                ops = sync_ops if kind == "sync" else async_ops
                cases, flight, _counters = build_cases(kind, scenario, ops)
                results = run_cases(cases, ops=ops, repeats=repeats)
                all_results[(kind, scenario)] = results
                table = Table(
                    TITLES[(kind, scenario)],
                    results[1:],
                    explain="Raw cost per call of the decorated function (the bare call is "
                    "the baseline below). Ratios are to the best peer's raw cost.",
                )
                print(table.render() + "\n")
                print(render_overhead(results, flight) + "\n", flush=True)
                payload["tables"][section] = {
                    "baseline": Table("baseline", results[:1]).as_json(),
                    **table.as_json(),
                }
        if "breakdown" in sections:
            print("[breakdown]", file=sys.stderr, flush=True)
            rows = breakdown(20_000 if args.quick else 100_000)
            print(render_breakdown(rows) + "\n", flush=True)
            payload["breakdown"] = dict(rows)
        if args.profile:
            print(profile(20_000 if args.quick else 100_000), flush=True)
    finally:
        if _LOOP is not None:
            _LOOP.close()

    print(targets(all_results))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(
        f"_Total time: {time.perf_counter() - started:.0f} s; load average at the end: {' '.join(load)}._"
    )
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
