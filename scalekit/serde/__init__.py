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

import importlib
import json
import pickle
from typing import Any, Final, Protocol, runtime_checkable

from scalekit.errors import ConfigurationError, MissingDependency, SerializationError
from scalekit.serde._encode import (
    _JSON_ID,
    _MSGPACK_ID,
    _PICKLE_ID,
    _json_bytes,
    _open_envelope,
    _sealed,
    _to_primitive,
)
from scalekit.serde._encode import (
    MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES,
)
from scalekit.serde._typed import DECODERS as DECODERS
from scalekit.serde._typed import (
    Decoder,
    _decode_error,
    _engine,
    _rebuild,
    _validate_json,
    _validator,
)

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
