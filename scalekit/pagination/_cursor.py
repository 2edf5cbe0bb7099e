"""Signed, versioned, URL-safe cursors: pure code, no I/O.

A cursor is ``c1.<payload>.<mac>``: ``c1`` the format version, ``payload`` the
unpadded URL-safe base64 of a compact JSON array ``[binding, issued_ms, values]``
and ``mac`` the unpadded URL-safe base64 of HMAC-SHA256 over ``c1.<payload>`` with
a key derived from the secret and the cursor's purpose (a pagination cursor is never
a change-feed cursor). Every character is in ``[A-Za-z0-9_.-]``, so a cursor goes in
a query string as is.

``binding`` is a 16-byte digest of what the cursor belongs to (the SQL, the sort,
the filter parameters, a tenant); ``values`` are typed so that they come back
exactly: ``int`` of any size, ``Decimal``, ``float`` (hex, NaN and infinities
included), aware and naive ``datetime`` to the microsecond, ``date``, ``time``,
``timedelta``, ``UUID``, ``bytes``, ``bool``, any ``str`` and ``None``. There is no
pickle: decoding only ever builds these types.

Decoding is strict: the MAC is compared in constant time before the payload is
parsed, base64 must be canonical (so a flipped padding bit is not "the same
cursor"), and anything off raises :class:`~scalekit.errors.CursorError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal, InvalidOperation
from typing import Final, NamedTuple

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit.errors import ConfigurationError, CursorError

VERSION: Final = "c1"
SECRET_ENV: Final = "SCALEKIT_CURSOR_SECRET"
#: cursors longer than this are refused before any decoding work
MAX_CURSOR_CHARS: Final = 8192
MIN_SECRET_BYTES: Final = 16
_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not text or not _ALPHABET.issuperset(text):
        raise CursorError("malformed cursor: not URL-safe base64")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CursorError("malformed cursor: truncated base64") from exc
    if _b64e(raw) != text:  # non-canonical spelling of the same bytes
        raise CursorError("malformed cursor: non-canonical base64")
    return raw


# -- typed values ------------------------------------------------------------------
def encode_value(value: object) -> object:
    """A JSON-able, type-tagged form of ``value`` (see the module docstring)."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return ["b", int(value)]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return ["f", float.hex(value)]
    if isinstance(value, Decimal):
        return ["n", str(value)]
    if isinstance(value, datetime):
        return ["ts" if value.tzinfo is None else "tz", value.isoformat()]
    if isinstance(value, date):
        return ["d", value.isoformat()]
    if isinstance(value, dtime):
        return ["t", value.isoformat()]
    if isinstance(value, timedelta):
        return ["td", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, uuid.UUID):
        return ["u", value.hex]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["y", _b64e(bytes(value))]
    if isinstance(value, list | tuple):
        return ["a", [encode_value(v) for v in value]]
    raise ConfigurationError(
        f"a cursor cannot carry a value of type {type(value).__name__} ({value!r}); "
        "sort on columns of type int, numeric, float, text, uuid, date/time, bytea or bool"
    )


def _decode_value(item: object) -> object:
    if item is None or isinstance(item, str):
        return item
    if isinstance(item, int) and not isinstance(item, bool):
        return item
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        raise CursorError("malformed cursor: unknown value")
    tag, raw = item
    try:
        if tag == "a" and isinstance(raw, list):
            return [_decode_value(v) for v in raw]
        if tag == "td" and isinstance(raw, list) and all(type(x) is int for x in raw):
            days, seconds, micros = raw
            return timedelta(days=days, seconds=seconds, microseconds=micros)
        if tag == "b" and raw in (0, 1) and type(raw) is int:
            return bool(raw)
        if not isinstance(raw, str):
            raise CursorError("malformed cursor: unknown value")
        if tag == "f":
            return float.fromhex(raw)
        if tag == "n":
            return Decimal(raw)
        if tag == "tz" or tag == "ts":
            moment = datetime.fromisoformat(raw)
            if (moment.tzinfo is None) != (tag == "ts"):
                raise CursorError("malformed cursor: bad timestamp")
            return moment
        if tag == "d":
            return date.fromisoformat(raw)
        if tag == "t":
            return dtime.fromisoformat(raw)
        if tag == "u":
            return uuid.UUID(hex=raw)
        if tag == "y":
            return _b64d(raw) if raw else b""
    except (ValueError, TypeError, OverflowError, InvalidOperation) as exc:
        raise CursorError("malformed cursor: bad value") from exc
    raise CursorError("malformed cursor: unknown value")


def digest(*parts: object) -> bytes:
    """16 bytes identifying ``parts`` (typed, so ``1`` and ``"1"`` differ).

    A part of a type a cursor cannot carry is digested by its type name and
    ``repr``: deterministic for plain values, and at worst a cursor that never
    matches (refused), never one that matches the wrong query.
    """
    canon = []
    for part in parts:
        try:
            canon.append(encode_value(part))
        except ConfigurationError:
            canon.append(["?", f"{type(part).__module__}.{type(part).__qualname__}", repr(part)])
    blob = json.dumps(canon, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).digest()[:16]


class Decoded(NamedTuple):
    binding: bytes
    issued: float
    values: list[object]


def resolve_secret(secret: str | bytes | None, what: str) -> bytes:
    """The secret given, else ``SCALEKIT_CURSOR_SECRET``; at least 16 bytes."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV)
        if not secret:
            raise ConfigurationError(
                f"{what} needs a secret to sign its cursors: pass secret=... or set "
                f"{SECRET_ENV} (at least {MIN_SECRET_BYTES} random bytes, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{what}'s cursor secret must be str or bytes of at least {MIN_SECRET_BYTES} bytes"
        )
    return secret


class CursorCodec:
    """Mints and checks cursors for one purpose with one secret.

    ``max_age`` (seconds or a timedelta, ``None`` for no limit) refuses cursors
    minted longer ago than that by ``clock`` (wall-clock ``time.time`` by default,
    since a cursor travels between processes; tests inject a FakeClock).
    """

    __slots__ = ("_key", "_max_age", "_now")

    def __init__(
        self,
        secret: str | bytes | None,
        *,
        purpose: str,
        what: str,
        max_age: float | timedelta | None = None,
        clock: Clock | Callable[[], float] | None = None,
    ) -> None:
        raw = resolve_secret(secret, what)
        self._key = hmac.new(raw, b"scalekit cursor key\x00" + purpose.encode(), "sha256").digest()
        self._max_age = _validate.optional_duration(max_age, "max_age")
        self._now = as_clock(clock if clock is not None else time.time).now

    def _mac(self, body: str) -> bytes:
        return hmac.digest(self._key, body.encode("ascii"), "sha256")

    def encode(self, values: Sequence[object], *, binding: bytes) -> str:
        issued = round(self._now() * 1000)
        payload = [_b64e(binding), issued, [encode_value(v) for v in values]]
        blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        body = f"{VERSION}.{_b64e(blob.encode('utf-8', 'surrogatepass'))}"
        return f"{body}.{_b64e(self._mac(body))}"

    def decode(self, token: object, *, binding: bytes | None) -> Decoded:
        """The values of ``token``; CursorError unless it is intact, ours, of this
        binding (when one is given) and young enough."""
        if not isinstance(token, str):
            raise CursorError(f"a cursor must be a str, got {type(token).__name__}")
        if len(token) > MAX_CURSOR_CHARS:
            raise CursorError("malformed cursor: too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise CursorError("malformed cursor: expected three dot-separated parts")
        version, payload, mac = parts
        if version != VERSION:
            raise CursorError(f"unsupported cursor version {version[:8]!r} (expected {VERSION})")
        given = _b64d(mac)
        body = f"{version}.{payload}"
        if not _ALPHABET.issuperset(payload) or not hmac.compare_digest(given, self._mac(body)):
            raise CursorError("invalid cursor signature (tampered, or signed with another secret)")
        try:
            data = json.loads(_b64d(payload).decode("utf-8", "surrogatepass"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CursorError("malformed cursor payload") from exc
        if not (
            isinstance(data, list)
            and len(data) == 3
            and isinstance(data[0], str)
            and type(data[1]) is int
            and isinstance(data[2], list)
        ):
            raise CursorError("malformed cursor payload")
        found = _b64d(data[0])
        if binding is not None and not hmac.compare_digest(found, binding):
            raise CursorError("this cursor belongs to another query, filter or tenant")
        issued = data[1] / 1000
        if self._max_age is not None and self._now() - issued > self._max_age:
            raise CursorError(f"cursor expired (older than {self._max_age:g}s)")
        return Decoded(found, issued, [_decode_value(v) for v in data[2]])
