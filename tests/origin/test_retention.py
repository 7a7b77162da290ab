"""Retention and erasure: personal data goes once the parcels settled and the window passed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from origin import pii, retention
from origin.app import create_app
from origin.errors import KeyUnavailable
from origin.store import Store, open_store
from sync.entities import ChangeKinds, Order, decode_entity
from tests.conftest import Clock, Origin, origin_settings, wait_until
from tests.origin.test_ledger import SITE, set_available
from tests.origin.test_pii import ring

DAY = 86400.0


def _row(store: Store, order_id: str) -> tuple[Any, ...]:
    with store.reader() as r:
        row = r.one(
            "SELECT pii, customer_ref, lines, region, erased_at FROM customer_order WHERE order_id = ?",
            (order_id,),
        )
    assert row is not None
    return row


def _ship_and_deliver(origin: Origin, order_id: str, tn: str, *, deliver: bool = True) -> None:
    sku = origin.world.products[0].sku
    set_available(origin, SITE, sku, 5)
    body = {"tracking_number": tn, "carrier": "ups", "order_id": order_id, "site_id": SITE}
    r = origin.http.post("/v1/shipments", json=body, headers=origin.admin())
    assert r.status_code == 201, r.text
    status = "delivered" if deliver else "in_transit"
    at = datetime.fromtimestamp(origin.clock(), UTC).isoformat()
    event = {"tracking_number": tn, "carrier": "ups", "status": status, "occurred_at": at}
    assert origin.webhook(event).status_code == 202


def test_personal_data_is_erased_once_the_window_after_delivery_passed(origin: Origin) -> None:
    assert origin.place_order("o-ret").status_code == 201
    _ship_and_deliver(origin, "o-ret", "1ZRET00001")
    store = origin.open_store()
    try:
        before = _row(store, "o-ret")
        assert pii.open_pii(origin.settings.privacy_keys().keyring, "o-ret", bytes(before[0]))
        origin.clock.advance(29 * DAY)
        retention.erase_due(store, 30)  # the seeded world's old orders go; this one stays
        assert _row(store, "o-ret")[4] is None
        origin.clock.advance(2 * DAY)
        assert retention.erase_due(store, 30) >= 1
        after = _row(store, "o-ret")
        assert bytes(after[0]) == pii.ERASED and after[4] == pytest.approx(origin.clock())
        assert pii.open_pii(pii.Keyring.parse(pii.new_key("other")), "o-ret", bytes(after[0])) == {}
        # What routing and analytics use stays: customer ref, lines, region, the published order.
        assert after[1:4] == before[1:4] and after[1].startswith("c_")
        with store.reader() as r:
            order: Order = decode_entity(ChangeKinds.ORDER, r.get(ChangeKinds.ORDER, "o-ret")[1])
        assert order.customer_ref == after[1] and order.lat == round(order.lat, 2)
        retention.erase_due(store, 30)
        assert _row(store, "o-ret")[4] == after[4]  # erased once
    finally:
        store.close()


def test_an_order_with_a_parcel_still_travelling_keeps_its_data(origin: Origin) -> None:
    assert origin.place_order("o-split").status_code == 201
    _ship_and_deliver(origin, "o-split", "1ZSPLIT001")
    _ship_and_deliver(origin, "o-split", "1ZSPLIT002", deliver=False)
    origin.clock.advance(40 * DAY)
    store = origin.open_store()
    try:
        retention.erase_due(store, 30)
        assert _row(store, "o-split")[4] is None
    finally:
        store.close()


def test_seeded_orders_are_erased_when_all_their_shipments_settled_long_ago(origin: Origin) -> None:
    settled = {s.order_id: retention.settled_at(s) for s in origin.world.shipments()}
    times = sorted(at for at in settled.values() if at is not None)
    cutoff = times[len(times) // 2]  # move the clock so that half the settled orders are due
    origin.clock.advance(cutoff + 30 * DAY - origin.clock())
    expected = {o for o, at in settled.items() if at is not None and at < cutoff}
    assert expected and len(expected) < len(settled)  # the world has both kinds
    store = origin.open_store()
    try:
        assert retention.erase_due(store, 30) == len(expected)
        with store.reader() as r:
            rows = r.execute("SELECT order_id FROM customer_order WHERE erased_at IS NOT NULL").fetchall()
        assert {str(o) for (o,) in rows} == expected
    finally:
        store.close()


def test_erasure_endpoint_by_order_and_by_customer(origin: Origin) -> None:
    customer = {"customer_id": "cust-77", "name": "Ida Example", "email": "ida@example.org"}
    for oid in ("o-e1", "o-e2"):
        assert origin.place_order(oid, customer=customer).status_code == 201
    ref = origin.http.post("/v1/erasure", json={"order_id": "o-e1"})
    assert ref.status_code == 401
    r = origin.http.post("/v1/erasure", json={"order_id": "o-e1"}, headers=origin.admin())
    assert r.status_code == 202 and r.json() == {"order_ids": ["o-e1"], "erased": 1}
    store = origin.open_store()
    try:
        customer_ref = _row(store, "o-e2")[1]
        r = origin.http.post("/v1/erasure", json={"customer_ref": customer_ref}, headers=origin.admin())
        assert r.status_code == 202 and r.json() == {"order_ids": ["o-e1", "o-e2"], "erased": 1}
        assert all(bytes(_row(store, o)[0]) == pii.ERASED for o in ("o-e1", "o-e2"))
    finally:
        store.close()
    r = origin.http.post("/v1/erasure", json={"order_id": "o-nope"}, headers=origin.admin())
    assert r.status_code == 404 and r.json()["error"] == "unknown_order"
    r = origin.http.post(
        "/v1/erasure", json={"order_id": "o-e1", "customer_ref": customer_ref}, headers=origin.admin()
    )
    assert r.status_code == 400 and "exactly one" in r.json()["detail"]


def test_housekeeping_erases_on_the_injected_clock(tmp_path: Path, clock: Clock, world: Any) -> None:
    from origin.seed import seed_world

    settings = origin_settings(tmp_path / "o", clock, housekeeping_interval_s=0.01)
    store = open_store(None, settings.data_dir, clock)
    seed_world(store, world, settings.privacy_keys())
    with TestClient(create_app(settings, store)):
        clock.advance(400 * DAY)  # every delivered order of the world is past its window now
        wait_until(lambda: _count_erased(store) > 0, what="housekeeping erased settled orders")
    store.close()


def _count_erased(store: Store) -> int:
    with store.reader() as r:
        row = r.one("SELECT COUNT(*) FROM customer_order WHERE erased_at IS NOT NULL")
    return int(row[0]) if row else 0


def test_rekey_reseals_old_key_and_plain_rows_and_a_missing_key_is_named(
    origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    store = origin.open_store()
    try:
        # A row from before sealing: plain MessagePack, no customer_ref column value.
        plain = msgspec.msgpack.encode({"customer": {"name": "Old Plain", "email": "old@example.org"}})
        assert origin.place_order("o-legacy").status_code == 201
        with store.transaction() as tx:
            tx.execute(
                "UPDATE customer_order SET pii = ?, customer_ref = NULL WHERE order_id = ?",
                (plain, "o-legacy"),
            )
        old = origin.settings.privacy_keys().keyring
        rotated = pii.Keyring((ring("k2").newest, *old.keys))
        report = pii.rekey(store, rotated, batch=7)
        assert report.rows == report.resealed and report.refs_filled == 1
        with store.reader() as r:
            blobs = dict(r.execute("SELECT order_id, pii FROM customer_order").fetchall())
        assert all(pii.kids_of(bytes(b)) in ({"k2"}, set()) for b in blobs.values())
        assert pii.open_pii(pii.Keyring(rotated.keys[:1]), "o-legacy", bytes(blobs["o-legacy"])) == {
            "customer.name": "Old Plain",
            "customer.email": "old@example.org",
        }
        assert pii.rekey(store, rotated).resealed == 0  # a second run changes nothing
        assert _row(store, "o-legacy")[1].startswith("c_")
        # The origin started without k2 still serves, and says which key it lacks.
        with (
            caplog.at_level(logging.ERROR, logger="waypost.origin.pii"),
            TestClient(create_app(origin.settings, store)) as client,
        ):
            assert client.get("/healthz").status_code == 200
        assert "k2" in caplog.text
        with pytest.raises(KeyUnavailable, match="key 'k2'"):
            pii.open_pii(old, "o-legacy", bytes(blobs["o-legacy"]))
    finally:
        store.close()
