"""What wraps every request of both services: a request id, and a JSON 500 for what escapes.

`RequestGuard` is the outermost middleware of the origin and of the edge. It gives every request
an id — the client's `X-Request-ID` when it is a short token, else a new one — sends it back as
`X-Request-ID` on every response (a shed 503 and a cached page included) and puts it in
`scope["request_id"]`. An exception no handler turned into a response is logged once, with
that id, and answered `{"error": "internal", "detail": …, "request_id": …}` with status 500
in JSON like every other error, never Starlette's plain-text page. A bug is still a bug: a 500
means one, and the log line says where. With `refuse_nul` (the origin, whose PostgreSQL refuses
NUL in text) a path holding a NUL character is a 400 before any handler sees it.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync.wire import to_json

HEADER = b"x-request-id"
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class RequestGuard:
    def __init__(self, app: ASGIApp, *, logger: logging.Logger, refuse_nul: bool = False) -> None:
        self.app = app
        self.log = logger
        self.refuse_nul = refuse_nul  # PostgreSQL refuses NUL in text: refuse it before a query
        # Unique within the process and across its restarts; cheap to make (no syscall).
        self._prefix = os.urandom(4).hex()
        self._count = itertools.count(1)

    def request_id(self, scope: Scope) -> bytes:
        for name, value in scope["headers"]:
            if name == HEADER:
                if _CLIENT_ID.match(value):
                    return bytes(value)
                break
        return f"{self._prefix}-{next(self._count):x}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = self.request_id(scope)
        scope["request_id"] = rid.decode()
        if self.refuse_nul and "\x00" in scope["path"]:
            await send_error(send, rid, 400, "invalid_path", "the path holds a NUL character")
            return
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (HEADER, rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            self.log.exception(
                "unhandled error answering %s %s (request %s)", scope["method"], scope["path"], rid.decode()
            )
            if not started:  # else the client sees the connection end mid-response
                detail = "the server failed to answer this request; it has been logged"
                await send_error(send, rid, 500, "internal", detail)


async def send_error(send: Send, rid: bytes, status: int, code: str, detail: str) -> None:
    body: dict[str, Any] = {"error": code, "detail": detail, "request_id": rid.decode()}
    payload = to_json(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        (HEADER, rid),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _not_found(request: Request, exc: Exception) -> Response:
    body = {"error": "not_found", "detail": f"no route for {request.url.path}"}
    return Response(to_json(body), 404, media_type="application/json")


async def _wrong_method(request: Request, exc: Exception) -> Response:
    body = {"error": "method_not_allowed", "detail": f"{request.method} is not allowed on {request.url.path}"}
    headers = getattr(exc, "headers", None) or {}  # Starlette's 405 says what is allowed (`Allow`)
    return Response(to_json(body), 405, headers, media_type="application/json")


# Unknown paths and wrong methods answer JSON like every other error (the router raises them).
NO_ROUTE_HANDLERS: dict[Any, Any] = {404: _not_found, 405: _wrong_method}


def bearer_matches(request: Request, *tokens: str) -> bool:
    """Whether the request's `Authorization: Bearer …` is one of `tokens` (empty ones never
    match), compared in constant time."""
    auth = request.headers.get("authorization", "")
    given = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    return bool(given) and any(t and hmac.compare_digest(given.encode(), t.encode()) for t in tokens)


def operator_refusal(request: Request, token: str) -> Response | None:
    """None when `request` may read operator data (`/metrics`, sync status): always when no
    `WAYPOST_OPERATOR_TOKEN` is set, else only with it as the bearer token; else the 401."""
    if not token or bearer_matches(request, token):
        return None
    detail = "this endpoint needs the operator token as 'Authorization: Bearer …'"
    body = {"error": "unauthorized", "detail": detail}
    return Response(to_json(body), 401, {"WWW-Authenticate": "Bearer"}, media_type="application/json")
