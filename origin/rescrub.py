"""Re-sanitizing what was stored before the sanitizer learned more (`SCRUB_VERSION`).

The origin runs `rescrub` once per sanitizer version, in the background from start-up (a big
store must not hold the service or one giant transaction): it walks the shipments in key order,
`BATCH` per transaction, and rewrites each one whose timeline the sanitizer now changes, masking
its order's own address too. A rewrite is an ordinary shipment update (`Tx.put`, version + 1,
`updated_at` kept: nothing new happened to the parcel), so edges receive the scrubbed body
through the change log like any other.

What edges were sent before is still in the change log, and an edge catching up from an old
cursor would read it again. So once the walk has rewritten something in a bucket, that bucket's
log is truncated up to its head as the walk began — exactly what compaction does — and an edge
behind that point re-bootstraps from a snapshot, which holds only scrubbed bodies. (A CDN that
cached those immutable pages keeps them until purged.)

Parked events (no shipment yet) are scrubbed with the generic patterns. The version is recorded
in `meta` (`scrub_version`) when everything is done; an interrupted run starts again, and the
rewrite is idempotent. Several origin processes may run it at once: each rewrite re-reads its
shipment under the row lock the webhook path takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from origin.orders import order_address
from origin.pii import Keyring
from origin.sanitize import SCRUB_VERSION
from origin.shipments import ParkedEvent, sanitized, sanitized_events
from origin.store import Store, Tx
from sync.entities import ChangeKinds, Shipment, decode_entity, encode_entity

log = logging.getLogger("waypost.origin.rescrub")

BATCH = 500
META_KEY = "scrub_version"
_parked_encoder = msgspec.msgpack.Encoder()
_parked_decoder = msgspec.msgpack.Decoder(ParkedEvent)


@dataclass
class Rescrubbed:
    shipments: int = 0
    parked: int = 0
    truncated: dict[str, int] | None = None


def scrub_version(tx: Tx) -> int:
    row = tx.one("SELECT value FROM meta WHERE key = ?", (META_KEY,))
    return int(row[0]) if row else 0


def record_version(tx: Tx, version: int = SCRUB_VERSION) -> None:
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (META_KEY, str(version)),
    )


def mark_fresh_store(tx: Tx) -> None:
    """A store with no shipments yet has nothing to re-scrub: everything written from now on
    passes today's sanitizer (seeding calls this, so a fresh world never pays the walk)."""
    if tx.one("SELECT value FROM meta WHERE key = ?", (META_KEY,)) is not None:
        return
    if tx.one("SELECT 1 FROM entity WHERE kind = ? LIMIT 1", (ChangeKinds.SHIPMENT,)) is None:
        record_version(tx)


def rescrubbed(tx: Tx, shipment: Shipment, keyring: Keyring | None) -> Shipment | None:
    """The shipment with today's sanitizer over its timeline, or None when nothing changes."""
    events = sanitized_events(shipment, order_address(tx, shipment.order_id, keyring))
    if events == shipment.events:
        return None
    return msgspec.structs.replace(shipment, events=events, version=shipment.version + 1)


def _shipments_after(
    store: Store, keyring: Keyring | None, after: str, limit: int, heads: dict[str, int], out: Rescrubbed
) -> str | None:
    """Rewrite one batch of shipments after key `after`; the last key seen (None: no more)."""
    with store.transaction() as tx:
        rows = tx.execute(
            "SELECT key, body FROM entity WHERE kind = ? AND key > ? ORDER BY key LIMIT ?",
            (ChangeKinds.SHIPMENT, after, limit),
        ).fetchall()
        for key, body in rows:
            if rescrubbed(tx, decode_entity(ChangeKinds.SHIPMENT, bytes(body)), keyring) is None:
                continue
            found = tx.get(ChangeKinds.SHIPMENT, key, for_update=True)  # the latest, locked
            if found is None:
                continue
            new = rescrubbed(tx, decode_entity(ChangeKinds.SHIPMENT, found[1]), keyring)
            if new is None:
                continue
            if found[0] not in heads:
                row = tx.one("SELECT head FROM bucket WHERE bucket = ?", (found[0],))
                heads[found[0]] = int(row[0]) if row else 0
            tx.put(found[0], ChangeKinds.SHIPMENT, key, encode_entity(new))
            out.shipments += 1
    return str(rows[-1][0]) if len(rows) == limit else None


def _parked_after(store: Store, after: str, limit: int, out: Rescrubbed) -> str | None:
    """Re-sanitize the parked events of one batch of tracking numbers."""
    with store.transaction() as tx:
        numbers = [
            str(r[0])
            for r in tx.execute(
                "SELECT DISTINCT tracking_number FROM parked_event WHERE tracking_number > ?"
                " ORDER BY tracking_number LIMIT ?",
                (after, limit),
            ).fetchall()
        ]
        for tn in numbers:
            tx.get(ChangeKinds.SHIPMENT, tn, for_update=True)  # the lock parking a new event takes
            rows = tx.execute(
                "SELECT carrier, event, received_at FROM parked_event WHERE tracking_number = ?", (tn,)
            ).fetchall()
            parked = [_parked_decoder.decode(bytes(blob)) for _, blob, _ in rows]
            scrubbed = [msgspec.structs.replace(p, event=sanitized(p.event)) for p in parked]
            if scrubbed == parked:
                continue
            tx.execute("DELETE FROM parked_event WHERE tracking_number = ?", (tn,))
            tx.executemany(
                "INSERT INTO parked_event (tracking_number, carrier, event, received_at) VALUES (?, ?, ?, ?)",
                [
                    (tn, carrier, _parked_encoder.encode(p), at)
                    for (carrier, _, at), p in zip(rows, scrubbed, strict=True)
                ],
            )
            out.parked += len(rows)
    return numbers[-1] if len(numbers) == limit else None


def _forget_history(store: Store, heads: dict[str, int]) -> dict[str, int]:
    """Truncate each bucket's log up to `heads` (what edges were sent before the rewrite)."""
    with store.transaction() as tx:
        for bucket, upto in heads.items():
            tx.execute("DELETE FROM change WHERE bucket = ? AND seq <= ?", (bucket, upto))
            tx.execute(  # never lower it, as compaction never does
                "UPDATE bucket SET watermark = ? WHERE bucket = ? AND watermark < ?", (upto, bucket, upto)
            )
    return heads


def rescrub(store: Store, keyring: Keyring | None, batch: int = BATCH) -> Rescrubbed | None:
    """Scrub what is stored with today's sanitizer, once per `SCRUB_VERSION` (None: done before);
    `keyring` opens each order's address, so the order's own street and postcode go too."""
    with store.reader() as r:
        if scrub_version(r) >= SCRUB_VERSION:
            return None
    out = Rescrubbed()
    heads: dict[str, int] = {}  # bucket → its head before the first rewrite in it
    after: str | None = ""
    while after is not None:
        after = _shipments_after(store, keyring, after, batch, heads, out)
    after = ""
    while after is not None:
        after = _parked_after(store, after, batch, out)
    out.truncated = _forget_history(store, heads) if heads else {}
    with store.transaction() as tx:
        record_version(tx)
    log.info(
        "re-scrubbed stored events (sanitizer version %s): %s shipments, %s parked events; log truncated %s",
        SCRUB_VERSION,
        out.shipments,
        out.parked,
        out.truncated,
    )
    return out
