"""HTTP endpoints of the ledger: orders, shipments, stock movements, holds."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from origin import idempotency, ledger, orders, shipments
from origin.errors import Conflict, InvalidInput, NotFound, WaypostError
from origin.http import decode_json, json_response, read_body, require
from origin.settings import OriginSettings
from origin.store import Store, Tx
from sync.entities import ChangeKinds, Line, Shipment, decode_entity

Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
MAX_BODY = 64 * 1024


class NewShipment(msgspec.Struct, frozen=True, kw_only=True):
    tracking_number: shipments.TrackingNumber
    carrier: shipments.Carrier
    order_id: Id
    site_id: str | None = None


class NewMovement(msgspec.Struct, frozen=True, kw_only=True):
    site_id: str
    sku: str
    kind: Literal["receive", "adjust", "return"]
    qty: int
    movement_id: Id | None = None


class NewHold(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: Id
    order_id: Id
    site_id: str
    lines: list[Line]
    ttl_s: int = 900
    allotment_id: Id | None = None  # take the units from this allotment when it can cover them


class NewHolds(msgspec.Struct, frozen=True, kw_only=True):
    holds: Annotated[list[NewHold], msgspec.Meta(min_length=1, max_length=100)]


class NewAllotment(msgspec.Struct, frozen=True, kw_only=True):
    allotment_id: Id
    owner: Id  # the edge that will draw from it
    site_id: str
    lines: list[Line]
    ttl_s: int = 900


async def idempotent(request: Request, body: bytes, work: Callable[[Tx], tuple[int, Any]]) -> Response:
    store: Store = request.app.state.store
    key = request.headers.get("idempotency-key")
    fp = idempotency.fingerprint(request.method, request.url.path, body)
    outcome = await idempotency.run(store, key, fp, work)
    headers = {"Idempotency-Replayed": "true"} if outcome.replayed else None
    return Response(outcome.body, outcome.status, headers=headers, media_type="application/json")


async def create_order(request: Request) -> Response:
    require(request, "admin")
    settings: OriginSettings = request.app.state.settings
    body = await read_body(request, MAX_BODY)
    order = decode_json(body, orders.NewOrder)

    def work(tx: Tx) -> tuple[int, Any]:
        keys = settings.privacy_keys()
        public = orders.create_order(tx, order, keys)
        return 201, msgspec.to_builtins(public)

    return await idempotent(request, body, work)


async def create_shipment(request: Request) -> Response:
    require(request, "admin")
    body = await read_body(request, MAX_BODY)
    req = decode_json(body, NewShipment)
    keyring = request.app.state.settings.pii_keyring

    def work(tx: Tx) -> tuple[int, Any]:
        found = tx.get(ChangeKinds.SHIPMENT, req.tracking_number)
        if found is not None:
            existing: Shipment = decode_entity(ChangeKinds.SHIPMENT, found[1])
            if existing.order_id != req.order_id:
                raise Conflict(
                    f"tracking_number {req.tracking_number!r} belongs to order {existing.order_id!r}",
                    code="tracking_number_taken",
                )
            return 200, msgspec.to_builtins(existing)
        holds = ledger.live_holds(tx, req.order_id)
        if req.site_id is not None:
            ledger.site_region(tx, req.site_id)
        if holds:
            for hold in holds:
                ledger.commit(tx, hold.reservation_id)
            site_id = req.site_id or holds[0].site_id
        else:
            known = orders.order_lines(tx, req.order_id)
            if known is None:
                raise NotFound(
                    f"no order {req.order_id!r} and no hold for it", code="unknown_order", field="order_id"
                )
            if req.site_id is None:
                raise Conflict(
                    f"order {req.order_id!r} has no live hold; give site_id to ship from its stock",
                    code="no_hold",
                    lines=msgspec.to_builtins(known[1]),
                )
            ledger.ship_without_hold(tx, req.order_id, req.site_id, known[1])
            site_id = req.site_id
        region = ledger.site_region(tx, site_id)
        s = shipments.register_shipment(
            tx,
            tracking_number=req.tracking_number,
            carrier=req.carrier,
            order_id=req.order_id,
            site_id=site_id,
            region=region,
            keyring=keyring,
        )
        return 201, msgspec.to_builtins(s)

    return await idempotent(request, body, work)


async def create_movement(request: Request) -> Response:
    require(request, "admin")
    body = await read_body(request, MAX_BODY)
    req = decode_json(body, NewMovement)

    def work(tx: Tx) -> tuple[int, Any]:
        movement_id = req.movement_id or f"op:{uuid.uuid4()}"
        stock = ledger.record_movement(tx, movement_id, req.site_id, req.sku, req.kind, req.qty)
        return 201, {**stock_json(stock), "movement_id": movement_id}

    return await idempotent(request, body, work)


def stock_json(stock: Any) -> dict[str, Any]:
    return {
        "site_id": stock.site_id,
        "sku": stock.sku,
        "on_hand": stock.on_hand,
        "reserved": stock.reserved,
        "available": stock.available,
    }


async def read_stock(request: Request) -> Response:
    require(request, "edge")
    store: Store = request.app.state.store
    site_id, sku = request.path_params["site_id"], request.path_params["sku"]

    def read() -> dict[str, Any]:
        with store.reader() as r:
            ledger.site_region(r, site_id)
            ledger.check_sku(r, sku)
            return stock_json(ledger.stock_level(r, site_id, sku))

    return json_response(await to_thread.run_sync(read))


def _place(tx: Tx, h: NewHold) -> dict[str, Any]:
    hold = ledger.reserve(
        tx, h.reservation_id, h.order_id, h.site_id, h.lines, h.ttl_s, allotment_id=h.allotment_id
    )
    return ledger.hold_json(hold)


async def create_hold(request: Request) -> Response:
    require(request, "edge")
    body = await read_body(request, MAX_BODY)
    req = decode_json(body, NewHold)

    def work(tx: Tx) -> tuple[int, Any]:
        return 201, _place(tx, req)

    return await idempotent(request, body, work)


async def create_holds(request: Request) -> Response:
    """Several holds in one transaction (an edge sending the holds it drew from its allotments).

    All or nothing: the first hold refused (409, 400, …) is answered with its error and its
    `reservation_id`, and none is made. Each hold is idempotent by its reservation id, so a batch
    sent again — or a hold of it sent alone since — returns the holds as they are.
    """
    require(request, "edge")
    body = await read_body(request, MAX_BODY * 4)
    req = decode_json(body, NewHolds)
    store: Store = request.app.state.store

    def work(tx: Tx) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        # Allotments in one order in every transaction, so two batches never wait on each other.
        for h in sorted(req.holds, key=lambda h: h.allotment_id or ""):
            try:
                out[h.reservation_id] = _place(tx, h)
            except WaypostError as exc:
                exc.extra["reservation_id"] = h.reservation_id
                raise
        return [out[h.reservation_id] for h in req.holds]

    return json_response({"holds": await store.write(work)}, 201)


async def create_allotment(request: Request) -> Response:
    require(request, "edge")
    body = await read_body(request, MAX_BODY)
    req = decode_json(body, NewAllotment)

    def work(tx: Tx) -> tuple[int, Any]:
        hold = ledger.allot(tx, req.allotment_id, req.owner, req.site_id, req.lines, req.ttl_s)
        return 201, ledger.hold_json(hold)

    return await idempotent(request, body, work)


def settle_route(action: Callable[[Tx, str], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        require(request, "edge")
        store: Store = request.app.state.store
        rid = request.path_params["reservation_id"]
        return json_response(await store.write(lambda tx: ledger.hold_json(action(tx, rid))))

    return endpoint


async def read_hold(request: Request) -> Response:
    require(request, "edge")
    store: Store = request.app.state.store
    rid = request.path_params["reservation_id"]

    # A read may settle an overdue hold, so it runs as a (short) write.
    return json_response(await store.write(lambda tx: ledger.hold_json(ledger.read_hold(tx, rid))))


def expire_due(store: Store) -> int:
    """One sweep: each due hold expires in a transaction of its own, so a sweep holds the stock
    rows of one hold at a time and never deadlocks with settlements or other sweeps."""
    with store.reader() as r:
        due = ledger.due_holds(r)
    n = 0
    for rid in due:
        with store.transaction() as tx:
            if ledger.read_hold(tx, rid).state == "expired":
                n += 1
    return n


routes = [
    Route("/v1/orders", create_order, methods=["POST"]),
    Route("/v1/shipments", create_shipment, methods=["POST"]),
    Route("/v1/stock/movements", create_movement, methods=["POST"]),
    Route("/v1/stock/{site_id}/{sku}", read_stock),
    Route("/v1/reservations", create_hold, methods=["POST"]),
    Route("/v1/reservations/batch", create_holds, methods=["POST"]),
    Route("/v1/allotments", create_allotment, methods=["POST"]),
    Route("/v1/reservations/{reservation_id}", read_hold),
    Route("/v1/reservations/{reservation_id}/commit", settle_route(ledger.commit), methods=["POST"]),
    Route("/v1/reservations/{reservation_id}/release", settle_route(ledger.release), methods=["POST"]),
]

__all__ = ["InvalidInput", "expire_due", "routes"]
