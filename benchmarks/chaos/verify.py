"""The checks of a chaos checkpoint: nothing acknowledged lost, no replica divergent, nothing
oversold, every outbox drained exactly once.

`check(...)` reads the origin's store, the edge's replica and its decision file (see
`benchmarks.chaos.stores`) once the load is paused and the edge has caught up, and returns a
`Findings`: each figure a count, each non-zero one with a few examples, so a failing run says
what to look at.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.chaos.book import Book
from benchmarks.chaos.stores import Query, bucket_sums, origin_snapshot, sqlite_snapshot, unsigned
from edge.decisions import Decision
from sync.entities import ChangeKinds, Line, Shipment, decode_entity

EXAMPLES = 5
_decision = msgspec.msgpack.Decoder(Decision)
_lines = msgspec.msgpack.Decoder(list[Line])


@dataclass
class Findings:
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, what: str, example: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        shown = self.examples.setdefault(what, [])
        if len(shown) < EXAMPLES:
            shown.append(example)

    def get(self, prefix: str) -> int:
        return sum(n for k, n in self.counts.items() if k.split(":")[0] == prefix)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "examples": self.examples}


@dataclass(frozen=True)
class Places:
    store_url: str | None
    origin_data: Path
    edge_data: Path
    buckets: tuple[str, ...]


def wait_drained(places: Places, timeout_s: float) -> int:
    """Wait until the edge's decision file has nothing left to send; the number still unsent."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite_snapshot(places.edge_data / "decisions.sqlite3") as q:
            ((n,),) = q("SELECT COUNT(*) FROM decision WHERE holds IN ('provisional', 'sending')")
        if n == 0 or time.monotonic() > deadline:
            return int(n)
        time.sleep(0.1)


def wait_converged(places: Places, f: Findings, timeout_s: float) -> bool:
    """Wait for a moment where the replica's cursor is the origin's head in every bucket, then
    compare three checksums: the origin's stored one, the origin's recomputed from its bodies,
    and the replica's recomputed from its bodies."""
    deadline = time.monotonic() + timeout_s
    while True:
        with (
            origin_snapshot(places.store_url, places.origin_data) as q,
            sqlite_snapshot(places.edge_data / "replica.sqlite3") as r,
        ):
            heads = {
                b: (int(h), unsigned(int(c))) for b, h, c in q("SELECT bucket, head, checksum FROM bucket")
            }
            ((epoch,),) = q("SELECT value FROM meta WHERE key = 'epoch'")
            cursors = {b: (e, int(s)) for b, e, s in r("SELECT bucket, epoch, seq FROM cursor")}
            if all(cursors.get(b) == (epoch, heads[b][0]) for b in places.buckets if b in heads):
                origin_sums = bucket_sums(q, places.buckets)
                replica_sums = bucket_sums(r, places.buckets, packed=True)
                break
        if time.monotonic() > deadline:
            f.add("divergent:not_converged", f"origin {epoch} heads {heads}, replica cursors {cursors}")
            return False
        time.sleep(0.1)
    for b in places.buckets:
        head, stored = heads[b]
        if origin_sums.get(b, 0) != stored:
            f.add("divergent:origin_checksum", f"{b}: stored {stored} != recomputed {origin_sums.get(b, 0)}")
        if replica_sums.get(b, 0) != stored:
            f.add("divergent:replica", f"{b} at {head}: replica {replica_sums.get(b, 0)} != origin {stored}")
    return True


def check(book: Book, places: Places, f: Findings) -> None:
    with book.lock:
        webhooks = list(book.webhooks)
        movements = dict(book.movements)
        refused_mv = set(book.movements_refused)
        anonymous = book.anonymous_sent
        holds = dict(book.holds)
        refused_holds = set(book.holds_refused)
        decisions = dict(book.decisions)
    with sqlite_snapshot(places.edge_data / "decisions.sqlite3") as e:
        kept = {
            did: _decision.decode(bytes(body)) for did, body in e("SELECT decision_id, body FROM decision")
        }
    with origin_snapshot(places.store_url, places.origin_data) as q:
        check_stock(q, f)
        check_webhooks(q, webhooks, f)
        check_movements(q, movements, refused_mv, anonymous, f)
        check_holds(q, holds, refused_holds, f)
        check_decisions(q, decisions, kept, f)


def check_stock(q: Query, f: Findings) -> None:
    """No balance below zero or over-reserved; every balance the sum of its movements; reserved
    the sum of live holds; the synced stock entity equal to the balance."""
    levels = {
        (s, k): (int(h), int(r))
        for s, k, h, r in q("SELECT site_id, sku, on_hand, reserved FROM stock_level")
    }
    sums = {
        (s, k): (int(h), int(r))
        for s, k, h, r in q(
            "SELECT site_id, sku, SUM(on_hand_delta), SUM(reserved_delta) FROM movement GROUP BY site_id, sku"
        )
    }
    held: dict[tuple[str, str], int] = defaultdict(int)
    for site, lines in q("SELECT site_id, lines FROM reservation WHERE state = 'held'"):
        for line in _lines.decode(bytes(lines)):
            held[(site, line.sku)] += line.qty
    entities = {}
    for (body,) in q("SELECT body FROM entity WHERE kind = 'stock'"):
        st = decode_entity(ChangeKinds.STOCK, bytes(body))
        entities[(st.site_id, st.sku)] = (st.on_hand, st.reserved)
    for at, (on_hand, reserved) in levels.items():
        where = f"{at[0]}/{at[1]} on_hand {on_hand} reserved {reserved}"
        if on_hand < 0 or reserved < 0 or reserved > on_hand:
            f.add("oversold", where)
        if sums.get(at, (0, 0)) != (on_hand, reserved):
            f.add("ledger:movements_sum", f"{where}: movements sum to {sums.get(at)}")
        if held.get(at, 0) != reserved:
            f.add("ledger:reserved_vs_holds", f"{where}: live holds hold {held.get(at, 0)}")
        if entities.get(at) != (on_hand, reserved):
            f.add("ledger:stock_entity", f"{where}: the synced stock entity says {entities.get(at)}")
    for at in sums.keys() - levels.keys():
        f.add("ledger:movements_without_stock", f"{at}: {sums[at]}")


def check_webhooks(q: Query, webhooks: list[Any], f: Findings) -> None:
    by_number: dict[str, list[Any]] = defaultdict(list)
    for w in webhooks:
        by_number[w.tracking_number].append(w)
    for tn, acked in by_number.items():
        rows = q("SELECT body FROM entity WHERE kind = 'shipment' AND key = ?", (tn,))
        if not rows:
            f.add("lost:webhook", f"{tn}: no shipment at all ({len(acked)} events acknowledged)")
            continue
        s: Shipment = decode_entity(ChangeKinds.SHIPMENT, bytes(rows[0][0]))
        have = {(e.occurred_at.astimezone(UTC), e.status, e.location) for e in s.events}
        for w in acked:
            if (w.occurred_at.astimezone(UTC), w.status, w.location) not in have:
                f.add("lost:webhook", f"{w.webhook_id} ({w.outcome}): {tn} {w.status} at {w.occurred_at}")


def check_movements(
    q: Query, movements: dict[str, Any], refused: set[str], anonymous: int, f: Findings
) -> None:
    rows = {
        mid: (site, sku, kind, int(dh))
        for mid, site, sku, kind, dh in q(
            "SELECT id, site_id, sku, kind, on_hand_delta FROM movement"
            " WHERE id LIKE 'chaos-mv-%' OR id LIKE 'op:%'"
        )
    }
    for mid, m in movements.items():
        if rows.get(mid) != (m.site_id, m.sku, m.kind, m.qty):
            f.add("lost:movement", f"{mid}: acknowledged {m}, ledger has {rows.get(mid)}")
    for mid in refused & rows.keys():
        f.add("duplicated:refused_movement_applied", f"{mid}: refused, yet in the ledger {rows[mid]}")
    extra = sum(1 for mid in rows if mid.startswith("op:")) - anonymous
    if extra > 0:
        f.counts["duplicated:movement"] = extra
        f.examples["duplicated:movement"] = [f"{extra} origin-named movements more than acknowledged"]


def check_holds(q: Query, holds: dict[str, Any], refused: set[str], f: Findings) -> None:
    rows = {
        rid: (oid, site, tuple(sorted((x.sku, x.qty) for x in _lines.decode(bytes(lines)))), state)
        for rid, oid, site, lines, state in q(
            "SELECT reservation_id, order_id, site_id, lines, state FROM reservation"
            " WHERE reservation_id LIKE 'chaos-h-%'"
        )
    }
    reserves = {
        rid: n
        for rid, n in q(
            "SELECT reservation_id, COUNT(*) FROM movement WHERE kind = 'reserve'"
            " AND reservation_id LIKE 'chaos-h-%' GROUP BY reservation_id"
        )
    }
    for rid, h in holds.items():
        row = rows.get(rid)
        if row is None or row[:3] != (h.order_id, h.site_id, h.lines):
            f.add("lost:hold", f"{rid}: acknowledged {h}, ledger has {row}")
            continue
        if reserves.get(rid, 0) != len(h.lines):
            f.add(
                "duplicated:hold_movements", f"{rid}: {reserves.get(rid, 0)} reserve movements for {h.lines}"
            )
        if h.settled and row[3] != h.settled:
            f.add("lost:settle", f"{rid}: acknowledged {h.settled}, now {row[3]}")
    for rid in refused & rows.keys():
        f.add("duplicated:refused_hold_made", f"{rid}: refused, yet held {rows[rid]}")


def check_decisions(q: Query, decisions: dict[str, Any], kept: dict[str, Decision], f: Findings) -> None:
    """Each acknowledged decision kept by the edge, its holds at the origin exactly once."""
    order_holds: dict[str, dict[str, tuple[str, tuple[tuple[str, int], ...], str]]] = defaultdict(dict)
    for rid, oid, site, lines, state in q(
        "SELECT reservation_id, order_id, site_id, lines, state FROM reservation"
        " WHERE owner IS NULL AND order_id LIKE 'chaos-ro-%'"
    ):
        order_holds[oid][rid] = (
            site,
            tuple(sorted((x.sku, x.qty) for x in _lines.decode(bytes(lines)))),
            state,
        )
    for oid, acked in decisions.items():
        d = kept.get(acked.decision_id)
        if d is None:
            f.add("lost:decision", f"{oid}: acknowledged {acked.decision_id}, not in decisions.sqlite3")
            continue
        at_origin = order_holds.get(oid, {})
        if d.holds == "unfilled":
            what = "broken_promise" if acked.reservation == "confirmed" else "provisional_unfilled"
            f.add(f"{what}:decision", f"{oid}: acknowledged {acked.reservation}, now unfilled")
        elif d.holds != "confirmed":
            f.add("outbox:unsent", f"{oid}: still {d.holds}")
        expected = {a.reservation_id for a in d.allocations if a.state == "held"}
        if d.holds == "confirmed":
            for a in d.allocations:
                got = at_origin.get(a.reservation_id)
                want = (a.site_id, tuple(sorted((x.sku, x.qty) for x in a.lines)))
                if a.state != "held" or got is None or got[:2] != want:
                    f.add("lost:decision_hold", f"{oid} {a.reservation_id} ({a.state}): origin has {got}")
        live_extra = [rid for rid, (_, _, st) in at_origin.items() if st == "held" and rid not in expected]
        if live_extra:
            failed = any(e.event == "release_failed" for e in d.history)
            what = "leaked:decision_hold" if failed else "duplicated:decision_hold"
            f.add(what, f"{oid}: held at the origin beyond its decision: {live_extra}")
