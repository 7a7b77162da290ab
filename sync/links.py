"""How a shopper proves a parcel is theirs, as the origin issues it and edges check it.

Postcodes: the origin ships `postcode_hmac`, HMAC-SHA256 of the normalized full postcode keyed
with `WAYPOST_POSTCODE_KEY`, so an edge can check what a shopper types without holding it.

Signed tokens (API.md, `POST /v1/links`):

`<base64url(tracking_number "." expiry)>.<base64url(HMAC-SHA256(secret, purpose ":" payload))>`,
unpadded. The purpose separates a link (`link`) from the cookie an edge sets after a postcode
check (`cookie`), so neither can be replayed as the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(secret: bytes, tracking_number: str, expires_at: int, purpose: str = "link") -> str:
    payload = _b64(f"{tracking_number}.{expires_at}".encode())
    mac = hmac.new(secret, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify_token(secret: bytes, token: str, tracking_number: str, now: float, purpose: str = "link") -> bool:
    """True when `token` is ours, for this tracking number, and not expired."""
    payload, _, mac = token.partition(".")
    if not payload or not mac:
        return False
    expected = hmac.new(secret, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return False
        number, _, expiry = _unb64(payload).decode().rpartition(".")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return number == tracking_number and expiry.isdigit() and int(expiry) > now


def normalize_postcode(postcode: str) -> str:
    return re.sub(r"[\s-]", "", postcode).upper()


def postcode_hmac(key: bytes, postcode: str) -> str:
    return hmac.new(key, normalize_postcode(postcode).encode(), hashlib.sha256).hexdigest()[:32]


def postcode_matches(key: bytes, typed: str, expected_hmac: str) -> bool:
    if not normalize_postcode(typed):
        return False
    return hmac.compare_digest(postcode_hmac(key, typed), expected_hmac)
