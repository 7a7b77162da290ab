"""The origin service: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import msgspec
from anyio import to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from origin import (
    copurchase,
    feed,
    idempotency,
    ledger_routes,
    links,
    pii,
    registry,
    rescrub,
    retention,
    shipments,
)
from origin.aggregators import aftership_webhook, easypost_webhook
from origin.aggregators.ingest import AggregatorMetrics
from origin.errors import TooLarge, Unauthorized, WaypostError
from origin.http import decode_json, json_response, read_body, require
from origin.ingest import GroupCommit
from origin.settings import OriginSettings
from origin.signatures import TOLERANCE_S, verify
from origin.store import Store, open_store
from sync.guard import NO_ROUTE_HANDLERS, RequestGuard, operator_refusal

log = logging.getLogger("waypost.origin")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "waypost_webhooks", "Tracking webhooks by outcome", ["outcome"], registry=self.registry
        )
        self.aggregators = AggregatorMetrics(self.registry)
        self.feed_waiting = Gauge(
            "waypost_feed_waiting", "Feed long-polls waiting for a commit", registry=self.registry
        )


async def tracking_webhook(request: Request) -> Response:
    settings: OriginSettings = request.app.state.settings
    metrics: Metrics = request.app.state.metrics
    body = await read_body(request, settings.max_webhook_bytes)
    try:
        webhook_id = verify(settings.webhook_secrets, request.headers, body, settings.clock())
    except Unauthorized:
        metrics.webhooks.labels("unauthorized").inc()
        raise
    event = decode_json(body, shipments.TrackingEvent)

    writer: GroupCommit = request.app.state.writer
    outcome = await writer.submit(webhook_id, event)
    metrics.webhooks.labels(outcome).inc()
    return json_response({"status": outcome}, 200 if outcome == "replay" else 202)


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
    if (refusal := operator_refusal(request, request.app.state.settings.operator_token)) is not None:
        return refusal
    m: Metrics = request.app.state.metrics
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


async def waypost_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WaypostError)
    response = json_response(exc.body(), exc.status)
    if isinstance(exc, TooLarge):  # refused unread: close rather than read the rest
        response.headers["Connection"] = "close"
    return response


async def housekeeping(store: Store, settings: OriginSettings) -> None:
    """Forget webhook ids that can no longer be replayed, stale parked events, old idempotency keys;
    erase the personal data of orders settled longer ago than the retention setting."""
    while True:
        await asyncio.sleep(settings.housekeeping_interval_s)

        def sweep() -> None:
            with store.transaction() as tx:
                shipments.forget_webhook_ids(tx, timedelta(seconds=2 * TOLERANCE_S))
                shipments.drop_stale_parked(tx)
                idempotency.forget_old(tx)
            erased = retention.erase_due(store, settings.pii_retain_days)
            if erased:
                log.info("erased the personal data of %s settled orders", erased)

        try:
            await to_thread.run_sync(sweep)
        except Exception:  # keep sweeping: a failed sweep must not stop the service
            log.exception("housekeeping failed")


async def compact_periodically(store: Store, settings: OriginSettings) -> None:
    """Truncate the change log on a schedule; edges that fall behind it re-bootstrap."""
    while True:
        await asyncio.sleep(settings.compact_interval_s)
        cutoff = settings.clock() - settings.compact_keep_days * 86400
        try:
            marks = await to_thread.run_sync(store.compact, cutoff)
            log.info("compacted the change log: watermarks %s", marks)
        except Exception:  # try again next time: compaction is an optimisation
            log.exception("compaction failed")


async def refresh_copurchase(store: Store, settings: OriginSettings) -> None:
    """Recompute the co-purchase table from recent orders on a schedule."""
    keys = settings.privacy_keys()
    while True:
        await asyncio.sleep(settings.copurchase_interval_s)

        def work() -> int:
            with store.transaction() as tx:
                return copurchase.refresh(tx, keys)

        try:
            log.info("co-purchase table refreshed: %s products", await to_thread.run_sync(work))
        except Exception:  # the old table keeps serving; try again next time
            log.exception("co-purchase refresh failed")


async def rescrub_stored(store: Store, settings: OriginSettings) -> None:
    """Once per sanitizer version: scrub what was stored before it (`origin.rescrub`)."""
    try:
        await to_thread.run_sync(rescrub.rescrub, store, settings.pii_keyring)
    except Exception:  # the next start tries again; new events are scrubbed meanwhile
        log.exception("re-scrubbing stored events failed")


async def expire_holds(store: Store, interval_s: float) -> None:
    """Expire holds whose time (on the injected clock) is up; exactly once, whoever runs it."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            while await to_thread.run_sync(ledger_routes.expire_due, store):
                pass
        except Exception:  # keep expiring: one failed sweep must not stop the next
            log.exception("hold expiry failed")


def create_app(settings: OriginSettings, store: Store | None = None) -> Starlette:
    keyring = settings.pii_keyring
    assert keyring is not None, "the origin needs WAYPOST_PII_ENCRYPTION_KEYS (OriginSettings.from_env)"

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.store = store or await to_thread.run_sync(
            open_store, settings.store_url, settings.data_dir, settings.clock
        )
        app.state.epoch = app.state.store.epoch()
        await to_thread.run_sync(pii.check_keys, app.state.store, keyring)
        app.state.metrics = Metrics()
        watch = feed.HeadWatch()
        watch.bind(asyncio.get_running_loop())
        app.state.watch = watch
        app.state.store.on_commit(watch.committed)
        app.state.writer = GroupCommit(app.state.store, keyring=settings.pii_keyring)
        app.state.writer.start()
        if settings.freeze_heap:
            # What startup made lives as long as the process: keep full collections from
            # walking it (on the event loop: 15–28 ms pauses under the route benchmark).
            gc.collect()
            gc.freeze()
        tasks = [
            asyncio.create_task(housekeeping(app.state.store, settings)),
            asyncio.create_task(expire_holds(app.state.store, settings.expiry_interval_s)),
            asyncio.create_task(compact_periodically(app.state.store, settings)),
            asyncio.create_task(refresh_copurchase(app.state.store, settings)),
            asyncio.create_task(rescrub_stored(app.state.store, settings)),
        ]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await to_thread.run_sync(app.state.writer.stop)
            if store is None:
                app.state.store.close()

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/v1/webhooks/tracking", tracking_webhook, methods=["POST"]),
        Route("/v1/webhooks/easypost", easypost_webhook, methods=["POST"]),
        Route("/v1/webhooks/aftership", aftership_webhook, methods=["POST"]),
        *ledger_routes.routes,
        Route("/v1/links", links.create_link, methods=["POST"]),
        Route("/v1/erasure", retention.erasure, methods=["POST"]),
        Route("/v1/models", registry.create_release, methods=["POST"]),
        Route("/v1/models/{sha256}", registry.fetch_blob),
        Route("/v1/sites", sites),
        edge_route("/v1/feed/{bucket}", feed.feed),
        edge_route("/v1/snapshot/{bucket}", feed.snapshot),
        edge_route("/v1/buckets", feed.buckets),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestGuard, logger=log, refuse_nul=True)],
        lifespan=lifespan,
        exception_handlers={WaypostError: waypost_error, **NO_ROUTE_HANDLERS},
    )
