"""Shared fixtures: real servers on free loopback ports, a movable clock, signed webhooks."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql
from starlette.applications import Starlette

from edge.app import create_app as create_edge
from edge.settings import EdgeSettings
from models.world import World, WorldSpec
from origin.app import create_app as create_origin
from origin.seed import seed_world
from origin.settings import OriginSettings
from origin.signatures import sign
from origin.store import Store, open_store
from sync.server import ServerOptions
from sync.server import config as server_config

WEBHOOK_KEY = b"test-webhook-secret-0123456789ab"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
EDGE_TOKEN = "edge-token"
ADMIN_TOKEN = "admin-token"
STORE_TOKEN = "store-token"
EASYPOST_SECRET = "test-easypost-secret"
AFTERSHIP_SECRET = "test-aftership-secret"
SMALL = WorldSpec(seed=11, regions=2, sites_per_region=3, products=40, shipments=120)
PG_DSN = os.environ.get("WAYPOST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
# The tests whose origin runs on both stores (`store_url`); any other test's origin is SQLite's.
BOTH_STORES = ("tests/origin/", "tests/edge/test_follower.py")


class Clock:
    """Time the tests move by hand; starts at the real now so signatures look current."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ServerThread:
    """A uvicorn server for `app` on a free loopback port, in a thread."""

    def __init__(self, app: Starlette, options: ServerOptions | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = options or ServerOptions()
        config = server_config(
            app, host="127.0.0.1", port=self.port, options=options, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), what="server start")
        assert self.server.started, "server failed to start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # do not wait out open long-polls
        self.thread.join(timeout=15)
        self.sock.close()


def wait_until(cond: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `cond` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# The tests' sealing key (a fixed one, so a subprocess started by a test opens what it seals).
PII_ENCRYPTION_KEYS = "t1:" + base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")


def origin_settings(data_dir: Path, clock: Clock, **overrides: Any) -> OriginSettings:
    env = {
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
    return OriginSettings.from_env(env, data_dir=data_dir, clock=clock, **overrides)


def edge_settings(
    origin_url: str, region: str, data_dir: Path, clock: Clock, **overrides: Any
) -> EdgeSettings:
    env = {
        "WAYPOST_EDGE_TOKEN": EDGE_TOKEN,
        "WAYPOST_STORE_TOKEN": STORE_TOKEN,
        "WAYPOST_LINK_SECRET": "link-secret",
        "WAYPOST_POSTCODE_KEY": "postcode-key",
    }
    # Tests poll edges in tight loops: lookups are unlimited unless a test sets a rate.
    # Allotments set stock aside behind a test's back: off unless the test is about them.
    overrides = {"feed_wait_s": 5, "lookup_rate": 1e9, "allotments": False, **overrides}
    return EdgeSettings.from_env(
        env, origin_url=origin_url, region=region, data_dir=data_dir, clock=clock, **overrides
    )


@dataclass
class Origin:
    url: str
    settings: OriginSettings
    clock: Clock
    world: World
    http: httpx.Client
    server: ServerThread
    seen: list[str] = field(default_factory=list)

    def webhook(
        self,
        event: dict[str, Any] | bytes,
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
        key: bytes = WEBHOOK_KEY,
        path: str = "/v1/webhooks/tracking",
    ) -> httpx.Response:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        msg_id = msg_id or f"msg_{time.time_ns()}_{len(self.seen)}"
        self.seen.append(msg_id)
        ts = int(self.clock()) if timestamp is None else timestamp
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(key, msg_id, ts, body),
            "content-type": "application/json",
        }
        return self.http.post(path, content=body, headers=headers)

    def place_order(
        self,
        order_id: str,
        *,
        region: str = "north",
        lines: list[dict[str, Any]] | None = None,
        postcode: str = "20095",
        customer: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        """POST /v1/orders for a customer living in `region`'s city."""
        r = next(x for x in self.world.regions if x.name == region)
        body = {
            "order_id": order_id,
            "customer": customer
            or {"name": "Erika Mustermann", "email": "erika@example.com", "phone": "+49 40 1234567"},
            "destination": {
                "lat": r.lat + 0.01234,
                "lon": r.lon - 0.01234,
                "postcode": postcode,
                "city": r.city,
                "country": "DE",
                "street": "Hauptstraße 5",
            },
            "lines": lines or [{"sku": self.world.products[0].sku, "qty": 1}],
        }
        headers = {**self.admin(), **({"Idempotency-Key": key} if key else {})}
        return self.http.post("/v1/orders", json=body, headers=headers)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def open_store(self) -> Store:
        """Another handle on the origin's store, as a second process would open it."""
        return open_store(self.settings.store_url, self.settings.data_dir, self.clock)

    def edge_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {EDGE_TOKEN}"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(clock: Clock) -> World:
    from models.world import world_now

    return World(SMALL, world_now(clock()))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the origin's tests (those in BOTH_STORES) once per store: SQLite, then PostgreSQL."""
    path = metafunc.definition.path.relative_to(metafunc.config.rootpath).as_posix()
    if "store_url" in metafunc.fixturenames and path.startswith(BOTH_STORES):
        metafunc.parametrize(
            "store_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
        )


@functools.cache
def _pg_unreachable() -> str | None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at WAYPOST_TEST_PG_DSN={PG_DSN} is unreachable: {first}"


def require_postgres() -> None:
    """Skip the test when no server answers; in CI (CI=true) fail it instead."""
    reason = _pg_unreachable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def _pg_url(dsn: str, **query: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(query="&".join(q for q in (parts.query, urlencode(query)) if q)))


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A new, empty schema on the test server (dropped afterwards); yields a URL that uses it.

    A schema rather than a database: it is ten times quicker to make, and the store scopes its
    NOTIFY channel to its schema, so tests never wake each other's long-polls.
    """
    require_postgres()
    name = f"waypost_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield _pg_url(PG_DSN, options=f"-csearch_path={name}")
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The origin's store: None (DIR's SQLite file) or the URL of a fresh PostgreSQL schema."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    with pg_schema() as url:
        yield url


@pytest.fixture
def origin(tmp_path: Path, clock: Clock, world: World, store_url: str | None) -> Iterator[Origin]:
    data = tmp_path / "origin"
    settings = origin_settings(data, clock, store_url=store_url)
    store = open_store(store_url, data, clock)
    seed_world(store, world, settings.privacy_keys())
    store.close()
    with (
        ServerThread(create_origin(settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        yield Origin(server.url, settings, clock, world, http, server)


@dataclass
class Edge:
    url: str
    settings: EdgeSettings
    http: httpx.Client
    server: ServerThread

    def status(self) -> dict[str, Any]:
        return {b["bucket"]: b for b in self.http.get("/v1/sync/status").json()["buckets"]}


@pytest.fixture
def start_edge(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Edge]]:
    """Start an edge (as many as a test needs); each is stopped at the end of the test."""
    stack: list[tuple[ServerThread, httpx.Client]] = []

    def start(
        origin_url: str,
        region: str = "north",
        name: str = "edge",
        server_options: ServerOptions | None = None,
        **overrides: Any,
    ) -> Edge:
        settings = edge_settings(origin_url, region, tmp_path / name, clock, **overrides)
        server = ServerThread(create_edge(settings), server_options).__enter__()
        http = httpx.Client(base_url=server.url, timeout=30)
        stack.append((server, http))
        wait_until(lambda: http.get("/readyz").status_code == 200, what="edge ready")
        return Edge(server.url, settings, http, server)

    yield start
    for server, http in reversed(stack):
        http.close()
        server.__exit__()


@dataclass
class Proxied:
    method: str
    url: str
    status: int
    etag: str | None
    cache_control: str | None
    body: bytes


class OriginProxy:
    """A real HTTP hop between edges and the origin that logs, corrupts or cuts the traffic.

    `tamper(path, body)` may rewrite one response body (it returns None to pass it through);
    `down = True` answers 503 to everything, like an origin that is unreachable.
    """

    def __init__(self, upstream: str) -> None:
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.upstream = upstream
        self.log: list[Proxied] = []
        self.tamper: Callable[[str, bytes], bytes | None] | None = None
        self.down = False

        async def forward(request: Request) -> Response:
            if self.down:
                return Response(b"origin down", status_code=503)
            async with httpx.AsyncClient(timeout=60) as client:
                r = await client.request(
                    request.method,
                    self.upstream + request.url.path,
                    params=request.query_params,
                    headers={
                        k: v
                        for k, v in request.headers.items()
                        if k.lower() not in ("host", "content-length")
                    },
                    content=await request.body(),
                )
            body = r.content
            if self.tamper is not None and r.status_code == 200:
                changed = self.tamper(request.url.path, body)
                if changed is not None:
                    body = changed
                    self.tamper = None
            self.log.append(
                Proxied(
                    request.method,
                    str(request.url.path) + "?" + str(request.url.query),
                    r.status_code,
                    r.headers.get("etag"),
                    r.headers.get("cache-control"),
                    body,
                )
            )
            keep = {
                k: v
                for k, v in r.headers.items()
                if k.lower() in ("content-type", "etag", "cache-control", "vary")
            }
            return Response(body, status_code=r.status_code, headers=keep)

        self.app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


@pytest.fixture
def proxy(origin: Origin) -> Iterator[tuple[OriginProxy, ServerThread]]:
    p = OriginProxy(origin.url)
    with ServerThread(p.app) as server:
        yield p, server
