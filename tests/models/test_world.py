from datetime import UTC, datetime

from models.world import World, WorldSpec
from sync.entities import FINAL_STATUSES, encode_entity

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
