"""Typed loads: the two decoding engines, pydantic's and the standard-library rebuild
(see :mod:`scalekit.serde`)."""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime as dt
import enum
import functools
import importlib
import re
import sys
import types
import typing
import uuid
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, Literal, TypeAlias

from scalekit.errors import ConfigurationError, MissingDependency, SerializationError
from scalekit.serde._encode import _json_bytes

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
