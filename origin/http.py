"""Request and response helpers every origin endpoint shares."""

from __future__ import annotations

import hmac
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from origin.errors import InvalidInput, TooLarge, Unauthorized
from origin.settings import OriginSettings
from sync.wire import to_json

T = TypeVar("T")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(to_json(body), status_code=status, media_type="application/json")


def require(request: Request, role: str) -> None:
    """Check the bearer token: `admin`, or `edge` (which the admin token also passes)."""
    settings: OriginSettings = request.app.state.settings
    auth = request.headers.get("authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    allowed = [settings.admin_token] + ([settings.edge_token] if role == "edge" else [])
    if not token or not any(t and hmac.compare_digest(token.encode(), t.encode()) for t in allowed):
        raise Unauthorized(f"this endpoint needs the {role} token as 'Authorization: Bearer …'")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body of {declared} bytes is over the limit of {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}", code="invalid_json") from None
