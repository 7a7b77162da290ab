"""Serving: every committed artifact loads and reproduces its card; bad blobs are refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from models import bench
from models.features import DELIVERY, CustomerHistory, LineFacts, RecommendationContext
from models.serving import (
    MODELS,
    DeliveryTimeModel,
    ModelRefused,
    OnnxModel,
    RecommendationRanker,
    ReturnRiskModel,
    shipped_artifact,
)
from sync.entities import Site


def card_of(name: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(shipped_artifact(name)[1])
    return card


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_shipped_model_loads_and_reproduces_its_test_vectors(name: str) -> None:
    blob, card_json = shipped_artifact(name)
    model = MODELS[name].from_bytes(blob, card_json).model
    card = json.loads(card_json)
    assert 5 <= len(card["test_vectors"]) <= 10
    assert len(blob) < 1024 * 1024, "artifacts stay small"
    for vector in card["test_vectors"]:
        got = model.run(np.asarray([vector["inputs"]], dtype=np.float32))
        for output, expected in vector["expected"].items():
            np.testing.assert_allclose(got[output], expected, **card["tolerance"])
    assert model.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_tampered_blob_is_refused(name: str) -> None:
    blob, card_json = shipped_artifact(name)
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(ModelRefused, match=rf"model '{name}' refused: sha256") as caught:
        MODELS[name].from_bytes(bytes(tampered), card_json)
    assert caught.value.model == name


def test_a_blob_failing_its_test_vectors_is_refused() -> None:
    blob, _ = shipped_artifact("delivery_time")
    card = card_of("delivery_time")
    card["test_vectors"][3]["expected"]["p50"][0] += 1.0
    with pytest.raises(ModelRefused, match=r"'delivery_time' refused: test vector 3 output 'p50'"):
        DeliveryTimeModel.from_bytes(blob, card)


def test_a_blob_that_is_another_model_is_refused() -> None:
    """A right sha256 on the wrong graph: the outputs and the vectors give it away."""
    other, _ = shipped_artifact("return_risk")
    card = card_of("delivery_time")
    card["sha256"] = hashlib.sha256(other).hexdigest()
    with pytest.raises(ModelRefused, match="delivery_time"):
        DeliveryTimeModel.from_bytes(other, card)
    with pytest.raises(ModelRefused, match="is not a return_risk model"):
        ReturnRiskModel(OnnxModel(*shipped_artifact("recommender")))


def test_cards_from_another_feature_schema_or_malformed_are_refused() -> None:
    blob, _ = shipped_artifact("return_risk")
    card = card_of("return_risk")
    card["feature_schema"]["version"] = "returns.v0"
    with pytest.raises(ModelRefused, match=r"feature schema returns.v0"):
        ReturnRiskModel.from_bytes(blob, card)
    with pytest.raises(ModelRefused, match="malformed card"):
        ReturnRiskModel.from_bytes(blob, b'{"name": "return_risk"}')


def test_delivery_bands_are_ordered_for_any_input() -> None:
    model = DeliveryTimeModel.shipped()
    rng = np.random.default_rng(0)
    n = 5000
    x = np.column_stack(
        [
            rng.uniform(0, 120, n),  # distance_km
            rng.integers(0, 2, n),  # is_warehouse
            rng.choice([60, 90, 120, 400], n),
            rng.uniform(0, 3000, n),  # backlog_orders
            rng.uniform(0, 12, n),  # backlog_hours
            *np.eye(3)[rng.integers(0, 3, n)].T,  # carrier one-hot
            rng.integers(0, 7, n),
            rng.uniform(0, 24, n),
            rng.integers(0, 2, n),
        ]
    ).astype(np.float32)
    assert x.shape[1] == len(DELIVERY.names)
    p10, p50, p90 = model.predict_matrix(x)
    assert (p10 <= p50).all() and (p50 <= p90).all() and (p10 >= 0).all()


def test_the_delivery_model_ranks_candidate_sites() -> None:
    model = DeliveryTimeModel.shipped()
    near = Site(site_id="n", kind="mfc", region="r", name="N", lat=53.55, lon=9.99, capacity_per_hour=90)
    far = Site(site_id="w", kind="warehouse", region="r", name="W", lat=53.3, lon=10.3, capacity_per_hour=400)
    tuesday_noon = datetime(2031, 3, 4, 12, tzinfo=UTC)
    bands = model.predict([near, far], 53.56, 10.0, "dhl", tuesday_noon, [20, 100])
    assert len(bands) == 2 and all(b.p10 <= b.p50 <= b.p90 for b in bands)
    assert bands[0].p50 < bands[1].p50, "a quiet MFC in town beats a warehouse out of town"
    swamped = model.predict([near], 53.56, 10.0, "dhl", tuesday_noon, [900])[0]
    assert swamped.p50 > bands[0].p50, "a backlog of ten hours' work delays the parcel"
    assert model.predict([], 0, 0, "dhl", tuesday_noon, []) == []


def test_return_risk_is_higher_for_two_sizes_of_shoes_than_for_tea() -> None:
    model = ReturnRiskModel.shipped()
    lines = [
        LineFacts(sku="s", category="shoes", unit_price=120.0, qty=2, discount=0.3),
        LineFacts(sku="t", category="tea", unit_price=6.0, qty=1, discount=0.0),
    ]
    shoes, tea = model.predict(lines, CustomerHistory())
    assert 0 <= tea < shoes <= 1


def test_recommendations_never_list_out_of_stock_products() -> None:
    ranker = RecommendationRanker.shipped()
    assert ranker.replenishment_days, "the card carries the categories' rhythms"
    catalog = {f"p{i}": ("snacks" if i % 2 else "coffee", 5.0 + i) for i in range(12)}
    ctx = RecommendationContext(
        catalog=catalog,
        table={"p0": [(f"p{i}", 1.0 / i) for i in range(1, 12)]},
        region_stock={sku: ((0, 0) if int(sku[1:]) % 3 == 0 else (10, 1)) for sku in catalog},
        region_sites=3,
        replenishment_days=ranker.replenishment_days,
    )
    past = CustomerHistory()
    past.add_order(datetime(2031, 2, 1, tzinfo=UTC), [("p3", "snacks"), ("p4", "coffee")])
    past.add_order(datetime(2031, 2, 20, tzinfo=UTC), [("p0", "coffee")])
    ranked = ranker.rank(["p0"], past, datetime(2031, 2, 21, tzinfo=UTC), ctx, k=5)
    assert len(ranked) == 5
    assert all(int(sku[1:]) % 3 != 0 for sku, _ in ranked), "p0, p3, p6, p9 have no stock"
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


def test_serving_never_imports_scikit_learn() -> None:
    code = "import sys, models.serving, models.bench; sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_bench_reports_percentiles_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench.bench(calls=50)
    assert {name for name, *_ in rows} == set(MODELS)
    assert all(0 < p50 <= p99 for *_, p50, p99 in rows)
    assert "p99" in capsys.readouterr().out
