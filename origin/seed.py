"""Seeding: write a simulated world into the store, through the change log like any write."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Any, TypeVar

import msgspec

from models.world import Order as WorldOrder
from models.world import World
from origin import copurchase, ledger, registry, rescrub, retention
from origin.orders import (
    Address,
    Customer,
    Destination,
    NewOrder,
    PreparedOrder,
    PrivacyKeys,
    prepare_order,
    save_order,
)
from origin.sanitize import Known
from origin.shipments import sanitized_events
from origin.store import Store, Tx
from sync.entities import (
    GLOBAL_BUCKET,
    ChangeKinds,
    Line,
    Shipment,
    encode_entity,
    region_bucket,
)

T = TypeVar("T")
BATCH = 5000


def _batches(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def _meta_int(tx: Tx, key: str) -> int:
    row = tx.one("SELECT value FROM meta WHERE key = ?", (key,))
    return int(row[0]) if row else 0


def _sanitized(s: Shipment, o: WorldOrder) -> Shipment:
    """The simulated timeline through the one sanitizer, with its order's address known."""
    known = Known.of([o.customer.street], [o.customer.postcode, o.destination.postcode])
    return msgspec.structs.replace(s, events=sanitized_events(s, known))


def store_order(o: WorldOrder) -> NewOrder:
    """A simulated order as the store would post it (personal data included)."""
    c = o.customer
    return NewOrder(
        order_id=o.order_id,
        customer=Customer(
            customer_id=c.customer_id,
            name=c.name,
            email=c.email,
            phone=c.phone,
            address=Address(street=c.street, postcode=c.postcode, city=c.city, country=c.country),
        ),
        destination=Destination(
            lat=o.destination.lat,
            lon=o.destination.lon,
            postcode=o.destination.postcode,
            city=o.destination.city,
            country=o.destination.country,
            street=c.street,
        ),
        lines=[Line(line.sku, line.qty) for line in o.lines],
        placed_at=o.placed_at,
    )


# bucket, tracking number, shipment body, (order id, settled at) for retention, order
Row = tuple[str, str, bytes, tuple[str, float | None], PreparedOrder | None]
_WORLD: dict[str, Any] = {}  # what forked generator processes inherit


def _generate(chunk: tuple[int, int]) -> tuple[int, list[Row]]:
    """Shipments `start`..`stop` and their orders, sanitized and encoded (CPU only, no I/O)."""
    world: World = _WORLD["world"]
    keys: PrivacyKeys | None = _WORLD["keys"]
    now: float = _WORLD["now"]
    start, stop = chunk
    regions = {s.site_id: s.region for s in world.sites}
    pairs = zip(islice(world.shipments(start), stop - start), world.orders(start), strict=False)
    rows: list[Row] = []
    for s, o in pairs:
        order = None if keys is None else prepare_order(store_order(o), o.region, keys, now)
        bucket, settled = region_bucket(regions[s.site_id]), (s.order_id, retention.settled_at(s))
        rows.append((bucket, s.tracking_number, encode_entity(_sanitized(s, o)), settled, order))
    return stop, rows


def _generated(
    world: World, chunks: list[tuple[int, int]], keys: PrivacyKeys | None, now: float
) -> Iterator[tuple[int, list[Row]]]:
    """Generate chunks in other processes while this one writes (in order), when it pays."""
    _WORLD.update(world=world, keys=keys, now=now)
    workers = max(1, (os.cpu_count() or 2) - 1)
    if len(chunks) < 4 or multiprocessing.get_start_method() != "fork":
        yield from map(_generate, chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[tuple[int, list[Row]]]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_generate, chunk))
            if len(pending) > 2 * workers:  # a bounded lead: memory stays flat however big
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def seed_world(store: Store, world: World, keys: PrivacyKeys | None = None) -> dict[str, Any]:
    """Create the world, or extend it with the shipments not yet seeded; return a summary.

    With `keys`, every shipment's order is recorded too (personal data kept at the origin, the
    minimized order published to the region); without, shipments only. Stock is booked as an
    opening balance (one `receive` per site and sku); history is not replayed through the ledger.
    """
    with store.transaction() as tx:
        rescrub.mark_fresh_store(tx)
        for region in world.regions:
            tx.execute(
                "INSERT INTO region (name, lat, lon) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (region.name, region.lat, region.lon),
            )
        for site in world.sites:
            tx.execute(
                "INSERT INTO site_region (site_id, region) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (site.site_id, site.region),
            )
            if tx.get(ChangeKinds.SITE, site.site_id) is None:
                tx.put(GLOBAL_BUCKET, ChangeKinds.SITE, site.site_id, encode_entity(site))
        for product in world.products:
            if tx.get(ChangeKinds.PRODUCT, product.sku) is None:
                tx.put(GLOBAL_BUCKET, ChangeKinds.PRODUCT, product.sku, encode_entity(product))
        done = _meta_int(tx, "seeded_stock")
    if not done:
        regions = {s.site_id: s.region for s in world.sites}
        for stock in _batches(world.stock(), BATCH):
            with store.transaction() as tx:
                for st in stock:
                    movement = f"seed:{st.site_id}:{st.sku}"
                    ledger.receive(tx, movement, st.site_id, st.sku, st.on_hand, regions[st.site_id])
        with store.transaction() as tx:
            tx.execute("INSERT INTO meta (key, value) VALUES ('seeded_stock', '1')")

    with store.reader() as r:
        start = _meta_int(r, "seeded_shipments")
    chunks = [(i, min(i + BATCH, world.spec.shipments)) for i in range(start, world.spec.shipments, BATCH)]
    for stop, rows in _generated(world, chunks, keys, store.clock()):
        with store.transaction() as tx:
            for bucket, tn, shipment, _, order in rows:
                if order is not None:
                    save_order(tx, order)
                tx.put(bucket, ChangeKinds.SHIPMENT, tn, shipment)
            tx.executemany(
                "INSERT INTO order_shipment (tracking_number, order_id, settled_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tracking_number) DO NOTHING",
                [(tn, order_id, at) for _, tn, _, (order_id, at), _ in rows],
            )
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('seeded_shipments', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(stop),),
            )
    with store.transaction() as tx:
        registry.register_shipped(tx)
        if keys is not None:
            copurchase.refresh(tx, keys)
    return summary(world)


def summary(world: World) -> dict[str, Any]:
    samples: dict[str, list[str]] = {r.name: [] for r in world.regions}
    for s in world.shipments():
        region = world.region_of(s.site_id)
        if len(samples[region]) < 5:
            samples[region].append(s.tracking_number)
        if all(len(v) >= 5 for v in samples.values()):
            break
    return {
        "regions": [r.name for r in world.regions],
        "sites": {r.name: [s.site_id for s in world.sites if s.region == r.name] for r in world.regions},
        "products": len(world.products),
        "shipments": world.spec.shipments,
        "samples": samples,
    }
