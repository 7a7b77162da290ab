"""Orders: the personal data stays here; edges get a minimized, keyed-hash view.

What leaves the origin (the `order` entity): a pseudonymous customer ref (HMAC with
`WAYPOST_PII_KEY`, which never leaves), the city, the postcode district, `postcode_hmac` (HMAC
of the normalized full postcode with `WAYPOST_POSTCODE_KEY`, which edges share so they can check
a postcode a shopper types without ever holding it), coordinates rounded to about 1 km, lines
and the time placed. Names, e-mails, phones, street addresses, full postcodes and exact
coordinates stay in the origin-only `customer_order` table, each field sealed under
`WAYPOST_PII_ENCRYPTION_KEYS` (`origin.pii`), so a copy of the database holds none of them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from origin import pii
from origin.errors import Conflict, InvalidInput, KeyUnavailable
from origin.ledger import check_lines
from origin.sanitize import Known
from origin.store import Tx
from sync.entities import ChangeKinds, Line, Order, encode_entity, region_bucket
from sync.inbound import normalize_times
from sync.links import normalize_postcode, postcode_hmac

log = logging.getLogger("waypost.origin")

OrderId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Text = Annotated[str, msgspec.Meta(max_length=200)]
MAX_REGION_KM = 400.0


class Address(msgspec.Struct, frozen=True, kw_only=True):
    street: Text = ""
    postcode: Text = ""
    city: Text = ""
    country: Text = ""


class Customer(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: Text = ""
    name: Text = ""
    email: Text = ""
    phone: Text = ""
    address: Address | None = None


class Destination(msgspec.Struct, frozen=True, kw_only=True):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    postcode: Annotated[str, msgspec.Meta(min_length=2, max_length=16)]
    city: Text
    country: Annotated[str, msgspec.Meta(min_length=2, max_length=2)]
    street: Text = ""


class NewOrder(msgspec.Struct, frozen=True, kw_only=True):
    order_id: OrderId
    customer: Customer
    destination: Destination
    lines: list[Line]
    placed_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        normalize_times(self, "placed_at")


class Private(msgspec.Struct, frozen=True, kw_only=True):
    """What only the origin keeps about an order."""

    customer: Customer
    destination: Destination


def private_fields(p: Private) -> pii.Fields:
    """The record as path → value, the unit `origin.pii` seals (and erasure removes) one by one."""
    c, d, a = p.customer, p.destination, p.customer.address or Address()
    return {
        "customer.customer_id": c.customer_id,
        "customer.name": c.name,
        "customer.email": c.email,
        "customer.phone": c.phone,
        "customer.address.street": a.street,
        "customer.address.postcode": a.postcode,
        "customer.address.city": a.city,
        "customer.address.country": a.country,
        "destination.lat": d.lat,
        "destination.lon": d.lon,
        "destination.street": d.street,
        "destination.postcode": d.postcode,
        "destination.city": d.city,
        "destination.country": d.country,
    }


def customer_from_fields(fields: pii.Fields) -> Customer:
    """The customer part of opened fields (erased fields read as empty)."""

    def text(path: str) -> str:
        return str(fields.get(path, ""))

    return Customer(
        customer_id=text("customer.customer_id"),
        name=text("customer.name"),
        email=text("customer.email"),
        phone=text("customer.phone"),
    )


_lines_encoder = msgspec.msgpack.Encoder()


def postcode_district(postcode: str) -> str:
    """The coarse part of a postcode: the UK outward code, else the first three characters."""
    p = postcode.strip().upper()
    if " " in p:
        return p.split()[0]
    compact = normalize_postcode(p)
    if compact[:1].isalpha() and len(compact) > 4:
        return compact[:-3]
    return compact[:3]


def customer_ref(key: bytes, customer: Customer) -> str:
    ident = customer.customer_id or customer.email.strip().lower() or customer.phone
    return "c_" + hmac.new(key, ident.encode(), hashlib.sha256).hexdigest()[:20]


def round_coord(x: float) -> float:
    """Round to 0.01° (≈1.1 km of latitude): enough to route, too coarse to find a door."""
    return round(x, 2)


def km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def region_for(tx: Tx, lat: float, lon: float) -> str:
    rows = tx.execute("SELECT name, lat, lon FROM region").fetchall()
    best = min(rows, key=lambda r: km(lat, lon, r[1], r[2]), default=None)
    if best is None or km(lat, lon, best[1], best[2]) > MAX_REGION_KM:
        raise InvalidInput(
            f"no region serves a destination at ({lat:.2f}, {lon:.2f})", field="destination", code="no_region"
        )
    return str(best[0])


@dataclass(frozen=True)
class PrivacyKeys:
    pii_key: bytes  # keys customer refs; never leaves the origin
    postcode_key: bytes  # keys postcode_hmac; edges share it
    keyring: pii.Keyring  # seals personal data at rest; never leaves the origin


def create_order(tx: Tx, order: NewOrder, keys: PrivacyKeys) -> Order:
    """Validate a store's order, derive its region, and record it."""
    check_lines(tx, order.lines)
    region = region_for(tx, order.destination.lat, order.destination.lon)
    return record_order(tx, order, region, keys)


@dataclass(frozen=True)
class PreparedOrder:
    """An order ready to store: its private row and the public entity, encoded."""

    order_id: str
    region: str
    pii: bytes
    lines: bytes
    placed_at: float
    public: Order


def prepare_order(order: NewOrder, region: str, keys: PrivacyKeys, now: float) -> PreparedOrder:
    """Split an order into what stays here and the minimized order edges get (no I/O)."""
    placed = (order.placed_at or datetime.fromtimestamp(now, UTC)).astimezone(UTC)
    public = Order(
        order_id=order.order_id,
        customer_ref=customer_ref(keys.pii_key, order.customer),
        city=order.destination.city,
        postcode_district=postcode_district(order.destination.postcode),
        postcode_hmac=postcode_hmac(keys.postcode_key, order.destination.postcode),
        lat=round_coord(order.destination.lat),
        lon=round_coord(order.destination.lon),
        lines=order.lines,
        placed_at=placed,
    )
    return PreparedOrder(
        order_id=order.order_id,
        region=region,
        pii=pii.seal(
            keys.keyring,
            order.order_id,
            private_fields(Private(customer=order.customer, destination=order.destination)),
        ),
        lines=_lines_encoder.encode(order.lines),
        placed_at=placed.timestamp(),
        public=public,
    )


def save_order(tx: Tx, p: PreparedOrder) -> Order:
    cur = tx.execute(
        "INSERT INTO customer_order (order_id, region, pii, lines, placed_at, customer_ref)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
        (p.order_id, p.region, p.pii, p.lines, p.placed_at, p.public.customer_ref),
    )
    if cur.rowcount == 0:
        raise Conflict(f"order_id {p.order_id!r} exists already", code="order_exists")
    tx.put(region_bucket(p.region), ChangeKinds.ORDER, p.order_id, encode_entity(p.public))
    return p.public


def record_order(tx: Tx, order: NewOrder, region: str, keys: PrivacyKeys) -> Order:
    """Keep the personal data here and publish the minimized order to the region's edges."""
    return save_order(tx, prepare_order(order, region, keys, tx.now))


def order_lines(tx: Tx, order_id: str) -> tuple[str, list[Line]] | None:
    """An order's region and lines, or None if the origin has no such order."""
    row = tx.one("SELECT region, lines FROM customer_order WHERE order_id = ?", (order_id,))
    if row is None:
        return None
    return str(row[0]), msgspec.msgpack.decode(bytes(row[1]), type=list[Line])


_ADDRESS_PATHS = frozenset(
    ("destination.street", "customer.address.street", "destination.postcode", "customer.address.postcode")
)


def order_address(tx: Tx, order_id: str, keyring: pii.Keyring | None) -> Known | None:
    """The order's own address for the sanitizer, or None: no such order, no address, erased, or
    no keyring that opens it (then the sanitizer's generic patterns alone mask the text)."""
    if keyring is None:
        return None
    row = tx.one("SELECT pii FROM customer_order WHERE order_id = ?", (order_id,))
    if row is None:
        return None
    try:
        fields = pii.open_pii(keyring, order_id, bytes(row[0]), only=_ADDRESS_PATHS)
    except KeyUnavailable as exc:
        log.warning("order %s: its address cannot mask carrier text: %s", order_id, exc.detail)
        return None
    streets = [str(fields.get(p, "")) for p in ("destination.street", "customer.address.street")]
    postcodes = [str(fields.get(p, "")) for p in ("destination.postcode", "customer.address.postcode")]
    return Known.of([s for s in streets if s], [p for p in postcodes if p])
