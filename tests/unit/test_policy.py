from __future__ import annotations

from datetime import timedelta

import pytest

from scalekit import ConfigurationError
from scalekit.ratelimit import Policy, Rate


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("60/hour", 60, 3600.0),
        ("60/h", 60, 3600.0),
        ("3/day", 3, 86400.0),
        ("100/5 minutes", 100, 300.0),
        ("100/5minutes", 100, 300.0),
        ("10 per 30s", 10, 30.0),
        ("  20 / MINUTE ", 20, 60.0),
        ("1/0.5s", 1, 0.5),
        ("7/week", 7, 604800.0),
    ],
)
def test_rate_parse(text: str, limit: int, period: float) -> None:
    r = Rate.parse(text)
    assert (r.limit, r.period, r.capacity) == (limit, period, limit)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "malformed rate ''"),
        ("60", "malformed rate '60'"),
        ("sixty/hour", "malformed"),
        ("60/fortnight", "unknown unit 'fortnight'"),
        ("0/hour", "must be >= 1, got 0"),
        ("-5/hour", "must be >= 1, got -5"),
        ("5/0 seconds", "period must be positive"),
        ("60/hour/day", "malformed"),
    ],
)
def test_rate_parse_errors_name_the_value_and_the_allowed_forms(text: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as info:
        Rate.parse(text)
    assert isinstance(info.value, ValueError)


def test_rate_constructor_validates() -> None:
    assert Rate(5, timedelta(minutes=1)).period == 60.0
    assert Rate(5, 60, burst=2).capacity == 2
    for bad in [
        lambda: Rate(0, 60),
        lambda: Rate(5, 0),
        lambda: Rate(5, -1),
        lambda: Rate(5, float("inf")),
        lambda: Rate(5, float("nan")),
        lambda: Rate(True, 60),
        lambda: Rate(5, 60, burst=0),
        lambda: Rate(5.5, 60),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ConfigurationError):
            bad()


def test_policy_parse_multi_window() -> None:
    p = Policy.parse("1000/day; 60/hour")
    assert [(r.limit, r.period) for r in p.rates] == [(60, 3600.0), (1000, 86400.0)]
    assert p.name == "60/hour; 1000/day"
    assert str(Policy.parse("60/hour, 1000/day", name="chat")) == "chat"
    with pytest.raises(ConfigurationError, match="one rate per period"):
        Policy.parse("60/hour; 100/60 minutes")
    with pytest.raises(ConfigurationError, match="empty policy"):
        Policy.parse(" ; ")
    with pytest.raises(ConfigurationError, match="at least one rate"):
        Policy([])


def test_rate_str_round_trips() -> None:
    for text in ["60/hour", "100/5 minutes", "3/day", "1/second", "5/90 seconds"]:
        assert str(Rate.parse(text)) == text
        assert Rate.parse(str(Rate.parse(text))) == Rate.parse(text)


def test_limiter_rejects_bad_configuration() -> None:
    from scalekit import RateLimiter

    with pytest.raises(ConfigurationError, match="unknown algorithm 'leaky'"):
        RateLimiter("memory://", "1/second", algorithm="leaky")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_backend_error"):
        RateLimiter("memory://", "1/second", on_backend_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="fallback_instances"):
        RateLimiter("memory://", "1/second", fallback_instances=0)
    with pytest.raises(ConfigurationError, match="backend_cooldown"):
        RateLimiter("memory://", "1/second", backend_cooldown=-1)
    with pytest.raises(ConfigurationError, match="tier name"):
        RateLimiter("memory://", {"": "1/second"})
    with pytest.raises(ConfigurationError, match="at least one tier"):
        RateLimiter("memory://", {})
    with pytest.raises(ConfigurationError, match="malformed rate"):
        RateLimiter("memory://", {"free": "lots"})
    with pytest.raises(ConfigurationError, match="no tiers"):
        RateLimiter("memory://", "1/second").hit("k", tier="free")
