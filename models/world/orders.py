"""Orders: what customers buy, when, and which site shipped it.

Order i is the order of shipment i (`o-%08d` of i + 1): same site, same carrier, placed a few
minutes to two hours before the parcel's first event. Its customer is drawn from the site's
region by how often they shop; its lines come from their habits at that moment — staples that
are due, a one-off purchase and its follow-up, an impulse buy, and the companions each product
tends to bring along — limited to what the shipping site carries (a product it lacks is swapped
for one of the same category that it has, as a quick-commerce shop only offers its own shelf).
Every order draws from its own random stream, so orders never depend on one another.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from models.world.people import Customer
from models.world.truth import SIZE_SENSITIVE

if TYPE_CHECKING:
    from models.world.core import World

# Staples' rhythms are anchored here, so they do not move with the world's `now`.
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
DISCOUNTS = ([0.0, 0.1, 0.2, 0.3], [0.7, 0.15, 0.1, 0.05])
# A staple is due for the first quarter of its interval: bought with nine in ten of the orders
# then, and with three in a hundred otherwise. Orders cannot see one another, so a customer who
# orders twice while a staple is due may buy it twice; the window is kept short for that.
DUE_WINDOW = 0.25


class Destination(msgspec.Struct, frozen=True, kw_only=True):
    lat: float
    lon: float
    postcode: str
    city: str
    country: str


class OrderLine(msgspec.Struct, frozen=True, kw_only=True):
    sku: str
    qty: int
    unit_price: float  # the catalog price
    discount: float  # the fraction taken off it


class Order(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    customer: Customer
    region: str
    destination: Destination
    lines: tuple[OrderLine, ...]
    placed_at: datetime
    site_id: str  # the site that shipped it
    carrier: str


def make_order(world: World, i: int) -> Order:
    site, carrier, shipped = world.shipment_plan(i)
    rng = random.Random(f"{world.spec.seed}:order:{i}")
    placed_at = (shipped - timedelta(seconds=rng.uniform(600, 7200))).replace(microsecond=0)
    customer = world.pick_customer(site.region, rng.random())
    habits = world.habits(customer.customer_id)
    category = world.category_of

    wanted: dict[str, int] = {}
    t_days = (placed_at - EPOCH).total_seconds() / 86400
    for staple in habits.staples:
        since = (t_days - staple.phase_days) % staple.interval_days
        if rng.random() < (0.9 if since < DUE_WINDOW * staple.interval_days else 0.03):
            sku = staple.sku if rng.random() < 0.85 else staple.alt_sku
            wanted[sku] = max(wanted.get(sku, 0), staple.qty)
    for project in habits.projects:
        days = (placed_at - project.at).total_seconds() / 86400
        if 0 <= days < 2 and rng.random() < 0.8:
            two_sizes = category[project.sku] in SIZE_SENSITIVE and rng.random() < habits.bracketing
            wanted[project.sku] = 2 if two_sizes else 1
        elif 3 <= days < 14 and rng.random() < 0.25:
            wanted.setdefault(project.follow_sku, 1)
    if rng.random() < 0.3:
        wanted.setdefault(world.pick_product(rng.random()), 1)
    for sku in list(wanted):
        for partner, strength in world.affinities[sku]:
            if rng.random() < strength:
                wanted.setdefault(partner, 1)
    if not wanted:
        staple_skus = [s.sku for s in habits.staples]
        if staple_skus and rng.random() < 0.5:
            wanted[rng.choice(staple_skus)] = 1
        else:
            wanted[world.pick_product(rng.random())] = 1

    shelf = world.shelf(site.site_id)
    qty_of: dict[str, int] = {}
    for sku, qty in wanted.items():
        if sku not in shelf.skus:
            options = shelf.by_category.get(category[sku])
            if not options:
                continue
            sku = rng.choice(options)
        qty_of[sku] = max(qty_of.get(sku, 0), qty)
    if not qty_of:
        qty_of[rng.choice(shelf.all)] = 1

    prices = world.price_of
    lines = tuple(
        OrderLine(sku=sku, qty=qty, unit_price=prices[sku], discount=rng.choices(*DISCOUNTS)[0])
        for sku, qty in qty_of.items()
    )
    return Order(
        order_id=f"o-{i + 1:08d}",
        customer=customer,
        region=site.region,
        destination=Destination(
            lat=customer.lat,
            lon=customer.lon,
            postcode=customer.postcode,
            city=customer.city,
            country=customer.country,
        ),
        lines=lines,
        placed_at=placed_at,
        site_id=site.site_id,
        carrier=carrier,
    )
