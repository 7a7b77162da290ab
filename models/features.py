"""Model inputs, built the same way for training and for serving.

Every model takes one float32 matrix whose columns are its `FeatureSchema.names`, in that order;
the schema's version is written into the model card, and serving refuses a card whose schema
version differs from the one here. Change a feature's meaning or order and you bump the version.

Inputs are what an origin or edge holds: a `Site`, a destination, the carrier, the order's time,
a site's backlog (orders waiting to be picked: held reservations plus shipments not yet picked
up, or an operator's figure), the catalog, regional stock, the co-purchase table and a
customer's own past orders (`CustomerHistory`). Nothing here needs scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from models.geo import haversine_km
from sync.entities import Site

Matrix = npt.NDArray[np.float32]

CARRIERS = ("ups", "dhl", "dpd")
CATEGORIES = (
    "coffee",
    "tea",
    "snacks",
    "household",
    "personal_care",
    "baby",
    "pet",
    "apparel",
    "shoes",
    "electronics",
)
SIZE_SENSITIVE = frozenset({"apparel", "shoes"})
NEVER_DAYS = 365.0  # "days since" for something never bought
NO_RANK = 21  # the co-purchase rank of a product on no anchor's list (lists hold 20)
RETURNS_PRIOR = (0.07, 4.0)  # a new customer's return rate, worth this many lines of evidence


@dataclass(frozen=True)
class FeatureSchema:
    model: str
    version: str
    names: tuple[str, ...]

    def card(self) -> dict[str, object]:
        return {"version": self.version, "features": list(self.names)}


DELIVERY = FeatureSchema(
    "delivery_time",
    "delivery.v1",
    (
        "distance_km",
        "is_warehouse",
        "capacity_per_hour",
        "backlog_orders",
        "backlog_hours",
        "carrier_ups",
        "carrier_dhl",
        "carrier_dpd",
        "weekday",
        "hour",
        "is_weekend",
    ),
)
RETURNS = FeatureSchema(
    "return_risk",
    "returns.v1",
    (
        *(f"category_{c}" for c in CATEGORIES),
        "size_sensitive",
        "log_price",
        "discount",
        "qty",
        "several_of_size_sensitive",
        "order_lines",
        "log_order_value",
        "prior_orders",
        "prior_category_lines",
        "prior_return_rate",
        "prior_known_lines",
    ),
)
RECOMMEND = FeatureSchema(
    "recommender",
    "recommend.v1",
    (
        "copurchase_max",
        "copurchase_sum",
        "copurchase_best_rank",
        "copurchase_anchors",
        "in_anchor_order",
        "same_category_as_anchor",
        "region_units_log",
        "region_site_share",
        "sku_bought_count",
        "sku_days_since",
        "sku_due_ratio",
        "category_bought_count",
        "category_days_since",
        "category_due_ratio",
        "replenishable",
        "log_price",
    ),
)
SCHEMAS = {s.model: s for s in (DELIVERY, RETURNS, RECOMMEND)}


def _matrix(rows: Sequence[Sequence[float]], schema: FeatureSchema) -> Matrix:
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(schema.names))


def _utc(at: datetime) -> datetime:
    assert at.tzinfo is not None, "times must be timezone-aware"
    return at.astimezone(UTC)


# Delivery time: one row per (candidate site, order).


def delivery_row(
    site: Site, dest_lat: float, dest_lon: float, carrier: str, placed_at: datetime, backlog_orders: int
) -> list[float]:
    at = _utc(placed_at)
    capacity = max(site.capacity_per_hour, 1)
    return [
        haversine_km(site.lat, site.lon, dest_lat, dest_lon),
        1.0 if site.kind == "warehouse" else 0.0,
        float(capacity),
        float(backlog_orders),
        backlog_orders / capacity,
        *(1.0 if carrier == c else 0.0 for c in CARRIERS),
        float(at.weekday()),
        at.hour + at.minute / 60,
        1.0 if at.weekday() >= 5 else 0.0,
    ]


def delivery_features(
    sites: Sequence[Site],
    dest_lat: float,
    dest_lon: float,
    carrier: str,
    placed_at: datetime,
    backlogs: Sequence[int],
) -> Matrix:
    """One row per candidate site for one order; `backlogs[i]` is `sites[i]`'s backlog."""
    assert len(sites) == len(backlogs), "one backlog per site"
    rows = [
        delivery_row(s, dest_lat, dest_lon, carrier, placed_at, b)
        for s, b in zip(sites, backlogs, strict=True)
    ]
    return _matrix(rows, DELIVERY)


# A customer's past, as the origin or edge sees it.


@dataclass
class CustomerHistory:
    """What is known about one customer's past orders; feed it orders oldest first."""

    orders: int = 0
    lines: int = 0
    known_lines: int = 0  # lines whose return window has closed
    returned_lines: int = 0
    sku_count: dict[str, int] = field(default_factory=dict)
    sku_last: dict[str, datetime] = field(default_factory=dict)
    category_count: dict[str, int] = field(default_factory=dict)
    category_last: dict[str, datetime] = field(default_factory=dict)

    def add_order(self, placed_at: datetime, lines: Iterable[tuple[str, str]]) -> None:
        """Record an order: `lines` are (sku, category)."""
        at = _utc(placed_at)
        self.orders += 1
        for sku, category in lines:
            self.lines += 1
            self.sku_count[sku] = self.sku_count.get(sku, 0) + 1
            self.category_count[category] = self.category_count.get(category, 0) + 1
            self.sku_last[sku] = max(at, self.sku_last.get(sku, at))
            self.category_last[category] = max(at, self.category_last.get(category, at))

    def add_returns(self, lines: int, returned: int) -> None:
        """Record the outcome of `lines` lines whose return window closed, `returned` of them returned."""
        assert 0 <= returned <= lines, "returned lines are a subset of the lines"
        self.known_lines += lines
        self.returned_lines += returned

    @property
    def return_rate(self) -> float:
        rate, weight = RETURNS_PRIOR
        return (self.returned_lines + rate * weight) / (self.known_lines + weight)


# Return risk: one row per order line.


@dataclass(frozen=True)
class LineFacts:
    sku: str
    category: str
    unit_price: float
    qty: int
    discount: float


def return_features(lines: Sequence[LineFacts], history: CustomerHistory) -> Matrix:
    """One row per line of one order; `history` holds the customer's orders before it."""
    value = sum(line.unit_price * (1 - line.discount) * line.qty for line in lines)
    rows = []
    for line in lines:
        sized = line.category in SIZE_SENSITIVE
        rows.append(
            [
                *(1.0 if line.category == c else 0.0 for c in CATEGORIES),
                1.0 if sized else 0.0,
                math.log(max(line.unit_price, 0.01)),
                line.discount,
                float(line.qty),
                1.0 if sized and line.qty >= 2 else 0.0,
                float(len(lines)),
                math.log1p(value),
                math.log1p(history.orders),
                math.log1p(history.category_count.get(line.category, 0)),
                history.return_rate,
                math.log1p(history.known_lines),
            ]
        )
    return _matrix(rows, RETURNS)


# Recommendations: one row per candidate product for one shopper after one order.


@dataclass(frozen=True)
class RecommendationContext:
    """What the ranker reads besides the shopper: catalog, co-purchase table, regional stock."""

    catalog: Mapping[str, tuple[str, float]]  # sku → (category, price)
    table: Mapping[str, Sequence[tuple[str, float]]]  # the co-purchase table
    region_stock: Mapping[str, tuple[int, int]]  # sku → (available units, sites with any)
    region_sites: int
    replenishment_days: Mapping[str, float]  # category → days (replenished categories only)

    def in_stock(self, sku: str) -> bool:
        return self.region_stock.get(sku, (0, 0))[0] > 0


def recommendation_candidates(
    anchor_skus: Sequence[str], history: CustomerHistory, ctx: RecommendationContext
) -> list[str]:
    """The products worth scoring, in stock in the region: the co-purchase lists of the order's
    skus, the customer's own past products and the order's own (bought again when due)."""
    seen: dict[str, None] = {}
    for sku in anchor_skus:
        for related, _ in ctx.table.get(sku, ()):
            seen.setdefault(related)
    for sku in (*sorted(history.sku_count), *anchor_skus):
        seen.setdefault(sku)
    return [sku for sku in seen if sku in ctx.catalog and ctx.in_stock(sku)]


def _due(days_since: float, category: str, ctx: RecommendationContext) -> float:
    interval = ctx.replenishment_days.get(category)
    if interval is None or days_since >= NEVER_DAYS:
        return -1.0
    return days_since / interval


def recommendation_features(
    anchor_skus: Sequence[str],
    candidates: Sequence[str],
    history: CustomerHistory,
    at: datetime,
    ctx: RecommendationContext,
) -> Matrix:
    """One row per candidate; `history` includes the anchor order, `at` is when we recommend."""
    now = _utc(at)
    anchors = set(anchor_skus)
    anchor_categories = {ctx.catalog[s][0] for s in anchor_skus if s in ctx.catalog}
    links: dict[str, list[tuple[int, float]]] = {}
    for sku in anchor_skus:
        for rank, (related, score) in enumerate(ctx.table.get(sku, ()), start=1):
            links.setdefault(related, []).append((rank, score))
    rows = []
    for sku in candidates:
        category, price = ctx.catalog[sku]
        found = links.get(sku, [])
        units, sites = ctx.region_stock.get(sku, (0, 0))
        sku_last, cat_last = history.sku_last.get(sku), history.category_last.get(category)
        sku_days = (now - sku_last).total_seconds() / 86400 if sku_last else NEVER_DAYS
        cat_days = (now - cat_last).total_seconds() / 86400 if cat_last else NEVER_DAYS
        rows.append(
            [
                max((s for _, s in found), default=0.0),
                sum(s for _, s in found),
                float(min((r for r, _ in found), default=NO_RANK)),
                float(len(found)),
                1.0 if sku in anchors else 0.0,
                1.0 if category in anchor_categories else 0.0,
                math.log1p(units),
                sites / max(ctx.region_sites, 1),
                float(history.sku_count.get(sku, 0)),
                min(sku_days, NEVER_DAYS),
                _due(sku_days, category, ctx),
                float(history.category_count.get(category, 0)),
                min(cat_days, NEVER_DAYS),
                _due(cat_days, category, ctx),
                1.0 if category in ctx.replenishment_days else 0.0,
                math.log(max(price, 0.01)),
            ]
        )
    return _matrix(rows, RECOMMEND)
