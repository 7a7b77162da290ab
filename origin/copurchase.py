"""The co-purchase table, computed at the origin from order history and replicated in `global`.

Item-to-item co-occurrence with popularity damping plus "bought X, then Y within N days"
(`models.copurchase`). Customers are keyed by their pseudonymous ref (the `customer_ref` column),
so the computation opens no personal data — only a row from before that column, until
`python -m origin rekey` fills it. It runs at seeding and on a schedule; unchanged rows produce
no changes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from models.copurchase import Basket, copurchase_table
from origin import pii
from origin.orders import PrivacyKeys, customer_from_fields, customer_ref
from origin.store import Tx
from sync.entities import GLOBAL_BUCKET, ChangeKinds, CoPurchase, Line, Related, encode_entity

WINDOW_DAYS = 90
MAX_ORDERS = 200_000

_lines = msgspec.msgpack.Decoder(list[Line])


def refresh(tx: Tx, keys: PrivacyKeys) -> int:
    """Recompute the table from the last WINDOW_DAYS of orders; return the rows written."""
    rows = tx.execute(
        "SELECT order_id, customer_ref, lines, placed_at FROM customer_order WHERE placed_at >= ?"
        " ORDER BY placed_at DESC LIMIT ?",
        (tx.now - WINDOW_DAYS * 86400, MAX_ORDERS),
    ).fetchall()
    baskets = [
        Basket(
            ref or _legacy_ref(tx, keys, order_id),
            datetime.fromtimestamp(placed_at, UTC),
            tuple(line.sku for line in _lines.decode(bytes(lines))),
        )
        for order_id, ref, lines, placed_at in reversed(rows)
    ]
    table = copurchase_table(baskets)
    existing = {
        key
        for (key,) in tx.execute(
            "SELECT key FROM entity WHERE bucket = ? AND kind = ?", (GLOBAL_BUCKET, ChangeKinds.COPURCHASE)
        ).fetchall()
    }
    for sku, related in table.items():
        row = CoPurchase(sku=sku, related=[Related(s, round(score, 6)) for s, score in related])
        tx.put(GLOBAL_BUCKET, ChangeKinds.COPURCHASE, sku, encode_entity(row))
    for gone in existing - table.keys():
        tx.delete(GLOBAL_BUCKET, ChangeKinds.COPURCHASE, gone)
    return len(table)


def _legacy_ref(tx: Tx, keys: PrivacyKeys, order_id: str) -> str:
    row = tx.one("SELECT pii FROM customer_order WHERE order_id = ?", (order_id,))
    assert row is not None
    fields = pii.open_pii(keys.keyring, order_id, bytes(row[0]))
    return customer_ref(keys.pii_key, customer_from_fields(fields))
