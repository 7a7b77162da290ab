"""The feed client: what an edge asks the origin, over one httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from sync.entities import Line, Reservation
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


class MustResync(Exception):
    """The origin answered 409: re-bootstrap the bucket (its epoch is given)."""

    def __init__(self, bucket: str, epoch: str, detail: str) -> None:
        super().__init__(f"{bucket}: {detail} (epoch {epoch})")
        self.bucket = bucket
        self.epoch = epoch


class OriginUnreachable(Exception):
    """No answer to act on: a connect error, a timeout or a 5xx. Try again later."""


class HoldRefused(Exception):
    """The origin answered a hold request with a 4xx; `code` says why (`insufficient_stock`, …)."""

    def __init__(self, reservation_id: str, status: int, body: dict[str, Any]) -> None:
        self.reservation_id = reservation_id
        self.status = status
        self.code = str(body.get("error", "error"))
        self.detail = str(body.get("detail", ""))
        self.body = body
        super().__init__(f"hold {reservation_id!r} refused ({status} {self.code}): {self.detail}")


class HoldRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/reservations`: the same struct encodes to the same bytes, so a replay matches."""

    reservation_id: str
    order_id: str
    site_id: str
    lines: list[Line]
    ttl_s: int


_hold_encoder = msgspec.json.Encoder()
_hold_decoder = msgspec.json.Decoder(Reservation)
# The origin says so when an idempotent request is still running: the answer will come later.
_RETRY_LATER = frozenset({"in_flight"})


@dataclass(frozen=True)
class Snapshot:
    header: SnapshotHeader
    batches: AsyncIterator[list[SnapshotRow]]


class FeedClient:
    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}", "Accept": MSGPACK}

    async def page(self, bucket: str, *, epoch: str, after: int, limit: int, wait: int = 0) -> FeedPage:
        params: dict[str, str | int] = {"epoch": epoch, "after": after, "limit": limit}
        if wait:
            params["wait"] = wait
        timeout = httpx.Timeout(10.0, read=wait + 10.0)
        r = await self._client.get(
            f"/v1/feed/{bucket}", params=params, headers=self._headers, timeout=timeout
        )
        if r.status_code == 409:
            data = r.json()
            raise MustResync(bucket, str(data.get("epoch", "")), str(data.get("detail", "")))
        r.raise_for_status()
        return page_decoder.decode(r.content)

    async def model_blob(self, sha256: str) -> bytes:
        """A model blob by its sha256 (the caller verifies it)."""
        r = await self._client.get(
            f"/v1/models/{sha256}",
            headers={"Authorization": self._headers["Authorization"]},
            timeout=httpx.Timeout(60.0),
        )
        r.raise_for_status()
        return r.content

    async def reserve(self, hold: HoldRequest, *, timeout_s: float) -> Reservation:
        """Place a hold, keyed by its reservation id (the Idempotency-Key): safe to repeat."""
        headers = {
            "Authorization": self._headers["Authorization"],
            "Content-Type": "application/json",
            "Idempotency-Key": hold.reservation_id,
        }
        r = await self._send(
            "POST", "/v1/reservations", hold.reservation_id, timeout_s, headers, _hold_encoder.encode(hold)
        )
        return _hold_decoder.decode(r.content)

    async def release_hold(self, reservation_id: str, *, timeout_s: float) -> Reservation:
        """Release a hold; releasing twice is a no-op at the origin."""
        path = f"/v1/reservations/{reservation_id}/release"
        r = await self._send("POST", path, reservation_id, timeout_s)
        return _hold_decoder.decode(r.content)

    async def hold(self, reservation_id: str, *, timeout_s: float) -> Reservation:
        r = await self._send("GET", f"/v1/reservations/{reservation_id}", reservation_id, timeout_s)
        return _hold_decoder.decode(r.content)

    async def _send(
        self,
        method: str,
        path: str,
        reservation_id: str,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        headers = headers or {"Authorization": self._headers["Authorization"]}
        try:
            r = await self._client.request(
                method, path, headers=headers, content=content, timeout=httpx.Timeout(timeout_s)
            )
        except httpx.TransportError as exc:
            raise OriginUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code >= 500:
            raise OriginUnreachable(f"{method} {path}: {r.status_code}")
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": "unreadable", "detail": r.text[:200]}
            body = body if isinstance(body, dict) else {"error": "unreadable"}
            if body.get("error") in _RETRY_LATER:
                raise OriginUnreachable(f"{method} {path}: {r.status_code} {body.get('error')}")
            raise HoldRefused(reservation_id, r.status_code, body)
        return r

    @asynccontextmanager
    async def snapshot(self, bucket: str) -> AsyncIterator[Snapshot]:
        async with self._client.stream(
            "GET", f"/v1/snapshot/{bucket}", headers=self._headers, timeout=httpx.Timeout(30.0)
        ) as r:
            r.raise_for_status()
            frames = _frames(r)
            first = await anext(frames)
            yield Snapshot(header_decoder.decode(first), _batches(frames))


async def _frames(r: httpx.Response) -> AsyncIterator[bytes]:
    reader = FrameReader()
    async for chunk in r.aiter_bytes():
        for payload in reader.feed(chunk):
            yield payload
    if reader.pending:
        raise httpx.ReadError(f"snapshot stream ended inside a frame ({reader.pending} bytes left)")


async def _batches(frames: AsyncIterator[bytes]) -> AsyncIterator[list[SnapshotRow]]:
    async for payload in frames:
        yield rows_decoder.decode(payload)
