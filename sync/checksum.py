"""Entity hashes and bucket checksums, exactly as API.md defines them.

An entity's hash is BLAKE2b (8-byte digest) over the length-prefixed kind, key and the
exact MessagePack body bytes the origin stored. A bucket's checksum is the sum of its live
entities' hashes modulo 2**64: a put adds the new hash and subtracts the old one, a delete
subtracts. The sum is independent of order and of log compaction.
"""

from __future__ import annotations

import struct
from hashlib import blake2b

MASK = (1 << 64) - 1
_U32 = struct.Struct(">I")


def entity_hash(kind: str, key: str, body: bytes) -> int:
    """The 64-bit hash of one entity's state."""
    k = kind.encode()
    y = key.encode()
    h = blake2b(digest_size=8)
    h.update(_U32.pack(len(k)))
    h.update(k)
    h.update(_U32.pack(len(y)))
    h.update(y)
    h.update(_U32.pack(len(body)))
    h.update(body)
    return int.from_bytes(h.digest(), "big")


def add(checksum: int, h: int) -> int:
    return (checksum + h) & MASK


def sub(checksum: int, h: int) -> int:
    return (checksum - h) & MASK


def to_signed(u: int) -> int:
    """Store a u64 in a signed 64-bit column (SQLite INTEGER, PostgreSQL BIGINT)."""
    return u - (1 << 64) if u >= 1 << 63 else u


def to_unsigned(s: int) -> int:
    return s & MASK
