"""What both aggregator endpoints share: the request flow, time parsing, one transaction.

An adapter turns a verified payload into a `Batch`: the tracking number, the whole checkpoint
history as `TrackingEvent`s, the carrier's ETA and the codes the mapping tables did not know.
`apply_batch` merges the events through `shipments.ingest_event` (the one sanitizer, the one
status rule) in a single transaction, so a webhook is one change-log row at most and a payload
seen before is no change at all: neither provider signs a timestamp, and idempotent merging is
what makes a replay harmless.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import msgspec
from anyio import to_thread
from prometheus_client import CollectorRegistry, Counter
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response

from origin.errors import InvalidInput, NotConfigured, Unauthorized
from origin.http import json_response, read_body
from origin.pii import Keyring
from origin.settings import OriginSettings
from origin.shipments import TrackingEvent, ingest_event, utc
from origin.store import Store, Tx
from sync.entities import ChangeKinds, decode_entity, encode_entity
from sync.inbound import utc_time

MESSAGE_MAX = 500  # TrackingEvent's limits: the structs are built here, not decoded
LOCATION_MAX = 200
CODE_MAX = 64
_TRACKING_NUMBER = re.compile(r"^[A-Za-z0-9-]{4,40}$")
_NOT_SLUG = re.compile(r"[^a-z0-9_-]+")

Verify = Callable[[str, Mapping[str, str], bytes], None]


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    tracking_number: str
    events: list[TrackingEvent]
    eta: datetime | None = None
    unknown_codes: list[str] = []


Adapt = Callable[[bytes], Batch | None]  # None: a verified event that is not about tracking


class AggregatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhooks = Counter(
            "waypost_aggregator_webhooks",
            "Aggregator webhooks by provider and outcome",
            ["provider", "outcome"],
            registry=registry,
        )
        self.unknown_codes = Counter(
            "waypost_aggregator_unknown_codes",
            "Aggregator status codes in no mapping table, mapped to the default",
            ["provider", "code"],
            registry=registry,
        )


def metrics_of(state: State) -> AggregatorMetrics:
    """The counters, registered on the app's registry when the app starts."""
    found: AggregatorMetrics = state.metrics.aggregators
    return found


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO 8601 date or time → an aware UTC datetime; empty → None (it cannot be placed).

    A time without an offset is taken as UTC. AfterShip documents `checkpoint_time` as the
    checkpoint's local time with or without an offset, and a bare date for some carriers; with
    no offset there is no way to know the zone, and UTC keeps replays identical.
    """
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
        return utc_time(at.replace(tzinfo=UTC) if at.tzinfo is None else at, "time")
    except ValueError as exc:
        detail = f"{value!r} is not a usable ISO 8601 time ({exc}) - at `{field}`"
        raise InvalidInput(detail, field=field) from None


def clip(text: str | None, limit: int) -> str:
    return (text or "").strip()[:limit]


def place(*parts: str | None) -> str:
    """A scan's place from its city, state and country, each once ("HOUSTON, TX")."""
    seen: list[str] = []
    for part in parts:
        p = (part or "").strip()
        if p and p.lower() not in (s.lower() for s in seen):
            seen.append(p)
    return clip(", ".join(seen), LOCATION_MAX)


def carrier_slug(name: str | None, fallback: str) -> str:
    """A carrier name as waypost spells carriers: "USPS" → "usps", "Canada Post" → "canada_post"."""
    slug = _NOT_SLUG.sub("_", (name or "").strip().lower()).strip("_")[:32]
    return slug or fallback


def checked_tracking_number(value: str, field: str) -> str:
    value = value.strip()
    if not _TRACKING_NUMBER.match(value):
        raise InvalidInput(
            f"tracking number {value[:60]!r} is not 4-40 letters, digits or '-' - at `{field}`",
            field=field,
        )
    return value


def with_eta(events: list[TrackingEvent], eta: datetime | None) -> list[TrackingEvent]:
    """Events oldest first, the newest carrying the ETA (the merge keeps it only if it is latest)."""
    ordered = sorted(events, key=lambda e: e.occurred_at)
    if eta is not None and ordered:
        ordered[-1] = msgspec.structs.replace(ordered[-1], eta=eta)
    return ordered


def revise_eta(tx: Tx, tracking_number: str, eta: datetime, as_of: datetime | None) -> bool:
    """Take a new ETA that came without a new checkpoint (AfterShip `edd_revise`, an EasyPost
    `tracker.updated` that only moved `est_delivery_date`), if the payload is not older than
    the shipment's latest event. True when it changed the shipment."""
    found = tx.get(ChangeKinds.SHIPMENT, tracking_number, for_update=True)
    if found is None:
        return False
    bucket, body = found
    shipment = decode_entity(ChangeKinds.SHIPMENT, body)
    eta = eta.astimezone(UTC)
    if shipment.eta == eta:
        return False
    if as_of is not None and shipment.events and as_of < shipment.events[-1].occurred_at:
        return False
    revised = msgspec.structs.replace(shipment, eta=eta, updated_at=utc(tx.now), version=shipment.version + 1)
    tx.put(bucket, ChangeKinds.SHIPMENT, tracking_number, encode_entity(revised))
    return True


def apply_batch(store: Store, batch: Batch, keyring: Keyring | None = None) -> dict[str, int | str]:
    """Merge a payload's events and ETA in one transaction; say what changed."""
    events = with_eta(batch.events, batch.eta)
    with store.transaction() as tx:
        tally = Tally(ingest_event(tx, ev, keyring) for ev in events)
        as_of = events[-1].occurred_at if events else None
        eta_revised = batch.eta is not None and revise_eta(tx, batch.tracking_number, batch.eta, as_of)
    if tally["applied"] or eta_revised:
        outcome = "applied"
    elif tally["parked"]:
        outcome = "parked"
    else:
        outcome = "unchanged"
    return {
        "status": outcome,
        "applied": tally["applied"],
        "duplicate": tally["duplicate"],
        "parked": tally["parked"],
    }


async def receive(request: Request, provider: str, secret: str, verify: Verify, adapt: Adapt) -> Response:
    """The flow of both endpoints: configured? → body (413) → signature (401) → payload (400)
    → one transaction → 202."""
    settings: OriginSettings = request.app.state.settings
    metrics = metrics_of(request.app.state)
    if not secret:
        metrics.webhooks.labels(provider, "not_configured").inc()
        variable = f"WAYPOST_{provider.upper()}_SECRET"
        raise NotConfigured(f"{provider} webhooks are off: set {variable} to the secret it signs with")
    body = await read_body(request, settings.max_webhook_bytes)
    try:
        verify(secret, request.headers, body)
    except Unauthorized:
        metrics.webhooks.labels(provider, "unauthorized").inc()
        raise
    batch = adapt(body)
    if batch is None:
        metrics.webhooks.labels(provider, "ignored").inc()
        return json_response({"status": "ignored"}, 200)
    for code in batch.unknown_codes:
        metrics.unknown_codes.labels(provider, code[:CODE_MAX]).inc()
    store: Store = request.app.state.store
    result = await to_thread.run_sync(apply_batch, store, batch, settings.pii_keyring)
    metrics.webhooks.labels(provider, str(result["status"])).inc()
    return json_response(result, 202)
