"""How both services are served: slow clients are cut off, refusals happen before the queue."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync.server import ServerOptions
from tests.conftest import ServerThread, wait_until


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


def app() -> Starlette:
    return Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/healthz", echo)])


class Refusing:
    """An `Admission` that admits while `open` is set."""

    def __init__(self) -> None:
        self.open = False
        self.outstanding = 0

    def admit(self, *, waited: bool) -> bool:
        self.outstanding += self.open
        return self.open

    def answered(self) -> None:
        self.outstanding -= 1


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (anything it sent first is read and dropped)."""
    try:
        while chunk := sock.recv(65536):
            assert chunk.startswith(b"HTTP/1.1 408") or not chunk.startswith(b"HTTP/"), chunk[:40]
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture
def served() -> Iterator[ServerThread]:
    options = ServerOptions(header_timeout_s=1.0, body_timeout_s=1.0)
    with ServerThread(app(), options) as server:
        yield server


def test_idle_slow_and_trickling_connections_do_not_delay_a_request_and_are_closed(
    served: ServerThread,
) -> None:
    socks: list[socket.socket] = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", served.port))
        if i % 3 == 1:  # headers that never end
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        elif i % 3 == 2:  # a body that never ends
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        s.setblocking(False)
        socks.append(s)
    stop = threading.Event()

    def trickle() -> None:  # a byte now and then on the slow ones: each resets nothing
        while not stop.wait(0.2):
            for s in socks[1::3] + socks[2::3]:
                with contextlib.suppress(OSError):
                    s.send(b"x" if s in socks[2::3] else b"X-A: b\r\n")

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        with httpx.Client(base_url=served.url, timeout=5) as client:
            assert client.post("/echo", content=b"hello").json() == {"bytes": 5}
            assert all(not closed_by_peer(s) for s in socks[:30]), "still open before the deadline"
        wait_until(lambda: all(closed_by_peer(s) for s in socks), timeout=20, what="200 slow ones closed")
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()


def test_a_request_that_arrives_whole_is_served_however_long_the_connection_lives(
    served: ServerThread,
) -> None:
    with httpx.Client(base_url=served.url, timeout=5) as client:
        for _ in range(3):
            assert client.get("/echo").status_code == 200


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    async def peer(request: Request) -> JSONResponse:
        assert request.client is not None
        return JSONResponse({"client": request.client.host})

    app = Starlette(routes=[Route("/peer", peer)])
    for trusted, expect in (((), "127.0.0.1"), (("127.0.0.1",), "203.0.113.9")):
        with (
            ServerThread(app, ServerOptions(trusted_proxies=trusted)) as server,
            httpx.Client(base_url=server.url) as client,
        ):
            r = client.get("/peer", headers={"X-Forwarded-For": "203.0.113.9"})
            assert r.json() == {"client": expect}, trusted


def test_a_refused_request_is_a_503_at_once_and_the_connection_goes_on() -> None:
    a = app()
    admission = Refusing()
    a.state.admission = admission
    with ServerThread(a) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        r = client.post("/echo", content=b"x" * 5000)  # its body read and dropped
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "overloaded" and r.headers["x-request-id"].startswith("shed-")
        assert client.get("/healthz").status_code == 200, "probes are never refused"
        admission.open = True
        assert client.post("/echo", content=b"abc").json() == {"bytes": 3}, "the same connection works"
        assert admission.outstanding == 0, "what was admitted was counted until answered"


def test_a_request_pipelined_behind_a_refusal_is_answered_after_it_in_order() -> None:
    class SecondChance(Refusing):
        def admit(self, *, waited: bool) -> bool:
            self.outstanding += waited
            return waited  # the connection's next request after a refusal goes first

    a = app()
    a.state.admission = SecondChance()
    with ServerThread(a) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
        )
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2 or not answers.endswith(b"}"):
            answers += s.recv(65536)
        first, second = answers.split(b"HTTP/1.1 ")[1:3]
        assert first.startswith(b"503") and second.startswith(b"200") and b'{"bytes":2}' in second
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection goes on
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    assert a.state.admission.outstanding == 0
