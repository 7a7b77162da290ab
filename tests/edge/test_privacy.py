"""Street addresses and postcodes planted in carrier events reach no edge, feed or page (#17)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

from sync.bodies import unpack
from sync.entities import ChangeKinds
from tests.conftest import Edge, Origin, wait_until
from tests.origin.test_webhooks import event

# Each order's own address, in its country's format. The streets carry no street word the
# generic patterns know: only the order's address, which the origin holds, can mask them.
ORDERS: dict[str, dict[str, str]] = {
    "GB": {"street": "3 The Paddocks", "postcode": "ZQ9 8XW", "city": "London", "tn": "WPPRIVGB0001"},
    "DE": {"street": "Zwiebelgrund 9b", "postcode": "20457", "city": "Hamburg", "tn": "WPPRIVDE0001"},
    "FR": {"street": "8 Villa Mozart", "postcode": "75016", "city": "Paris", "tn": "WPPRIVFR0001"},
    "US": {
        "street": "1600 Quokka Hollow",
        "postcode": "94103-1234",
        "city": "San Francisco",
        "tn": "WPPRIVUS0001",
    },
}
# Addresses that are not the order's: the generic patterns must catch them.
GENERIC = {
    "GB": ("77 Wunderlich Street", "SW1A 1AA", "London"),
    "DE": ("Musterstr. 12a", "D-10115", "Berlin"),
    "FR": ("12 rue de Rivoli", "75008", "Paris"),
    "US": ("1600 Pennsylvania Ave NW", "DC 20500", "Washington"),
}
SECRETS = [
    "Paddocks",
    "ZQ9 8XW",
    "ZQ98XW",
    "Zwiebelgrund",
    "20457",
    "Villa Mozart",
    "75016",
    "Quokka",
    "94103",
    "Wunderlich",
    "SW1A 1AA",
    "Musterstr",
    "10115",
    "Rivoli",
    "75008",
    "Pennsylvania",
    "20500",
]


def place(origin: Origin, country: str, o: dict[str, str]) -> None:
    north = next(r for r in origin.world.regions if r.name == "north")
    address = {"street": o["street"], "postcode": o["postcode"], "city": o["city"], "country": country}
    body = {
        "order_id": f"o-priv-{country}",
        "customer": {"name": "Jo Smith", "email": "jo@example.com", "address": address},
        "destination": {
            "lat": north.lat,
            "lon": north.lon,
            "postcode": o["postcode"],
            "city": o["city"],
            "country": country,
            "street": o["street"],
        },
        "lines": [{"sku": origin.world.products[0].sku, "qty": 1}],
    }
    assert origin.http.post("/v1/orders", json=body, headers=origin.admin()).status_code == 201


def register(origin: Origin, country: str, tn: str) -> None:
    r = origin.http.post(
        "/v1/shipments",
        json={
            "tracking_number": tn,
            "carrier": "dhl",
            "order_id": f"o-priv-{country}",
            "site_id": "north-warehouse-3",
        },
        headers=origin.admin(),
    )
    assert r.status_code == 201, r.text


def send(origin: Origin, tn: str, status: str, at: str, message: str, location: str) -> None:
    r = origin.webhook(event(tn, status=status, occurred_at=at, message=message, location=location))
    assert r.status_code == 202, r.text


def plant(origin: Origin) -> None:
    """Through the signed webhook: one event parked before registration, two applied after."""
    for country, o in ORDERS.items():
        place(origin, country, o)
        street, postcode, city = o["street"], o["postcode"], o["city"]
        g_street, g_postcode, g_city = GENERIC[country]
        send(  # parked: the origin does not know the order yet
            origin,
            o["tn"],
            "in_transit",
            "2031-01-01T08:00:00Z",
            f"Sorted for {street.upper()}, {postcode.replace(' ', '')}",
            f"{street}, {city} {postcode}, {country}",
        )
        register(origin, country, o["tn"])
        send(
            origin,
            o["tn"],
            "out_for_delivery",
            "2031-01-01T10:00:00Z",
            f"Out for delivery to {g_street}, {g_postcode} {g_city}",
            f"{g_street}, {g_postcode} {g_city}, {country}",
        )
        send(
            origin,
            o["tn"],
            "delivered",
            "2031-01-01T12:00:00Z",
            f"Delivered to J SMITH, {street}, {postcode}",
            f"{street.lower()}, {city} {postcode.lower()}, {country}",
        )


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        # As a word: "20457" inside a timestamp's microseconds is no postcode.
        m = re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", text, re.IGNORECASE)
        assert m is None, f"{secret!r} in {where}: {text[max(0, m.start() - 200) : m.end() + 60]!r}"


def test_planted_addresses_reach_no_store_feed_snapshot_edge_file_or_page(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url, "north")
    plant(origin)
    auth = {**origin.edge_auth(), "accept": "application/json"}

    # The origin's stored shipments (and nothing left parked).
    store = origin.open_store()
    try:
        with store.reader() as r:
            for o in ORDERS.values():
                found = r.get(ChangeKinds.SHIPMENT, o["tn"])
                assert found is not None
                assert_clean(f"the origin's body of {o['tn']}", found[1].decode("utf-8", "replace"))
            assert r.one("SELECT COUNT(*) FROM parked_event WHERE tracking_number LIKE 'WPPRIV%'") == (0,)
    finally:
        store.close()

    # Every feed page of the region and its snapshot.
    after, pages = 0, []
    while True:
        page: dict[str, Any] = origin.http.get(
            f"/v1/feed/region:north?after={after}&limit=500", headers=auth
        ).json()
        pages.append(json.dumps(page["changes"], ensure_ascii=False))
        if not page["changes"]:
            break
        after = page["last"]
    feed = "".join(pages)
    assert all(o["tn"] in feed for o in ORDERS.values())
    assert_clean("the feed", feed)
    assert_clean("the snapshot", origin.http.get("/v1/snapshot/region:north", headers=auth).text)

    # The edge: its JSON, the locked page, the page unlocked with the order's postcode.
    for o in ORDERS.values():
        tn = o["tn"]
        wait_until(
            lambda tn=tn: edge.http.get(f"/v1/track/{tn}").json().get("status") == "delivered",
            what=f"{tn} delivered on the edge",
        )
        body = edge.http.get(f"/v1/track/{tn}").json()
        assert len(body["events"]) == 3, "every planted event arrived, scrubbed"
        assert any(e["location"] == f"{o['city']}, " + tn[6:8] for e in body["events"]), body["events"]
        locked = edge.http.get(f"/track/{tn}").text
        assert 'name="postcode"' in locked
        assert edge.http.post(f"/track/{tn}/unlock", data={"postcode": o["postcode"]}).status_code in (
            200,
            303,
        )
        unlocked = edge.http.get(f"/track/{tn}").text
        assert 'name="postcode"' not in unlocked, "the order's postcode unlocks the page"
        for where, text in [
            ("JSON", json.dumps(body, ensure_ascii=False)),
            ("locked page", locked),
            ("page", unlocked),
        ]:
            assert_clean(f"{tn}'s {where}", text)

    # Every file in the edge's data directory, with packed bodies unpacked as the edge reads them.
    files = b"".join(f.read_bytes() for f in edge.settings.data_dir.rglob("*") if f.is_file())
    db = sqlite3.connect(edge.settings.data_dir / "replica.sqlite3")
    try:
        files += b"".join(unpack(bytes(body)) for (body,) in db.execute("SELECT body FROM entity"))
    finally:
        db.close()
    assert ORDERS["GB"]["tn"].encode() in files
    assert_clean("the edge's files", files.decode("utf-8", "replace"))
