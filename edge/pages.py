"""The shopper's tracking page and its JSON twin, rendered from the read model.

Privacy: a tracking number alone shows status, timeline and ETA. Items and the destination
city show only once the shopper proves the parcel is theirs — the order's postcode (checked
against `postcode_hmac`, then a signed HttpOnly cookie scoped to this shipment's path) or a link
signed by the origin. Lookups and postcode attempts are rate-limited per client (and attempts
per tracking number), so numbers cannot be enumerated nor postcodes guessed.

Caching: a rendered page is kept in an LRU keyed by everything it shows — the shipment's and
order's versions, the template version, language, unlock state and the words of "updated N
minutes ago" and of the data's age (not the clock's minute: a page updated hours ago keeps its
rendering for as long as it reads the same) — so a change is visible at once and nothing stale
is served. The same key is the ETag.

`Pages` holds what the page, the unlock form and the JSON view share. The page itself (GET) is
`edge/trackpage.py`, which answers straight off the ASGI scope because it is the edge's hottest path.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import jinja2
from cachetools import LRUCache
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Scope

from edge.follower import BucketFollower
from edge.i18n import LANG_NAMES, LANGS, Translator, negotiate
from edge.insights import Insights
from edge.metrics import EdgeMetrics
from edge.ratelimit import TokenBuckets
from edge.readmodel import ReadModel
from edge.settings import EdgeSettings
from sync import inbound
from sync.bodies import unpack
from sync.entities import ChangeKinds, Order, Product, Shipment, decode_entity
from sync.links import postcode_matches, sign_token, verify_token
from sync.wire import to_json

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
UNLOCK_COOKIE = "wp_unlock"
UNLOCK_DAYS = 7
NOT_FOUND_COST = 4  # an unknown number costs this many more lookups: enumeration is slow
MAX_FORM = 2048


def _hash_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


RawHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Rendered:
    """A rendered page and its response headers, prepared once as bytes: a cache hit encodes
    nothing (encoding a dozen header strings per request was a third of the handler's time)."""

    body: bytes
    etag: bytes
    headers: RawHeaders  # of a 200: content-length, content-type, security, caching, etag
    not_modified: RawHeaders  # of a 304: the same less content-length and content-type


def set_cookie(
    name: str, value: str, *, max_age: int, path: str = "/", secure: bool = False
) -> tuple[bytes, bytes]:
    """An HttpOnly, SameSite=lax `Set-Cookie` header, written as Starlette's `Response.set_cookie`
    writes it."""
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["max-age"] = max_age
    morsel["path"] = path
    if secure:
        morsel["secure"] = True
    morsel["httponly"] = True
    morsel["samesite"] = "lax"
    return b"set-cookie", cookie.output(header="").strip().encode("latin-1")


class Pages:
    """What the page endpoints share, built once when the edge starts."""

    def __init__(
        self,
        settings: EdgeSettings,
        model: ReadModel,
        followers: list[BucketFollower],
        metrics: EdgeMetrics,
        insights: Insights,
    ) -> None:
        self.settings = settings
        self.insights = insights
        self.model = model
        self.followers = followers
        self.metrics = metrics
        self.global_bucket, self.region_bucket = settings.buckets
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=jinja2.select_autoescape(["html"]),
            auto_reload=False,
        )
        css = (TEMPLATES / "style.css").read_text()
        self.css = Markup(css)  # noqa: S704 - our own stylesheet, hashed into the CSP below
        sources = b"".join(p.read_bytes() for p in sorted(TEMPLATES.glob("*.*")))
        self.template_version = hashlib.blake2b(sources, digest_size=4).hexdigest()
        self.security_headers = {
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'sha256-{_hash_b64(css.encode())}'; img-src 'self';"
                " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        }
        tz = ZoneInfo(settings.timezone)
        self.translators = {lang: Translator(lang, tz) for lang in LANGS}
        clock = settings.clock
        self.lookups = TokenBuckets(settings.lookup_rate, clock)
        self.unlock_by_client = TokenBuckets(settings.unlock_rate, clock)
        self.unlock_by_number = TokenBuckets(settings.unlock_rate, clock)
        self.cache: LRUCache[tuple[Any, ...], Rendered] = LRUCache(maxsize=settings.page_cache_size)
        self.decoded: LRUCache[bytes, Any] = LRUCache(maxsize=2 * settings.page_cache_size)
        self.page_headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            *((k.lower().encode(), v.encode()) for k, v in self.security_headers.items()),
            (b"cache-control", f"private, max-age={settings.page_max_age_s}, stale-if-error=86400".encode()),
            (b"vary", b"Accept-Language, Cookie"),
        ]
        self.page_seconds = metrics.page_seconds.labels("track")
        self.cache_hit = metrics.page_cache.labels("hit")
        self.cache_miss = metrics.page_cache.labels("miss")
        self.languages = [(code, LANG_NAMES[code]) for code in LANGS]

    # -- reading the replica -------------------------------------------------------------

    def _decoded(self, kind: str, key: str) -> Any:
        """An entity of the region, decoded once per version: the stored (packed) bytes object
        is the cache key, so a hit costs a dict lookup (bytes cache their hash)."""
        stored = self.model.table(self.region_bucket, kind).get(key)
        if stored is None:
            return None
        entity = self.decoded.get(stored)
        if entity is None:
            entity = decode_entity(kind, unpack(stored))
            self.decoded[stored] = entity
        return entity

    def shipment(self, tracking_number: str) -> Shipment | None:
        shipment: Shipment | None = self._decoded(ChangeKinds.SHIPMENT, tracking_number)
        return shipment

    def order(self, order_id: str) -> Order | None:
        order: Order | None = self._decoded(ChangeKinds.ORDER, order_id)
        return order

    def product(self, sku: str) -> Product | None:
        body = self.model.get(self.global_bucket, ChangeKinds.PRODUCT, sku)
        if body is None:
            return None
        product: Product = decode_entity(ChangeKinds.PRODUCT, body)
        return product

    def data_age_s(self) -> float:
        """Seconds since the origin last confirmed every bucket current (inf: never)."""
        synced = min((f.status.synced_at for f in self.followers), default=0.0)
        return self.settings.clock() - synced if synced else float("inf")

    # -- unlocking -----------------------------------------------------------------------

    def unlocked_by(self, tracking_number: str, token: str | None, cookie: str | None) -> str | None:
        """ "link" or "cookie" when the shopper proved the parcel is theirs — by the signed link's
        `?t=` token or by the unlock cookie — else None."""
        if not (token or cookie):
            return None
        now = self.settings.clock()
        secret = self.settings.link_secret
        if token and verify_token(secret, token, tracking_number, now, purpose="link"):
            return "link"
        if cookie and verify_token(secret, cookie, tracking_number, now, purpose="cookie"):
            return "cookie"
        return None

    def unlock_cookie(self, tracking_number: str, *, secure: bool) -> tuple[bytes, bytes]:
        """The `Set-Cookie` header that unlocks this shipment's page (only) for a week."""
        expires = int(self.settings.clock() + UNLOCK_DAYS * 86400)
        return set_cookie(
            UNLOCK_COOKIE,
            sign_token(self.settings.link_secret, tracking_number, expires, purpose="cookie"),
            max_age=UNLOCK_DAYS * 86400,
            path=f"/track/{tracking_number}",
            secure=secure,
        )

    # -- rendering -----------------------------------------------------------------------

    def render(self, template: str, t: Translator, **context: Any) -> str:
        return self.env.get_template(template).render(t=t, css=self.css, languages=self.languages, **context)

    def track_html(
        self, s: Shipment, t: Translator, *, unlocked: bool, unlock_error: str | None = None
    ) -> Rendered:
        order = self.order(s.order_id)
        now = self.settings.clock()
        age = self.data_age_s()
        stale = age > self.settings.stale_after_s
        updated_ago = t.ago(now - s.updated_at.timestamp())
        data_age = t.ago(age) if age != float("inf") else "—"
        # The page changes when what it says changes: "updated 3 hours ago" keeps its rendering
        # for an hour, not a minute. An unlocked page also says what is due again (by the day)
        # and is one shopper's: it keeps the minute.
        key = (
            s.tracking_number,
            s.version,
            order.placed_at if order else None,
            t.lang,
            unlocked,
            updated_ago,
            data_age,
            int(now // 60) if unlocked else 0,
            stale,
            unlock_error,
            self.template_version,
            self.followers[0].status.cursor,  # catalog, co-purchase, model releases
            self.insights.shelf.reconciled,  # models swapped in
            self.insights.stock.flips if unlocked else 0,  # what is in stock, for suggestions
        )
        hit = self.cache.get(key)
        if hit is not None:
            self.cache_hit.inc()
            return hit
        self.cache_miss.inc()
        html = self.render(
            "track.html",
            t,
            **self._track_context(s, order, t, now, stale, unlocked),
            updated_ago=updated_ago,
            data_age=data_age,
            unlock_error=unlock_error,
        )
        body = html.encode()
        etag = b'"' + hashlib.blake2b(repr(key).encode(), digest_size=10).hexdigest().encode() + b'"'
        headers = ((b"content-length", str(len(body)).encode()), *self.page_headers, (b"etag", etag))
        rendered = Rendered(body, etag, headers, headers[2:])
        self.cache[key] = rendered
        return rendered

    def _track_context(
        self,
        s: Shipment,
        order: Order | None,
        t: Translator,
        now: float,
        stale: bool,
        unlocked: bool,
    ) -> dict[str, Any]:
        events = [
            {
                "status_text": t.status(e.status),
                "message": e.message,
                "location": e.location,
                "when": t.when(e.occurred_at),
                "iso": e.occurred_at.isoformat(),
            }
            for e in reversed(s.events)
        ]
        finished = s.status in ("delivered", "returned", "expired")
        eta = None
        if s.eta and not finished:
            eta = t.day(s.eta)
        elif not finished and (band := self.insights.eta_band(s, order)) is not None:
            p10, p50, p90 = band
            eta = t("eta_band", p50=t.when(p50), p10=t.when(p10), p90=t.when(p90)) + f" ({t('eta_model')})"
        order_view = None
        suggestions: list[dict[str, Any]] = []
        if unlocked and order is not None:
            history = self.insights.history(order)
            risky = self.insights.risky_lines(order, history)
            lines = []
            for line in order.lines:
                product = self.product(line.sku)
                name = product.name if product else line.sku
                lines.append({"qty": line.qty, "name": name, "fit_help": line.sku in risky})
            order_view = {"city": order.city, "lines": lines}
            at = datetime.fromtimestamp(now, UTC)
            suggestions = [
                {"name": r.name, "price": t.money(r.price), "hint": t("due_again") if r.due else ""}
                for r in self.insights.recommendations(order, history, at)
            ]
        return {
            "s": s,
            "status_text": t.status(s.status),
            "eta": eta,
            "events": events,
            "stale": stale,
            "order": order_view,
            "can_unlock": order is not None and not unlocked,
            "returns_url": self.settings.returns_url,
            "recommendations": suggestions,
        }

    def html(
        self, body: bytes | str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers={**self.security_headers, **(headers or {})})

    def too_many(self, t: Translator, wait_s: float, limit: str) -> Response:
        self.metrics.throttled.labels(limit).inc()
        headers = {"Retry-After": str(int(wait_s)), "Cache-Control": "no-store"}
        return self.html(self.render("too_many.html", t), 429, headers)

    def not_found(self, t: Translator, tracking_number: str) -> Response:
        html = self.render("not_found.html", t, tracking_number=tracking_number)
        return self.html(html, 404, {"Cache-Control": "no-store"})


def client_key(scope: Scope) -> str:
    """Whom the per-client limits count: the peer's address (as `Request.client.host`)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def unlock(request: Request) -> Response:
    p: Pages = request.app.state.pages
    tn = request.path_params["tracking_number"]
    try:
        body = await inbound.read_body(request, MAX_FORM)
    except inbound.BadBody as exc:
        return Response(to_json(exc.body()), exc.status, exc.headers(), "application/json")
    form = parse_qs(body.decode("utf-8", "replace"))
    lang = (form.get("lang") or [""])[0]
    t = p.translators[lang if lang in LANGS else negotiate(request)[0]]
    # The answer tells a known number from an unknown one (404 or 403), so it spends the lookup
    # limit first, like the page and the JSON, and an unknown number spends more.
    client = client_key(request.scope)
    wait = p.lookups.take(client)
    if wait:
        return p.too_many(t, wait, "lookup")
    s = p.shipment(tn)
    if s is None:
        p.lookups.take(client, NOT_FOUND_COST)
        return p.not_found(t, tn)
    for limiter, key, name in (
        (p.unlock_by_client, client, "unlock_client"),
        (p.unlock_by_number, tn, "unlock_number"),
    ):
        wait = limiter.take(key)
        if wait:
            p.metrics.throttled.labels(name).inc()
            error = t("throttled", minutes=max(1, int(wait // 60) + 1))
            rendered = p.track_html(s, t, unlocked=False, unlock_error=error)
            return p.html(rendered.body, 429, {"Retry-After": str(int(wait)), "Cache-Control": "no-store"})
    postcode = (form.get("postcode") or [""])[0]
    order = p.order(s.order_id)
    if order is not None and postcode_matches(p.settings.postcode_key, postcode, order.postcode_hmac):
        response = RedirectResponse(f"/track/{tn}?lang={t.lang}", status_code=303, headers=p.security_headers)
        response.raw_headers.append(p.unlock_cookie(tn, secure=request.url.scheme == "https"))
        return response
    p.metrics.unlock_failed.inc()
    rendered = p.track_html(s, t, unlocked=False, unlock_error=t("wrong_postcode"))
    return p.html(rendered.body, 403, {"Cache-Control": "no-store"})


async def track_json(request: Request) -> Response:
    p: Pages = request.app.state.pages
    tn = request.path_params["tracking_number"]
    client = client_key(request.scope)
    wait = p.lookups.take(client)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if wait:
        p.metrics.throttled.labels("lookup").inc()
        body = {"error": "rate_limited", "detail": f"too many lookups; retry after {int(wait)} s"}
        return Response(to_json(body), 429, {**headers, "Retry-After": str(int(wait))}, "application/json")
    s = p.shipment(tn)
    if s is None:
        p.lookups.take(client, NOT_FOUND_COST)
        body = {"error": "not_found", "detail": f"no shipment with tracking_number {tn!r}"}
        return Response(to_json(body), 404, headers, "application/json")
    age = p.data_age_s()
    out = {
        "tracking_number": s.tracking_number,
        "carrier": s.carrier,
        "status": s.status,
        "status_text": p.translators["en"].status(s.status),
        "eta": s.eta,
        "events": [
            {"occurred_at": e.occurred_at, "status": e.status, "message": e.message, "location": e.location}
            for e in reversed(s.events)
        ],
        "updated_at": s.updated_at,
        "version": s.version,
        "data_age_s": None if age == float("inf") else round(age, 3),
        "stale": age > p.settings.stale_after_s,
    }
    return Response(to_json(out), 200, {**headers, "Cache-Control": "private, max-age=5"}, "application/json")
