"""Serializers for values that leave the process (cache entries in Redis, and so on).

Safe by default: :class:`JsonSerializer` is the default and never executes code,
:class:`MsgpackSerializer` is its compact twin (optional ``msgpack`` dependency), and
:class:`PickleSerializer` exists only for callers who explicitly accept that
unpickling bytes an attacker could write executes arbitrary code.

Every serializer implements the :class:`Serializer` protocol::

    dumps(value) -> bytes
    loads(data, type_hint=None) -> value

``loads`` raises :class:`SerializationError` (the underlying error chained as
``__cause__``) for any bytes it cannot turn into a value: garbage, truncated data,
bytes of another serializer, or a payload that does not validate against
``type_hint``. A cache treats that as a miss. Types are only ever taken from the
``type_hint`` the caller passes (for example a cached function's resolved return
annotation such as ``list[User]`` or ``User | None``), never from names inside the
payload.

Envelope
--------
Every payload starts with two bytes, ``0xC1`` and a format id::

    0xC1 'J' <UTF-8 JSON>        JSON, conversion rules v1
    0xC1 'M' <msgpack>           msgpack, conversion rules v1
    0xC1 'P' <pickle protocol 5> pickle v1

``0xC1`` cannot start UTF-8 text (so no JSON document), is the one byte the msgpack
spec marks "never used", and is not a pickle opcode, so foreign bytes are recognised
before any decoder looks at them. An incompatible change to a format's encoding gets
a new id, so entries written by older code fail with ``SerializationError`` instead
of being misread.

Conversion rules (JSON and msgpack share them)
----------------------------------------------
``dumps`` turns values into JSON-able primitives:

=========================================  ==========================================
value                                      encoded as
=========================================  ==========================================
None, bool, int, float, str                themselves (JSON: NaN and ±Infinity as the
                                           ``NaN``/``Infinity`` literals)
list, tuple (incl. NamedTuple)             array
set, frozenset                             array (sorted when the items allow it)
dict (keys: str, int, float, bool, None)   object (JSON turns non-str keys into str)
dataclass instance                         object of its fields, recursively
pydantic v2 model / pydantic dataclass     ``model_dump(mode="json", by_alias=True,
                                           round_trip=True)`` (the model's own config)
Enum member                                its value
datetime, date, time                       ISO 8601 string (``isoformat()``)
UUID                                       canonical string
Decimal                                    ``str(d)``
bytes, bytearray, memoryview               base64 string (msgpack: native ``bin``)
=========================================  ==========================================

Anything else makes ``dumps`` raise :class:`SerializationError`.

``loads(data)`` without a type hint returns the plain values (dicts, lists, str, ...).
``loads(data, type_hint)`` rebuilds typed values with the engine chosen at
construction, ``decoder="stdlib"`` (the default) or ``decoder="pydantic"``. The choice
is explicit and never depends on what happens to be importable, so two processes of
one fleet never decode the same entry differently (``"42"`` for ``int`` is refused by
the default engine in every process, whether or not pydantic is installed):

* ``decoder="pydantic"`` (needs pydantic >= 2.9, ``MissingDependency`` otherwise):
  ``pydantic.TypeAdapter`` validation of the payload in JSON mode, lax (pydantic's
  default rules: e.g. ``"42"`` is accepted for ``int``, unknown keys of a dataclass are
  ignored). One adapter is built per hint and cached. Stdlib dataclasses and bare
  ``bytes`` read base64, as written; pydantic models and pydantic dataclasses use
  their own config both ways (pydantic's default writes bytes as UTF-8 text, so
  non-UTF-8 bytes in a model fail at ``dumps`` unless the model sets
  ``ser_json_bytes="base64", val_json_bytes="base64"``). A hint pydantic refuses
  (e.g. ``typing.TypedDict`` on Python < 3.12) is rebuilt by the stdlib engine.
  pydantic refuses ``Decimal`` infinities and NaN by default (the stdlib path keeps them).
* ``decoder="stdlib"`` (the default), the standard-library rebuild: dataclasses (recursively, from
  ``typing.get_type_hints``; unknown or missing fields are errors), ``X | None`` and
  other unions, ``Literal``, ``list``/``set``/``frozenset``/``tuple``/``dict`` (and their
  ``collections.abc`` counterparts), TypedDict, NamedTuple, ``NewType``, ``Annotated``
  (metadata ignored), Enum, datetime/date/time, UUID, Decimal, bytes. It is strict:
  JSON types must match exactly (an int is accepted for ``float``), and a hint it
  cannot rebuild exactly (any other class) raises ``SerializationError``. A pydantic
  model or pydantic dataclass met on the way is validated by its own config (only a
  process that imported pydantic can name one).

Bounds
------
Every ``loads`` refuses (``SerializationError``) a payload larger than
:data:`MAX_PAYLOAD_BYTES` (64 MiB; ``dumps`` refuses to write one), and nesting deeper
than its decoder's bound: JSON, the interpreter's recursion limit (1,000 by default;
pydantic's JSON parser stops at 200), msgpack 1,024 levels. A payload nested
100,000 levels deep is therefore a ``SerializationError`` in microseconds, never a
``RecursionError`` or a crash; the stdlib reconstruction of a recursive type is
bounded the same way.

Known losses: a tz-aware datetime comes back with a fixed UTC offset (the zone name is
not stored); a set without a hint comes back as a list; JSON object keys come back as
str unless the hint says otherwise; msgpack writes tuple dict keys but cannot read them
back (``loads`` raises). String annotations (forward references) must be resolved by
the caller, e.g. with ``typing.get_type_hints``.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime as dt
import enum
import functools
import importlib
import json
import pickle
import re
import sys
import types
import typing
import uuid
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

from scalekit.errors import ConfigurationError, MissingDependency, SerializationError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "get_serializer",
]


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back.

    ``loads`` must raise :class:`SerializationError` for any input it cannot decode
    (never another exception type), and must take types only from ``type_hint``.
    """

    @property
    def name(self) -> str:
        """Short identifier, e.g. ``"json"``."""
        ...

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; :class:`SerializationError` if it is not supported."""
        ...

    def loads(self, data: bytes, type_hint: Any = None) -> Any:
        """Decode ``data``, rebuilt as ``type_hint`` when one is given."""
        ...


# --------------------------------------------------------------------------- envelope

#: the largest payload any serializer writes or reads (bytes, envelope included)
MAX_PAYLOAD_BYTES: Final = 64 * 2**20

_MARKER: Final = 0xC1
_JSON_ID: Final = ord("J")
_MSGPACK_ID: Final = ord("M")
_PICKLE_ID: Final = ord("P")
_FORMAT_NAMES: Final[dict[int, str]] = {
    _JSON_ID: "json",
    _MSGPACK_ID: "msgpack",
    _PICKLE_ID: "pickle",
}


def _open_envelope(data: object, format_id: int, name: str) -> memoryview:
    """The body of ``data`` if it carries ``format_id``'s envelope, else raise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        hint = (
            " (is the Redis client created with decode_responses=True?)"
            if isinstance(data, str)
            else ""
        )
        raise SerializationError(
            f"the {name} serializer reads bytes, got {type(data).__name__}{hint}"
        )
    view = memoryview(data).cast("B")
    if len(view) > MAX_PAYLOAD_BYTES:
        raise SerializationError(
            f"{name} payload of {len(view)} bytes is larger than {MAX_PAYLOAD_BYTES} bytes"
        )
    if len(view) >= 2 and view[0] == _MARKER:
        if view[1] == format_id:
            return view[2:]
        other = _FORMAT_NAMES.get(view[1])
        if other is not None:
            raise SerializationError(
                f"payload was written by the {other!r} serializer, this is {name!r}"
            )
        raise SerializationError(
            f"unknown scalekit payload format id 0x{view[1]:02X} "
            "(written by another version of scalekit?)"
        )
    raise SerializationError(
        f"not a scalekit {name} payload ({len(view)} bytes without the 0xC1 envelope marker)"
    )


# ------------------------------------------------------------ value -> JSON primitives


def _sealed(format_id: int, body: bytes, name: str) -> bytes:
    """``body`` in its envelope, refused beyond :data:`MAX_PAYLOAD_BYTES`."""
    if len(body) + 2 > MAX_PAYLOAD_BYTES:
        raise SerializationError(
            f"{name} payload of {len(body) + 2} bytes is larger than {MAX_PAYLOAD_BYTES} bytes"
        )
    return bytes((_MARKER, format_id)) + body


def _to_primitive(obj: Any) -> Any:
    """``default`` hook of the JSON and msgpack encoders: one level of conversion.

    The encoder calls it for every object it cannot encode natively and encodes the
    result again, so nested values are converted on the way. The converter is chosen
    once per type.
    """
    cls = type(obj)
    convert = _converters.get(cls)
    if convert is None:
        convert = _converter_for(cls)
        if len(_converters) >= 4096:  # dynamically created classes: stay bounded
            _converters.clear()
        _converters[cls] = convert
    return convert(obj)


_Converter = Callable[[Any], Any]
_converters: Final[dict[type, _Converter]] = {}


def _converter_for(cls: type) -> _Converter:
    if issubclass(cls, enum.Enum):
        return _enum_value
    if "pydantic" in sys.modules:  # a pydantic object implies pydantic was imported
        pydantic: Any = sys.modules["pydantic"]
        if issubclass(cls, pydantic.BaseModel):
            return _dump_model
        if dataclasses.is_dataclass(cls) and "__pydantic_serializer__" in cls.__dict__:
            return _dump_pydantic_dataclass
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
        return lambda obj: {name: getattr(obj, name) for name in names}
    if issubclass(cls, (dt.date, dt.time)):  # datetime is a date
        return _isoformat
    if issubclass(cls, (uuid.UUID, Decimal)):
        return str
    if issubclass(cls, (bytes, bytearray, memoryview)):
        return _base64
    if issubclass(cls, (set, frozenset)):
        return _set_items
    if issubclass(cls, collections.abc.Mapping):
        return dict

    def unsupported(obj: Any) -> Any:
        raise TypeError(
            f"cannot serialize a {cls.__module__}.{cls.__qualname__}; supported: JSON "
            "values, tuples, sets, dataclasses, pydantic models, Enum, datetime, date, "
            "time, UUID, Decimal, bytes"
        )

    return unsupported


def _enum_value(obj: Any) -> Any:
    return obj.value


def _dump_model(obj: Any) -> Any:
    return obj.model_dump(mode="json", by_alias=True, round_trip=True)


def _dump_pydantic_dataclass(obj: Any) -> Any:
    return type(obj).__pydantic_serializer__.to_python(
        obj, mode="json", by_alias=True, round_trip=True
    )


def _isoformat(obj: Any) -> str:
    return str(obj.isoformat())


def _base64(obj: Any) -> str:
    return base64.b64encode(obj).decode("ascii")


def _set_items(obj: Any) -> list[Any]:
    try:
        return sorted(obj)
    except TypeError:
        return list(obj)


_JSON_ENCODER: Final = json.JSONEncoder(
    default=_to_primitive, separators=(",", ":"), ensure_ascii=False
)


def _json_bytes(value: Any) -> bytes:
    return _JSON_ENCODER.encode(value).encode("utf-8")


# ---------------------------------------------------------------- pydantic validation

_PYDANTIC_MIN: Final = (2, 9)  # ConfigDict(val_json_bytes=...) appeared in 2.9


@functools.cache
def _pydantic() -> Any:
    """The pydantic module if a usable version is importable, else ``None`` (cached)."""
    try:
        module = importlib.import_module("pydantic")
    except ImportError:
        return None
    match = re.match(r"(\d+)\.(\d+)", str(getattr(module, "VERSION", "")))
    if match is None or (int(match[1]), int(match[2])) < _PYDANTIC_MIN:
        return None
    return module


@dataclasses.dataclass(frozen=True)
class _Refused:
    """Cached answer "pydantic cannot validate this hint" (message and pydantic's error)."""

    message: str
    cause: Exception


def _make_adapter(type_hint: Any) -> Any:
    """A ``TypeAdapter`` for ``type_hint``, or a :class:`_Refused` saying why not."""
    pydantic = _pydantic()
    # Wrapped in a list: TypeAdapter refuses a config for a dataclass/model/TypedDict
    # hint, and the config (base64 bytes, as written by _to_primitive) must reach
    # stdlib dataclasses. Models keep their own config, matching their model_dump.
    config = pydantic.ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    try:
        return pydantic.TypeAdapter(list[type_hint], config=config)
    except Exception as exc:
        return _Refused(f"pydantic cannot validate the type hint {type_hint!r}: {exc}", exc)


_cached_adapter: Final = functools.lru_cache(maxsize=512)(_make_adapter)


def _adapter(type_hint: Any) -> Any:
    try:
        hash(type_hint)
    except TypeError:
        return _make_adapter(type_hint)
    return _cached_adapter(type_hint)


#: the typed-decoding engines (see the module docstring); the default is the first
Decoder: TypeAlias = Literal["stdlib", "pydantic"]
DECODERS: Final = ("stdlib", "pydantic")


def _engine(decoder: str, use_pydantic: bool | None, feature: str) -> str:
    """The engine a serializer is built with: ``decoder``, or the deprecated
    ``use_pydantic`` spelling; ``"pydantic"`` needs pydantic >= 2.9 installed."""
    if use_pydantic is not None:
        warnings.warn(
            "use_pydantic= is deprecated: pass decoder='pydantic' or decoder='stdlib' "
            "(the default)",
            DeprecationWarning,
            stacklevel=3,
        )
        decoder = "pydantic" if use_pydantic else "stdlib"
    if decoder not in DECODERS:
        raise ConfigurationError(
            f"decoder must be one of {DECODERS!r} (typed loads: the standard-library "
            f"rebuild, strict, or pydantic's validation, lax), got {decoder!r}"
        )
    if decoder == "pydantic" and _pydantic() is None:
        raise MissingDependency(f"{feature} (pydantic >= 2.9)", "pydantic", "pydantic")
    return decoder


def _validator(engine: str, type_hint: Any) -> tuple[Any, _Decoder]:
    """``(adapter, _identity)`` to validate with pydantic, or ``(None, stdlib decoder)``.

    The engine is the serializer's, chosen at construction, so every process decodes
    an entry the same way. With ``"pydantic"``, a hint pydantic refuses (e.g.
    ``typing.TypedDict`` on Python < 3.12) is rebuilt by the stdlib engine when that
    supports it (the same answer in every process with the same versions).
    """
    if engine == "stdlib":
        return None, _decoder(type_hint)
    adapter = _adapter(type_hint)
    if not isinstance(adapter, _Refused):
        return adapter, _identity
    try:
        return None, _decoder(type_hint)
    except SerializationError:
        pass
    raise SerializationError(adapter.message) from adapter.cause


def _validate_json(adapter: Any, body: bytes | memoryview) -> Any:
    # "[" + body + "]" holds exactly one item only if body is exactly one JSON value
    items = adapter.validate_json(b"".join((b"[", body, b"]")))
    if len(items) != 1:
        raise SerializationError(f"payload holds {len(items)} JSON values, expected one")
    return items[0]


# --------------------------------------------------------- stdlib reconstruction layer

_Decoder = Callable[[Any], Any]


class _Mismatch(Exception):
    """A payload node does not fit its hint; ``path`` is filled in while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def where(self) -> str:
        return "$" + "".join(reversed(self.path))


_KINDS: Final[dict[type, str]] = {dict: "an object", list: "an array", str: "a string"}


def _kind(obj: Any) -> str:
    return _KINDS.get(type(obj), type(obj).__name__)


def _identity(obj: Any) -> Any:
    return obj


def _decode_none(obj: Any) -> None:
    if obj is not None:
        raise _Mismatch(f"expected null, got {_kind(obj)}")


def _exact(cls: type) -> _Decoder:
    def decode(obj: Any) -> Any:
        if type(obj) is cls:
            return obj
        raise _Mismatch(f"expected {cls.__name__}, got {_kind(obj)}")

    return decode


def _decode_float(obj: Any) -> float:
    if type(obj) is float:
        return obj
    if type(obj) is int:
        return float(obj)
    raise _Mismatch(f"expected a number, got {_kind(obj)}")


def _from_string(cls: type, parse: Callable[[str], Any]) -> _Decoder:
    def decode(obj: Any) -> Any:
        if type(obj) is not str:
            raise _Mismatch(f"expected a {cls.__name__} string, got {_kind(obj)}")
        try:
            return parse(obj)
        except (ValueError, ArithmeticError) as exc:
            raise _Mismatch(f"invalid {cls.__name__} {obj!r}: {exc}") from exc

    return decode


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _bytes_decoder(cls: type) -> _Decoder:
    from_text = _from_string(cls, _b64decode)

    def decode(obj: Any) -> Any:
        raw = obj if type(obj) is bytes else from_text(obj)  # msgpack stores bytes natively
        return raw if cls is bytes else bytearray(raw)

    return decode


_SCALARS: Final[dict[Any, _Decoder]] = {
    bool: _exact(bool),
    int: _exact(int),
    str: _exact(str),
    float: _decode_float,
    types.NoneType: _decode_none,
    dt.datetime: _from_string(dt.datetime, dt.datetime.fromisoformat),
    dt.date: _from_string(dt.date, dt.date.fromisoformat),
    dt.time: _from_string(dt.time, dt.time.fromisoformat),
    uuid.UUID: _from_string(uuid.UUID, uuid.UUID),
    Decimal: _from_string(Decimal, Decimal),
    bytes: _bytes_decoder(bytes),
    bytearray: _bytes_decoder(bytearray),
}

_LISTS: Final = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_SETS: Final = (set, collections.abc.Set, collections.abc.MutableSet)
_DICTS: Final = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_JSON_NATIVE: Final = (bool, int, float, str)


def _json_key(value: Any) -> Any:
    """How the json module writes ``value`` as an object key (msgpack keeps it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, int):
        return int.__repr__(value)
    return value


class _Compiler:
    """Turns a type hint into a decoder once; recursive dataclasses are supported."""

    def __init__(self) -> None:
        self._memo: dict[Any, _Decoder] = {}

    def build(self, hint: Any) -> _Decoder:
        if hint is Any or hint is object:
            return _identity
        if hint is None:
            return _decode_none
        if isinstance(hint, (str, typing.ForwardRef)):
            raise SerializationError(
                f"type hint {hint!r} is a string annotation; resolve it first "
                "(typing.get_type_hints)"
            )
        if isinstance(hint, typing.TypeVar):
            return _identity  # unbound: the caller did not say
        if isinstance(hint, typing.NewType):
            return self.build(hint.__supertype__)
        try:
            scalar = _SCALARS.get(hint)
        except TypeError:  # unhashable hint
            scalar = None
        if scalar is not None:
            return scalar
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Annotated:
            return self.build(args[0])
        if origin is typing.Union or origin is types.UnionType:
            return self._union(args)
        if origin is typing.Literal:
            return self._literal(args)
        if origin is None and isinstance(hint, type):
            origin, args = hint, ()
        if origin in _LISTS:
            return self._list(args[0] if args else Any)
        if origin in _SETS or origin is frozenset:
            return self._set(args[0] if args else Any, frozenset if origin is frozenset else set)
        if origin is tuple:
            return self._tuple(args)
        if origin in _DICTS:
            return self._dict(*(args or (Any, Any)))
        if isinstance(origin, type):
            if issubclass(origin, enum.Enum):
                return self._enum(origin)
            if _is_pydantic_type(origin):
                return _own_validation(hint, origin)
            if dataclasses.is_dataclass(origin):
                return self._dataclass(hint, origin, args)
            if typing.is_typeddict(origin):
                return self._typeddict(origin)
            if issubclass(origin, tuple) and hasattr(origin, "_fields"):
                return self._namedtuple(origin)
        raise SerializationError(
            f"cannot rebuild values of type {hint!r} without pydantic; supported: "
            "dataclasses, TypedDict, NamedTuple, containers, unions, Literal, Enum, "
            "datetime, date, time, UUID, Decimal, bytes and JSON scalars"
        )

    def _list(self, item_hint: Any) -> _Decoder:
        item = self.build(item_hint)

        def decode(obj: Any) -> list[Any]:
            if type(obj) is not list:
                raise _Mismatch(f"expected an array, got {_kind(obj)}")
            if item is _identity:
                return obj
            out = []
            for i, x in enumerate(obj):
                try:
                    out.append(item(x))
                except _Mismatch as m:
                    m.path.append(f"[{i}]")
                    raise
            return out

        return decode

    def _set(self, item_hint: Any, kind: type[set[Any]] | type[frozenset[Any]]) -> _Decoder:
        items = self._list(item_hint)

        def decode(obj: Any) -> Any:
            try:
                return kind(items(obj))
            except TypeError as exc:
                raise _Mismatch(f"unhashable set item: {exc}") from exc

        return decode

    def _tuple(self, args: tuple[Any, ...]) -> _Decoder:
        if not args:
            return self._homogeneous_tuple(Any)
        if len(args) == 2 and args[1] is Ellipsis:
            return self._homogeneous_tuple(args[0])
        if args == ((),):  # tuple[()] on older spellings
            args = ()
        items = [self.build(a) for a in args]

        def decode(obj: Any) -> tuple[Any, ...]:
            if type(obj) is not list or len(obj) != len(items):
                raise _Mismatch(f"expected an array of {len(items)} items, got {_kind(obj)}")
            out = []
            for i, (item, x) in enumerate(zip(items, obj, strict=True)):
                try:
                    out.append(item(x))
                except _Mismatch as m:
                    m.path.append(f"[{i}]")
                    raise
            return tuple(out)

        return decode

    def _homogeneous_tuple(self, item_hint: Any) -> _Decoder:
        items = self._list(item_hint)
        return lambda obj: tuple(items(obj))

    def _dict(self, key_hint: Any, value_hint: Any) -> _Decoder:
        key = self._key(key_hint)
        value = self.build(value_hint)

        def decode(obj: Any) -> dict[Any, Any]:
            if type(obj) is not dict:
                raise _Mismatch(f"expected an object, got {_kind(obj)}")
            if key is _identity and value is _identity:
                return obj
            out = {}
            for k, v in obj.items():
                try:
                    out[key(k)] = value(v)
                except _Mismatch as m:
                    m.path.append(f"[{k!r}]")
                    raise
            return out

        return decode

    def _key(self, hint: Any) -> _Decoder:
        """Decoder of object keys: JSON writes int/float/bool/None keys as strings."""
        while isinstance(hint, typing.NewType) or typing.get_origin(hint) is typing.Annotated:
            hint = hint.__supertype__ if isinstance(hint, typing.NewType) else hint.__origin__
        if hint in (int, float, bool, None, types.NoneType):
            values = self.build(hint)

            def decode(k: Any) -> Any:
                if type(k) is str:
                    if hint is int and re.fullmatch(r"-?[0-9]+", k):
                        return int(k)
                    if hint is float:
                        try:
                            return float(k)
                        except ValueError:
                            pass
                    for candidate in (True, False, None):
                        if k == _json_key(candidate):
                            return values(candidate)
                return values(k)

            return decode
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            by_key = {_json_key(m.value): m for m in hint}
            members = self._enum(hint)

            def decode_enum(k: Any) -> Any:
                try:
                    member = by_key.get(k)
                except TypeError:
                    member = None
                return member if member is not None else members(k)

            return decode_enum
        return self.build(hint)

    def _union(self, args: tuple[Any, ...]) -> _Decoder:
        nullable = types.NoneType in args
        members = [a for a in args if a is not types.NoneType]
        decoders = [self.build(a) for a in members]
        if len(decoders) == 1:
            only = decoders[0]
            return lambda obj: None if obj is None else only(obj)
        native = frozenset(a for a in members if a in _JSON_NATIVE)

        def decode(obj: Any) -> Any:
            if obj is None and nullable:
                return None
            if type(obj) in native:  # exact JSON type first: 1 stays int in int | float
                return obj
            results, errors = [], []
            for d in decoders:
                try:
                    results.append(d(obj))
                except _Mismatch as m:
                    errors.append(f"{m.where()}: {m.message}")
            if not results:
                raise _Mismatch(f"matches no member of the union ({'; '.join(errors)})")
            if len({type(r) for r in results}) > 1 and isinstance(obj, (dict, list)):
                names = ", ".join(sorted({type(r).__qualname__ for r in results}))
                raise _Mismatch(f"ambiguous: the value fits several union members ({names})")
            return results[0]

        return decode

    def _literal(self, args: tuple[Any, ...]) -> _Decoder:
        def decode(obj: Any) -> Any:
            for lit in args:
                raw = lit.value if isinstance(lit, enum.Enum) else lit
                if type(raw) is type(obj) and raw == obj:
                    return lit
            raise _Mismatch(f"expected one of {list(args)!r}, got {obj!r}")

        return decode

    def _enum(self, cls: type[enum.Enum]) -> _Decoder:
        def decode(obj: Any) -> Any:
            if isinstance(obj, bool) and not any(isinstance(m.value, bool) for m in cls):
                raise _Mismatch(f"expected a {cls.__qualname__} value, got {obj!r}")
            try:
                return cls(obj)
            except (ValueError, TypeError) as exc:
                raise _Mismatch(f"{obj!r} is not a valid {cls.__qualname__}") from exc

        return decode

    def _memo_get(self, hint: Any) -> _Decoder | None:
        try:
            return self._memo.get(hint)
        except TypeError:
            return None

    def _memo_set(self, hint: Any, decoder: _Decoder) -> None:
        try:
            self._memo[hint] = decoder
        except TypeError:
            pass

    def _dataclass(self, hint: Any, cls: type, args: tuple[Any, ...]) -> _Decoder:
        known = self._memo_get(hint)
        if known is not None:
            return known
        cell: list[_Decoder] = []
        self._memo_set(hint, lambda obj: cell[0](obj))  # recursion: fields of its own type
        type_vars = dict(zip(getattr(cls, "__parameters__", ()), args, strict=False))
        hints = _type_hints(cls)
        specs = []
        for f in dataclasses.fields(cls):
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            field_hint = _substitute(hints.get(f.name, Any), type_vars)
            specs.append((f.name, f.init, has_default, self.build(field_hint)))
        names = frozenset(spec[0] for spec in specs)
        qualname = cls.__qualname__

        def decode(obj: Any) -> Any:
            if type(obj) is not dict:
                raise _Mismatch(f"expected an object for {qualname}, got {_kind(obj)}")
            unknown = obj.keys() - names
            if unknown:
                raise _Mismatch(f"unknown field(s) {sorted(map(repr, unknown))} for {qualname}")
            kwargs = {}
            for name, init, has_default, field in specs:
                if not init:
                    continue  # rebuilt by __init__/__post_init__
                if name in obj:
                    try:
                        kwargs[name] = field(obj[name])
                    except _Mismatch as m:
                        m.path.append(f".{name}")
                        raise
                elif not has_default:
                    raise _Mismatch(f"missing field {name!r} of {qualname}")
            try:
                return cls(**kwargs)
            except Exception as exc:
                raise _Mismatch(f"{qualname}(...) raised {type(exc).__name__}: {exc}") from exc

        cell.append(decode)
        self._memo_set(hint, decode)
        return decode

    def _typeddict(self, cls: type) -> _Decoder:
        fields = {name: self.build(h) for name, h in _type_hints(cls).items()}
        required: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
        qualname = cls.__qualname__

        def decode(obj: Any) -> dict[str, Any]:
            if type(obj) is not dict:
                raise _Mismatch(f"expected an object for {qualname}, got {_kind(obj)}")
            unknown = obj.keys() - fields.keys()
            if unknown:
                raise _Mismatch(f"unknown key(s) {sorted(map(repr, unknown))} for {qualname}")
            missing = required - obj.keys()
            if missing:
                raise _Mismatch(f"missing key(s) {sorted(missing)} of {qualname}")
            out = {}
            for k, v in obj.items():
                try:
                    out[k] = fields[k](v)
                except _Mismatch as m:
                    m.path.append(f".{k}")
                    raise
            return out

        return decode

    def _namedtuple(self, cls: type) -> _Decoder:
        hints = _type_hints(cls)
        names: tuple[str, ...] = cls._fields  # type: ignore[attr-defined]
        items = [self.build(hints.get(n, Any)) for n in names]
        required = len(names) - len(getattr(cls, "_field_defaults", {}))
        qualname = cls.__qualname__

        def decode(obj: Any) -> Any:
            if type(obj) is not list or not required <= len(obj) <= len(names):
                raise _Mismatch(f"expected an array for {qualname}, got {_kind(obj)}")
            out = []
            for name, item, x in zip(names, items, obj, strict=False):
                try:
                    out.append(item(x))
                except _Mismatch as m:
                    m.path.append(f".{name}")
                    raise
            return cls(*out)

        return decode


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:
        raise SerializationError(
            f"cannot resolve the annotations of {cls.__qualname__}: {type(exc).__name__}: {exc}"
        ) from exc


def _substitute(hint: Any, type_vars: dict[Any, Any]) -> Any:
    """``hint`` with the type variables of a generic dataclass replaced by its args."""
    if not type_vars:
        return hint
    if isinstance(hint, typing.TypeVar):
        return type_vars.get(hint, Any)
    params = getattr(hint, "__parameters__", ())
    if params:
        return hint[tuple(type_vars.get(p, Any) for p in params)]
    return hint


def _is_pydantic_type(cls: type) -> bool:
    return "pydantic" in sys.modules and hasattr(cls, "__pydantic_validator__")


def _own_validation(hint: Any, cls: type) -> _Decoder:
    """A pydantic model or pydantic dataclass inside a stdlib rebuild: validated by
    its own config (JSON mode, as ``dumps`` wrote it). Only a process that imported
    the class can ask for it, so this answers the same in every process."""
    pydantic = _pydantic()
    if pydantic is None:
        raise SerializationError(
            f"rebuilding the pydantic type {cls.__qualname__} needs pydantic >= 2.9"
        )
    adapter = pydantic.TypeAdapter(hint)

    def decode(obj: Any) -> Any:
        try:
            return adapter.validate_json(_json_bytes(obj))
        except Exception as exc:
            raise _Mismatch(f"{cls.__qualname__}: {exc}") from exc

    return decode


def _compile(type_hint: Any) -> _Decoder:
    return _Compiler().build(type_hint)


_cached_compile: Final = functools.lru_cache(maxsize=512)(_compile)


def _decoder(type_hint: Any) -> _Decoder:
    try:
        hash(type_hint)
    except TypeError:
        return _compile(type_hint)
    return _cached_compile(type_hint)


def _rebuild(decoder: _Decoder, obj: Any, type_hint: Any) -> Any:
    try:
        return decoder(obj)
    except _Mismatch as m:
        raise SerializationError(
            f"payload does not match {type_hint!r} at {m.where()}: {m.message}"
        ) from m


def _decode_error(name: str, exc: Exception) -> SerializationError:
    return SerializationError(f"{name} payload cannot be decoded: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------- serializers


class JsonSerializer:
    """UTF-8 JSON with compact separators; the default serializer.

    ``decoder``: the engine of typed loads, fixed at construction so that every
    process of a fleet decodes an entry the same way whether or not pydantic happens
    to be importable: ``"stdlib"`` (default: the strict standard-library rebuild;
    pydantic models and dataclasses inside it use their own validation) or
    ``"pydantic"`` (``TypeAdapter`` validation, lax; ``MissingDependency`` without
    pydantic >= 2.9). ``use_pydantic=True/False`` is the deprecated spelling.
    """

    __slots__ = ("decoder",)
    name: Final = "json"

    def __init__(self, *, decoder: Decoder = "stdlib", use_pydantic: bool | None = None) -> None:
        self.decoder = _engine(decoder, use_pydantic, "typed JSON loading (decoder='pydantic')")

    def __repr__(self) -> str:
        return f"JsonSerializer(decoder={self.decoder!r})"

    def dumps(self, value: Any) -> bytes:
        try:
            body = _json_bytes(value)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {type(value).__name__} as JSON: {exc}"
            ) from exc
        return _sealed(_JSON_ID, body, self.name)

    def loads(self, data: bytes, type_hint: Any = None) -> Any:
        try:
            body = _open_envelope(data, _JSON_ID, self.name)
            if type_hint is None:
                return json.loads(str(body, "utf-8"))
            adapter, decoder = _validator(self.decoder, type_hint)
            if adapter is not None:
                return _validate_json(adapter, body)
            return _rebuild(decoder, json.loads(str(body, "utf-8")), type_hint)
        except SerializationError:
            raise
        except Exception as exc:
            raise _decode_error(self.name, exc) from exc


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of scalekit's format")


def _check_plain(obj: Any) -> None:
    """Raise unless ``obj`` holds only what scalekit's msgpack format writes."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif item is not None and type(item) not in (bool, int, float, str, bytes):
            raise ValueError(f"unexpected {type(item).__name__} in a msgpack payload")


class MsgpackSerializer:
    """msgpack (optional dependency) over the same conversion rules as JSON.

    bytes are stored natively (msgpack ``bin``); integers must fit in 64 bits. Typed
    loads use the engine named by ``decoder``, exactly like :class:`JsonSerializer`.
    """

    __slots__ = ("_msgpack", "decoder")
    name: Final = "msgpack"

    def __init__(self, *, decoder: Decoder = "stdlib", use_pydantic: bool | None = None) -> None:
        self.decoder = _engine(decoder, use_pydantic, "typed msgpack loading (decoder='pydantic')")
        try:
            self._msgpack: Any = importlib.import_module("msgpack")
        except ImportError as exc:
            raise MissingDependency("msgpack serialization", "msgpack", "msgpack") from exc

    def __repr__(self) -> str:
        return f"MsgpackSerializer(decoder={self.decoder!r})"

    def dumps(self, value: Any) -> bytes:
        try:
            body: bytes = self._msgpack.packb(value, default=_to_primitive, use_bin_type=True)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {type(value).__name__} as msgpack: {exc}"
            ) from exc
        return _sealed(_MSGPACK_ID, body, self.name)

    def loads(self, data: bytes, type_hint: Any = None) -> Any:
        try:
            body = _open_envelope(data, _MSGPACK_ID, self.name)
            obj = self._msgpack.unpackb(
                body, raw=False, strict_map_key=False, ext_hook=_reject_ext, timestamp=0
            )
            if type_hint is None:
                _check_plain(obj)
                return obj
            adapter, decoder = _validator(self.decoder, type_hint)
            if adapter is not None:
                # one validation path for both formats: back through the JSON encoding
                return _validate_json(adapter, _json_bytes(obj))
            return _rebuild(decoder, obj, type_hint)
        except SerializationError:
            raise
        except Exception as exc:
            raise _decode_error(self.name, exc) from exc


class PickleSerializer:
    """pickle (protocol 5). Opt-in only: **unpickling executes code**.

    Anyone who can write the bytes this serializer reads (a shared Redis, a
    compromised or misconfigured peer) can run arbitrary code in your process, because
    a pickle names callables that ``loads`` calls. The envelope check does not help
    against that: an attacker writes the envelope too. Use it only for data that no one
    else can write, and pass ``i_understand_pickle_executes_code=True`` to say so.
    ``type_hint`` is ignored: pickle restores the types named in the payload.
    """

    __slots__ = ()
    name: Final = "pickle"
    protocol: Final = 5

    def __init__(self, *, i_understand_pickle_executes_code: bool = False) -> None:
        if i_understand_pickle_executes_code is not True:
            raise ConfigurationError(
                "PickleSerializer refused: unpickling bytes that someone else could write "
                "(e.g. a shared Redis) executes arbitrary code. Use the default 'json' "
                "serializer (or 'msgpack'); if every writer is trusted, pass "
                "PickleSerializer(i_understand_pickle_executes_code=True)"
            )

    def __repr__(self) -> str:
        return "PickleSerializer(i_understand_pickle_executes_code=True)"

    def dumps(self, value: Any) -> bytes:
        try:
            body = pickle.dumps(value, protocol=self.protocol)
        except Exception as exc:
            raise SerializationError(
                f"cannot pickle {type(value).__name__}: {type(exc).__name__}: {exc}"
            ) from exc
        return _sealed(_PICKLE_ID, body, self.name)

    def loads(self, data: bytes, type_hint: Any = None) -> Any:
        try:
            body = _open_envelope(data, _PICKLE_ID, self.name)
            return pickle.loads(body)
        except SerializationError:
            raise
        except Exception as exc:
            raise _decode_error(self.name, exc) from exc


_ALLOWED: Final = "'json' (default), 'msgpack', 'pickle' (needs allow_pickle=True)"


def get_serializer(spec: str | Serializer = "json", *, allow_pickle: bool = False) -> Serializer:
    """The serializer named by ``spec``, or ``spec`` itself if it is a serializer.

    ``"json"`` (default) and ``"msgpack"`` (needs the optional ``msgpack`` package) are
    safe; ``"pickle"`` raises :class:`~scalekit.errors.ConfigurationError` unless
    ``allow_pickle=True``, because unpickling attacker-written bytes executes code.
    """
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name == "json":
            return JsonSerializer()
        if name == "msgpack":
            return MsgpackSerializer()
        if name == "pickle":
            if not allow_pickle:
                raise ConfigurationError(
                    "serializer 'pickle' refused: unpickling bytes that someone else could "
                    "write executes arbitrary code; pass allow_pickle=True only if every "
                    "writer is trusted, or use 'json' / 'msgpack'"
                )
            return PickleSerializer(i_understand_pickle_executes_code=True)
        raise ConfigurationError(
            f"unknown serializer {spec!r}; allowed: {_ALLOWED}, or a Serializer instance"
        )
    if isinstance(spec, Serializer):
        return spec
    raise ConfigurationError(
        f"serializer must be a name ({_ALLOWED}) or a Serializer instance, "
        f"got {type(spec).__name__}"
    )
