"""The ledger over HTTP against a real origin: holds never oversell, settle once, retry safely."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import httpx
import pytest

from origin import idempotency
from tests.conftest import EDGE_TOKEN, Origin, wait_until

SITE = "north-warehouse-3"


def sku(origin: Origin, i: int = 0) -> str:
    return origin.world.products[i].sku


def stock(origin: Origin, site: str, s: str) -> dict[str, Any]:
    r = origin.http.get(f"/v1/stock/{site}/{s}", headers=origin.edge_auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def set_available(origin: Origin, site: str, s: str, n: int) -> None:
    have = stock(origin, site, s)
    delta = n - have["available"]
    if delta:
        r = origin.http.post(
            "/v1/stock/movements",
            json={"site_id": site, "sku": s, "kind": "adjust", "qty": delta},
            headers=origin.admin(),
        )
        assert r.status_code == 201, r.text
    assert stock(origin, site, s)["available"] == n


def hold(
    origin: Origin,
    rid: str,
    lines: list[dict[str, Any]],
    *,
    ttl_s: int = 600,
    order: str = "o-1",
    site: str = SITE,
    key: str | None = None,
) -> httpx.Response:
    headers = {**origin.edge_auth(), **({"Idempotency-Key": key} if key else {})}
    body = {"reservation_id": rid, "order_id": order, "site_id": site, "lines": lines, "ttl_s": ttl_s}
    return origin.http.post("/v1/reservations", json=body, headers=headers)


def heads(origin: Origin) -> dict[str, int]:
    return {b["bucket"]: b["head"] for b in origin.http.get("/v1/buckets", headers=origin.edge_auth()).json()}


def test_200_concurrent_holds_for_50_available_hold_exactly_50(origin: Origin) -> None:
    s = sku(origin, 1)
    set_available(origin, SITE, s, 50)
    seen_negative: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=origin.url) as c:
            while not done.is_set():
                st = c.get(f"/v1/stock/{SITE}/{s}", headers=origin.edge_auth()).json()
                if st["available"] < 0 or st["reserved"] > st["on_hand"]:
                    seen_negative.append(st)

    watcher = threading.Thread(target=watch)
    watcher.start()

    async def client_burst(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=origin.url, timeout=60) as c:

            async def one(i: int) -> int:
                r = await c.post(
                    "/v1/reservations",
                    json={
                        "reservation_id": f"race-{n}-{i}",
                        "order_id": f"o-{n}-{i}",
                        "site_id": SITE,
                        "lines": [{"sku": s, "qty": 1}],
                        "ttl_s": 600,
                    },
                    headers={"Authorization": f"Bearer {EDGE_TOKEN}", "Idempotency-Key": f"k-{n}-{i}"},
                )
                return r.status_code

            return list(await asyncio.gather(*(one(i) for i in range(50))))

    async def all_clients() -> list[int]:
        results = await asyncio.gather(*(client_burst(n) for n in range(4)))
        return [code for codes in results for code in codes]

    codes = asyncio.run(all_clients())
    done.set()
    watcher.join()
    assert codes.count(201) == 50
    assert codes.count(409) == 150
    final = stock(origin, SITE, s)
    assert final["available"] == 0 and final["reserved"] == 50
    assert seen_negative == []


def test_a_refused_hold_names_what_is_available_and_writes_nothing(origin: Origin) -> None:
    s = sku(origin, 2)
    set_available(origin, SITE, s, 3)
    before = heads(origin)
    r = hold(origin, "h-short", [{"sku": s, "qty": 5}])
    assert r.status_code == 409
    body = r.json()
    assert body["error"] == "insufficient_stock"
    assert body["lines"] == [{"sku": s, "requested": 5, "available": 3}]
    assert heads(origin) == before


def test_an_expired_hold_returns_its_stock_exactly_once(origin: Origin) -> None:
    s = sku(origin, 3)
    set_available(origin, SITE, s, 10)
    assert hold(origin, "h-exp", [{"sku": s, "qty": 4}], ttl_s=60).status_code == 201
    assert stock(origin, SITE, s)["available"] == 6
    origin.clock.advance(61)
    wait_until(
        lambda: (
            origin.http.get("/v1/reservations/h-exp", headers=origin.edge_auth()).json()["state"] == "expired"
        ),
        what="the sweep to expire the hold",
    )
    assert stock(origin, SITE, s) == {
        "site_id": SITE,
        "sku": s,
        "on_hand": 10,
        "reserved": 0,
        "available": 10,
    }
    # Committing or releasing it now changes nothing more.
    assert origin.http.post("/v1/reservations/h-exp/commit", headers=origin.edge_auth()).status_code == 409
    r = origin.http.post("/v1/reservations/h-exp/release", headers=origin.edge_auth())
    assert r.status_code == 200 and r.json()["state"] == "expired"
    assert stock(origin, SITE, s)["available"] == 10


def test_settling_twice_the_same_way_is_a_no_op_and_other_ways_are_409(origin: Origin) -> None:
    s = sku(origin, 4)
    set_available(origin, SITE, s, 10)
    auth = origin.edge_auth()
    assert hold(origin, "h-c", [{"sku": s, "qty": 2}]).status_code == 201
    assert hold(origin, "h-r", [{"sku": s, "qty": 3}]).status_code == 201
    for _ in range(2):
        r = origin.http.post("/v1/reservations/h-c/commit", headers=auth)
        assert r.status_code == 200 and r.json()["state"] == "committed"
        r = origin.http.post("/v1/reservations/h-r/release", headers=auth)
        assert r.status_code == 200 and r.json()["state"] == "released"
    assert origin.http.post("/v1/reservations/h-c/release", headers=auth).json()["error"] == "hold_committed"
    assert origin.http.post("/v1/reservations/h-r/commit", headers=auth).json()["error"] == "hold_released"
    assert stock(origin, SITE, s) == {"site_id": SITE, "sku": s, "on_hand": 8, "reserved": 0, "available": 8}
    assert origin.http.get("/v1/reservations/nope", headers=auth).status_code == 404


def test_commit_release_and_expiry_racing_settle_each_hold_once(origin: Origin) -> None:
    s = sku(origin, 5)
    set_available(origin, SITE, s, 40)
    for i in range(20):
        assert hold(origin, f"hr-{i}", [{"sku": s, "qty": 2}], ttl_s=30).status_code == 201
    origin.clock.advance(31)  # every hold is now due to expire too

    async def race() -> list[tuple[int, str]]:
        async with httpx.AsyncClient(base_url=origin.url, headers=origin.edge_auth()) as c:
            calls = [c.post(f"/v1/reservations/hr-{i}/{a}") for i in range(20) for a in ("commit", "release")]
            rs = await asyncio.gather(*calls)
            return [(r.status_code, r.text) for r in rs]

    asyncio.run(race())
    states = [
        origin.http.get(f"/v1/reservations/hr-{i}", headers=origin.edge_auth()).json()["state"]
        for i in range(20)
    ]
    assert set(states) <= {"committed", "released", "expired"}
    committed = states.count("committed")
    assert stock(origin, SITE, s) == {
        "site_id": SITE,
        "sku": s,
        "on_hand": 40 - 2 * committed,
        "reserved": 0,
        "available": 40 - 2 * committed,
    }


def test_idempotency_replay_mismatch_and_in_flight(origin: Origin) -> None:
    s = sku(origin, 6)
    set_available(origin, SITE, s, 10)
    first = hold(origin, "h-idem", [{"sku": s, "qty": 1}], key="key-1")
    again = hold(origin, "h-idem", [{"sku": s, "qty": 1}], key="key-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotency-replayed"] == "true"
    assert stock(origin, SITE, s)["reserved"] == 1
    other = hold(origin, "h-idem2", [{"sku": s, "qty": 2}], key="key-1")
    assert other.status_code == 422 and other.json()["error"] == "idempotency_mismatch"
    # A claim still pending in another process: the retry is told to wait, not run twice.
    store = origin.open_store()
    try:
        body = json.dumps(
            {
                "reservation_id": "h-fly",
                "order_id": "o-1",
                "site_id": SITE,
                "lines": [{"sku": s, "qty": 1}],
                "ttl_s": 600,
            }
        ).encode()
        with store.transaction() as tx:
            assert (
                idempotency.claim(tx, "key-fly", idempotency.fingerprint("POST", "/v1/reservations", body))
                is None
            )
    finally:
        store.close()
    r = origin.http.post(
        "/v1/reservations", content=body, headers={**origin.edge_auth(), "Idempotency-Key": "key-fly"}
    )
    assert r.status_code == 409 and r.json()["error"] == "in_flight"


def test_a_refusal_is_replayed_too(origin: Origin) -> None:
    s = sku(origin, 7)
    set_available(origin, SITE, s, 1)
    assert hold(origin, "h-no", [{"sku": s, "qty": 5}], key="key-no").status_code == 409
    set_available(origin, SITE, s, 10)
    replay = hold(origin, "h-no", [{"sku": s, "qty": 5}], key="key-no")
    assert replay.status_code == 409 and replay.headers["idempotency-replayed"] == "true"


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        ([], "lines"),
        ([{"sku": "nope", "qty": 1}], "lines[0].sku"),
        ([{"sku": "SKU", "qty": 0}], "lines[0].qty"),
        ([{"sku": "SKU", "qty": -3}], "lines[0].qty"),
        ([{"sku": "SKU", "qty": 10**9}], "lines[0].qty"),
        ([{"sku": "SKU", "qty": 1}, {"sku": "SKU", "qty": 2}], "lines[1].sku"),
        ([{"sku": "SKU", "qty": "two"}], "$.lines[0].qty"),
    ],
)
def test_bad_hold_requests_are_4xx_naming_the_field_and_write_nothing(
    origin: Origin, lines: list[dict[str, Any]], field: str
) -> None:
    s = sku(origin, 8)
    lines = [{**line, "sku": s if line["sku"] == "SKU" else line["sku"]} for line in lines]
    before = heads(origin)
    r = hold(origin, "h-bad", lines)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]
    assert heads(origin) == before


def test_bad_site_ttl_and_movements_are_4xx(origin: Origin) -> None:
    s = sku(origin, 8)
    r = hold(origin, "h-site", [{"sku": s, "qty": 1}], site="atlantis-1")
    assert r.status_code == 400 and r.json()["field"] == "site_id"
    r = hold(origin, "h-ttl", [{"sku": s, "qty": 1}], ttl_s=0)
    assert r.status_code == 400 and r.json()["field"] == "ttl_s"
    auth = origin.admin()
    r = origin.http.post(
        "/v1/stock/movements", json={"site_id": SITE, "sku": s, "kind": "receive", "qty": 0}, headers=auth
    )
    assert r.status_code == 400 and r.json()["field"] == "qty"
    r = origin.http.post(
        "/v1/stock/movements", json={"site_id": SITE, "sku": s, "kind": "steal", "qty": 1}, headers=auth
    )
    assert r.status_code == 400 and "$.kind" in r.json()["detail"]
    assert origin.http.get(f"/v1/stock/{SITE}/nope", headers=origin.edge_auth()).status_code == 400
    assert origin.http.post("/v1/stock/movements", json={}, headers=origin.edge_auth()).status_code == 401


def test_adjust_may_be_negative_but_never_below_available(origin: Origin) -> None:
    s = sku(origin, 9)
    set_available(origin, SITE, s, 5)
    assert hold(origin, "h-adj", [{"sku": s, "qty": 3}]).status_code == 201
    r = origin.http.post(
        "/v1/stock/movements",
        json={"site_id": SITE, "sku": s, "kind": "adjust", "qty": -3},
        headers=origin.admin(),
    )
    assert r.status_code == 409 and r.json()["error"] == "insufficient_stock"
    r = origin.http.post(
        "/v1/stock/movements",
        json={"site_id": SITE, "sku": s, "kind": "adjust", "qty": -2},
        headers=origin.admin(),
    )
    assert r.status_code == 201 and r.json()["available"] == 0 and r.json()["reserved"] == 3


def test_creating_the_shipment_commits_the_orders_holds(origin: Origin) -> None:
    s = sku(origin, 10)
    set_available(origin, SITE, s, 10)
    assert hold(origin, "h-ship", [{"sku": s, "qty": 2}], order="o-ship").status_code == 201
    assert origin.place_order("o-ship", lines=[{"sku": s, "qty": 2}]).status_code == 201
    r = origin.http.post(
        "/v1/shipments",
        json={"tracking_number": "SHIP000001", "carrier": "dhl", "order_id": "o-ship"},
        headers=origin.admin(),
    )
    assert r.status_code == 201, r.text
    assert r.json()["site_id"] == SITE
    assert (
        origin.http.get("/v1/reservations/h-ship", headers=origin.edge_auth()).json()["state"] == "committed"
    )
    assert stock(origin, SITE, s)["on_hand"] == 8
    again = origin.http.post(
        "/v1/shipments",
        json={"tracking_number": "SHIP000001", "carrier": "dhl", "order_id": "o-ship"},
        headers=origin.admin(),
    )
    assert again.status_code == 200 and stock(origin, SITE, s)["on_hand"] == 8


def test_a_shipment_without_holds_ships_from_the_named_site_or_says_why_not(origin: Origin) -> None:
    s = sku(origin, 11)
    set_available(origin, SITE, s, 1)
    assert origin.place_order("o-nohold", lines=[{"sku": s, "qty": 2}]).status_code == 201
    body = {"tracking_number": "SHIP000002", "carrier": "dhl", "order_id": "o-nohold"}
    r = origin.http.post("/v1/shipments", json=body, headers=origin.admin())
    assert r.status_code == 409 and r.json()["error"] == "no_hold" and r.json()["lines"][0]["sku"] == s
    r = origin.http.post("/v1/shipments", json={**body, "site_id": SITE}, headers=origin.admin())
    assert r.status_code == 409 and r.json()["error"] == "insufficient_stock"
    set_available(origin, SITE, s, 2)
    r = origin.http.post("/v1/shipments", json={**body, "site_id": SITE}, headers=origin.admin())
    assert r.status_code == 201 and stock(origin, SITE, s)["available"] == 0


def test_orders_never_expose_personal_data(origin: Origin) -> None:
    pii = {
        "name": "Zelda Quackenbush",
        "email": "zelda.q@example.org",
        "phone": "+49 30 98765432",
        "address": {"street": "Geheimweg 42", "postcode": "20095", "city": "Hamburg", "country": "DE"},
    }
    r = origin.place_order("o-private", customer=pii, postcode="20095")
    assert r.status_code == 201, r.text
    public = r.json()
    assert public["postcode_district"] == "200" and public["city"] == "Hamburg"
    assert public["lat"] == round(public["lat"], 2)
    everything = ""
    for bucket in ("global", "region:north", "region:south"):
        everything += origin.http.get(
            f"/v1/feed/{bucket}",
            params={"after": 0, "limit": 1000},
            headers={**origin.edge_auth(), "Accept": "application/json"},
        ).text
        everything += origin.http.get(
            f"/v1/snapshot/{bucket}", headers={**origin.edge_auth(), "Accept": "application/json"}
        ).text
    assert "o-private" in everything
    for secret in (
        "Zelda",
        "Quackenbush",
        "zelda.q@example.org",
        "98765432",
        "Geheimweg",
        "20095",
        "Hauptstra",
    ):
        assert secret not in everything, secret
    assert public["customer_ref"].startswith("c_") and "Zelda" not in public["customer_ref"]


def test_orders_are_routed_to_the_nearest_region_and_ids_are_unique(origin: Origin) -> None:
    r = origin.place_order("o-south", region="south")
    assert r.status_code == 201
    rows = origin.http.get(
        "/v1/feed/region:south",
        params={"after": 0, "limit": 1000},
        headers={**origin.edge_auth(), "Accept": "application/json"},
    ).json()
    assert any(c["key"] == "o-south" and c["kind"] == "order" for c in rows["changes"])
    assert origin.place_order("o-south", region="south").json()["error"] == "order_exists"
    far = origin.http.post(
        "/v1/orders",
        json={
            "order_id": "o-far",
            "customer": {"name": "x"},
            "destination": {
                "lat": -33.9,
                "lon": 151.2,
                "postcode": "2000",
                "city": "Sydney",
                "country": "AU",
            },
            "lines": [{"sku": sku(origin), "qty": 1}],
        },
        headers=origin.admin(),
    )
    assert far.status_code == 400 and far.json()["field"] == "destination"


def test_order_replay_with_idempotency_key(origin: Origin) -> None:
    key = str(uuid.uuid4())
    a = origin.place_order("o-idem", key=key)
    b = origin.place_order("o-idem", key=key)
    assert a.status_code == b.status_code == 201 and a.json() == b.json()


# Allotments: escrow an edge draws its orders' holds from.


def allot(
    origin: Origin, aid: str, lines: list[dict[str, Any]], *, owner: str = "edge-a", ttl_s: int = 600
) -> httpx.Response:
    body = {"allotment_id": aid, "owner": owner, "site_id": SITE, "lines": lines, "ttl_s": ttl_s}
    return origin.http.post(
        "/v1/allotments", json=body, headers={**origin.edge_auth(), "Idempotency-Key": aid}
    )


def draw(
    origin: Origin, rid: str, aid: str, lines: list[dict[str, Any]], order: str = "o-1"
) -> httpx.Response:
    body = {"reservation_id": rid, "order_id": order, "site_id": SITE, "lines": lines, "allotment_id": aid}
    return origin.http.post(
        "/v1/reservations", json=body, headers={**origin.edge_auth(), "Idempotency-Key": rid}
    )


def read(origin: Origin, rid: str) -> dict[str, Any]:
    r = origin.http.get(f"/v1/reservations/{rid}", headers=origin.edge_auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_draw_moves_units_from_the_allotment_to_the_orders_hold(origin: Origin) -> None:
    a, b = sku(origin, 5), sku(origin, 6)
    set_available(origin, SITE, a, 20)
    set_available(origin, SITE, b, 20)
    r = allot(origin, "al-1", [{"sku": a, "qty": 8}, {"sku": b, "qty": 3}])
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == "edge-a" and r.json()["order_id"] == ""
    assert stock(origin, SITE, a)["available"] == 12
    reserved = stock(origin, SITE, a)["reserved"]

    r = draw(origin, "h-d1", "al-1", [{"sku": a, "qty": 5}, {"sku": b, "qty": 3}])
    assert r.status_code == 201, r.text
    assert "owner" not in r.json()  # an order's hold, like any other
    assert read(origin, "al-1")["lines"] == [{"sku": a, "qty": 3}]
    # The units changed hands inside the reserved balance: available and reserved are as before.
    assert stock(origin, SITE, a)["available"] == 12 and stock(origin, SITE, a)["reserved"] == reserved
    assert stock(origin, SITE, b)["available"] == 17

    # The same draw again (a retry) changes nothing.
    assert draw(origin, "h-d1", "al-1", [{"sku": a, "qty": 5}, {"sku": b, "qty": 3}]).status_code == 201
    assert read(origin, "al-1")["lines"] == [{"sku": a, "qty": 3}]

    # More than is left comes out of available stock instead; the allotment is untouched.
    assert draw(origin, "h-d2", "al-1", [{"sku": a, "qty": 4}], order="o-2").status_code == 201
    assert read(origin, "al-1")["lines"] == [{"sku": a, "qty": 3}]
    assert stock(origin, SITE, a)["available"] == 8

    # The allotment cannot ship; released, what is left of it comes back.
    r = origin.http.post("/v1/reservations/al-1/commit", headers=origin.edge_auth())
    assert r.status_code == 409 and r.json()["error"] == "hold_allotment"
    assert origin.http.post("/v1/reservations/al-1/release", headers=origin.edge_auth()).status_code == 200
    assert stock(origin, SITE, a)["available"] == 11
    # The orders' holds are ordinary holds: the shipment commits them.
    on_hand = stock(origin, SITE, a)["on_hand"]
    assert origin.http.post("/v1/reservations/h-d1/commit", headers=origin.edge_auth()).status_code == 200
    after = stock(origin, SITE, a)
    assert (after["on_hand"], after["available"]) == (on_hand - 5, 11)


def test_a_draw_on_an_expired_allotment_takes_available_stock_or_is_refused(origin: Origin) -> None:
    a = sku(origin, 7)
    set_available(origin, SITE, a, 10)
    assert allot(origin, "al-x", [{"sku": a, "qty": 6}], ttl_s=60).status_code == 201
    origin.clock.advance(61)
    wait_until(lambda: read(origin, "al-x")["state"] == "expired", what="the allotment to expire")
    assert stock(origin, SITE, a)["available"] == 10
    assert draw(origin, "h-x1", "al-x", [{"sku": a, "qty": 6}]).status_code == 201
    assert stock(origin, SITE, a)["available"] == 4
    r = draw(origin, "h-x2", "al-x", [{"sku": a, "qty": 5}], order="o-2")
    assert r.status_code == 409 and r.json()["error"] == "insufficient_stock"
    assert stock(origin, SITE, a)["available"] == 4


def test_an_allotment_never_takes_more_than_is_available(origin: Origin) -> None:
    a = sku(origin, 8)
    set_available(origin, SITE, a, 5)
    r = allot(origin, "al-big", [{"sku": a, "qty": 6}])
    assert r.status_code == 409 and r.json()["error"] == "insufficient_stock"
    assert stock(origin, SITE, a)["available"] == 5
    r = origin.http.post(
        "/v1/allotments",
        json={"allotment_id": "al-bad", "owner": "", "site_id": SITE, "lines": [{"sku": a, "qty": 1}]},
        headers=origin.edge_auth(),
    )
    assert r.status_code == 400 and "owner" in r.text


def test_a_batch_of_holds_is_all_or_nothing_and_safe_to_send_again(origin: Origin) -> None:
    a = sku(origin, 9)
    set_available(origin, SITE, a, 10)
    assert allot(origin, "al-b", [{"sku": a, "qty": 4}]).status_code == 201

    def batch(*holds: tuple[str, int, str | None]) -> httpx.Response:
        body = {
            "holds": [
                {
                    "reservation_id": rid,
                    "order_id": f"o-{rid}",
                    "site_id": SITE,
                    "lines": [{"sku": a, "qty": qty}],
                    **({"allotment_id": aid} if aid else {}),
                }
                for rid, qty, aid in holds
            ]
        }
        return origin.http.post("/v1/reservations/batch", json=body, headers=origin.edge_auth())

    # The third cannot be held (6 free, 7 asked): nothing of the batch is made.
    r = batch(("hb-1", 2, "al-b"), ("hb-2", 2, "al-b"), ("hb-3", 7, None))
    assert r.status_code == 409 and r.json()["reservation_id"] == "hb-3", r.text
    assert origin.http.get("/v1/reservations/hb-1", headers=origin.edge_auth()).status_code == 404
    assert read(origin, "al-b")["lines"] == [{"sku": a, "qty": 4}]

    r = batch(("hb-1", 2, "al-b"), ("hb-2", 2, "al-b"), ("hb-3", 6, None))
    assert r.status_code == 201, r.text
    assert [h["reservation_id"] for h in r.json()["holds"]] == ["hb-1", "hb-2", "hb-3"]
    assert read(origin, "al-b")["lines"] == [] and stock(origin, SITE, a)["available"] == 0
    # Sent again (its answer was lost): the same holds, nothing more taken.
    again = batch(("hb-1", 2, "al-b"), ("hb-2", 2, "al-b"), ("hb-3", 6, None))
    assert again.status_code == 201 and again.json() == r.json()
    assert stock(origin, SITE, a)["reserved"] == 10


def test_concurrent_draws_and_a_release_never_move_more_than_the_allotment_holds(origin: Origin) -> None:
    """60 draws of one unit race each other and the allotment's release (PostgreSQL runs them
    in parallel): no unit is drawn twice, and the release gives back only what was left."""
    s = sku(origin, 10)
    set_available(origin, SITE, s, 30)
    assert allot(origin, "al-race", [{"sku": s, "qty": 30}]).status_code == 201
    assert stock(origin, SITE, s)["available"] == 0

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=origin.url, timeout=60) as c:

            async def one(i: int) -> int:
                body = {
                    "reservation_id": f"dr-{i}",
                    "order_id": f"o-dr-{i}",
                    "site_id": SITE,
                    "lines": [{"sku": s, "qty": 1}],
                    "allotment_id": "al-race",
                }
                r = await c.post(
                    "/v1/reservations", json=body, headers={"Authorization": f"Bearer {EDGE_TOKEN}"}
                )
                return r.status_code

            async def release() -> int:
                r = await c.post(
                    "/v1/reservations/al-race/release", headers={"Authorization": f"Bearer {EDGE_TOKEN}"}
                )
                return r.status_code

            codes = await asyncio.gather(*(one(i) for i in range(60)), release())
            return list(codes)

    codes = asyncio.run(burst())
    assert codes[-1] == 200
    drawn = codes[:-1].count(201)
    assert drawn + codes[:-1].count(409) == 60
    final = stock(origin, SITE, s)
    # Every unit is either in a drawn hold or back in available stock; none counted twice.
    assert final["reserved"] == drawn and final["available"] == 30 - drawn
    assert 0 < drawn <= 30
