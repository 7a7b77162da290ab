"""Several origin processes on one PostgreSQL serve one ledger and one change log.

The HTTP tests run real `python -m origin serve --store postgresql://…` subprocesses on loopback.
The expiry and migration tests open several stores in this process instead: each has its own
pool of connections, which is all PostgreSQL sees of a process, and the clock can be moved.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from models.world import World
from origin import ledger, ledger_routes
from origin.seed import seed_world
from origin.store import open_store
from origin.store.postgres import MIGRATIONS, to_pg
from sync.entities import Line
from sync.wire import FrameReader, header_decoder
from tests.conftest import (
    ADMIN_TOKEN,
    AFTERSHIP_SECRET,
    EASYPOST_SECRET,
    EDGE_TOKEN,
    PII_ENCRYPTION_KEYS,
    WEBHOOK_SECRET,
    Clock,
    Edge,
    Origin,
    OriginProxy,
    ServerThread,
    origin_settings,
    pg_schema,
    wait_until,
)
from tests.edge.test_follower import STATUSES, assert_same, head, north_numbers
from tests.origin.test_ledger import SITE, set_available, stock
from tests.origin.test_webhooks import current, event

pytestmark = pytest.mark.postgres
WRITERS = 8

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "WAYPOST_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "WAYPOST_EDGE_TOKEN": EDGE_TOKEN,
    "WAYPOST_ADMIN_TOKEN": ADMIN_TOKEN,
    "WAYPOST_LINK_SECRET": "link-secret",
    "WAYPOST_PII_KEY": "pii-key",
    "WAYPOST_POSTCODE_KEY": "postcode-key",
    "WAYPOST_PII_ENCRYPTION_KEYS": PII_ENCRYPTION_KEYS,
    "WAYPOST_EASYPOST_SECRET": EASYPOST_SECRET,
    "WAYPOST_AFTERSHIP_SECRET": AFTERSHIP_SECRET,
}


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(store_url: str, data: Path, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """`python -m origin serve --store …` on a free port; returns once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WAYPOST_STORE"} | ENV
    with log.open("wb") as out:
        args = ["serve", "--data", str(data), "--store", store_url, "--port", str(port)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "origin", *args, "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"origin exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=30, what=f"origin process on port {port}")
    return url, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def origins(tmp_path: Path, clock: Clock, world: World, pg_url: str) -> Iterator[list[Origin]]:
    """Two origin processes on one seeded PostgreSQL schema, as `Origin`s the helpers accept."""
    store = open_store(pg_url, tmp_path, clock)
    seed_world(store, world)
    store.close()
    procs: list[subprocess.Popen[bytes]] = []
    out: list[Origin] = []
    try:
        for name in ("a", "b"):
            data = tmp_path / f"origin-{name}"
            url, proc = serve(pg_url, data, tmp_path / f"origin-{name}.log")
            procs.append(proc)
            settings = origin_settings(data, clock, store_url=pg_url)
            http = httpx.Client(base_url=url, timeout=30)
            out.append(Origin(url, settings, clock, world, http, server=None))  # type: ignore[arg-type]
        yield out
    finally:
        for o in out:
            o.http.close()
        for proc in procs:
            stop(proc)


def feed_seqs(origin: Origin, bucket: str) -> list[int]:
    """Every sequence the feed serves from 0 to the head, in the order served."""
    seqs: list[int] = []
    after = 0
    while True:
        r = origin.http.get(
            f"/v1/feed/{bucket}",
            params={"after": after, "limit": 1000},
            headers={**origin.edge_auth(), "accept": "application/json"},
        )
        assert r.status_code == 200, r.text
        page = r.json()
        seqs += [c["seq"] for c in page["changes"]]
        if not page["changes"]:
            return seqs
        after = page["last"]


def snapshot_seq(proxy: OriginProxy, bucket: str) -> int:
    """The sequence of the one snapshot an edge took of `bucket` through `proxy`."""
    bodies = [e.body for e in proxy.log if e.url.startswith(f"/v1/snapshot/{bucket}?") and e.status == 200]
    assert len(bodies) == 1, f"{len(bodies)} snapshots of {bucket}"
    return int(header_decoder.decode(next(iter(FrameReader().feed(bodies[0])))).seq)


def stock_rows(pg_url: str) -> dict[tuple[str, str], tuple[int, int]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT site_id, sku, on_hand, reserved FROM stock_level").fetchall()
    return {(site, sku): (int(on_hand), int(reserved)) for site, sku, on_hand, reserved in rows}


def test_two_processes_eight_writers_two_edges_one_state_no_gaps_no_oversell(
    origins: list[Origin], start_edge: Callable[..., Edge], world: World, pg_url: str
) -> None:
    a, b = origins
    contested, available = world.products[1].sku, 20
    set_available(a, SITE, contested, available)
    proxies = [OriginProxy(o.url) for o in origins]
    with ServerThread(proxies[0].app) as via_a, ServerThread(proxies[1].app) as via_b:
        edges = [start_edge(via_a.url, name="edge-a"), start_edge(via_b.url, name="edge-b")]
        before = stock_rows(pg_url)
        numbers = north_numbers(a)
        sites = [s.site_id for s in world.sites if s.region == "north"]
        skus = [p.sku for p in world.products if p.sku != contested]
        received: dict[tuple[str, str], int] = {}
        granted: list[str] = []
        lock = threading.Lock()

        def writer(i: int) -> None:
            """Webhooks, stock movements and holds, each retried now and then via the other process."""
            rng = random.Random(i)
            here, there = origins[i % 2], origins[(i + 1) % 2]
            for n in range(30):
                op = rng.random()
                if op < 0.4:
                    at = f"2031-02-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{i:02d}:00Z"
                    ev = event(rng.choice(numbers), status=rng.choice(STATUSES), occurred_at=at)
                    r = here.webhook(ev, msg_id=f"w-{i}-{n}")
                    assert r.status_code == 202, r.text
                    if rng.random() < 0.3:
                        again = there.webhook(ev, msg_id=f"w-{i}-{n}")
                        assert again.status_code == 200 and again.json()["status"] == "replay"
                elif op < 0.65:
                    site, sku, qty = rng.choice(sites), rng.choice(skus), rng.randint(1, 5)
                    body = {"site_id": site, "sku": sku, "kind": "receive", "qty": qty}
                    headers = {**here.admin(), "Idempotency-Key": f"mv-{i}-{n}"}
                    r = here.http.post("/v1/stock/movements", json=body, headers=headers)
                    assert r.status_code == 201, r.text
                    with lock:
                        received[(site, sku)] = received.get((site, sku), 0) + qty
                    if rng.random() < 0.3:
                        again = there.http.post("/v1/stock/movements", json=body, headers=headers)
                        assert again.status_code == 201 and again.headers["idempotency-replayed"] == "true"
                        assert again.json() == r.json()
                else:
                    rid = f"h-{i}-{n}"
                    body = {
                        "reservation_id": rid,
                        "order_id": f"o-{rid}",
                        "site_id": SITE,
                        "lines": [{"sku": contested, "qty": 1}],
                        "ttl_s": 3600,
                    }
                    r = here.http.post("/v1/reservations", json=body, headers=here.edge_auth())
                    assert r.status_code in (201, 409), r.text
                    if r.status_code == 201:
                        with lock:
                            granted.append(rid)
                    else:
                        assert r.json()["error"] == "insufficient_stock"

        with ThreadPoolExecutor(WRITERS) as pool:
            for f in [pool.submit(writer, i) for i in range(WRITERS)]:
                f.result()

        # No oversell: exactly as many holds as there was stock, never below zero anywhere.
        assert len(granted) == available
        assert stock(b, SITE, contested)["available"] == 0
        after = stock_rows(pg_url)
        for key, (on_hand, reserved) in after.items():
            assert on_hand >= reserved >= 0, key
        for key, qty in received.items():
            assert after[key][0] == before.get(key, (0, 0))[0] + qty, f"{key}: each movement applied once"

        # One state, whichever process answers; every sequence once, in order, no gaps.
        listing = [o.http.get("/v1/buckets", headers=o.edge_auth()).json() for o in origins]
        assert listing[0] == listing[1]
        for bucket in ("global", "region:north"):
            assert feed_seqs(a, bucket) == list(range(1, head(a, bucket) + 1))

        # Each edge ends with exactly the origin's state, having applied each change once.
        for edge, proxy in zip(edges, proxies, strict=True):
            for bucket in ("region:north", "global"):
                assert_same(a, edge, bucket)
                st = edge.status()[bucket]
                assert (st["snapshots"], st["rebootstraps"], st["refused_pages"]) == (1, 0, 0)
                assert st["changes"] == head(a, bucket) - snapshot_seq(proxy, bucket)
        for edge in edges:  # before their proxies go
            edge.http.close()
            edge.server.__exit__()


def feed_waiting(origin: Origin) -> float:
    text = origin.http.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("waypost_feed_waiting "))
    return float(line.split()[1])


def test_a_long_poll_on_one_process_wakes_on_a_commit_through_the_other(origins: list[Origin]) -> None:
    a, b = origins
    tn = north_numbers(a)[0]
    start = head(a, "region:north")
    got: dict[str, Any] = {}

    def poll() -> None:
        began = time.monotonic()
        r = a.http.get(
            "/v1/feed/region:north",
            params={"after": start, "wait": 25},
            headers={**a.edge_auth(), "accept": "application/json"},
        )
        got.update(response=r, took=time.monotonic() - began)

    waiter = threading.Thread(target=poll)
    waiter.start()
    wait_until(lambda: feed_waiting(a) == 1, what="the long-poll to wait in process A")
    assert b.webhook(event(tn, status="delivered", message="Delivered via B")).status_code == 202
    waiter.join(timeout=30)
    page = got["response"].json()
    assert [(c["seq"], c["key"]) for c in page["changes"]] == [(start + 1, tn)]
    assert got["took"] < 20, "the long-poll waited out its time instead of waking on B's commit"


def test_an_idempotency_key_is_honoured_whichever_process_gets_the_retry(
    origins: list[Origin], world: World
) -> None:
    a, b = origins
    sku = world.products[2].sku
    on_hand = stock(a, SITE, sku)["on_hand"]
    body = {"site_id": SITE, "sku": sku, "kind": "receive", "qty": 3}

    def post(o: Origin, key: str) -> httpx.Response:
        return o.http.post("/v1/stock/movements", json=body, headers={**o.admin(), "Idempotency-Key": key})

    first, retry = post(a, "k-once"), post(b, "k-once")
    assert first.status_code == retry.status_code == 201
    assert retry.headers["idempotency-replayed"] == "true" and retry.json() == first.json()
    for n in range(6):  # the same key through both processes at the same moment
        barrier = threading.Barrier(2)

        def racing(
            o: Origin, key: str = f"k-race-{n}", barrier: threading.Barrier = barrier
        ) -> httpx.Response:
            barrier.wait()
            return post(o, key)

        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(racing, [a, b]))
        ran = [r for r in both if r.status_code == 201 and "idempotency-replayed" not in r.headers]
        assert len(ran) == 1, [(r.status_code, r.text) for r in both]
        for r in both:
            assert r.status_code == 201 or r.json()["error"] == "in_flight"
        replay = post(b, f"k-race-{n}")
        assert replay.headers["idempotency-replayed"] == "true" and replay.json() == ran[0].json()
    assert stock(b, SITE, sku)["on_hand"] == on_hand + 3 * 7


def test_holds_expire_exactly_once_whichever_process_runs_expiry(
    pg_url: str, tmp_path: Path, clock: Clock, world: World
) -> None:
    stores = [open_store(pg_url, tmp_path, clock) for _ in range(3)]
    try:
        seed_world(stores[0], world)
        sku = world.products[3].sku
        with stores[0].transaction() as tx:
            ledger.record_movement(tx, "m-expiry", SITE, sku, "receive", 100)
        holds = [f"x{i}" for i in range(40)]
        for i, rid in enumerate(holds):
            with stores[i % 3].transaction() as tx:
                ledger.reserve(tx, rid, f"o-{rid}", SITE, [Line(sku, 2)], ttl_s=60 + i % 4)
        reserved = stock_rows(pg_url)[(SITE, sku)][1]
        clock.advance(65)
        barrier = threading.Barrier(6)

        def sweep(k: int) -> None:
            barrier.wait()
            while ledger_routes.expire_due(stores[k % 3]):
                pass

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(sweep, range(6)))
        with psycopg.connect(pg_url) as conn:
            kinds = conn.execute(
                "SELECT reservation_id, array_agg(kind ORDER BY kind) FROM movement"
                " WHERE reservation_id IS NOT NULL GROUP BY reservation_id"
            ).fetchall()
            states = conn.execute("SELECT DISTINCT state FROM reservation").fetchall()
        assert dict(kinds) == {rid: ["expire", "reserve"] for rid in holds}
        assert states == [("expired",)]
        assert stock_rows(pg_url)[(SITE, sku)][1] == reserved - 2 * len(holds)
    finally:
        for s in stores:
            s.close()


def test_origin_processes_starting_at_once_migrate_once(pg_url: str, tmp_path: Path, clock: Clock) -> None:
    barrier = threading.Barrier(4)

    def start(_: int) -> str:
        barrier.wait()
        store = open_store(pg_url, tmp_path, clock)
        try:
            return store.epoch()
        finally:
            store.close()

    with ThreadPoolExecutor(4) as pool:
        epochs = set(pool.map(start, range(4)))
    assert len(epochs) == 1
    with psycopg.connect(pg_url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migration ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_an_event_racing_its_shipments_registration_is_never_left_parked(origins: list[Origin]) -> None:
    """A webhook for a number being registered in the other process at that moment still lands."""
    a, b = origins
    set_available(a, SITE, a.world.products[0].sku, 50)  # what place_order's one line ships
    for n in range(8):
        tn, order = f"RACE{n:04d}", f"o-race-{n}"
        assert a.place_order(order).status_code == 201
        barrier = threading.Barrier(2)

        def webhook(tn: str = tn, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            return a.webhook(event(tn, status="in_transit", message="Racing")).status_code

        def register(tn: str = tn, order: str = order, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            body = {"tracking_number": tn, "carrier": "ups", "order_id": order, "site_id": SITE}
            return b.http.post("/v1/shipments", json=body, headers=b.admin()).status_code

        with ThreadPoolExecutor(2) as pool:
            hooked, registered = pool.submit(webhook), pool.submit(register)
            assert hooked.result() == 202 and registered.result() == 201
        shipment = current(a, tn)
        assert [e.status for e in shipment.events] == ["in_transit"], tn


def test_sql_is_translated_once_for_psycopg() -> None:
    assert to_pg("SELECT '?', '%' FROM t WHERE a = ? AND b LIKE 'x%' AND c = ?") == (
        "SELECT '?', '%%' FROM t WHERE a = %s AND b LIKE 'x%%' AND c = %s"
    )
