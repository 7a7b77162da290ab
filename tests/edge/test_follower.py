"""Sync you can prove: real origin, real edges, real HTTP (through a proxy that can misbehave)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from origin.app import create_app as create_origin
from sync.bodies import unpack
from sync.wire import FeedPage, FrameReader, encode, header_decoder, page_decoder, rows_decoder
from tests.conftest import Edge, Origin, OriginProxy, ServerThread, wait_until
from tests.origin.test_webhooks import event

State = dict[tuple[str, str], bytes]
STATUSES = ["in_transit", "out_for_delivery", "attempt_fail", "delivered", "exception"]


def origin_state(origin: Origin, bucket: str) -> tuple[int, int, State]:
    """(seq, checksum, entities) of the origin's bucket, from a snapshot."""
    r = origin.http.get(f"/v1/snapshot/{bucket}", headers=origin.edge_auth())
    frames = list(FrameReader().feed(r.content))
    header = header_decoder.decode(frames[0])
    rows = {(row.kind, row.key): bytes(row.body) for f in frames[1:] for row in rows_decoder.decode(f)}
    return header.seq, header.checksum, rows


def edge_state(edge: Edge, bucket: str) -> tuple[int, int, State]:
    db = sqlite3.connect(edge.settings.data_dir / "replica.sqlite3")
    try:
        seq, checksum = db.execute("SELECT seq, checksum FROM cursor WHERE bucket = ?", (bucket,)).fetchone()
        rows = db.execute("SELECT kind, key, body FROM entity WHERE bucket = ?", (bucket,)).fetchall()
    finally:
        db.close()
    return seq, checksum & (2**64 - 1), {(k, key): unpack(bytes(b)) for k, key, b in rows}


def head(origin: Origin, bucket: str) -> int:
    rows = origin.http.get("/v1/buckets", headers=origin.edge_auth()).json()
    return next(int(b["head"]) for b in rows if b["bucket"] == bucket)


def assert_same(origin: Origin, edge: Edge, bucket: str = "region:north") -> None:
    wait_until(lambda: edge.status()[bucket]["cursor"] == head(origin, bucket), what=f"{bucket} caught up")
    o_seq, o_sum, o_rows = origin_state(origin, bucket)
    e_seq, e_sum, e_rows = edge_state(edge, bucket)
    assert (e_seq, e_sum) == (o_seq, o_sum)
    assert e_rows.keys() == o_rows.keys()
    for k, body in o_rows.items():
        assert msgspec.msgpack.decode(e_rows[k]) == msgspec.msgpack.decode(body), k  # field by field
        assert e_rows[k] == body


def north_numbers(origin: Origin) -> list[str]:
    return [
        s.tracking_number for s in origin.world.shipments() if origin.world.region_of(s.site_id) == "north"
    ]


def random_writes(origin: Origin, n: int, seed: int) -> None:
    rng = random.Random(seed)
    numbers = north_numbers(origin)
    sites = [s.site_id for s in origin.world.sites if s.region == "north"]
    skus = [p.sku for p in origin.world.products]
    for i in range(n):
        op = rng.random()
        if op < 0.6:
            at = f"2031-01-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
            r = origin.webhook(event(rng.choice(numbers), status=rng.choice(STATUSES), occurred_at=at))
            assert r.status_code == 202
        elif op < 0.8:
            r = origin.http.post(
                "/v1/stock/movements",
                json={
                    "site_id": rng.choice(sites),
                    "sku": rng.choice(skus),
                    "kind": "receive",
                    "qty": rng.randint(1, 9),
                },
                headers=origin.admin(),
            )
            assert r.status_code == 201
        else:
            site, sku = "north-warehouse-3", rng.choice(skus)
            r = origin.http.post(
                "/v1/reservations",
                json={
                    "reservation_id": f"rw-{seed}-{i}",
                    "order_id": f"o-rw-{i}",
                    "site_id": site,
                    "lines": [{"sku": sku, "qty": 1}],
                    "ttl_s": 600,
                },
                headers=origin.edge_auth(),
            )
            assert r.status_code in (201, 409)
            if r.status_code == 201 and rng.random() < 0.5:
                origin.http.post(f"/v1/reservations/rw-{seed}-{i}/release", headers=origin.edge_auth())


def test_after_random_writes_the_edge_equals_the_origin(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url)
    random_writes(origin, 80, seed=1)
    assert_same(origin, edge, "region:north")
    assert_same(origin, edge, "global")
    assert edge.status()["region:north"]["snapshots"] == 1


MARK = b"Parcel loaded MARK-A"


def _flip_byte(path: str, body: bytes) -> bytes | None:
    """Change one byte inside a new change's body (a skipped, already applied one would not count)."""
    if not path.startswith("/v1/feed/region:north") or MARK not in body:
        return None
    return body.replace(MARK, MARK[:-1] + b"B", 1)


def _drop_change(path: str, body: bytes) -> bytes | None:
    if not path.startswith("/v1/feed/region:north") or MARK not in body:
        return None
    page = page_decoder.decode(body)
    kept = [c for c in page.changes if MARK not in bytes(c.body)]
    return encode(
        FeedPage(
            bucket=page.bucket,
            epoch=page.epoch,
            after=page.after,
            last=page.last,
            head=page.head,
            checksum=page.checksum,
            changes=kept,
        )
    )


@pytest.mark.parametrize("tamper", [_flip_byte, _drop_change], ids=["flipped-byte", "dropped-change"])
def test_a_corrupted_page_is_refused_and_the_edge_recovers(
    origin: Origin,
    proxy: tuple[OriginProxy, ServerThread],
    start_edge: Callable[..., Edge],
    tamper: Callable[[str, bytes], bytes | None],
) -> None:
    p, server = proxy
    edge = start_edge(server.url)
    numbers = north_numbers(origin)
    p.tamper = tamper
    for tn in numbers[:3]:
        assert origin.webhook(event(tn, status="out_for_delivery", message=MARK.decode())).status_code == 202
    wait_until(lambda: p.tamper is None, what="a page to be tampered with")
    wait_until(lambda: edge.status()["region:north"]["refused_pages"] >= 1, what="the refusal")
    assert_same(origin, edge)
    st = edge.status()["region:north"]
    assert st["rebootstraps"] >= 1 and st["checksum_ok"] is True
    _, _, rows = edge_state(edge, "region:north")
    assert not any(b"MARK-B" in body for body in rows.values())
    assert "MARK-A" in edge.http.get(f"/v1/track/{numbers[0]}").text


def test_compaction_past_the_edges_cursor_leads_to_a_clean_rebootstrap(
    origin: Origin, proxy: tuple[OriginProxy, ServerThread], start_edge: Callable[..., Edge]
) -> None:
    p, server = proxy
    first = start_edge(server.url, name="compacted")
    first.http.close()
    first.server.__exit__()
    random_writes(origin, 20, seed=2)
    store = origin.open_store()
    try:
        marks = store.compact(origin.clock() + 1)
    finally:
        store.close()
    assert marks["region:north"] == head(origin, "region:north")
    p.log.clear()
    edge = start_edge(server.url, name="compacted")
    assert_same(origin, edge)
    st = edge.status()["region:north"]
    assert st["rebootstraps"] >= 1 and st["snapshots"] == 1
    assert any(e.status == 409 and "/v1/feed/region:north" in e.url for e in p.log)


def test_a_restore_to_an_older_backup_never_mixes_the_two_histories(
    tmp_path: Path, origin: Origin, proxy: tuple[OriginProxy, ServerThread], start_edge: Callable[..., Edge]
) -> None:
    p, server = proxy
    edge = start_edge(server.url)
    numbers = north_numbers(origin)
    store = origin.open_store()
    store.backup(tmp_path / "backup.sqlite3")
    store.close()
    old_epoch = edge.status()["region:north"]["epoch"]
    # A history the backup does not have: the edge follows it.
    assert (
        origin.webhook(event(numbers[0], status="returned", message="Only in the lost history")).status_code
        == 202
    )
    wait_until(
        lambda: edge.http.get(f"/v1/track/{numbers[0]}").json()["status"] == "returned", what="lost history"
    )
    # Stop the origin, restore the backup (a new epoch), start it again behind the same address.
    origin.server.__exit__()
    store = origin.open_store()
    new_epoch = store.restore(tmp_path / "backup.sqlite3")
    store.close()
    assert new_epoch != old_epoch
    with ServerThread(create_origin(origin.settings)) as restarted:
        p.upstream = restarted.url
        origin.http.base_url = restarted.url  # type: ignore[assignment]
        wait_until(
            lambda: edge.status()["region:north"]["epoch"] == new_epoch,
            what="re-bootstrap into the new epoch",
        )
        assert_same(origin, edge)
        assert_same(origin, edge, "global")
        _, _, rows = edge_state(edge, "region:north")
        assert not any(b"Only in the lost history" in body for body in rows.values())
        assert edge.http.get(f"/v1/track/{numbers[0]}").json()["status"] != "returned"


def test_edges_catch_up_in_shared_cacheable_pages_and_restart_without_snapshots(
    origin: Origin, proxy: tuple[OriginProxy, ServerThread], start_edge: Callable[..., Edge]
) -> None:
    p, server = proxy
    edges = [start_edge(server.url, name=f"e{i}", feed_limit=10) for i in range(2)]
    assert edges[0].status()["region:north"]["cursor"] == edges[1].status()["region:north"]["cursor"]
    for e in edges:
        e.http.close()
        e.server.__exit__()
    random_writes(origin, 35, seed=3)
    p.log.clear()
    edges = [start_edge(server.url, name=f"e{i}", feed_limit=10) for i in range(2)]
    for e in edges:
        assert_same(origin, e)
    assert not any("/v1/snapshot" in e.url for e in p.log), "a restarted edge requests no snapshot"
    full = [
        e for e in p.log if e.cache_control and "immutable" in e.cache_control and "region:north" in e.url
    ]
    by_url: dict[str, list[tuple[bytes, str | None]]] = {}
    for e in full:
        by_url.setdefault(e.url, []).append((e.body, e.etag))
    shared = [v for v in by_url.values() if len(v) >= 2]
    assert shared, "both edges read the same full, aligned pages"
    for responses in shared:
        assert len({body for body, _ in responses}) == 1 and len({etag for _, etag in responses}) == 1
