"""The one validation module: bounds, NaN/inf, bools, timedeltas, str subclasses."""

from __future__ import annotations

import enum
import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalekit import _validate as v
from scalekit.errors import ConfigurationError


class Color(enum.StrEnum):
    RED = "red"


def test_duration() -> None:
    assert v.duration(1.5, "ttl") == 1.5
    assert v.duration(timedelta(minutes=2), "ttl") == 120.0
    assert v.duration(0, "ttl", allow_zero=True) == 0.0
    for bad in (0, -1, math.nan, math.inf, 1e16, True, None, "1", timedelta(0)):
        with pytest.raises(ConfigurationError, match="ttl"):
            v.duration(bad, "ttl")


def test_timeout_and_optional() -> None:
    assert v.timeout(None) is None
    assert v.timeout(0) == 0.0
    with pytest.raises(ConfigurationError, match="timeout"):
        v.timeout(math.nan)
    with pytest.raises(ConfigurationError):
        v.timeout(-0.1)
    assert v.optional_duration(None, "x") is None


def test_count() -> None:
    assert v.count(3, "cost") == 3
    assert v.count(0, "n", minimum=0) == 0
    for bad in (0, -1, True, 1.0, "1", None, v.MAX_COUNT + 1):
        with pytest.raises(ConfigurationError, match="cost"):
            v.count(bad, "cost")
    with pytest.raises(ConfigurationError, match=str(v.MAX_COUNT)):
        v.count(10**15, "limit")


def test_fraction() -> None:
    assert v.fraction(0, "p") == 0.0 and v.fraction(1, "p") == 1.0
    for bad in (None, math.nan, -0.01, 1.01, True, "0.5"):
        with pytest.raises(ConfigurationError, match="p"):
            v.fraction(bad, "p")


def test_key() -> None:
    assert v.key("user:1") == "user:1"
    k = v.key(Color.RED)
    assert k == "red" and type(k) is str
    for bad in (None, 1, b"k", ["k"]):
        with pytest.raises(ConfigurationError, match="key"):
            v.key(bad)


def test_name() -> None:
    assert v.name("chat", "name") == "chat"
    for bad in ("", None, 3):
        with pytest.raises(ConfigurationError):
            v.name(bad, "name")


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_duration_total(x: float) -> None:
    """Any float either comes back unchanged within bounds or is refused; never NaN/inf."""
    try:
        out = v.duration(x, "d")
    except ConfigurationError:
        assert not (0 < x <= v.MAX_SECONDS)
    else:
        assert out == x and math.isfinite(out) and out > 0
