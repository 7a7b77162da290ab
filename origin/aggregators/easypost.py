"""EasyPost tracker webhooks: `POST /v1/webhooks/easypost`.

EasyPost posts an Event (https://docs.easypost.com/docs/events) to each configured webhook URL;
`tracker.created` and `tracker.updated` carry a Tracker (https://docs.easypost.com/docs/trackers)
in `result`, with the whole scan history in `tracking_details`. Other events (batches, refunds…)
are acknowledged and ignored, so an account that sends everything to one URL keeps working.

Signature (https://docs.easypost.com/guides/webhooks-guide, and `validate_webhook` in the official
easypost-python client): `X-Hmac-Signature: hmac-sha256-hex=<hex HMAC-SHA256 of the raw body>`,
keyed with the webhook secret after Unicode NFKD normalisation, encoded as UTF-8. EasyPost signs
no timestamp.

Only the fields below are decoded; everything else in the payload — `signed_by`, the
`carrier_detail` addresses, each scan's `zip` and free-form `description` — is dropped by the
decoder and never reaches the store.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Mapping

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from origin.aggregators import ingest
from origin.aggregators.mapping import easypost_status
from origin.errors import Unauthorized
from origin.http import decode_json
from origin.settings import OriginSettings
from origin.shipments import TrackingEvent

PROVIDER = "easypost"
HEADER = "x-hmac-signature"  # Starlette's headers match names case-insensitively
PREFIX = "hmac-sha256-hex="


class TrackingLocation(msgspec.Struct, frozen=True, kw_only=True):
    city: str | None = None
    state: str | None = None
    country: str | None = None  # `zip` is left out on purpose: a delivery scan's zip is the shopper's


class TrackingDetail(msgspec.Struct, frozen=True, kw_only=True):
    at: str | None = msgspec.field(default=None, name="datetime")
    status: str | None = None
    status_detail: str | None = None
    message: str | None = None
    tracking_location: TrackingLocation | None = None


class Tracker(msgspec.Struct, frozen=True, kw_only=True):
    tracking_code: str
    carrier: str | None = None
    est_delivery_date: str | None = None
    tracking_details: list[TrackingDetail] = []


class ResultKind(msgspec.Struct, frozen=True, kw_only=True):
    object: str | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    description: str = ""
    result: ResultKind | None = None


class TrackerEvent(msgspec.Struct, frozen=True, kw_only=True):
    result: Tracker


def signature(secret: str, body: bytes) -> str:
    """The header value EasyPost sends for `body`."""
    key = unicodedata.normalize("NFKD", secret).encode("utf-8")
    return PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    offered = headers.get(HEADER)
    if not offered:
        raise Unauthorized("missing X-Hmac-Signature header", code="bad_signature")
    if not hmac.compare_digest(signature(secret, body).encode(), offered.strip().encode()):
        raise Unauthorized(
            "X-Hmac-Signature does not match the body signed with WAYPOST_EASYPOST_SECRET",
            code="bad_signature",
        )


def to_batch(body: bytes) -> ingest.Batch | None:
    """A tracker Event → the tracker's whole history as events; None for other events."""
    envelope = decode_json(body, Envelope)
    if envelope.result is None or envelope.result.object not in ("Tracker", None):
        return None
    if not envelope.description.startswith("tracker."):
        return None
    tracker = decode_json(body, TrackerEvent).result
    tn = ingest.checked_tracking_number(tracker.tracking_code, "$.result.tracking_code")
    carrier = ingest.carrier_slug(tracker.carrier, PROVIDER)
    events: list[TrackingEvent] = []
    unknown: list[str] = []
    for i, d in enumerate(tracker.tracking_details):
        at = ingest.parse_time(d.at, f"$.result.tracking_details[{i}].datetime")
        if at is None:
            continue
        mapped = easypost_status(d.status, d.status_detail)
        unknown.extend(mapped.unknown)
        loc = d.tracking_location or TrackingLocation()
        events.append(
            TrackingEvent(
                tracking_number=tn,
                carrier=carrier,
                status=mapped.status,
                message=ingest.clip(d.message, ingest.MESSAGE_MAX),
                location=ingest.place(loc.city, loc.state, loc.country),
                occurred_at=at,
                code=ingest.clip(f"{d.status}/{d.status_detail}", ingest.CODE_MAX),
            )
        )
    eta = ingest.parse_time(tracker.est_delivery_date, "$.result.est_delivery_date")
    return ingest.Batch(tracking_number=tn, events=events, eta=eta, unknown_codes=unknown)


async def easypost_webhook(request: Request) -> Response:
    settings: OriginSettings = request.app.state.settings
    return await ingest.receive(request, PROVIDER, settings.easypost_secret, verify, to_batch)
