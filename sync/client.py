"""The feed client: what an edge asks the origin.

Feed pages, snapshots and model blobs go over one aiohttp session; the hold calls (place,
release, read) over `sync.http1`'s lean keep-alive pool. A hold is placed inside every routing
decision, so its CPU is the decision's latency: a keep-alive POST cost the edge ~0.7–0.9 ms
through httpx 0.28 (httpcore, anyio, h11, and httpcore's per-request `import sniffio` attempt),
~0.33 ms through aiohttp and ~0.03 ms through the pool (README, design notes). Everything else
in the project that talks HTTP (tests, benchmarks, the demo) keeps httpx.

Errors: `OriginUnreachable` when there is no answer to act on (a connect error, a timeout, a 5xx,
a body cut short), `OriginError` for an answer the edge cannot use (its parent, e.g. a 401),
`MustResync` on a feed's 409 and `HoldRefused` on a hold request's 4xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from sync.entities import Line, Reservation
from sync.http1 import ConnectionFailed, Http1Pool
from sync.wire import (
    MSGPACK,
    FeedPage,
    FrameReader,
    SnapshotHeader,
    SnapshotRow,
    header_decoder,
    page_decoder,
    rows_decoder,
)

CHUNK = 64 * 1024


class OriginError(Exception):
    """The origin could not be asked, or gave an answer the edge cannot use."""


class OriginUnreachable(OriginError):
    """No answer to act on: a connect error, a timeout, a 5xx or a cut body. Try again later."""


class MustResync(Exception):
    """The origin answered 409: re-bootstrap the bucket (its epoch is given)."""

    def __init__(self, bucket: str, epoch: str, detail: str) -> None:
        super().__init__(f"{bucket}: {detail} (epoch {epoch})")
        self.bucket = bucket
        self.epoch = epoch


class HoldRefused(Exception):
    """The origin answered a hold request with a 4xx; `code` says why (`insufficient_stock`, …)."""

    def __init__(self, reservation_id: str, status: int, body: dict[str, Any]) -> None:
        self.reservation_id = reservation_id
        self.status = status
        self.code = str(body.get("error", "error"))
        self.detail = str(body.get("detail", ""))
        self.body = body
        super().__init__(f"hold {reservation_id!r} refused ({status} {self.code}): {self.detail}")


class HoldRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """`POST /v1/reservations`: the same struct encodes to the same bytes, so a replay matches."""

    reservation_id: str
    order_id: str
    site_id: str
    lines: list[Line]
    ttl_s: int
    allotment_id: str | None = None  # draw the units from this edge's allotment


class AllotRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/allotments`: stock set aside for `owner` (an edge) to draw holds from."""

    allotment_id: str
    owner: str
    site_id: str
    lines: list[Line]
    ttl_s: int


class HoldsRequest(msgspec.Struct, frozen=True):
    """`POST /v1/reservations/batch`."""

    holds: list[HoldRequest]


class HoldsAnswer(msgspec.Struct, frozen=True):
    holds: list[Reservation]


_hold_encoder = msgspec.json.Encoder()
_hold_decoder = msgspec.json.Decoder(Reservation)
_holds_decoder = msgspec.json.Decoder(HoldsAnswer)
# The origin says so when an idempotent request is still running: the answer will come later.
_RETRY_LATER = frozenset({"in_flight"})


@dataclass(frozen=True)
class Snapshot:
    header: SnapshotHeader
    batches: AsyncIterator[list[SnapshotRow]]


def _error_body(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"error": "unreadable", "detail": raw[:200].decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {"error": "unreadable"}


class FeedClient:
    """One keep-alive connection pool to the origin; `close()` (or `async with`) when done."""

    def __init__(
        self,
        origin_url: str,
        token: str,
        *,
        max_connections: int = 8,
        trace_configs: list[aiohttp.TraceConfig] | None = None,
    ) -> None:
        self.base = origin_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}
        self._feed_headers = {**self._auth, "Accept": MSGPACK}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=10.0),
            trace_configs=trace_configs,
        )
        self._holds = Http1Pool(self.base)

    async def close(self) -> None:
        await self._session.close()
        await self._holds.close()

    async def __aenter__(self) -> FeedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout,
        *,
        params: dict[str, str | int] | None = None,
        content: bytes | None = None,
    ) -> tuple[int, bytes]:
        """The status and body of one request; no answer at all is `OriginUnreachable`."""
        try:
            async with self._session.request(
                method, self.base + path, params=params, headers=headers, data=content, timeout=limits
            ) as r:
                return r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OriginUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def page(self, bucket: str, *, epoch: str, after: int, limit: int, wait: int = 0) -> FeedPage:
        params: dict[str, str | int] = {"epoch": epoch, "after": after, "limit": limit}
        if wait:
            params["wait"] = wait
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=wait + 10.0)
        path = f"/v1/feed/{bucket}"
        status, raw = await self._request("GET", path, self._feed_headers, timeout, params=params)
        if status == 409:
            data = _error_body(raw)
            raise MustResync(bucket, str(data.get("epoch", "")), str(data.get("detail", "")))
        _check(status, "GET", path, raw)
        return page_decoder.decode(raw)

    async def model_blob(self, sha256: str) -> bytes:
        """A model blob by its sha256 (the caller verifies it)."""
        path = f"/v1/models/{sha256}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=60.0, sock_read=60.0)
        status, raw = await self._request("GET", path, self._auth, timeout)
        _check(status, "GET", path, raw)
        return raw

    async def reserve(self, hold: HoldRequest, *, timeout_s: float) -> Reservation:
        """Place a hold, keyed by its reservation id (the Idempotency-Key): safe to repeat."""
        body = _hold_encoder.encode(hold)
        raw = await self._post("/v1/reservations", hold.reservation_id, body, timeout_s, keyed=True)
        return _hold_decoder.decode(raw)

    async def reserve_many(self, holds: list[HoldRequest], *, timeout_s: float) -> list[Reservation]:
        """Place several holds in one transaction: all, or none and `HoldRefused` naming the
        first refused (its body's `reservation_id`). Each is idempotent by its reservation id."""
        body = _hold_encoder.encode(HoldsRequest(holds))
        raw = await self._post(
            "/v1/reservations/batch", holds[0].reservation_id, body, timeout_s, keyed=False
        )
        return _holds_decoder.decode(raw).holds

    async def allot(self, req: AllotRequest, *, timeout_s: float) -> Reservation:
        """Ask for an allotment, keyed by its id (the Idempotency-Key): safe to repeat."""
        body = _hold_encoder.encode(req)
        raw = await self._post("/v1/allotments", req.allotment_id, body, timeout_s, keyed=True)
        return _hold_decoder.decode(raw)

    async def _post(self, path: str, key: str, body: bytes, timeout_s: float, *, keyed: bool) -> bytes:
        """A JSON POST for a hold; `keyed`: `key` is its Idempotency-Key too."""
        headers = {**self._auth, "Content-Type": "application/json"}
        if keyed:
            headers["Idempotency-Key"] = key
        return await self._send("POST", path, key, timeout_s, headers, body)

    async def release_hold(self, reservation_id: str, *, timeout_s: float) -> Reservation:
        """Release a hold; releasing twice is a no-op at the origin."""
        path = f"/v1/reservations/{reservation_id}/release"
        return _hold_decoder.decode(await self._send("POST", path, reservation_id, timeout_s))

    async def hold(self, reservation_id: str, *, timeout_s: float) -> Reservation:
        path = f"/v1/reservations/{reservation_id}"
        return _hold_decoder.decode(await self._send("GET", path, reservation_id, timeout_s))

    async def _send(
        self,
        method: str,
        path: str,
        reservation_id: str,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> bytes:
        try:
            status, raw = await self._holds.request(
                method, path, headers or self._auth, content or b"", timeout_s=timeout_s
            )
        except ConnectionFailed as exc:
            raise OriginUnreachable(f"{method} {path}: {exc}") from exc
        if status >= 500:
            raise OriginUnreachable(f"{method} {path}: {status}")
        if status >= 400:
            body = _error_body(raw)
            if body.get("error") in _RETRY_LATER:
                raise OriginUnreachable(f"{method} {path}: {status} {body.get('error')}")
            raise HoldRefused(reservation_id, status, body)
        return raw

    @asynccontextmanager
    async def snapshot(self, bucket: str) -> AsyncIterator[Snapshot]:
        path = f"/v1/snapshot/{bucket}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=30.0)
        try:
            async with self._session.get(self.base + path, headers=self._feed_headers, timeout=timeout) as r:
                if r.status != 200:
                    _check(r.status, "GET", path, await r.read())
                frames = _frames(r, path)
                first = await anext(frames, None)
                if first is None:
                    raise OriginUnreachable(f"GET {path}: the snapshot was empty")
                yield Snapshot(header_decoder.decode(first), _batches(frames))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OriginUnreachable(f"GET {path}: {type(exc).__name__}: {exc}") from exc


def _check(status: int, method: str, path: str, raw: bytes) -> None:
    if status < 300:
        return
    detail = f"{method} {path}: {status} {_error_body(raw).get('detail', '')}".rstrip()
    raise (OriginUnreachable if status >= 500 else OriginError)(detail)


async def _frames(r: aiohttp.ClientResponse, path: str) -> AsyncIterator[bytes]:
    reader = FrameReader()
    async for chunk in r.content.iter_chunked(CHUNK):
        for payload in reader.feed(chunk):
            yield payload
    if reader.pending:
        left = reader.pending
        raise OriginUnreachable(f"GET {path}: the snapshot ended inside a frame ({left} bytes left)")


async def _batches(frames: AsyncIterator[bytes]) -> AsyncIterator[list[SnapshotRow]]:
    async for payload in frames:
        yield rows_decoder.decode(payload)
