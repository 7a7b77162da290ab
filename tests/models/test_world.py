from datetime import UTC, datetime

import msgspec

from models.world import World, WorldSpec
from sync.entities import FINAL_STATUSES, encode_entity

encode = msgspec.msgpack.encode

NOW = datetime(2031, 3, 1, 12, tzinfo=UTC)


def fingerprint(w: World) -> list[bytes]:
    return [encode_entity(x) for x in (*w.sites, *w.products, *w.stock(), *w.shipments())]


def test_the_same_seed_gives_the_same_world() -> None:
    spec = WorldSpec(seed=3, shipments=300, products=50)
    assert fingerprint(World(spec, NOW)) == fingerprint(World(spec, NOW))


def test_another_seed_gives_another_world() -> None:
    a = World(WorldSpec(seed=3, shipments=50, products=20), NOW)
    b = World(WorldSpec(seed=4, shipments=50, products=20), NOW)
    assert fingerprint(a) != fingerprint(b)


def test_growing_the_world_keeps_what_was_there() -> None:
    small = list(World(WorldSpec(shipments=100), NOW).shipments())
    big = list(World(WorldSpec(shipments=200), NOW).shipments())
    assert big[:100] == small


def test_histories_are_plausible() -> None:
    w = World(WorldSpec(shipments=2000), NOW)
    shipments = list(w.shipments())
    assert len({s.tracking_number for s in shipments}) == len(shipments)
    kinds = {s.kind for s in w.sites}
    assert kinds == {"mfc", "warehouse"}
    statuses = {s.status for s in shipments}
    assert "delivered" in statuses and statuses - FINAL_STATUSES, "both finished and moving parcels"
    for s in shipments:
        times = [e.occurred_at for e in s.events]
        assert times == sorted(times)
        assert all(t <= NOW for t in times)
        assert (NOW - times[0]).days <= 30
        assert s.status == s.events[-1].status


def test_orders_are_deterministic_and_growing_keeps_them() -> None:
    spec = WorldSpec(seed=3, shipments=300, products=50, customers_per_region=80)
    a = [encode(o) for o in World(spec, NOW).orders()]
    assert a == [encode(o) for o in World(spec, NOW).orders()]
    bigger = WorldSpec(seed=3, shipments=600, products=50, customers_per_region=80)
    assert [encode(o) for o in World(bigger, NOW).orders()][:300] == a
    assert [encode(o) for o in World(spec, NOW).orders(start=100)] == a[100:]


def test_order_i_is_the_order_shipment_i_delivers() -> None:
    w = World(WorldSpec(seed=5, shipments=1500, products=60, customers_per_region=100), NOW)
    for order, shipment in zip(w.orders(), w.shipments(), strict=True):
        assert order.order_id == shipment.order_id
        assert order.site_id == shipment.site_id
        assert order.carrier == shipment.carrier
        assert order.region == w.region_of(shipment.site_id) == order.customer.region
        assert order.placed_at < shipment.events[0].occurred_at
        skus = [line.sku for line in order.lines]
        assert skus and len(set(skus)) == len(skus), "at least one line, no sku twice"
        assert all(line.qty >= 1 for line in order.lines)
        assert set(skus) <= w.shelf(order.site_id).skus, "only what the shipping site has on hand"
        assert order.destination.postcode == order.customer.postcode


def test_customers_hold_plausible_personal_data() -> None:
    w = World(WorldSpec(regions=4, customers_per_region=200), NOW)
    assert len(w.customers) == 800
    assert len({c.customer_id for c in w.customers}) == 800
    region = {r.name: r for r in w.regions}
    for c in w.customers:
        assert c.email.isascii() and "@example." in c.email
        assert c.name and c.street and c.phone.startswith("+")
        assert c.country in {"DE", "FR", "GB"} and c.city == region[c.region].city
        assert abs(c.lat - region[c.region].lat) < 0.3 and abs(c.lon - region[c.region].lon) < 0.45
        if c.country == "DE":
            assert len(c.postcode) == 5 and c.postcode.isdigit()


def test_ground_truth_is_a_function_of_the_world() -> None:
    spec = WorldSpec(seed=9, shipments=400, products=60, customers_per_region=60)
    a, b = World(spec, NOW), World(spec, NOW)
    for oa, ob in zip(a.orders(), b.orders(), strict=True):
        assert a.returns(oa) == b.returns(ob)
        for site in a.sites:
            if site.region == oa.region:
                assert a.delivery_hours(oa, site.site_id) == b.delivery_hours(ob, site.site_id) > 0
    assert a.site_backlog(a.sites[0].site_id, NOW) == b.site_backlog(a.sites[0].site_id, NOW) >= 0
