"""GET /track/{tracking_number}: the shopper's page, answered straight off the ASGI scope.

The page is the edge's hottest path, and on a render-cache hit its own work is a few dict
lookups. As a Starlette endpoint — behind the exception middleware, a regex match over the
routes, a `Request` that parses the query, cookies and headers into multidicts, and a
`Response` — what surrounded the page cost more than the page did (issue #6: 0.39× the
throughput of a bare Starlette endpoint). So:

- `FrontDoor`, a middleware behind `ShedLoad`, sends GET and HEAD for `/track/<one path
  segment>` straight to `TrackPage`; everything else goes on to the router as before: other
  methods (405), more segments (404), a trailing slash (307 to the page). Being inside the
  middleware stack, the page is still shed under load (503 + Retry-After), and an exception
  still becomes a JSON 500 with its request id from `RequestGuard` (sync/guard.py).
- `TrackPage` reads the three headers it needs in one pass over `scope["headers"]`, parses the
  query string only when there is one, and sends the cached page with its prepared header
  bytes. It is also the router's endpoint for the same path (which serves it when the edge is
  mounted under a root path), so there is one implementation of the page.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import parse_qsl

from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from edge import i18n
from edge.pages import NOT_FOUND_COST, UNLOCK_COOKIE, Pages, client_key, set_cookie

PREFIX = "/track/"
LANG_COOKIE_AGE_S = 365 * 86400

# (status, headers, body) of an answer
Answer = tuple[int, Sequence[tuple[bytes, bytes]], bytes]


class FrontDoor:
    """Middleware: the tracking page skips the exception middleware, the router and `Request`."""

    def __init__(self, app: ASGIApp, *, page: ASGIApp) -> None:
        self.app = app
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The router matches `[^/]+` after the prefix, on the path less any root path; under
        # a root path the router does the matching (and still reaches the same page).
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"].startswith(PREFIX)
            and not scope.get("root_path")
        ):
            tracking_number = scope["path"][len(PREFIX) :]
            if tracking_number and "/" not in tracking_number:
                scope["path_params"] = {"tracking_number": tracking_number}
                await self.page(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TrackPage:
    """The page as an ASGI app: the number is `scope["path_params"]["tracking_number"]` (as the
    router leaves it), and `Pages` is the app's `state.pages`, made in the lifespan."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        p: Pages = scope["app"].state.pages
        started = time.perf_counter()
        try:
            status, headers, body = answer(p, scope)
        finally:
            p.page_seconds.observe(time.perf_counter() - started)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def answer(p: Pages, scope: Scope) -> Answer:
    tn: str = scope["path_params"]["tracking_number"]
    # Starlette's reading of the same request: every Cookie header, later ones winning; the
    # first Accept-Language and If-None-Match; the last of a repeated query parameter.
    cookies: dict[str, str] = {}
    accept_language: str | None = None
    if_none_match: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
        elif name == b"accept-language" and accept_language is None:
            accept_language = value.decode("latin-1")
        elif name == b"if-none-match" and if_none_match is None:
            if_none_match = value
    raw_query: bytes = scope["query_string"]
    query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) if raw_query else {}

    lang, explicit = i18n.choose(query.get("lang", ""), cookies.get(i18n.COOKIE, ""), accept_language or "")
    t = p.translators[lang]
    client = client_key(scope)
    wait = p.lookups.take(client)
    if wait:
        return _parts(p.too_many(t, wait, "lookup"))
    s = p.shipment(tn)
    if s is None:
        p.lookups.take(client, NOT_FOUND_COST)
        return _parts(p.not_found(t, tn))
    how = p.unlocked_by(tn, query.get("t"), cookies.get(UNLOCK_COOKIE))
    rendered = p.track_html(s, t, unlocked=how is not None)
    if if_none_match == rendered.etag:
        p.metrics.not_modified.inc()
        return 304, list(rendered.not_modified), b""
    headers = list(rendered.headers)  # a copy: a middleware may add to the list it is sent
    if explicit:
        headers.append(set_cookie(i18n.COOKIE, lang, max_age=LANG_COOKIE_AGE_S))
    if how == "link":
        headers.append(p.unlock_cookie(tn, secure=scope.get("scheme") == "https"))
    return 200, headers, rendered.body


def _parts(response: Response) -> Answer:
    return response.status_code, response.raw_headers, bytes(response.body)
