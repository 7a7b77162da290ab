"""Placing a decision's holds at the origin, and replaying them when it could not be reached.

    outbox = Outbox(store, client, own, settings, metrics, replan)
    decision = await outbox.submit(decision)   # saved first, then placed (or left provisional)
    await outbox.run()                          # the background task that replays

`submit` writes the decision before anything else, then asks the origin for each hold with an
Idempotency-Key equal to the hold's reservation id. When the origin cannot be reached
(connect error, timeout, 5xx) the decision stays `provisional` — written durably — and the
edge answers at once; while the origin is known to be down, new decisions do not even try and
are queued behind the older ones. `run` replays the provisional decisions oldest first, backing
off while the origin stays away. A replay sends the very same request again, so a hold the
origin already made (the answer was lost) is returned, never made twice.

When the origin refuses a hold (409 `insufficient_stock`: the stock went while the edge was
cut off, or the replica was behind), the decision's other holds of that attempt are released,
the refusing site is left out, and `replan` routes the order again from the edge's current
view; the new attempt gets new reservation ids. With nowhere left, the decision is `unfilled`.

With allotments (`edge.allotments`), `submit` first draws each allocation it can from stock the
origin set aside for this edge: a decision drawn whole is saved `confirmed` and answered at
once, and its holds are sent behind the answer (`send`: batched, one transaction at the origin
for many, each naming its allotment), retried by `run` like a replay while the origin is away.
A drawn hold the origin refuses (it could neither take it from the allotment nor from
available stock) re-routes like a refused replay.

`OwnHolds` is the edge's memory of what it asked for that its replica does not show yet (every
provisional hold, and a confirmed one until its reservation replicates): routing subtracts it
from the replica's available stock, so two orders never count on the same units.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from anyio import to_thread

from edge.allotments import Allotments
from edge.decisions import Allocation, Decision, DecisionStore, Event, Plan, adopt, unsent
from edge.metrics import EdgeMetrics
from edge.readmodel import ReadModel
from edge.settings import EdgeSettings
from sync.client import FeedClient, HoldRefused, HoldRequest, OriginUnreachable
from sync.entities import ChangeKinds, Line

log = logging.getLogger("waypost.edge.outbox")

MAX_REROUTES = 3  # after refusals, per round of placing
SEND_LINGER_S = 0.02  # drawn holds wait this long for others, to reach the origin together
MAX_BATCH = 64  # holds in one request (one transaction at the origin)
Replan = Callable[[Decision], Plan | None]


class OwnHolds:
    """Holds this edge placed or queued that its replica does not show yet."""

    def __init__(self, model: ReadModel, bucket: str) -> None:
        self.model = model
        self.bucket = bucket
        self._by_site: dict[str, dict[str, list[Line]]] = {}  # site_id → reservation_id → lines

    def add(self, a: Allocation) -> None:
        self._by_site.setdefault(a.site_id, {})[a.reservation_id] = a.lines

    def drop(self, a: Allocation) -> None:
        self._by_site.get(a.site_id, {}).pop(a.reservation_id, None)

    def _live(self, site_id: str) -> dict[str, list[Line]]:
        holds = self._by_site.get(site_id)
        if not holds:
            return {}
        seen = [rid for rid in holds if self.model.get(self.bucket, ChangeKinds.RESERVATION, rid) is not None]
        for rid in seen:  # the replica has it now: its stock rows count it already
            del holds[rid]
        return holds

    def units(self, site_id: str, sku: str) -> int:
        return sum(line.qty for lines in self._live(site_id).values() for line in lines if line.sku == sku)

    def orders(self, site_id: str) -> int:
        return len(self._live(site_id))


class Outbox:
    def __init__(
        self,
        store: DecisionStore,
        client: FeedClient,
        own: OwnHolds,
        settings: EdgeSettings,
        metrics: EdgeMetrics,
        replan: Replan,
        allotments: Allotments | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.own = own
        self.settings = settings
        self.metrics = metrics
        self.replan = replan
        self.allotments = allotments
        self._to_send: dict[str, Decision] = {}  # drawn decisions for `send` to send
        self._send_wake = asyncio.Event()
        self.origin_up = True  # until a hold request says otherwise
        self.provisional: set[str] = set()  # decisions whose holds the origin has yet to have
        self._busy: set[str] = set()  # decisions being placed right now
        self._wake = asyncio.Event()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.settings.clock(), UTC)

    async def load(self) -> None:
        """After a restart: remember what was queued or recently placed, then replay."""
        since = self.settings.clock() - self.settings.hold_ttl_s
        for d in await to_thread.run_sync(self.store.recent, since):
            for a in d.allocations:
                if a.state in ("pending", "held"):
                    self.own.add(a)
                elif a.state == "drawn" and a.allotment_id and self.allotments is not None:
                    self.allotments.note(a.allotment_id, a.reservation_id, a.lines)
            if unsent(d):
                self.provisional.add(d.decision_id)
        self._gauge()
        self._wake.set()

    def _gauge(self) -> None:
        self.metrics.outbox_depth.set(len(self.provisional))

    async def _save(self, d: Decision, *, durable: bool | None = None) -> None:
        """Write the decision; fsynced when it is provisional (a promise to replay) unless told."""
        if unsent(d):
            self.provisional.add(d.decision_id)
        else:
            self.provisional.discard(d.decision_id)
        self._gauge()
        if d.holds == "provisional" if durable is None else durable:
            await to_thread.run_sync(lambda: self.store.save(d, durable=True))  # an fsync: milliseconds
        else:
            self.store.save(d)  # tens of microseconds: less than the hop to a worker thread

    def _draw(self, d: Decision) -> bool:
        """Draw every allocation an allotment covers; True when all of them were."""
        if self.allotments is None:
            return False
        whole = True
        for a in d.allocations:
            self.allotments.demand(a.site_id, a.lines)
            allotment = self.allotments.take(a.site_id, a.lines, a.reservation_id)
            if allotment is None:
                whole = False
                continue
            a.state, a.allotment_id = "drawn", allotment
            d.history.append(
                Event(at=d.updated_at, event="drawn", attempt=d.attempt, site_id=a.site_id, detail=allotment)
            )
        if not whole:
            self.allotments.wake()
        return whole

    async def submit(self, d: Decision) -> Decision:
        """Keep a new decision, then place its holds unless the origin is known to be away."""
        whole = self._draw(d)
        for a in d.allocations:
            self.metrics.route_holds.labels("allotment" if a.state == "drawn" else "origin").inc()
            if a.state == "pending":
                self.own.add(a)
        if whole:  # the units were this edge's to promise: answer now, tell the origin next
            d.holds = "confirmed"
            d.history.append(Event(at=d.updated_at, event="confirmed", attempt=d.attempt))
            await self._save(d)
            if self.origin_up:
                self._to_send[d.decision_id] = d
                self._send_wake.set()
            else:
                self._wake.set()
            return d
        self._busy.add(d.decision_id)
        try:
            if not self.origin_up:
                detail = "the origin is unreachable"
                d.history.append(Event(at=self._now(), event="queued", attempt=d.attempt, detail=detail))
                await self._save(d)
                self._wake.set()
                return d
            # Not fsynced: nothing was promised yet. A crash from here on is survived either way,
            # and a lost machine means the store never got an answer and asks again.
            await self._save(d, durable=False)
            return await self._place(d)
        finally:
            self._busy.discard(d.decision_id)

    async def send(self) -> None:
        """The background task that sends drawn decisions' holds behind their answers: in
        batches, one request and one transaction at the origin for up to `MAX_BATCH` holds."""
        while True:
            await self._send_wake.wait()
            await asyncio.sleep(SEND_LINGER_S)
            self._send_wake.clear()
            while self._to_send:
                if not self.origin_up:  # each is kept `sending`: the replays take them
                    self._to_send.clear()
                    self._wake.set()
                    break
                try:
                    await self._send_batch()
                except Exception:  # a bug must not stop the sending silently: the replays retry
                    log.exception("sending drawn holds failed")
                    self._to_send.clear()
                    self._wake.set()

    async def _send_batch(self) -> None:
        batch: list[Decision] = []
        while self._to_send and len(batch) < MAX_BATCH:
            did = next(iter(self._to_send))
            d = self._to_send.pop(did)
            if did not in self._busy:  # else a replay has it
                batch.append(d)
        if not batch:
            return
        ids = {d.decision_id for d in batch}
        self._busy |= ids
        try:
            drawn = [(d, a) for d in batch for a in d.allocations if a.state == "drawn"]
            holds = [_hold_request(d, a) for d, a in drawn]
            try:
                if holds:  # (a decision re-routed meanwhile may have none left to send)
                    await self.client.reserve_many(holds, timeout_s=self.settings.reserve_timeout_s)
            except OriginUnreachable:
                self.origin_up = False
                self._wake.set()
                return
            except HoldRefused:  # one by one: the refused one re-routes, the others are placed
                for d in batch:
                    await self._place(d)
                return
            self.origin_up = True
            now = self._now()
            for d, a in drawn:
                a.state = "held"
                d.history.append(Event(at=now, event="placed", attempt=d.attempt, site_id=a.site_id))
            for d in batch:
                d.updated_at = now
                self.provisional.discard(d.decision_id)
            self._gauge()
            self.store.save_many(batch)  # one transaction: tens of microseconds a decision
        finally:
            self._busy -= ids

    async def _place(self, d: Decision, *, replay: bool = False) -> Decision:
        """Ask the origin for every pending or drawn hold; re-route on a refusal. Saves what happened."""
        timeout = self.settings.reserve_timeout_s
        reroutes = 0
        while True:
            refused: tuple[Allocation, HoldRefused] | None = None
            for a in d.allocations:
                if a.state not in ("pending", "drawn"):
                    continue
                try:
                    await self.client.reserve(_hold_request(d, a), timeout_s=timeout)
                except OriginUnreachable as exc:
                    self.origin_up = False
                    if not d.history or d.history[-1].event not in ("unreachable", "queued"):
                        d.history.append(
                            Event(at=self._now(), event="unreachable", attempt=d.attempt, detail=str(exc))
                        )
                    d.updated_at = self._now()
                    await self._save(d)
                    self._wake.set()
                    return d
                except HoldRefused as exc:
                    self.origin_up = True
                    refused = (a, exc)
                    break
                self.origin_up = True
                a.state = "held"
                d.history.append(Event(at=self._now(), event="placed", attempt=d.attempt, site_id=a.site_id))
            if refused is None:
                if d.holds != "confirmed":
                    d.holds, d.updated_at = "confirmed", self._now()
                    d.history.append(
                        Event(at=d.updated_at, event="replayed" if replay else "confirmed", attempt=d.attempt)
                    )
                await self._save(d)
                return d
            await self._reroute(d, *refused, again=reroutes < MAX_REROUTES)
            reroutes += 1
            if d.holds == "unfilled":
                await self._save(d)
                return d
            # The new attempt's holds are written before they are asked for.
            await self._save(d, durable=replay)

    async def _reroute(self, d: Decision, refused: Allocation, exc: HoldRefused, *, again: bool) -> None:
        now = self._now()
        self._give_back(refused)
        refused.state = "refused"
        self.own.drop(refused)
        detail = exc.detail if exc.code == "insufficient_stock" else f"{exc.code}: {exc.detail}"
        d.history.append(
            Event(at=now, event="refused", attempt=d.attempt, site_id=refused.site_id, detail=detail)
        )
        self.metrics.outbox_events.labels("refused").inc()
        for a in d.allocations:
            if a.state == "held":
                await self._release(d, a)
            if a.state in ("pending", "drawn"):
                self._give_back(a)
                a.state = "released"  # never asked for
            self.own.drop(a)
        if refused.site_id not in d.excluded:
            d.excluded.append(refused.site_id)
        plan = self.replan(d) if again else None
        if plan is None:
            d.holds, d.updated_at = "unfilled", now
            d.reasons.append(
                f"the origin refused the hold at {refused.site_id} and no other site of the region "
                "can fill the order now"
            )
            d.history.append(Event(at=now, event="unfilled", attempt=d.attempt))
            self.metrics.outbox_events.labels("unfilled").inc()
            return
        before = ", ".join(a.site_id for a in d.allocations)
        adopt(d, plan, self.settings.hold_ttl_s, now)
        d.reasons.append(f"re-routed from {before}: the origin refused the hold at {refused.site_id}")
        for a in d.allocations:
            self.own.add(a)
        self.metrics.outbox_events.labels("rerouted").inc()

    def _give_back(self, a: Allocation) -> None:
        """A draw not made at the origin: its units are the allotment's again. (Were it made,
        and the answer lost, the replica shows the allotment shrunk, and the hold expires.)"""
        if a.state == "drawn" and a.allotment_id and self.allotments is not None:
            self.allotments.forget(a.allotment_id, a.reservation_id)

    async def _release(self, d: Decision, a: Allocation) -> None:
        try:
            await self.client.release_hold(a.reservation_id, timeout_s=self.settings.reserve_timeout_s)
            a.state = "released"
            d.history.append(Event(at=self._now(), event="released", attempt=d.attempt, site_id=a.site_id))
        except (OriginUnreachable, HoldRefused) as exc:
            # It expires on its own at the end of its ttl; until then the replica shows it held.
            d.history.append(
                Event(
                    at=self._now(),
                    event="release_failed",
                    attempt=d.attempt,
                    site_id=a.site_id,
                    detail=str(exc),
                )
            )

    async def replay_once(self) -> bool:
        """Replay what is queued, oldest first; False if the origin is still unreachable."""
        for queued in await to_thread.run_sync(self.store.provisional):
            did = queued.decision_id
            if did in self._busy or did in self._to_send:
                continue
            self._busy.add(did)
            try:
                d = await to_thread.run_sync(self.store.get, did)  # fresh, now that it is ours
                if d is None or not unsent(d):
                    continue
                d = await self._place(d, replay=True)
            finally:
                self._busy.discard(did)
            if unsent(d):
                self.metrics.outbox_events.labels("unreachable").inc()
                return False
            self.metrics.outbox_events.labels("replayed" if d.holds == "confirmed" else d.holds).inc()
        return True

    async def run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff)
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                ok = await self.replay_once()
            except Exception:  # a bug must not stop the replays silently: log, back off, retry
                log.exception("replaying the outbox failed")
                ok = False
            if ok:
                backoff = 0.0
                if self.provisional - self._busy - self._to_send.keys():  # queued while this round ran
                    self._wake.set()
            else:
                backoff = min(max(backoff * 2, 0.2), self.settings.outbox_retry_max_s)


def _hold_request(d: Decision, a: Allocation) -> HoldRequest:
    """The origin's hold for an allocation; a drawn one names its allotment."""
    return HoldRequest(
        reservation_id=a.reservation_id,
        order_id=d.order.order_id,
        site_id=a.site_id,
        lines=a.lines,
        ttl_s=a.ttl_s,
        allotment_id=a.allotment_id if a.state == "drawn" else None,
    )
