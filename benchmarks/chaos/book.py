"""What the services acknowledged during a chaos run, and what each acknowledgement promised.

Every request the load sends is retried — same body, same Idempotency-Key, same webhook-id,
same order id — until it gets a definitive answer: 2xx (acknowledged: written here) or a 4xx
refusal (written as refused). A lost answer (connection reset by a kill, 5xx, 503 while a
service comes back) is a retry, counted, never a guess. So at a checkpoint nothing is in
doubt, and the checks in `benchmarks.chaos.verify` can demand exactly-once, not at-most.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AckedEvent:
    webhook_id: str
    tracking_number: str
    occurred_at: datetime
    status: str
    location: str
    outcome: str  # applied, duplicate, parked, replay


@dataclass(frozen=True)
class AckedMovement:
    movement_id: str
    site_id: str
    sku: str
    kind: str
    qty: int
    explicit_id: bool  # the request named the movement id (else the origin made one)


@dataclass(frozen=True)
class AckedHold:
    reservation_id: str
    order_id: str
    site_id: str
    lines: tuple[tuple[str, int], ...]
    settled: str | None = None  # the state a settle call answered with (committed, released, expired)


@dataclass(frozen=True)
class AckedDecision:
    order_id: str
    decision_id: str
    reservation: str  # confirmed or provisional, as answered
    allocations: tuple[tuple[str, str], ...]  # (site_id, reservation_id) as answered


@dataclass
class Book:
    lock: threading.Lock = field(default_factory=threading.Lock)
    webhooks: list[AckedEvent] = field(default_factory=list)
    movements: dict[str, AckedMovement] = field(default_factory=dict)
    movements_refused: set[str] = field(default_factory=set)  # explicit ids refused (409)
    anonymous_sent: int = 0  # movements sent without an id that were acknowledged
    holds: dict[str, AckedHold] = field(default_factory=dict)
    holds_refused: set[str] = field(default_factory=set)
    decisions: dict[str, AckedDecision] = field(default_factory=dict)
    routes_refused: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)  # "kind status" → count
    retries: Counter[str] = field(default_factory=Counter)  # kind → answers lost and asked again
    unresolved: Counter[str] = field(default_factory=Counter)  # gave up at the end without an answer

    def count(self, kind: str, status: int | str) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1

    def retry(self, kind: str) -> None:
        with self.lock:
            self.retries[kind] += 1

    def acked(self) -> dict[str, int]:
        with self.lock:
            return {
                "webhooks": len(self.webhooks),
                "movements": len(self.movements),
                "holds": len(self.holds),
                "settles": sum(1 for h in self.holds.values() if h.settled),
                "decisions": len(self.decisions),
                "decisions_provisional": sum(
                    1 for d in self.decisions.values() if d.reservation == "provisional"
                ),
            }

    def refused(self) -> dict[str, int]:
        with self.lock:
            return {
                "movements": len(self.movements_refused),
                "holds": len(self.holds_refused),
                "decisions": len(self.routes_refused),
            }

    def summary(self) -> dict[str, Any]:
        with self.lock:
            statuses = dict(sorted(self.statuses.items()))
            retries, unresolved = dict(self.retries), dict(self.unresolved)
        return {
            "acknowledged": self.acked(),
            "refused": self.refused(),
            "statuses": statuses,
            "retried": retries,
            "unresolved": unresolved,
        }
