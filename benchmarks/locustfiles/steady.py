"""Shoppers on tracking pages at a fixed rate: HTML pages, pages unlocked by a signed link
(order, recommendations), JSON lookups and unknown numbers.

`MIX` names each kind of request; the runner passes the weights (`params["mix"]`). The kinds
take turns in a smooth weighted round-robin (nginx's), shared by all users, so every kind is
measured in its share even in a run of a few dozen requests (random choices left one out now
and then in the tests' short runs); which page each request asks for is still random.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

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
        next(TURNS)(self)


MIX: dict[str, Callable[[Shopper], None]] = {
    "track html": Shopper.track_html,
    "track unlocked": Shopper.track_unlocked,
    "track json": Shopper.track_json,
    "track 404": Shopper.track_404,
}
MIX_WEIGHTS: list[tuple[Callable[[Shopper], None], float]] = [
    (MIX[name], float(weight)) for name, weight in PARAMS["mix"].items() if float(weight) > 0
]


def turns(weights: Sequence[float]) -> list[int]:
    """One cycle of smooth weighted round-robin over `weights`: indexes, interleaved."""
    units = [round(w * 1000) for w in weights]
    common = math.gcd(*units)
    units = [u // common for u in units]
    total, current, out = sum(units), [0] * len(units), []
    for _ in range(total):
        current = [c + u for c, u in zip(current, units, strict=True)]
        best = max(range(len(units)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return out


TURNS = itertools.cycle([MIX_WEIGHTS[i][0] for i in turns([w for _, w in MIX_WEIGHTS])])
