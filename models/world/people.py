"""Customers: the personal data a real store holds, and the habits only the simulator knows.

A `Customer` is what the store sends the origin (and what must never reach an edge). `Habits`
are the simulator's ground truth behind a customer's orders: staples they replenish on their
own rhythm, one-off purchases with a follow-up, how often they return things. Models never see
habits, only the orders and returns they cause.

Names, streets and numbers are made up; e-mails use the reserved example.* domains and phone
numbers the ranges regulators set aside for fiction where there is one (Ofcom's 07700 900xxx,
ARCEP's 06 39 98xx xx).
"""

from __future__ import annotations

import random
import unicodedata
from datetime import datetime, timedelta

import msgspec

# Where a region's customers live: (ISO country code, postcode scheme).
LOCALES: dict[str, str] = {
    "north": "DE",
    "south": "DE",
    "west": "DE",
    "east": "DE",
    "paris": "FR",
    "lyon": "FR",
    "london": "GB",
    "manchester": "GB",
}
FIRST_NAMES: dict[str, list[str]] = {
    "DE": ["Anna", "Lukas", "Mia", "Felix", "Lea", "Jonas", "Emma", "Paul", "Sophie", "Leon", "Hannah",
           "Maximilian", "Lena", "Tim", "Marie", "Jan", "Laura", "Niklas", "Julia", "David"],
    "FR": ["Camille", "Lucas", "Chloé", "Hugo", "Léa", "Louis", "Manon", "Jules", "Inès", "Arthur",
           "Sarah", "Nathan", "Jade", "Gabriel", "Louise", "Raphaël", "Zoé", "Théo", "Alice", "Tom"],
    "GB": ["Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Emily", "Charlie", "Sophia",
           "Thomas", "Grace", "James", "Lily", "William", "Freya", "Alfie", "Ella", "Henry", "Poppy"],
}  # fmt: skip
LAST_NAMES: dict[str, list[str]] = {
    "DE": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
           "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Braun", "Zimmermann"],
    "FR": ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
           "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux"],
    "GB": ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
           "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood"],
}  # fmt: skip
STREETS: dict[str, list[str]] = {
    "DE": ["Hauptstraße", "Schulstraße", "Gartenstraße", "Bahnhofstraße", "Lindenweg", "Bergstraße",
           "Kirchweg", "Waldstraße", "Ringstraße", "Goethestraße", "Schillerstraße", "Birkenweg"],
    "FR": ["rue de la République", "rue Victor Hugo", "avenue Jean Jaurès", "rue Pasteur",
           "boulevard Voltaire", "rue des Lilas", "rue du Moulin", "place de la Mairie", "rue Gambetta"],
    "GB": ["High Street", "Station Road", "Church Lane", "Victoria Road", "Park Avenue", "Mill Lane",
           "Queens Road", "Manor Close", "Green Lane", "King Street", "Albert Road", "Oak Drive"],
}  # fmt: skip
# Postcode ranges (DE, FR) and outward codes (GB) inside each region's city.
DE_POSTCODES: dict[str, tuple[int, int]] = {
    "north": (20095, 22769),
    "south": (80331, 81929),
    "west": (50667, 51149),
    "east": (10115, 14199),
}
FR_POSTCODES: dict[str, list[str]] = {
    "paris": [f"750{n:02d}" for n in range(1, 21)],
    "lyon": [f"6900{n}" for n in range(1, 10)],
}
GB_OUTWARD: dict[str, list[str]] = {
    "london": ["E1", "E14", "N1", "N7", "NW3", "SE1", "SE15", "SW1A", "SW11", "W1D", "W2", "WC2N", "EC1V"],
    "manchester": ["M1", "M4", "M8", "M13", "M14", "M15", "M16", "M20", "M21", "M32"],
}
GB_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # never C, I, K, M, O, V
EMAIL_DOMAINS = ["example.com", "example.net", "example.org"]


class Customer(msgspec.Struct, frozen=True, kw_only=True):
    """A shopper as the store knows them: personal data that stays at the origin."""

    customer_id: str
    name: str
    email: str
    phone: str
    street: str  # street and house number, in the country's order
    postcode: str
    city: str
    country: str  # ISO 3166-1 alpha-2
    region: str
    lat: float
    lon: float


class Staple(msgspec.Struct, frozen=True, kw_only=True):
    """A product a customer buys again and again, roughly every `interval_days`."""

    category: str
    sku: str
    alt_sku: str  # what they buy instead about one time in seven
    interval_days: float
    phase_days: float
    qty: int


class Project(msgspec.Struct, frozen=True, kw_only=True):
    """A one-off purchase around `at`, and the product it leads to in the weeks after."""

    sku: str
    follow_sku: str
    at: datetime


class Habits(msgspec.Struct, frozen=True, kw_only=True):
    """The simulator's ground truth about one customer's behaviour."""

    activity: float  # relative order frequency
    returner: float  # log-odds shift of every return decision
    bracketing: float  # chance of ordering two sizes of a size-sensitive product
    staples: tuple[Staple, ...]
    projects: tuple[Project, ...]


def postcode(region: str, rng: random.Random) -> str:
    country = LOCALES[region]
    if country == "DE":
        lo, hi = DE_POSTCODES[region]
        return f"{rng.randint(lo, hi):05d}"
    if country == "FR":
        return rng.choice(FR_POSTCODES[region])
    letters = rng.choice(GB_INWARD_LETTERS) + rng.choice(GB_INWARD_LETTERS)
    return f"{rng.choice(GB_OUTWARD[region])} {rng.randint(1, 9)}{letters}"


def phone(country: str, rng: random.Random) -> str:
    if country == "GB":
        return f"+44 7700 900{rng.randint(0, 999):03d}"
    if country == "FR":
        return f"+33 6 39 98 {rng.randint(0, 99):02d} {rng.randint(0, 99):02d}"
    return f"+49 15{rng.randint(1, 9)} {rng.randint(1_000_000, 9_999_999)}"


def street_address(country: str, rng: random.Random) -> str:
    number = rng.randint(1, 180)
    street = rng.choice(STREETS[country])
    return f"{street} {number}" if country == "DE" else f"{number} {street}"


def _ascii(text: str) -> str:
    for letter, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(letter, spelled)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch.isascii() and (ch.isalnum() or ch == "."))


def make_person(
    rng: random.Random, customer_id: str, region: str, city: str, lat: float, lon: float
) -> Customer:
    country = LOCALES[region]
    first, last = rng.choice(FIRST_NAMES[country]), rng.choice(LAST_NAMES[country])
    local = _ascii(f"{first}.{last}".lower())
    email = f"{local}{rng.randint(1, 999)}@{rng.choice(EMAIL_DOMAINS)}"
    return Customer(
        customer_id=customer_id,
        name=f"{first} {last}",
        email=email,
        phone=phone(country, rng),
        street=street_address(country, rng),
        postcode=postcode(region, rng),
        city=city,
        country=country,
        region=region,
        lat=lat,
        lon=lon,
    )


def make_habits(
    rng: random.Random,
    now: datetime,
    staples_by_category: dict[str, tuple[list[str], list[float]]],
    replenish_days: dict[str, float],
    projects_from: tuple[list[str], list[float]],
    follow_ups: dict[str, str],
) -> Habits:
    """Draw one customer's habits; `staples_by_category` maps a category to (skus, weights)."""
    core = ["coffee", "tea", "snacks", "household", "personal_care"]
    chosen = rng.sample(core, rng.randint(1, 3))
    if rng.random() < 0.25:
        chosen.append("baby")
    if rng.random() < 0.3:
        chosen.append("pet")
    staples = []
    for category in chosen:
        if category not in staples_by_category:
            continue
        skus, weights = staples_by_category[category]
        sku, alt = rng.choices(skus, weights, k=2)
        interval = replenish_days[category] * rng.uniform(0.8, 1.25)
        staples.append(
            Staple(
                category=category,
                sku=sku,
                alt_sku=alt,
                interval_days=round(interval, 3),
                phase_days=round(rng.uniform(0, interval), 3),
                qty=rng.choice([1, 1, 1, 2]),
            )
        )
    projects = []
    for _ in range(rng.choices([0, 1, 2, 3], [0.35, 0.4, 0.18, 0.07])[0] if projects_from[0] else 0):
        sku = rng.choices(*projects_from)[0]
        at = now - timedelta(days=rng.uniform(0, 36))
        projects.append(Project(sku=sku, follow_sku=follow_ups[sku], at=at))
    serial = rng.random() < 0.1
    return Habits(
        activity=round(rng.lognormvariate(0, 0.5), 4),
        returner=round(rng.gauss(0, 0.5) + (1.6 if serial else 0.0), 4),
        bracketing=round(0.35 if serial else rng.uniform(0.0, 0.12), 4),
        staples=tuple(staples),
        projects=tuple(projects),
    )
