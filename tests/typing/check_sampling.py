"""Checked by tests/typing/test_sampling_typing.py under mypy --strict: the lines
marked ``# E: <code>`` must be errors, every other line must type-check."""

from __future__ import annotations

from dataclasses import dataclass

from scalekit.sampling import (
    BackgroundTasks,
    Budget,
    Cap,
    Gate,
    Keyed,
    Pipeline,
    SampleDecision,
    Weighted,
    ramp,
    sampled,
)


@dataclass
class Msg:
    id: str
    user: str
    text: str
    turns: int


pipe: Pipeline[Msg] = Pipeline(
    Gate("long_enough", lambda m: len(m.text) >= 50),
    Weighted(ramp(lambda m: m.turns, (3, 0.2), (30, 0.3)), key=lambda m: m.id),
    Budget("2500/day", per=lambda m: m.user),
    Cap("100/day", key=lambda m: m.user),
)
d: SampleDecision = pipe.decide(Msg("1", "u", "x", 3))
ok: bool = d.sampled
text: str = d.explain()
n: int = pipe.stats().considered
k = Keyed(0.25, key=lambda m: m)


@sampled(pipe, skipped=0)
def count(m: Msg, extra: int) -> int:
    return extra


@sampled(pipe)
async def extract(m: Msg) -> str:
    return m.text


i: int = count(Msg("1", "u", "x", 3), 2)
count("not a message", 2)  # E: arg-type
s: str = count(Msg("1", "u", "x", 3), 2)  # E: assignment


async def use(tasks: BackgroundTasks) -> list[str | None]:
    r = await extract(Msg("1", "u", "x", 3))
    maybe: str | None = r
    sure: str = r  # E: assignment
    tasks.spawn(extract(Msg("1", "u", "x", 3)), decision=await pipe.adecide(Msg("1", "u", "", 1)))
    return [maybe, sure]
