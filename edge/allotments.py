"""Allotments: stock the origin has set aside for this edge, so a decision need not wait for it.

An allotment is a hold with an owner and no order (`origin.ledger`, escrow). The edge asks for
one per site it routes to, sized to the demand it has seen there; a new decision whose lines
one allotment covers takes them from it here (`take`) and is answered `confirmed` at once — the
units were the edge's to promise — and `edge.outbox` sends the hold to the origin behind the
answer, naming the allotment, where the units move from the allotment to the order's hold. A
decision no allotment covers asks the origin for its hold before answering, as before.

What is left of an allotment is what the replica shows minus the draws sent or queued that the
replica does not show yet (the origin writes the shrunk allotment before the new hold, so the
replica never shows the hold without the shrink). Those unseen units are kept as counts, made
when a draw is taken and unmade when its hold arrives in the feed, so a decision reads what is
left of each allotment in a dict lookup however many draws are on their way.

Sizing, each `allotment_tick_s` (`refill_once`): demand per (site, sku) is an exponentially
decaying rate of units routed there (time constant `DEMAND_TAU_S`); the target is that rate over
`allotment_horizon_s`. Orders draw from a site's newest allotment. A site gets a new one —
covering every sku in demand there, so one allotment can fill a whole order — when it has none
to draw from, when its newest is half way to expiry, or when a sku in demand has used half of
what the newest held (or runs below half its target, when demand fell); the older ones, quiet
then, are given back. One ask and one release per round at most: each is a transaction of a
line per sku at the origin. The ask is capped so that this edge's allotments stay within
`allotment_share` of the site's free stock, so available stock (what recommendations and other
edges see) never drops to zero because of them; and a sku whose free stock would fall below two
targets gets none: scarce stock is arbitrated unit by unit at the origin, where no order is
turned away for units sitting in an allotment. An allotment is drawn from until
`allotment_margin_s` before it expires, so the holds drawn last reach the origin before it goes,
even across an outage that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.metrics import EdgeMetrics
from edge.readmodel import ReadModel, View
from edge.settings import EdgeSettings
from sync.client import AllotRequest, FeedClient, HoldRefused, OriginUnreachable
from sync.entities import ChangeKinds, Line

log = logging.getLogger("waypost.edge.allotments")

DEMAND_TAU_S = 15.0  # the demand rate forgets with this time constant
ASK_TIMEOUT_S = 5.0


def edge_id(data_dir: Path, region: str) -> str:
    """This edge's name as an allotments' owner: made once, kept in the data dir."""
    path = data_dir / "edge_id"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    name = f"{region}-{secrets.token_hex(4)}"[-40:]
    path.write_text(name + "\n")
    return name


@dataclass
class Allotment:
    site_id: str
    lines: dict[str, int]  # sku → units left, as the replica shows
    expires_at: float


class Allotments(View):
    """This edge's allotments as the replica shows them, its draws on them, and their refill."""

    kind = ChangeKinds.RESERVATION

    def __init__(self, settings: EdgeSettings, model: ReadModel, bucket: str, owner: str) -> None:
        self.settings = settings
        self.model = model
        self.bucket = bucket
        self.owner = owner
        self.mine: dict[str, Allotment] = {}
        self._draws: dict[str, dict[str, list[Line]]] = {}  # allotment → reservation → lines, unseen
        self._drawn_from: dict[str, str] = {}  # reservation → allotment, for the draws in `_draws`
        self._unseen: dict[str, dict[str, int]] = {}  # allotment → sku → units in `_draws`
        self._demand: dict[tuple[str, str], tuple[float, float]] = {}  # (site, sku) → (units/s, at)
        self._asking: dict[str, tuple[str, list[Line]]] = {}  # allotment → (site, lines) not yet seen
        self._releasing: set[str] = set()
        self._size: dict[str, dict[str, int]] = {}  # allotment → sku → units when first seen
        self._wake = asyncio.Event()

    # The replica's view (a ReadModel View of reservations)

    def reset(self) -> None:
        self.mine = {}

    def add(self, key: str, entity: Any) -> None:
        if key in self._drawn_from:  # a draw's hold reached the replica, after its allotment's shrink
            self._unrecord(key)
        if entity.owner == self.owner and entity.state == "held":
            lines = {line.sku: line.qty for line in entity.lines}
            self.mine[key] = Allotment(entity.site_id, lines, entity.expires_at.timestamp())
            self._size.setdefault(key, lines)

    def remove(self, key: str, entity: Any) -> None:
        self.mine.pop(key, None)

    # Drawing

    def _drawable(self, a: Allotment, now: float) -> bool:
        return a.expires_at - now > self.settings.allotment_margin_s

    def _open(self, site_id: str, now: float) -> list[str]:
        """The allotments at the site that may be drawn from: not near expiry, not being given back."""
        return [
            aid
            for aid, a in self.mine.items()
            if a.site_id == site_id and self._drawable(a, now) and aid not in self._releasing
        ]

    def _newest(self, site_id: str, now: float) -> str | None:
        return max(self._open(site_id, now), key=lambda aid: self.mine[aid].expires_at, default=None)

    def _record(self, allotment_id: str, reservation_id: str, lines: list[Line]) -> None:
        if reservation_id in self.model.table(self.bucket, ChangeKinds.RESERVATION):
            return  # the replica shows the hold, so its allotment's lines count the draw already
        self._unrecord(reservation_id)
        self._draws.setdefault(allotment_id, {})[reservation_id] = lines
        self._drawn_from[reservation_id] = allotment_id
        unseen = self._unseen.setdefault(allotment_id, {})
        for line in lines:
            unseen[line.sku] = unseen.get(line.sku, 0) + line.qty

    def _unrecord(self, reservation_id: str) -> None:
        allotment_id = self._drawn_from.pop(reservation_id, None)
        if allotment_id is None:
            return
        draws = self._draws[allotment_id]
        lines = draws.pop(reservation_id)
        if not draws:
            del self._draws[allotment_id], self._unseen[allotment_id]
            return
        unseen = self._unseen[allotment_id]
        for line in lines:
            unseen[line.sku] -= line.qty

    def _left(self, allotment_id: str, sku: str) -> int:
        a = self.mine.get(allotment_id)
        if a is None:
            return 0
        return a.lines.get(sku, 0) - self._unseen.get(allotment_id, {}).get(sku, 0)

    def left(self, allotment_id: str) -> dict[str, int]:
        """Units left to draw: the replica's, less the draws it does not show yet."""
        a = self.mine.get(allotment_id)
        if a is None:
            return {}
        return {
            sku: self._left(allotment_id, sku) for sku in a.lines.keys() | self._unseen.get(allotment_id, {})
        }

    def units(self, site_id: str, sku: str) -> int:
        """Units of `sku` this edge may still draw at `site_id`."""
        if not self.mine:
            return 0
        return sum(max(self._left(aid, sku), 0) for aid in self._open(site_id, self.settings.clock()))

    def take(self, site_id: str, lines: list[Line], reservation_id: str) -> str | None:
        """Draw `lines` from one allotment at the site: the newest that covers them (the older
        ones go quiet, so they can be given back)."""
        best: str | None = None
        for aid in self._open(site_id, self.settings.clock()):
            if all(self._left(aid, line.sku) >= line.qty for line in lines) and (
                best is None or self.mine[aid].expires_at > self.mine[best].expires_at
            ):
                best = aid
        if best is not None:
            self._record(best, reservation_id, lines)
        return best

    def note(self, allotment_id: str, reservation_id: str, lines: list[Line]) -> None:
        """A draw made before a restart, not yet at the origin."""
        self._record(allotment_id, reservation_id, lines)

    def forget(self, allotment_id: str, reservation_id: str) -> None:
        """A draw given up (its decision was re-routed): its units are the allotment's again."""
        if self._drawn_from.get(reservation_id) == allotment_id:
            self._unrecord(reservation_id)

    def asking(self, site_id: str, sku: str) -> int:
        """Units asked for in allotments the replica does not show yet: no longer free."""
        if not self._asking:
            return 0
        held = self.model.table(self.bucket, ChangeKinds.RESERVATION)
        for aid in [aid for aid in self._asking if aid in held]:
            del self._asking[aid]
        return sum(
            line.qty
            for site, lines in self._asking.values()
            if site == site_id
            for line in lines
            if line.sku == sku
        )

    def orders(self, site_id: str) -> int:
        """Draws at the site the replica does not show yet (part of the site's backlog)."""
        return sum(
            len(d) for aid, d in self._draws.items() if (a := self.mine.get(aid)) and a.site_id == site_id
        )

    def status(self) -> dict[str, Any]:
        """For `GET /v1/sync/status`: this edge's name and what is left to draw, per allotment."""
        now = self.settings.clock()
        return {
            "owner": self.owner,
            "held": [
                {
                    "allotment_id": aid,
                    "site_id": a.site_id,
                    "left": [
                        {"sku": sku, "qty": qty} for sku, qty in sorted(self.left(aid).items()) if qty > 0
                    ],
                    "expires_at": datetime.fromtimestamp(a.expires_at, UTC),
                    "drawable": self._drawable(a, now),
                }
                for aid, a in sorted(self.mine.items(), key=lambda kv: kv[1].expires_at)
            ],
        }

    # Demand and refill

    def demand(self, site_id: str, lines: list[Line]) -> None:
        """Count units routed to a site (drawn or not): what the next allotment is sized by."""
        now = self.settings.clock()
        for line in lines:
            rate, at = self._demand.get((site_id, line.sku), (0.0, now))
            decay = math.exp(-max(now - at, 0.0) / DEMAND_TAU_S)
            self._demand[(site_id, line.sku)] = (rate * decay + line.qty / DEMAND_TAU_S, now)

    def wake(self) -> None:
        self._wake.set()

    def targets(self, now: float) -> dict[str, dict[str, int]]:
        """site → sku → units an allotment there should hold, from the demand seen."""
        out: dict[str, dict[str, int]] = {}
        for (site, sku), (rate, at) in list(self._demand.items()):
            units = rate * math.exp(-max(now - at, 0.0) / DEMAND_TAU_S) * self.settings.allotment_horizon_s
            if units < 0.05:  # nobody has ordered it here for minutes
                del self._demand[(site, sku)]
                continue
            out.setdefault(site, {})[sku] = max(math.ceil(units), 1)
        return out

    def _wants(
        self, site: str, targets: dict[str, int], free: Callable[[str, str], int], now: float
    ) -> list[Line]:
        """The lines of a new allotment at `site`, or [] when the ones it has will do."""
        newest = self._newest(site, now)
        low = newest is None or self.mine[newest].expires_at - now < self.settings.allotment_ttl_s / 2
        newest_left = {} if newest is None else self.left(newest)
        size = {} if newest is None else self._size.get(newest, {})
        lines: list[Line] = []
        for sku, target in sorted(targets.items()):
            have = sum(max(self._left(aid, sku), 0) for aid, a in self.mine.items() if a.site_id == site)
            unheld = free(site, sku)
            ask = min(target, math.floor(self.settings.allotment_share * (unheld + have)) - have)
            if ask <= 0 or unheld - ask < 2 * target:  # scarce: the origin arbitrates every unit
                continue
            lines.append(Line(sku, ask))
            # Half of it drawn (or half of what demand asks now, when that is less): time for
            # the next one. Measured against its size, not the target, so that a demand still
            # rising does not ask for a new allotment every round.
            low = low or sku not in size or newest_left.get(sku, 0) < min(target, size[sku]) / 2
        return lines if low else []

    async def refill_once(
        self, client: FeedClient, free: Callable[[str, str], int], metrics: EdgeMetrics
    ) -> None:
        """Give back what is not drawn from any more; ask for what demand says is short."""
        now = self.settings.clock()
        ttl = self.settings.allotment_ttl_s
        # One release and one ask a round at most: each is a transaction of a line per sku at
        # the origin, and a burst of them would stall the origin's other requests.
        for aid, a in list(self.mine.items()):
            done = not self._drawable(a, now) or self._newest(a.site_id, now) != aid
            if done and not self._draws.get(aid) and aid not in self._releasing:
                self._releasing.add(aid)
                try:
                    await client.release_hold(aid, timeout_s=ASK_TIMEOUT_S)
                    metrics.allotments.labels("released").inc()
                except (OriginUnreachable, HoldRefused) as exc:  # next round, or it expires
                    self._releasing.discard(aid)
                    log.info("releasing allotment %s: %s", aid, exc)
                break
        self._releasing &= set(self.mine)
        for aid in [aid for aid in self._size if aid not in self.mine and aid not in self._asking]:
            del self._size[aid]
        for site, targets in self.targets(now).items():
            lines = self._wants(site, targets, free, now)
            if not lines:
                continue
            aid = f"al.{self.owner}.{secrets.token_hex(8)}"
            req = AllotRequest(allotment_id=aid, owner=self.owner, site_id=site, lines=lines, ttl_s=ttl)
            self._asking[aid] = (site, lines)  # from now until the replica shows it, not free
            try:
                granted = await client.allot(req, timeout_s=ASK_TIMEOUT_S)
            except HoldRefused as exc:  # the replica was behind: ask again next round
                del self._asking[aid]
                metrics.allotments.labels("refused").inc()
                log.info("allotment at %s refused: %s", site, exc)
                break
            except OriginUnreachable:  # if it was granted after all, the replica will show it
                del self._asking[aid]
                metrics.allotments.labels("unreachable").inc()
                raise
            metrics.allotments.labels("granted").inc()
            # Drawable now, not once the feed brings it: `asking` keeps its units out of the
            # replica's available (which does not show it yet) until the replica does. Being the
            # site's newest, it also keeps the next round from asking again.
            self.add(aid, granted)
            break

    async def run(self, client: FeedClient, free: Callable[[str, str], int], metrics: EdgeMetrics) -> None:
        backoff = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff or self.settings.allotment_tick_s)
            self._wake.clear()
            try:
                await self.refill_once(client, free, metrics)
                backoff = 0.0
            except OriginUnreachable as exc:
                log.info("allotments: %s", exc)
                backoff = min(max(backoff * 2, 1.0), 30.0)
            except Exception:  # a bug must not stop the refills silently
                log.exception("refilling allotments failed")
                backoff = 5.0
