"""The delivery-window spike: the steady shopper mix at a base rate, 10× for a while, and back.

The shape changes the number of users; each user keeps its own paced rate, so the offered rate
follows `params["phases"]` = [[name, seconds, requests per second], …]. Requests are tagged with
the phase they were due in, so the runner reports percentiles per phase.
"""

from __future__ import annotations

import math
import time

from locust import LoadTestShape

from benchmarks.locustfiles.common import PARAMS, STATE
from benchmarks.locustfiles.steady import Shopper

__all__ = ["BurstShape", "Shopper"]


class BurstShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        elapsed = time.time() - STATE["started"]
        end = 0.0
        for _name, seconds, rate in PARAMS["phases"]:
            end += seconds
            if elapsed < end:
                users = max(math.ceil(rate / PARAMS["per_user_rate"]), 1)
                return users, 1000.0
        return None
