from __future__ import annotations

from pathlib import Path

from models.world import World, WorldSpec
from origin.seed import seed_world
from origin.store import open_store
from tests.conftest import Clock


def test_seeding_again_with_more_shipments_extends_without_rewriting(
    tmp_path: Path, clock: Clock, store_url: str | None
) -> None:
    from models.world import world_now

    store = open_store(store_url, tmp_path, clock)
    try:
        now = world_now(clock())
        first = seed_world(store, World(WorldSpec(shipments=50, products=20), now))
        heads = {b.bucket: b.head for b in store.buckets()}
        seed_world(store, World(WorldSpec(shipments=50, products=20), now))
        assert {b.bucket: b.head for b in store.buckets()} == heads, "re-seeding the same world adds nothing"
        seed_world(store, World(WorldSpec(shipments=80, products=20), now))
        after = {b.bucket: b.head for b in store.buckets()}
        assert sum(after.values()) - sum(heads.values()) == 30
        assert first["regions"] == ["north", "south"]
        assert all(len(v) == 5 for v in first["samples"].values())
    finally:
        store.close()
