"""The feed client: what an edge asks the origin, over one httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

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
