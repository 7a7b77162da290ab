"""Webhooks into the origin at a stated rate while probes time how long each new status takes
to be visible on the edge's `/v1/track` (the `sync-lag` scenario).

A probe reads a shipment's `version` on the edge, posts a signed event for it to the origin,
and polls the edge until the version moves: the time from the origin's 202 to that moment is
the sync lag ("visible on edge"); from the send, "visible since send". Probes use their own
tracking numbers, which the background carriers never touch.
"""

from __future__ import annotations

import itertools
import time

import gevent
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

from benchmarks.locustfiles.common import PARAMS, record
from benchmarks.locustfiles.webhooks import Carrier, signed_event

__all__ = ["Carrier", "LagProbe"]

EDGE: str = PARAMS["edge"]
ORIGIN: str = PARAMS["origins"][0]
PROBE_NUMBERS: list[list[str]] = PARAMS["probe_shipments"]
POLL_S = float(PARAMS.get("poll_s", 0.005))
GIVE_UP_S = float(PARAMS.get("give_up_s", 10.0))
_next_probe = itertools.count()


class LagProbe(FastHttpUser):
    fixed_count = int(PARAMS.get("probes", 2))
    wait_time = constant(float(PARAMS.get("probe_interval_s", 0.2)))

    def edge_version(self, tn: str) -> tuple[int, str] | None:
        with self.client.get(f"{EDGE}/v1/track/{tn}", name="probe: edge read", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return None
            body = r.json()
            return int(body["version"]), str(body["status"])

    @task
    def probe(self) -> None:
        tn, carrier = PROBE_NUMBERS[next(_next_probe) % len(PROBE_NUMBERS)]
        before = self.edge_version(tn)
        if before is None:
            return
        version, status = before
        new_status = "out_for_delivery" if status == "in_transit" else "in_transit"
        body, headers = signed_event(tn, carrier, new_status)
        sent = time.time()
        with self.client.post(
            f"{ORIGIN}/v1/webhooks/tracking",
            data=body,
            headers=headers,
            name="probe: webhook",
            catch_response=True,
        ) as r:
            acked = time.time()
            if r.status_code != 202:
                r.failure(f"status {r.status_code}")
                record("visible on edge", acked, acked, acked, int(r.status_code or 0), "error")
                return
        while True:
            seen = self.edge_version(tn)
            now = time.time()
            if seen is not None and seen[0] > version:
                record("visible on edge", acked, acked, now, 200, "ok")
                record("visible since send", sent, sent, now, 200, "ok")
                return
            if now - acked > GIVE_UP_S:
                record("visible on edge", acked, acked, now, 0, "timeout")
                record("visible since send", sent, sent, now, 0, "timeout")
                return
            gevent.sleep(POLL_S)
