"""scalekit.serde: round trips, typed rebuilding, and refusing foreign or hostile bytes.

The pydantic and msgpack paths are optional extras: their tests skip (with the reason)
when the package is not installed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any, Generic, Literal, NamedTuple, NewType, TypedDict, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalekit.errors import ConfigurationError, MissingDependency, ScalekitError
from scalekit.serde import (
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
    get_serializer,
)

PYDANTIC_REASON = "optional extra: pydantic>=2.9 is not installed (pydantic validation path)"
MSGPACK_REASON = "optional extra: msgpack is not installed"


# ------------------------------------------------------------------ types under test


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Address:
    street: str
    zip: str | None = None


@dataclasses.dataclass
class User:
    id: int
    name: str
    email: str | None = None
    address: Address | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class UserV2:  # the "next schema" of User: a new required field
    id: int
    name: str
    email: str


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    created: dt.datetime
    due: dt.date
    at: dt.time
    total: Decimal
    blob: bytes
    color: Color
    level: Level
    items: tuple[str, ...]
    pair: tuple[int, str]
    codes: set[int]
    labels: frozenset[str]
    owner: User
    scores: dict[str, float]


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node] = dataclasses.field(default_factory=list)


T = TypeVar("T")


@dataclasses.dataclass
class Box(Generic[T]):
    item: T


@dataclasses.dataclass
class Cat:
    name: str


@dataclasses.dataclass
class Dog:
    name: str


class Point(NamedTuple):
    x: int
    y: int = 0


class Movie(TypedDict):
    title: str
    year: int


UserId = NewType("UserId", int)

UTC_PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
ORDER = Order(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    created=dt.datetime(2024, 5, 17, 13, 45, 1, 123456, tzinfo=dt.UTC),
    due=dt.date(2024, 6, 1),
    at=dt.time(23, 59, 59, 999999),
    total=Decimal("1234.50"),
    blob=b"\x00\xff\xfe binary",
    color=Color.GREEN,
    level=Level.HIGH,
    items=("a", "b"),
    pair=(7, "seven"),
    codes={3, 1, 2},
    labels=frozenset({"x", "y"}),
    owner=User(1, "Ada", "ada@example.com", Address("Main St 1", None), ["admin"]),
    scores={"q1": 1.5, "q2": 2.0},
)


def _touch(path: str) -> None:
    """What the hostile pickle below runs when unpickled."""
    Path(path).write_text("code was executed")


class _Exploit:
    """Unpickling this calls ``_touch(path)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (_touch, (str(self.path),))


# ------------------------------------------------------------------------- fixtures


def _make(kind: str) -> Serializer:
    fmt, _, validation = kind.partition("-")
    if fmt == "msgpack":
        pytest.importorskip("msgpack", reason=MSGPACK_REASON)
    if validation == "pydantic":
        pytest.importorskip("pydantic", minversion="2.9", reason=PYDANTIC_REASON)
    # decoder="pydantic" falls back to the stdlib rebuild for hints pydantic refuses
    # (typing.TypedDict on Python < 3.12); no suffix: the default engine
    decoder: Any = "pydantic" if validation == "pydantic" else "stdlib"
    if fmt == "msgpack":
        return MsgpackSerializer(decoder=decoder)
    return JsonSerializer(decoder=decoder)


@pytest.fixture(scope="module", params=["json", "msgpack"])
def serializer(request: pytest.FixtureRequest) -> Serializer:
    """Each safe format, with the default typed-decoding engine."""
    return _make(request.param)


@pytest.fixture(
    scope="module",
    params=["json-stdlib", "json-pydantic", "msgpack-stdlib", "msgpack-pydantic"],
)
def typed(request: pytest.FixtureRequest) -> Serializer:
    """Each safe format, rebuilding typed values with the stdlib or with pydantic."""
    return _make(request.param)


@pytest.fixture
def pydantic() -> Any:
    return pytest.importorskip("pydantic", minversion="2.9", reason=PYDANTIC_REASON)


def assert_same(got: Any, want: Any) -> None:
    """Equal, and of the same types all the way down."""
    assert type(got) is type(want), (got, want)
    assert got == want
    if dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            assert_same(getattr(got, f.name), getattr(want, f.name))
    elif isinstance(want, list | tuple):
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert [type(k) for k in got] == [type(k) for k in want]
        for k in want:
            assert_same(got[k], want[k])


# ------------------------------------------------------------------ untyped round trips


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**62),
        1.5,
        -0.0,
        float("inf"),
        "",
        "héllo wörld ✓ 日本",
        [],
        {},
        [1, "a", None, [2, {"b": [True]}]],
        {"nested": {"list": [1.25, None], "s": "x"}},
    ],
)
def test_plain_json_values_round_trip(serializer: Serializer, value: Any) -> None:
    assert_same(serializer.loads(serializer.dumps(value)), value)


def test_nan_round_trips(serializer: Serializer) -> None:
    got = serializer.loads(serializer.dumps([float("nan")]))
    assert got[0] != got[0]


def test_untyped_loads_returns_the_documented_primitives() -> None:
    s = JsonSerializer()
    assert s.loads(s.dumps(ORDER)) == {
        "id": "12345678-1234-5678-1234-567812345678",
        "created": "2024-05-17T13:45:01.123456+00:00",
        "due": "2024-06-01",
        "at": "23:59:59.999999",
        "total": "1234.50",
        "blob": "AP/+IGJpbmFyeQ==",
        "color": "green",
        "level": 2,
        "items": ["a", "b"],
        "pair": [7, "seven"],
        "codes": [1, 2, 3],
        "labels": ["x", "y"],
        "owner": {
            "id": 1,
            "name": "Ada",
            "email": "ada@example.com",
            "address": {"street": "Main St 1", "zip": None},
            "tags": ["admin"],
        },
        "scores": {"q1": 1.5, "q2": 2.0},
    }


def test_msgpack_keeps_bytes_native() -> None:
    pytest.importorskip("msgpack", reason=MSGPACK_REASON)
    s = MsgpackSerializer()
    assert s.loads(s.dumps({"b": b"\x00\xff", "t": (1, 2)})) == {"b": b"\x00\xff", "t": [1, 2]}


def test_json_output_is_compact_utf8_behind_the_envelope() -> None:
    data = JsonSerializer().dumps({"a": [1, 2], "é": "✓"})
    assert data == b'\xc1J{"a":[1,2],"\xc3\xa9":"\xe2\x9c\x93"}'


def test_envelope_ids() -> None:
    assert JsonSerializer().dumps(1)[:2] == b"\xc1J"
    assert PickleSerializer(i_understand_pickle_executes_code=True).dumps(1)[:2] == b"\xc1P"


def test_msgpack_envelope_id() -> None:
    pytest.importorskip("msgpack", reason=MSGPACK_REASON)
    assert MsgpackSerializer().dumps(1)[:2] == b"\xc1M"


# -------------------------------------------------------------------- typed round trips


TYPED_CASES: list[tuple[Any, Any]] = [
    (42, int),
    (1.0, float),
    ("s", str),
    (True, bool),
    (None, type(None)),
    (dt.datetime(2024, 1, 2, 3, 4, 5, 6), dt.datetime),
    (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC_PLUS_0530), dt.datetime),
    (dt.date(1999, 12, 31), dt.date),
    (dt.time(8, 30), dt.time),
    (uuid.UUID(int=7), uuid.UUID),
    (Decimal("0.1000"), Decimal),
    (Decimal("-1E+3"), Decimal),
    (b"\x00\x01\xfe\xff", bytes),
    (b"", bytes),
    (Color.RED, Color),
    (Level.LOW, Level),
    ((1, "a"), tuple[int, str]),
    ((1, 2, 3), tuple[int, ...]),
    ({1, 2}, set[int]),
    (frozenset({"a"}), frozenset[str]),
    ([Color.RED, Color.GREEN], list[Color]),
    ({"k": Level.HIGH}, dict[str, Level]),
    ({1: "one", -2: "minus two"}, dict[int, str]),
    ({Level.LOW: "low"}, dict[Level, str]),
    ("red", Literal["red", "blue"]),
    (Point(1, 2), Point),
    ({"title": "Heat", "year": 1995}, Movie),
    (UserId(5), UserId),
    (3, Annotated[int, "metadata"]),
    (User(1, "Ada"), User),
    (ORDER, Order),
    ([User(1, "a", address=Address("x")), User(2, "b", tags=["t"])], list[User]),
    ({"o1": ORDER}, dict[str, Order]),
    (User(1, "a"), User | None),
    (None, User | None),
    ([None, Address("s", "z")], list[Address | None]),
    (Node(1, [Node(2, [Node(3)]), Node(4)]), Node),
    (Box(User(1, "boxed")), Box[User]),
    (Box([Address("x")]), Box[list[Address]]),
    (1, int | float),
    (1.5, int | float),
    ("x", int | str),
]


@pytest.mark.parametrize(("value", "hint"), TYPED_CASES, ids=repr)
def test_typed_round_trip(typed: Serializer, value: Any, hint: Any) -> None:
    assert_same(typed.loads(typed.dumps(value), hint), value)


def test_aware_datetime_keeps_its_offset(typed: Serializer) -> None:
    value = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC_PLUS_0530)
    got = typed.loads(typed.dumps(value), dt.datetime)
    assert got.utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_any_hint_returns_plain_values(typed: Serializer) -> None:
    assert typed.loads(typed.dumps(User(1, "a")), Any)["name"] == "a"


# ------------------------------------------------------------------------ wrong schema


def test_missing_field_raises(typed: Serializer) -> None:
    old = typed.dumps(User(1, "Ada"))  # email is None, the new schema requires a str
    with pytest.raises(SerializationError):
        typed.loads(typed.dumps({"id": 1, "name": "Ada"}), UserV2)
    with pytest.raises(SerializationError):
        typed.loads(old, UserV2)


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "not a number", "name": "Ada"},
        {"id": 1, "name": ["not", "a", "str"]},
        {"id": 1, "name": "Ada", "address": "not an object"},
        {"id": 1, "name": "Ada", "address": {"zip": "no street"}},
        {"id": 1, "name": "Ada", "tags": "not a list"},
        ["not", "an", "object"],
        None,
    ],
)
def test_wrong_type_raises(typed: Serializer, payload: Any) -> None:
    with pytest.raises(SerializationError):
        typed.loads(typed.dumps(payload), User)


@pytest.mark.parametrize(
    ("payload", "hint"),
    [
        ("not-a-uuid", uuid.UUID),
        ("yesterday", dt.datetime),
        ("1.5.3", Decimal),
        ("!!not base64!!", bytes),
        ("purple", Color),
        (7, Level),
        ([1, 2, 3], tuple[int, str]),
        ("blue", Literal["red"]),
        ({"title": "x"}, Movie),
        ({"k": "v"}, list[int]),
        ([{"id": 1, "name": "a"}, {"id": "x"}], list[User]),
    ],
)
def test_invalid_values_for_hint_raise(typed: Serializer, payload: Any, hint: Any) -> None:
    with pytest.raises(SerializationError):
        typed.loads(typed.dumps(payload), hint)


def test_error_names_the_path_and_chains_the_cause() -> None:
    s = JsonSerializer(decoder="stdlib")
    data = s.dumps([{"id": 1, "name": "a"}, {"id": 2, "name": "b", "address": {"street": 3}}])
    with pytest.raises(SerializationError, match=r"\$\[1\]\.address\.street") as info:
        s.loads(data, list[User])
    assert info.value.__cause__ is not None
    assert isinstance(info.value, ScalekitError)


def test_stdlib_rebuild_is_strict() -> None:
    s = JsonSerializer(decoder="stdlib")
    with pytest.raises(SerializationError, match="unknown field"):
        s.loads(s.dumps({"id": 1, "name": "a", "extra": 1}), User)
    with pytest.raises(SerializationError):
        s.loads(s.dumps("42"), int)
    with pytest.raises(SerializationError):
        s.loads(s.dumps(True), int)
    with pytest.raises(SerializationError, match="ambiguous"):
        s.loads(s.dumps(Cat("tom")), Cat | Dog)


def test_pydantic_validation_is_lax(pydantic: Any) -> None:
    s = JsonSerializer(decoder="pydantic")
    assert s.loads(s.dumps("42"), int) == 42
    assert s.loads(s.dumps({"id": 1, "name": "a", "extra": 1}), User) == User(1, "a")


@pytest.mark.parametrize(
    "hint",
    ["User", object.__new__, Path, type("Custom", (), {})],
    ids=["string annotation", "function", "Path", "plain class"],
)
def test_unsupported_hint_raises(hint: Any) -> None:
    s = JsonSerializer(decoder="stdlib")
    with pytest.raises(SerializationError):
        s.loads(s.dumps({}), hint)


# ------------------------------------------------------- foreign, garbage and truncated


GARBAGE = [
    b"",
    b"\xc1",
    b"\xc1J",
    b"\xc1M",
    b"{}",
    b"garbage",
    b"\x00" * 16,
    b"\xc1J{",
    b"\xc1J[1,2",
    b"\xc1J1 2",
    b"\xc1Jnot json",
    b"\xc1J\xff\xfe\xfd",
    b"\xc1J\xef\xbb\xbf{}",
    b"\xc1M\xc1",
    b"\xc1M\x92\x01",
    b"\xc1M\xd6\xff\x00\x00\x00\x00",  # msgpack Timestamp extension
    b"\xc1M\xd4\x05\x00",  # msgpack ext type 5
    b"\xc1Z{}",
    b"\xc1J" + b"[" * 100_000,
    b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",  # pickle of 1
]


@pytest.mark.parametrize("data", GARBAGE, ids=repr)
@pytest.mark.parametrize("hint", [None, list[User], User | None, int])
def test_garbage_raises_serialization_error(typed: Serializer, data: bytes, hint: Any) -> None:
    with pytest.raises(SerializationError):
        typed.loads(data, hint)


@pytest.mark.parametrize("data", [b"x", bytearray(b"\xc1J1"), memoryview(b"\xc1J1")])
def test_bytes_like_input_is_accepted(data: Any) -> None:
    if data == b"x":
        with pytest.raises(SerializationError):
            JsonSerializer().loads(data)
    else:
        assert JsonSerializer().loads(data) == 1


@pytest.mark.parametrize("data", ['\xc1J{"a":1}', 42, None])
def test_non_bytes_input_raises(serializer: Serializer, data: Any) -> None:
    with pytest.raises(SerializationError, match="reads bytes"):
        serializer.loads(data)


def test_str_input_hints_at_decode_responses() -> None:
    with pytest.raises(SerializationError, match="decode_responses"):
        JsonSerializer().loads('\xc1J"x"')  # type: ignore[arg-type]


def test_truncated_payloads_raise(typed: Serializer) -> None:
    data = typed.dumps({"orders": [ORDER], "n": 1})
    for end in range(len(data)):
        with pytest.raises(SerializationError):
            typed.loads(data[:end], dict[str, Any])
        with pytest.raises(SerializationError):
            typed.loads(data[:end])


def test_bytes_of_another_serializer_raise() -> None:
    pickled = PickleSerializer(i_understand_pickle_executes_code=True).dumps(User(1, "a"))
    json_bytes = JsonSerializer().dumps(User(1, "a"))
    with pytest.raises(SerializationError, match="written by the 'pickle' serializer"):
        JsonSerializer().loads(pickled, User)
    with pytest.raises(SerializationError, match="written by the 'json' serializer"):
        PickleSerializer(i_understand_pickle_executes_code=True).loads(json_bytes)


def test_msgpack_and_json_refuse_each_other() -> None:
    pytest.importorskip("msgpack", reason=MSGPACK_REASON)
    packed = MsgpackSerializer().dumps([1])
    with pytest.raises(SerializationError, match="'msgpack' serializer"):
        JsonSerializer().loads(packed)
    with pytest.raises(SerializationError, match="'json' serializer"):
        MsgpackSerializer().loads(JsonSerializer().dumps([1]))


def test_unknown_format_id_raises() -> None:
    with pytest.raises(SerializationError, match="unknown scalekit payload format id 0x5A"):
        JsonSerializer().loads(b"\xc1Z[]")


def test_hostile_pickle_never_executes(tmp_path: Path, typed: Serializer) -> None:
    # the payload is live: plain pickle.loads really runs it
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(_Exploit(canary)))
    assert canary.exists()

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(marker))
    attempts = [
        evil,  # raw pickle
        b"\xc1J" + evil,  # forged JSON envelope
        b"\xc1M" + evil,  # forged msgpack envelope
        b"\xc1P" + evil,  # what PickleSerializer would read
        pickle.dumps(_Exploit(marker), protocol=0),
    ]
    for data in attempts:
        for hint in (None, User, list[User], Any):
            with pytest.raises(SerializationError):
                typed.loads(data, hint)
    assert not marker.exists()


# ------------------------------------------------------------------------- dumps errors


@pytest.mark.parametrize(
    "value",
    [object(), User, "lone \ud800 surrogate", Path("/x"), lambda: 1],
    ids=["object", "class", "surrogate", "Path", "lambda"],
)
def test_unsupported_values_raise_on_dumps(serializer: Serializer, value: Any) -> None:
    with pytest.raises(SerializationError):
        serializer.dumps(value)


def test_tuple_keys_do_not_round_trip(serializer: Serializer) -> None:
    # JSON refuses them at dumps; msgpack writes them but cannot read them back
    with pytest.raises(SerializationError):
        serializer.loads(serializer.dumps({("tuple", "key"): 1}))


def test_circular_value_raises(serializer: Serializer) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        serializer.dumps(loop)


def test_msgpack_rejects_integers_above_64_bits() -> None:
    pytest.importorskip("msgpack", reason=MSGPACK_REASON)
    with pytest.raises(SerializationError):
        MsgpackSerializer().dumps(2**70)
    assert JsonSerializer().loads(JsonSerializer().dumps(2**70)) == 2**70


# ------------------------------------------------------------------- pickle is opt-in


def test_pickle_refused_without_opt_in() -> None:
    with pytest.raises(ConfigurationError, match="executes arbitrary code"):
        PickleSerializer()
    with pytest.raises(ConfigurationError, match="executes arbitrary code"):
        PickleSerializer(i_understand_pickle_executes_code=False)
    with pytest.raises(ConfigurationError, match="allow_pickle=True"):
        get_serializer("pickle")


def test_pickle_with_opt_in_round_trips() -> None:
    s = get_serializer("pickle", allow_pickle=True)
    assert isinstance(s, PickleSerializer)
    assert s.name == "pickle"
    assert s.loads(s.dumps(ORDER)) == ORDER
    for data in (b"", b"\xc1P", b"\xc1Pgarbage", s.dumps(ORDER)[:-1]):
        with pytest.raises(SerializationError):
            s.loads(data)


# ------------------------------------------------------------------------ get_serializer


def test_get_serializer_by_name() -> None:
    assert isinstance(get_serializer(), JsonSerializer)
    assert isinstance(get_serializer("json"), JsonSerializer)
    assert isinstance(get_serializer(" JSON "), JsonSerializer)
    assert get_serializer("json").name == "json"


def test_get_serializer_msgpack() -> None:
    pytest.importorskip("msgpack", reason=MSGPACK_REASON)
    s = get_serializer("msgpack")
    assert isinstance(s, MsgpackSerializer)
    assert s.name == "msgpack"


def test_msgpack_missing_raises_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # makes the import fail
    with pytest.raises(MissingDependency, match=r"scalekit-primitives\[msgpack\]"):
        get_serializer("msgpack")
    with pytest.raises(ConfigurationError):
        MsgpackSerializer()


def test_get_serializer_passes_instances_through() -> None:
    class Upper:
        name = "upper"

        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes, type_hint: Any = None) -> Any:
            return data.decode()

    custom = Upper()
    assert get_serializer(custom) is custom
    json_serializer = JsonSerializer()
    assert get_serializer(json_serializer) is json_serializer


@pytest.mark.parametrize("spec", ["yaml", "", "Pickle5"])
def test_get_serializer_unknown_name_lists_allowed(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="allowed: 'json' \\(default\\), 'msgpack'"):
        get_serializer(spec)


def test_get_serializer_rejects_other_objects() -> None:
    with pytest.raises(ConfigurationError, match="Serializer instance"):
        get_serializer(42)  # type: ignore[arg-type]


def test_serializers_satisfy_the_protocol() -> None:
    assert isinstance(JsonSerializer(), Serializer)
    assert isinstance(PickleSerializer(i_understand_pickle_executes_code=True), Serializer)


def test_use_pydantic_true_needs_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    import scalekit.serde._typed as engines

    monkeypatch.setattr(engines, "_pydantic", lambda: None)
    with pytest.raises(MissingDependency, match="pydantic"):
        JsonSerializer(decoder="pydantic")
    with (
        pytest.raises(MissingDependency, match="pydantic"),
        pytest.warns(DeprecationWarning, match="decoder="),
    ):
        JsonSerializer(use_pydantic=True)
    # the default engine does not need it
    s = JsonSerializer()
    assert s.decoder == "stdlib"
    assert s.loads(s.dumps([User(1, "a")]), list[User]) == [User(1, "a")]


def test_the_decoder_is_an_explicit_choice_with_one_default() -> None:
    assert JsonSerializer().decoder == "stdlib"
    with pytest.raises(ConfigurationError, match="decoder"):
        JsonSerializer(decoder="auto")  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning, match="decoder="):
        assert JsonSerializer(use_pydantic=False).decoder == "stdlib"


_ONE_FLEET = (
    "import sys\n"
    "if sys.argv[1] == 'without': sys.modules['pydantic'] = None  # not importable\n"
    "import scalekit.serde as s\n"
    "j = s.JsonSerializer()\n"
    "out = []\n"
    "for v, hint in (('42', int), (42, int), ([1, '2'], list[int])):\n"
    "    try: out.append(repr(j.loads(j.dumps(v), hint)))\n"
    "    except s.SerializationError: out.append('miss')\n"
    "print(j.decoder, out)\n"
)


def test_two_processes_of_one_fleet_decode_an_entry_the_same_way(pydantic: Any) -> None:
    # one with pydantic importable, one without: the same default engine, the same
    # answers ("42" for int is refused by both)
    runs = [
        subprocess.run(
            [sys.executable, "-c", _ONE_FLEET, which], check=True, capture_output=True, text=True
        ).stdout
        for which in ("with", "without")
    ]
    assert runs[0] == runs[1] == "stdlib ['miss', '42', 'miss']\n"


def test_import_is_lazy() -> None:
    code = (
        "import sys, scalekit.serde as s\n"
        "j = s.JsonSerializer()\n"
        "assert j.loads(j.dumps({'a': [1]})) == {'a': [1]}\n"
        "assert 'pydantic' not in sys.modules, 'pydantic imported'\n"
        "assert 'msgpack' not in sys.modules, 'msgpack imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ pydantic


@pytest.fixture(scope="module")
def models() -> Any:
    pydantic = pytest.importorskip("pydantic", minversion="2.9", reason=PYDANTIC_REASON)

    item = pydantic.create_model(
        "Item",
        sku=(str, pydantic.Field(alias="SKU")),
        price=(Decimal, ...),
        when=(dt.datetime, ...),
        where=(Address, ...),
        raw=(bytes, b""),
    )
    base64_bytes = pydantic.ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    tagged = pydantic.dataclasses.dataclass(config=base64_bytes)(
        dataclasses.make_dataclass("Tagged", [("tag", str), ("data", bytes)])
    )
    plain = pydantic.dataclasses.dataclass(
        dataclasses.make_dataclass("Plain", [("tag", str), ("data", bytes)])
    )
    return item, tagged, plain


def test_pydantic_models_round_trip(models: Any) -> None:
    item_cls, tagged_cls, plain_cls = models
    item = item_cls(
        SKU="A-1", price=Decimal("9.99"), when=dt.datetime(2024, 1, 1), where=Address("s")
    )
    for s in (_make("json"), *_optional_msgpack()):
        assert s.loads(s.dumps(item), item_cls) == item
        assert s.loads(s.dumps([item, item]), GenericAlias(list, (item_cls,))) == [item, item]
        assert s.loads(s.dumps({"k": item}), GenericAlias(dict, (str, item_cls))) == {"k": item}
        assert s.loads(s.dumps(None), item_cls | None) is None
        got = s.loads(s.dumps(Box(item)), GenericAlias(Box, (item_cls,)))
        assert type(got) is Box
        assert got.item == item
        tagged = tagged_cls("t", b"\x00\xff")
        assert s.loads(s.dumps(tagged), tagged_cls) == tagged
        plain = plain_cls("p", b"utf-8 text")  # pydantic's default bytes config, both ways
        assert s.loads(s.dumps(plain), plain_cls) == plain
        assert s.loads(s.dumps([plain]), GenericAlias(list, (plain_cls,))) == [plain]
        with pytest.raises(SerializationError):
            s.loads(s.dumps({"SKU": "A-1"}), item_cls)  # older schema: fields missing
        # a model with pydantic's default bytes config (UTF-8 text) cannot hold other bytes
        with pytest.raises(SerializationError):
            s.dumps(item.model_copy(update={"raw": b"\xff"}))
        utf8 = item.model_copy(update={"raw": b"text"})
        assert s.loads(s.dumps(utf8), item_cls) == utf8


def test_the_stdlib_engine_validates_pydantic_models_by_their_own_config(models: Any) -> None:
    item_cls, tagged_cls, _ = models
    item = item_cls(
        SKU="A-1", price=Decimal("9.99"), when=dt.datetime(2024, 1, 1), where=Address("s")
    )
    stdlib, lax = JsonSerializer(decoder="stdlib"), JsonSerializer(decoder="pydantic")
    for s in (stdlib, lax):
        assert s.loads(s.dumps(Box(item)), GenericAlias(Box, (item_cls,))).item == item
        assert s.loads(s.dumps(tagged_cls("t", b"\xff")), tagged_cls) == tagged_cls("t", b"\xff")
        with pytest.raises(SerializationError):
            s.loads(s.dumps({}), item_cls)
    # a model's own (lax) rules apply inside it; the strict rules around it
    with pytest.raises(SerializationError):
        stdlib.loads(stdlib.dumps(["42"]), GenericAlias(list, (int,)))
    assert lax.loads(lax.dumps(["42"]), GenericAlias(list, (int,))) == [42]


def _optional_msgpack() -> list[Serializer]:
    try:
        return [MsgpackSerializer()]
    except MissingDependency:
        return []


# ----------------------------------------------------------------------------- properties


def _json_values(max_int: int | None = None) -> st.SearchStrategy[Any]:
    ints = st.integers() if max_int is None else st.integers(-(2**63), max_int)
    scalars = st.none() | st.booleans() | ints | st.floats(allow_nan=False) | st.text()
    return st.recursive(scalars, _containers, max_leaves=25)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children) | st.dictionaries(st.text(), children)


@settings(max_examples=300, deadline=None)
@given(value=_json_values())
def test_property_json_round_trip(value: Any) -> None:
    s = JsonSerializer()
    assert s.loads(s.dumps(value)) == value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_json_values(max_int=2**64 - 1))
def test_property_msgpack_round_trip(value: Any) -> None:
    pytest.importorskip("msgpack", reason=MSGPACK_REASON)
    s = MsgpackSerializer()
    assert s.loads(s.dumps(value)) == value


@dataclasses.dataclass
class Event:
    id: uuid.UUID
    at: dt.datetime
    amount: Decimal
    payload: bytes
    tags: frozenset[str]
    level: Level
    parent: Event | None = None


_TIMEZONES: st.SearchStrategy[Any] = st.sampled_from([dt.UTC, UTC_PLUS_0530]) | st.none()
_events: st.SearchStrategy[Event] = st.deferred(
    lambda: st.builds(
        Event,
        id=st.uuids(),
        at=st.datetimes(
            min_value=dt.datetime(1000, 1, 1),
            timezones=_TIMEZONES,
        ),
        amount=st.decimals(allow_nan=False, allow_infinity=False),
        payload=st.binary(),
        tags=st.frozensets(st.text()),
        level=st.sampled_from(Level),
        parent=st.none() | _events,
    )
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_events, max_size=3))
def test_property_typed_round_trip(typed: Serializer, events: list[Event]) -> None:
    assert_same(typed.loads(typed.dumps(events), list[Event]), events)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(), prefix=st.sampled_from([b"", b"\xc1J", b"\xc1M", b"\xc1P"]))
def test_property_random_bytes_never_escape(typed: Serializer, data: bytes, prefix: bytes) -> None:
    for hint in (None, list[User], Event | None):
        try:
            typed.loads(prefix + data, hint)
        except SerializationError:
            pass


# --- bounds: depth and size, on every decode path ------------------------------------


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "serializer",
    [JsonSerializer(), JsonSerializer(decoder="pydantic")],
    ids=["json-stdlib", "json-pydantic"],
)
@pytest.mark.parametrize("hint", [None, list[Any], Any], ids=["plain", "list", "any"])
def test_json_nested_100000_deep_is_a_serialization_error(serializer: Any, hint: Any) -> None:
    with pytest.raises(SerializationError):
        serializer.loads(b"\xc1J" + _deep(100_000), hint)


@pytest.mark.parametrize("hint", [None, list[Any]], ids=["plain", "list"])
def test_msgpack_nested_100000_deep_is_a_serialization_error(hint: Any) -> None:
    pytest.importorskip("msgpack")
    with pytest.raises(SerializationError):
        MsgpackSerializer().loads(b"\xc1M" + b"\x91" * 100_000 + b"\x90", hint)


def test_moderate_nesting_still_decodes() -> None:
    value: Any = []
    for _ in range(100):
        value = [value]
    s = JsonSerializer()
    assert s.loads(s.dumps(value)) == value


def test_payload_size_is_bounded_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    import scalekit.serde._encode as encode

    monkeypatch.setattr(encode, "MAX_PAYLOAD_BYTES", 64)
    s = JsonSerializer()
    with pytest.raises(SerializationError, match="larger than 64 bytes"):
        s.dumps("x" * 100)
    with pytest.raises(SerializationError, match="larger than 64 bytes"):
        s.loads(b"\xc1J" + b'"' + b"x" * 100 + b'"')
    assert s.loads(s.dumps("x" * 10)) == "x" * 10
