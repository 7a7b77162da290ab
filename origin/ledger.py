"""The inventory ledger: immutable movements, balances that never go negative, two-phase holds.

Modelled on TigerBeetle's two-phase transfers. Every change to a stock level is a movement with
an id; a movement applied twice is applied once. A hold (reservation) is a pending transfer:
`reserve` moves quantity into `reserved`; it is then posted (`commit`: the stock ships and
leaves `on_hand`), voided (`release`) or times out (`expire`) — exactly one of the three, decided
by a conditional state change so concurrent settlers cannot both win.

Balances change only through `_move`, a conditional UPDATE that refuses to take `available`
(on_hand - reserved) below zero; a CHECK constraint in the table is the second line of defence.
The synced `stock` and `reservation` entities are written in the same transaction.

**Allotments** are escrow (O'Neil's escrow transactions; the quotas a bank gives its branches):
an edge asks for a hold with no order (`allot`), and then draws its orders' holds from it
(`reserve(..., allotment_id=)`) — having promised them already, without waiting for this
round trip. A draw moves the units from the allotment to the order's hold (a partial release
of one, a reserve of the other: `stock.reserved` does not change) and is kept as an ordinary
hold. A draw the allotment cannot cover (it expired, was released, or has too little left) is
taken from available stock like any hold, and refused only when that is short too. What is
left of an allotment is released by its edge or expires like any hold; it cannot be committed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from origin.errors import Conflict, InvalidInput, NotFound
from origin.store import Tx
from sync.entities import (
    ChangeKinds,
    HoldState,
    Line,
    Reservation,
    Stock,
    encode_entity,
    region_bucket,
    stock_key,
)

MovementKind = Literal["receive", "adjust", "reserve", "release", "ship", "return", "expire"]
MAX_QTY = 100_000
MAX_LINES = 100
MAX_TTL_S = 7 * 86400

_lines_encoder = msgspec.msgpack.Encoder()
_lines_decoder = msgspec.msgpack.Decoder(list[Line])


class InsufficientStock(Conflict):
    code = "insufficient_stock"


def site_region(tx: Tx, site_id: str, field: str = "site_id") -> str:
    row = tx.one("SELECT region FROM site_region WHERE site_id = ?", (site_id,))
    if row is None:
        raise InvalidInput(f"unknown site_id {site_id!r}", code="unknown_site", field=field)
    return str(row[0])


def check_lines(tx: Tx, lines: list[Line], field: str = "lines") -> None:
    """Quantities positive and sane, no sku twice, every sku in the catalog."""
    if not lines:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(lines) > MAX_LINES:
        raise InvalidInput(f"{field} has {len(lines)} lines; at most {MAX_LINES}", field=field)
    seen: set[str] = set()
    for i, line in enumerate(lines):
        where = f"{field}[{i}]"
        if not 0 < line.qty <= MAX_QTY:
            raise InvalidInput(
                f"{where}.qty must be within 1..{MAX_QTY}, got {line.qty}", field=f"{where}.qty"
            )
        if line.sku in seen:
            raise InvalidInput(f"{where}.sku {line.sku!r} appears twice", field=f"{where}.sku")
        seen.add(line.sku)
        if tx.one("SELECT 1 FROM entity WHERE kind = 'product' AND key = ?", (line.sku,)) is None:
            raise InvalidInput(f"{where}.sku {line.sku!r} is not in the catalog", field=f"{where}.sku")


def stock_level(tx: Tx, site_id: str, sku: str) -> Stock:
    row = tx.one("SELECT on_hand, reserved FROM stock_level WHERE site_id = ? AND sku = ?", (site_id, sku))
    on_hand, reserved = (int(row[0]), int(row[1])) if row else (0, 0)
    return Stock(site_id=site_id, sku=sku, on_hand=on_hand, reserved=reserved)


def by_sku(lines: list[Line]) -> list[Line]:
    """Lines in sku order: every transaction locks stock rows in the same order, so two of
    them can never wait on each other (PostgreSQL would abort one as a deadlock)."""
    return sorted(lines, key=lambda line: line.sku)


def _move(
    tx: Tx,
    movement_id: str,
    site_id: str,
    sku: str,
    kind: MovementKind,
    on_hand: int,
    reserved: int,
    *,
    reservation_id: str | None = None,
    region: str | None = None,
) -> bool:
    """Apply one movement once. False when this id was applied before (a retry).

    Raises InsufficientStock when it would take available below zero; the caller's transaction
    then rolls back whole.
    """
    cur = tx.execute(
        "INSERT INTO movement (id, site_id, sku, kind, on_hand_delta, reserved_delta, reservation_id, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (movement_id, site_id, sku, kind, on_hand, reserved, reservation_id, tx.now),
    )
    if cur.rowcount == 0:
        return False
    tx.execute(
        "INSERT INTO stock_level (site_id, sku, on_hand, reserved) VALUES (?, ?, 0, 0)"
        " ON CONFLICT (site_id, sku) DO NOTHING",
        (site_id, sku),
    )
    # available' = (on_hand + dh) - (reserved + dr) >= 0, and neither balance below zero.
    row = tx.one(
        "UPDATE stock_level SET on_hand = on_hand + ?, reserved = reserved + ?"
        " WHERE site_id = ? AND sku = ?"
        " AND on_hand + ? >= 0 AND reserved + ? >= 0 AND (on_hand + ?) - (reserved + ?) >= 0"
        " RETURNING on_hand, reserved",
        (on_hand, reserved, site_id, sku, on_hand, reserved, on_hand, reserved),
    )
    if row is None:
        have = stock_level(tx, site_id, sku)
        raise InsufficientStock(
            f"{kind} of {abs(on_hand) or abs(reserved)} × {sku} at {site_id}:"
            f" only {have.available} available",
            available=[{"site_id": site_id, "sku": sku, "available": have.available}],
        )
    stock = Stock(site_id=site_id, sku=sku, on_hand=int(row[0]), reserved=int(row[1]))
    bucket = region_bucket(region or site_region(tx, site_id))
    tx.put(bucket, ChangeKinds.STOCK, stock_key(site_id, sku), encode_entity(stock))
    return True


def record_movement(tx: Tx, movement_id: str, site_id: str, sku: str, kind: MovementKind, qty: int) -> Stock:
    """An operator's movement: receive and return add stock; adjust may be negative."""
    region = site_region(tx, site_id)
    check_sku(tx, sku)
    if kind in ("receive", "return") and not 0 < qty <= MAX_QTY:
        raise InvalidInput(f"qty must be within 1..{MAX_QTY} for {kind}, got {qty}", field="qty")
    if kind == "adjust" and (qty == 0 or abs(qty) > MAX_QTY):
        raise InvalidInput(f"qty must be non-zero and within ±{MAX_QTY} for adjust, got {qty}", field="qty")
    _move(tx, movement_id, site_id, sku, kind, qty, 0, region=region)
    return stock_level(tx, site_id, sku)


def check_sku(tx: Tx, sku: str, field: str = "sku") -> None:
    if tx.one("SELECT 1 FROM entity WHERE kind = 'product' AND key = ?", (sku,)) is None:
        raise InvalidInput(f"{field} {sku!r} is not in the catalog", field=field)


# -- holds ------------------------------------------------------------------------------


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _put_hold(tx: Tx, region: str, hold: Reservation) -> None:
    tx.put(region_bucket(region), ChangeKinds.RESERVATION, hold.reservation_id, encode_entity(hold))


def get_hold(tx: Tx, reservation_id: str, *, for_update: bool = False) -> Reservation | None:
    lock = tx.for_update_clause if for_update else ""
    row = tx.one(
        "SELECT order_id, site_id, lines, state, expires_at, owner FROM reservation WHERE reservation_id = ?"
        + lock,
        (reservation_id,),
    )
    if row is None:
        return None
    return Reservation(
        reservation_id=reservation_id,
        order_id=row[0],
        site_id=row[1],
        lines=_lines_decoder.decode(bytes(row[2])),
        state=row[3],
        expires_at=_utc(row[4]),
        owner=row[5],
    )


def reserve(
    tx: Tx,
    reservation_id: str,
    order_id: str,
    site_id: str,
    lines: list[Line],
    ttl_s: int,
    *,
    allotment_id: str | None = None,
    owner: str | None = None,
) -> Reservation:
    """Hold all lines at one site for `ttl_s`, or refuse naming what is available.

    With `allotment_id`, the units come out of that allotment when it can cover every line,
    else out of available stock. With `owner` (and no order), the hold is an allotment.
    The same reservation id again returns the existing hold (whatever its state) when it asks
    for the same thing, and is refused when it asks for something else.
    """
    region = site_region(tx, site_id)
    check_lines(tx, lines)
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise InvalidInput(f"ttl_s must be within 1..{MAX_TTL_S}, got {ttl_s}", field="ttl_s")
    existing = get_hold(tx, reservation_id)
    if existing is not None:
        same = (existing.order_id, existing.site_id, existing.owner) == (order_id, site_id, owner) and (
            existing.lines == lines or owner is not None  # an allotment's lines shrink as it is drawn
        )
        if not same:
            raise Conflict(
                f"reservation_id {reservation_id!r} already holds other lines", code="reservation_exists"
            )
        return expire_if_due(tx, existing)
    if allotment_id is None or not _draw(tx, allotment_id, reservation_id, site_id, lines, region):
        _hold_available(tx, reservation_id, site_id, lines, region)
    expires = tx.now + ttl_s
    tx.execute(
        "INSERT INTO reservation"
        " (reservation_id, order_id, site_id, lines, state, expires_at, created_at, owner)"
        " VALUES (?, ?, ?, ?, 'held', ?, ?, ?)",
        (reservation_id, order_id, site_id, _lines_encoder.encode(lines), expires, tx.now, owner),
    )
    hold = Reservation(
        reservation_id=reservation_id,
        order_id=order_id,
        site_id=site_id,
        lines=lines,
        state="held",
        expires_at=_utc(expires),
        owner=owner,
    )
    _put_hold(tx, region, hold)
    return hold


def _hold_available(tx: Tx, reservation_id: str, site_id: str, lines: list[Line], region: str) -> None:
    short = []
    for line in lines:
        have = stock_level(tx, site_id, line.sku)
        if have.available < line.qty:
            short.append({"sku": line.sku, "requested": line.qty, "available": have.available})
    if short:
        raise InsufficientStock(
            f"site {site_id} cannot hold every line: "
            + ", ".join(f"{s['sku']} {s['available']}/{s['requested']}" for s in short),
            site_id=site_id,
            lines=short,
        )
    for line in by_sku(lines):
        _move(
            tx,
            f"{reservation_id}:reserve:{line.sku}",
            site_id,
            line.sku,
            "reserve",
            0,
            line.qty,
            reservation_id=reservation_id,
            region=region,
        )


def allot(tx: Tx, allotment_id: str, owner: str, site_id: str, lines: list[Line], ttl_s: int) -> Reservation:
    """Grant `owner` (an edge) a hold with no order, to draw its orders' holds from."""
    return reserve(tx, allotment_id, "", site_id, lines, ttl_s, owner=owner)


def _draw(
    tx: Tx, allotment_id: str, reservation_id: str, site_id: str, lines: list[Line], region: str
) -> bool:
    """Move `lines` from the allotment to the hold `reservation_id` (made next, by the caller).

    False, changing nothing, when the allotment cannot cover every line: the hold then takes
    available stock (or is refused) like any other. The units stay reserved throughout, so no
    balance changes: the movements (a release from the allotment, a reserve for the hold) are
    recorded and no stock row is touched. The allotment is written to the feed before the hold,
    so an edge never sees the hold without the allotment having shrunk.
    """
    # Locked: two draws at once (PostgreSQL) must not both subtract from the same lines.
    allotment = get_hold(tx, allotment_id, for_update=True)
    if allotment is None or allotment.owner is None or allotment.site_id != site_id:
        return False
    allotment = expire_if_due(tx, allotment)
    left = {line.sku: line.qty for line in allotment.lines}
    if allotment.state != "held" or any(left.get(line.sku, 0) < line.qty for line in lines):
        return False
    rows: list[tuple[Any, ...]] = []
    for line in by_sku(lines):
        rows.append((f"{reservation_id}:draw:{line.sku}", line.sku, "release", -line.qty, allotment_id))
        rows.append((f"{reservation_id}:reserve:{line.sku}", line.sku, "reserve", line.qty, reservation_id))
        left[line.sku] -= line.qty
    tx.executemany(
        "INSERT INTO movement (id, site_id, sku, kind, on_hand_delta, reserved_delta, reservation_id, at)"
        " VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
        [(mid, site_id, sku, kind, delta, rid, tx.now) for mid, sku, kind, delta, rid in rows],
    )
    remaining = [Line(sku, qty) for sku, qty in left.items() if qty > 0]
    tx.execute(
        "UPDATE reservation SET lines = ? WHERE reservation_id = ?",
        (_lines_encoder.encode(remaining), allotment_id),
    )
    _put_hold(tx, region, msgspec.structs.replace(allotment, lines=remaining))
    return True


_SETTLE: dict[HoldState, tuple[MovementKind, int, int]] = {
    # state → (movement kind, on_hand sign, reserved sign) per unit held
    "committed": ("ship", -1, -1),
    "released": ("release", 0, -1),
    "expired": ("expire", 0, -1),
}


def _settle(tx: Tx, hold: Reservation, to: HoldState) -> Reservation:
    """Move a held reservation to `to` exactly once; the loser of a race gets the winner's state."""
    row = tx.one(
        "UPDATE reservation SET state = ?, settled_at = ? WHERE reservation_id = ? AND state = 'held'"
        " RETURNING lines",
        (to, tx.now, hold.reservation_id),
    )
    if row is None:
        now = get_hold(tx, hold.reservation_id)
        assert now is not None
        return now
    # The lines as they are now: an allotment's may have shrunk since `hold` was read (a draw
    # committed in between, under PostgreSQL's READ COMMITTED).
    hold = msgspec.structs.replace(hold, lines=_lines_decoder.decode(bytes(row[0])))
    kind, dh, dr = _SETTLE[to]
    region = site_region(tx, hold.site_id)
    for line in by_sku(hold.lines):
        _move(
            tx,
            f"{hold.reservation_id}:{kind}:{line.sku}",
            hold.site_id,
            line.sku,
            kind,
            dh * line.qty,
            dr * line.qty,
            reservation_id=hold.reservation_id,
            region=region,
        )
    settled = msgspec.structs.replace(hold, state=to)
    _put_hold(tx, region, settled)
    return settled


def expire_if_due(tx: Tx, hold: Reservation) -> Reservation:
    if hold.state == "held" and hold.expires_at.timestamp() <= tx.now:
        return _settle(tx, hold, "expired")
    return hold


def _require(tx: Tx, reservation_id: str) -> Reservation:
    hold = get_hold(tx, reservation_id)
    if hold is None:
        raise NotFound(f"no reservation {reservation_id!r}", code="unknown_reservation")
    return expire_if_due(tx, hold)


def commit(tx: Tx, reservation_id: str) -> Reservation:
    hold = _require(tx, reservation_id)
    if hold.owner is not None:
        raise Conflict(
            f"reservation {reservation_id!r} is an allotment of {hold.owner}: only holds drawn"
            " from it can be committed",
            code="hold_allotment",
        )
    if hold.state == "held":
        return _settle(tx, hold, "committed")
    if hold.state != "committed":
        raise Conflict(
            f"reservation {reservation_id!r} is {hold.state}; it cannot be committed",
            code=f"hold_{hold.state}",
            state=hold.state,
        )
    return hold


def release(tx: Tx, reservation_id: str) -> Reservation:
    hold = _require(tx, reservation_id)
    if hold.state == "held":
        return _settle(tx, hold, "released")
    if hold.state == "committed":
        raise Conflict(
            f"reservation {reservation_id!r} is committed; it cannot be released",
            code="hold_committed",
            state=hold.state,
        )
    return hold  # released or expired: the stock is already back


def read_hold(tx: Tx, reservation_id: str) -> Reservation:
    return _require(tx, reservation_id)


def due_holds(tx: Tx, limit: int = 500) -> list[str]:
    """Ids of holds whose time is up, oldest first (the sweep expires each in its own transaction)."""
    rows = tx.execute(
        "SELECT reservation_id FROM reservation WHERE state = 'held' AND expires_at <= ?"
        " ORDER BY expires_at LIMIT ?",
        (tx.now, limit),
    ).fetchall()
    return [str(rid) for (rid,) in rows]


def expire_due(tx: Tx, limit: int = 500) -> int:
    """Expire holds whose time is up in this transaction; returns how many."""
    n = 0
    for rid in due_holds(tx, limit):
        hold = get_hold(tx, rid)
        if hold is not None and expire_if_due(tx, hold).state == "expired":
            n += 1
    return n


def live_holds(tx: Tx, order_id: str) -> list[Reservation]:
    rows = tx.execute(
        "SELECT reservation_id FROM reservation WHERE order_id = ? AND state = 'held' ORDER BY created_at",
        (order_id,),
    ).fetchall()
    holds = [get_hold(tx, rid) for (rid,) in rows]
    return [h for h in (expire_if_due(tx, h) for h in holds if h is not None) if h.state == "held"]


def ship_without_hold(tx: Tx, order_id: str, site_id: str, lines: list[Line]) -> None:
    """Ship an order's lines straight from a site's available stock (no hold was taken)."""
    region = site_region(tx, site_id)
    short = []
    for line in lines:
        have = stock_level(tx, site_id, line.sku)
        if have.available < line.qty:
            short.append({"sku": line.sku, "requested": line.qty, "available": have.available})
    if short:
        raise InsufficientStock(
            f"site {site_id} cannot ship every line of {order_id}", site_id=site_id, lines=short
        )
    for line in by_sku(lines):
        _move(
            tx,
            f"{order_id}:ship:{site_id}:{line.sku}",
            site_id,
            line.sku,
            "ship",
            -line.qty,
            0,
            region=region,
        )


def hold_json(hold: Reservation) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(hold)
    return out


def receive(tx: Tx, movement_id: str, site_id: str, sku: str, qty: int, region: str) -> None:
    """Book received stock (seeding and imports: the caller has validated site and sku)."""
    if qty > 0:
        _move(tx, movement_id, site_id, sku, "receive", qty, 0, region=region)
