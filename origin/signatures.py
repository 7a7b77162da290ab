"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

`webhook-signature` holds one or more space-separated `v1,<base64 HMAC-SHA256>` entries over
`"{webhook-id}.{webhook-timestamp}.{body}"`; the timestamp must lie within five minutes of
now, either way. Several secrets may be configured during a rotation: any of them verifies.
Written here rather than taken from the `standardwebhooks` package because the check must run
on the service's injected clock (tests move time, they never sleep).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from origin.errors import Unauthorized

TOLERANCE_S = 300


def parse_secret(secret: str) -> bytes:
    """`whsec_<base64>` (or bare base64) → the key bytes."""
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"webhook secret {secret[:10]}… is not base64: {exc}") from None


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secrets: Sequence[bytes], headers: Mapping[str, str], body: bytes, now: float) -> str:
    """Check a request's signature; return its `webhook-id`, or raise Unauthorized."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        raise Unauthorized(
            "missing webhook-id, webhook-timestamp or webhook-signature header",
            code="bad_signature",
        )
    try:
        timestamp = int(ts)
    except ValueError:
        raise Unauthorized(f"webhook-timestamp {ts!r} is not an integer", code="bad_signature") from None
    if timestamp < now - TOLERANCE_S:
        raise Unauthorized("webhook-timestamp is too old", code="stale_signature")
    if timestamp > now + TOLERANCE_S:
        raise Unauthorized("webhook-timestamp is in the future", code="future_signature")
    offered = [s.partition(",")[2] for s in sigs.split() if s.startswith("v1,")]
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body).partition(",")[2]
        for candidate in offered:
            if hmac.compare_digest(expected.encode(), candidate.encode()):
                return msg_id
    raise Unauthorized("no webhook-signature matches", code="bad_signature")
