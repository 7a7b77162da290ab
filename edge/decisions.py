"""Routing decisions as records, and the SQLite file that keeps them (the edge's outbox).

A decision is written before the edge answers, and again whenever its holds change: placed at
the origin (`confirmed`), kept to replay because the origin could not be reached
(`provisional`), or moved to other sites after the origin refused a replay. Its `history`
tells that story attempt by attempt; `GET /v1/decisions/{id}` shows the record as it is now.

One row per decision, keyed by `decision_id` and unique by `order_id`, the record itself as
MessagePack; its `holds` column is the outbox's to-do state: the decision's `holds`, or `sending`
for a confirmed decision with holds drawn from an allotment that the origin has not had yet.
The decision id is derived from the region and the order id, and each hold's reservation id
from the decision id and the attempt, so a request repeated — even after this file were lost —
asks the origin for the same holds under the same Idempotency-Keys.

Only rounded coordinates (two decimals, about a kilometre) ever reach this file.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from sync.entities import Line
from sync.inbound import normalize_times
from sync.walcheckpoint import WalCheckpointer, autocheckpoint_off

OrderId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Carrier = Literal["ups", "dhl", "dpd"]
Qty = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
# Reservation state of a decision, as the store sees it.
HoldsState = Literal["confirmed", "provisional", "unfilled"]
# What `score` measures: predicted p50 hours (a model decided) or kilometres (the fallback).
ScoreKind = Literal["p50_hours", "distance_km"]
# Per allocation: waiting to be placed, drawn from this edge's allotment (on its way to the
# origin), held at the origin, refused, or given back.
AllocationState = Literal["pending", "drawn", "held", "refused", "released"]


class Destination(msgspec.Struct, frozen=True, kw_only=True):
    """Where the order goes; other fields (city, postcode, …) are accepted and ignored."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class OrderLine(msgspec.Struct, frozen=True, kw_only=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    qty: Qty


class RouteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/route`'s body."""

    order_id: OrderId
    destination: Destination
    lines: Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=100)]
    carrier: Carrier = "dhl"
    placed_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        normalize_times(self, "placed_at")


class RoutedOrder(msgspec.Struct, frozen=True, kw_only=True):
    """What a decision keeps of its request: coordinates rounded to two decimals on receipt."""

    order_id: str
    lat: float
    lon: float
    lines: list[Line]
    carrier: Carrier
    placed_at: datetime


class Eta(msgspec.Struct, frozen=True):
    """Hours from placing the order to its delivery: 10th, 50th and 90th percentiles."""

    p10: float
    p50: float
    p90: float


class Candidate(msgspec.Struct, frozen=True):
    """A site that could fill at least one line, and its score (lower is better)."""

    site_id: str
    score: float


class Allocation(msgspec.Struct, kw_only=True):
    site_id: str
    lines: list[Line]
    reservation_id: str
    ttl_s: int
    state: AllocationState = "pending"
    allotment_id: str | None = None  # the allotment it was drawn from


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of a decision's history."""

    at: datetime
    event: str  # decided, placed, unreachable, refused, released, rerouted, unfilled, confirmed
    attempt: int
    site_id: str | None = None
    detail: str | None = None


class Decision(msgspec.Struct, kw_only=True):
    decision_id: str
    order: RoutedOrder
    attempt: int  # 1, then one more per re-route
    allocations: list[Allocation]
    eta: Eta | None
    score: float | None
    score_kind: ScoreKind | None
    model_version: str | None
    reasons: list[str]
    holds: HoldsState
    excluded: list[str]  # sites the origin refused, left out of re-routes
    created_at: datetime
    updated_at: datetime
    history: list[Event]
    candidates: list[Candidate] = msgspec.field(default_factory=list)

    def to_json(self, *, history: bool = False) -> dict[str, Any]:
        """The decision as the API shows it."""
        out: dict[str, Any] = {
            "decision_id": self.decision_id,
            "order_id": self.order.order_id,
            "allocations": [
                {
                    "site_id": a.site_id,
                    "lines": [{"sku": line.sku, "qty": line.qty} for line in a.lines],
                    "reservation_id": a.reservation_id,
                    "state": a.state,
                }
                for a in self.allocations
            ],
            "eta_hours": msgspec.to_builtins(self.eta) if self.eta else None,
            "score": self.score,
            "score_kind": self.score_kind,
            "model_version": self.model_version,
            "reservation": self.holds,
            "reasons": list(self.reasons),
            "attempt": self.attempt,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if history:
            out["candidates"] = msgspec.to_builtins(self.candidates)
            out["history"] = msgspec.to_builtins(self.history)
        return out


@dataclass(frozen=True)
class Plan:
    """What the planner chose: one or two (site, lines), and why."""

    allocations: list[tuple[str, list[Line]]]
    eta: Eta | None
    score: float | None
    score_kind: ScoreKind | None
    model_version: str | None
    reasons: list[str]
    candidates: list[Candidate]


def new_decision(region: str, order: RoutedOrder, plan: Plan, ttl_s: int, now: datetime) -> Decision:
    did = decision_id(region, order.order_id)
    d = Decision(
        decision_id=did,
        order=order,
        attempt=0,
        allocations=[],
        eta=None,
        score=None,
        score_kind=None,
        model_version=None,
        reasons=[],
        holds="provisional",
        excluded=[],
        created_at=now,
        updated_at=now,
        history=[],
    )
    adopt(d, plan, ttl_s, now)
    return d


def adopt(d: Decision, plan: Plan, ttl_s: int, now: datetime) -> None:
    """Make `plan` the decision's next attempt: new holds (new reservation ids) to place."""
    d.attempt += 1
    d.allocations = [
        Allocation(
            site_id=site, lines=lines, reservation_id=reservation_id(d.decision_id, d.attempt, i), ttl_s=ttl_s
        )
        for i, (site, lines) in enumerate(plan.allocations)
    ]
    d.eta, d.score, d.score_kind = plan.eta, plan.score, plan.score_kind
    d.model_version, d.reasons = plan.model_version, list(plan.reasons)
    d.candidates = list(plan.candidates)
    d.holds, d.updated_at = "provisional", now
    sites = ", ".join(a.site_id for a in d.allocations)
    d.history.append(
        Event(at=now, event="decided" if d.attempt == 1 else "rerouted", attempt=d.attempt, detail=sites)
    )


def decision_id(region: str, order_id: str) -> str:
    digest = hashlib.blake2b(f"{region}\x00{order_id}".encode(), digest_size=10).hexdigest()
    return f"dec_{digest}"


def reservation_id(decision: str, attempt: int, index: int) -> str:
    """The hold's id at the origin, and its Idempotency-Key (at most 64 characters)."""
    return f"{decision}.{attempt}.{index}"


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Decision)

SCHEMA = """
CREATE TABLE IF NOT EXISTS decision (
    decision_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    holds TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS decision_provisional ON decision (created_at) WHERE holds = 'provisional';
CREATE INDEX IF NOT EXISTS decision_sending ON decision (created_at) WHERE holds = 'sending';
"""


UPSERT = (
    "INSERT INTO decision (decision_id, order_id, holds, created_at, updated_at, body)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (decision_id) DO UPDATE SET"
    " holds = excluded.holds, updated_at = excluded.updated_at, body = excluded.body"
)


def _row(d: Decision) -> tuple[str, str, str, float, float, bytes]:
    """The decision's row for `UPSERT`."""
    return (
        d.decision_id,
        d.order.order_id,
        to_do(d),
        d.created_at.timestamp(),
        d.updated_at.timestamp(),
        _encoder.encode(d),
    )


def unsent(d: Decision) -> bool:
    """Whether the origin has yet to have some of the decision's holds (provisional, or drawn)."""
    return to_do(d) in ("provisional", "sending")


def to_do(d: Decision) -> str:
    """The `holds` column: what the outbox still has to do for the decision."""
    if d.holds == "confirmed" and any(a.state == "drawn" for a in d.allocations):
        return "sending"
    return d.holds


class DecisionStore:
    """Decisions in `decisions.sqlite3` (WAL), each written before the edge answers.

    Every commit survives the process being killed. A write that promises a replay (a
    provisional decision) is also fsynced (`durable=True`), so it survives the machine losing
    power; a confirmed one need not be: its holds are at the origin, and asking again derives
    the same reservation ids. Blocking: a read or an unsynced write takes tens of microseconds
    and runs on the event loop; an fsynced write takes milliseconds and callers run it in a
    worker thread. One connection writes and another reads, each behind its own lock.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._durable = False
        self._db.executescript(SCHEMA)
        # Saves run on the event loop: the WAL is copied back from a thread of its own, never
        # inside a save (see sync.walcheckpoint).
        self._lock = threading.Lock()
        autocheckpoint_off(self._db)
        self._wal = WalCheckpointer(path, self._lock)
        # Reads have a connection of their own: in WAL they never wait for a writer's fsync.
        self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._read_lock = threading.Lock()

    def close(self) -> None:
        self._wal.stop()
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._db.close()

    def save(self, d: Decision, *, durable: bool = False) -> None:
        with self._lock:
            if durable != self._durable:  # a statement of its own: only when it changes
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._db.execute(UPSERT, _row(d))

    def save_many(self, ds: list[Decision]) -> None:
        """Write several decisions in one transaction, not fsynced (see `save`)."""
        rows = [_row(d) for d in ds]
        with self._lock:
            if self._durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._durable = False
            self._db.execute("BEGIN")
            try:
                self._db.executemany(UPSERT, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, decision_id: str) -> Decision | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT body FROM decision WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        return None if row is None else _decoder.decode(row[0])

    def provisional(self) -> list[Decision]:
        """Decisions with holds the origin has not had yet (provisional, or drawn and sending),
        oldest first."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT created_at, body FROM decision WHERE holds = 'provisional'"
                " UNION ALL SELECT created_at, body FROM decision WHERE holds = 'sending'"
                " ORDER BY 1"
            ).fetchall()
        return [_decoder.decode(r[1]) for r in rows]

    def recent(self, since: float) -> list[Decision]:
        """Decisions changed since `since` (a timestamp): those whose holds may not have replicated."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT body FROM decision WHERE updated_at >= ? OR holds IN ('provisional', 'sending')",
                (since,),
            ).fetchall()
        return [_decoder.decode(r[0]) for r in rows]
