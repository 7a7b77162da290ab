"""Training and evaluation sets from a simulated world, through `models.features`.

Everything a model sees is built by the same feature functions serving calls; this module only
decides which rows exist and what their labels are. Splits are by time: a model is trained on
orders placed before a cutoff and judged on the weeks after it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from models.copurchase import Basket, baskets_from_orders, copurchase_table, replenishment_days
from models.features import (
    DELIVERY,
    RECOMMEND,
    RETURNS,
    CustomerHistory,
    LineFacts,
    Matrix,
    RecommendationContext,
    delivery_row,
    recommendation_candidates,
    recommendation_features,
    return_features,
)
from models.world import Order, World

Vector = npt.NDArray[np.float64]
RETURN_WINDOW = timedelta(days=10)  # a line's return is known this long after its order


@dataclass
class History:
    """A world's orders oldest first, with their ground-truth outcomes."""

    world: World
    orders: list[Order]
    returns: dict[str, tuple[bool, ...]]

    @classmethod
    def of(cls, world: World) -> History:
        orders = sorted(world.orders(), key=lambda o: (o.placed_at, o.order_id))
        return cls(world=world, orders=orders, returns={o.order_id: world.returns(o) for o in orders})

    def between(self, start: datetime | None, end: datetime | None) -> list[Order]:
        return [
            o
            for o in self.orders
            if (start is None or o.placed_at >= start) and (end is None or o.placed_at < end)
        ]


def line_facts(world: World, order: Order) -> list[LineFacts]:
    return [
        LineFacts(
            sku=line.sku,
            category=world.category_of[line.sku],
            unit_price=line.unit_price,
            qty=line.qty,
            discount=line.discount,
        )
        for line in order.lines
    ]


# Delivery time.


@dataclass
class DeliverySet:
    X: Matrix
    y: Vector
    distance_km: Vector


def delivery_set(world: World, orders: Sequence[Order]) -> DeliverySet:
    """One row per order, for the site that shipped it (sites were assigned without regard
    to the customer, so the history shows every kind of site at every distance)."""
    rows, hours = [], []
    for o in orders:
        site = world.site(o.site_id)
        backlog = world.site_backlog(site.site_id, o.placed_at)
        dest = o.destination
        rows.append(delivery_row(site, dest.lat, dest.lon, o.carrier, o.placed_at, backlog))
        hours.append(world.delivery_hours(o))
    X = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(DELIVERY.names))
    return DeliverySet(X=X, y=np.asarray(hours), distance_km=X[:, 0].astype(np.float64))


# Return risk.


@dataclass
class ReturnSet:
    X: Matrix
    y: Vector
    categories: list[str]


def return_set(history: History, start: datetime | None, end: datetime | None) -> ReturnSet:
    """One row per line of the orders placed in [start, end), each with the customer's history
    as it stood then (earlier orders; returns only once their window has closed)."""
    world = history.world
    customers: defaultdict[str, CustomerHistory] = defaultdict(CustomerHistory)
    pending: defaultdict[str, deque[tuple[datetime, int, int]]] = defaultdict(deque)
    blocks: list[Matrix] = []
    labels: list[bool] = []
    categories: list[str] = []
    for o in history.orders:
        if end is not None and o.placed_at >= end:
            break
        cid = o.customer.customer_id
        past, waiting = customers[cid], pending[cid]
        while waiting and waiting[0][0] + RETURN_WINDOW <= o.placed_at:
            _, lines, returned = waiting.popleft()
            past.add_returns(lines, returned)
        facts = line_facts(world, o)
        outcome = history.returns[o.order_id]
        if start is None or o.placed_at >= start:
            blocks.append(return_features(facts, past))
            labels.extend(outcome)
            categories.extend(f.category for f in facts)
        past.add_order(o.placed_at, ((f.sku, f.category) for f in facts))
        waiting.append((o.placed_at, len(facts), sum(outcome)))
    X = np.concatenate(blocks) if blocks else np.zeros((0, len(RETURNS.names)), np.float32)
    return ReturnSet(X=X, y=np.asarray(labels, dtype=np.float64), categories=categories)


# Recommendations.


def region_stock(world: World) -> dict[str, dict[str, tuple[int, int]]]:
    """region → sku → (units on hand in the region, sites holding any)."""
    out: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for st in world.stock():
        region = world.region_of(st.site_id)
        units, sites = out[region].get(st.sku, (0, 0))
        out[region][st.sku] = (units + st.available, sites + (st.available > 0))
    return dict(out)


@dataclass
class RankingSet:
    """Per anchor (a customer's last order before the cutoff): candidates, their features, and
    which of them the customer bought in the horizon after the cutoff."""

    X: Matrix
    y: Vector
    groups: list[tuple[int, int]]  # (start row, end row) per anchor
    truth: list[frozenset[str]]
    candidates: list[list[str]]
    anchors: list[Order]
    contexts: list[RecommendationContext]
    popularity: dict[str, int] = field(default_factory=dict)


def contexts_at(
    world: World, baskets: Iterable[Basket]
) -> tuple[dict[str, RecommendationContext], dict[str, int]]:
    """Each region's ranking context from the baskets before a cutoff, and sku popularity."""
    baskets = list(baskets)
    table = copurchase_table(baskets)
    intervals = replenishment_days(baskets, world.category_of)
    catalog = {p.sku: (p.category, p.price) for p in world.products}
    stock = region_stock(world)
    per_region = {r.name: sum(s.region == r.name for s in world.sites) for r in world.regions}
    contexts = {
        region: RecommendationContext(
            catalog=catalog,
            table=table,
            region_stock=stock.get(region, {}),
            region_sites=per_region[region],
            replenishment_days=intervals,
        )
        for region in per_region
    }
    popularity: dict[str, int] = defaultdict(int)
    for b in baskets:
        for sku in set(b.skus):
            popularity[sku] += 1
    return contexts, dict(popularity)


def ranking_set(history: History, cutoff: datetime, horizon: timedelta) -> RankingSet:
    world = history.world
    before = history.between(None, cutoff)
    contexts, popularity = contexts_at(world, baskets_from_orders(before))
    customers: defaultdict[str, CustomerHistory] = defaultdict(CustomerHistory)
    last: dict[str, Order] = {}
    for o in before:
        cid = o.customer.customer_id
        customers[cid].add_order(o.placed_at, ((ln.sku, world.category_of[ln.sku]) for ln in o.lines))
        last[cid] = o
    bought: defaultdict[str, set[str]] = defaultdict(set)
    for o in history.between(cutoff, cutoff + horizon):
        bought[o.customer.customer_id].update(ln.sku for ln in o.lines)

    blocks: list[Matrix] = []
    labels: list[float] = []
    out = RankingSet(
        X=np.zeros((0, len(RECOMMEND.names)), np.float32),
        y=np.zeros(0),
        groups=[],
        truth=[],
        candidates=[],
        anchors=[],
        contexts=[],
        popularity=popularity,
    )
    row = 0
    for cid in sorted(last):
        truth = bought.get(cid)
        if not truth:
            continue
        anchor = last[cid]
        ctx = contexts[anchor.region]
        skus = [ln.sku for ln in anchor.lines]
        candidates = recommendation_candidates(skus, customers[cid], ctx)
        if not candidates:
            continue
        blocks.append(recommendation_features(skus, candidates, customers[cid], cutoff, ctx))
        labels.extend(1.0 if c in truth else 0.0 for c in candidates)
        out.groups.append((row, row + len(candidates)))
        row += len(candidates)
        out.truth.append(frozenset(truth))
        out.candidates.append(candidates)
        out.anchors.append(anchor)
        out.contexts.append(ctx)
    if blocks:
        out.X = np.concatenate(blocks)
        out.y = np.asarray(labels)
    return out
