"""Group commit for tracking events: many webhook requests, one transaction.

Each request hands its verified event to one writer thread and waits. The writer takes what has
queued up (at most `max_batch`), applies each event in a savepoint of one transaction — an event
that fails is undone alone and its request gets the error — and commits once; only then are the
requests answered. Under load a commit, the bucket head update and the thread hand-off are paid
once per batch instead of once per event; with one request in flight the batch is that request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

from origin import shipments
from origin.pii import Keyring
from origin.store import Store

log = logging.getLogger("waypost.origin.ingest")


@dataclass
class Item:
    webhook_id: str
    event: shipments.TrackingEvent
    future: asyncio.Future[str]
    loop: asyncio.AbstractEventLoop
    outcome: str | None = None
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, store: Store, max_batch: int = 256, keyring: Keyring | None = None) -> None:
        self.store = store
        self.keyring = keyring  # opens orders' addresses for the sanitizer
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="webhook writer", daemon=True)
        self.batches = 0
        self.events = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    async def submit(self, webhook_id: str, event: shipments.TrackingEvent) -> str:
        """Apply one event; returns "applied", "duplicate", "parked" or "replay" once committed."""
        loop = asyncio.get_running_loop()
        item = Item(webhook_id, event, loop.create_future(), loop)
        self._queue.put(item)
        return await item.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            self._apply(batch)

    def _apply(self, batch: list[Item]) -> None:
        try:
            with self.store.transaction() as tx:
                # Shipment rows are locked in one order (a stable sort keeps each shipment's events
                # in arrival order), so two origin processes' batches cannot deadlock.
                for item in sorted(batch, key=lambda i: i.event.tracking_number):
                    try:
                        with tx.savepoint():
                            if shipments.seen_webhook(tx, item.webhook_id):
                                item.outcome = "replay"
                            else:
                                item.outcome = shipments.ingest_event(tx, item.event, self.keyring)
                    except Exception as exc:  # this event alone fails; the batch goes on
                        item.error = exc
        except Exception as exc:  # the commit failed: nothing of the batch was stored
            log.exception("a batch of %s webhook events failed to commit", len(batch))
            for item in batch:
                item.error, item.outcome = exc, None
        self.batches += 1
        self.events += len(batch)
        for item in batch:
            item.loop.call_soon_threadsafe(_settle, item)


def _settle(item: Item) -> None:
    if item.future.cancelled():
        return
    if item.error is not None:
        item.future.set_exception(item.error)
    else:
        assert item.outcome is not None
        item.future.set_result(item.outcome)
