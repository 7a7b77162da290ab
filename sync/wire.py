"""The feed's and the snapshot's shapes and codecs (API.md, "The feed's shape").

MessagePack is the wire format; the same structures render as JSON for people and tools.
Bodies travel as the exact bytes the origin stored (`msgspec.Raw`), so the edge hashes what
it received and never re-encodes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import msgspec
import orjson

Op = Literal["put", "delete"]


# The body of a delete: MessagePack nil.
NIL = msgspec.Raw(b"\xc0")


class Change(msgspec.Struct, frozen=True):
    seq: int
    kind: str
    key: str
    op: Op
    body: msgspec.Raw  # the exact stored bytes; NIL for a delete


class FeedPage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    bucket: str
    epoch: str
    after: int
    last: int
    # The bucket's newest sequence; absent on a cacheable (full, aligned) page.
    head: int | None = None
    checksum: int
    changes: list[Change]


class SnapshotHeader(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    epoch: str
    seq: int
    checksum: int


class SnapshotRow(msgspec.Struct, frozen=True):
    kind: str
    key: str
    body: msgspec.Raw


class BucketInfo(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    epoch: str
    head: int
    watermark: int
    checksum: int


MSGPACK = "application/msgpack"
JSON = "application/json"
NDJSON = "application/x-ndjson"

_encoder = msgspec.msgpack.Encoder()
page_decoder = msgspec.msgpack.Decoder(FeedPage)
header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)
rows_decoder = msgspec.msgpack.Decoder(list[SnapshotRow])
_any_decoder = msgspec.msgpack.Decoder()


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def body_to_builtins(body: bytes | msgspec.Raw) -> Any:
    """Decode a MessagePack body into plain Python values (for JSON views)."""
    return _any_decoder.decode(body)


def _json_default(obj: Any) -> Any:
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def to_json(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_UTC_Z)


def page_to_json(page: FeedPage) -> bytes:
    """The feed page as JSON: checksums as decimal strings, bodies decoded."""
    out: dict[str, Any] = {
        "bucket": page.bucket,
        "epoch": page.epoch,
        "after": page.after,
        "last": page.last,
    }
    if page.head is not None:
        out["head"] = page.head
    out["checksum"] = str(page.checksum)
    out["changes"] = [
        {"seq": c.seq, "kind": c.kind, "key": c.key, "op": c.op, "body": body_to_builtins(c.body)}
        for c in page.changes
    ]
    return to_json(out)


# The snapshot in MessagePack is a sequence of frames: a 4-byte big-endian length, then one
# MessagePack value: the header first, then arrays of up to SNAPSHOT_CHUNK rows. In JSON it is
# newline-delimited: the header, then one row per line.
SNAPSHOT_CHUNK = 1000
_FRAME = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload)) + payload


def snapshot_frames(header: SnapshotHeader, rows: Iterable[SnapshotRow]) -> Iterator[bytes]:
    yield frame(encode(header))
    chunk: list[SnapshotRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == SNAPSHOT_CHUNK:
            yield frame(encode(chunk))
            chunk = []
    if chunk:
        yield frame(encode(chunk))


def snapshot_ndjson(header: SnapshotHeader, rows: Iterable[SnapshotRow]) -> Iterator[bytes]:
    yield to_json({**msgspec.to_builtins(header), "checksum": str(header.checksum)}) + b"\n"
    for row in rows:
        yield to_json({"kind": row.kind, "key": row.key, "body": body_to_builtins(row.body)}) + b"\n"


class FrameReader:
    """Splits a byte stream into the snapshot's length-prefixed frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while len(self._buf) >= 4:
            (n,) = _FRAME.unpack_from(self._buf)
            if len(self._buf) < 4 + n:
                break
            payload = bytes(self._buf[4 : 4 + n])
            del self._buf[: 4 + n]
            yield payload

    @property
    def pending(self) -> int:
        return len(self._buf)
