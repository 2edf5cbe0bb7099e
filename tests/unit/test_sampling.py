"""scalekit.sampling: stages, pipeline, decisions, counters, decorator, background tasks."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import pytest

from scalekit import ConfigurationError, primitive_of
from scalekit.sampling import (
    BackgroundTasks,
    Budget,
    Cap,
    Fixed,
    Gate,
    Keyed,
    Pipeline,
    SampleDecision,
    Weighted,
    ramp,
    sampled,
)
from scalekit.testing import FakeClock


@dataclass(frozen=True)
class Msg:
    id: str
    user: str
    text: str
    turns: int


def memory_pipeline(**kw: object) -> Pipeline[Msg]:
    return Pipeline(
        Gate("long_enough", lambda m: len(m.text) >= 50),
        Gate("mature", lambda m: m.turns >= 3),
        Weighted(ramp(lambda m: m.turns, (3, 0.2), (30, 0.3)), key=lambda m: m.id),
        Cap("100/day", key=lambda m: m.user, clock=FakeClock()),
    )


LONG = "x" * 60


def test_gates_decide_and_explain_themselves() -> None:
    p = memory_pipeline()
    d = p.decide(Msg("m1", "u", "short", 10))
    assert d == SampleDecision(False, "long_enough", "gate", 0.0)
    assert not d
    assert d.explain() == "skipped by gate 'long_enough' (p=0)"
    d = p.decide(Msg("m2", "u", LONG, 2))
    assert (d.sampled, d.stage) == (False, "mature")


def test_weighted_probability_follows_the_ramp() -> None:
    p = memory_pipeline()
    seen: dict[int, set[float]] = {}
    for i in range(200):
        for turns in (3, 16, 30, 100):
            d = p.decide(Msg(f"m{i}", f"u{i}", LONG, turns))
            seen.setdefault(turns, set()).add(round(d.probability, 9))
    assert seen == {3: {0.2}, 16: {round(0.2 + 0.1 * 13 / 27, 9)}, 30: {0.3}, 100: {0.3}}
    d = next(d for i in range(1000) if (d := p.decide(Msg(f"n{i}", f"v{i}", LONG, 30))).sampled)
    assert d.stage == "cap" and d.kind == "cap" and d.probability == pytest.approx(0.3)
    assert d.explain() == "sampled after cap 'cap' (p=0.3)"


def test_skips_are_counted_by_stage() -> None:
    p = memory_pipeline()
    for i in range(300):
        p.decide(Msg(f"m{i}", "u", LONG if i % 3 else "s", 3 + i % 5))
    st = p.stats()
    assert st.considered == 300
    assert st.skipped["long_enough"] == 100
    assert st.sampled + sum(st.skipped.values()) == 300
    assert 0 < st.sampled < 200 and st.skipped["weighted"] > 0


def test_cap_limits_per_key_and_consumes_only_for_items_reaching_it() -> None:
    clock = FakeClock()
    p = Pipeline(
        Gate("long_enough", lambda m: len(m.text) >= 50),
        Cap("3/day", key=lambda m: m.user, clock=clock),
    )
    short = [p.decide(Msg(f"s{i}", "u", "s", 5)) for i in range(10)]
    assert not any(short)
    got = [p.decide(Msg(f"m{i}", "u", LONG, 5)) for i in range(5)]
    assert [d.sampled for d in got] == [True, True, True, False, False]
    assert got[3].stage == "cap" and got[3].probability == 0.0
    assert "3/day" in got[3].detail and "retry after" in got[3].detail
    assert p.decide(Msg("x", "other", LONG, 5)).sampled
    clock.advance(86400)
    assert p.decide(Msg("y", "u", LONG, 5)).sampled


def test_keyed_is_stable_across_pipelines_and_independent_of_instances() -> None:
    a = Pipeline(Keyed(0.3, key=lambda m: m))
    b = Pipeline(Keyed(0.3, key=lambda m: m))
    ids = [f"msg-{i}" for i in range(2000)]
    assert [a.decide(i).sampled for i in ids] == [b.decide(i).sampled for i in ids]
    c = Pipeline(Keyed(0.3, key=lambda m: m, salt="other"))
    assert [a.decide(i).sampled for i in ids] != [c.decide(i).sampled for i in ids]


def test_keyed_known_values_do_not_change_between_releases() -> None:
    """Stable means stable across versions too: pinned decisions for pinned ids."""
    crc = Keyed(0.5, key=lambda m: m, name="extract")
    blake = Keyed(0.5, key=lambda m: m, name="extract", hash="blake2b")
    ids = [f"message:{i}" for i in range(16)]
    assert "".join("1" if crc.draw(i, 0.5) else "0" for i in ids) == CRC_PINNED
    assert "".join("1" if blake.draw(i, 0.5) else "0" for i in ids) == BLAKE_PINNED
    assert crc.unit(b"message:1") == crc.unit("message:1")
    assert crc.unit(7) == crc.unit("7")


CRC_PINNED = "1111001000100000"
BLAKE_PINNED = "0100100001100001"


def test_fixed_rate_zero_and_one_and_rng() -> None:
    never = Pipeline(Fixed(0.0, rng=random.Random(1)))
    always = Pipeline(Fixed(1.0, rng=random.Random(1)))
    assert not any(never.decide(i).sampled for i in range(100))
    assert all(always.decide(i).sampled for i in range(100))
    draws = iter([0.1, 0.9])
    p = Pipeline(Fixed(0.5, rng=lambda: next(draws)))
    assert [p.decide(0).sampled, p.decide(0).sampled] == [True, False]


def test_multiple_samplers_multiply_probabilities() -> None:
    p = Pipeline(Fixed(1.0, name="a"), Weighted(lambda m: 0.5, name="b", rng=lambda: 0.0))
    d = p.decide(1)
    assert d.sampled and d.probability == 0.5 and d.stage == "b"
    p = Pipeline(Fixed(0.5, name="a", rng=lambda: 0.0), Fixed(0.5, name="b", rng=lambda: 0.9))
    d = p.decide(1)
    assert not d.sampled and d.stage == "b" and d.probability == 0.25
    assert d.explain() == "skipped by sampler 'b' (p=0.25)"


def test_weighted_clamps_out_of_range_probabilities() -> None:
    for value, expected in ((-1.0, 0.0), (float("nan"), 0.0), (7.0, 1.0), (0.4, 0.4)):
        assert Weighted(lambda m, v=value: v).probability(None) == expected


def test_empty_pipeline_samples_everything() -> None:
    p: Pipeline[int] = Pipeline()
    d = p.decide(1)
    assert d.sampled and d.stage == "" and d.explain() == "sampled (no stage, p=1)"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Fixed(1.5), r"rate must be a number in \[0, 1\]"),
        (lambda: Fixed(True), r"rate must be a number in \[0, 1\]"),
        (lambda: Keyed(0.5, key="id"), "callable"),  # type: ignore[arg-type]
        (lambda: Keyed(0.5, key=lambda m: m, hash="md5"), "unknown hash"),  # type: ignore[arg-type]
        (lambda: Gate("", lambda m: True), "non-empty"),
        (lambda: Gate("g", True), "callable"),  # type: ignore[arg-type]
        (lambda: Weighted(lambda m: 1.0, key=lambda m: m, rng=random.random), "not both"),
        (lambda: ramp(lambda m: m, (5, 0.2), (5, 0.3)), "above the start"),
        (lambda: ramp(lambda m: m, (1, 0.2), (5, 1.3)), "end probability"),
        (lambda: Budget("x/day"), "malformed rate"),
        (lambda: Budget("10/day", warmup=0), "warmup"),
        (lambda: Budget("10/day", expected=-1), "expected"),
        (lambda: Budget("10/day", on_backend_error="fail_open"), "on_backend_error"),  # type: ignore[arg-type]
        (lambda: Pipeline(Cap("1/day", key=str), Gate("g", bool)), "before budgets and caps"),
        (lambda: Pipeline(Gate("g", bool), Gate("g", bool)), "two stages are named 'g'"),
        (lambda: Pipeline(lambda m: True), "must be a Gate"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()  # type: ignore[operator]


def test_bad_key_type_is_refused() -> None:
    p = Pipeline(Keyed(0.5, key=lambda m: m))
    with pytest.raises(ConfigurationError, match="stable id"):
        p.decide(1.5)


def test_budget_per_key_scope_must_be_a_string() -> None:
    p = Pipeline(Budget("10/day", per=lambda m: m, clock=FakeClock()))
    with pytest.raises(ConfigurationError, match="non-empty str"):
        p.decide(3)


# -- @sampled ---------------------------------------------------------------------------------


def test_sampled_sync_returns_the_declared_value_when_skipped() -> None:
    calls: list[str] = []
    pipe = Pipeline(Gate("long_enough", lambda text: len(text) >= 5))

    @sampled(pipe, skipped="skipped")
    def extract(text: str) -> str:
        """Extract memories."""
        calls.append(text)
        return text.upper()

    assert extract("hello world") == "HELLO WORLD"
    assert extract("hi") == "skipped"
    assert calls == ["hello world"]
    assert extract.__name__ == "extract" and extract.__doc__ == "Extract memories."
    assert primitive_of(extract, Pipeline).stats().skipped == {"long_enough": 1}


async def test_sampled_async_with_item_builder() -> None:
    calls: list[Msg] = []
    pipe = Pipeline(
        Gate("mature", lambda m: m.turns >= 3),
        Cap("1/day", key=lambda m: m.user, clock=FakeClock()),
    )

    @sampled(pipe, item=lambda user, msg: msg)
    async def extract(user: str, msg: Msg) -> int:
        await asyncio.sleep(0)
        calls.append(msg)
        return msg.turns

    m1, m2, m3 = Msg("1", "u", LONG, 4), Msg("2", "u", LONG, 1), Msg("3", "u", LONG, 5)
    assert await extract("u", m1) == 4
    assert await extract("u", msg=m2) is None
    assert await extract("u", m3) is None  # the cap: 1/day
    assert calls == [m1]
    assert pipe.stats().skipped == {"mature": 1, "cap": 1}


def test_sampled_needs_an_item() -> None:
    @sampled(Pipeline(Gate("g", bool)))
    def f() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="first positional argument"):
        f()


# -- BackgroundTasks ------------------------------------------------------------------------


async def test_background_tasks_bound_concurrency_and_log_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = BackgroundTasks(2, max_pending=10, name="extract")
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def job(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        if i == 3:
            raise RuntimeError("model timeout")

    for i in range(6):
        assert tasks.spawn(job(i)) is not None
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == 2 and tasks.running == 6
    gate.set()
    with caplog.at_level(logging.ERROR, logger="scalekit.sampling"):
        await tasks.drain()
    assert peak == 2
    assert tasks.stats().as_dict() == {
        "spawned": 6,
        "succeeded": 5,
        "failed": 1,
        "dropped": 0,
        "cancelled": 0,
        "running": 0,
    }
    assert "extract: a background task failed" in caplog.text
    assert "model timeout" in caplog.text


async def test_background_tasks_drop_beyond_max_pending(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks(1, max_pending=2)
    gate = asyncio.Event()
    ran: list[int] = []

    async def job(i: int) -> None:
        await gate.wait()
        ran.append(i)

    with caplog.at_level(logging.WARNING, logger="scalekit.sampling"):
        results = [tasks.spawn(job(i)) for i in range(5)]
    assert [r is not None for r in results] == [True, True, True, False, False]
    assert "dropped" in caplog.text
    gate.set()
    await tasks.drain()
    assert ran == [0, 1, 2] and tasks.dropped == 2


async def test_background_tasks_skip_unsampled_decisions_and_cancel() -> None:
    tasks = BackgroundTasks(1)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError

    assert tasks.spawn(never(), decision=SampleDecision(False, "g", "gate", 0.0)) is None
    tasks.spawn(forever())
    tasks.spawn(forever())  # waits for the slot
    await started.wait()
    await tasks.cancel()
    assert tasks.cancelled == 2 and tasks.running == 0
    with pytest.raises(ConfigurationError, match="coroutine"):
        tasks.spawn(forever)  # type: ignore[arg-type]


@pytest.mark.parametrize("hash_name", ["crc32", "blake2b"])
def test_the_compiled_pipeline_decides_as_the_sampler_does(hash_name: str) -> None:
    keyed = Keyed(0.3, key=lambda m: m, hash=hash_name)  # type: ignore[arg-type]
    fast = Pipeline(Gate("any", lambda m: True), keyed)
    slow = Pipeline(Gate("any", lambda m: True), keyed, Fixed(1.0, name="one"))
    ids: list[str | bytes | int] = [f"m{i}" for i in range(500)]
    ids += [i.encode() for i in ids[:100]] + list(range(100))  # type: ignore[union-attr]
    for i in ids:
        assert fast.decide(i).sampled == keyed.draw(i, 0.3) == slow.decide(i).sampled


def test_memory_budget_and_counters_are_thread_safe() -> None:
    import sys
    import threading

    clock = FakeClock()
    pipe = Pipeline(
        Gate("even", lambda i: i % 2 == 0),
        Budget("500/day", clock=clock, rng=lambda: 0.0),
        Cap("1000/day", key=lambda i: "all", clock=clock),
    )
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        barrier = threading.Barrier(8)

        def work(t: int) -> None:
            barrier.wait()
            for i in range(500):
                pipe.decide(t * 1000 + i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    st = pipe.stats()
    assert st.considered == 4000 and st.skipped["even"] == 2000
    assert st.sampled == 500 and st.skipped["budget"] == 1500


def test_global_and_per_user_budgets_together() -> None:
    """A per-user budget refusing an item gives the global budget its unit back."""
    clock = FakeClock()
    pipe = Pipeline(
        Budget("50/day", clock=clock, rng=lambda: 0.0, name="global"),
        Budget("20/day", per=lambda m: m.user, clock=clock, rng=lambda: 0.0, name="per_user"),
    )
    got: dict[str, int] = {}
    for i in range(60):
        for user in ("alice", "bob"):
            if pipe.decide(Msg(f"m{i}", user, LONG, 5)).sampled:
                got[user] = got.get(user, 0) + 1
    assert got == {"alice": 20, "bob": 20}
    # 40 of the global 50 are spent: carol gets the last 10
    carol = [pipe.decide(Msg(f"c{i}", "carol", LONG, 5)) for i in range(15)]
    assert sum(d.sampled for d in carol) == 10
    assert carol[-1].stage == "global" and carol[-1].detail.startswith("50/50 sampled")
    assert pipe.stats().skipped == {"global": 5, "per_user": 80}
