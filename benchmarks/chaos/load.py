"""The mixed load of a chaos run: webhooks, stock movements, holds and routing decisions.

One thread per stream, each with its own httpx client, each sending one request at a time and
retrying it until a definitive answer (`deliver`). `pause()` lets every thread finish the
request it has in flight and then wait, so a checkpoint reads a world nothing is writing to
except the services' own background work; `resume()` lets them go on.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks.chaos.book import AckedDecision, AckedEvent, AckedHold, AckedMovement, Book
from origin.signatures import sign

STATUSES = ("info_received", "in_transit", "out_for_delivery", "attempt_fail", "delivered", "exception")
RETRY_PAUSE_S = 0.05


class Unanswered(Exception):
    """The run ended before this request got a definitive answer."""


@dataclass(frozen=True)
class Target:
    """What the load talks to and what it may name."""

    origin_url: str
    edge_url: str
    region: str
    center: tuple[float, float]
    sites: tuple[str, ...]
    skus: tuple[str, ...]
    shipments: tuple[tuple[str, str], ...]  # (tracking_number, carrier)
    webhook_key: bytes
    admin_token: str
    edge_token: str
    store_token: str


class Load:
    def __init__(self, target: Target, book: Book, seed: int, *, pause_s: float = 0.01) -> None:
        self.target = target
        self.book = book
        self.seed = seed
        self.pause_s = pause_s
        self._go = threading.Event()
        self._stop = threading.Event()
        self._stop_at = 0.0
        self.drain_s = 60.0  # after stop, how long a request in flight may keep retrying
        self._busy = 0
        self._idle = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._serial = 0
        self._serial_lock = threading.Lock()

    def start(self) -> None:
        streams: list[tuple[str, Callable[[httpx.Client, random.Random], None]]] = [
            ("webhook", self.webhook),
            ("webhook", self.webhook),
            ("movement", self.movement),
            ("hold", self.hold),
            ("route", self.route),
            ("route", self.route),
        ]
        self._go.set()
        for i, (name, step) in enumerate(streams):
            t = threading.Thread(target=self._loop, args=(step, random.Random(self.seed * 1000 + i)))
            t.name, t.daemon = f"chaos {name} {i}", True
            t.start()
            self._threads.append(t)

    def pause(self, timeout_s: float = 120.0) -> None:
        """Stop starting requests; return once none is in flight."""
        self._go.clear()
        with self._idle:
            if not self._idle.wait_for(lambda: self._busy == 0, timeout_s):
                raise TimeoutError(f"{self._busy} load threads still had a request in flight")

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop_at = time.monotonic()
        self._stop.set()
        self._go.set()
        for t in self._threads:
            t.join(timeout=self.drain_s + 30)

    def _loop(self, step: Callable[[httpx.Client, random.Random], None], rng: random.Random) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                self._go.wait()
                if self._stop.is_set():
                    return
                with self._idle:
                    self._busy += 1
                try:
                    step(client, rng)
                except Unanswered:
                    pass
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
                time.sleep(self.pause_s)

    def _next(self) -> int:
        with self._serial_lock:
            self._serial += 1
            return self._serial

    def deliver(self, kind: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        """`send` again until a definitive answer: 2xx or a 4xx other than 409 `in_flight`."""
        while True:
            if self._stop.is_set() and time.monotonic() - self._stop_at > self.drain_s:
                with self.book.lock:
                    self.book.unresolved[kind] += 1
                raise Unanswered(kind)
            try:
                r = send()
            except httpx.HTTPError:
                self.book.retry(kind)
                time.sleep(RETRY_PAUSE_S)
                continue
            self.book.count(kind, r.status_code)
            in_flight = (
                r.status_code == 409
                and r.headers.get("content-type", "").startswith("application/json")
                and r.json().get("error") == "in_flight"
            )
            if r.status_code >= 500 or in_flight:
                self.book.retry(kind)
                time.sleep(RETRY_PAUSE_S)
                continue
            return r

    # -- the streams ---------------------------------------------------------------------

    def webhook(self, client: httpx.Client, rng: random.Random) -> None:
        t = self.target
        tn, carrier = rng.choice(t.shipments)
        n = self._next()
        wid = f"msg_chaos_{self.seed}_{n}"
        at = datetime.now(UTC).replace(microsecond=rng.randrange(1000) * 1000) - timedelta(
            seconds=rng.randrange(3 * 86400)
        )
        event = {
            "tracking_number": tn,
            "carrier": carrier,
            "status": rng.choice(STATUSES),
            "message": f"chaos event {n}",
            "location": f"hub-{rng.randrange(40)}",
            "occurred_at": at.isoformat(),
        }
        body = json.dumps(event).encode()

        def send() -> httpx.Response:
            ts = int(time.time())
            headers = {
                "webhook-id": wid,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(t.webhook_key, wid, ts, body),
                "content-type": "application/json",
            }
            return client.post(t.origin_url + "/v1/webhooks/tracking", content=body, headers=headers)

        r = self.deliver("webhook", send)
        if r.status_code in (200, 202):
            acked = AckedEvent(wid, tn, at, str(event["status"]), str(event["location"]), r.json()["status"])
            with self.book.lock:
                self.book.webhooks.append(acked)

    def movement(self, client: httpx.Client, rng: random.Random) -> None:
        t = self.target
        n = self._next()
        kind = rng.choices(("receive", "adjust", "return"), (6, 3, 1))[0]
        qty = {"receive": rng.randint(1, 20), "return": rng.randint(1, 5)}.get(kind) or rng.choice(
            [-8, -5, -3, -1, 1, 2, 4]
        )
        site, sku = rng.choice(t.sites), rng.choice(t.skus)
        explicit = rng.random() < 0.5
        body = {"site_id": site, "sku": sku, "kind": kind, "qty": qty}
        if explicit:
            body["movement_id"] = f"chaos-mv-{self.seed}-{n}"
        headers = {"Authorization": f"Bearer {t.admin_token}", "Idempotency-Key": f"chaos-mk-{self.seed}-{n}"}
        r = self.deliver(
            "movement", lambda: client.post(t.origin_url + "/v1/stock/movements", json=body, headers=headers)
        )
        if r.status_code == 201:
            mid = r.json()["movement_id"]
            with self.book.lock:
                self.book.movements[mid] = AckedMovement(mid, site, sku, kind, qty, explicit)
                self.book.anonymous_sent += 0 if explicit else 1
        elif explicit:
            with self.book.lock:
                self.book.movements_refused.add(str(body["movement_id"]))

    def hold(self, client: httpx.Client, rng: random.Random) -> None:
        t = self.target
        n = self._next()
        rid = f"chaos-h-{self.seed}-{n}"
        site = rng.choice(t.sites)
        skus = rng.sample(t.skus, rng.randint(1, 2))
        lines = tuple(sorted((sku, rng.randint(1, 5)) for sku in skus))
        body = {
            "reservation_id": rid,
            "order_id": f"chaos-ho-{self.seed}-{n}",
            "site_id": site,
            "lines": [{"sku": s, "qty": q} for s, q in lines],
            "ttl_s": rng.randint(3, 60),  # some expire during the run: the sweeper is under fire too
        }
        headers = {"Authorization": f"Bearer {t.edge_token}", "Idempotency-Key": rid}
        r = self.deliver(
            "hold", lambda: client.post(t.origin_url + "/v1/reservations", json=body, headers=headers)
        )
        if r.status_code != 201:
            with self.book.lock:
                self.book.holds_refused.add(rid)
            return
        acked = AckedHold(rid, str(body["order_id"]), site, lines)
        with self.book.lock:
            self.book.holds[rid] = acked
        action = rng.choices(("commit", "release", None), (2, 3, 5))[0]
        if action is None:
            return
        auth = {"Authorization": f"Bearer {t.edge_token}"}
        url = f"{t.origin_url}/v1/reservations/{rid}/{action}"
        settled = self.deliver("settle", lambda: client.post(url, headers=auth))
        if settled.status_code == 200:
            with self.book.lock:
                self.book.holds[rid] = replace(acked, settled=settled.json()["state"])

    def route(self, client: httpx.Client, rng: random.Random) -> None:
        t = self.target
        n = self._next()
        order_id = f"chaos-ro-{self.seed}-{n}"
        skus = rng.sample(t.skus, rng.randint(1, 3))
        body = {
            "order_id": order_id,
            "destination": {
                "lat": round(t.center[0] + rng.uniform(-0.3, 0.3), 5),
                "lon": round(t.center[1] + rng.uniform(-0.3, 0.3), 5),
            },
            "lines": [{"sku": s, "qty": rng.randint(1, 2)} for s in skus],
        }
        headers = {"Authorization": f"Bearer {t.store_token}"}
        r = self.deliver("route", lambda: client.post(t.edge_url + "/v1/route", json=body, headers=headers))
        if r.status_code // 100 != 2:
            with self.book.lock:
                self.book.routes_refused.add(order_id)
            return
        d = r.json()
        allocations = tuple((a["site_id"], a["reservation_id"]) for a in d["allocations"])
        acked = AckedDecision(order_id, d["decision_id"], d["reservation"], allocations)
        with self.book.lock:
            self.book.decisions[order_id] = acked
