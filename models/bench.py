"""`python -m models bench`: in-process inference latency of each shipped model.

Single-row calls, as the edge makes them: the session run alone, then the typed helper with
its feature building. Times with `time.perf_counter_ns`; quote ratios and medians, not one
absolute figure (see STYLE.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import numpy as np

from models.features import CustomerHistory, LineFacts
from models.serving import ServedModel, load_shipped
from sync.entities import Site


def _percentiles(call: Callable[[], object], calls: int) -> tuple[float, float]:
    for _ in range(min(calls // 10, 500)):
        call()  # warm up
    samples = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        start = time.perf_counter_ns()
        call()
        samples[i] = time.perf_counter_ns() - start
    p50, p99 = np.percentile(samples, [50, 99]) / 1000
    return float(p50), float(p99)


def _row(model: ServedModel) -> np.ndarray:
    return np.asarray([model.model.card.test_vectors[0].inputs], dtype=np.float32)


def bench(calls: int = 10_000) -> list[tuple[str, str, float, float]]:
    models = load_shipped()
    site = Site(
        site_id="north-mfc-1", kind="mfc", region="north", name="Hamburg MFC 1",
        lat=53.55, lon=9.99, capacity_per_hour=90,
    )  # fmt: skip
    at = datetime(2031, 3, 4, 12, tzinfo=UTC)
    line = LineFacts(sku="sku-00008", category="apparel", unit_price=45.0, qty=2, discount=0.1)
    history = CustomerHistory()
    history.add_order(datetime(2031, 2, 20, tzinfo=UTC), [("sku-00001", "coffee")])
    cases: list[tuple[str, str, Callable[[], object]]] = []
    for model in (models.delivery, models.returns, models.recommender):
        cases.append((model.NAME, "session.run, 1 row", partial(model.model.run, _row(model))))
    cases.append(
        ("delivery_time", "predict(), 1 site",
         lambda: models.delivery.predict([site], 53.6, 10.0, "dhl", at, [40])),
    )  # fmt: skip
    cases.append(("return_risk", "predict(), 1 line", lambda: models.returns.predict([line], history)))
    results = []
    print(f"{'model':<14} {'call':<22} {'p50 µs':>9} {'p99 µs':>9}   ({calls} calls each)")
    for name, what, call in cases:
        p50, p99 = _percentiles(call, calls)
        results.append((name, what, p50, p99))
        print(f"{name:<14} {what:<22} {p50:>9.1f} {p99:>9.1f}")
    return results
