"""Request and response helpers every origin endpoint shares."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from origin.errors import InvalidInput, TooLarge, Unauthorized, WaypostError
from origin.settings import OriginSettings
from sync import inbound
from sync.guard import bearer_matches
from sync.wire import to_json

T = TypeVar("T")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(to_json(body), status_code=status, media_type="application/json")


def require(request: Request, role: str) -> None:
    """Check the bearer token: `admin`, or `edge` (which the admin token also passes)."""
    settings: OriginSettings = request.app.state.settings
    allowed = [settings.admin_token] + ([settings.edge_token] if role == "edge" else [])
    if not bearer_matches(request, *allowed):
        raise Unauthorized(f"this endpoint needs the {role} token as 'Authorization: Bearer …'")


async def read_body(request: Request, limit: int) -> bytes:
    try:
        return await inbound.read_body(request, limit)
    except inbound.BadBody as exc:
        raise _mapped(exc) from None


def decode_json(body: bytes, type_: type[T]) -> T:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        result: T = inbound.decode_json(body, decoder)
    except inbound.BadBody as exc:
        raise _mapped(exc) from None
    return result


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _mapped(exc: inbound.BadBody) -> WaypostError:
    """The shared reader's refusal as the origin's own error (origin/errors.py's tree)."""
    if exc.status == 413:
        return TooLarge(exc.detail)
    return InvalidInput(exc.detail, code=exc.code)
