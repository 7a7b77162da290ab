"""Shared by the locustfiles (they run only inside the locust subprocess, never under pytest).

- `PacedUser`: a FastHttpUser that keeps its own schedule. Each user sends at `per_user_rate`;
  its next send is due `1/rate` after the previous *due* time, not after the previous response,
  so a slow response does not silently lower the offered rate. A user that falls behind sends at
  once, and that request's latency counts from when it was due (coordinated-omission correction).
- Arrivals (`params["arrivals"]`): `even` (the default) gives user k the phase frac(k/φ) of the
  interval, from a common start, so the users' sends interleave evenly for any number of users
  (gaps 0.45–1.9 × the even spacing for up to 200 users, 0.64–1.67 × for 30): a constant
  arrival rate, as wrk2 and k6's constant-arrival-rate offer it. Random phases, as before, repeat one
  random cluster every interval for the whole run: at 300/s by 30 users, 12 sends within 20 ms
  of every 100 ms, and a route p99 anywhere from 13 to 45 ms for the same code. `poisson`
  spaces each user's sends by exponential gaps: independent shoppers, bursts included.
- `record`: one raw row per request (intended, start and end time, status, outcome, phase) kept
  in memory and written as CSV when the test stops; the runner computes every percentile from it.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.contrib.fasthttp import FastHttpUser

PARAMS: dict[str, Any] = json.loads(Path(os.environ["BENCH_PARAMS"]).read_text())
ROWS: list[tuple[str, float, float, float, int, str, str]] = []
STATE: dict[str, float] = {"started": time.time(), "stopped": 0.0, "behind": 0.0}
USERS: list[PacedUser] = []
ARRIVALS = str(PARAMS.get("arrivals", "even"))
GOLDEN = (math.sqrt(5) - 1) / 2  # 1/φ
_user_numbers = itertools.count()


def phase_of(t: float) -> str:
    """The burst phase a moment belongs to (`steady` when the run has no phases)."""
    phases = PARAMS.get("phases")
    if not phases:
        return "steady"
    elapsed = t - STATE["started"]
    end = 0.0
    for name, seconds, _rate in phases:
        end += seconds
        if elapsed < end:
            return str(name)
    return "after"


def record(name: str, intended: float, start: float, end: float, status: int, outcome: str) -> None:
    ROWS.append((name, intended, start, end, status, outcome, phase_of(intended)))


def outcome_of(response: Any, expected: tuple[int, ...]) -> str:
    """ok · shed (429/503 with Retry-After) · shed_without_retry_after · timeout · connection · error."""
    status = int(response.status_code or 0)
    if status in expected:
        return "ok"
    if status in (429, 503):
        has_retry = bool(response.headers and response.headers.get("retry-after"))
        return "shed" if has_retry else "shed_without_retry_after"
    if status == 0:
        error = str(getattr(response, "error", "") or "")
        return "timeout" if "timed out" in error.lower() or "timeout" in error.lower() else "connection"
    return "error"


@events.test_start.add_listener
def _on_start(environment: Any, **_kw: Any) -> None:
    STATE["started"] = time.time()
    # The run lasts `duration_s` from now, however long locust took to get here.
    gevent.spawn_later(float(PARAMS["duration_s"]), environment.runner.quit)


@events.test_stop.add_listener
def _on_stop(environment: Any, **_kw: Any) -> None:
    now = time.time()
    STATE["stopped"] = now
    for user in USERS:
        user.count_behind(now)
    with open(PARAMS["raw_out"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "intended", "start", "end", "status", "outcome", "phase"])
        for name, intended, start, end, status, outcome, phase in ROWS:
            w.writerow([name, f"{intended:.6f}", f"{start:.6f}", f"{end:.6f}", status, outcome, phase])
    with open(PARAMS["meta_out"], "w") as f:
        json.dump({**STATE, "rows": len(ROWS)}, f)


class PacedUser(FastHttpUser):
    abstract = True
    network_timeout = float(PARAMS.get("timeout_s", 5.0))
    connection_timeout = float(PARAMS.get("timeout_s", 5.0))
    per_user_rate = float(PARAMS.get("per_user_rate", 10.0))

    def on_start(self) -> None:
        self.interval = 1.0 / self.per_user_rate
        now = time.time()
        if ARRIVALS == "poisson":
            self.due = now + self._gap()
        else:  # even: this user's phase of the common schedule, its first send after now
            phase = STATE["started"] + (next(_user_numbers) * GOLDEN % 1.0) * self.interval
            self.due = phase + max(math.ceil((now - phase) / self.interval), 0) * self.interval
        USERS.append(self)
        gevent.sleep(max(self.due - time.time(), 0.0))

    def _gap(self) -> float:
        return random.expovariate(self.per_user_rate) if ARRIVALS == "poisson" else self.interval

    def on_stop(self) -> None:
        self.count_behind(time.time())

    def count_behind(self, now: float) -> None:
        """Sends that were due before the user stopped but never went out (it fell behind)."""
        if not getattr(self, "counted", False) and hasattr(self, "due"):
            self.counted = True
            STATE["behind"] += max(int((now - self.due) / self.interval), 0)

    def wait_time(self) -> float:
        self.due += self._gap()
        return max(self.due - time.time(), 0.0)

    def timed_get(
        self, path: str, name: str, expected: tuple[int, ...] = (200,), must_contain: str | None = None
    ) -> Any:
        return self._timed(
            lambda: self.client.get(path, name=name, catch_response=True), name, expected, must_contain
        )

    def timed_post(
        self,
        path: str,
        name: str,
        body: bytes,
        headers: dict[str, str],
        expected: tuple[int, ...] = (200, 201),
        must_contain: str | None = None,
    ) -> Any:
        return self._timed(
            lambda: self.client.post(path, data=body, headers=headers, name=name, catch_response=True),
            name,
            expected,
            must_contain,
        )

    def _timed(
        self, send: Callable[[], Any], name: str, expected: tuple[int, ...], must_contain: str | None
    ) -> Any:
        """Send, judge the response, and record it with the time it was due."""
        intended = self.due
        start = time.time()
        with send() as r:
            end = time.time()
            outcome = outcome_of(r, expected)
            if outcome == "ok" and must_contain is not None and must_contain not in (r.text or ""):
                outcome = "error"
            if outcome == "ok":
                r.success()
            else:
                r.failure(f"{outcome}: status {r.status_code}")
        record(name, intended, start, end, int(r.status_code or 0), outcome)
        return r
