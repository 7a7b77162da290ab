"""Training and serving build the same inputs: the datasets' rows equal what the serving
helpers compute for the same order, site, line or shopper."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from models.datasets import History, delivery_set, line_facts, ranking_set, return_set
from models.features import (
    DELIVERY,
    RECOMMEND,
    RETURNS,
    CustomerHistory,
    LineFacts,
    RecommendationContext,
    delivery_features,
    delivery_row,
    recommendation_candidates,
    recommendation_features,
    return_features,
)
from models.world import Order, World, WorldSpec
from sync.entities import Site

NOW = datetime(2031, 3, 3, tzinfo=UTC)
SPEC = WorldSpec(seed=5, regions=2, sites_per_region=3, products=60, shipments=2500, customers_per_region=80)


SITE = Site(site_id="s1", kind="mfc", region="north", name="S1", lat=0.0, lon=0.0, capacity_per_hour=90)


@pytest.fixture(scope="module")
def history() -> History:
    return History.of(World(SPEC, NOW))


def test_delivery_row_means_what_its_schema_says() -> None:
    # Saturday 14:30 in UTC+1 is 13:30 UTC.
    placed = datetime(2031, 3, 8, 14, 30, tzinfo=timezone(timedelta(hours=1)))
    row = dict(zip(DELIVERY.names, delivery_row(SITE, 0.0, 1.0, "dpd", placed, 45), strict=True))
    assert row["distance_km"] == pytest.approx(111.19, abs=0.01)
    assert row["backlog_hours"] == 0.5 and row["backlog_orders"] == 45
    assert (row["carrier_ups"], row["carrier_dhl"], row["carrier_dpd"]) == (0, 0, 1)
    assert (row["weekday"], row["hour"], row["is_weekend"]) == (5, 13.5, 1)
    assert row["is_warehouse"] == 0 and row["capacity_per_hour"] == 90


def test_delivery_rows_for_training_equal_the_serving_features(history: History) -> None:
    world = history.world
    orders = history.orders[:300]
    trained = delivery_set(world, orders).X
    for i, o in enumerate(orders):
        candidates = [s for s in world.sites if s.region == o.region]
        backlogs = [world.site_backlog(s.site_id, o.placed_at) for s in candidates]
        dest = o.destination
        served = delivery_features(candidates, dest.lat, dest.lon, o.carrier, o.placed_at, backlogs)
        assert served.dtype == np.float32 and served.shape == (len(candidates), len(DELIVERY.names))
        row = served[[s.site_id for s in candidates].index(o.site_id)]
        np.testing.assert_array_equal(row, trained[i])


def test_return_rows_for_training_equal_the_serving_features(history: History) -> None:
    """Rebuild each customer's history by hand (returns known 10 days on) and compare."""
    world = history.world
    trained = return_set(history, None, None)
    earlier: defaultdict[str, list[Order]] = defaultdict(list)
    row = 0
    for o in history.orders:
        past = CustomerHistory()
        for p in earlier[o.customer.customer_id]:
            past.add_order(p.placed_at, ((f.sku, f.category) for f in line_facts(world, p)))
            if p.placed_at + timedelta(days=10) <= o.placed_at:
                past.add_returns(len(p.lines), sum(history.returns[p.order_id]))
        served = return_features(line_facts(world, o), past)
        np.testing.assert_array_equal(served, trained.X[row : row + len(o.lines)])
        row += len(o.lines)
        earlier[o.customer.customer_id].append(o)
    assert row == len(trained.y)


def test_ranking_rows_for_training_equal_the_serving_features(history: History) -> None:
    world = history.world
    cutoff = NOW - timedelta(days=7)
    trained = ranking_set(history, cutoff, timedelta(days=7))
    assert trained.groups, "some customers come back within the week"
    for i in range(0, len(trained.groups), 7):
        anchor = trained.anchors[i]
        past = CustomerHistory()
        for o in history.between(None, cutoff):
            if o.customer.customer_id == anchor.customer.customer_id:
                past.add_order(o.placed_at, ((ln.sku, world.category_of[ln.sku]) for ln in o.lines))
        skus = [ln.sku for ln in anchor.lines]
        ctx = trained.contexts[i]
        candidates = recommendation_candidates(skus, past, ctx)
        assert candidates == trained.candidates[i]
        start, end = trained.groups[i]
        served = recommendation_features(skus, candidates, past, cutoff, ctx)
        np.testing.assert_array_equal(served, trained.X[start:end])


def test_return_features_read_size_history_and_prior_returns() -> None:
    past = CustomerHistory()
    past.add_order(datetime(2031, 1, 1, tzinfo=UTC), [("sku-1", "shoes"), ("sku-2", "tea")])
    past.add_returns(lines=2, returned=1)
    lines = [
        LineFacts(sku="sku-3", category="shoes", unit_price=80.0, qty=2, discount=0.3),
        LineFacts(sku="sku-4", category="coffee", unit_price=10.0, qty=1, discount=0.0),
    ]
    x = return_features(lines, past)
    assert x.shape == (2, len(RETURNS.names)) and x.dtype == np.float32
    shoes, coffee = (dict(zip(RETURNS.names, r.tolist(), strict=True)) for r in x)
    assert shoes["category_shoes"] == 1 and shoes["size_sensitive"] == 1
    assert shoes["several_of_size_sensitive"] == 1 and coffee["several_of_size_sensitive"] == 0
    assert shoes["prior_category_lines"] == pytest.approx(np.log1p(1))
    assert coffee["prior_category_lines"] == 0
    assert shoes["prior_return_rate"] == pytest.approx((1 + 0.07 * 4) / (2 + 4))
    assert shoes["order_lines"] == 2 and shoes["discount"] == pytest.approx(0.3)


def test_candidates_are_in_stock_and_features_follow_the_schema() -> None:
    ctx = RecommendationContext(
        catalog={"a": ("coffee", 9.0), "b": ("snacks", 3.0), "c": ("snacks", 4.0), "d": ("tea", 5.0)},
        table={"a": [("b", 0.9), ("c", 0.5)]},
        region_stock={"a": (5, 1), "b": (0, 0), "c": (7, 2), "d": (3, 1)},
        region_sites=2,
        replenishment_days={"coffee": 14.0, "tea": 20.0},
    )
    past = CustomerHistory()
    past.add_order(datetime(2031, 2, 1, tzinfo=UTC), [("d", "tea")])
    past.add_order(datetime(2031, 2, 20, tzinfo=UTC), [("a", "coffee")])
    candidates = recommendation_candidates(["a"], past, ctx)
    assert candidates == ["c", "a", "d"], "b is out of stock everywhere in the region"
    x = recommendation_features(["a"], candidates, past, datetime(2031, 2, 21, tzinfo=UTC), ctx)
    c, a, d = (dict(zip(RECOMMEND.names, r.tolist(), strict=True)) for r in x)
    assert (c["copurchase_max"], c["copurchase_best_rank"]) == (pytest.approx(0.5), 2)
    assert a["in_anchor_order"] == 1 and a["sku_days_since"] == pytest.approx(1.0)
    assert d["sku_due_ratio"] == pytest.approx(20 / 20) and d["copurchase_best_rank"] == 21
    assert c["sku_due_ratio"] == -1 and c["region_site_share"] == 1.0
