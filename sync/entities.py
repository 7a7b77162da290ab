"""The synced entities: what crosses the wire from origin to edge.

Field order is part of the protocol: a body's MessagePack bytes are hashed, so a struct's
fields are encoded in the order they are declared here. New fields go at the end, with a
default, so older bodies still decode.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

STATUSES = (
    "pending",
    "info_received",
    "in_transit",
    "out_for_delivery",
    "attempt_fail",
    "available_for_pickup",
    "delivered",
    "exception",
    "returned",
    "expired",
)
Status = Literal[
    "pending",
    "info_received",
    "in_transit",
    "out_for_delivery",
    "attempt_fail",
    "available_for_pickup",
    "delivered",
    "exception",
    "returned",
    "expired",
]
# Statuses after which a parcel's journey is over.
FINAL_STATUSES = frozenset({"delivered", "returned", "expired"})


class Site(msgspec.Struct, frozen=True, kw_only=True):
    site_id: str
    kind: Literal["mfc", "warehouse"]
    region: str
    name: str
    lat: float
    lon: float
    capacity_per_hour: int


class Product(msgspec.Struct, frozen=True, kw_only=True):
    sku: str
    name: str
    category: str
    price: float
    image_url: str


class Stock(msgspec.Struct, frozen=True, kw_only=True):
    site_id: str
    sku: str
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return max(self.on_hand - self.reserved, 0)


class ShipmentEvent(msgspec.Struct, frozen=True, kw_only=True):
    occurred_at: datetime
    status: Status
    message: str
    location: str
    # When the origin received it: the tie-break of the status rule.
    received_at: datetime


class Shipment(msgspec.Struct, frozen=True, kw_only=True):
    tracking_number: str
    carrier: str
    order_id: str
    site_id: str
    status: Status
    eta: datetime | None
    events: list[ShipmentEvent]
    updated_at: datetime
    version: int


class Line(msgspec.Struct, frozen=True):
    sku: str
    qty: int


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """The edge-facing order: minimized, no personal data (ARCHITECTURE.md, privacy split)."""

    order_id: str
    customer_ref: str  # keyed hash; the key never leaves the origin
    city: str
    postcode_district: str
    postcode_hmac: str  # keyed hash of the normalized full postcode
    lat: float  # rounded to about 1 km
    lon: float
    lines: list[Line]
    placed_at: datetime


HoldState = Literal["held", "committed", "released", "expired"]


class Reservation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A hold on stock at one site. An order's hold has an `order_id`; an allotment has an
    `owner` instead (the edge it was granted to, `order_id` empty) and `lines` are what is left
    of it: the edge draws its orders' holds from it without asking first (see `origin.ledger`)."""

    reservation_id: str
    order_id: str
    site_id: str
    lines: list[Line]
    state: HoldState
    expires_at: datetime
    owner: str | None = None

    @property
    def holds_an_order(self) -> bool:
        """Held, and for an order (not an allotment): part of a site's pick backlog."""
        return self.state == "held" and self.owner is None


class Related(msgspec.Struct, frozen=True):
    sku: str
    score: float


class CoPurchase(msgspec.Struct, frozen=True, kw_only=True):
    """Products bought with, or soon after, `sku`, best first (computed at the origin)."""

    sku: str
    related: list[Related]


Rollout = Literal["active", "canary", "shadow", "retired"]


class ModelRelease(msgspec.Struct, frozen=True, kw_only=True):
    """A model version in the registry; edges fetch its blob by sha256 and verify it."""

    name: str
    version: str
    sha256: str
    schema_version: str
    rollout: Rollout
    fraction: float  # the share of orders a canary decides; 1.0 otherwise
    card: str  # the model card as JSON: features, metrics, test vectors
    released_at: datetime


class ChangeKinds:
    """The entity kinds of the feed and the struct each body decodes to."""

    SITE = "site"
    PRODUCT = "product"
    STOCK = "stock"
    SHIPMENT = "shipment"
    ORDER = "order"
    RESERVATION = "reservation"
    COPURCHASE = "copurchase"
    MODEL_RELEASE = "model_release"


KIND_TYPES: dict[str, type[msgspec.Struct]] = {
    ChangeKinds.SITE: Site,
    ChangeKinds.PRODUCT: Product,
    ChangeKinds.STOCK: Stock,
    ChangeKinds.SHIPMENT: Shipment,
    ChangeKinds.ORDER: Order,
    ChangeKinds.RESERVATION: Reservation,
    ChangeKinds.COPURCHASE: CoPurchase,
    ChangeKinds.MODEL_RELEASE: ModelRelease,
}

GLOBAL_BUCKET = "global"


def region_bucket(region: str) -> str:
    return f"region:{region}"


def stock_key(site_id: str, sku: str) -> str:
    return f"{site_id}/{sku}"


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    kind: msgspec.msgpack.Decoder(t) for kind, t in KIND_TYPES.items()
}


def encode_entity(entity: msgspec.Struct) -> bytes:
    """The exact MessagePack bytes an entity is stored, shipped and hashed as."""
    return _encoder.encode(entity)


def decode_entity(kind: str, body: bytes) -> Any:
    """Decode a body of a known kind into its struct."""
    return _decoders[kind].decode(body)
