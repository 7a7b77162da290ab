"""The feed, snapshot and bucket list, over HTTP against a real origin."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from sync import checksum as cks
from sync.wire import FeedPage, FrameReader, header_decoder, page_decoder, rows_decoder
from tests.conftest import Origin, wait_until
from tests.origin.test_webhooks import event, head, shipment_in


def feed(origin: Origin, bucket: str = "region:north", **params: Any) -> httpx.Response:
    return origin.http.get(f"/v1/feed/{bucket}", params=params, headers=origin.edge_auth())


def test_feed_needs_the_edge_token(origin: Origin) -> None:
    assert origin.http.get("/v1/feed/global").status_code == 401
    assert origin.http.get("/v1/feed/global", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert feed(origin, "global").status_code == 200


def test_long_poll_returns_the_change_once_it_commits(origin: Origin) -> None:
    s = shipment_in(origin)
    at = head(origin)
    result: dict[str, httpx.Response] = {}
    poller = threading.Thread(target=lambda: result.setdefault("r", feed(origin, after=at, wait=20)))
    poller.start()

    def waiting() -> bool:
        return "waypost_feed_waiting 1.0" in origin.http.get("/metrics").text

    wait_until(waiting, what="the long-poll to be waiting")
    assert origin.webhook(event(s.tracking_number)).status_code == 202
    poller.join(timeout=20)
    page = page_decoder.decode(result["r"].content)
    assert [c.key for c in page.changes] == [s.tracking_number]
    assert page.last == at + 1 and page.head == at + 1


def test_long_poll_with_nothing_new_returns_an_empty_tail_page(origin: Origin) -> None:
    at = head(origin)
    page = page_decoder.decode(feed(origin, after=at, wait=1).content)
    assert page.changes == [] and page.last == at and page.head == at


def test_snapshot_plus_feed_from_its_sequence_equals_the_origins_state(origin: Origin) -> None:
    r = origin.http.get("/v1/snapshot/region:north", headers=origin.edge_auth())
    reader = FrameReader()
    frames = list(reader.feed(r.content))
    header = header_decoder.decode(frames[0])
    state = {(row.kind, row.key): bytes(row.body) for f in frames[1:] for row in rows_decoder.decode(f)}
    # Changes land after the snapshot.
    for s in list(origin.world.shipments())[:40]:
        if origin.world.region_of(s.site_id) == "north":
            assert origin.webhook(event(s.tracking_number, status="delivered")).status_code == 202
    after = header.seq
    checksum = header.checksum
    while True:
        page = page_decoder.decode(feed(origin, after=after, limit=7).content)
        for c in page.changes:
            old = state.pop((c.kind, c.key), None)
            if old is not None:
                checksum = cks.sub(checksum, cks.entity_hash(c.kind, c.key, old))
            if c.op == "put":
                state[(c.kind, c.key)] = bytes(c.body)
                checksum = cks.add(checksum, cks.entity_hash(c.kind, c.key, bytes(c.body)))
        assert checksum == page.checksum, f"checksum differs at seq {page.last}"
        after = page.last
        if page.head is not None and page.last == page.head:
            break
    final = origin.http.get("/v1/snapshot/region:north", headers=origin.edge_auth())
    frames = list(FrameReader().feed(final.content))
    fresh = {(row.kind, row.key): bytes(row.body) for f in frames[1:] for row in rows_decoder.decode(f)}
    assert fresh == state
    assert header_decoder.decode(frames[0]).checksum == checksum


def test_full_aligned_pages_are_immutable_and_others_carry_head(origin: Origin) -> None:
    full = feed(origin, after=10, limit=10)
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert full.headers["vary"] == "Accept" and full.headers["etag"]
    page: FeedPage = page_decoder.decode(full.content)
    assert page.head is None and len(page.changes) == 10 and page.last == 20
    unaligned = feed(origin, after=11, limit=10)
    assert "max-age=1" in unaligned.headers["cache-control"]
    assert page_decoder.decode(unaligned.content).head == head(origin)
    again = feed(origin, after=10, limit=10)
    assert again.content == full.content and again.headers["etag"] == full.headers["etag"]
    not_modified = origin.http.get(
        "/v1/feed/region:north",
        params={"after": 10, "limit": 10},
        headers={**origin.edge_auth(), "If-None-Match": full.headers["etag"]},
    )
    assert not_modified.status_code == 304


def test_json_feed_has_the_same_shape_with_decimal_checksums(origin: Origin) -> None:
    r = origin.http.get(
        "/v1/feed/region:north",
        params={"after": 0, "limit": 3},
        headers={**origin.edge_auth(), "Accept": "application/json"},
    )
    body = r.json()
    assert r.headers["content-type"].startswith("application/json")
    assert set(body) == {"bucket", "epoch", "after", "last", "checksum", "changes"}
    assert isinstance(body["checksum"], str) and body["checksum"].isdigit()
    assert set(body["changes"][0]) == {"seq", "kind", "key", "op", "body"}
    assert body["changes"][0]["body"]["site_id"]


def test_resync_for_wrong_epoch_or_cursor_beyond_head(origin: Origin) -> None:
    r = feed(origin, epoch="not-the-epoch", after=0)
    assert r.status_code == 409 and r.json()["error"] == "resync" and r.json()["epoch"]
    r = feed(origin, after=head(origin) + 5)
    assert r.status_code == 409 and r.json()["error"] == "resync"


def test_bad_parameters_and_unknown_buckets_are_4xx(origin: Origin) -> None:
    assert feed(origin, after="x").status_code == 400
    assert "limit" in feed(origin, limit=100000).json()["detail"]
    assert feed(origin, "region:atlantis").status_code == 404
    assert origin.http.get("/v1/snapshot/nope", headers=origin.edge_auth()).status_code == 404


def test_buckets_lists_epoch_head_watermark_checksum(origin: Origin) -> None:
    rows = origin.http.get("/v1/buckets", headers=origin.edge_auth()).json()
    assert {r["bucket"] for r in rows} == {"global", "region:north", "region:south"}
    for r in rows:
        assert r["watermark"] == 0 and r["head"] > 0 and int(r["checksum"]) > 0
    epochs = {r["epoch"] for r in rows}
    assert len(epochs) == 1


def test_ndjson_snapshot(origin: Origin) -> None:
    r = origin.http.get("/v1/snapshot/global", headers={**origin.edge_auth(), "Accept": "application/json"})
    lines = r.text.splitlines()
    header = json.loads(lines[0])
    assert header["bucket"] == "global" and int(header["checksum"]) > 0
    kinds: dict[str, int] = {}
    for line in lines[1:]:
        kind = json.loads(line)["kind"]
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds["site"] == len(origin.world.sites) and kinds["product"] == len(origin.world.products)
    assert kinds["model_release"] == 3 and kinds["copurchase"] > 0
