"""Cache keys from bound arguments (``scalekit.cache._keys``).

The injectivity property is checked with a reference *decoder* written here from
the format in the module docstring: for every argument tuple hypothesis draws,
decoding the encoding gives back the tuple's canonical form (its values with their
exact types, sets and dicts unordered). An encoding that decodes to its input is
injective: two argument tuples with different canonical forms never share a key.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit._keys import build_key, escape, unescape
from scalekit.cache._keys import KeyBuilder, encode_args
from scalekit.errors import ConfigurationError

# --- fixtures: functions and argument types ----------------------------------------


def get_user(user_id: int, tier: str = "free") -> None: ...


def two(a: object, b: object = None) -> None: ...


def star(*args: object, **kwargs: object) -> None: ...


class Color(enum.Enum):
    RED = 1
    GREEN = "g"


class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: object
    y: object
    note: str = dataclasses.field(default="", compare=False)


class UserRef:
    def __init__(self, id: object) -> None:
        self.id = id

    def __cache_key__(self) -> object:
        return self.id


class OtherRef(UserRef):
    pass


class Pair(NamedTuple):
    a: object
    b: object


class LoudStr(str):
    def __str__(self) -> str:
        return "overridden"

    def __format__(self, spec: str) -> str:
        return "overridden"


class MyInt(int):
    def __repr__(self) -> str:
        return "overridden"


class Opaque:
    pass


class NoNameZone(tzinfo):
    """A tzinfo with no offset and no name: nothing stable to put in a key."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None

    def dst(self, dt: datetime | None) -> None:
        return None

    def tzname(self, dt: datetime | None) -> None:
        return None


def key_of(fn: Callable[..., object], *args: object, **kwargs: object) -> str:
    return KeyBuilder(fn)(*args, **kwargs)


def tag_of(key: str) -> str:
    """The ``<args>`` part of a key, unescaped."""
    assert key.endswith("}") and key.count("{") == 1 and key.count("}") == 1
    return unescape(key[key.index("{") + 1 : -1])


# --- the reference decoder -------------------------------------------------------


def _digits(s: str, i: int, alphabet: str) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] in alphabet:
        j += 1
    return s[i:j], j


def _sized(s: str, i: int) -> tuple[str, int]:
    n, i = _digits(s, i, "0123456789")
    assert n and s[i] == ".", (s, i)
    end = i + 1 + int(n)
    assert end <= len(s)
    return s[i + 1 : end], end


def _items(s: str, i: int, close: str) -> tuple[list[Any], int]:
    items: list[Any] = []
    if s[i] == close:
        return items, i + 1
    while True:
        v, i = _decode(s, i)
        items.append(v)
        if s[i] == close:
            return items, i + 1
        assert s[i] == ",", (s, i)
        i += 1


def _zone_part(s: str, i: int) -> tuple[str | None, int]:
    if i < len(s) and s[i] == "@":
        return _sized(s, i + 1)
    return None, i


def _decode(s: str, i: int) -> tuple[Any, int]:
    c = s[i]
    i += 1
    if c == "N":
        return ("none",), i
    if c in "TF":
        return ("bool", c == "T"), i
    if c == "i":
        text, i = _digits(s, i, "-0123456789")
        return ("int", int(text)), i
    if c == "I":
        text, i = _digits(s, i, "-0123456789abcdef")
        assert abs(int(text, 16)).bit_length() > 2048
        return ("int", int(text, 16)), i
    if c == "f":
        text, i = _digits(s, i, "0123456789.e+-infa")
        return ("float", _float_canon(float(text))), i
    if c == "s":
        text, i = _sized(s, i)
        return ("str", text), i
    if c in "bB":
        text, i = _digits(s, i, "0123456789abcdef")
        return ("bytes" if c == "b" else "bytearray", bytes.fromhex(text)), i
    if c == "m":
        text, i = _digits(s, i, "0123456789.E+-NaNsInfinity")
        return ("decimal", Decimal(text).as_tuple()), i
    if c == "t":
        text, i = _digits(s, i, "0123456789-T.+")
        zone, i = _zone_part(s, i)
        return ("datetime", *_dt_canon(datetime.fromisoformat(text), zone)), i
    if c == "d":
        text, i = _digits(s, i, "0123456789-")
        return ("date", date.fromisoformat(text)), i
    if c == "h":
        text, i = _digits(s, i, "0123456789.+-")
        zone, i = _zone_part(s, i)
        t = time.fromisoformat(text)
        return ("time", t.replace(tzinfo=None), t.utcoffset(), zone), i
    if c == "r":
        text, i = _digits(s, i, "-0123456789")
        return ("timedelta", timedelta(microseconds=int(text))), i
    if c == "u":
        return ("uuid", uuid.UUID(s[i : i + 32])), i + 32
    if c == "(":
        items, i = _items(s, i, ")")
        return ("tuple", tuple(items)), i
    if c == "[":
        items, i = _items(s, i, "]")
        return ("list", tuple(items)), i
    if c == "<":
        pairs = []
        if s[i] == ">":
            return ("dict", frozenset()), i + 1
        while True:
            k, i = _decode(s, i)
            assert s[i] == "="
            v, i = _decode(s, i + 1)
            pairs.append((k, v))
            if s[i] == ">":
                return ("dict", frozenset(pairs)), i + 1
            assert s[i] == ","
            i += 1
    if c in "SZ":
        assert s[i] == "("
        items, i = _items(s, i + 1, ")")
        return ("set" if c == "S" else "frozenset", frozenset(items)), i
    if c in "eDko":
        cls, i = _sized(s, i)
        assert s[i] == "("
        items, i = _items(s, i + 1, ")")
        return (c, cls, tuple(items)), i
    if c == "c":
        cls, i = _sized(s, i)
        return ("class", cls), i
    raise AssertionError(f"unknown tag {c!r} at {i - 1} in {s!r}")


def decode_args(s: str) -> tuple[Any, ...]:
    """Parse ``encode_args``' output back into canonical forms (asserting it parses)."""
    if s == "":
        return ()
    items: list[Any] = []
    i = 0
    while True:
        v, i = _decode(s, i)
        items.append(v)
        if i == len(s):
            return tuple(items)
        assert s[i] == ",", (s, i)
        i += 1


def _float_canon(v: float) -> object:
    return "nan" if math.isnan(v) else (v, math.copysign(1.0, v))


def _zone_name(tz: tzinfo | None) -> str | None:
    if tz is None or type(tz) is timezone:
        return None
    return str(getattr(tz, "key"))  # noqa: B009 - ZoneInfo


def _dt_canon(v: datetime, zone: str | None) -> tuple[object, ...]:
    return (v.replace(tzinfo=None, fold=0), v.utcoffset(), zone)


def _qual(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def canon(v: object) -> Any:
    """What a key must distinguish: the value with its exact types, all the way down."""
    t = type(v)
    if hasattr(t, "__cache_key__"):
        return ("k", _qual(t), (canon(v.__cache_key__()),))  # type: ignore[attr-defined]
    if isinstance(v, enum.Flag):
        return ("e", _qual(t), (canon(v.value),))
    if isinstance(v, enum.Enum):
        return ("e", _qual(t), (("str", v.name),))
    if dataclasses.is_dataclass(v):
        fields = [f.name for f in dataclasses.fields(v) if f.compare]
        return ("D", _qual(t), tuple(canon(getattr(v, f)) for f in fields))
    if t is Pair:
        return ("o", _qual(t), (("tuple", tuple(canon(x) for x in v)),))  # type: ignore[attr-defined]
    if t is LoudStr:
        return ("o", _qual(t), (("str", str.__str__(v)),))
    if t is MyInt:
        return ("o", _qual(t), (("int", int.__int__(v)),))  # type: ignore[arg-type]
    if v is None:
        return ("none",)
    if t is bool or t is int or t is str:
        return (t.__name__, v)
    if t is float:
        return ("float", _float_canon(v))  # type: ignore[arg-type]
    if t is bytes or t is bytearray:
        return (t.__name__, bytes(v))  # type: ignore[call-overload]
    if t is Decimal:
        return ("decimal", v.as_tuple())  # type: ignore[attr-defined]
    if t is datetime:
        assert isinstance(v, datetime)
        return ("datetime", *_dt_canon(v, _zone_name(v.tzinfo)))
    if t is time:
        assert isinstance(v, time)
        return ("time", v.replace(tzinfo=None, fold=0), v.utcoffset(), _zone_name(v.tzinfo))
    if t is date or t is timedelta:
        return (t.__name__, v)
    if t is uuid.UUID:
        return ("uuid", v)
    if t is tuple or t is list:
        return (t.__name__, tuple(canon(x) for x in v))  # type: ignore[attr-defined]
    if t is dict:
        return ("dict", frozenset((canon(k), canon(x)) for k, x in v.items()))  # type: ignore[attr-defined]
    if t is set or t is frozenset:
        return (t.__name__, frozenset(canon(x) for x in v))  # type: ignore[attr-defined]
    raise AssertionError(f"no canonical form for {t}")


# --- hypothesis strategies ---------------------------------------------------------

ZONES: list[tzinfo | None] = [
    None,
    UTC,
    timezone(timedelta(hours=2)),
    timezone(-timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=1, seconds=30, microseconds=5)),
    ZoneInfo("Europe/Paris"),
    ZoneInfo("America/New_York"),
    ZoneInfo("UTC"),
]
TRICKY = ":{}%,.()[]<>=#@ \t\n\x00é中\u3000"
texts = st.text(alphabet=st.sampled_from(TRICKY) | st.characters(), max_size=12)
ints = (
    st.integers()
    | st.integers(min_value=2**2040, max_value=2**2100)
    | st.integers(max_value=-(2**2040), min_value=-(2**2100))
)
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(),
    texts,
    st.binary(max_size=8),
    st.decimals(allow_nan=True).filter(lambda d: not d.is_snan()),
    st.datetimes(timezones=st.sampled_from(ZONES), allow_imaginary=False),
    st.dates(),
    st.times(timezones=st.sampled_from(ZONES)),
    st.timedeltas(),
    st.uuids(),
    st.sampled_from([Color.RED, Color.GREEN, Level.LOW]),
    st.sampled_from(list(Perm)) | st.builds(Perm, st.integers(0, 7)),
    texts.map(LoudStr),
    st.integers().map(MyInt),
)
leaves = hashable_leaves | st.builds(bytearray, st.binary(max_size=8))


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    keys = hashable_leaves | st.tuples(hashable_leaves, hashable_leaves)
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
        st.sets(hashable_leaves, max_size=4),
        st.frozensets(hashable_leaves, max_size=4),
        st.builds(Point, children, children, texts),
        st.builds(Pair, children, children),
        st.builds(UserRef, children),
        st.builds(OtherRef, children),
    )


values = st.recursive(leaves, _containers, max_leaves=12)
arg_tuples = st.lists(values, max_size=4).map(tuple)


# --- binding: defaults applied, one key per call shape -----------------------------


def test_bound_signature_with_defaults_is_one_key() -> None:
    kb = KeyBuilder(get_user)
    key = kb(1)
    assert kb(user_id=1) == kb(1, "free") == kb(1, tier="free") == kb(tier="free", user_id=1)
    assert key == kb(1) == f"scalekit:cache:{__name__}.get_user:v1:{{i1,s4.free}}"
    assert kb(1, "gold") != key
    assert kb(2) != key


def test_star_args_and_kwargs() -> None:
    kb = KeyBuilder(star)
    assert kb(1, a=1, b=2) == kb(1, b=2, a=1)  # kwargs order does not matter
    assert kb(1, 2) != kb((1, 2))
    assert kb(a=1) != kb(1)
    assert tag_of(kb(1, "x", a=None)) == "(i1,s1.x),<s1.a=N>"


def test_keyword_only_and_positional_only() -> None:
    def f(a: int, /, b: int = 2, *, c: int = 3, d: int) -> None: ...

    kb = KeyBuilder(f)
    assert kb(1, d=4) == kb(1, 2, d=4) == kb(1, c=3, d=4, b=2)
    assert tag_of(kb(1, d=4)) == "i1,i2,i3,i4"
    with pytest.raises(TypeError):
        kb(a=1, d=4)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        kb(1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2, 3), {}), ((1,), {"a": 1}), ((1,), {"zzz": 1}), ((), {"tier": "x"})],
)
def test_bad_calls_raise_the_functions_own_type_error(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    kb = KeyBuilder(get_user)
    with pytest.raises(TypeError):
        get_user(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        kb(*args, **kwargs)  # type: ignore[arg-type]


def test_signature_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    kb = KeyBuilder(get_user)

    def no_more(*a: object, **k: object) -> None:
        raise AssertionError("inspect.signature called per call")

    monkeypatch.setattr(inspect, "signature", no_more)
    assert kb(1) == kb(user_id=1, tier="free")
    kb(1, "x")


def _sig_a(a: int, b: int = 2) -> None: ...
def _sig_b(a: int, /, b: int, c: int = 3, *, d: int, e: int = 5) -> None: ...
def _sig_c(a: int = 1, b: int = 2, *, c: int = 3) -> None: ...
def _sig_d() -> None: ...
def _sig_e(a: int, /, b: int = 2, *args: int, c: int = 3, **kw: int) -> None: ...


@settings(max_examples=400)
@given(
    fn=st.sampled_from([_sig_a, _sig_b, _sig_c, _sig_d, _sig_e]),
    args=st.lists(st.integers(0, 9), max_size=5).map(tuple),
    kwargs=st.dictionaries(st.sampled_from("abcdex"), st.integers(0, 9), max_size=4),
)
def test_fast_binding_equals_signature_bind(
    fn: Callable[..., None], args: tuple[int, ...], kwargs: dict[str, int]
) -> None:
    kb = KeyBuilder(fn)
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        with pytest.raises(TypeError):
            kb(*args, **kwargs)
        return
    bound.apply_defaults()
    expected = (
        f"scalekit:cache:{escape(kb.namespace)}:v1:{{{encode_args(bound.arguments.values())}}}"
    )
    assert kb(*args, **kwargs) == expected


# --- type awareness ----------------------------------------------------------------

DISTINCT: list[object] = [
    None, "", "None", 0, 1, -1, "1", 1.0, -0.0, 0.0, True, False, Decimal(1), Decimal("1.0"),
    b"", b"1", bytearray(b"1"), [], (), {}, set(), frozenset(), [1], (1,), {1}, frozenset({1}),
    ["1"], [1.0], [True], (None,), ((),), [[]], {1: 1}, {"1": 1}, {1: "1"}, {(1,): 1},
    date(2024, 5, 1), datetime(2024, 5, 1), datetime(2024, 5, 1, tzinfo=UTC),
    datetime(2024, 5, 1, tzinfo=ZoneInfo("UTC")), time(0), timedelta(0), timedelta(1),
    uuid.UUID(int=1), Color.RED, Level.LOW, Perm.R, Perm.R | Perm.W, Perm(0),
    Point(1, 2), Point(2, 1), (1, 2), Pair(1, 2), [1, 2], UserRef(1), OtherRef(1), MyInt(1),
    "a", LoudStr("a"), OrderedDict(), 2**3000, 2**3000 + 1, -(2**3000),
]  # fmt: skip


def test_type_aware_keys_are_pairwise_distinct() -> None:
    kb = KeyBuilder(two)
    keys = [kb(v) for v in DISTINCT]
    seen: dict[str, object] = {}
    for v, k in zip(DISTINCT, keys, strict=True):
        assert k not in seen, f"{v!r} and {seen[k]!r} share {k}"
        seen[k] = v


def test_adjacent_and_joined_strings_do_not_collide() -> None:
    kb = KeyBuilder(two)
    assert kb("a b") != kb("a", "b")
    assert kb("a,b") != kb("a", "b")
    assert kb("a,s1.b") != kb("a", "b")
    assert encode_args(("a,b",)) != encode_args(("a", "b"))
    assert encode_args(("s1.a",)) != encode_args(("a",))
    assert encode_args([("a", "b")]) != encode_args(["a", "b"])
    assert encode_args([["a"], "b"]) != encode_args([["a", "b"]])
    assert encode_args([{"a": "b=c"}]) != encode_args([{"a=b": "c"}])
    assert encode_args(()) != encode_args(("",)) != encode_args((None,))


def test_list_and_tuple_are_different_keys() -> None:
    assert encode_args([("a",)]) == "(s1.a)"
    assert encode_args([["a"]]) == "[s1.a]"


def test_unordered_containers_ignore_order() -> None:
    a = {"x": [1, {"p": 1, "q": 2}], "y": {3, 1, 2}}
    b = {"y": {2, 3, 1}, "x": [1, {"q": 2, "p": 1}]}
    assert list(a) != list(b)
    assert encode_args([a]) == encode_args([b])
    assert encode_args([frozenset("abc")]) == encode_args([frozenset("cba")])
    assert encode_args([[1, 2]]) != encode_args([[2, 1]])  # sequences keep their order


def test_scalar_encodings() -> None:
    got = encode_args(
        [
            None, True, False, -42, 1.5, float("inf"), float("nan"), "gold", b"\x00\xff",
            bytearray(b"\x01"), Decimal("1.50"), date(2024, 5, 1),
            datetime(2024, 5, 1, 12, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),
            datetime(2024, 5, 1, 12, 30, tzinfo=ZoneInfo("Europe/Paris")),
            time(12, 30), timedelta(seconds=1, microseconds=5), uuid.UUID(int=255),
        ]
    )  # fmt: skip
    assert got.split(",") == [
        "N", "T", "F", "i-42", "f1.5", "finf", "fnan", "s4.gold", "b00ff", "B01", "m1.50",
        "d2024-05-01", "t2024-05-01T123000.000005+0200", "t2024-05-01T123000+0200@12.Europe/Paris",
        "h123000", "r1000005", "u000000000000000000000000000000ff",
    ]  # fmt: skip


def test_rich_types_encodings() -> None:
    m = __name__
    assert encode_args([Color.RED]) == f"e{len(m) + 6}.{m}.Color(s3.RED)"
    assert encode_args([Perm.R | Perm.X]) == f"e{len(m) + 5}.{m}.Perm(i5)"
    assert encode_args([Point(1, "a", note="ignored")]) == f"D{len(m) + 6}.{m}.Point(i1,s1.a)"
    assert encode_args([Point(1, 2, note="x")]) == encode_args([Point(1, 2, note="y")])
    assert encode_args([UserRef(42)]) == f"k{len(m) + 8}.{m}.UserRef(i42)"
    assert encode_args([UserRef(Point(1, 2))]).startswith("k")
    assert encode_args([Pair(1, 2)]) == f"o{len(m) + 5}.{m}.Pair((i1,i2))"
    # subclasses are encoded from their base value, not from overridable methods
    assert encode_args([LoudStr("a")]) == f"o{len(m) + 8}.{m}.LoudStr(s1.a)"
    assert encode_args([MyInt(7)]) == f"o{len(m) + 6}.{m}.MyInt(i7)"
    assert encode_args([OrderedDict(b=1, a=2)]) == "o23.collections.OrderedDict(<s1.a=i2,s1.b=i1>)"


def test_huge_ints_do_not_depend_on_the_str_digits_limit() -> None:
    big = 3**5000  # more digits than sys.get_int_max_str_digits() allows by default
    assert encode_args([big]) == f"I{big:x}"
    assert encode_args([-big]) == f"I-{big:x}"
    assert encode_args([2**2048 - 1]) == f"i{2**2048 - 1}"


# --- unsupported values --------------------------------------------------------------


def test_unsupported_argument_names_parameter_type_and_fix() -> None:
    def load(session: object, user_id: int) -> None: ...

    with pytest.raises(ConfigurationError) as info:
        KeyBuilder(load)(Opaque(), 1)
    msg = str(info.value)
    assert "'session'" in msg and "load" in msg
    assert f"{__name__}.Opaque" in msg
    assert "ignore=" in msg and "key=" in msg and "__cache_key__" in msg
    assert isinstance(info.value, ValueError)  # ConfigurationError is a ValueError
    assert KeyBuilder(load, ignore=("session",))(Opaque(), 1).endswith("{i1}")


@pytest.mark.parametrize(
    "value",
    [
        [1, Opaque()],
        {"k": Opaque()},
        {Opaque(): 1},
        Point(1, Opaque()),
        UserRef(Opaque()),
        object(),
        len,
        Opaque,
        memoryview(b"x"),
        1 + 2j,
        datetime(2024, 1, 1, tzinfo=NoNameZone()),
    ],
)
def test_unsupported_values_never_fall_back_to_repr(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"'a'.*no stable encoding"):
        KeyBuilder(two)(value)
    with pytest.raises(ConfigurationError, match="argument #1"):
        encode_args([1, value])


def test_nested_unsupported_value_says_so() -> None:
    with pytest.raises(ConfigurationError, match=r"'b' of .* contains a value of type"):
        KeyBuilder(two)(1, [Opaque()])


def test_self_referencing_value_is_a_configuration_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ConfigurationError, match="contains itself"):
        KeyBuilder(two)(loop)
    with pytest.raises(ConfigurationError, match="contains itself"):
        encode_args([loop])


# --- self / cls ----------------------------------------------------------------------


class Repo:
    def __init__(self, db: str) -> None:
        self.db = db

    def get(self, user_id: int) -> None: ...

    @classmethod
    def build(cls, user_id: int) -> None: ...


class SubRepo(Repo):
    pass


class Tenant:
    def __init__(self, tenant_id: int) -> None:
        self.tenant_id = tenant_id

    def __cache_key__(self) -> int:
        return self.tenant_id

    def get(self, user_id: int) -> None: ...


def test_self_is_left_out() -> None:
    kb = KeyBuilder(Repo.get)
    assert kb(Repo("a"), 1) == kb(Repo("b"), 1) == kb(SubRepo("c"), 1)
    assert tag_of(kb(Repo("a"), 1)) == "i1"
    assert kb(Repo("a"), 1) != kb(Repo("a"), 2)


def test_self_with_cache_key_is_included() -> None:
    kb = KeyBuilder(Tenant.get)
    assert kb(Tenant(1), 5) == kb(Tenant(1), 5)
    assert kb(Tenant(1), 5) != kb(Tenant(2), 5)
    assert tag_of(kb(Tenant(1), 5)) == f"k{len(__name__) + 7}.{__name__}.Tenant(i1),i5"
    # explicitly ignored: left out even though it has a key
    assert tag_of(KeyBuilder(Tenant.get, ignore=("self",))(Tenant(1), 5)) == "i5"


def test_cls_is_the_class_name() -> None:
    fn = Repo.__dict__["build"].__func__
    kb = KeyBuilder(fn)
    assert tag_of(kb(Repo, 1)) == f"c{len(__name__) + 5}.{__name__}.Repo,i1"
    assert kb(Repo, 1) != kb(SubRepo, 1)  # an alternative constructor's result differs
    assert tag_of(KeyBuilder(fn, ignore=("cls",))(Repo, 1)) == "i1"


def test_self_detection_only_for_functions_in_class_bodies() -> None:
    def helper(self: object) -> None: ...  # nested function, not a method

    assert tag_of(KeyBuilder(helper)(5)) == "i5"
    with pytest.raises(ConfigurationError):
        KeyBuilder(helper)(Opaque())
    bound = Repo("a").get  # a bound method: self is not in the signature at all
    assert tag_of(KeyBuilder(bound)(3)) == "i3"


# --- ignore, namespace, version ----------------------------------------------------


def test_ignore() -> None:
    def query(db: object, sql: str, *, log: object = None) -> None: ...

    kb = KeyBuilder(query, ignore=("db", "log"))
    assert kb(Opaque(), "select 1", log=Opaque()) == kb(object(), "select 1")
    assert tag_of(kb(None, "x")) == "s1.x"
    with pytest.raises(ConfigurationError, match=r"'dbb'.*not parameters"):
        KeyBuilder(query, ignore=("dbb",))
    with pytest.raises(ConfigurationError, match="collection of parameter names"):
        KeyBuilder(query, ignore="db")


def test_namespace_defaults_to_module_and_qualname() -> None:
    assert KeyBuilder(get_user).namespace == f"{__name__}.get_user"
    assert KeyBuilder(Repo.get).namespace == f"{__name__}.Repo.get"
    assert KeyBuilder(get_user).version == 1
    assert repr(KeyBuilder(get_user)) == f"KeyBuilder(namespace='{__name__}.get_user', version=1)"


def test_namespace_and_version_are_escaped_and_versioned() -> None:
    kb = KeyBuilder(get_user, namespace="users:get {x}", prefix="app")
    assert kb(1) == "app:users%3Aget%20%7Bx%7D:v1:{i1,s4.free}"
    assert KeyBuilder(get_user, namespace="u", version=2)(1) == "scalekit:cache:u:v2:{i1,s4.free}"
    assert KeyBuilder(get_user, namespace="u", version="2024-05:a")(1).startswith(
        "scalekit:cache:u:v2024-05%3Aa:{"
    )
    # int 2 and str "2" are the same version (both are written v2)
    assert KeyBuilder(get_user, version=2)(1) == KeyBuilder(get_user, version="2")(1)
    assert KeyBuilder(get_user, version=2)(1) != KeyBuilder(get_user, version=3)(1)


def test_key_is_build_key_of_escaped_parts() -> None:
    kb = KeyBuilder(get_user, namespace="a:b", version="x y")
    args = (7, "t:{}")
    assert kb(*args) == build_key(
        "scalekit:cache", escape("a:b"), "v" + escape("x y"), tag=encode_args(args)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": True}, "version"),
        ({"version": 1.5}, "version"),
        ({"version": -1}, "version"),
        ({"version": ""}, "version"),
        ({"namespace": ""}, "namespace"),
        ({"prefix": ""}, "prefix"),
        ({"prefix": "a{b}"}, "prefix"),
        ({"prefix": "a b"}, "prefix"),
        ({"max_length": -1}, "max_length"),
        ({"max_length": 1.0}, "max_length"),
        ({"readable_prefix": -1}, "readable_prefix"),
    ],
)
def test_invalid_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        KeyBuilder(get_user, **kwargs)


def test_nameless_callables_need_a_namespace() -> None:
    with pytest.raises(ConfigurationError, match="lambda"):
        KeyBuilder(lambda x: x)
    part = functools.partial(two, 1)
    with pytest.raises(ConfigurationError, match="namespace="):
        KeyBuilder(part)
    assert KeyBuilder(part, namespace="two1")(2) == "scalekit:cache:two1:v1:{i2}"
    with pytest.raises(ConfigurationError, match="signature"):
        KeyBuilder(type("NoSig", (), {"__signature__": 5})())


# --- escaping and long keys --------------------------------------------------------


@given(args=arg_tuples)
def test_keys_cannot_be_forged(args: tuple[object, ...]) -> None:
    key = KeyBuilder(star, namespace="ns", max_length=10_000)(*args)
    head, _, tag = key.partition("{")
    assert head == "scalekit:cache:ns:v1:"
    assert tag.endswith("}")
    tag = tag[:-1]
    # what _keys.escape promises: no separator, no brace, no whitespace or ASCII control
    assert not any(c in ":{}" or c.isspace() or c < " " or c == "\x7f" for c in tag)
    key.encode()  # always valid UTF-8, for every client
    encoded = encode_args([args, {}])
    assert unescape(tag) == encoded  # lone surrogates too: escape() percent-encodes them


def test_long_keys_are_hashed() -> None:
    kb = KeyBuilder(two, namespace="n")
    short = kb("x" * 100)
    assert tag_of(short) == "s100." + "x" * 100 + ",N"
    long_key = kb("x" * 300)
    tag = tag_of(long_key)
    assert tag.startswith("#") and len(tag) == 65 and all(c in "0123456789abcdef" for c in tag[1:])
    assert kb("x" * 300) == long_key
    assert kb("x" * 300, 1) != long_key != kb("x" * 301)
    # the digest is BLAKE2b-256 of the full encoding: reproducible anywhere
    import hashlib

    full = encode_args(["x" * 300, None]).encode()
    assert tag[1:] == hashlib.blake2b(full, digest_size=32).hexdigest()


def test_max_length_counts_escaped_utf8_bytes() -> None:
    kb = KeyBuilder(two, namespace="n", max_length=20)
    assert not tag_of(kb("a" * 14)).startswith("#")  # "s14.aaa…,N" is 20 bytes
    assert tag_of(kb("a" * 15)).startswith("#")
    assert tag_of(kb("é" * 8)).startswith("#")  # 13 chars, but 16 + 5 = 21 bytes ...
    assert not tag_of(kb("é" * 7)).startswith("#")  # ... while 14 + 5 = 19 bytes fit
    assert tag_of(kb(":" * 6)).startswith("#")  # 11 chars, 23 bytes once escaped
    assert not tag_of(kb(":" * 5)).startswith("#")  # exactly 20 bytes once escaped
    assert tag_of(KeyBuilder(two, max_length=0)(1)).startswith("#")


def test_hashed_key_cannot_be_forged_by_a_short_argument() -> None:
    kb = KeyBuilder(two, namespace="n", readable_prefix=4)
    victim = kb("x" * 300)
    tag = tag_of(victim)
    assert tag.startswith("#s300#")
    digest = tag.rsplit("#", 1)[1]
    # an attacker passing the digest (with any framing) gets an unhashed, different key
    for forged in (digest, "#" + digest, "#s300#" + digest, tag):
        assert kb(forged) != victim
        assert not tag_of(kb(forged)).startswith("#")


def test_readable_prefix_is_escaped() -> None:
    kb = KeyBuilder(two, namespace="n", max_length=10, readable_prefix=8)
    key = kb("a:b{c}" * 5)
    assert key.count("{") == 1 and key.count("}") == 1
    assert key.split("{")[1].startswith("#s30.a%3Ab%7B#")


def test_lone_surrogates_are_escaped() -> None:
    key = KeyBuilder(two, namespace="n")("\ud800")
    key.encode()  # a valid key for any client
    assert "%ED%A0%80" in key
    assert key != KeyBuilder(two, namespace="n")("\ud801")


# --- injectivity (hypothesis) ------------------------------------------------------


@settings(max_examples=500)
@given(args=arg_tuples)
def test_encoding_decodes_to_the_canonical_arguments(args: tuple[object, ...]) -> None:
    encoded = encode_args(args)
    assert decode_args(encoded) == tuple(canon(a) for a in args)
    assert encode_args(list(args)) == encoded  # deterministic


@settings(max_examples=300)
@given(a=arg_tuples, b=arg_tuples)
def test_different_arguments_never_share_a_key(
    a: tuple[object, ...], b: tuple[object, ...]
) -> None:
    kb = KeyBuilder(star, namespace="n", max_length=10_000)
    same_key = kb(*a) == kb(*b)
    assert same_key == (tuple(canon(x) for x in a) == tuple(canon(x) for x in b))


@given(a=values)
def test_a_value_and_its_parts_never_collide(a: object) -> None:
    # wrapping a value in any container changes its key
    kb = KeyBuilder(star, namespace="n", max_length=10_000)
    keys = {kb(a), kb([a]), kb((a,)), kb(a, a), kb([a], a), kb(Pair(a, None))}
    assert len(keys) == 6


# --- stable across processes --------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import json, sys, uuid
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal
    from zoneinfo import ZoneInfo
    from scalekit.cache._keys import KeyBuilder

    def f(*args, **kwargs): ...

    def cases():
        yield ({"b", "a", "c", "ab"}, frozenset(["x", "y"]))
        yield ({"z": {"q", "p"}, "a": [1, 2.5, None], ("t", 1): b"\\x00"},)
        yield (Decimal("1.10"), uuid.UUID(int=7), timedelta(days=1))
        yield (datetime(2024, 3, 31, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),)
        yield (datetime(2024, 3, 31, 2, 30, tzinfo=timezone(timedelta(hours=-3))),)
        yield ("x" * 500, {str(i) for i in range(50)})   # hashed

    kb = KeyBuilder(f, namespace="cross:process", version="7", readable_prefix=6)
    print(json.dumps([kb(*args, k="v") for args in cases()]))
    """
)


def _keys_in_subprocess(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    return list(json.loads(out.stdout))


def test_keys_are_the_same_in_other_processes() -> None:
    namespace: dict[str, Any] = {"__name__": "not_main"}
    exec(_SCRIPT.replace("print(json.dumps(", "RESULT = (("), namespace)
    here = namespace["RESULT"]
    assert len(here) == 6 and len(set(here)) == 6
    assert here[-1].split("{")[1].startswith("#")
    assert _keys_in_subprocess("1") == here
    assert _keys_in_subprocess("4242") == here


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.uuids(),
        st.text(max_size=300),
        st.binary(max_size=20),
        st.tuples(st.integers()),
    )
)
def test_the_hot_path_key_function_gives_the_same_keys(value: object) -> None:
    def f(x: object) -> None: ...

    def g(x: object, y: int = 2) -> None: ...

    for fn in (f, g):
        builder = KeyBuilder(fn, namespace="ns", max_length=64)
        fast = builder.function()
        assert fast(value) == builder(value)
        assert fast(x=value) == builder(x=value)
