"""Signed tracking links for shoppers: `POST /v1/links` and `python -m origin link`."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from origin.http import decode_json, json_response, read_body, require
from origin.settings import OriginSettings
from origin.shipments import TrackingNumber
from sync.links import sign_token

MAX_DAYS = 365


class LinkRequest(msgspec.Struct, frozen=True, kw_only=True):
    tracking_number: TrackingNumber
    days: Annotated[float, msgspec.Meta(gt=0, le=MAX_DAYS)] = 30


def tracking_link(
    settings: OriginSettings, tracking_number: str, days: float, base: str | None = None
) -> str:
    expires = int(settings.clock() + days * 86400)
    token = sign_token(settings.link_secret, tracking_number, expires)
    root = settings.public_url if base is None else base.rstrip("/")
    return f"{root}/track/{tracking_number}?t={token}"


async def create_link(request: Request) -> Response:
    require(request, "admin")
    settings: OriginSettings = request.app.state.settings
    req = decode_json(await read_body(request, 4096), LinkRequest)
    url = tracking_link(settings, req.tracking_number, req.days)
    return json_response({"url": url, "expires_in_days": req.days}, 201)
