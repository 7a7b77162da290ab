"""`python -m models train`: fit the three models on a simulated world and ship them as ONNX.

The only module that imports scikit-learn and skl2onnx (the `train` extra). It builds the
training world (fixed spec, `now` and seed), splits its history by time — the last week is held
out — fits, converts, smoke-tests the ONNX through `models.serving`, evaluates it there against
the baselines, and writes `<name>.onnx` and `<name>.card.json` per model. `--check` retrains into
a temporary folder and compares the metrics (not the bytes) with the committed cards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

from models import evaluate
from models.datasets import History, delivery_set, ranking_set, return_set
from models.features import DELIVERY, RECOMMEND, RETURNS, FeatureSchema, Matrix
from models.serving import (
    INPUT,
    MODELS,
    DeliveryTimeModel,
    ModelRefused,
    RecommendationRanker,
    ReturnRiskModel,
    ServedModel,
    session_from_bytes,
)
from models.world import World, WorldSpec
from models.world.truth import REPLENISH_DAYS

ARTIFACTS = Path(__file__).parent / "artifacts"
VERSION = "1.0"
SPEC = WorldSpec(
    seed=2031, regions=2, sites_per_region=6, products=400, shipments=40_000, customers_per_region=3000
)
NOW = datetime(2031, 3, 3, tzinfo=UTC)  # a Monday: the held-out week is Monday to Sunday
HELD_OUT = timedelta(days=7)
RANDOM_STATE = 2031
TOLERANCE = {"atol": 1e-3, "rtol": 1e-4}
TEST_VECTORS = 8
# --check: a metric drifts when it moves by more than both of these.
CHECK_ATOL, CHECK_RTOL = 0.005, 0.01
TARGETS = {
    "routing mean delivery time vs nearest site with stock": ("routing", "mean_improvement", 0.10),
    "recommendation hit-rate@5 vs popular in category": ("metrics", "hit_rate_improvement", 0.20),
}


def _onnx(estimator: Any, schema: FeatureSchema, classifier: bool) -> onnx.ModelProto:
    options = {id(estimator): {"zipmap": False}} if classifier else None
    proto: onnx.ModelProto = convert_sklearn(
        estimator,
        initial_types=[(INPUT, FloatTensorType([None, len(schema.names)]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # skl2onnx names the graph with a random uuid and lists opsets in set order: pin both, so
    # the same training gives the same bytes.
    proto.graph.name = schema.model
    opsets = sorted((o.domain, o.version) for o in proto.opset_import)
    del proto.opset_import[:]
    proto.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    return proto


def merge_quantiles(parts: Mapping[str, onnx.ModelProto]) -> onnx.ModelProto:
    """One graph with outputs p10, p50 and p90 (shape [N]) from three single-output regressors.

    Quantile models fitted apart can cross; the graph fixes that monotonically: p50 ≥ 0,
    p10 = max(min(p10, p50), 0) and p90 = max(p90, p50), so p10 ≤ p50 ≤ p90 always holds.
    """
    nodes, initializers = [], []
    first = next(iter(parts.values()))
    for q, proto in parts.items():
        g = proto.graph
        rename = {i.name: f"{q}_{i.name}" for i in g.initializer}
        rename.update({out: f"{q}_{out}" for n in g.node for out in n.output})
        for init in g.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = rename[init.name]
            initializers.append(copy)
        for n in g.node:
            copy_node = onnx.NodeProto()
            copy_node.CopyFrom(n)
            copy_node.name = f"{q}_{n.name}"
            del copy_node.input[:]
            copy_node.input.extend(rename.get(i, i) for i in n.input)
            del copy_node.output[:]
            copy_node.output.extend(rename[o] for o in n.output)
            nodes.append(copy_node)
        nodes.append(helper.make_node("Reshape", [rename[g.output[0].name], "flat"], [f"{q}_flat"]))
    initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"))
    initializers.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    nodes += [
        helper.make_node("Max", ["p50_flat", "zero"], ["p50"]),
        helper.make_node("Min", ["p10_flat", "p50"], ["p10_capped"]),
        helper.make_node("Max", ["p10_capped", "zero"], ["p10"]),
        helper.make_node("Max", ["p90_flat", "p50"], ["p90"]),
    ]
    graph = helper.make_graph(
        nodes,
        "delivery_time",
        [first.graph.input[0]],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in ("p10", "p50", "p90")],
        initializers,
    )
    merged = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="waypost")
    merged.ir_version = first.ir_version
    onnx.checker.check_model(merged)
    return merged


def _test_vectors(blob: bytes, x: Matrix, outputs: list[str]) -> list[dict[str, Any]]:
    session = session_from_bytes(blob)
    picks = np.linspace(0, len(x) - 1, TEST_VECTORS).astype(int)
    vectors = []
    for i in picks:
        row = x[i : i + 1]
        got = dict(zip(outputs, session.run(outputs, {INPUT: row}), strict=True))
        vectors.append(
            {
                "inputs": [float(v) for v in row[0]],
                "expected": {k: np.asarray(v, dtype=np.float64).round(6).tolist() for k, v in got.items()},
            }
        )
    return vectors


def _card(
    schema: FeatureSchema, blob: bytes, outputs: list[str], vectors: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    digest = hashlib.sha256(blob).hexdigest()
    return {
        "name": schema.model,
        "version": f"{VERSION}+{digest[:10]}",
        "sha256": digest,
        "size_bytes": len(blob),
        "feature_schema": schema.card(),
        "input": {"name": INPUT, "dtype": "float32", "shape": [None, len(schema.names)]},
        "outputs": outputs,
        **extra,
        "test_vectors": vectors,
        "tolerance": TOLERANCE,
    }


def _training_data(cutoff: datetime, rows: dict[str, int]) -> dict[str, Any]:
    start = NOW - timedelta(days=30, hours=2)
    return {
        "simulator": "models.world",
        "spec": dataclasses.asdict(SPEC),
        "now": NOW.isoformat(),
        "train": f"orders placed {start:%Y-%m-%d} to {cutoff:%Y-%m-%d %H:%M} UTC",
        "test": f"held-out week: orders placed {cutoff:%Y-%m-%d} to {NOW:%Y-%m-%d} UTC",
        "rows": rows,
        "random_state": RANDOM_STATE,
    }


def _targets(card: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, (section, metric, target) in TARGETS.items():
        if metric in card.get(section, {}):
            achieved = card[section][metric]
            out.append({"target": label, "at_least": target, "achieved": achieved, "met": achieved >= target})
    return out


def _ship(
    out: Path,
    kind: type[ServedModel],
    blob: bytes,
    card: dict[str, Any],
    measure: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """Load the blob through serving (verifies the sha and the vectors), measure it, write both."""
    model = kind.from_bytes(blob, card)
    card.update(measure(model))
    card["targets"] = _targets(card)
    card["notes"] = [
        *card.get("notes", []),
        *(f"target missed: {t['target']} — wanted ≥ {t['at_least']:.0%}, got {t['achieved']:.1%}"
          for t in card["targets"] if not t["met"]),
    ]  # fmt: skip
    order = ["name", "version", "sha256", "size_bytes", "feature_schema", "input", "outputs", "estimator"]
    ordered = {k: card[k] for k in order if k in card} | card
    (out / f"{card['name']}.onnx").write_bytes(blob)
    (out / f"{card['name']}.card.json").write_text(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n")
    return ordered


def train_delivery(out: Path, world: World, history: History, cutoff: datetime) -> dict[str, Any]:
    train = delivery_set(world, history.between(None, cutoff))
    test = delivery_set(world, history.between(cutoff, None))
    params = {"n_estimators": 120, "max_depth": 4, "learning_rate": 0.1, "subsample": 0.8,
              "min_samples_leaf": 20}  # fmt: skip
    parts = {}
    for q, alpha in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
        gbr = GradientBoostingRegressor(loss="quantile", alpha=alpha, random_state=RANDOM_STATE, **params)
        gbr.fit(train.X, train.y)
        parts[q] = _onnx(gbr, DELIVERY, classifier=False)
    blob = merge_quantiles(parts).SerializeToString()
    outputs = ["p10", "p50", "p90"]
    card = _card(
        DELIVERY,
        blob,
        outputs,
        _test_vectors(blob, test.X, outputs),
        estimator=f"3 × GradientBoostingRegressor(loss='quantile', alpha=0.1/0.5/0.9, {params}) "
        "merged into one graph; outputs fixed up so that p10 ≤ p50 ≤ p90 (see notes)",
        training_data=_training_data(cutoff, {"train": len(train.y), "test": len(test.y)}),
        notes=[
            "One .onnx holds the three quantile models. The graph ends with a monotone fix-up: "
            "p50 = max(p50, 0), p10 = max(min(p10, p50), 0), p90 = max(p90, p50).",
            "Trained on the site that actually shipped each order; sites were assigned to orders "
            "regardless of distance, so every kind of site is seen at every distance.",
            "Routing is simulated on the held-out week: each order goes to the region site (that "
            "can fill it alone from the simulated stock) with the lowest predicted p50, versus "
            "the nearest such site; both are scored with the simulator's delivery time for the "
            "chosen site. Site backlogs are exogenous: routing does not feed back into them.",
        ],
    )
    baseline = evaluate.DistanceBand.fit(train.distance_km, train.y)
    orders = history.between(cutoff, None)

    def measure(model: DeliveryTimeModel) -> dict[str, Any]:
        return {
            "metrics": evaluate.delivery_metrics(model, test, baseline),
            "routing": evaluate.routing_metrics(world, orders, model),
        }

    return _ship(out, DeliveryTimeModel, blob, card, measure)


def train_returns(out: Path, history: History, cutoff: datetime) -> dict[str, Any]:
    train = return_set(history, None, cutoff)
    test = return_set(history, cutoff, None)
    params = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8,
              "min_samples_leaf": 50}  # fmt: skip
    clf = GradientBoostingClassifier(random_state=RANDOM_STATE, **params).fit(train.X, train.y)
    blob = _onnx(clf, RETURNS, classifier=True).SerializeToString()
    outputs = ["probabilities"]
    rates: dict[str, list[float]] = {}
    for category, label in zip(train.categories, train.y, strict=True):
        rates.setdefault(category, []).append(label)
    base_rates = {c: float(np.mean(v)) for c, v in sorted(rates.items())}
    card = _card(
        RETURNS,
        blob,
        outputs,
        _test_vectors(blob, test.X, outputs),
        estimator=f"GradientBoostingClassifier({params}); output probabilities[:, 1] = P(returned)",
        training_data=_training_data(cutoff, {"train": len(train.y), "test": len(test.y)}),
        category_base_rates={c: round(r, 4) for c, r in base_rates.items()},
        notes=[
            "One row per order line. The customer's history counts earlier orders only, and a "
            "line's return only once 10 days have passed since its order.",
        ],
    )

    def measure(model: ReturnRiskModel) -> dict[str, Any]:
        return {"metrics": evaluate.return_metrics(model, test, base_rates)}

    return _ship(out, ReturnRiskModel, blob, card, measure)


def train_recommender(out: Path, history: History, cutoff: datetime) -> dict[str, Any]:
    train = ranking_set(history, cutoff - HELD_OUT, HELD_OUT)
    test = ranking_set(history, cutoff, HELD_OUT)
    params = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8,
              "min_samples_leaf": 50}  # fmt: skip
    clf = GradientBoostingClassifier(random_state=RANDOM_STATE, **params).fit(train.X, train.y)
    blob = _onnx(clf, RECOMMEND, classifier=True).SerializeToString()
    outputs = ["probabilities"]
    intervals = dict(test.contexts[0].replenishment_days) if test.contexts else {}
    rows = {"train_candidates": len(train.y), "train_anchors": len(train.groups),
            "test_candidates": len(test.y), "test_anchors": len(test.groups)}  # fmt: skip
    descriptions = {
        "train": f"anchors: each customer's last order before {cutoff - HELD_OUT:%Y-%m-%d}; labels: "
        "what they bought in the week after; co-purchase table from the orders before",
        "test": f"anchors: each customer's last order before {cutoff:%Y-%m-%d}; labels: what they "
        "bought in the held-out week; co-purchase table from all orders before it",
    }
    card = _card(
        RECOMMEND,
        blob,
        outputs,
        _test_vectors(blob, test.X, outputs),
        estimator=f"GradientBoostingClassifier({params}) scoring each candidate; rank by probabilities[:, 1]",
        training_data=_training_data(cutoff, rows) | descriptions,
        replenishment_days=intervals,
        simulator_replenishment_days=REPLENISH_DAYS,
        notes=[
            "Candidates: the co-purchase lists (top 20) of the order's products, the customer's "
            "own past products and the order's own, limited to products in stock in the region. "
            "The baseline ranks the region's in-stock products of the order's categories by "
            "how many orders held them before the cutoff.",
            "replenishment_days (category → median days between re-purchases of a product by the "
            "same customer, from the training history) feeds the due-ratio features and the "
            "page's replenishment hint. Re-buying within 3 days counts as a top-up; categories "
            "where under 10% of purchases are repeats have no rhythm and are left out. Compare "
            "simulator_replenishment_days, the simulator's mean intervals: 23 days of history "
            "cannot show a 21- or 28-day rhythm well, so the estimates run short.",
        ],
    )

    def measure(model: RecommendationRanker) -> dict[str, Any]:
        return {"metrics": evaluate.recommendation_metrics(model, test)}

    return _ship(out, RecommendationRanker, blob, card, measure)


def train(out: Path) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    world = World(SPEC, NOW)
    history = History.of(world)
    cutoff = NOW - HELD_OUT
    cards: dict[str, dict[str, Any]] = {}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("delivery_time", lambda: train_delivery(out, world, history, cutoff)),
        ("return_risk", lambda: train_returns(out, history, cutoff)),
        ("recommender", lambda: train_recommender(out, history, cutoff)),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        cards[name] = step()
        print(f"{name:<14} {cards[name]['size_bytes'] / 1024:7.1f} KiB  {time.perf_counter() - t0:5.1f} s")
    print(f"trained in {time.perf_counter() - started:.1f} s into {out}")
    return cards


def _numbers(card: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for section in ("metrics", "routing"):
        for key, value in card.get(section, {}).items():
            if isinstance(value, int | float):
                out[f"{section}.{key}"] = float(value)
    return out


def check(committed: Path) -> int:
    """Retrain into a temporary folder; 1 if any metric drifted from the committed cards or a
    committed artifact no longer loads (sha256, feature schema, test vectors)."""
    drift = 0
    with tempfile.TemporaryDirectory(prefix="waypost-train-") as tmp:
        fresh = train(Path(tmp))
        print(f"\n{'model':<14} {'metric':<44} {'committed':>10} {'retrained':>10}")
        for name, card in fresh.items():
            path = committed / f"{name}.card.json"
            if not path.exists():
                print(f"{name:<14} no committed card at {path}")
                drift += 1
                continue
            committed_card = json.loads(path.read_text())
            try:
                MODELS[name].from_bytes((committed / f"{name}.onnx").read_bytes(), committed_card)
            except (ModelRefused, OSError) as exc:
                print(f"{name:<14} the committed artifact does not load: {exc}")
                drift += 1
            old = _numbers(committed_card)
            new = _numbers(card)
            for key in sorted(old.keys() | new.keys()):
                a, b = old.get(key, math.nan), new.get(key, math.nan)
                ok = abs(a - b) <= max(CHECK_ATOL, CHECK_RTOL * abs(a))
                drift += not ok
                print(f"{name:<14} {key:<44} {a:>10.4f} {b:>10.4f}{'' if ok else '  DRIFT'}")
    print("metrics match the committed cards" if not drift else f"{drift} metric(s) drifted")
    return 1 if drift else 0
