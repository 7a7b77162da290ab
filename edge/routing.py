"""Last-mile routing: `POST /v1/route` and `GET /v1/decisions/{decision_id}` (store token).

An order comes in, a decision goes out. Candidates are the region's sites with enough
available stock, where available is the replica's (`stock.available`, which already counts the
holds the origin replicated) minus this edge's own holds the replica does not show yet
(`OwnHolds`: queued provisional ones, and placed ones until they replicate). The
delivery-time model (canary or active, `ModelShelf.pick` by order id) predicts a p10/p50/p90
band for each candidate; the earliest p50 wins. A site's backlog, which the model reads, is
the number of held reservations at the site — the replica's plus this edge's own: the part of
the pick queue an edge can see (shipments waiting for pickup are not counted). Two sites only
when no single site has every line: `choose` keeps, for each first site, every line it can
fill and gives the rest to the best site that has all of them. With no model loaded, or a
model that fails, the nearest site with stock decides, `model_version` is null and the reasons
say so. Shadow models score the same candidates; whether they would have chosen the same
sites is counted (`waypost_shadow_decisions`), never used.

Exact coordinates are rounded to two decimals on receipt; only those reach the decision file.
The decision is kept and its holds placed by `edge.outbox`; the same order id again returns
the kept decision, whatever its state.

Errors are `RouteError`s: 400 (the body, naming the field; unknown sku), 401, 404, 409
`insufficient_stock` (no site, nor two, of the region can fill it), 413, 422 `order_changed`
(the order id was routed with other lines), 503 `not_ready` (no replica yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from edge.allotments import Allotments
from edge.decisions import (
    Candidate,
    Decision,
    DecisionStore,
    Eta,
    Plan,
    RoutedOrder,
    RouteRequest,
    ScoreKind,
    adopt,
    decision_id,
    new_decision,
)
from edge.inference import Loaded, ModelShelf
from edge.metrics import EdgeMetrics
from edge.outbox import Outbox, OwnHolds
from edge.readmodel import ReadModel, RegionStock, View
from edge.settings import EdgeSettings
from models.geo import haversine_km
from models.serving import DeliveryTimeModel, EtaBand
from sync import inbound
from sync.client import FeedClient
from sync.entities import ChangeKinds, Line, Site, decode_entity, stock_key
from sync.guard import bearer_matches
from sync.wire import to_json

log = logging.getLogger("waypost.edge.routing")

MAX_BODY = 64 * 1024
_request_decoder = msgspec.json.Decoder(RouteRequest)
Allocations = list[tuple[str, list[Line]]]


class RouteError(Exception):
    """A request the edge answers with a 4xx (or 503); `body()` is the JSON error."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


class HeldOrders(View):
    """site_id → held reservations in the replica (orders', not allotments): the backlog the
    delivery model reads."""

    kind = ChangeKinds.RESERVATION

    def __init__(self) -> None:
        self.by_site: dict[str, int] = {}

    def reset(self) -> None:
        self.by_site = {}

    def add(self, key: str, entity: Any) -> None:
        if entity.holds_an_order:
            self.by_site[entity.site_id] = self.by_site.get(entity.site_id, 0) + 1

    def remove(self, key: str, entity: Any) -> None:
        if entity.holds_an_order:
            self.by_site[entity.site_id] = self.by_site.get(entity.site_id, 0) - 1


def choose(
    lines: Sequence[Line], ranked: Sequence[str], cost: dict[str, float], fills: dict[str, set[str]]
) -> Allocations | None:
    """One site with every line (the best by `cost`), else the best pair, else None.

    `ranked` lists site ids best first; `fills[site]` holds the skus a site can fill. A pair
    is (a, b): a keeps every line it can fill, b — the best site that can fill the rest — gets
    the rest; the pair costs what its slower site costs.
    """
    skus = {line.sku for line in lines}
    for site in ranked:
        if skus <= fills[site]:
            return [(site, list(lines))]
    best: tuple[float, Allocations] | None = None
    for a in ranked:
        mine = [line for line in lines if line.sku in fills[a]]
        if not mine:
            continue
        rest = [line for line in lines if line.sku not in fills[a]]
        need = {line.sku for line in rest}
        b = next((s for s in ranked if s != a and need <= fills[s]), None)
        if b is None:
            continue
        pair_cost = max(cost[a], cost[b])
        if best is None or pair_cost < best[0]:
            best = (pair_cost, [(a, mine), (b, rest)])
    return None if best is None else best[1]


def _delivery(loaded: Loaded | None) -> DeliveryTimeModel | None:
    return loaded.model if loaded is not None and isinstance(loaded.model, DeliveryTimeModel) else None


@dataclass
class _OrderLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Router:
    def __init__(
        self,
        settings: EdgeSettings,
        model: ReadModel,
        shelf: ModelShelf,
        held: HeldOrders,
        stock: RegionStock,
        store: DecisionStore,
        client: FeedClient,
        metrics: EdgeMetrics,
        ready: Callable[[], bool],
        allotments: Allotments | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.shelf = shelf
        self.held = held
        self.stock = stock
        self.store = store
        self.metrics = metrics
        self.ready = ready
        self.global_bucket, self.region_bucket = settings.buckets
        self.own = OwnHolds(model, self.region_bucket)
        self.allotments = allotments
        self.outbox = Outbox(store, client, self.own, settings, metrics, self.replan, allotments)
        self._locks: dict[str, _OrderLock] = {}

    # The edge's view

    def sites(self, exclude: Collection[str] = ()) -> list[Site]:
        table = self.model.table(self.global_bucket, ChangeKinds.SITE)
        sites: list[Site] = [decode_entity(ChangeKinds.SITE, body) for body in list(table.values())]
        return sorted(
            (s for s in sites if s.region == self.settings.region and s.site_id not in exclude),
            key=lambda s: s.site_id,
        )

    def free(self, site_id: str, sku: str) -> int:
        """Units nobody holds: the replica's available minus what this edge has asked to hold
        that the replica does not show yet (orders' holds, and allotments)."""
        available = self.stock.at.get(stock_key(site_id, sku))
        if available is None:
            return 0
        asking = 0 if self.allotments is None else self.allotments.asking(site_id, sku)
        return max(available - self.own.units(site_id, sku) - asking, 0)

    def available(self, site_id: str, sku: str) -> int:
        """Units the edge may still promise: free ones, and those left in its allotments."""
        free = self.free(site_id, sku)
        return free if self.allotments is None else free + self.allotments.units(site_id, sku)

    def backlog(self, site_id: str) -> int:
        drawn = 0 if self.allotments is None else self.allotments.orders(site_id)
        return max(self.held.by_site.get(site_id, 0), 0) + self.own.orders(site_id) + drawn

    # Planning

    def plan(self, order: RoutedOrder, exclude: Collection[str] = ()) -> Plan | list[dict[str, Any]]:
        """The best plan from the current view, or the shortfall per line when there is none."""
        sites = self.sites(exclude)
        have = {
            s.site_id: {line.sku: self.available(s.site_id, line.sku) for line in order.lines} for s in sites
        }
        fills = {
            s.site_id: {line.sku for line in order.lines if have[s.site_id][line.sku] >= line.qty}
            for s in sites
        }
        useful = [s for s in sites if fills[s.site_id]]
        distance = {s.site_id: haversine_km(s.lat, s.lon, order.lat, order.lon) for s in useful}
        decider, shadows = self.shelf.pick(DeliveryTimeModel.NAME, order.order_id)
        reasons: list[str] = []
        bands: dict[str, EtaBand] | None = None
        model = _delivery(decider)
        if model is not None and useful:
            try:
                bands = self._bands(model, useful, order)
            except Exception as exc:  # onnxruntime's own errors: decide without the model
                log.exception("delivery_time %s failed", decider.version if decider else "?")
                reasons.append(
                    f"the delivery-time model failed ({type(exc).__name__}): nearest site with stock"
                )
        cost = {k: b.p50 for k, b in bands.items()} if bands is not None else distance
        ranked = sorted(cost, key=lambda k: (cost[k], distance[k], k))
        chosen = choose(order.lines, ranked, cost, fills)
        if chosen is None:
            return self._shortfall(order, exclude)
        if bands is not None and decider is not None:
            self._shadows(shadows, useful, order, fills, distance, chosen)
        return self._explain(order, chosen, ranked, cost, fills, bands, decider, reasons)

    def _shortfall(self, order: RoutedOrder, exclude: Collection[str] = ()) -> list[dict[str, Any]]:
        """Per line: what was asked, and the most any one site of the region can give."""
        sites = self.sites(exclude)
        return [
            {
                "sku": line.sku,
                "requested": line.qty,
                "available": max((self.available(s.site_id, line.sku) for s in sites), default=0),
            }
            for line in order.lines
        ]

    def _bands(self, model: DeliveryTimeModel, sites: list[Site], order: RoutedOrder) -> dict[str, EtaBand]:
        backlogs = [self.backlog(s.site_id) for s in sites]
        predicted = model.predict(sites, order.lat, order.lon, order.carrier, order.placed_at, backlogs)
        return {s.site_id: b for s, b in zip(sites, predicted, strict=True)}

    def _explain(
        self,
        order: RoutedOrder,
        chosen: Allocations,
        ranked: list[str],
        cost: dict[str, float],
        fills: dict[str, set[str]],
        bands: dict[str, EtaBand] | None,
        decider: Loaded | None,
        reasons: list[str],
    ) -> Plan:
        mine = [site for site, _ in chosen]
        if bands is not None and decider is not None:
            role = decider.release.rollout
            eta = Eta(*(max(getattr(bands[s], q) for s in mine) for q in ("p10", "p50", "p90")))
            first = bands[mine[0]]
            reasons.append(
                f"delivery_time {decider.version} ({role}) ranked {len(ranked)} sites with stock by "
                f"predicted delivery; {mine[0]}: p50 {first.p50:.1f} h "
                f"(p10–p90 {first.p10:.1f}–{first.p90:.1f} h)"
            )
            kind: ScoreKind = "p50_hours"
            version: str | None = decider.version
        else:
            eta, version, kind = None, None, "distance_km"
            if not reasons:
                reasons.append("no delivery-time model is loaded: the nearest site with stock decides")
            reasons.append(f"{mine[0]} is the nearest with stock, {cost[mine[0]]:.1f} km away")
        if len(chosen) == 2:
            parts = "; ".join(f"{site}: {', '.join(line.sku for line in lines)}" for site, lines in chosen)
            reasons.append(
                f"no single site of region {self.settings.region} has every line in stock: "
                f"split in two ({parts})"
            )
        else:
            skus = {line.sku for line in order.lines}
            others = [s for s in ranked if s not in mine and skus <= fills[s]]
            if others and bands is not None:
                reasons.append(f"next best {others[0]}: p50 {bands[others[0]].p50:.1f} h")
        score = round(max(cost[s] for s in mine), 3)
        candidates = [Candidate(s, round(cost[s], 3)) for s in ranked]
        return Plan(chosen, eta, score, kind, version, reasons, candidates)

    def _shadows(
        self,
        shadows: list[Loaded],
        sites: list[Site],
        order: RoutedOrder,
        fills: dict[str, set[str]],
        distance: dict[str, float],
        chosen: Allocations,
    ) -> None:
        """Score with each shadow and count whether it agrees; never changes the decision."""
        for shadow in shadows:
            model = _delivery(shadow)
            if model is None:
                continue
            try:
                cost = {k: b.p50 for k, b in self._bands(model, sites, order).items()}
            except Exception:
                log.exception("shadow delivery_time %s failed", shadow.version)
                continue
            ranked = sorted(cost, key=lambda k: (cost[k], distance[k], k))
            theirs = choose(order.lines, ranked, cost, fills)
            agreed = theirs is not None and sorted(s for s, _ in theirs) == sorted(s for s, _ in chosen)
            self.metrics.shadow_decisions.labels(
                shadow.release.name, shadow.version, "true" if agreed else "false"
            ).inc()

    def replan(self, d: Decision) -> Plan | None:
        """Route a refused decision again from the current view, without the refusing sites."""
        plan = self.plan(d.order, d.excluded)
        return plan if isinstance(plan, Plan) else None

    # Requests

    def _order(self, req: RouteRequest) -> RoutedOrder:
        seen: set[str] = set()
        for i, line in enumerate(req.lines):
            if self.model.get(self.global_bucket, ChangeKinds.PRODUCT, line.sku) is None:
                raise RouteError(
                    400, "unknown_sku", f"{line.sku!r} is not in the catalog - at `$.lines[{i}].sku`"
                )
            if line.sku in seen:
                raise RouteError(400, "invalid_body", f"{line.sku!r} appears twice - at `$.lines[{i}].sku`")
            seen.add(line.sku)
        placed_at = req.placed_at or datetime.fromtimestamp(self.settings.clock(), UTC)
        return RoutedOrder(
            order_id=req.order_id,
            lat=round(req.destination.lat, 2),
            lon=round(req.destination.lon, 2),
            lines=[Line(line.sku, line.qty) for line in req.lines],
            carrier=req.carrier,
            placed_at=placed_at.astimezone(UTC),
        )

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, order_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(order_id, _OrderLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[order_id]

    async def route(self, req: RouteRequest) -> tuple[Decision, bool]:
        """The order's decision, and whether it was made before (True) or just now."""
        if not self.ready():
            raise RouteError(503, "not_ready", "the edge has no replica of its region yet")
        order = self._order(req)
        async with self._one_at_a_time(order.order_id):
            did = decision_id(self.settings.region, order.order_id)
            kept = self.store.get(did)  # an indexed read of one row: microseconds
            if kept is not None:
                if sorted((x.sku, x.qty) for x in kept.order.lines) != sorted(
                    (x.sku, x.qty) for x in order.lines
                ):
                    raise RouteError(
                        422,
                        "order_changed",
                        f"order {order.order_id!r} was routed with other lines (decision {did})",
                        decision_id=did,
                    )
                if kept.holds != "unfilled":
                    return kept, True
            plan = self.plan(order)
            if not isinstance(plan, Plan):
                raise RouteError(
                    409,
                    "insufficient_stock",
                    f"no site of region {self.settings.region}, nor two together, can fill every line",
                    lines=plan,
                )
            now = datetime.fromtimestamp(self.settings.clock(), UTC)
            since = 1 if kept is None else kept.attempt + 1  # this round's first attempt
            if kept is None:
                d = new_decision(self.settings.region, order, plan, self.settings.hold_ttl_s, now)
            else:  # nothing is held for it: route it again, as the decision's next attempt
                d = kept
                d.order, d.excluded = order, []
                adopt(d, plan, self.settings.hold_ttl_s, now)
            d = await self.outbox.submit(d)
            if d.holds == "unfilled":  # the replica was behind: the origin refused every site
                refused = [e.site_id or "?" for e in d.history if e.event == "refused" and e.attempt >= since]
                raise RouteError(
                    409,
                    "insufficient_stock",
                    f"the origin refused the holds at {', '.join(refused)} and no other site "
                    f"of region {self.settings.region} can fill every line",
                    decision_id=did,
                    lines=self._shortfall(order),
                )
            return d, False


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        to_json(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _authorize(request: Request, token: str) -> None:
    if not bearer_matches(request, token):
        raise RouteError(
            401, "unauthorized", "this endpoint needs the store token as 'Authorization: Bearer …'"
        )


async def _read(request: Request) -> RouteRequest:
    try:
        return inbound.decode_json(await inbound.read_body(request, MAX_BODY), _request_decoder)
    except inbound.BadBody as exc:
        raise RouteError(exc.status, exc.code, exc.detail, headers=exc.headers()) from None


async def route(request: Request) -> Response:
    router: Router = request.app.state.router
    started = time.perf_counter()
    try:
        _authorize(request, router.settings.store_token)
        d, repeated = await router.route(await _read(request))
        outcome: str = "repeated" if repeated else d.holds
        response = _json(d.to_json(), headers={"Idempotency-Replayed": "true"} if repeated else None)
    except RouteError as exc:
        outcome = exc.code
        response = _json(exc.body(), exc.status, exc.headers)
    router.metrics.route_decisions.labels(outcome).inc()
    router.metrics.route_seconds.observe(time.perf_counter() - started)
    return response


async def decision(request: Request) -> Response:
    router: Router = request.app.state.router
    try:
        _authorize(request, router.settings.store_token)
    except RouteError as exc:
        return _json(exc.body(), exc.status)
    did = request.path_params["decision_id"]
    d = await to_thread.run_sync(router.store.get, did)
    if d is None:
        return _json({"error": "not_found", "detail": f"no decision {did!r}"}, 404)
    return _json(d.to_json(history=True))
