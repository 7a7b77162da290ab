"""Following the origin's feed: bootstrap, long-poll, apply, re-bootstrap, back off.

One task per bucket. Catching up, it reads aligned pages (`after` a multiple of `limit`) so
every edge of a region asks for the same, cacheable URLs; at the tail it long-polls from its
exact cursor, `batch_s` after its last page: under a stream of small changes (a hold per
routing decision) a page per change cost both edge and origin more than the decisions
themselves did — at 300 decisions/s, 20 ms cut their CPU per decision by a third — and it adds
at most `batch_s` to replication lag. Each page is applied to the replica in one transaction
and only then to the read model. On a 409, a refused page or a bad snapshot it re-bootstraps
the bucket while the old state keeps serving.

A tail page (a few dozen changes) is applied on the event loop itself, as is the cursor read
before each request, when the replica's lock is free at once. In a worker thread, a page of
~20 changes took 0.8–1.0 ms at p50 and 7–8 ms at p99 under the route benchmark, and the loop
waited on it for the GIL meanwhile; on the loop it is 0.4 ms, 1 ms at p99. Bigger pages
(catching up) and snapshots still go to a worker thread, so the loop is never held long.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from anyio import to_thread

from edge.readmodel import ReadModel
from sync.client import FeedClient, MustResync, OriginError
from sync.replica import Replica, ReplicaError

log = logging.getLogger("waypost.edge.sync")
T = TypeVar("T")
INLINE_CHANGES = 64  # at most this many changes apply on the loop: about 1.5 ms


def settle_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (`gc.freeze`).

    A bootstrapped replica is hundreds of thousands of long-lived objects. Left in the oldest
    generation, each full collection walked them all on the event loop: 25–37 ms pauses every
    10–20 s under the route benchmark, much of its p99. Frozen objects are still freed by
    reference counting; only cycles among them are never collected, and the read model makes
    none. It acts on the whole process, so only a process that is an edge and nothing else does
    it (`EdgeSettings.freeze_heap`, set by `python -m edge serve`), not a test run.
    """
    gc.collect()
    gc.freeze()


@dataclass
class BucketStatus:
    bucket: str
    epoch: str = ""
    cursor: int = 0
    head: int = 0
    checksum_ok: bool | None = None
    synced_at: float = 0.0  # when the origin last confirmed this bucket current
    last_change_at: float = 0.0
    rebootstraps: int = 0
    snapshots: int = 0
    pages: int = 0
    changes: int = 0
    refused_pages: int = 0
    last_error: str | None = None
    ready: bool = False


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, base: float = 0.2, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        return random.uniform(0, min(self.cap, self.base * 2**self.attempt))

    def reset(self) -> None:
        self.attempt = 0


class BucketFollower:
    def __init__(
        self,
        bucket: str,
        client: FeedClient,
        replica: Replica,
        model: ReadModel,
        *,
        limit: int,
        wait_s: int,
        clock: Callable[[], float],
        batch_s: float = 0.0,
        freeze_heap: bool = False,
    ) -> None:
        self.bucket = bucket
        self.freeze_heap = freeze_heap
        self.client = client
        self.replica = replica
        self.model = model
        self.limit = limit
        self.wait_s = wait_s
        self.batch_s = batch_s
        self.clock = clock
        self.status = BucketStatus(bucket)
        self._at_tail = False
        # Called after each commit with the changed kinds (or None after a bootstrap: everything).
        self.listeners: list[Callable[[set[str] | None], None]] = []

    def _now(self) -> float:
        return self.clock()

    async def load_local(self) -> bool:
        """Load the read model from the replica's stored state; False if never bootstrapped."""
        cur = await to_thread.run_sync(self.replica.cursor, self.bucket)
        if cur is None:
            return False
        rows = await to_thread.run_sync(lambda: list(self.replica.entities(self.bucket)))
        self.model.replace_bucket(self.bucket, rows)
        for listener in self.listeners:
            listener(None)
        self.status.epoch, self.status.cursor = cur.epoch, cur.seq
        self.status.synced_at = cur.synced_at
        self.status.ready = True
        return True

    async def bootstrap(self) -> None:
        async with self.client.snapshot(self.bucket) as snap:
            staging = await to_thread.run_sync(self.replica.start_bootstrap, snap.header)
            async for batch in snap.batches:
                await to_thread.run_sync(staging.add, batch)
            await to_thread.run_sync(staging.finish, self._now())
        self.status.snapshots += 1
        self.status.checksum_ok = True
        await self.load_local()
        if self.freeze_heap:
            settle_heap()
        self._at_tail = False
        log.info("bootstrapped %s at seq %s (%s entities)", self.bucket, snap.header.seq, staging.count)

    async def _on_replica(self, fn: Callable[..., T], *args: Any, inline: bool = True) -> T:
        """`fn(*args)` on the loop when `inline` and the replica's lock is free at once, else in
        a worker thread (a snapshot being staged, or a checkpoint, holds the lock)."""
        lock = self.replica.lock
        if inline and lock.acquire(blocking=False):
            try:
                return fn(*args)
            finally:
                lock.release()
        return await to_thread.run_sync(fn, *args)

    async def step(self) -> None:
        """One request to the origin and whatever it brings."""
        cur = await self._on_replica(self.replica.cursor, self.bucket)
        if cur is None:
            await self.bootstrap()
            return
        if self._at_tail:
            if self.batch_s:
                # What arrives meanwhile comes in this one page rather than a page each.
                await asyncio.sleep(self.batch_s)
            after, wait = cur.seq, self.wait_s
        else:
            after, wait = cur.seq - cur.seq % self.limit, 0
        page = await self.client.page(self.bucket, epoch=cur.epoch, after=after, limit=self.limit, wait=wait)
        now = self._now()
        small = len(page.changes) <= INLINE_CHANGES
        applied = await self._on_replica(self.replica.apply_page, page, now, inline=small)
        self.model.apply(self.bucket, applied)
        if applied:
            kinds = {a.kind for a in applied}
            for listener in self.listeners:
                listener(kinds)
        st = self.status
        st.pages += 1
        st.changes += len(applied)
        st.cursor = max(page.last, cur.seq)
        st.head = page.head if page.head is not None else max(st.head, page.last)
        st.checksum_ok = True
        st.synced_at = now
        if applied:
            st.last_change_at = now
        self._at_tail = page.head is not None and page.last >= page.head
        if not applied and self._at_tail:
            await self._on_replica(self.replica.touch, self.bucket, now)

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.step()
                self.status.last_error = None
                backoff.reset()
            except MustResync as exc:
                self._note(f"resync: {exc}")
                await self._rebootstrap(backoff)
            except ReplicaError as exc:
                self.status.refused_pages += 1
                self.status.checksum_ok = False
                self._note(f"refused page: {exc}")
                await self._rebootstrap(backoff)
            except (OriginError, OSError) as exc:
                self._note(f"origin unreachable: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff.next())
            except Exception as exc:  # a bug must not stop syncing silently: log, back off, retry
                log.exception("%s: unexpected error", self.bucket)
                self._note(f"unexpected: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff.next())

    async def _rebootstrap(self, backoff: Backoff) -> None:
        self.status.rebootstraps += 1
        try:
            await self.bootstrap()
        except (OriginError, OSError, ReplicaError) as exc:
            self._note(f"re-bootstrap failed: {type(exc).__name__}: {exc}")
            await asyncio.sleep(backoff.next())

    def _note(self, error: str) -> None:
        self.status.last_error = error
        log.warning("%s: %s", self.bucket, error)
