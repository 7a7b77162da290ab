"""Judging the models on held-out simulated weeks, against the heuristics they replace.

The models are evaluated as shipped: through `models.serving`, from their ONNX bytes. Baselines:
a distance-only band for delivery time, "nearest site with stock" for routing, the category's
base rate for returns, "popular in the order's categories" for recommendations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.datasets import DeliverySet, RankingSet, ReturnSet, Vector
from models.geo import haversine_km
from models.serving import DeliveryTimeModel, RecommendationRanker, ReturnRiskModel
from models.world import Order, World

K = 5


def _r(x: float) -> float:
    return round(float(x), 4)


def roc_auc(scores: Vector, labels: Vector) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties shared)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    assert n_pos and n_neg, "AUC needs both classes"
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def hit_rate_and_ndcg(
    rankings: Sequence[Sequence[str]], truths: Sequence[frozenset[str]]
) -> tuple[float, float]:
    """Hit rate@K (any of the top K bought) and NDCG@K with binary relevance."""
    hits, gains = [], []
    discounts = 1 / np.log2(np.arange(2, K + 2))
    for ranked, truth in zip(rankings, truths, strict=True):
        rel = np.array([1.0 if sku in truth else 0.0 for sku in ranked[:K]])
        hits.append(float(rel.any()))
        ideal = discounts[: min(len(truth), K)].sum()
        gains.append(float((rel * discounts[: len(rel)]).sum() / ideal) if ideal else 0.0)
    return float(np.mean(hits)), float(np.mean(gains))


@dataclass(frozen=True)
class DistanceBand:
    """The baseline delivery band: quantiles of past delivery times by distance decile."""

    edges: Vector
    quantiles: np.ndarray  # (bins, 3): p10, p50, p90

    @classmethod
    def fit(cls, distance: Vector, hours: Vector, bins: int = 10) -> DistanceBand:
        edges = np.quantile(distance, np.linspace(0, 1, bins + 1)[1:-1])
        which = np.searchsorted(edges, distance)
        q = np.array([np.quantile(hours[which == b], [0.1, 0.5, 0.9]) for b in range(bins)])
        return cls(edges=edges, quantiles=q)

    def predict(self, distance: Vector) -> np.ndarray:
        return self.quantiles[np.searchsorted(self.edges, distance)]


def delivery_metrics(model: DeliveryTimeModel, test: DeliverySet, baseline: DistanceBand) -> dict[str, float]:
    p10, p50, p90 = model.predict_matrix(test.X)
    b = baseline.predict(test.distance_km)
    y = test.y
    return {
        "rows": len(y),
        "mae_hours": _r(np.abs(p50 - y).mean()),
        "band_coverage": _r(((y >= p10) & (y <= p90)).mean()),
        "band_width_hours": _r((p90 - p10).mean()),
        "baseline_mae_hours": _r(np.abs(b[:, 1] - y).mean()),
        "baseline_band_coverage": _r(((y >= b[:, 0]) & (y <= b[:, 2])).mean()),
        "baseline_band_width_hours": _r((b[:, 2] - b[:, 0]).mean()),
        "ordered_bands": _r(((p10 <= p50) & (p50 <= p90)).mean()),
    }


def site_stock(world: World) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {s.site_id: {} for s in world.sites}
    for st in world.stock():
        out[st.site_id][st.sku] = st.available
    return out


def routing_metrics(world: World, orders: Sequence[Order], model: DeliveryTimeModel) -> dict[str, float]:
    """Route each held-out order among its region's sites that can fill it alone: by the model's
    p50 or to the nearest; both judged by the simulator's delivery time for the chosen site."""
    stock = site_stock(world)
    by_region = {r.name: [s for s in world.sites if s.region == r.name] for r in world.regions}
    nearest, chosen, best, nearest_is_mfc = [], [], [], []
    for o in orders:
        sites = [
            s for s in by_region[o.region] if all(stock[s.site_id].get(ln.sku, 0) >= ln.qty for ln in o.lines)
        ]
        if not sites:
            continue
        dest = o.destination
        truth = [world.delivery_hours(o, s.site_id) for s in sites]
        distance = [haversine_km(s.lat, s.lon, dest.lat, dest.lon) for s in sites]
        backlogs = [world.site_backlog(s.site_id, o.placed_at) for s in sites]
        bands = model.predict(sites, dest.lat, dest.lon, o.carrier, o.placed_at, backlogs)
        pick = min(range(len(sites)), key=lambda i: (bands[i].p50, i))
        closest = int(np.argmin(distance))
        nearest.append(truth[closest])
        nearest_is_mfc.append(sites[closest].kind == "mfc")
        chosen.append(truth[pick])
        best.append(min(truth))
    n, m, o_ = np.asarray(nearest), np.asarray(chosen), np.asarray(best)
    mfc = np.asarray(nearest_is_mfc)
    return {
        "orders": len(m),
        "model_mean_hours": _r(m.mean()),
        "model_p90_hours": _r(np.quantile(m, 0.9)),
        "nearest_mean_hours": _r(n.mean()),
        "nearest_p90_hours": _r(np.quantile(n, 0.9)),
        "oracle_mean_hours": _r(o_.mean()),
        "mean_improvement": _r(1 - m.mean() / n.mean()),
        "p90_improvement": _r(1 - np.quantile(m, 0.9) / np.quantile(n, 0.9)),
        # Where the nearest site is an MFC the gain is backlog, carrier and timing, not site kind.
        "nearest_is_mfc_share": _r(mfc.mean()),
        "mean_improvement_when_nearest_is_mfc": _r(1 - m[mfc].mean() / n[mfc].mean()),
    }


def return_metrics(model: ReturnRiskModel, test: ReturnSet, base_rates: dict[str, float]) -> dict[str, float]:
    p = model.predict_matrix(test.X).astype(np.float64)
    base = np.asarray([base_rates[c] for c in test.categories])
    eps = 1e-6

    def log_loss(q: Vector) -> float:
        q = np.clip(q, eps, 1 - eps)
        return float(-(test.y * np.log(q) + (1 - test.y) * np.log(1 - q)).mean())

    return {
        "lines": len(test.y),
        "return_rate": _r(test.y.mean()),
        "roc_auc": _r(roc_auc(p, test.y)),
        "log_loss": _r(log_loss(p)),
        "baseline_roc_auc": _r(roc_auc(base, test.y)),
        "baseline_log_loss": _r(log_loss(base)),
    }


def popular_in_category(test: RankingSet, i: int) -> list[str]:
    ctx, anchor = test.contexts[i], test.anchors[i]
    categories = {ctx.catalog[ln.sku][0] for ln in anchor.lines}
    pool = [sku for sku, (cat, _) in ctx.catalog.items() if cat in categories and ctx.in_stock(sku)]
    pool.sort(key=lambda sku: (-test.popularity.get(sku, 0), sku))
    return pool[:K]


def recommendation_metrics(ranker: RecommendationRanker, test: RankingSet) -> dict[str, float]:
    scores = ranker.score_matrix(test.X)
    model, copurchase, popular = [], [], []
    for i, (start, end) in enumerate(test.groups):
        candidates = test.candidates[i]
        s = scores[start:end]
        model.append([candidates[j] for j in sorted(range(len(candidates)), key=lambda j: (-s[j], j))])
        c = test.X[start:end, 0]
        copurchase.append([candidates[j] for j in sorted(range(len(candidates)), key=lambda j: (-c[j], j))])
        popular.append(popular_in_category(test, i))
    hit, ndcg = hit_rate_and_ndcg(model, test.truth)
    base_hit, base_ndcg = hit_rate_and_ndcg(popular, test.truth)
    co_hit, co_ndcg = hit_rate_and_ndcg(copurchase, test.truth)
    return {
        "anchors": len(test.groups),
        "hit_rate_at_5": _r(hit),
        "ndcg_at_5": _r(ndcg),
        "baseline_hit_rate_at_5": _r(base_hit),
        "baseline_ndcg_at_5": _r(base_ndcg),
        "copurchase_only_hit_rate_at_5": _r(co_hit),
        "copurchase_only_ndcg_at_5": _r(co_ndcg),
        "hit_rate_improvement": _r(hit / base_hit - 1),
    }
