"""Every endpoint of the origin and the edge, with a valid request to start hostile ones from.

The list mirrors the route tables (`origin/app.py`, `origin/ledger_routes.py`, `edge/app.py`);
`tests/benchmarks/test_fuzz.py` fails when a route exists that is not listed here, so a new
endpoint cannot escape the fuzzer. `valid(world)` gives each endpoint's well-formed body, path
parameters and query, naming things that exist in the seeded world, so hostile values reach
the code past validation of the rest of the request.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Service = Literal["origin", "edge"]
# Who the endpoint wants: a bearer token, a signature scheme, or nobody.
Auth = Literal["none", "admin", "edge", "store", "webhook", "easypost", "aftership"]
Body = Literal["none", "json", "form"]


@dataclass(frozen=True)
class FuzzWorld:
    """Names from the seeded world (and from a few requests made before fuzzing)."""

    sites: tuple[str, ...]
    skus: tuple[str, ...]
    tracking_numbers: tuple[str, ...]
    order_ids: tuple[str, ...]
    region: str
    center: tuple[float, float]
    epoch: str
    model_sha256: str
    reservation_id: str
    decision_id: str


@dataclass(frozen=True)
class Endpoint:
    service: Service
    method: str
    path: str  # a Starlette path template, e.g. /v1/stock/{site_id}/{sku}
    auth: Auth
    body: Body = "none"
    idempotent: bool = False  # takes an Idempotency-Key
    weight: float = 1.0  # share of the inputs, relative to the others
    query: tuple[str, ...] = ()  # query parameters it reads

    @property
    def label(self) -> str:
        return f"{self.service} {self.method} {self.path}"


@dataclass(frozen=True)
class Valid:
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


E = Endpoint
ENDPOINTS: tuple[Endpoint, ...] = (
    E("origin", "GET", "/healthz", "none", weight=0.2),
    E("origin", "GET", "/metrics", "none", weight=0.2),
    E("origin", "POST", "/v1/webhooks/tracking", "webhook", "json", weight=3),
    E("origin", "POST", "/v1/webhooks/easypost", "easypost", "json", weight=2),
    E("origin", "POST", "/v1/webhooks/aftership", "aftership", "json", weight=2),
    E("origin", "POST", "/v1/orders", "admin", "json", idempotent=True, weight=2),
    E("origin", "POST", "/v1/shipments", "admin", "json", idempotent=True),
    E("origin", "POST", "/v1/stock/movements", "admin", "json", idempotent=True),
    E("origin", "GET", "/v1/stock/{site_id}/{sku}", "edge"),
    E("origin", "POST", "/v1/reservations", "edge", "json", idempotent=True, weight=2),
    E("origin", "POST", "/v1/reservations/batch", "edge", "json"),
    E("origin", "POST", "/v1/allotments", "edge", "json", idempotent=True),
    E("origin", "GET", "/v1/reservations/{reservation_id}", "edge"),
    E("origin", "POST", "/v1/reservations/{reservation_id}/commit", "edge"),
    E("origin", "POST", "/v1/reservations/{reservation_id}/release", "edge"),
    E("origin", "POST", "/v1/links", "admin", "json"),
    E("origin", "POST", "/v1/erasure", "admin", "json", weight=0.3),
    E("origin", "POST", "/v1/models", "admin", "json", weight=2),
    E("origin", "GET", "/v1/models/{sha256}", "edge", weight=0.5),
    E("origin", "GET", "/v1/sites", "edge", weight=0.3),
    E("origin", "GET", "/v1/feed/{bucket}", "edge", query=("epoch", "after", "limit", "wait"), weight=2),
    E("origin", "GET", "/v1/snapshot/{bucket}", "edge", weight=0.2),
    E("origin", "GET", "/v1/buckets", "edge", weight=0.3),
    E("edge", "GET", "/healthz", "none", weight=0.2),
    E("edge", "GET", "/favicon.ico", "none", weight=0.2),
    E("edge", "GET", "/readyz", "none", weight=0.2),
    E("edge", "GET", "/metrics", "none", weight=0.2),
    E("edge", "GET", "/v1/sync/status", "none", weight=0.3),
    E("edge", "GET", "/track/{tracking_number}", "none", query=("t", "lang"), weight=2),
    E("edge", "POST", "/track/{tracking_number}/unlock", "none", "form", weight=2),
    E("edge", "GET", "/v1/track/{tracking_number}", "none", weight=1.5),
    E("edge", "POST", "/v1/route", "store", "json", weight=3),
    E("edge", "GET", "/v1/decisions/{decision_id}", "store"),
)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def valid(ep: Endpoint, w: FuzzWorld, n: int) -> Valid:
    """A well-formed request for `ep`; `n` makes its ids new each time."""
    now = datetime.now(UTC)
    tn, site, sku = w.tracking_numbers[n % len(w.tracking_numbers)], w.sites[n % len(w.sites)], w.skus[0]
    lines = [{"sku": sku, "qty": 1}]
    hold = {
        "reservation_id": f"fz-h-{n}",
        "order_id": f"fz-o-{n}",
        "site_id": site,
        "lines": lines,
        "ttl_s": 60,
    }
    when = _iso(now - timedelta(minutes=5))
    bodies: dict[str, Any] = {
        "/v1/webhooks/tracking": {
            "tracking_number": tn,
            "carrier": "dhl",
            "status": "in_transit",
            "message": "Arrived at sorting facility",
            "location": "Hamburg Hub",
            "occurred_at": when,
            "eta": _iso(now + timedelta(days=2)),
            "code": "PU",
        },
        "/v1/webhooks/easypost": {
            "description": "tracker.updated",
            "result": {
                "object": "Tracker",
                "tracking_code": tn,
                "carrier": "DHL",
                "est_delivery_date": _iso(now + timedelta(days=2)),
                "tracking_details": [
                    {
                        "datetime": when,
                        "status": "in_transit",
                        "status_detail": "arrived_at_facility",
                        "message": "Arrived",
                        "tracking_location": {"city": "Hamburg", "state": "HH", "country": "DE"},
                    }
                ],
            },
        },
        "/v1/webhooks/aftership": {
            "event": "tracking_update",
            "msg": {
                "tracking_number": tn,
                "slug": "dhl",
                "expected_delivery": _iso(now + timedelta(days=2)),
                "courier_estimated_delivery_date": {"estimated_delivery_date": "2026-12-24"},
                "latest_estimated_delivery": {"datetime": when, "datetime_max": when},
                "checkpoints": [
                    {
                        "checkpoint_time": when,
                        "tag": "InTransit",
                        "subtag": "InTransit_001",
                        "message": "Arrived",
                        "city": "Hamburg",
                        "state": "HH",
                        "country_name": "Germany",
                    }
                ],
            },
        },
        "/v1/orders": {
            "order_id": f"fz-o-{n}",
            "customer": {"name": "Erika Mustermann", "email": "erika@example.com", "phone": "+49 40 123"},
            "destination": {
                "lat": w.center[0],
                "lon": w.center[1],
                "postcode": "20095",
                "city": "Hamburg",
                "country": "DE",
                "street": "Hauptstraße 5",
            },
            "lines": lines,
            "placed_at": when,
        },
        "/v1/shipments": {"tracking_number": f"FZ{n:08d}", "carrier": "dhl", "order_id": w.order_ids[0]},
        "/v1/stock/movements": {"site_id": site, "sku": sku, "kind": "receive", "qty": 1},
        "/v1/reservations": hold,
        "/v1/reservations/batch": {"holds": [hold]},
        "/v1/allotments": {
            "allotment_id": f"fz-a-{n}",
            "owner": "fuzz-edge",
            "site_id": site,
            "lines": lines,
        },
        "/v1/links": {"tracking_number": tn, "days": 30},
        "/v1/erasure": {"order_id": f"fz-o-{n}"},
        "/v1/models": _release(n),
        "/v1/route": {
            "order_id": f"fz-r-{n}",
            "destination": {"lat": w.center[0], "lon": w.center[1], "city": "Hamburg"},
            "lines": lines,
            "carrier": "dhl",
            "placed_at": when,
        },
        "/track/{tracking_number}/unlock": {"postcode": "20095", "lang": "de"},
    }
    params = {
        "site_id": site,
        "sku": sku,
        "reservation_id": w.reservation_id,
        "sha256": w.model_sha256,
        "bucket": f"region:{w.region}" if n % 2 else "global",
        "tracking_number": tn,
        "decision_id": w.decision_id,
    }
    query = {
        "/v1/feed/{bucket}": {"epoch": w.epoch, "after": "0", "limit": "50", "wait": "0"},
        "/track/{tracking_number}": {"lang": "de"},
    }.get(ep.path, {})
    return Valid(bodies.get(ep.path), {k: v for k, v in params.items() if "{" + k + "}" in ep.path}, query)


def _release(n: int) -> dict[str, Any]:
    """A model release that would register: a shadow of a name no edge serves."""
    blob = f"not an onnx model {n}".encode()
    card = {
        "name": "fuzz_probe",
        "version": f"0.0.{n}",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "feature_schema": {"version": "1"},
    }
    return {"blob_base64": base64.b64encode(blob).decode(), "card": card, "rollout": "shadow"}
