"""The delta feed, snapshots and bucket list (API.md, "The feed's shape").

A long-poll waits on `HeadWatch`, which commits wake (never a poll loop). A full, aligned page
can never change, so it is sent immutable for any HTTP cache in front of the origin to share
between the edges of a region.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Iterator
from typing import Any

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from origin.errors import InvalidInput, NotFound, Resync
from origin.store import Store
from sync.wire import (
    JSON,
    MSGPACK,
    NDJSON,
    FeedPage,
    SnapshotHeader,
    SnapshotRow,
    encode,
    page_to_json,
    snapshot_frames,
    snapshot_ndjson,
    to_json,
)

IMMUTABLE = "public, max-age=31536000, immutable"
TAIL = "public, max-age=1"


class HeadWatch:
    """The newest sequence of each bucket as commits report it, and waiters on it."""

    def __init__(self) -> None:
        self._heads: dict[str, int] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def committed(self, heads: dict[str, int]) -> None:
        """Called from any thread after a commit."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.advance, heads)

    def head(self, bucket: str) -> int | None:
        """The newest sequence of the bucket heard of so far (None: nothing yet)."""
        return self._heads.get(bucket)

    def advance(self, heads: dict[str, int]) -> None:
        for bucket, head in heads.items():
            if head > self._heads.get(bucket, -1):
                self._heads[bucket] = head
                event = self._events.pop(bucket, None)
                if event is not None:
                    event.set()

    async def wait_past(self, bucket: str, after: int, seconds: float) -> None:
        """Return once the bucket's head passes `after`, or after `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._heads.get(bucket, -1) <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            event = self._events.setdefault(bucket, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return


async def until_disconnected(request: Request, waiting: Coroutine[Any, Any, None]) -> None:
    """Run `waiting`, but stop as soon as the client goes away (no orphaned long-polls)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.ensure_future(waiting), asyncio.ensure_future(disconnected())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or (
        "application/x-ndjson" in request.headers.get("accept", "")
    )


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(
            f"query parameter {name}={raw!r} is not an integer", code="invalid_query"
        ) from None
    if not lo <= value <= hi:
        raise InvalidInput(f"query parameter {name}={value} must be within {lo}..{hi}", code="invalid_query")
    return value


async def feed(request: Request) -> Response:
    store: Store = request.app.state.store
    watch: HeadWatch = request.app.state.watch
    settings = request.app.state.settings
    bucket = request.path_params["bucket"]
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 500, 1, settings.feed_max_limit)
    wait = _int_param(request, "wait", 0, 0, int(settings.feed_max_wait_s))
    epoch_param = request.query_params.get("epoch")

    sl = await store.read_feed(bucket, after, limit, head=watch.head(bucket))
    if sl is None:
        raise NotFound(f"unknown bucket {bucket!r}", code="unknown_bucket")
    _check_cursor(epoch_param, after, sl.epoch, sl.watermark, sl.head)
    if not sl.changes and wait > 0:
        watch.advance({bucket: sl.head})
        waiting = request.app.state.metrics.feed_waiting
        waiting.inc()
        try:
            await until_disconnected(request, watch.wait_past(bucket, after, wait))
        finally:
            waiting.dec()
        sl = await store.read_feed(bucket, after, limit, head=watch.head(bucket))
        assert sl is not None
        _check_cursor(epoch_param, after, sl.epoch, sl.watermark, sl.head)

    last = sl.changes[-1].seq if sl.changes else after
    cacheable = after % limit == 0 and len(sl.changes) == limit
    page = FeedPage(
        bucket=bucket,
        epoch=sl.epoch,
        after=after,
        last=last,
        head=None if cacheable else sl.head,
        checksum=sl.checksum,
        changes=sl.changes,
    )
    as_json = wants_json(request)
    content = page_to_json(page) if as_json else encode(page)
    etag = '"' + hashlib.blake2b(content, digest_size=12).hexdigest() + '"'
    headers = {
        "Cache-Control": IMMUTABLE if cacheable else TAIL,
        "ETag": etag,
        "Vary": "Accept",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=JSON if as_json else MSGPACK, headers=headers)


def _check_cursor(epoch_param: str | None, after: int, epoch: str, watermark: int, head: int) -> None:
    if epoch_param and epoch_param != epoch:
        raise Resync(f"epoch {epoch_param!r} is not the current epoch", epoch=epoch)
    if after < watermark:
        raise Resync(f"after={after} is below the watermark {watermark}", epoch=epoch)
    if after > head:
        raise Resync(f"after={after} is beyond the head {head}", epoch=epoch)


async def snapshot(request: Request) -> Response:
    store: Store = request.app.state.store
    bucket = request.path_params["bucket"]
    it = store.snapshot(bucket)
    header = await to_thread.run_sync(next, it, None)
    if header is None:
        raise NotFound(f"unknown bucket {bucket!r}", code="unknown_bucket")
    assert isinstance(header, SnapshotHeader)
    rows: Iterator[SnapshotRow] = it  # type: ignore[assignment]
    headers = {"Cache-Control": "no-store", "X-Snapshot-Seq": str(header.seq)}
    if wants_json(request):
        return StreamingResponse(snapshot_ndjson(header, rows), media_type=NDJSON, headers=headers)
    return StreamingResponse(snapshot_frames(header, rows), media_type=MSGPACK, headers=headers)


async def buckets(request: Request) -> Response:
    store: Store = request.app.state.store
    infos = await to_thread.run_sync(store.buckets)
    rows = [{**msgspec.to_builtins(b), "checksum": str(b.checksum)} for b in infos]
    return Response(to_json(rows), media_type=JSON)
