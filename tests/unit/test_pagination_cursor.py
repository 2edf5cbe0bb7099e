"""Cursor codec: lossless typed values, strict refusal of anything not minted here."""

from __future__ import annotations

import string
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.errors import ConfigurationError, CursorError
from scalekit.pagination._cursor import SECRET_ENV, CursorCodec, digest
from scalekit.testing import FakeClock

SECRET = "s" * 32
BINDING = digest("query", 1)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-3, minutes=-30)))),
    st.datetimes(),
    st.dates(),
    st.uuids(),
    st.text(),  # any unicode, lone surrogates included
    st.binary(),
)


def codec(**kw: object) -> CursorCodec:
    return CursorCodec(SECRET, purpose="test", what="test", **kw)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.lists(scalars, max_size=6))
def test_values_round_trip_exactly(values: list[object]) -> None:
    c = codec()
    token = c.encode(values, binding=BINDING)
    assert set(token) <= set(string.ascii_letters + string.digits + "-_.")
    back = c.decode(token, binding=BINDING).values
    assert back == values
    assert [type(v) for v in back] == [type(v) for v in values]
    for a, b in zip(back, values, strict=True):
        if isinstance(a, datetime):
            assert isinstance(b, datetime)
            assert a.utcoffset() == b.utcoffset() and a.microsecond == b.microsecond


def test_nan_and_infinities_survive() -> None:
    c = codec()
    back = c.decode(
        c.encode([float("nan"), float("-inf"), Decimal("NaN")], binding=BINDING), binding=BINDING
    ).values
    assert back[0] != back[0] and back[1] == float("-inf")
    assert isinstance(back[2], Decimal) and back[2].is_nan()


def test_every_single_byte_change_is_refused() -> None:
    c = codec()
    values = [
        datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        2**63 - 1,
        "zoë ☃ 𝄞",
        None,
        uuid.UUID(int=7),
        Decimal("1.10"),
        date(2020, 2, 29),
    ]
    token = c.encode(values, binding=BINDING)
    alphabet = string.ascii_letters + string.digits + "-_.=+/~ %\x00é"
    changed = 0
    for i in range(len(token)):
        for ch in alphabet:
            if ch == token[i]:
                continue
            with pytest.raises(CursorError):
                c.decode(token[:i] + ch + token[i + 1 :], binding=BINDING)
            changed += 1
    assert changed > 1000
    for cut in range(len(token)):  # every truncation
        with pytest.raises(CursorError):
            c.decode(token[:cut], binding=BINDING)
    with pytest.raises(CursorError):
        c.decode(token + "A", binding=BINDING)


def test_foreign_binding_secret_purpose_and_version_are_refused() -> None:
    c = codec()
    token = c.encode([1], binding=BINDING)
    with pytest.raises(CursorError, match="another query"):
        c.decode(token, binding=digest("query", 2))
    with pytest.raises(CursorError, match="signature"):
        CursorCodec("t" * 32, purpose="test", what="t").decode(token, binding=BINDING)
    with pytest.raises(CursorError, match="signature"):
        CursorCodec(SECRET, purpose="other", what="t").decode(token, binding=BINDING)
    with pytest.raises(CursorError, match="version"):
        c.decode("c2" + token[2:], binding=BINDING)
    for junk in ["", "...", "c1..", "x" * 10_000, 12, None, b"c1.a.b"]:
        with pytest.raises(CursorError):
            c.decode(junk, binding=BINDING)


def test_max_age_uses_the_injected_clock() -> None:
    clock = FakeClock()
    c = codec(max_age=timedelta(minutes=5), clock=clock)
    token = c.encode(["x"], binding=BINDING)
    clock.advance(299)
    assert c.decode(token, binding=BINDING).values == ["x"]
    clock.advance(2)
    with pytest.raises(CursorError, match="expired"):
        c.decode(token, binding=BINDING)


def test_digest_is_typed() -> None:
    assert digest(1) != digest("1") != digest(1.0)
    assert digest([1, 2]) == digest([1, 2]) != digest([2, 1])


def test_secret_from_env_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ConfigurationError, match=SECRET_ENV):
        CursorCodec(None, purpose="p", what="Keyset")
    with pytest.raises(ConfigurationError, match="16 bytes"):
        CursorCodec("short", purpose="p", what="Keyset")
    monkeypatch.setenv(SECRET_ENV, "e" * 20)
    token = CursorCodec(None, purpose="p", what="Keyset").encode([1], binding=BINDING)
    assert CursorCodec("e" * 20, purpose="p", what="K").decode(token, binding=BINDING).values == [1]


def test_unsupported_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot carry"):
        codec().encode([object()], binding=BINDING)
