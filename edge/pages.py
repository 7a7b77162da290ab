"""The shopper's tracking page and its JSON twin, rendered from the read model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from edge.readmodel import ReadModel
from sync.entities import ChangeKinds, Shipment, decode_entity
from sync.wire import to_json

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

STATUS_TEXT = {
    "pending": "Label created",
    "info_received": "Shipping information received",
    "in_transit": "On its way",
    "out_for_delivery": "Out for delivery",
    "attempt_fail": "Delivery attempt failed",
    "available_for_pickup": "Ready for pickup",
    "delivered": "Delivered",
    "exception": "There is a problem with this delivery",
    "returned": "Returned to sender",
    "expired": "Tracking has expired",
}


def template_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        auto_reload=False,
    )


def ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 60:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''} ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hour{'s' if hours != 1 else ''} ago"
    return f"{hours // 24} days ago"


def fmt_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%a %d %b %Y, %H:%M UTC")


def find_shipment(request: Request, tracking_number: str) -> Shipment | None:
    model: ReadModel = request.app.state.model
    bucket = request.app.state.settings.buckets[1]
    body = model.get(bucket, ChangeKinds.SHIPMENT, tracking_number)
    if body is None:
        return None
    shipment: Shipment = decode_entity(ChangeKinds.SHIPMENT, body)
    return shipment


def data_age_s(request: Request) -> float:
    followers = request.app.state.followers
    now = request.app.state.settings.clock()
    synced = min((f.status.synced_at for f in followers), default=0.0)
    return now - synced if synced else float("inf")


def shipment_json(s: Shipment, age_s: float) -> dict[str, Any]:
    return {
        "tracking_number": s.tracking_number,
        "carrier": s.carrier,
        "status": s.status,
        "status_text": STATUS_TEXT[s.status],
        "eta": s.eta,
        "events": [
            {
                "occurred_at": e.occurred_at,
                "status": e.status,
                "message": e.message,
                "location": e.location,
            }
            for e in reversed(s.events)
        ],
        "updated_at": s.updated_at,
        "version": s.version,
        "data_age_s": None if age_s == float("inf") else round(age_s, 3),
    }


async def track_json(request: Request) -> Response:
    tn = request.path_params["tracking_number"]
    s = find_shipment(request, tn)
    if s is None:
        body = {"error": "not_found", "detail": f"no shipment with tracking_number {tn!r}"}
        return Response(to_json(body), 404, media_type="application/json")
    return Response(to_json(shipment_json(s, data_age_s(request))), media_type="application/json")


async def track_page(request: Request) -> Response:
    env: jinja2.Environment = request.app.state.templates
    tn = request.path_params["tracking_number"]
    s = find_shipment(request, tn)
    if s is None:
        html = env.get_template("not_found.html").render(lang="en", tracking_number=tn)
        return HTMLResponse(html, status_code=404)
    now = request.app.state.settings.clock()
    events = [
        {
            "status_text": STATUS_TEXT[e.status],
            "message": e.message,
            "location": e.location,
            "when": fmt_time(e.occurred_at),
            "iso": e.occurred_at.isoformat(),
        }
        for e in reversed(s.events)
    ]
    age = data_age_s(request)
    html = env.get_template("track.html").render(
        lang="en",
        s=s,
        status_text=STATUS_TEXT[s.status],
        eta=fmt_time(s.eta) if s.eta and s.status not in ("delivered", "returned") else None,
        updated_ago=ago(now - s.updated_at.timestamp()),
        events=events,
        data_age="never" if age == float("inf") else ago(age),
    )
    return HTMLResponse(html)
