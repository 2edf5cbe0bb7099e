"""The envelope and the conversion of values to JSON primitives (see :mod:`scalekit.serde`)."""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime as dt
import enum
import json
import sys
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from scalekit.errors import SerializationError

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
