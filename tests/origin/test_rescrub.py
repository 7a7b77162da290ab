"""Events stored before the sanitizer knew addresses are scrubbed once, at origin start-up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import msgspec

from origin.app import create_app as create_origin
from origin.rescrub import rescrub, scrub_version
from origin.sanitize import SCRUB_VERSION
from origin.shipments import ParkedEvent, TrackingEvent
from sync.entities import ChangeKinds, ShipmentEvent, decode_entity, encode_entity
from tests.conftest import Edge, Origin, OriginProxy, ServerThread, wait_until

TN = "WPOLDBODY001"
PARKED_TN = "WPOLDPARK001"
OLD_MESSAGE = "Delivered to J SMITH, 3 The Paddocks, 77 Wunderlich Street, ZQ9 8XW"
OLD_LOCATION = "77 Wunderlich Street, London ZQ9 8XW, GB"
SECRETS = ["Paddocks", "Wunderlich", "ZQ9", "8XW", "SMITH"]


def old_order(origin: Origin) -> None:
    customer = {
        "name": "Jo Smith",
        "email": "jo@example.com",
        "address": {"street": "3 The Paddocks", "postcode": "ZQ9 8XW", "city": "London", "country": "GB"},
    }
    assert origin.place_order("o-old", customer=customer).status_code == 201
    r = origin.http.post(
        "/v1/shipments",
        json={"tracking_number": TN, "carrier": "dhl", "order_id": "o-old", "site_id": "north-warehouse-3"},
        headers=origin.admin(),
    )
    assert r.status_code == 201, r.text


def plant_unscrubbed(origin: Origin) -> None:
    """What an origin before the address rules stored: written directly, past the sanitizer."""
    store = origin.open_store()
    try:
        with store.transaction() as tx:
            found = tx.get(ChangeKinds.SHIPMENT, TN)
            assert found is not None
            s = decode_entity(ChangeKinds.SHIPMENT, found[1])
            at = datetime(2031, 1, 2, 9, tzinfo=UTC)
            old = ShipmentEvent(
                occurred_at=at, status="delivered", message=OLD_MESSAGE, location=OLD_LOCATION, received_at=at
            )
            s = msgspec.structs.replace(s, events=[*s.events, old], status="delivered", version=s.version + 1)
            tx.put(found[0], ChangeKinds.SHIPMENT, TN, encode_entity(s))
            parked = ParkedEvent(
                event=TrackingEvent(
                    tracking_number=PARKED_TN,
                    carrier="dhl",
                    status="in_transit",
                    message="At 12 Baker St",
                    location="12 Baker St, London SW1A 1AA",
                    occurred_at=at,
                ),
                received_at=at,
            )
            tx.execute(
                "INSERT INTO parked_event (tracking_number, carrier, event, received_at) VALUES (?, ?, ?, ?)",
                (PARKED_TN, "dhl", msgspec.msgpack.encode(parked), tx.now),
            )
            tx.execute("DELETE FROM meta WHERE key = 'scrub_version'")  # as before the sanitizer knew
    finally:
        store.close()


def track(edge: Edge) -> str:
    return edge.http.get(f"/v1/track/{TN}").text


def test_an_unscrubbed_store_is_scrubbed_at_start_up_and_edges_follow(
    origin: Origin, start_edge: Callable[..., Edge], proxy: tuple[OriginProxy, ServerThread]
) -> None:
    p, hop = proxy
    old_order(origin)
    plant_unscrubbed(origin)
    edge = start_edge(hop.url)
    wait_until(lambda: "Wunderlich" in track(edge), what="the old body on the edge")
    store = origin.open_store()
    with store.reader() as r:
        found = r.get(ChangeKinds.SHIPMENT, TN)
        assert found is not None and scrub_version(r) == 0
    before = decode_entity(ChangeKinds.SHIPMENT, found[1])

    origin.server.__exit__()  # restart the origin on the same store
    with ServerThread(create_origin(origin.settings)) as again, httpx.Client(base_url=again.url) as http:
        p.upstream = again.url

        def scrubbed() -> bool:
            with store.reader() as r:
                return scrub_version(r) == SCRUB_VERSION

        wait_until(scrubbed, what="the scrub to finish")
        with store.reader() as r:
            found = r.get(ChangeKinds.SHIPMENT, TN)
            assert found is not None
            parked = [bytes(b) for (b,) in r.execute("SELECT event FROM parked_event").fetchall()]
        after = decode_entity(ChangeKinds.SHIPMENT, found[1])
        assert after.version == before.version + 1
        assert after.updated_at == before.updated_at, "nothing new happened to the parcel"
        assert after.events[-1].message == "Delivered to ***, ***, ***, ***"
        assert after.events[-1].location == "London, GB"
        assert after.events[:-1] == before.events[:-1]
        assert parked and all(b"Baker" not in b and b"SW1A" not in b for b in parked)

        wait_until(lambda: "London, GB" in track(edge), what="the scrubbed body on the edge")
        page = track(edge) + edge.http.get(f"/track/{TN}").text
        for secret in SECRETS:
            assert secret not in page, secret
        wait_until(lambda: edge.status()["region:north"]["checksum_ok"], what="the edge's checksum")
        # The log no longer holds what edges were sent before: a late reader re-bootstraps.
        feed = http.get(
            "/v1/feed/region:north?after=0", headers={**origin.edge_auth(), "accept": "application/json"}
        )
        assert feed.status_code == 409
        snapshot = http.get(
            "/v1/snapshot/region:north", headers={**origin.edge_auth(), "accept": "application/json"}
        )
        for secret in SECRETS:
            assert secret not in snapshot.text, secret
    store.close()


def test_the_scrub_runs_once_per_sanitizer_version(origin: Origin) -> None:
    old_order(origin)
    plant_unscrubbed(origin)
    store = origin.open_store()
    try:
        keys = origin.settings.pii_keyring
        first = rescrub(store, keys, batch=7)  # many small batches: the walk resumes at each key
        assert first is not None and first.shipments == 1 and first.parked == 1
        assert rescrub(store, keys) is None, "recorded in meta: never again for this version"
        with store.transaction() as tx:
            tx.execute("DELETE FROM meta WHERE key = 'scrub_version'")
        again = rescrub(store, keys, batch=7)
        assert again is not None and again.shipments == 0 and again.parked == 0, "idempotent"
    finally:
        store.close()


def test_a_freshly_seeded_store_needs_no_scrub(origin: Origin) -> None:
    store = origin.open_store()
    try:
        with store.reader() as r:
            assert scrub_version(r) == SCRUB_VERSION
    finally:
        store.close()
