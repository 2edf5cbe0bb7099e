"""The adaptive Budget over memory, fakeredis and real Redis, sync and async.

Time: the memory store reads the test's FakeClock, the Redis scripts receive the
same fake time (see conftest.py); server TIME is covered in tests/integration.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from conftest import call

from scalekit import MemoryBackend, RedisBackend
from scalekit.sampling import Budget, Cap, Pipeline
from scalekit.testing import FakeClock

DAY = 86400.0
_names = itertools.count()


def start_of_next_day(clock: FakeClock) -> float:
    start = math.ceil(clock.now() / DAY) * DAY + DAY
    clock.set(start)
    return start


@pytest.fixture
def budget(backend: MemoryBackend | RedisBackend, clock: FakeClock) -> Callable[..., Budget[Any]]:
    def make(rate: str, **kw: Any) -> Budget[Any]:
        kw.setdefault("clock", clock)
        kw.setdefault("prefix", f"t{next(_names)}")
        return Budget(rate, backend=backend, **kw)

    return make


def decide(pipe: Pipeline[Any], mode: str, item: Any) -> Any:
    return pipe.adecide(item) if mode == "async" else pipe.decide(item)


async def test_never_more_than_the_target_per_window(
    budget: Callable[..., Budget[Any]], mode: str, clock: FakeClock
) -> None:
    start_of_next_day(clock)
    pipe = Pipeline(budget("5/hour", rng=lambda: 0.0))  # every draw is under any p > 0
    got = [await call(decide(pipe, mode, i)) for i in range(8)]
    assert [d.sampled for d in got] == [True] * 5 + [False] * 3
    assert got[5].stage == "budget" and got[5].probability == 0.0
    assert got[4].detail == "5/5 sampled of 5 considered this window"
    assert got[7].detail == "5/5 sampled of 8 considered this window"
    clock.advance(3600)
    assert (await call(decide(pipe, mode, 9))).sampled
    assert pipe.stats().sampled == 6 and pipe.stats().skipped == {"budget": 3}


async def test_probability_falls_as_arrivals_exceed_what_the_target_allows(
    budget: Callable[..., Budget[Any]], mode: str, clock: FakeClock
) -> None:
    start = start_of_next_day(clock)
    pipe = Pipeline(budget("100/day", rng=lambda: 0.999999, expected=10_000))
    ps = []
    for i in range(1200):
        clock.set(start + i)
        ps.append((await call(decide(pipe, mode, i))).probability)
    # 10,000 expected arrivals a day against 100 a day: p starts near 1/100
    assert 0.009 < ps[0] < 0.011
    # 1,200 arrivals in 20 minutes (an eighth of the day's traffic, in 1.4 % of its
    # time) push the expected arrivals up, so p falls; nothing was sampled (u ~ 1)
    assert ps[-1] < 0.92 * ps[0] and all(0 < p <= 1 for p in ps)
    assert pipe.stats().sampled == 0


async def test_a_day_with_a_burst_lands_within_5_percent_of_the_target(
    budget: Callable[..., Budget[Any]], mode: str, clock: FakeClock
) -> None:
    """6,000 messages spread over the day plus a burst of 3,000 in one hour at 14:00;
    the target is 300 for the day."""
    start = start_of_next_day(clock)
    rng = random.Random(7)
    times = sorted(
        [rng.uniform(0, DAY) for _ in range(6000)]
        + [14 * 3600 + rng.uniform(0, 3600) for _ in range(3000)]
    )
    pipe = Pipeline(budget("300/day", rng=random.Random(8)))
    sampled = in_burst = 0
    hours = [0] * 24
    for t in times:
        clock.set(start + t)
        if (await call(decide(pipe, mode, None))).sampled:
            sampled += 1
            hours[int(t // 3600)] += 1
            in_burst += 14 * 3600 <= t < 15 * 3600
    assert abs(sampled - 300) <= 15, sampled
    # the burst is a third of the traffic but must not eat a third of the budget...
    assert in_burst < 100, hours
    # ...nor starve the rest of the day: every hour still gets some
    assert all(h > 0 for h in hours), hours
    clock.advance(DAY)  # a new window: counts start again
    assert (await call(decide(pipe, mode, None))).probability > 0


async def test_per_key_budgets_each_land_near_their_target(
    budget: Callable[..., Budget[Any]], mode: str, clock: FakeClock
) -> None:
    start = start_of_next_day(clock)
    rng = random.Random(3)
    events = sorted(
        [(rng.uniform(0, DAY), "alice") for _ in range(3000)]
        + [(rng.uniform(0, DAY), "bob") for _ in range(1500)]
        + [(rng.uniform(0, DAY), "carol") for _ in range(20)]
    )
    pipe = Pipeline(budget("60/day", per=lambda m: m, rng=random.Random(4)))
    counts: dict[str, int] = {}
    for t, user in events:
        clock.set(start + t)
        if (await call(decide(pipe, mode, user))).sampled:
            counts[user] = counts.get(user, 0) + 1
    assert abs(counts["alice"] - 60) <= 3 and abs(counts["bob"] - 60) <= 3, counts
    assert counts["carol"] == 20, "a key under its target keeps everything"


async def test_keyed_draws_make_retries_decide_alike(
    budget: Callable[..., Budget[Any]], mode: str, clock: FakeClock
) -> None:
    start_of_next_day(clock)
    b = budget("1000/day", key=lambda m: m, expected=2000)
    pipe = Pipeline(b)
    first = [(await call(decide(pipe, mode, f"m{i}"))).sampled for i in range(40)]
    assert 0 < sum(first) < 40
    # a retry sees the same draw; p moved only slightly, so decisions far from it agree
    units = [b._draw(f"m{i}") for i in range(40)]
    again = [(await call(decide(pipe, mode, f"m{i}"))).sampled for i in range(40)]
    for u, a, r in zip(units, first, again, strict=True):
        if u < 0.4 or u > 0.6:
            assert a == r


@pytest.mark.parametrize("backend_kind", ["fakeredis", "redis"])  # Redis only
async def test_two_instances_share_one_budget(
    backend: MemoryBackend | RedisBackend, mode: str, clock: FakeClock, backend_kind: str
) -> None:
    """Two Budget objects (two processes of a fleet) on one Redis share the counts."""
    start_of_next_day(clock)
    prefix = f"t{next(_names)}"
    a = Pipeline(Budget("10/day", backend=backend, rng=lambda: 0.0, prefix=prefix))
    b = Pipeline(Budget("10/day", backend=backend, rng=lambda: 0.0, prefix=prefix))
    got = [(await call(decide(a if i % 2 else b, mode, i))).sampled for i in range(20)]
    assert sum(got) == 10 and got[:10] == [True] * 10


@pytest.mark.parametrize("backend_kind", ["fakeredis", "redis"])  # Redis only
async def test_redis_and_memory_make_identical_decisions(
    backend: MemoryBackend | RedisBackend, mode: str, clock: FakeClock, backend_kind: str
) -> None:
    """The Lua script and budget_probability are the same arithmetic."""
    start = start_of_next_day(clock)
    remote = Pipeline(Budget("40/hour", backend=backend, key=lambda m: m, prefix="parity"))
    local = Pipeline(Budget("40/hour", key=lambda m: m, clock=clock))
    rng = random.Random(5)
    t = 0.0
    for i in range(300):
        t += rng.expovariate(1 / 20)
        clock.set(start + t)
        r = await call(decide(remote, mode, f"id{i}"))
        m = local.decide(f"id{i}")
        assert (r.sampled, r.detail) == (m.sampled, m.detail)
        assert r.probability == pytest.approx(m.probability, rel=1e-12, abs=1e-15)


async def test_a_later_refusal_gives_the_budget_unit_back(
    backend: MemoryBackend | RedisBackend, mode: str, clock: FakeClock
) -> None:
    """Budget then Cap: an item the cap refuses does not spend the budget."""
    start_of_next_day(clock)
    prefix = f"t{next(_names)}"
    pipe = Pipeline(
        Budget("5/day", backend=backend, rng=lambda: 0.0, clock=clock, prefix=prefix),
        Cap("2/day", key=lambda m: m, backend=backend, clock=clock, prefix=prefix + "c"),
    )
    got = [(await call(decide(pipe, mode, "alice"))).sampled for _ in range(4)]
    assert got == [True, True, False, False]
    got = [(await call(decide(pipe, mode, user))) for user in ("bob", "bob", "carol", "dan")]
    assert [d.sampled for d in got] == [True, True, True, False]
    assert got[-1].stage == "budget" and got[2].detail.startswith("5/5 sampled")


@pytest.mark.parametrize("backend_kind", ["fakeredis", "redis"])  # Redis only
async def test_budget_names_are_escaped_like_user_parts(
    backend: MemoryBackend | RedisBackend, mode: str, clock: FakeClock, backend_kind: str
) -> None:
    """A budget name with separators and braces works and keeps its own counts
    (it used to reach build_key raw: braces were refused there at every decision)."""
    start_of_next_day(clock)
    prefix = f"t{next(_names)}"
    names = ["a", "a:10/day", "team{1}", "x!y#z"]
    pipes = [
        Pipeline(Budget("10/day", backend=backend, name=n, rng=lambda: 0.0, prefix=prefix))
        for n in names
    ]
    for pipe in pipes[1:]:
        for i in range(10):
            assert (await call(decide(pipe, mode, i))).sampled
    got = [(await call(decide(pipes[0], mode, i))).sampled for i in range(11)]
    assert got == [True] * 10 + [False]  # the others' spending did not reach budget "a"


def test_backend_cooldown_refuses_bools(redis_url: str) -> None:
    from scalekit.errors import ConfigurationError
    from scalekit.resilience._shared import SharedState

    with pytest.raises(ConfigurationError, match="backend_cooldown"):
        Budget("10/day", backend_cooldown=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="backend_cooldown"):
        SharedState(redis_url, backend_cooldown=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="poll_interval"):
        SharedState(redis_url, poll_interval=float("nan"))
