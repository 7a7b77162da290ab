"""Shipments and their tracking events: the status rule, parking, registration.

The rule: a shipment's status is the status of its latest event by (`occurred_at`, then the
time the origin received it). A late event joins the timeline without changing the status; a
duplicate (same time, status and location; the carrier is the shipment's) is one event.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

from origin import retention
from origin.orders import order_address
from origin.pii import Keyring
from origin.sanitize import Known, scrub_location, scrub_text
from origin.store import Tx
from sync.entities import (
    ChangeKinds,
    Shipment,
    ShipmentEvent,
    Status,
    decode_entity,
    encode_entity,
    region_bucket,
)
from sync.inbound import normalize_times

PARK_DAYS = 14

TrackingNumber = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{4,40}$")]
Carrier = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,32}$")]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]


class TrackingEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One carrier event, as the generic webhook receives it. Unknown fields are dropped."""

    tracking_number: TrackingNumber
    carrier: Carrier
    status: Status
    message: Annotated[str, msgspec.Meta(max_length=500)] = ""
    location: Annotated[str, msgspec.Meta(max_length=200)] = ""
    occurred_at: UtcTime
    eta: UtcTime | None = None
    code: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    def __post_init__(self) -> None:
        normalize_times(self, "occurred_at", "eta")


class ParkedEvent(msgspec.Struct, frozen=True, kw_only=True):
    event: TrackingEvent
    received_at: datetime


_parked_encoder = msgspec.msgpack.Encoder()
_parked_decoder = msgspec.msgpack.Decoder(ParkedEvent)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def sanitized(ev: TrackingEvent, known: Known | None = None) -> TrackingEvent:
    """The event with personal data masked: `known` is its order's address, when known."""
    message, location = scrub_text(ev.message, known), scrub_location(ev.location, known)
    if message == ev.message and location == ev.location:
        return ev
    return msgspec.structs.replace(ev, message=message, location=location)


def sanitized_events(shipment: Shipment, known: Known | None) -> list[ShipmentEvent]:
    """A stored timeline through today's sanitizer (what `origin.rescrub` rewrites)."""
    return [
        msgspec.structs.replace(
            e, message=scrub_text(e.message, known), location=scrub_location(e.location, known)
        )
        for e in shipment.events
    ]


def merge_event(shipment: Shipment, ev: TrackingEvent, received_at: datetime) -> Shipment | None:
    """The shipment with `ev` merged in, or None when it is a duplicate."""
    at = ev.occurred_at.astimezone(UTC)
    for e in shipment.events:
        if e.occurred_at == at and e.status == ev.status and e.location == ev.location:
            return None
    new = ShipmentEvent(
        occurred_at=at,
        status=ev.status,
        message=ev.message,
        location=ev.location,
        received_at=received_at,
    )
    events = sorted([*shipment.events, new], key=lambda e: (e.occurred_at, e.received_at))
    latest = events[-1]
    eta = shipment.eta
    if ev.eta is not None and latest is new:
        eta = ev.eta.astimezone(UTC)
    return msgspec.structs.replace(
        shipment,
        status=latest.status,
        eta=eta,
        events=events,
        updated_at=received_at,
        version=shipment.version + 1,
    )


def seen_webhook(tx: Tx, webhook_id: str) -> bool:
    """Record a webhook id; True when it was already recorded (a replay)."""
    cur = tx.execute(
        "INSERT INTO webhook_seen (id, received_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
        (webhook_id, tx.now),
    )
    return bool(cur.rowcount == 0)


def ingest_event(tx: Tx, ev: TrackingEvent, keyring: Keyring | None = None) -> str:
    """Apply one event, sanitized: "applied", "duplicate" or "parked".

    A parked event has no order yet, so only the generic patterns mask it; registration
    sanitizes it again with the order's address before it joins the timeline. `keyring` opens
    the order's sealed address (without it only the generic patterns apply)."""
    found = tx.get(ChangeKinds.SHIPMENT, ev.tracking_number, for_update=True)
    received = utc(tx.now)
    if found is None:
        ev = sanitized(ev)
        tx.execute(
            "INSERT INTO parked_event (tracking_number, carrier, event, received_at) VALUES (?, ?, ?, ?)",
            (
                ev.tracking_number,
                ev.carrier,
                _parked_encoder.encode(ParkedEvent(event=ev, received_at=received)),
                tx.now,
            ),
        )
        return "parked"
    bucket, body = found
    current = decode_entity(ChangeKinds.SHIPMENT, body)
    ev = sanitized(ev, order_address(tx, current.order_id, keyring))
    merged = merge_event(current, ev, received)
    if merged is None:
        return "duplicate"
    retention.status_changed(tx, current, merged)
    tx.put(bucket, ChangeKinds.SHIPMENT, ev.tracking_number, encode_entity(merged))
    return "applied"


def register_shipment(
    tx: Tx,
    *,
    tracking_number: str,
    carrier: str,
    order_id: str,
    site_id: str,
    region: str,
    keyring: Keyring | None = None,
) -> Shipment:
    """Create a shipment (or return the existing one) and apply events parked for it."""
    found = tx.get(ChangeKinds.SHIPMENT, tracking_number, for_update=True)
    if found is not None:
        existing: Shipment = decode_entity(ChangeKinds.SHIPMENT, found[1])
        return existing
    now = utc(tx.now)
    shipment = Shipment(
        tracking_number=tracking_number,
        carrier=carrier,
        order_id=order_id,
        site_id=site_id,
        status="pending",
        eta=None,
        events=[],
        updated_at=now,
        version=1,
    )
    cutoff = tx.now - PARK_DAYS * 86400
    rows = tx.execute(
        "SELECT event FROM parked_event WHERE tracking_number = ? AND received_at >= ? ORDER BY received_at",
        (tracking_number, cutoff),
    ).fetchall()
    known = order_address(tx, order_id, keyring) if rows else None
    for (blob,) in rows:
        parked = _parked_decoder.decode(bytes(blob))
        merged = merge_event(shipment, sanitized(parked.event, known), parked.received_at)
        if merged is not None:
            shipment = merged
    tx.execute("DELETE FROM parked_event WHERE tracking_number = ?", (tracking_number,))
    retention.track(tx, shipment)
    tx.put(region_bucket(region), ChangeKinds.SHIPMENT, tracking_number, encode_entity(shipment))
    return shipment


def drop_stale_parked(tx: Tx) -> int:
    cur = tx.execute("DELETE FROM parked_event WHERE received_at < ?", (tx.now - PARK_DAYS * 86400,))
    return int(cur.rowcount)


def forget_webhook_ids(tx: Tx, older_than: timedelta) -> int:
    """Ids older than the signature tolerance can never be replayed: stop keeping them."""
    cur = tx.execute("DELETE FROM webhook_seen WHERE received_at < ?", (tx.now - older_than.total_seconds(),))
    return int(cur.rowcount)
