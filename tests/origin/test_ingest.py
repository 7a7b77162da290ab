"""Group commit: many webhook events in one transaction, each failing or succeeding alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models.world import World, WorldSpec, world_now
from origin import ingest, shipments
from origin.seed import seed_world
from origin.store import Store, open_store
from tests.conftest import Clock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    clock = Clock()
    s = open_store(None, tmp_path, clock)
    seed_world(
        s, World(WorldSpec(regions=1, sites_per_region=2, products=5, shipments=10), world_now(clock()))
    )
    yield s
    s.close()


def event(tn: str, minute: int) -> shipments.TrackingEvent:
    return shipments.TrackingEvent(
        tracking_number=tn,
        carrier="ups",
        status="in_transit",
        message=f"scan {minute}",
        location="Hub",
        occurred_at=datetime(2031, 1, 1, 10, minute, tzinfo=UTC),
    )


def numbers(store: Store) -> list[str]:
    with store.reader() as r:
        return [
            k for (k,) in r.execute("SELECT key FROM entity WHERE kind = 'shipment' ORDER BY key").fetchall()
        ]


def test_events_queued_together_commit_in_one_batch(store: Store) -> None:
    writer = ingest.GroupCommit(store)
    tns = numbers(store)

    async def burst() -> list[str]:
        calls = [writer.submit(f"id-{i}", event(tns[i % len(tns)], i)) for i in range(50)]
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0)  # all 50 are queued before the writer starts
        writer.start()
        return list(await asyncio.gather(*tasks))

    head_before = store.head("region:north")
    outcomes = asyncio.run(burst())
    writer.stop()
    assert outcomes == ["applied"] * 50
    assert writer.batches == 1 and writer.events == 50
    assert store.head("region:north") == (head_before or 0) + len(numbers(store)), "one change per shipment"


def test_a_failing_event_is_undone_alone_and_can_be_retried(store: Store, monkeypatch: Any) -> None:
    tns = numbers(store)
    real = shipments.ingest_event

    def flaky(tx: Any, ev: shipments.TrackingEvent, keyring: Any = None) -> str:
        out = real(tx, ev, keyring)  # it has written, then fails: all of it must be undone
        if ev.message == "scan 1":
            raise RuntimeError("boom")
        return out

    monkeypatch.setattr(shipments, "ingest_event", flaky)
    writer = ingest.GroupCommit(store)

    async def three() -> list[Any]:
        tasks = [asyncio.ensure_future(writer.submit(f"w{i}", event(tns[i], i))) for i in range(3)]
        await asyncio.sleep(0)
        writer.start()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(three())
    assert results[0] == "applied" and results[2] == "applied"
    assert isinstance(results[1], RuntimeError)
    assert writer.batches == 1
    with store.reader() as r:
        seen = {k for (k,) in r.execute("SELECT id FROM webhook_seen").fetchall()}
        body = r.one("SELECT body FROM entity WHERE kind = 'shipment' AND key = ?", (tns[1],))
    assert seen == {"w0", "w2"}, "the failed event's webhook id is not kept, so a retry is applied"
    assert body is not None and b"scan 1" not in bytes(body[0])
    monkeypatch.setattr(shipments, "ingest_event", real)

    async def retry() -> str:
        return await writer.submit("w1", event(tns[1], 1))

    assert asyncio.run(retry()) == "applied"
    writer.stop()
