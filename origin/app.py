"""The origin service: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeVar

import msgspec
from anyio import to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from origin import feed, shipments
from origin.errors import InvalidInput, TooLarge, Unauthorized, WaypostError
from origin.settings import OriginSettings
from origin.signatures import TOLERANCE_S, verify
from origin.store import Store, open_store
from sync.wire import to_json

log = logging.getLogger("waypost.origin")
T = TypeVar("T")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(to_json(body), status_code=status, media_type="application/json")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "waypost_webhooks", "Tracking webhooks by outcome", ["outcome"], registry=self.registry
        )
        self.feed_waiting = Gauge(
            "waypost_feed_waiting", "Feed long-polls waiting for a commit", registry=self.registry
        )


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


async def tracking_webhook(request: Request) -> Response:
    settings: OriginSettings = request.app.state.settings
    store: Store = request.app.state.store
    metrics: Metrics = request.app.state.metrics
    body = await read_body(request, settings.max_webhook_bytes)
    try:
        webhook_id = verify(settings.webhook_secrets, request.headers, body, settings.clock())
    except Unauthorized:
        metrics.webhooks.labels("unauthorized").inc()
        raise
    event = decode_json(body, shipments.TrackingEvent)

    def apply() -> str:
        with store.transaction() as tx:
            if shipments.seen_webhook(tx, webhook_id):
                return "replay"
            return shipments.ingest_event(tx, event)

    outcome = await to_thread.run_sync(apply)
    metrics.webhooks.labels(outcome).inc()
    return json_response({"status": outcome}, 200 if outcome == "replay" else 202)


class NewShipment(msgspec.Struct, frozen=True, kw_only=True):
    tracking_number: shipments.TrackingNumber
    carrier: shipments.Carrier
    order_id: str
    site_id: str | None = None


async def create_shipment(request: Request) -> Response:
    require(request, "admin")
    store: Store = request.app.state.store
    req = decode_json(await read_body(request, 64 * 1024), NewShipment)
    if req.site_id is None:
        raise InvalidInput("site_id is required (the order's holds name no site)", field="site_id")

    def apply() -> dict[str, Any]:
        with store.transaction() as tx:
            row = tx.one("SELECT region FROM site_region WHERE site_id = ?", (req.site_id,))
            if row is None:
                raise InvalidInput(f"unknown site_id {req.site_id!r}", field="site_id")
            s = shipments.register_shipment(
                tx,
                tracking_number=req.tracking_number,
                carrier=req.carrier,
                order_id=req.order_id,
                site_id=req.site_id or "",
                region=row[0],
            )
            out: dict[str, Any] = msgspec.to_builtins(s)
            return out

    return json_response(await to_thread.run_sync(apply), 201)


async def sites(request: Request) -> Response:
    require(request, "edge")
    store: Store = request.app.state.store

    def read() -> list[Any]:
        with store.reader() as r:
            rows = r.execute("SELECT body FROM entity WHERE kind = 'site' ORDER BY key").fetchall()
        return [msgspec.msgpack.decode(bytes(b)) for (b,) in rows]

    return json_response(await to_thread.run_sync(read))


def edge_route(path: str, endpoint: Any) -> Route:
    async def handler(request: Request) -> Response:
        require(request, "edge")
        response: Response = await endpoint(request)
        return response

    return Route(path, handler, methods=["GET"], name=endpoint.__name__)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok", "epoch": request.app.state.epoch})


async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


async def waypost_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WaypostError)
    return json_response(exc.body(), exc.status)


async def not_found(request: Request, exc: Exception) -> Response:
    return json_response({"error": "not_found", "detail": f"no route for {request.url.path}"}, 404)


async def housekeeping(store: Store, interval_s: float) -> None:
    """Forget webhook ids that can no longer be replayed and drop stale parked events."""
    while True:
        await asyncio.sleep(interval_s)

        def sweep() -> None:
            with store.transaction() as tx:
                shipments.forget_webhook_ids(tx, timedelta(seconds=2 * TOLERANCE_S))
                shipments.drop_stale_parked(tx)

        try:
            await to_thread.run_sync(sweep)
        except Exception:  # keep sweeping: a failed sweep must not stop the service
            log.exception("housekeeping failed")


def create_app(settings: OriginSettings, store: Store | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.store = store or await to_thread.run_sync(
            open_store, settings.store_url, settings.data_dir, settings.clock
        )
        app.state.epoch = app.state.store.epoch()
        app.state.metrics = Metrics()
        watch = feed.HeadWatch()
        watch.bind(asyncio.get_running_loop())
        app.state.watch = watch
        app.state.store.on_commit(watch.committed)
        sweeper = asyncio.create_task(housekeeping(app.state.store, 60.0))
        try:
            yield
        finally:
            sweeper.cancel()
            if store is None:
                app.state.store.close()

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/v1/webhooks/tracking", tracking_webhook, methods=["POST"]),
        Route("/v1/shipments", create_shipment, methods=["POST"]),
        Route("/v1/sites", sites),
        edge_route("/v1/feed/{bucket}", feed.feed),
        edge_route("/v1/snapshot/{bucket}", feed.snapshot),
        edge_route("/v1/buckets", feed.buckets),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={WaypostError: waypost_error, 404: not_found},
    )
