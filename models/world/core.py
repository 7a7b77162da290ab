"""The world simulator: a deterministic store's world, from a seed.

Regions with micro-fulfillment centers and warehouses, a catalog, stock, shipments with
plausible carrier histories over the 30 days before `now`, the customers and orders behind
them, and the ground truth the models learn (delivery times, returns, what sells together;
`models.world.truth`). The same seed and `now` always give the same world. Each generator draws
from its own seeded random stream, so adding one never changes what the others produce.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Literal

from models.geo import haversine_km
from models.world import truth
from models.world.orders import Order, make_order
from models.world.people import Customer, Habits, make_habits, make_person
from sync.entities import Product, Shipment, ShipmentEvent, Site, Stock

# Metro areas a region is centred on: (name, city, lat, lon, the district prefix of postcodes).
METROS: list[tuple[str, str, float, float]] = [
    ("north", "Hamburg", 53.5511, 9.9937),
    ("south", "Munich", 48.1351, 11.5820),
    ("west", "Cologne", 50.9375, 6.9603),
    ("east", "Berlin", 52.5200, 13.4050),
    ("paris", "Paris", 48.8566, 2.3522),
    ("lyon", "Lyon", 45.7640, 4.8357),
    ("london", "London", 51.5074, -0.1278),
    ("manchester", "Manchester", 53.4808, -2.2426),
]

CATEGORIES: dict[str, tuple[float, float, list[str]]] = {
    # category: (min price, max price, name stems)
    "coffee": (6.0, 24.0, ["Espresso Beans", "Filter Roast", "Cold Brew Pack", "Decaf Blend"]),
    "tea": (4.0, 18.0, ["Green Tea", "Earl Grey", "Rooibos", "Chai Mix"]),
    "snacks": (2.0, 9.0, ["Trail Mix", "Oat Bar", "Rice Crackers", "Dark Chocolate"]),
    "household": (3.0, 25.0, ["Dish Soap", "Laundry Pods", "Sponges", "Trash Bags"]),
    "personal_care": (3.0, 30.0, ["Shampoo", "Toothpaste", "Body Lotion", "Razor Blades"]),
    "baby": (5.0, 40.0, ["Diapers", "Wipes", "Baby Formula", "Bottle Set"]),
    "pet": (4.0, 45.0, ["Dog Food", "Cat Litter", "Chew Toy", "Cat Treats"]),
    "apparel": (12.0, 90.0, ["Running Tee", "Wool Socks", "Rain Jacket", "Denim Jeans"]),
    "shoes": (30.0, 140.0, ["Trail Runner", "Canvas Sneaker", "Leather Boot", "Sandal"]),
    "electronics": (8.0, 200.0, ["USB-C Cable", "Earbuds", "Power Bank", "Smart Plug"]),
}
ADJECTIVES = ["Classic", "Organic", "Premium", "Everyday", "Eco", "Family", "Travel", "Pro"]

CARRIERS: dict[str, str] = {"ups": "1ZWP", "dhl": "JD0146", "dpd": "0150"}
SIGNERS = ["J SMITH", "Anna Müller", "M DUBOIS", "Peter Schmidt", "L Martin", "K JONES"]


@dataclass(frozen=True)
class Region:
    name: str
    city: str
    lat: float
    lon: float


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 7
    regions: int = 2
    sites_per_region: int = 6
    products: int = 500
    shipments: int = 20_000
    customers_per_region: int = 1500

    def __post_init__(self) -> None:
        assert 1 <= self.regions <= len(METROS), f"regions must be 1..{len(METROS)}"
        assert self.sites_per_region >= 1, "a region needs at least one site"
        assert self.customers_per_region >= 1, "a region needs at least one customer"


@dataclass(frozen=True)
class Shelf:
    """What a site can ship: skus with stock on hand, also grouped by category."""

    skus: frozenset[str]
    all: list[str]
    by_category: dict[str, list[str]]


def _offset(lat: float, lon: float, rng: random.Random, max_km: float) -> tuple[float, float]:
    r = max_km * math.sqrt(rng.random())
    theta = rng.random() * 2 * math.pi
    dlat = r * math.cos(theta) / 111.0
    dlon = r * math.sin(theta) / (111.0 * math.cos(math.radians(lat)))
    return round(lat + dlat, 5), round(lon + dlon, 5)


class World:
    """A seeded world. Entities are generated lazily so a million shipments stream."""

    def __init__(self, spec: WorldSpec, now: datetime) -> None:
        assert now.tzinfo is not None, "now must be timezone-aware"
        self.spec = spec
        self.now = now
        self.regions = [Region(*m) for m in METROS[: spec.regions]]
        self.sites = self._make_sites()
        self.products = self._make_products()
        self._sites_by_id = {s.site_id: s for s in self.sites}
        self.category_of = {p.sku: p.category for p in self.products}
        self.price_of = {p.sku: p.price for p in self.products}

    def _rng(self, stream: str) -> random.Random:
        return random.Random(f"{self.spec.seed}:{stream}")

    def _make_sites(self) -> list[Site]:
        rng = self._rng("sites")
        sites = []
        for region in self.regions:
            for i in range(self.spec.sites_per_region):
                kind: Literal["mfc", "warehouse"] = "warehouse" if i % 3 == 2 else "mfc"
                lat, lon = _offset(region.lat, region.lon, rng, 40.0 if kind == "warehouse" else 15.0)
                sites.append(
                    Site(
                        site_id=f"{region.name}-{kind}-{i + 1}",
                        kind=kind,
                        region=region.name,
                        name=f"{region.city} {kind.upper() if kind == 'mfc' else 'Warehouse'} {i + 1}",
                        lat=lat,
                        lon=lon,
                        capacity_per_hour=rng.choice([60, 90, 120]) if kind == "mfc" else 400,
                    )
                )
        return sites

    def _make_products(self) -> list[Product]:
        rng = self._rng("products")
        cats = list(CATEGORIES)
        products = []
        for i in range(self.spec.products):
            cat = cats[i % len(cats)]
            lo, hi, stems = CATEGORIES[cat]
            name = f"{rng.choice(ADJECTIVES)} {rng.choice(stems)}"
            products.append(
                Product(
                    sku=f"sku-{i + 1:05d}",
                    name=name,
                    category=cat,
                    price=round(rng.uniform(lo, hi), 2),
                    image_url=f"/static/products/{cat}.svg",
                )
            )
        return products

    def region_of(self, site_id: str) -> str:
        return self.site(site_id).region

    def site(self, site_id: str) -> Site:
        try:
            return self._sites_by_id[site_id]
        except KeyError:
            raise KeyError(f"unknown site_id {site_id!r}") from None

    def stock(self) -> Iterator[Stock]:
        rng = self._rng("stock")
        for site in self.sites:
            deep = site.kind == "warehouse"
            for p in self.products:
                if not deep and rng.random() < 0.25:
                    continue  # an MFC carries a curated three quarters of the catalog
                yield Stock(
                    site_id=site.site_id,
                    sku=p.sku,
                    on_hand=rng.randint(50, 500) if deep else rng.randint(0, 60),
                    reserved=0,
                )

    def tracking_number(self, i: int, carrier: str) -> str:
        # i * 7919 mod 10**12 is a bijection: unique numbers that do not look sequential.
        return f"{CARRIERS[carrier]}{(i * 7919 + 104_729) % 10**12:012d}"

    def shipments(self, start: int = 0) -> Iterator[Shipment]:
        """Shipments `start`, `start`+1, … spread over the regions' sites."""
        for i in range(start, self.spec.shipments):
            rng, site, carrier, shipped = self._shipment_start(i)
            yield self._shipment(i, rng, site, carrier, shipped)

    def _shipment_start(self, i: int) -> tuple[random.Random, Site, str, datetime]:
        carriers = list(CARRIERS)
        rng = random.Random(f"{self.spec.seed}:shipment:{i}")
        site = self.sites[i % len(self.sites)]
        carrier = carriers[rng.randrange(len(carriers))]
        shipped = self.now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        return rng, site, carrier, shipped

    def shipment_plan(self, i: int) -> tuple[Site, str, datetime]:
        """Shipment i's site, carrier and first event time, without building its history."""
        _, site, carrier, shipped = self._shipment_start(i)
        return site, carrier, shipped

    def _shipment(self, i: int, rng: random.Random, site: Site, carrier: str, shipped: datetime) -> Shipment:
        transit = timedelta(hours=rng.uniform(10, 60))
        eta = shipped + transit
        hub = f"{self.regions[[r.name for r in self.regions].index(site.region)].city} Hub"
        plan: list[tuple[timedelta, str, str, str]] = [
            (timedelta(0), "info_received", "Shipment information received", site.name),
            (timedelta(hours=rng.uniform(1, 4)), "in_transit", "Picked up by carrier", site.name),
            (transit * 0.5, "in_transit", "Arrived at sorting facility", hub),
            (transit * 0.85, "out_for_delivery", "Out for delivery", hub),
        ]
        fate = rng.random()
        if fate < 0.05:
            plan.append((transit * 0.95, "attempt_fail", "Delivery attempted, nobody home", hub))
            plan.append((transit * 1.4, "delivered", "Delivered to neighbour", hub))
        elif fate < 0.08:
            plan.append((transit * 0.9, "exception", "Address could not be found", hub))
        else:
            signer = rng.choice(SIGNERS)
            plan.append((transit, "delivered", f"Delivered, signed for by {signer}", hub))
        events = []
        for offset, status, message, location in plan:
            at = shipped + offset
            if at > self.now:
                break
            received = at + timedelta(seconds=rng.uniform(1, 90))
            events.append(
                ShipmentEvent(
                    occurred_at=at,
                    status=status,  # type: ignore[arg-type]
                    message=message,
                    location=location,
                    received_at=min(received, self.now),
                )
            )
        return Shipment(
            tracking_number=self.tracking_number(i, carrier),
            carrier=carrier,
            order_id=f"o-{i + 1:08d}",
            site_id=site.site_id,
            status=events[-1].status,
            eta=eta,
            events=events,
            updated_at=events[-1].received_at,
            version=len(events),
        )

    # Customers and their orders.

    @cached_property
    def _people(self) -> tuple[list[Customer], dict[str, Habits]]:
        pop = self.popularity
        by_category: dict[str, tuple[list[str], list[float]]] = {}
        for p in self.products:
            skus, weights = by_category.setdefault(p.category, ([], []))
            skus.append(p.sku)
            weights.append(pop[p.sku])
        one_offs = [p.sku for p in self.products if p.sku in self.follow_ups]
        projects_from = (one_offs, [pop[sku] for sku in one_offs])
        customers: list[Customer] = []
        habits: dict[str, Habits] = {}
        for r, region in enumerate(self.regions):
            for j in range(self.spec.customers_per_region):
                rng = self._rng(f"customer:{region.name}:{j}")
                lat, lon = _offset(region.lat, region.lon, rng, 25.0)
                person = make_person(rng, f"c-{r}{j:06d}", region.name, region.city, lat, lon)
                customers.append(person)
                habits[person.customer_id] = make_habits(
                    rng, self.now, by_category, truth.REPLENISH_DAYS, projects_from, self.follow_ups
                )
        return customers, habits

    @property
    def customers(self) -> list[Customer]:
        """Every region's customers, with the personal data the store holds."""
        return self._people[0]

    def habits(self, customer_id: str) -> Habits:
        """The simulator's ground truth about a customer (never shown to a model)."""
        return self._people[1][customer_id]

    @cached_property
    def _customer_wheels(self) -> dict[str, tuple[list[Customer], list[float]]]:
        wheels: dict[str, tuple[list[Customer], list[float]]] = {}
        for c in self.customers:
            people, cumulative = wheels.setdefault(c.region, ([], []))
            people.append(c)
            cumulative.append((cumulative[-1] if cumulative else 0.0) + self.habits(c.customer_id).activity)
        return wheels

    def pick_customer(self, region: str, u: float) -> Customer:
        """The customer at quantile `u` of the region's customers weighted by how often they shop."""
        people, cumulative = self._customer_wheels[region]
        return people[min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(people) - 1)]

    @cached_property
    def _product_wheel(self) -> list[float]:
        return list(itertools.accumulate(self.popularity[p.sku] for p in self.products))

    def pick_product(self, u: float) -> str:
        """The sku at quantile `u` of the catalog weighted by popularity."""
        wheel = self._product_wheel
        return self.products[min(bisect.bisect_right(wheel, u * wheel[-1]), len(wheel) - 1)].sku

    @cached_property
    def _shelves(self) -> dict[str, Shelf]:
        stocked: dict[str, list[str]] = {s.site_id: [] for s in self.sites}
        for st in self.stock():
            if st.on_hand > 0:
                stocked[st.site_id].append(st.sku)
        shelves = {}
        for site_id, skus in stocked.items():
            by_category: dict[str, list[str]] = {}
            for sku in skus:
                by_category.setdefault(self.category_of[sku], []).append(sku)
            shelves[site_id] = Shelf(skus=frozenset(skus), all=skus, by_category=by_category)
        return shelves

    def shelf(self, site_id: str) -> Shelf:
        """The skus `site_id` has on hand in `stock()`."""
        return self._shelves[site_id]

    def orders(self, start: int = 0) -> Iterator[Order]:
        """Orders `start`, `start`+1, …: order i is the one shipment i delivers."""
        for i in range(start, self.spec.shipments):
            yield make_order(self, i)

    def order(self, i: int) -> Order:
        assert 0 <= i < self.spec.shipments, f"order index {i} outside 0..{self.spec.shipments - 1}"
        return make_order(self, i)

    # Ground truth (models.world.truth).

    @cached_property
    def popularity(self) -> dict[str, float]:
        """How much each product sells, relative to the others."""
        return truth.popularity(self._rng("popularity"), self.products)

    @cached_property
    def affinities(self) -> dict[str, tuple[tuple[str, float], ...]]:
        """sku → the products that join its baskets, with the chance that each does."""
        return truth.affinities(self._rng("affinity"), self.products, self.popularity)

    @cached_property
    def follow_ups(self) -> dict[str, str]:
        """A one-off product's sku → what its buyers come back for within three weeks."""
        return truth.follow_ups(self._rng("follow-up"), self.products, self.popularity)

    @cached_property
    def _site_loads(self) -> dict[str, truth.SiteLoad]:
        rng = self._rng("site-load")
        return {s.site_id: truth.site_load(rng, s.kind) for s in self.sites}

    @cached_property
    def _day_loads(self) -> dict[tuple[str, date], truth.DayLoad]:
        return {}

    def _day_load(self, site_id: str, day: date) -> truth.DayLoad:
        key = (site_id, day)
        if key not in self._day_loads:
            self._day_loads[key] = truth.day_load(self.spec.seed, site_id, day)
        return self._day_loads[key]

    def backlog_hours(self, site_id: str, at: datetime) -> float:
        """Hours of work queued at a site at `at`, at its capacity."""
        day = at.astimezone(UTC).date()
        today, yesterday = self._day_load(site_id, day), self._day_load(site_id, day - timedelta(days=1))
        return truth.backlog_hours(self._site_loads[site_id], today, yesterday, at.astimezone(UTC))

    def site_backlog(self, site_id: str, at: datetime) -> int:
        """Orders waiting to be picked at a site at `at` (what an operator's dashboard shows)."""
        return round(self.backlog_hours(site_id, at) * self.site(site_id).capacity_per_hour)

    def delivery_hours(self, order: Order, site_id: str | None = None) -> float:
        """Hours from placing `order` to its delivery, shipped from `site_id` (default: its own)."""
        site = self.site(site_id or order.site_id)
        dest = order.destination
        return truth.delivery_hours(
            self.spec.seed,
            order.order_id,
            site.site_id,
            site.kind,
            haversine_km(site.lat, site.lon, dest.lat, dest.lon),
            order.carrier,
            order.placed_at.astimezone(UTC),
            self.backlog_hours(site.site_id, order.placed_at),
        )

    def returns(self, order: Order) -> tuple[bool, ...]:
        """Whether each of the order's lines comes back."""
        habits = self.habits(order.customer.customer_id)
        rng = self._rng(f"return:{order.order_id}")
        out = []
        for line in order.lines:
            category = self.category_of[line.sku]
            lo, hi, _ = CATEGORIES[category]
            p = truth.return_probability(
                category, line.unit_price, (lo + hi) / 2, line.discount, line.qty, habits.returner
            )
            out.append(rng.random() < p)
        return tuple(out)


def world_now(at: float) -> datetime:
    """Anchor a world at the start of the hour, so re-seeding within it is identical."""
    t = datetime.fromtimestamp(at, UTC)
    return t.replace(minute=0, second=0, microsecond=0)
