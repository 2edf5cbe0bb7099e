"""Stable hashing of ids to uniform numbers: the same id gives the same number in
every process, on every run and on every machine (never Python's ``hash()``,
which is salted per process for ``str``).

Two functions, chosen by name:

- ``"crc32"`` (the default): ``zlib.crc32`` of the id's UTF-8 bytes, times an odd
  64-bit multiplier derived from the salt, modulo 2**64 (multiply-shift hashing,
  Dietzfelbinger et al. 1997). The CRC spreads any id over 32 bits; the product
  moves those bits into the high bits that the threshold compares, and samplers
  with different salts (different multipliers) draw independently. Two integer
  operations after the CRC, several times cheaper than BLAKE2 in CPython; not
  meant to resist someone who chooses ids on purpose to be sampled.
- ``"blake2b"``: BLAKE2b with an 8-byte digest, keyed by the salt. Use it with a
  secret salt when users control the ids and must not be able to pick ids that
  are always (or never) sampled.

Both return an ``int`` in ``[0, 2**64)``; a rate ``r`` becomes the integer
threshold ``floor(r * 2**bits)``, so "sampled" is one integer comparison, and a
key sampled at rate ``r`` is sampled at every rate above ``r`` (the threshold only
grows with ``r``).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import Literal, TypeAlias

from scalekit.errors import ConfigurationError

__all__ = ["HASHES", "HashName", "Id", "hash_bits", "hash_function", "multiplier", "to_bytes"]

HashName: TypeAlias = Literal["crc32", "blake2b"]
HASHES: tuple[HashName, ...] = ("crc32", "blake2b")

Id: TypeAlias = str | bytes | int


def to_bytes(key: Id) -> bytes:
    """The bytes hashed for an id: UTF-8 for ``str`` (a ``StrEnum`` member is its
    value; a lone surrogate is encoded as such, never an error), decimal digits for
    ``int``."""
    if isinstance(key, str):
        return str.__str__(key).encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        try:
            return int.__repr__(key).encode()  # an IntEnum member is its value
        except ValueError:  # more digits than sys.get_int_max_str_digits()
            raise ConfigurationError(
                f"a sampling key must be a stable id of printable size, got an int of "
                f"{key.bit_length()} bits"
            ) from None
    raise ConfigurationError(
        f"a sampling key must be a str, bytes or int (a stable id), got {type(key).__name__}: "
        f"{key!r}"
    )


def hash_bits(name: HashName) -> int:
    """How many bits ``name``'s hashes have (64 for both)."""
    return 64


def multiplier(salt: str) -> int:
    """The odd 64-bit multiplier of the ``"crc32"`` hash for ``salt``."""
    digest = hashlib.blake2b(salt.encode(), digest_size=8, person=b"scalekit-mul").digest()
    return int.from_bytes(digest, "little") | 1


def hash_function(name: HashName, salt: str) -> Callable[[Id], int]:
    """A fast ``key -> int`` for ``name`` and ``salt`` (see the module docstring)."""
    if name == "crc32":
        mul = multiplier(salt)
        crc = zlib.crc32

        def crc32_mul(key: Id) -> int:
            data = key.encode("utf-8", "surrogatepass") if key.__class__ is str else to_bytes(key)
            return (crc(data) * mul) & 0xFFFFFFFFFFFFFFFF

        return crc32_mul
    if name == "blake2b":
        blake = hashlib.blake2b
        skey = salt.encode()[:64]
        from_bytes = int.from_bytes

        def blake2b(key: Id) -> int:
            data = key.encode("utf-8", "surrogatepass") if key.__class__ is str else to_bytes(key)
            return from_bytes(blake(data, digest_size=8, key=skey).digest(), "little")

        return blake2b
    raise ConfigurationError(f"unknown hash {name!r}; expected one of {', '.join(HASHES)}")
