"""Deterministic cache keys from a function's bound arguments.

:class:`KeyBuilder` is created once per cached function (at decoration time): it reads
the signature once, and each call binds the arguments (defaults applied, so ``f(1)``,
``f(a=1)`` and ``f(1, b=2)`` of ``def f(a, b=2)`` give one key), encodes them with
:func:`encode_args` and returns::

    <prefix>:<namespace>:v<version>:{<args>}

``namespace`` (default ``module.qualname`` of the function) and ``version`` are
escaped with :func:`scalekit._keys.escape`, and so is ``<args>``, which is the Redis
Cluster hash tag (a key that is not hashed, see below, is exactly ``build_key(prefix,
escape(namespace), "v" + escape(str(version)), tag=encode_args(values))``, with
``values`` the bound arguments minus the ignored ones): an entry and the companion
keys a cache appends after the tag (``…:{<args>}:lock``) live on one slot, and no
argument can forge a ``:`` or a brace. Bumping ``version`` moves every key of the function.

Argument encoding
-----------------
Every value gets a type tag; text of variable content is length-prefixed and every
other atom uses a fixed alphabet that cannot contain the separators ``, ) ] > =``,
so each encoding is self-delimiting and the whole string parses back to exactly one
argument tuple: the encoding is injective (two different argument tuples never
share a key). ``<n>.<text>`` below means ``len(text)`` in code points, a dot, the
text; ``<cls>`` is ``<n>.<module.qualname>`` of a class::

    value                      encoding                       example
    None                       N                              N
    True / False               T / F                          T
    int                        i<decimal>                     i-42
      beyond 2**2048 in size   I<hex>                         I-1f3a…
    float                      f<repr>                        f1.0  f-0.0  finf  fnan
    str                        s<n>.<text>                    s5.a b,c
    bytes / bytearray          b<hex> / B<hex>                b00ff
    Decimal                    m<str>                         m1.50
    datetime                   t<isoformat without ":">       t2024-05-01T123000+0200
      zone other than timezone …@<n>.<zone key>               …@12.Europe/Paris
    date                       d<isoformat>                   d2024-05-01
    time                       h<isoformat without ":">[@…]   h093000
    timedelta                  r<total microseconds>          r1500000
    UUID                       u<32 hex digits>               u0000…00ff
    tuple / list               (<v>,…) / [<v>,…]              (i1,s1.a)  []
    dict                       <<k>=<v>,…>, items sorted      <s1.a=i1,s1.b=N>
    set / frozenset            S(<v>,…) / Z(<v>,…), sorted    S(i1,i2)
    Enum member                e<cls>(s<n>.<name>)            e9.app.Color(s3.RED)
      Flag member              e<cls>(<value>)                e8.app.Perm(i5)
    dataclass instance         D<cls>(<field>,…)              D9.app.Point(i1,i2)
      (the fields with compare=True, in definition order)
    object with __cache_key__  k<cls>(<its __cache_key__()>)  k8.app.User(i42)
    subclass of a type above   o<cls>(<as the base type>)     o8.app.Pair((i1,i2))
      (named tuples, OrderedDict, str/int subclasses; encoded from the exact base
      value, so overriding __str__ or __repr__ changes nothing)
    cls of a classmethod       c<cls>                         c8.app.Repo

The arguments are joined with ``,`` in parameter order (``*args`` is a tuple,
``**kwargs`` a dict); parameter names are not repeated in every key, the namespace
and version identify the signature. Dict items and set elements are sorted by their
encoding, so insertion order and ``PYTHONHASHSEED`` do not matter. Example: the key
of ``get_user(42, tier="gold")`` in module ``app`` is
``scalekit:cache:app.get_user:v1:{i42,s4.gold}``.

Long keys: when the escaped ``<args>`` exceeds ``max_length`` UTF-8 bytes (default
200), the tag becomes ``#``,
optionally the first ``readable_prefix`` characters of the encoding and another
``#``, then the 64-hex-digit BLAKE2b-256 digest of the full encoding (UTF-8,
lone surrogates passed through; escaping percent-encodes them in unhashed keys,
so every key is valid UTF-8). An unhashed encoding never starts with ``#``, so a short
argument tuple can never forge the key of a long one. No step uses ``hash()``
(salted per process): a key is the same in every process and on every machine.

Decisions
---------
- Type-strict, like ``functools.lru_cache(typed=True)`` but all the way down: two
  arguments share a key only if they are equal *and* of the same types. ``1``,
  ``1.0``, ``True``, ``"1"`` and ``Decimal(1)`` are five keys (JSON and SQL treat
  them differently, so may the function); ``[1]`` and ``(1,)`` are two keys (Python
  itself says ``[1] != (1,)``, and a function can tell them apart; normalise first,
  or pass ``key=``, to share entries); ``set`` and ``frozenset`` likewise. Values
  that are equal but distinguishable may get different keys (``0.0``/``-0.0``,
  ``Decimal("1.0")``/``Decimal("1.00")``, one instant in two time zones): a missed
  hit, never a wrong one.
- Unsupported values (arbitrary objects, functions, classes, sessions) raise
  :class:`~scalekit.errors.ConfigurationError` naming the parameter and the type;
  nothing ever falls back to ``repr()`` or ``id()``. Fix with ``ignore=``, a
  ``__cache_key__()`` method, or the decorator's ``key=``.
- The receiver of a method (the first parameter of a function defined in a class
  body, named ``self`` or ``cls``): ``self`` is left out (instances of a service
  object are interchangeable) unless its class has ``__cache_key__()``, which is
  then used; ``cls`` is replaced by the class's ``module.qualname``, because a
  classmethod's result usually depends on the class it is called on (alternative
  constructors). ``ignore=("self",)`` / ``ignore=("cls",)`` leave it out entirely.
  Detection is by name at decoration time, so a ``@staticmethod`` whose first
  parameter is called ``self`` or ``cls`` is mistaken for a method: rename it.
- ``version=2`` and ``version="2"`` are the same version (both are written ``v2``).
- Functions created repeatedly by a factory share the default namespace
  (``module.outer.<locals>.f``); give each a ``namespace=`` that says what differs.
  Lambdas have no usable name and need ``namespace=``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, Final, Generic, ParamSpec
from uuid import UUID

from scalekit._keys import escape
from scalekit.errors import ConfigurationError

__all__ = ["KeyBuilder", "encode_args"]

P = ParamSpec("P")

#: ints up to this many bits are written in decimal (617 digits, below the 640 that
#: ``sys.set_int_max_str_digits`` allows as its smallest limit); larger ones in hex,
#: so the encoding never depends on that per-process setting
_MAX_DECIMAL_BITS: Final = 2048
_HASH_BYTES: Final = 32

_SUPPORTED = (
    "None, bool, int, float, str, bytes, bytearray, Decimal, datetime, date, time, "
    "timedelta, UUID, tuple, list, dict, set, frozenset, Enum members, dataclass "
    "instances and objects with a __cache_key__() method"
)


class _Unsupported(Exception):
    """Internal: a value with no encoding; turned into a ConfigurationError above."""

    def __init__(self, value: object, hint: str = "") -> None:
        super().__init__(value)
        self.value = value
        self.hint = hint


def _qualified(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def _class_part(t: type) -> str:
    q = _qualified(t)
    return f"{len(q)}.{q}"


# --- encoders of the exact built-in types ---------------------------------------


def _none(v: None) -> str:
    return "N"


def _bool(v: bool) -> str:
    return "T" if v else "F"


def _int(v: int) -> str:
    if v.bit_length() <= _MAX_DECIMAL_BITS:
        return f"i{v}"
    return f"I{v:x}"


def _float(v: float) -> str:
    return f"f{v!r}"


def _str(v: str) -> str:
    return f"s{len(v)}.{v}"


def _bytes(v: bytes) -> str:
    return "b" + v.hex()


def _bytearray(v: bytearray) -> str:
    return "B" + v.hex()


def _decimal(v: Decimal) -> str:
    return "m" + str(v)


def _zone(tz: tzinfo) -> str:
    if type(tz) is timezone:  # a fixed offset: the isoformat already says it all
        return ""
    name = getattr(tz, "key", None)  # zoneinfo.ZoneInfo
    if not isinstance(name, str):
        name = getattr(tz, "zone", None)  # pytz
    if not isinstance(name, str):
        raise _Unsupported(
            tz,
            "a datetime's or time's tzinfo must be datetime.timezone or a named zone "
            "(zoneinfo.ZoneInfo, pytz)",
        )
    return f"@{len(name)}.{name}"


def _datetime(v: datetime) -> str:
    s = "t" + v.isoformat().replace(":", "")
    return s if v.tzinfo is None else s + _zone(v.tzinfo)


def _date(v: date) -> str:
    return "d" + v.isoformat()


def _time(v: time) -> str:
    s = "h" + v.isoformat().replace(":", "")
    return s if v.tzinfo is None else s + _zone(v.tzinfo)


def _timedelta(v: timedelta) -> str:
    return f"r{(v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds}"


def _uuid(v: UUID) -> str:
    return "u" + v.hex


def _tuple(v: tuple[object, ...]) -> str:
    return "(" + ",".join([_enc(x) for x in v]) + ")"


def _list(v: list[object]) -> str:
    return "[" + ",".join([_enc(x) for x in v]) + "]"


def _dict(v: dict[object, object]) -> str:
    items = [_enc(k) + "=" + _enc(x) for k, x in v.items()]
    items.sort()
    return "<" + ",".join(items) + ">"


def _set(v: set[object]) -> str:
    return "S(" + ",".join(sorted([_enc(x) for x in v])) + ")"


def _frozenset(v: frozenset[object]) -> str:
    return "Z(" + ",".join(sorted([_enc(x) for x in v])) + ")"


_ENCODERS: Final[dict[type, Callable[[Any], str]]] = {
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
    bytes: _bytes,
    bytearray: _bytearray,
    Decimal: _decimal,
    datetime: _datetime,
    date: _date,
    time: _time,
    timedelta: _timedelta,
    UUID: _uuid,
    tuple: _tuple,
    list: _list,
    dict: _dict,
    set: _set,
    frozenset: _frozenset,
}

# subclasses are encoded as their base, wrapped with their class name; the most
# specific base first (datetime before date), and the exact base value for scalars
# (a subclass may override __str__ / __format__ / __repr__)
_encoder: Final = _ENCODERS.get

_BASES: Final[tuple[type, ...]] = (
    str, int, float, tuple, list, dict, set, frozenset, bytes, bytearray,
    Decimal, datetime, date, time, timedelta, UUID,
)  # fmt: skip
_AS_BASE: Final[dict[type, Callable[[Any], object]]] = {
    int: int.__int__,
    float: float.__float__,
    str: str.__str__,
}


#: exact types whose encoding has no character that ``escape`` changes (letters,
#: digits, ``-``, ``+``, ``.``): a key of such values needs no escaping
_PLAIN: Final[dict[type, Callable[[Any], str]]] = {
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    UUID: _uuid,
}
_plain: Final = _PLAIN.get


def _enc(v: object) -> str:
    return _encoder(type(v), _encode_other)(v)


#: the encoder of each other type seen (enum, dataclass, __cache_key__, subclass),
#: worked out once per class; bounded, in case classes are made on the fly
_RESOLVED: Final[dict[type, Callable[[Any], str]]] = {}


def _encode_other(v: object) -> str:
    t = type(v)
    f = _RESOLVED.get(t)
    if f is None:
        f = _resolve(t)
        if f is None:
            raise _Unsupported(v)
        if len(_RESOLVED) >= 1024:
            _RESOLVED.clear()
        _RESOLVED[t] = f
    return f(v)


def _resolve(t: type) -> Callable[[Any], str] | None:
    """The encoder of a type that is not an exact built-in, or None if unsupported."""
    cls = _class_part(t)
    if hasattr(t, "__cache_key__"):
        return lambda v: f"k{cls}({_enc(v.__cache_key__())})"
    if issubclass(t, enum.Flag):
        return lambda v: f"e{cls}({_enc(v.value)})"
    if issubclass(t, enum.Enum):
        return lambda v: f"e{cls}({_str(v.name)})"
    if hasattr(t, "__dataclass_fields__") and dataclasses.is_dataclass(t):
        names = tuple(f.name for f in dataclasses.fields(t) if f.compare)
        return lambda v: f"D{cls}(" + ",".join([_enc(getattr(v, n)) for n in names]) + ")"
    for base in _BASES:
        if issubclass(t, base):
            encode = _ENCODERS[base]
            convert = _AS_BASE.get(base)
            if convert is None:
                return lambda v: f"o{cls}({encode(v)})"
            return lambda v: f"o{cls}({encode(convert(v))})"
    return None


def _encode_receiver_class(cls: object) -> str:
    if isinstance(cls, type):
        return "c" + _class_part(cls)
    return _enc(cls)


def _type_name(value: object) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else _qualified(t)


def _unsupported_message(where: str, exc: _Unsupported, nested: bool, fix: str) -> str:
    t = type(exc.value)
    what = "contains a value" if nested else "got a value"
    hint = f" ({exc.hint})" if exc.hint else ""
    return (
        f"cannot build a cache key: {where} {what} of type {_type_name(exc.value)!r}, "
        f"which has no stable encoding{hint}. Supported: {_SUPPORTED}. To fix it, "
        f"{fix}, or implement __cache_key__(self) on {t.__qualname__} returning a "
        f"supported value (e.g. its id); repr() and id() are never used"
    )


def _too_deep(where: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot build a cache key: {where} is nested too deeply or contains itself"
    )


def head(prefix: str, namespace: str, version: int | str | None = None) -> str:
    """The start of every key of ``namespace`` (of one ``version`` if given):
    ``<prefix>:<namespace>:`` or ``<prefix>:<namespace>:v<version>:``, escaped.
    The one place the layout's head is built (keys, custom keys, invalidation)."""
    text = f"{prefix}:{escape(namespace)}:"
    return text if version is None else f"{text}v{escape(str(version))}:"


def encode_args(values: Iterable[object]) -> str:
    """Encode a sequence of argument values (the ``<args>`` part of a key, unescaped).

    Injective and deterministic across processes; see the module docstring for the
    format. Raises :class:`~scalekit.errors.ConfigurationError` for a value that has
    no encoding.
    """
    items = values if isinstance(values, tuple | list) else list(values)
    try:
        return ",".join([_enc(v) for v in items])
    except (_Unsupported, RecursionError) as exc:
        for i, v in enumerate(items):
            try:
                _enc(v)
            except _Unsupported as inner:
                where = f"argument #{i}"
                fix = "leave the argument out"
                msg = _unsupported_message(where, inner, inner.value is not v, fix)
                raise ConfigurationError(msg) from None
            except RecursionError:
                break
        raise _too_deep("an argument") from exc


def _utf8_too_long(tag: str, limit: int) -> bool:
    # ``tag`` is escaped: lone surrogates are percent-encoded, so it always encodes
    return len(tag.encode()) > limit


_MISSING: Final[Any] = object()
_KEEP, _SELF, _CLS = 0, 1, 2


class KeyBuilder(Generic[P]):
    """Build the cache keys of one function; create it once, at decoration time.

    ``KeyBuilder(fn)(*args, **kwargs)`` returns the key of the call ``fn(*args,
    **kwargs)`` (the layout and encoding are in the module docstring). Arguments that
    ``fn`` would reject raise the same ``TypeError`` as the call would.

    :param namespace: names the function in keys; default ``module.qualname``.
    :param version: bump it (int or str) to abandon every old key of the function.
    :param ignore: parameter names left out of keys (a db session, a logger).
    :param prefix: the key prefix shared by the cache (trusted, not escaped).
    :param max_length: the escaped ``<args>`` longer than this many UTF-8 bytes is
        replaced by ``#`` and a BLAKE2b-256 hex digest of the encoding.
    :param readable_prefix: with a digest, keep this many leading characters of the
        encoding before it, for people reading keys: ``#i42,s4.go#<digest>``.
    """

    __slots__ = (
        "_defaults",
        "_fast",
        "_head",
        "_max_length",
        "_n_params",
        "_n_positional",
        "_n_posonly",
        "_n_required",
        "_names",
        "_namespace",
        "_one",
        "_plan",
        "_prefix",
        "_readable_prefix",
        "_sig",
        "_version",
    )

    def __init__(
        self,
        fn: Callable[P, object],
        *,
        namespace: str | None = None,
        version: int | str = 1,
        ignore: Iterable[str] = (),
        prefix: str = "scalekit:cache",
        max_length: int = 200,
        readable_prefix: int = 0,
    ) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read the signature of {fn!r} to build cache keys: {exc}"
            ) from exc
        self._sig = sig
        self._namespace = _resolve_namespace(fn, namespace)
        self._version = _check_version(version)
        _check_prefix(prefix)
        for name, value in (("max_length", max_length), ("readable_prefix", readable_prefix)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"{name} must be an int >= 0, got {value!r}")
        self._max_length = max_length
        self._readable_prefix = readable_prefix
        self._prefix = prefix
        self._head = head(prefix, self._namespace, self._version)

        params = list(sig.parameters.values())
        names = [p.name for p in params]
        if isinstance(ignore, str):
            raise ConfigurationError(
                f"ignore= takes a collection of parameter names, e.g. ignore=({ignore!r},)"
            )
        ignored = set(ignore)
        unknown = sorted(n for n in ignored if not isinstance(n, str) or n not in names)
        if unknown:
            raise ConfigurationError(
                f"ignore= names {unknown!r}, which are not parameters of "
                f"{self._namespace}; its parameters are {names!r}"
            )
        receiver = _receiver(fn, params)
        plan: list[tuple[int, int]] = []
        for i, name in enumerate(names):
            if name in ignored:
                continue
            if i == 0 and receiver is not None:
                plan.append((0, _SELF if receiver == "self" else _CLS))
            else:
                plan.append((i, _KEEP))
        # None: every value as is, in order (the common case, no per-call plan walk)
        self._plan: tuple[tuple[int, int], ...] | None = (
            None if len(plan) == len(names) and receiver is None else tuple(plan)
        )

        # a hand-written binder for signatures without *args / **kwargs (equivalent
        # to Signature.bind + apply_defaults, which is ~5x slower); anything it does
        # not handle (errors included) goes to Signature.bind
        kinds = [p.kind for p in params]
        self._fast = all(
            k is not inspect.Parameter.VAR_POSITIONAL and k is not inspect.Parameter.VAR_KEYWORD
            for k in kinds
        )
        self._names = tuple(names)
        self._defaults = tuple(
            _MISSING if p.default is inspect.Parameter.empty else p.default for p in params
        )
        self._n_params = len(params)
        self._n_positional = sum(k is not inspect.Parameter.KEYWORD_ONLY for k in kinds)
        self._n_posonly = sum(k is inspect.Parameter.POSITIONAL_ONLY for k in kinds)
        self._n_required = 1 + max(
            (i for i, p in enumerate(params) if p.default is inspect.Parameter.empty),
            default=-1,
        )
        # f(x) with one positional parameter, kept as is: __call__'s shortest path
        self._one = self._plan is None and self._fast and self._n_params == self._n_positional == 1

    @property
    def namespace(self) -> str:
        """The function's name in keys (unescaped)."""
        return self._namespace

    @property
    def version(self) -> int | str:
        """The version in keys; bumping it abandons every old key."""
        return self._version

    @property
    def heads(self) -> tuple[str, str]:
        """The heads of this function's keys: its namespace's, and its version's
        (what a remote backend fences a ``@cached`` fill by)."""
        return head(self._prefix, self._namespace), self._head

    def custom(self, key: Callable[..., str]) -> Callable[..., str]:
        """The key function for ``@cached(key=...)``: ``key``'s string (escaped) as the
        hash tag, under this function's head, so namespace/version invalidation
        covers it."""
        tag_head = self._head + "{"
        namespace = self._namespace

        def make_key(*args: Any, **kwargs: Any) -> str:
            k = key(*args, **kwargs)
            if not isinstance(k, str):
                raise ConfigurationError(f"key= of {namespace} must return a str, got {k!r}")
            return f"{tag_head}{escape(k)}}}"

        return make_key

    def __repr__(self) -> str:
        return f"KeyBuilder(namespace={self._namespace!r}, version={self._version!r})"

    def function(self) -> Callable[P, str]:
        """The key function to call on a hot path: this builder itself, or for a
        function of one parameter a closure that encodes a plain scalar argument
        (int, float, bool, None, UUID) without the generic path (same keys)."""
        if not self._one:
            return self
        head = self._head + "{"
        limit = self._max_length
        plain_of = _plain
        general = self.__call__

        def key(*args: P.args, **kwargs: P.kwargs) -> str:
            if len(args) == 1 and not kwargs:
                v = args[0]
                plain = plain_of(type(v))
                if plain is not None:
                    tag = plain(v)
                    if len(tag) <= limit:
                        return f"{head}{tag}}}"
            return general(*args, **kwargs)

        return key

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> str:
        n = len(args)
        if n == 1 and self._one and not kwargs:
            # one int / float / None / bool / UUID: nothing to escape, one encoder
            v = args[0]
            plain = _plain(type(v))
            if plain is not None:
                tag = plain(v)
                if len(tag) <= self._max_length:
                    return f"{self._head}{{{tag}}}"
        values: Sequence[object]
        if not kwargs and self._fast and self._n_required <= n <= self._n_positional:
            values = args if n == self._n_params else args + self._defaults[n:]
        else:
            values = self._bind(args, kwargs)
        try:
            if self._plan is None:
                if len(values) == 1:
                    v = values[0]
                    encoded = _encoder(type(v), _encode_other)(v)
                else:
                    encoded = ",".join([_encoder(type(v), _encode_other)(v) for v in values])
            else:
                encoded = self._encode_planned(values)
        except (_Unsupported, RecursionError):
            raise self._error(values) from None
        tag = escape(encoded)
        if len(tag) > self._max_length or (
            not tag.isascii() and _utf8_too_long(tag, self._max_length)
        ):
            tag = self._hashed(encoded)
        return f"{self._head}{{{tag}}}"

    # --- internals -------------------------------------------------------------

    def _bind(self, args: tuple[object, ...], kwargs: dict[str, object]) -> Sequence[object]:
        if self._fast:
            n = len(args)
            if not kwargs:
                if self._n_required <= n <= self._n_positional:
                    return args if n == self._n_params else args + self._defaults[n:]
            elif n <= self._n_positional:
                values = self._bind_keywords(args, kwargs)
                if values is not None:
                    return values
        return self._bind_slow(args, kwargs)

    def _bind_keywords(
        self, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> list[object] | None:
        values = list(args)
        used = 0
        names, defaults, posonly = self._names, self._defaults, self._n_posonly
        for i in range(len(args), self._n_params):
            name = names[i]
            if i >= posonly and name in kwargs:
                values.append(kwargs[name])
                used += 1
            elif defaults[i] is _MISSING:
                return None
            else:
                values.append(defaults[i])
        return values if used == len(kwargs) else None

    def _bind_slow(self, args: tuple[object, ...], kwargs: dict[str, object]) -> Sequence[object]:
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())

    def _encode_planned(self, values: Sequence[object]) -> str:
        assert self._plan is not None
        parts = []
        for i, mode in self._plan:
            v = values[i]
            if mode == _KEEP:
                parts.append(_enc(v))
            elif mode == _CLS:
                parts.append(_encode_receiver_class(v))
            elif hasattr(type(v), "__cache_key__"):  # _SELF
                parts.append(_enc(v))
        return ",".join(parts)

    def _hashed(self, encoded: str) -> str:
        raw = encoded.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(raw, digest_size=_HASH_BYTES).hexdigest()
        if not self._readable_prefix:
            return "#" + digest
        head = encoded[: self._readable_prefix]
        if not head.isascii():
            head = head.encode("utf-8", "replace").decode()
        return f"#{escape(head)}#{digest}"

    def _error(self, values: Sequence[object]) -> ConfigurationError:
        """Find the argument that failed (slow path) and say how to fix it."""
        plan = self._plan if self._plan is not None else [(i, _KEEP) for i in range(len(values))]
        for i, mode in plan:
            v = values[i]
            if mode == _SELF and not hasattr(type(v), "__cache_key__"):
                continue
            name = self._names[i]
            where = f"parameter {name!r} of {self._namespace}"
            try:
                _encode_receiver_class(v) if mode == _CLS else _enc(v)
            except _Unsupported as exc:
                fix = f"add {name!r} to ignore=, pass key= to compute the key yourself"
                return ConfigurationError(_unsupported_message(where, exc, exc.value is not v, fix))
            except RecursionError:
                return _too_deep(where)
        return _too_deep(f"an argument of {self._namespace}")  # pragma: no cover


def _resolve_namespace(fn: Callable[..., object], namespace: str | None) -> str:
    if namespace is not None:
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty str, got {namespace!r}")
        return namespace
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ConfigurationError(
            f"cannot derive a cache namespace for {fn!r} (it has no __module__ and "
            f"__qualname__); pass namespace='...'"
        )
    if "<lambda>" in qualname:
        raise ConfigurationError(
            f"cannot derive a cache namespace for the lambda {fn!r}: every lambda of "
            f"{module} is called '<lambda>', so their keys would collide; "
            f"pass namespace='...'"
        )
    return f"{module}.{qualname}"


def _check_version(version: int | str) -> int | str:
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise ConfigurationError(f"version must be an int or a str, got {version!r}")
    if isinstance(version, int) and version < 0:
        raise ConfigurationError(f"version must be >= 0, got {version!r}")
    if isinstance(version, str) and not version:
        raise ConfigurationError("version must not be an empty str")
    return version


def _check_prefix(prefix: str) -> None:
    if (
        not isinstance(prefix, str)
        or not prefix
        or "{" in prefix
        or "}" in prefix
        or any(c.isspace() or not c.isprintable() for c in prefix)
    ):
        raise ConfigurationError(
            f"prefix must be a non-empty str without braces, whitespace or control "
            f"characters, got {prefix!r}"
        )


def _receiver(fn: Callable[..., object], params: list[inspect.Parameter]) -> str | None:
    """``"self"``/``"cls"`` if ``fn`` is a function defined in a class body, else None."""
    if not params or params[0].name not in ("self", "cls"):
        return None
    if params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return None
    qualname = getattr(fn, "__qualname__", "")
    if not isinstance(qualname, str) or "." not in qualname:
        return None
    owner = qualname.rsplit(".", 1)[0]
    return None if owner.endswith("<locals>") else params[0].name
