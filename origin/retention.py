"""How long the origin keeps an order's personal data, and erasing it.

An order's personal data is needed until its parcels have arrived and the return window has
passed. Each shipment's row in `order_shipment` records when it settled — the time of the event
that made it `delivered`, `returned` or `expired` (None while it is on its way). Once every
shipment of an order settled more than `WAYPOST_PII_RETAIN_DAYS` ago (default 30: the return
window after delivery) by the settings' clock, the housekeeping sweep erases the order's
personal data. `POST /v1/erasure` erases at once, by order or by customer.

Erasing replaces the sealed record with an empty one: the tokens are gone, not merely their key.
The order stays what routing and analytics need — region, lines, placed time, `customer_ref`,
and the published order (rounded coordinates, postcode district and hash), which never held
personal data.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from origin import pii
from origin.errors import InvalidInput, NotFound
from origin.http import decode_json, json_response, read_body, require
from origin.store import Store, Tx
from sync.entities import Shipment

SETTLED = frozenset({"delivered", "returned", "expired"})
BATCH = 500

Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


def settled_at(shipment: Shipment) -> float | None:
    """When the shipment settled: its latest event's time, if that made it settled."""
    if shipment.status not in SETTLED or not shipment.events:
        return None
    return shipment.events[-1].occurred_at.timestamp()


def track(tx: Tx, shipment: Shipment) -> None:
    """Record (or update) the shipment's order and settled time for the retention sweep."""
    tx.execute(
        "INSERT INTO order_shipment (tracking_number, order_id, settled_at) VALUES (?, ?, ?)"
        " ON CONFLICT (tracking_number) DO UPDATE SET settled_at = excluded.settled_at",
        (shipment.tracking_number, shipment.order_id, settled_at(shipment)),
    )


def status_changed(tx: Tx, before: Shipment, after: Shipment) -> None:
    """After an event merged: only a change into, out of or within the settled states is written."""
    if before.status in SETTLED or after.status in SETTLED:
        track(tx, after)


def erase(tx: Tx, order_ids: list[str]) -> list[str]:
    """Erase the personal data of `order_ids`; return those that held some (idempotent)."""
    erased: list[str] = []
    for order_id in order_ids:
        cur = tx.execute(
            "UPDATE customer_order SET pii = ?, erased_at = ? WHERE order_id = ? AND erased_at IS NULL",
            (pii.ERASED, tx.now, order_id),
        )
        if cur.rowcount:
            erased.append(order_id)
        tx.execute("DELETE FROM order_shipment WHERE order_id = ?", (order_id,))
    return erased


def due(tx: Tx, cutoff: float, limit: int = BATCH) -> list[str]:
    """Orders whose every shipment settled before `cutoff`."""
    rows = tx.execute(
        "SELECT DISTINCT s.order_id FROM order_shipment s WHERE s.settled_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM order_shipment u WHERE u.order_id = s.order_id"
        " AND (u.settled_at IS NULL OR u.settled_at >= ?)) LIMIT ?",
        (cutoff, cutoff, limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


def erase_due(store: Store, retain_days: float) -> int:
    """One sweep, a batch per transaction: erase what has been kept long enough. Returns how many."""
    n = 0
    while True:
        with store.transaction() as tx:
            batch = due(tx, tx.now - retain_days * 86400)
            n += len(erase(tx, batch))
        if len(batch) < BATCH:
            return n


class ErasureRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    order_id: Id | None = None
    customer_ref: Annotated[str, msgspec.Meta(pattern=r"^c_[0-9a-f]{20}$")] | None = None


async def erasure(request: Request) -> Response:
    """`POST /v1/erasure` (admin): `{"order_id"}` or `{"customer_ref"}` → 202, erased at once."""
    require(request, "admin")
    req = decode_json(await read_body(request, 4096), ErasureRequest)
    if (req.order_id is None) == (req.customer_ref is None):
        raise InvalidInput("give exactly one of order_id and customer_ref", field="$")
    store: Store = request.app.state.store

    def work() -> dict[str, object]:
        with store.transaction() as tx:
            if req.order_id is not None:
                rows = tx.execute(
                    "SELECT order_id FROM customer_order WHERE order_id = ?", (req.order_id,)
                ).fetchall()
                what = f"order {req.order_id!r}"
            else:
                rows = tx.execute(
                    "SELECT order_id FROM customer_order WHERE customer_ref = ? ORDER BY order_id",
                    (req.customer_ref,),
                ).fetchall()
                what = f"customer {req.customer_ref!r}"
            if not rows:
                raise NotFound(f"no orders of {what}", code="unknown_order")
            order_ids = [str(r[0]) for r in rows]
            erased = erase(tx, order_ids)
        return {"order_ids": order_ids, "erased": len(erased)}

    return json_response(await to_thread.run_sync(work), 202)
