"""Ground truth the models learn from: how long a parcel takes, what gets returned, what sells together.

Fixed before any model was trained and not tuned afterwards; the model cards report whatever the
models make of it.

Delivery. A site works through its backlog first (orders waiting, in hours of its capacity: a
daily and weekly rhythm, hourly wobble and surges — a sick shift, a promotion — on about three
days in ten), then picks and packs. An MFC hands parcels to a local courier every half hour
(07:00–22:00, Sundays 09:00–18:00) who rides the road distance at city speed; a warehouse loads
the carrier's truck at 11:00 and 17:00 on weekdays and 11:00 on Saturdays, the parcel goes
through the carrier's depot and out on the next morning's round (08:00, Monday to Saturday).
Carriers differ in speed and in how often something goes wrong (a failed attempt, a lost label:
a day or more extra). Times are UTC.

Returns. A base rate per category (size-sensitive apparel and shoes far above groceries),
raised by a high price for the category, by a discount, by ordering two sizes of the same item,
and by the customer's own tendency — which a model can only see through their past returns.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta

import msgspec

from sync.entities import Product

# Days between purchases of a staple (a customer's own rhythm varies around these).
REPLENISH_DAYS: dict[str, float] = {
    "coffee": 14.0,
    "tea": 21.0,
    "snacks": 7.0,
    "household": 21.0,
    "personal_care": 28.0,
    "baby": 7.0,
    "pet": 14.0,
}
DISCRETIONARY = ("apparel", "shoes", "electronics")
SIZE_SENSITIVE = frozenset({"apparel", "shoes"})
# What a product is bought together with, by category.
AFFINE_CATEGORIES: dict[str, list[str]] = {
    "coffee": ["snacks", "coffee"],
    "tea": ["snacks", "tea"],
    "snacks": ["coffee", "tea", "snacks"],
    "household": ["household", "personal_care"],
    "personal_care": ["personal_care", "household"],
    "baby": ["baby", "household"],
    "pet": ["pet"],
    "apparel": ["apparel", "shoes"],
    "shoes": ["apparel"],
    "electronics": ["electronics"],
}
# What a one-off purchase leads to in the following weeks.
FOLLOW_CATEGORIES: dict[str, list[str]] = {
    "apparel": ["apparel", "shoes"],
    "shoes": ["apparel", "shoes"],
    "electronics": ["electronics"],
}
RETURN_BASE: dict[str, float] = {
    "coffee": 0.01,
    "tea": 0.01,
    "snacks": 0.01,
    "household": 0.02,
    "personal_care": 0.03,
    "baby": 0.04,
    "pet": 0.03,
    "apparel": 0.2,
    "shoes": 0.25,
    "electronics": 0.07,
}
CARRIER_SPEED: dict[str, float] = {"ups": 0.9, "dhl": 1.0, "dpd": 1.12}
CARRIER_EXCEPTION: dict[str, float] = {"ups": 0.03, "dhl": 0.04, "dpd": 0.06}
WEEKDAY_LOAD = (1.25, 1.05, 1.0, 1.0, 1.1, 0.85, 0.6)
HOUR = timedelta(hours=1)


def popularity(rng: random.Random, products: list[Product]) -> dict[str, float]:
    return {p.sku: round(rng.lognormvariate(0, 0.9), 5) for p in products}


def _by_category(products: list[Product]) -> dict[str, list[Product]]:
    out: dict[str, list[Product]] = {}
    for p in products:
        out.setdefault(p.category, []).append(p)
    return out


def affinities(
    rng: random.Random, products: list[Product], pop: dict[str, float]
) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each product's two companions and the chance each joins a basket holding it."""
    by_cat = _by_category(products)
    out: dict[str, tuple[tuple[str, float], ...]] = {}
    for p in products:
        pool = [q for c in AFFINE_CATEGORIES[p.category] for q in by_cat.get(c, []) if q.sku != p.sku]
        if not pool:
            out[p.sku] = ()
            continue
        picks = rng.choices(pool, [pop[q.sku] for q in pool], k=2)
        out[p.sku] = tuple((q.sku, round(rng.uniform(0.08, 0.3), 3)) for q in picks)
    return out


def follow_ups(rng: random.Random, products: list[Product], pop: dict[str, float]) -> dict[str, str]:
    """For each one-off product, what its buyers come back for within three weeks."""
    by_cat = _by_category(products)
    out: dict[str, str] = {}
    for p in products:
        if p.category not in FOLLOW_CATEGORIES:
            continue
        pool = [q for c in FOLLOW_CATEGORIES[p.category] for q in by_cat.get(c, []) if q.sku != p.sku]
        if pool:
            out[p.sku] = rng.choices(pool, [pop[q.sku] for q in pool])[0].sku
    return out


class SiteLoad(msgspec.Struct, frozen=True, kw_only=True):
    """A site's usual backlog at its busiest hour, in hours of its capacity."""

    base_hours: float


class DayLoad(msgspec.Struct, frozen=True, kw_only=True):
    hourly: tuple[float, ...]  # 24 multipliers
    surge_start: float  # hour of the day; a surge may run past midnight
    surge_end: float
    surge_hours: float


def site_load(rng: random.Random, kind: str) -> SiteLoad:
    return SiteLoad(base_hours=round(rng.uniform(0.3, 2.0) if kind == "mfc" else rng.uniform(0.5, 3.0), 4))


def day_load(seed: int, site_id: str, day: date) -> DayLoad:
    rng = random.Random(f"{seed}:load:{site_id}:{day.isoformat()}")
    hourly = tuple(rng.lognormvariate(0, 0.2) for _ in range(24))
    if rng.random() < 0.3:
        start = rng.uniform(7, 20)
        return DayLoad(
            hourly=hourly,
            surge_start=start,
            surge_end=start + rng.uniform(2, 8),
            surge_hours=rng.uniform(1.5, 6),
        )
    return DayLoad(hourly=hourly, surge_start=0.0, surge_end=0.0, surge_hours=0.0)


def _profile(hour: float) -> float:
    midday = math.exp(-(((hour - 12.5) / 3.5) ** 2))
    evening = 0.9 * math.exp(-(((hour - 19) / 2.5) ** 2))
    return 0.15 + 0.85 * max(midday, evening)


def backlog_hours(load: SiteLoad, today: DayLoad, yesterday: DayLoad, at: datetime) -> float:
    """Hours of work queued at a site at `at`; `today` and `yesterday` are `at`'s day loads."""
    hour = at.hour + at.minute / 60
    hours = load.base_hours * _profile(hour) * WEEKDAY_LOAD[at.weekday()] * today.hourly[at.hour]
    if today.surge_start <= hour < today.surge_end:
        hours += today.surge_hours
    if yesterday.surge_start <= hour + 24 < yesterday.surge_end:
        hours += yesterday.surge_hours
    return hours


def _next_courier(t: datetime) -> datetime:
    """MFC couriers leave every half hour, 07:00–21:30 (Sundays 09:00–17:30)."""
    slot = t.replace(minute=0, second=0, microsecond=0)
    while slot < t:
        slot += timedelta(minutes=30)
    for _ in range(3):
        first, last = (9, 17.5) if slot.weekday() == 6 else (7, 21.5)
        h = slot.hour + slot.minute / 60
        if h < first:
            return slot.replace(hour=first, minute=0)
        if h <= last:
            return slot
        slot = slot.replace(hour=0, minute=0) + timedelta(days=1)
    raise AssertionError("a day always has a courier")


def _next_truck(t: datetime) -> datetime:
    """Carrier trucks load at warehouses at 11:00 and 17:00 on weekdays, 11:00 on Saturdays."""
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(8):
        slots = {5: (11,), 6: ()}.get(day.weekday(), (11, 17))
        for h in slots:
            if day.replace(hour=h) >= t:
                return day.replace(hour=h)
        day += timedelta(days=1)
    raise AssertionError("a week always has a truck")


def _next_round(t: datetime) -> datetime:
    """Delivery rounds from the carrier's depot start at 08:00, Monday to Saturday."""
    day = t.replace(hour=8, minute=0, second=0, microsecond=0)
    if day < t:
        day += timedelta(days=1)
    while day.weekday() == 6:
        day += timedelta(days=1)
    return day


def delivery_hours(
    seed: int,
    order_id: str,
    site_id: str,
    site_kind: str,
    distance_km: float,
    carrier: str,
    placed_at: datetime,
    backlog_h: float,
) -> float:
    """Hours from placing an order to its delivery, had `site_id` shipped it."""
    rng = random.Random(f"{seed}:delivery:{order_id}:{site_id}")
    road_km = distance_km * 1.3
    speed = CARRIER_SPEED.get(carrier, 1.0)
    if site_kind == "mfc":
        ready = placed_at + HOUR * (backlog_h * rng.uniform(0.85, 1.15) + 0.25)
        depart = _next_courier(ready)
        arrive = depart + HOUR * ((0.25 + road_km / 18) * speed * rng.lognormvariate(0, 0.3))
    else:
        ready = placed_at + HOUR * (backlog_h * rng.uniform(0.85, 1.15) + 1.5)
        depart = _next_truck(ready)
        at_depot = depart + HOUR * ((5 + road_km / 60) * speed * rng.lognormvariate(0, 0.2))
        arrive = _next_round(at_depot) + HOUR * (rng.uniform(0.5, 9) * speed)
    # Exceptions belong to the order and its carrier, whichever site ships it.
    exception = random.Random(f"{seed}:exception:{order_id}")
    if exception.random() < CARRIER_EXCEPTION.get(carrier, 0.05):
        arrive += HOUR * exception.uniform(20, 60)
    return (arrive - placed_at).total_seconds() / 3600


def return_probability(
    category: str, price: float, mid_price: float, discount: float, qty: int, returner: float
) -> float:
    base = RETURN_BASE[category]
    z = math.log(base / (1 - base)) + 0.6 * math.log(price / mid_price) + returner
    if discount >= 0.3:
        z += 0.9
    elif discount > 0:
        z += 0.35
    if category in SIZE_SENSITIVE and qty >= 2:
        z += 1.4
    return 1 / (1 + math.exp(-z))
