"""Stable hashing of ids to uniform numbers: the same id gives the same number in
every process, on every run and on every machine (never Python's ``hash()``,
which is salted per process for ``str``).

Two functions, chosen by name:

- ``"crc32"`` (the default): ``zlib.crc32`` of the id's UTF-8 bytes seeded with
  the salt, then MurmurHash3's 32-bit finaliser. The CRC is linear, so two salts
  alone would give the same bits up to a constant XOR; the finaliser (a bijection
  with full avalanche) breaks that, so different salts draw independently. About
  five times cheaper than BLAKE2 in CPython; not meant to resist someone who
  chooses ids on purpose to be sampled.
- ``"blake2b"``: BLAKE2b with an 8-byte digest, keyed by the salt. Use it with a
  secret salt when users control the ids and must not be able to pick ids that
  are always (or never) sampled.

Both return an ``int`` in ``[0, 2**bits)``; a rate ``r`` becomes the integer
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

__all__ = ["HASHES", "HashName", "hash_bits", "hash_function", "to_bytes"]

HashName: TypeAlias = Literal["crc32", "blake2b"]
HASHES: tuple[HashName, ...] = ("crc32", "blake2b")

Id: TypeAlias = str | bytes | int


def to_bytes(key: Id) -> bytes:
    """The bytes hashed for an id: UTF-8 for ``str``, decimal digits for ``int``."""
    if key.__class__ is str:
        return key.encode()
    if isinstance(key, bytes):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode()
    raise ConfigurationError(
        f"a sampling key must be a str, bytes or int (a stable id), got {type(key).__name__}: "
        f"{key!r}"
    )


def hash_bits(name: HashName) -> int:
    """How many bits ``name``'s hashes have (32 or 64)."""
    return 32 if name == "crc32" else 64


def hash_function(name: HashName, salt: str) -> Callable[[Id], int]:
    """A fast ``key -> int`` for ``name`` and ``salt`` (see the module docstring)."""
    if name == "crc32":
        seed = zlib.crc32(salt.encode())
        crc = zlib.crc32

        def crc32_fmix(key: Id) -> int:
            data = key.encode() if key.__class__ is str else to_bytes(key)
            x = crc(data, seed)
            x ^= x >> 16
            x = (x * 0x85EBCA6B) & 0xFFFFFFFF
            x ^= x >> 13
            x = (x * 0xC2B2AE35) & 0xFFFFFFFF
            return x ^ (x >> 16)

        return crc32_fmix
    if name == "blake2b":
        blake = hashlib.blake2b
        skey = salt.encode()[:64]
        from_bytes = int.from_bytes

        def blake2b(key: Id) -> int:
            data = key.encode() if key.__class__ is str else to_bytes(key)
            return from_bytes(blake(data, digest_size=8, key=skey).digest(), "little")

        return blake2b
    raise ConfigurationError(f"unknown hash {name!r}; expected one of {', '.join(HASHES)}")
