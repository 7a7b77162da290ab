"""nginx with `benchmarks/nginx/origin-cache.conf` in front of a real origin.

What the README's proxy_cache section relies on: a second edge gets every full page from the
cache with the origin's exact bytes; tail long-polls, 409s and requests without the edge token
are never answered from the cache.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.proxy_cache import Nginx, catch_up, find_nginx
from sync.wire import MSGPACK
from tests.conftest import EDGE_TOKEN, Origin, wait_until

BUCKET = "region:north"
LIMIT = 10  # small pages, so the tiny world has a dozen or more full ones
AUTH = {"Authorization": f"Bearer {EDGE_TOKEN}", "Accept": MSGPACK}


@pytest.fixture
def proxy(origin: Origin) -> Iterator[Nginx]:
    if find_nginx() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is missing: .ci/run installs nginx-light for this test")
        pytest.skip("nginx is not installed (apt-get install nginx-light); CI runs this test")
    with Nginx(origin.url, env=dict(os.environ)).running() as nginx:
        yield nginx


def page(http: httpx.Client, epoch: str, after: int, **extra: int | str) -> httpx.Response:
    """A feed request exactly as `sync.client.FeedClient.page` sends it."""
    params: dict[str, int | str] = {"epoch": epoch, "after": after, "limit": LIMIT, **extra}
    return http.get(f"/v1/feed/{BUCKET}", params=params, headers=AUTH)


def bucket_head(origin: Origin) -> tuple[str, int]:
    rows = origin.http.get("/v1/buckets", headers=origin.edge_auth()).json()
    row = next(r for r in rows if r["bucket"] == BUCKET)
    return row["epoch"], int(row["head"])


def test_a_second_edge_reads_every_full_page_from_the_cache_byte_for_byte(
    origin: Origin, proxy: Nginx
) -> None:
    epoch, head = bucket_head(origin)
    full = head // LIMIT
    assert full >= 5, "the world is too small to span several pages"

    first = asyncio.run(catch_up(proxy.url, EDGE_TOKEN, BUCKET, epoch, 0, LIMIT))
    assert first.cache == {"MISS": first.requests}

    with httpx.Client(base_url=proxy.url) as via_nginx:
        for n in range(full):
            cached = page(via_nginx, epoch, n * LIMIT)
            fresh = page(origin.http, epoch, n * LIMIT)
            assert cached.status_code == 200
            assert cached.headers["x-cache-status"] == "HIT", f"page after={n * LIMIT}"
            assert cached.content == fresh.content
            assert cached.headers["etag"] == fresh.headers["etag"]
            assert "immutable" in cached.headers["cache-control"]
    upstream = [x for x in proxy.feed_log() if x.from_origin]
    assert len(upstream) == first.requests, "the second edge cost the origin nothing"


def test_long_polls_resyncs_and_requests_without_the_token_never_come_from_the_cache(
    origin: Origin, proxy: Nginx
) -> None:
    epoch, head = bucket_head(origin)
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        assert page(http, epoch, 0).headers["x-cache-status"] == "MISS"
        assert page(http, epoch, 0).headers["x-cache-status"] == "HIT"

        # The same URL and Accept as the cached page: only the credentials differ.
        params = {"epoch": epoch, "after": 0, "limit": LIMIT}
        for credentials in ({}, {"Authorization": "Bearer not-the-token"}):
            r = http.get(f"/v1/feed/{BUCKET}", params=params, headers={"Accept": MSGPACK, **credentials})
            assert r.status_code == 401, f"a cached page reached a request with {credentials or 'no token'}"

        for _ in range(2):
            tail = page(http, epoch, head, wait=1)
            assert tail.status_code == 200
            assert tail.headers["x-cache-status"] == "BYPASS"
            resync = page(http, "not-the-epoch", 0)
            assert resync.status_code == 409
            assert resync.headers["x-cache-status"] == "MISS"

    # nginx writes a request's log line after its response: wait for the last one to land.
    log = wait_until(
        lambda: (lines := proxy.feed_log()) and lines[-1].status == 409 and lines,
        what="nginx's log line of the last request",
    )
    assert sum(1 for x in log if x.from_origin and "wait=1" in x.uri) == 2
    assert sum(1 for x in log if x.from_origin and x.status == 409) == 2
