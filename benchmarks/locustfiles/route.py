"""The store's checkout asking an edge which site ships an order, at a fixed rate.

Every request is a new order (so a new decision and a new hold at the origin), for one or two
in-stock skus, to a destination near the region's city.
"""

from __future__ import annotations

import json
import random
import uuid

from locust import task

from benchmarks.locustfiles.common import PARAMS, PacedUser

SKUS: list[str] = PARAMS["skus"]
LAT, LON = PARAMS["center"]
HEADERS = {"Authorization": f"Bearer {PARAMS['store_token']}", "Content-Type": "application/json"}
MUST_CONTAIN = PARAMS.get("must_contain", '"decision_id"')  # the floor run's bare app answers otherwise


class Checkout(PacedUser):
    @task
    def route(self) -> None:
        lines = [
            {"sku": sku, "qty": random.randint(1, 2)} for sku in random.sample(SKUS, random.randint(1, 2))
        ]
        body = {
            "order_id": f"bench-{uuid.uuid4().hex}",
            "destination": {"lat": LAT + random.uniform(-0.2, 0.2), "lon": LON + random.uniform(-0.2, 0.2)},
            "lines": lines,
        }
        self.timed_post("/v1/route", "route", json.dumps(body).encode(), HEADERS, must_contain=MUST_CONTAIN)
