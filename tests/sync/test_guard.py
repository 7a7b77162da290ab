"""Every request gets an id; whatever escapes a handler is one logged JSON 500, never plain text."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sync.guard import NO_ROUTE_HANDLERS, RequestGuard

log = logging.getLogger("waypost.test")


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"request_id": request.scope["request_id"]})


async def broken(request: Request) -> JSONResponse:
    raise KeyError("a bug")


def client() -> TestClient:
    app = Starlette(
        routes=[Route("/ok", ok), Route("/broken", broken)],
        middleware=[Middleware(RequestGuard, logger=log, refuse_nul=True)],
        exception_handlers=dict(NO_ROUTE_HANDLERS),
    )
    return TestClient(app, raise_server_exceptions=False)


def test_each_request_has_an_id_the_clients_when_it_is_a_short_token() -> None:
    with client() as c:
        ids = {c.get("/ok").headers["x-request-id"] for _ in range(50)}
        assert len(ids) == 50, "fresh ids never repeat"
        r = c.get("/ok", headers={"X-Request-ID": "from-the-store.1"})
        assert r.headers["x-request-id"] == "from-the-store.1" == r.json()["request_id"]
        r = c.get("/ok", headers={"X-Request-ID": "no spaces or <tags>"})
        assert r.headers["x-request-id"] not in ("no spaces or <tags>", "")


def test_an_unhandled_error_is_a_json_500_logged_once_with_its_id(caplog: pytest.LogCaptureFixture) -> None:
    with client() as c, caplog.at_level(logging.ERROR, logger="waypost.test"):
        r = c.get("/broken", headers={"X-Request-ID": "trace-me"})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "internal" and r.json()["request_id"] == "trace-me"
    (record,) = [rec for rec in caplog.records if rec.name == "waypost.test"]
    assert "trace-me" in record.getMessage() and record.exc_info is not None


def test_a_nul_in_the_path_and_unknown_routes_are_json_4xx() -> None:
    with client() as c:
        r = c.get("/ok%00")
        assert r.status_code == 400 and r.json()["error"] == "invalid_path"
        r = c.post("/ok")
        assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
        assert c.get("/nope").json()["error"] == "not_found"
