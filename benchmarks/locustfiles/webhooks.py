"""Signed tracking webhooks into the origin at a fixed rate (the `ingest` scenario).

Every request carries a fresh `webhook-id` and `occurred_at`, so each one is a real write (no
replay, no duplicate). With several origin processes, users are spread over them.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from locust import task

from benchmarks.locustfiles.common import PARAMS, PacedUser, outcome_of, record
from origin.signatures import sign

KEY = bytes.fromhex(PARAMS["webhook_key_hex"])
ORIGINS: list[str] = PARAMS["origins"]
SHIPMENTS: list[list[str]] = PARAMS["shipments"]
STATUSES = ("in_transit", "out_for_delivery", "in_transit", "attempt_fail")
_next_origin = itertools.count()


def signed_event(tracking_number: str, carrier: str, status: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "tracking_number": tracking_number,
            "carrier": carrier,
            "status": status,
            "message": "Benchmark scan",
            "location": "Bench Hub",
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        },
        separators=(",", ":"),
    ).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    ts = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(KEY, msg_id, ts, body),
    }
    return body, headers


class Carrier(PacedUser):
    def on_start(self) -> None:
        self.origin = ORIGINS[next(_next_origin) % len(ORIGINS)]
        super().on_start()

    def post(self, tracking_number: str, carrier: str, status: str, name: str) -> Any:
        body, headers = signed_event(tracking_number, carrier, status)
        intended = self.due
        start = time.time()
        url = f"{self.origin}/v1/webhooks/tracking"
        with self.client.post(url, data=body, headers=headers, name=name, catch_response=True) as r:
            end = time.time()
            outcome = outcome_of(r, (202,))
            if outcome == "ok":
                r.success()
            else:
                r.failure(f"{outcome}: status {r.status_code}")
        record(name, intended, start, end, int(r.status_code or 0), outcome)
        return r

    @task
    def deliver_event(self) -> None:
        tn, carrier = random.choice(SHIPMENTS)
        self.post(tn, carrier, random.choice(STATUSES), "webhook")
