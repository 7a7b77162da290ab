"""Personal data at rest: each field of an order's private record sealed with AES-256-GCM.

`customer_order.pii` holds MessagePack `{"sealed": {path: token}}`, one token per field that has
a value (`customer.name`, `customer.email`, `destination.postcode`, …; see `orders.FIELDS`). So a
copied database file, its WAL or a backup holds no readable personal data, and erasing one field
(or all of them) is removing its token.

A token is binary: `0x01 · u8 len(kid) · kid · 12-byte nonce · ciphertext‖16-byte tag`, where
the plaintext is the field's MessagePack value and the associated data is
`b"waypost-pii\\0" + order_id + b"\\0" + path`: a token moved to another row or another field does
not open. Nonces are random (96 bits): well inside GCM's bound for the ~2^32 fields one key seals.

Keys come from `WAYPOST_PII_ENCRYPTION_KEYS`, space-separated `<kid>:<base64url of 32 bytes>`,
newest first. New writes use the newest; any key of the ring opens what it sealed. Rotation: put
a new key first, restart, run `python -m origin rekey` (re-seals every row under the newest key,
in batches), then drop the old key. `open_pii` is the one function that reads the column.

Rows written before this (a plain MessagePack `Private`) are read too, and `rekey` seals them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from origin.errors import KeyUnavailable
from origin.store import Store
from sync.entities import ChangeKinds, Order, decode_entity

log = logging.getLogger("waypost.origin.pii")

FORMAT = 1
NONCE_BYTES = 12
KEY_BYTES = 32
KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
Value = str | float
Fields = dict[str, Value]
_URLSAFE = str.maketrans("-_", "+/")


class Sealed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sealed: dict[str, bytes]


_sealed_decoder = msgspec.msgpack.Decoder(Sealed)
_encoder = msgspec.msgpack.Encoder()
_value_decoder = msgspec.msgpack.Decoder(str | float)
ERASED: bytes = _encoder.encode(Sealed(sealed={}))  # what an erased row holds


@dataclass(frozen=True)
class PiiKey:
    kid: str
    aead: AESGCM = field(repr=False, compare=False)


@dataclass(frozen=True)
class Keyring:
    """The keys of `WAYPOST_PII_ENCRYPTION_KEYS`, newest first."""

    keys: tuple[PiiKey, ...]

    def __post_init__(self) -> None:
        assert self.keys, "a keyring needs at least one key"

    @property
    def newest(self) -> PiiKey:
        return self.keys[0]

    def get(self, kid: str) -> PiiKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    @classmethod
    def parse(cls, text: str, *, name: str = "WAYPOST_PII_ENCRYPTION_KEYS") -> Keyring:
        """Read `<kid>:<base64url key> …`; a bad entry is a `ValueError` naming it (not the key)."""
        keys: list[PiiKey] = []
        for n, entry in enumerate(text.split(), start=1):
            kid, sep, encoded = entry.partition(":")
            if not sep or not KID.match(kid):
                raise ValueError(f"{name}: entry {n} is not <kid>:<base64url key> (kid: A-Z a-z 0-9 _ -)")
            try:
                padded = encoded + "=" * (-len(encoded) % 4)
                raw = base64.b64decode(padded.translate(_URLSAFE), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{name}: key {kid!r} is not base64url") from None
            if len(raw) != KEY_BYTES:
                raise ValueError(f"{name}: key {kid!r} is {len(raw)} bytes; it must be {KEY_BYTES}")
            if any(k.kid == kid for k in keys):
                raise ValueError(f"{name}: key id {kid!r} appears twice")
            keys.append(PiiKey(kid, AESGCM(raw)))
        if not keys:
            raise ValueError(f"{name} is empty")
        return cls(tuple(keys))


def new_key(kid: str | None = None) -> str:
    """A fresh `<kid>:<base64url key>` entry (the demo, `--insecure-dev` and tests use one)."""
    kid = kid or "k" + secrets.token_hex(3)
    return f"{kid}:{base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip('=')}"


def _aad(order_id: str, path: str) -> bytes:
    return b"waypost-pii\x00" + order_id.encode() + b"\x00" + path.encode()


def seal(keyring: Keyring, order_id: str, fields: Mapping[str, Value]) -> bytes:
    """The column value for `fields` (path → value), each sealed under the newest key."""
    key = keyring.newest
    head = struct.pack("BB", FORMAT, len(key.kid)) + key.kid.encode()
    tokens = {}
    for path, value in fields.items():
        if value == "":
            continue  # nothing to keep
        nonce = secrets.token_bytes(NONCE_BYTES)
        tokens[path] = head + nonce + key.aead.encrypt(nonce, _encoder.encode(value), _aad(order_id, path))
    return _encoder.encode(Sealed(sealed=tokens))


def token_kid(token: bytes) -> str:
    if len(token) < 2 or token[0] != FORMAT:
        fmt = token[:1].hex()
        raise KeyUnavailable(f"a personal-data token of format {fmt!r}; this build reads {FORMAT}", kid="")
    return token[2 : 2 + token[1]].decode()


def kids_of(blob: bytes) -> set[str] | None:
    """The key ids a column value was sealed with (empty: erased), or None: a plain legacy row."""
    try:
        record = _sealed_decoder.decode(blob)
    except msgspec.ValidationError:
        return None
    return {token_kid(t) for t in record.sealed.values()}


def open_pii(keyring: Keyring, order_id: str, blob: bytes, only: Collection[str] | None = None) -> Fields:
    """The one reader of `customer_order.pii`: the fields it holds, path → value (erased: none).

    A token whose key is not in the ring, or that does not open under it (a wrong key for that
    id, or a token from another row), raises `KeyUnavailable` naming the order, field and key id.
    """
    try:
        record = _sealed_decoder.decode(blob)
    except msgspec.ValidationError:
        return _flatten(msgspec.msgpack.decode(blob))  # written before sealing: `rekey` seals it
    out: Fields = {}
    for path, token in record.sealed.items():
        if only is not None and path not in only:
            continue  # opening costs a decryption each: open what the caller reads
        kid = token_kid(token)
        key = keyring.get(kid)
        if key is None:
            raise KeyUnavailable(
                f"personal data of order {order_id!r} ({path}) is sealed with key {kid!r}, which is"
                f" not in WAYPOST_PII_ENCRYPTION_KEYS (it has {', '.join(k.kid for k in keyring.keys)})",
                kid=kid,
            )
        start = 2 + len(kid)
        nonce, ct = token[start : start + NONCE_BYTES], token[start + NONCE_BYTES :]
        try:
            plain = key.aead.decrypt(nonce, ct, _aad(order_id, path))
        except InvalidTag:
            raise KeyUnavailable(
                f"personal data of order {order_id!r} ({path}) does not open with key {kid!r}:"
                " a different key under that id, or a token that belongs to another row",
                kid=kid,
            ) from None
        out[path] = _value_decoder.decode(plain)
    return out


def _flatten(tree: Any, prefix: str = "") -> Fields:
    out: Fields = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(_flatten(v, path + "."))
            elif isinstance(v, str | int | float) and not isinstance(v, bool) and v != "":
                out[path] = float(v) if isinstance(v, int) else v
    return out


@dataclass
class RekeyReport:
    rows: int = 0
    resealed: int = 0  # under an older key, or legacy plain rows
    refs_filled: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "resealed": self.resealed, "refs_filled": self.refs_filled}


def rekey(store: Store, keyring: Keyring, *, batch: int = 500) -> RekeyReport:
    """Re-seal every order's personal data under the newest key, one batch per transaction.

    Rows already wholly under the newest key are left as they are, so a second run (or one that
    was interrupted and started again) costs a read of the table and nothing else. Rows from
    before this release also get their `customer_ref` column, copied from the published order.
    """
    report = RekeyReport()
    newest = keyring.newest.kid
    after = ""
    while True:
        with store.transaction() as tx:
            rows = tx.execute(
                "SELECT order_id, pii, customer_ref FROM customer_order WHERE order_id > ?"
                " ORDER BY order_id LIMIT ?",
                (after, batch),
            ).fetchall()
            if not rows:
                return report
            for order_id, blob, ref in rows:
                report.rows += 1
                blob = bytes(blob)
                kids = kids_of(blob)
                if kids is None or kids - {newest}:
                    fields = open_pii(keyring, order_id, blob)
                    tx.execute(
                        "UPDATE customer_order SET pii = ? WHERE order_id = ?",
                        (seal(keyring, order_id, fields), order_id),
                    )
                    report.resealed += 1
                if ref is None:
                    found = tx.get(ChangeKinds.ORDER, order_id)
                    if found is not None:
                        order: Order = decode_entity(ChangeKinds.ORDER, found[1])
                        tx.execute(
                            "UPDATE customer_order SET customer_ref = ? WHERE order_id = ?",
                            (order.customer_ref, order_id),
                        )
                        report.refs_filled += 1
            after = str(rows[-1][0])


def check_keys(store: Store, keyring: Keyring, *, sample: int = 200) -> set[str]:
    """Key ids the newest orders use that the ring lacks (logged at start-up, not fatal)."""
    with store.reader() as r:
        rows = r.execute(
            "SELECT pii FROM customer_order ORDER BY placed_at DESC LIMIT ?", (sample,)
        ).fetchall()
    used: set[str] = set()
    legacy = 0
    for (blob,) in rows:
        kids = kids_of(bytes(blob))
        if kids is None:
            legacy += 1
        else:
            used |= kids
    missing = {k for k in used if keyring.get(k) is None}
    if missing:
        log.error(
            "orders are sealed with key ids %s that WAYPOST_PII_ENCRYPTION_KEYS lacks: their personal"
            " data cannot be read until those keys are restored",
            ", ".join(sorted(missing)),
        )
    if legacy:
        log.warning("%s recent orders hold personal data in plain text: run `python -m origin rekey`", legacy)
    return missing
