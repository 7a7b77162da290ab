"""Shoppers on tracking pages at a fixed rate: HTML pages, pages unlocked by a signed link
(order, recommendations), JSON lookups and unknown numbers.

`MIX` names each kind of request; the runner passes the weights (`params["mix"]`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from locust import task

from benchmarks.locustfiles.common import PARAMS, PacedUser

NUMBERS: list[str] = PARAMS["tracking_numbers"]
UNKNOWN: list[str] = PARAMS["unknown_numbers"]
UNLOCKED: list[list[str]] = PARAMS["unlocked"]  # [tracking number, path with ?t=<signed token>]


class Shopper(PacedUser):
    def track_html(self) -> None:
        tn = random.choice(NUMBERS)
        self.timed_get(f"/track/{tn}", "track html", must_contain=tn)

    def track_unlocked(self) -> None:
        _tn, path = random.choice(UNLOCKED)
        self.timed_get(path, "track unlocked", must_contain='id="order"')

    def track_json(self) -> None:
        self.timed_get(f"/v1/track/{random.choice(NUMBERS)}", "track json", must_contain='"status"')

    def track_404(self) -> None:
        self.timed_get(f"/track/{random.choice(UNKNOWN)}", "track 404", expected=(404,))

    @task
    def browse(self) -> None:
        kinds, weights = zip(*MIX_WEIGHTS, strict=True)
        random.choices(kinds, weights)[0](self)


MIX: dict[str, Callable[[Shopper], None]] = {
    "track html": Shopper.track_html,
    "track unlocked": Shopper.track_unlocked,
    "track json": Shopper.track_json,
    "track 404": Shopper.track_404,
}
MIX_WEIGHTS: list[tuple[Callable[[Shopper], None], float]] = [
    (MIX[name], float(weight)) for name, weight in PARAMS["mix"].items() if float(weight) > 0
]
