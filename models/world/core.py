"""The world simulator: a deterministic store's world, from a seed.

Regions with micro-fulfillment centers and warehouses, a catalog, stock, and shipments with
plausible carrier histories over the 30 days before `now`. The same seed and `now` always give
the same world. Later parts grow it (customers and orders, delivery-time drivers, returns,
co-purchase); each generator is a function of the world's seeded random stream so adding one
never changes what the others produce.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

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

    def __post_init__(self) -> None:
        assert 1 <= self.regions <= len(METROS), f"regions must be 1..{len(METROS)}"
        assert self.sites_per_region >= 1, "a region needs at least one site"


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
        for s in self.sites:
            if s.site_id == site_id:
                return s.region
        raise KeyError(f"unknown site_id {site_id!r}")

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
        carriers = list(CARRIERS)
        for i in range(start, self.spec.shipments):
            rng = random.Random(f"{self.spec.seed}:shipment:{i}")
            site = self.sites[i % len(self.sites)]
            carrier = carriers[rng.randrange(len(carriers))]
            yield self._shipment(i, rng, site, carrier)

    def _shipment(self, i: int, rng: random.Random, site: Site, carrier: str) -> Shipment:
        shipped = self.now - timedelta(seconds=rng.uniform(0, 30 * 86400))
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


def world_now(at: float) -> datetime:
    """Anchor a world at the start of the hour, so re-seeding within it is identical."""
    t = datetime.fromtimestamp(at, UTC)
    return t.replace(minute=0, second=0, microsecond=0)
