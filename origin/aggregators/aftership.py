"""AfterShip Tracking webhooks: `POST /v1/webhooks/aftership`.

AfterShip posts `{"event", "event_id", "is_tracking_first_tag", "msg", "ts"}`
(https://www.aftership.com/docs/tracking/webhook/webhook-specifications); `msg` is the whole
Tracking object for all three tracking events (`tracking_update`, `edd_revise`,
`tracking_pending_time`), with every checkpoint so far in `checkpoints`.

Signature (https://www.aftership.com/docs/tracking/webhook/webhook-signature): the
`aftership-hmac-sha256` header holds the base64 HMAC-SHA256 of the raw body, keyed with the
webhook secret from Settings > Webhooks. AfterShip signs no timestamp; `ts` is not signed.

Only the fields below are decoded. `customer_name`, `emails`, `smses`, `customers`, `signed_by`,
the shipping addresses and each checkpoint's free-form `location`, `zip`/`postal_code` and
`coordinates` are dropped by the decoder: a scan's place is built from its city, state and
country only, because `location` is where carriers put the delivery address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from origin.aggregators import ingest
from origin.aggregators.mapping import aftership_status
from origin.errors import Unauthorized
from origin.http import decode_json
from origin.settings import OriginSettings
from origin.shipments import TrackingEvent

PROVIDER = "aftership"
HEADER = "aftership-hmac-sha256"  # sent as "Aftership-Hmac-Sha256"; matched case-insensitively


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    checkpoint_time: str | None = None
    tag: str | None = None
    subtag: str | None = None
    message: str | None = None
    city: str | None = None
    state: str | None = None
    country_name: str | None = None
    country_region_name: str | None = None  # the same, in newer webhook versions


class CourierEstimate(msgspec.Struct, frozen=True, kw_only=True):
    estimated_delivery_date: str | None = None


class LatestEstimate(msgspec.Struct, frozen=True, kw_only=True):
    at: str | None = msgspec.field(default=None, name="datetime")
    at_max: str | None = msgspec.field(default=None, name="datetime_max")


class Tracking(msgspec.Struct, frozen=True, kw_only=True):
    tracking_number: str
    slug: str | None = None
    expected_delivery: str | None = None  # legacy versions
    courier_estimated_delivery_date: CourierEstimate | None = None
    latest_estimated_delivery: LatestEstimate | None = None
    checkpoints: list[Checkpoint] = []


class TrackingKind(msgspec.Struct, frozen=True, kw_only=True):
    tracking_number: str | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    event: str | None = None
    msg: TrackingKind | None = None


class TrackingMessage(msgspec.Struct, frozen=True, kw_only=True):
    msg: Tracking


def signature(secret: str, body: bytes) -> str:
    """The header value AfterShip sends for `body`."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    offered = headers.get(HEADER)
    if not offered:
        raise Unauthorized("missing aftership-hmac-sha256 header", code="bad_signature")
    if not hmac.compare_digest(signature(secret, body).encode(), offered.strip().encode()):
        raise Unauthorized(
            "aftership-hmac-sha256 does not match the body signed with WAYPOST_AFTERSHIP_SECRET",
            code="bad_signature",
        )


def eta_of(t: Tracking) -> str | None:
    """The carrier's newest estimate, whichever field this webhook version carries it in."""
    if t.latest_estimated_delivery and (t.latest_estimated_delivery.at or t.latest_estimated_delivery.at_max):
        return t.latest_estimated_delivery.at or t.latest_estimated_delivery.at_max
    if t.courier_estimated_delivery_date and t.courier_estimated_delivery_date.estimated_delivery_date:
        return t.courier_estimated_delivery_date.estimated_delivery_date
    return t.expected_delivery


def to_batch(body: bytes) -> ingest.Batch | None:
    """A tracking webhook → its whole checkpoint history as events; None without a tracking."""
    envelope = decode_json(body, Envelope)
    if envelope.msg is None or envelope.msg.tracking_number is None:
        return None
    tracking = decode_json(body, TrackingMessage).msg
    tn = ingest.checked_tracking_number(tracking.tracking_number, "$.msg.tracking_number")
    carrier = ingest.carrier_slug(tracking.slug, PROVIDER)
    events: list[TrackingEvent] = []
    unknown: list[str] = []
    for i, c in enumerate(tracking.checkpoints):
        at = ingest.parse_time(c.checkpoint_time, f"$.msg.checkpoints[{i}].checkpoint_time")
        if at is None:
            continue
        mapped = aftership_status(c.tag, c.subtag)
        unknown.extend(mapped.unknown)
        events.append(
            TrackingEvent(
                tracking_number=tn,
                carrier=carrier,
                status=mapped.status,
                message=ingest.clip(c.message, ingest.MESSAGE_MAX),
                location=ingest.place(c.city, c.state, c.country_name or c.country_region_name),
                occurred_at=at,
                code=ingest.clip(c.subtag or c.tag, ingest.CODE_MAX) or None,
            )
        )
    eta = ingest.parse_time(eta_of(tracking), "$.msg.expected_delivery")
    return ingest.Batch(tracking_number=tn, events=events, eta=eta, unknown_codes=unknown)


async def aftership_webhook(request: Request) -> Response:
    settings: OriginSettings = request.app.state.settings
    return await ingest.receive(request, PROVIDER, settings.aftership_secret, verify, to_batch)
