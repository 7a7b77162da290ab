"""The edge service: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge import pages, routing
from edge.allotments import Allotments, edge_id
from edge.decisions import DecisionStore
from edge.follower import BucketFollower, settle_heap
from edge.inference import ModelShelf
from edge.insights import Insights
from edge.metrics import EdgeMetrics
from edge.readmodel import CustomerOrders, HeldAtSite, ReadModel, RegionStock
from edge.settings import EdgeSettings
from edge.shedding import Admission, LoopLag, ShedLoad
from edge.trackpage import FrontDoor, TrackPage
from sync.client import FeedClient
from sync.guard import NO_ROUTE_HANDLERS, RequestGuard, operator_refusal
from sync.replica import Replica
from sync.wire import to_json

log = logging.getLogger("waypost.edge")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(to_json(body), status_code=status, media_type="application/json")


async def favicon(request: Request) -> Response:
    return Response(status_code=204, headers={"Cache-Control": "public, max-age=86400"})


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 once the replica is bootstrapped and the model releases it lists were tried once
    (loaded, or refused, or unreachable), so the first decisions do not fall back by accident."""
    followers: list[BucketFollower] = request.app.state.followers
    shelf: ModelShelf = request.app.state.shelf
    replica = all(f.status.ready for f in followers)
    models = replica and shelf.settled()
    return json_response(
        {"ready": models, "buckets": {f.bucket: f.status.ready for f in followers}, "models": models},
        200 if models else 503,
    )


async def sync_status(request: Request) -> Response:
    if (refusal := operator_refusal(request, request.app.state.settings.operator_token)) is not None:
        return refusal
    followers: list[BucketFollower] = request.app.state.followers
    now = request.app.state.settings.clock()
    out = []
    for f in followers:
        st = f.status
        out.append(
            {
                "bucket": st.bucket,
                "epoch": st.epoch,
                "cursor": st.cursor,
                "head": st.head,
                "lag_changes": max(st.head - st.cursor, 0),
                "lag_s": round(now - st.synced_at, 3) if st.synced_at else None,
                "checksum_ok": st.checksum_ok,
                "snapshots": st.snapshots,
                "rebootstraps": st.rebootstraps,
                "refused_pages": st.refused_pages,
                "pages": st.pages,
                "changes": st.changes,
                "ready": st.ready,
                "last_error": st.last_error,
            }
        )
    shelf: ModelShelf = request.app.state.shelf
    body: dict[str, Any] = {
        "region": request.app.state.settings.region,
        "buckets": out,
        "models": shelf.status(),
    }
    allotments: Allotments | None = request.app.state.router.allotments
    if allotments is not None:
        body["allotments"] = allotments.status()
    return json_response(body)


async def metrics(request: Request) -> Response:
    if (refusal := operator_refusal(request, request.app.state.settings.operator_token)) is not None:
        return refusal
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: EdgeSettings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        replica = Replica(settings.data_dir / "replica.sqlite3")
        customers, stock, held = CustomerOrders(), RegionStock(), HeldAtSite()
        held_orders = routing.HeldOrders()
        model = ReadModel([customers, stock, held, held_orders])
        client = FeedClient(settings.origin_url, settings.edge_token)
        allotments: Allotments | None = None
        if settings.allotments:
            owner = edge_id(settings.data_dir, settings.region)
            allotments = Allotments(settings, model, settings.buckets[1], owner)
            model.watch(allotments)
        followers = [
            BucketFollower(
                b,
                client,
                replica,
                model,
                limit=settings.feed_limit,
                wait_s=settings.feed_wait_s,
                batch_s=settings.feed_batch_s,
                clock=settings.clock,
                freeze_heap=settings.freeze_heap,
            )
            for b in settings.buckets
        ]
        shelf = ModelShelf(client, model, settings.buckets[0], settings.data_dir)
        followers[0].listeners.append(shelf.notify)
        for f in followers:
            await f.load_local()
        metrics = EdgeMetrics(followers, model, settings.clock, lag, admission, shelf)
        app.state.settings = settings
        app.state.model = model
        app.state.followers = followers
        app.state.shelf = shelf
        app.state.origin = client
        app.state.metrics = metrics
        insights = Insights(model, shelf, *settings.buckets, customers, stock, held)
        app.state.pages = pages.Pages(settings, model, followers, metrics, insights)
        decisions = DecisionStore(settings.data_dir / "decisions.sqlite3")
        router = routing.Router(
            settings,
            model,
            shelf,
            held_orders,
            stock,
            decisions,
            client,
            metrics,
            lambda: followers[1].status.ready,
            allotments,
        )
        await router.outbox.load()
        if settings.freeze_heap:
            settle_heap()  # what startup loaded lives as long as the process
        app.state.router = router
        tasks = [asyncio.create_task(f.run(), name=f"follow {f.bucket}") for f in followers]
        tasks.append(asyncio.create_task(lag.run(), name="loop lag"))
        tasks.append(asyncio.create_task(shelf.run(), name="models"))
        tasks.append(asyncio.create_task(router.outbox.run(), name="outbox"))
        tasks.append(asyncio.create_task(router.outbox.send(), name="outbox sender"))
        if allotments is not None:
            refill = allotments.run(client, router.free, metrics)
            tasks.append(asyncio.create_task(refill, name="allotments"))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()
            replica.close()
            decisions.close()

    track_page = TrackPage()
    routes = [
        Route("/healthz", healthz),
        Route("/favicon.ico", favicon),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/sync/status", sync_status),
        Route("/track/{tracking_number}", track_page, methods=["GET"]),
        Route("/track/{tracking_number}/unlock", pages.unlock, methods=["POST"]),
        Route("/v1/track/{tracking_number}", pages.track_json),
        Route("/v1/route", routing.route, methods=["POST"]),
        Route("/v1/decisions/{decision_id}", routing.decision),
    ]
    lag = LoopLag()
    admission = Admission(target_s=settings.shed_target_s)
    middleware = [
        Middleware(RequestGuard, logger=log),
        Middleware(
            ShedLoad,
            admission=admission,
            max_inflight=settings.max_inflight,
        ),
        # Behind ShedLoad, so the tracking page is shed too; see edge/trackpage.py.
        Middleware(FrontDoor, page=track_page),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=dict(NO_ROUTE_HANDLERS),
    )
    app.state.admission = admission  # the server refuses by it before a request queues (sync.server)
    return app
