"""EasyPost and AfterShip webhooks in their published formats, end to end over HTTP.

Fixtures are built from payloads the providers publish:

- EasyPost: the Tracker in the "Retrieve a Tracker" example of the Trackers reference
  (https://docs.easypost.com/docs/trackers; EasyPost/examples
  `official/docs/responses/trackers/trackers-retrieve.json`, USPS 9405500207552011812894,
  "Pre-Shipment Info Sent to USPS" → "Shipping Label Created" in HOUSTON TX), wrapped in the
  Event of the Webhooks Guide's "Webhook POST JSON" and "Retrieve an Event" examples
  (https://docs.easypost.com/guides/webhooks-guide; `official/docs/responses/events/
  events-retrieve.json`). The non-tracker event is that guide's `batch.created` example.
- AfterShip: the tracking_update sample body of "Webhook Specifications"
  (https://www.aftership.com/docs/tracking/webhook/webhook-specifications, the v4 sample: USPS
  9361289676091361892011 from BOCA RATON FL to HOLLY RIDGE NC, checkpoint_time without offset).

What was changed in them: the tracking number is a seeded shipment's; dates are moved to 2031
so they come after the seeded history and lead under the status rule; a few later scans in each
provider's own vocabulary complete the journey.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from origin.aggregators import aftership, easypost
from origin.aggregators.mapping import DEFAULT_STATUS
from origin.app import create_app as create_origin
from sync.entities import Shipment
from tests.conftest import (
    AFTERSHIP_SECRET,
    EASYPOST_SECRET,
    Clock,
    Edge,
    Origin,
    ServerThread,
    origin_settings,
    wait_until,
)
from tests.origin.test_webhooks import current, head


class Scan(NamedTuple):
    """A checkpoint: EasyPost `datetime, status, status_detail`, AfterShip `checkpoint_time, tag, subtag`."""

    at: str
    code: str
    subcode: str
    message: str
    city: str | None = None
    state: str | None = None
    country: str | None = None
    zip: str | None = None


HOUSTON = {"city": "HOUSTON", "state": "TX", "zip": "77063"}
CHARLESTON = {"city": "CHARLESTON", "state": "SC", "zip": "29401"}
RALEIGH = {"city": "RALEIGH", "state": "NC"}
EASYPOST_SCANS: list[Scan] = [
    Scan("2031-01-10T00:07:43Z", "pre_transit", "status_update", "Pre-Shipment Info Sent to USPS"),
    Scan("2031-01-10T12:44:43Z", "pre_transit", "status_update", "Shipping Label Created", **HOUSTON),
    Scan(
        "2031-01-11T08:02:00Z",
        "in_transit",
        "arrived_at_facility",
        "Arrived at USPS Regional Origin Facility",
        **HOUSTON,
    ),
    Scan(
        "2031-01-12T05:48:00Z", "in_transit", "arrived_at_destination", "Arrived at Post Office", **CHARLESTON
    ),
    Scan("2031-01-12T06:30:00Z", "out_for_delivery", "out_for_delivery", "Out for Delivery", **CHARLESTON),
    Scan(
        "2031-01-12T15:10:00Z",
        "delivered",
        "arrived_at_destination",
        "Delivered, In/At Mailbox",
        **CHARLESTON,
    ),
]
EASYPOST_STATUSES = [
    "info_received",
    "info_received",
    "in_transit",
    "in_transit",
    "out_for_delivery",
    "delivered",
]
EASYPOST_PLACES = ["", "HOUSTON, TX", "HOUSTON, TX", "CHARLESTON, SC", "CHARLESTON, SC", "CHARLESTON, SC"]

US = "United States"
BOCA = {"city": "BOCA RATON", "state": "FL", "country": US, "zip": "33487"}
WPB = {"city": "WEST PALM BEACH FL DISTRIBUTION CENTER", "country": US}
FAY = {"city": "FAYETTEVILLE NC DISTRIBUTION CENTER ANNEX", "country": US}
HOLLY = {"city": "HOLLY RIDGE", "state": "NC", "country": US, "zip": "28445"}
AFTERSHIP_CHECKPOINTS: list[Scan] = [
    Scan(
        "2031-05-13T13:04:00",
        "InfoReceived",
        "InfoReceived_001",
        "Shipping Label Created, USPS Awaiting Item",
        **BOCA,
    ),
    Scan("2031-05-13T18:10:00", "InTransit", "InTransit_002", "Accepted at USPS Origin Facility", **BOCA),
    Scan(
        "2031-05-13T19:25:00", "InTransit", "InTransit_003", "Arrived at USPS Regional Origin Facility", **WPB
    ),
    Scan(
        "2031-05-14T00:25:00", "InTransit", "InTransit_007", "Departed USPS Regional Origin Facility", **WPB
    ),
    Scan(
        "2031-05-15T13:06:00",
        "InTransit",
        "InTransit_003",
        "Arrived at USPS Regional Destination Facility",
        **FAY,
    ),
    Scan("2031-05-16T05:52:00", "InTransit", "InTransit_007", "Departed USPS Regional Facility", **FAY),
    Scan("2031-05-17T03:45:00", "InTransit", "InTransit_003", "Arrived at Post Office", **HOLLY),
    Scan("2031-05-17T08:12:00", "OutForDelivery", "OutForDelivery_001", "Out for Delivery", **HOLLY),
    Scan("2031-05-17T14:31:00", "Delivered", "Delivered_001", "Delivered, In/At Mailbox", **HOLLY),
]
AFTERSHIP_STATUSES = ["info_received", *["in_transit"] * 6, "out_for_delivery", "delivered"]


def easypost_event(
    tn: str,
    scans: list[Scan],
    *,
    est_delivery_date: str | None = "2031-01-12T23:59:00Z",
    description: str = "tracker.updated",
    **tracker: Any,
) -> dict[str, Any]:
    details = [
        {
            "object": "TrackingDetail",
            "message": message,
            "description": "",
            "status": status,
            "status_detail": detail,
            "datetime": at,
            "source": "USPS",
            "carrier_code": "",
            "tracking_location": {
                "object": "TrackingLocation",
                "city": city,
                "state": state,
                "country": country,
                "zip": zip_,
            },
        }
        for at, status, detail, message, city, state, country, zip_ in scans
    ]
    last = scans[-1] if scans else (None, "unknown", "unknown")
    result = {
        "id": "trk_3898303eff624097a516ab324bb133f3",
        "object": "Tracker",
        "mode": "test",
        "tracking_code": tn,
        "status": last[1],
        "status_detail": last[2],
        "created_at": "2031-01-10T00:07:43Z",
        "updated_at": "2031-01-10T00:07:43Z",
        "signed_by": None,
        "weight": None,
        "est_delivery_date": est_delivery_date,
        "shipment_id": "shp_82d5637d74404d1595eacdc7e5ca9273",
        "carrier": "USPS",
        "tracking_details": details,
        "fees": [],
        "carrier_detail": {
            "object": "CarrierDetail",
            "service": "First-Class Package Service",
            "container_type": None,
            "est_delivery_date_local": None,
            "est_delivery_time_local": None,
            "origin_location": "HOUSTON TX, 77001",
            "destination_location": "CHARLESTON SC, 29401",
            "destination_tracking_location": None,
        },
        "public_url": "https://track.easypost.com/djE6dHJrXzM4OTgzMDNlZmY2MjQwOTdhNTE2YWIzMjRiYjEzM2Yz",
        **tracker,
    }
    return {
        "description": description,
        "mode": "test",
        "previous_attributes": {"status": "in_transit"},
        "created_at": "2031-01-10T00:07:43.000Z",
        "pending_urls": ["example.com/easypost-webhook"],
        "completed_urls": [],
        "updated_at": "2031-01-10T00:07:43.000Z",
        "id": "evt_ad2365c22d1511f0b5364ffbb3e7a1f1",
        "user_id": "user_060ab38db3c04ffaa60f262e5781a9be",
        "status": "pending",
        "object": "Event",
        "result": result,
    }


def aftership_update(
    tn: str,
    checkpoints: list[Scan],
    *,
    expected_delivery: str | None = "2031-05-17",
    event: str = "tracking_update",
    **msg: Any,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        {
            "location": ", ".join(p for p in (city, state, zip_, country) if p),
            "country_name": country,
            "country_iso3": "USA",
            "state": state,
            "city": city,
            "zip": zip_,
            "message": message,
            "coordinates": [],
            "tag": tag,
            "subtag": subtag,
            "subtag_message": subtag,
            "created_at": "2031-05-17T09:05:31+00:00",
            "checkpoint_time": at,
            "slug": "usps",
            "raw_tag": "10",
        }
        for at, tag, subtag, message, city, state, country, zip_ in checkpoints
    ]
    last = checkpoints[-1] if checkpoints else (None, "Pending", "Pending_001")
    return {
        "event_id": "3f645f5e-530b-4062-8695-db6a64420af8",
        "event": event,
        "is_tracking_first_tag": True,
        "msg": {
            "id": "grhrexm6t3hiwkjwq37jd003",
            "tracking_number": tn,
            "title": tn,
            "note": None,
            "origin_country_iso3": "USA",
            "destination_country_iso3": "USA",
            "active": True,
            "order_id": None,
            "order_date": "2031-05-12T08:52:54Z",
            "customer_name": None,
            "source": "web",
            "emails": [],
            "smses": [],
            "return_to_sender": False,
            "custom_fields": {},
            "tag": last[1],
            "subtag": last[2],
            "tracked_count": 1,
            "expected_delivery": expected_delivery,
            "signed_by": None,
            "shipment_type": "Priority Mail",
            "slug": "usps",
            "checkpoints": rows,
            "courier_tracking_link": f"https://tools.usps.com/go/TrackConfirmAction?tLabels={tn}",
            **msg,
        },
        "ts": 1621242332,
    }


@dataclass(frozen=True)
class Provider:
    name: str
    secret: str
    header: str
    sign: Callable[[str, bytes], str]
    payload: Callable[..., dict[str, Any]]
    history: list[Scan]
    statuses: list[str]

    @property
    def path(self) -> str:
        return f"/v1/webhooks/{self.name}"

    def send(
        self,
        target: Origin | httpx.Client,
        doc: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        header: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        sig = signature if signature is not None else self.sign(secret or self.secret, body)
        headers = {"content-type": "application/json", **({header or self.header: sig} if sig else {})}
        http = target.http if isinstance(target, Origin) else target
        return http.post(self.path, content=body, headers=headers)


EASYPOST = Provider(
    "easypost",
    EASYPOST_SECRET,
    "X-Hmac-Signature",
    easypost.signature,
    easypost_event,
    EASYPOST_SCANS,
    EASYPOST_STATUSES,
)
AFTERSHIP = Provider(
    "aftership",
    AFTERSHIP_SECRET,
    "aftership-hmac-sha256",
    aftership.signature,
    aftership_update,
    AFTERSHIP_CHECKPOINTS,
    AFTERSHIP_STATUSES,
)
PROVIDERS = pytest.mark.parametrize("p", [EASYPOST, AFTERSHIP], ids=lambda p: p.name)


def north(origin: Origin, n: int = 1) -> list[Shipment]:
    found = [s for s in origin.world.shipments() if origin.world.region_of(s.site_id) == "north"]
    assert len(found) >= n
    return found[:n]


def utc(at: str) -> datetime:
    t = datetime.fromisoformat(at)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def ours(shipment: Shipment, since: datetime) -> list[tuple[datetime, str, str]]:
    return [(e.occurred_at, e.status, e.location) for e in shipment.events if e.occurred_at >= since]


def unknown_count(origin: Origin, provider: str, code: str) -> float:
    for family in text_string_to_metric_families(origin.http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "waypost_aggregator_unknown_codes_total" and sample.labels == {
                "provider": provider,
                "code": code,
            }:
                return float(sample.value)
    return 0.0


def feed_text(origin: Origin) -> str:
    """Every change of the region's feed, as the raw JSON an edge would read."""
    after, pages = 0, []
    while True:
        r = origin.http.get(
            f"/v1/feed/region:north?after={after}&limit=1000",
            headers={**origin.edge_auth(), "accept": "application/json"},
        )
        assert r.status_code == 200, r.text
        pages.append(r.text)
        page = r.json()
        if len(page["changes"]) < 1000:
            return "\n".join(pages)
        after = int(page["last"])


@PROVIDERS
def test_a_validly_signed_payload_is_accepted_and_applied(origin: Origin, p: Provider) -> None:
    (s,) = north(origin)
    before = head(origin)
    r = p.send(origin, p.payload(s.tracking_number, p.history), header=p.header.upper())
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "applied", "applied": len(p.history), "duplicate": 0, "parked": 0}
    assert head(origin) == before + 1  # the whole history is one change
    assert current(origin, s.tracking_number).status == "delivered"


@PROVIDERS
def test_wrong_secret_tampered_body_and_missing_signature_are_401(origin: Origin, p: Provider) -> None:
    (s,) = north(origin)
    before = head(origin)
    body = json.dumps(p.payload(s.tracking_number, p.history)).encode()
    wrong = p.send(origin, body, secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["error"] == "bad_signature"
    tampered = body.replace(b"Out for Delivery", b"Out for Deliverx")
    assert tampered != body
    r = p.send(origin, tampered, signature=p.sign(p.secret, body))
    assert r.status_code == 401
    missing = p.send(origin, body, signature="")
    assert missing.status_code == 401 and "missing" in missing.json()["detail"]
    assert head(origin) == before


@PROVIDERS
def test_a_payload_replayed_ten_times_changes_nothing_after_the_first(origin: Origin, p: Provider) -> None:
    (s,) = north(origin)
    doc = p.payload(s.tracking_number, p.history)
    assert p.send(origin, doc).json()["status"] == "applied"
    before, shipped = head(origin), current(origin, s.tracking_number)
    for _ in range(10):
        r = p.send(origin, doc)
        assert r.status_code == 202
        assert r.json() == {"status": "unchanged", "applied": 0, "duplicate": len(p.history), "parked": 0}
    assert head(origin) == before
    assert current(origin, s.tracking_number) == shipped


@PROVIDERS
def test_a_history_split_across_webhooks_arriving_newest_first_ends_right(
    origin: Origin, p: Provider
) -> None:
    (s,) = north(origin)
    h = p.history
    chunks = [h[:2], h[2:4], h[4:]]
    etas = ["2031-06-01T10:00:00Z", "2031-06-02T10:00:00Z", "2031-06-03T10:00:00Z"]
    for chunk, eta in reversed(list(zip(chunks, etas, strict=True))):
        field = "est_delivery_date" if p is EASYPOST else "expected_delivery"
        r = p.send(origin, p.payload(s.tracking_number, chunk, **{field: eta}))
        assert r.status_code == 202, r.text

    got = current(origin, s.tracking_number)
    first = utc(h[0][0])
    assert got.status == "delivered"
    assert len(got.events) == len(s.events) + len(h)
    assert [at for at, _, _ in ours(got, first)] == [utc(c[0]) for c in h]  # in time order
    assert [st for _, st, _ in ours(got, first)] == p.statuses
    assert got.eta == utc(etas[-1])  # the newest payload's estimate, though it came first
    if p is AFTERSHIP:  # naive checkpoint_time is taken as UTC
        assert got.events[len(s.events)].occurred_at == datetime(2031, 5, 13, 13, 4, tzinfo=UTC)
    else:
        assert [loc for _, _, loc in ours(got, first)] == EASYPOST_PLACES


def test_easypost_unknown_codes_are_counted_and_mapped_to_the_default(origin: Origin) -> None:
    (s,) = north(origin)
    scans = [
        *EASYPOST_SCANS[:3],
        Scan("2031-01-11T20:00:00Z", "teleported", "status_update", "Beamed to the depot", **RALEIGH),
        Scan("2031-01-11T21:00:00Z", "in_transit", "hyperspace_hop", "Hopped", **RALEIGH),
    ]
    r = EASYPOST.send(origin, easypost_event(s.tracking_number, scans))
    assert r.status_code == 202 and r.json()["applied"] == 5
    got = current(origin, s.tracking_number)
    assert got.status == DEFAULT_STATUS
    assert got.events[-2].status == DEFAULT_STATUS and got.events[-2].message == "Beamed to the depot"
    assert unknown_count(origin, "easypost", "teleported") == 1
    assert unknown_count(origin, "easypost", "hyperspace_hop") == 1
    assert unknown_count(origin, "easypost", "status_update") == 0


def test_aftership_unknown_codes_are_counted_and_mapped_to_the_default(origin: Origin) -> None:
    (s,) = north(origin)
    checkpoints = [
        *AFTERSHIP_CHECKPOINTS[:2],
        Scan("2031-05-14T01:00:00", "Teleported", "Teleported_001", "Beamed to the depot", **RALEIGH),
    ]
    r = AFTERSHIP.send(origin, aftership_update(s.tracking_number, checkpoints))
    assert r.status_code == 202 and r.json()["applied"] == 3
    assert current(origin, s.tracking_number).status == DEFAULT_STATUS
    assert unknown_count(origin, "aftership", "Teleported") == 1
    assert unknown_count(origin, "aftership", "Teleported_001") == 1
    # An unknown subtag under a known tag: counted, and the tag decides.
    late = Scan("2031-05-15T01:00:00", "Delivered", "Delivered_099", "Left in the barn", **RALEIGH)
    r = AFTERSHIP.send(origin, aftership_update(s.tracking_number, [*checkpoints, late]))
    assert r.json()["applied"] == 1
    assert current(origin, s.tracking_number).status == "delivered"
    assert unknown_count(origin, "aftership", "Delivered_099") == 1
    assert unknown_count(origin, "aftership", "Teleported") == 2  # the whole history came again


NAME, SURNAME = "Hermione", "Featherstonehaugh"
EMAIL, PHONE, STREET, POSTCODE = "hermione.f@example.org", "+1 415 555 0199", "221B Baker Street", "NW1 6XE"
PLANTED = [NAME, SURNAME, EMAIL, "555 0199", "5550199", STREET, "Baker", POSTCODE]


def planted_easypost(tn: str) -> dict[str, Any]:
    scans = [
        *EASYPOST_SCANS[:4],
        Scan(
            "2031-01-12T06:30:00Z",
            "out_for_delivery",
            "out_for_delivery",
            f"Out for Delivery, driver will call {PHONE} or write to {EMAIL}",
            "CHARLESTON",
            "SC",
            None,
            POSTCODE,
        ),
        Scan(
            "2031-01-12T15:10:00Z",
            "delivered",
            "arrived_at_destination",
            f"Delivered, signed for by {NAME.upper()} {SURNAME.upper()}",
            "CHARLESTON",
            "SC",
            None,
            POSTCODE,
        ),
    ]
    doc = easypost_event(tn, scans, signed_by=f"{NAME} {SURNAME}")
    result = doc["result"]
    result["carrier_detail"]["destination_location"] = f"{STREET}, London {POSTCODE}"
    result["tracking_details"][-1]["description"] = f"Left with {NAME} at {STREET}"
    result["buyer_address"] = {"name": f"{NAME} {SURNAME}", "email": EMAIL, "phone": PHONE, "street1": STREET}
    return doc


def planted_aftership(tn: str) -> dict[str, Any]:
    checkpoints = [
        *AFTERSHIP_CHECKPOINTS[:7],
        Scan(
            "2031-05-17T08:12:00",
            "OutForDelivery",
            "OutForDelivery_001",
            f"Out for Delivery, driver will call {PHONE} or write to {EMAIL}",
            "HOLLY RIDGE",
            "NC",
            "United States",
            POSTCODE,
        ),
        Scan(
            "2031-05-17T14:31:00",
            "Delivered",
            "Delivered_003",
            f"Delivered, signed for by {NAME.upper()} {SURNAME.upper()}",
            "HOLLY RIDGE",
            "NC",
            "United States",
            POSTCODE,
        ),
    ]
    doc = aftership_update(
        tn,
        checkpoints,
        customer_name=f"{NAME} {SURNAME}",
        emails=[EMAIL],
        smses=[PHONE],
        signed_by=f"{NAME} {SURNAME}",
        customers=[{"role": "buyer", "name": f"{NAME} {SURNAME}", "email": EMAIL, "phone_number": PHONE}],
        destination_raw_location=f"{STREET}, London {POSTCODE}",
    )
    for row in doc["msg"]["checkpoints"][-2:]:
        row["location"] = f"{STREET}, HOLLY RIDGE, NC {POSTCODE}"
        row["postal_code"] = POSTCODE
    return doc


@pytest.mark.parametrize(
    ("p", "planted"),
    [(EASYPOST, planted_easypost), (AFTERSHIP, planted_aftership)],
    ids=["easypost", "aftership"],
)
def test_planted_personal_fields_are_absent_from_every_change(
    origin: Origin, p: Provider, planted: Callable[[str], dict[str, Any]]
) -> None:
    (s,) = north(origin)
    r = p.send(origin, planted(s.tracking_number))
    assert r.status_code == 202, r.text
    assert r.json()["applied"] == (9 if p is AFTERSHIP else 6)
    text = feed_text(origin)
    assert s.tracking_number in text and "signed for by ***" in text  # the checkpoints did arrive
    for value in PLANTED:
        assert value.lower() not in text.lower(), value


def test_a_new_eta_without_a_new_checkpoint_updates_the_shipment(origin: Origin) -> None:
    (s,) = north(origin)
    h = AFTERSHIP_CHECKPOINTS[:7]
    AFTERSHIP.send(origin, aftership_update(s.tracking_number, h, expected_delivery="2031-05-17"))
    before = head(origin)
    r = AFTERSHIP.send(
        origin, aftership_update(s.tracking_number, h, expected_delivery="2031-05-19", event="edd_revise")
    )
    assert r.json()["status"] == "applied" and r.json()["applied"] == 0
    assert head(origin) == before + 1
    assert current(origin, s.tracking_number).eta == datetime(2031, 5, 19, tzinfo=UTC)
    # An older payload's estimate does not overwrite it.
    AFTERSHIP.send(origin, aftership_update(s.tracking_number, h[:3], expected_delivery="2031-05-16"))
    assert current(origin, s.tracking_number).eta == datetime(2031, 5, 19, tzinfo=UTC)


def test_easypost_events_that_are_not_about_trackers_are_acknowledged_and_ignored(origin: Origin) -> None:
    before = head(origin)
    batch = {
        "mode": "production",
        "description": "batch.created",
        "previous_attributes": {"state": "purchasing"},
        "result": {"id": "batch_...", "object": "Batch", "state": "purchased", "num_shipments": 1},
        "id": "evt_...",
        "object": "Event",
    }
    r = EASYPOST.send(origin, batch)
    assert r.status_code == 200 and r.json() == {"status": "ignored"}
    assert head(origin) == before


@PROVIDERS
def test_bad_payloads_are_4xx_naming_the_field(origin: Origin, p: Provider) -> None:
    r = p.send(origin, p.payload("not a tracking number!", p.history[:1]))
    field = "$.result.tracking_code" if p is EASYPOST else "$.msg.tracking_number"
    assert r.status_code == 400 and field in r.json()["detail"] and r.json()["field"] == field
    doc = p.payload("ABCD12345", p.history[:1])
    details = doc["result"]["tracking_details"] if p is EASYPOST else doc["msg"]["checkpoints"]
    details[0]["datetime" if p is EASYPOST else "checkpoint_time"] = "last tuesday"
    r = p.send(origin, doc)
    assert r.status_code == 400 and "[0]" in r.json()["detail"]
    assert p.send(origin, b"{not json").json()["error"] == "invalid_json"
    assert p.send(origin, b"{}" + b" " * (65 * 1024)).status_code == 413


def test_easypost_secret_is_nfkd_normalised_as_its_clients_do(tmp_path: Path, clock: Clock) -> None:
    secret = "ﬁle-ｓｅｃｒｅｔ-①"  # a ligature, full-width letters and a circled digit
    settings = origin_settings(tmp_path / "o", clock, easypost_secret=secret)
    with ServerThread(create_origin(settings)) as server, httpx.Client(base_url=server.url) as http:
        body = json.dumps(easypost_event("PARK0000003", EASYPOST_SCANS[:1])).encode()
        r = EASYPOST.send(http, body, signature=easypost.signature("file-secret-1", body))
        assert r.status_code == 202 and r.json()["status"] == "parked"
        raw = "hmac-sha256-hex=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert EASYPOST.send(http, body, signature=raw).status_code == 401


def test_a_missing_secret_is_503_naming_the_setting(tmp_path: Path, clock: Clock) -> None:
    settings = origin_settings(tmp_path / "o", clock, easypost_secret="", aftership_secret="")
    with ServerThread(create_origin(settings)) as server, httpx.Client(base_url=server.url) as http:
        for p, variable in ((EASYPOST, "WAYPOST_EASYPOST_SECRET"), (AFTERSHIP, "WAYPOST_AFTERSHIP_SECRET")):
            r = p.send(http, p.payload("ABCD12345", p.history))
            assert r.status_code == 503
            assert r.json()["error"] == "not_configured" and variable in r.json()["detail"]


def test_aggregator_fed_shipments_show_on_an_edge(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url, "north")
    ep, af = north(origin, 2)
    assert EASYPOST.send(origin, easypost_event(ep.tracking_number, EASYPOST_SCANS)).status_code == 202
    assert (
        AFTERSHIP.send(origin, aftership_update(af.tracking_number, AFTERSHIP_CHECKPOINTS[:8])).status_code
        == 202
    )

    def track(tn: str) -> dict[str, Any]:
        body: dict[str, Any] = edge.http.get(f"/v1/track/{tn}").json()
        return body

    wait_until(lambda: track(ep.tracking_number)["status"] == "delivered", what="EasyPost status on the edge")
    wait_until(lambda: track(af.tracking_number)["status"] == "out_for_delivery", what="AfterShip status")

    for tn, history, n in (
        (ep.tracking_number, EASYPOST_SCANS, 6),
        (af.tracking_number, AFTERSHIP_CHECKPOINTS, 8),
    ):
        events = track(tn)["events"]  # newest first
        assert [e["message"] for e in events[:n]] == [c[3] for c in reversed(history[:n])]
        html = edge.http.get(f"/track/{tn}").text
        assert all(c[3] in html for c in history[:n])
    assert "Delivered" in edge.http.get(f"/track/{ep.tracking_number}").text
    assert "Out for delivery" in edge.http.get(f"/track/{af.tracking_number}").text
