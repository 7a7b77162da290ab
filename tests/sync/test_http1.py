"""The edge's lean HTTP/1.1 pool, against a real uvicorn server and against raw sockets that
misbehave the way a real origin can (closing idle connections, never answering, cutting off)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sync.http1 import ConnectionFailed, Http1Pool
from tests.conftest import ServerThread

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(request: Request) -> Response:
    body = await request.body()
    key = request.headers.get("idempotency-key", "")
    return Response(b"%s|%s|%s" % (request.method.encode(), key.encode(), body), status_code=201)


async def chunked(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    return StreamingResponse(parts())


async def refuse(request: Request) -> Response:
    return Response(b'{"error":"insufficient_stock"}', status_code=409, headers={"Connection": "close"})


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/base/echo", echo, methods=["GET", "POST"]),
            Route("/base/chunked", chunked),
            Route("/base/refuse", refuse, methods=["POST"]),
        ]
    )


def test_answers_whole_over_one_kept_alive_connection() -> None:
    async def scenario(url: str) -> None:
        pool = Http1Pool(url + "/base/")
        try:
            for i in range(5):
                body = b'{"n": %d}' % i
                status, answer = await pool.request(
                    "POST", "/echo", {"Idempotency-Key": f"k{i}"}, body, timeout_s=5
                )
                assert (status, answer) == (201, b"POST|k%d|%s" % (i, body))
            assert await pool.request("GET", "/chunked", {}, timeout_s=5) == (200, b"one,two,three")
            assert pool.opened == 1
            # An answer that says `Connection: close` is whole, and its connection is not reused.
            assert (await pool.request("POST", "/refuse", {}, timeout_s=5))[0] == 409
            assert (await pool.request("GET", "/echo", {}, timeout_s=5)) == (201, b"GET||")
            assert pool.opened == 2
        finally:
            await pool.close()

    with ServerThread(app()) as server:
        asyncio.run(scenario(server.url))


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def _pool_to(handler: Handler) -> AsyncIterator[Http1Pool]:
    """A pool to a raw server running `handler` per connection; both closed afterwards."""
    server, url = await _serve(handler)
    pool = Http1Pool(url)
    try:
        yield pool
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head + await reader.readexactly(length)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_request_dropped_on_an_idle_connection_goes_again_on_a_new_one() -> None:
    """The origin closed the idle connection as the request went out: no answer began, so the
    request (safe to repeat) is sent once more on a fresh connection."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        writer.write(OK)
        await writer.drain()
        if len(seen) == 1:
            await _read_request(reader)  # the second request on this connection: drop it
        writer.close()

    async def scenario() -> None:
        async with _pool_to(handler) as pool:
            assert await pool.request("POST", "/hold", {}, b"a", timeout_s=5) == (200, b"ok")
            assert await pool.request("POST", "/hold", {}, b"b", timeout_s=5) == (200, b"ok")
            assert pool.opened == 2
            assert [r.endswith(b"\r\n\r\na") or r.endswith(b"\r\n\r\nb") for r in seen] == [True, True]

    asyncio.run(scenario())


def test_a_connection_that_speaks_unasked_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)
        await writer.drain()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")  # answers nothing asked
        await writer.drain()
        await _read_request(reader)  # a request sent on this connection would get "stale"
        writer.write(OK)
        await writer.drain()

    async def scenario() -> None:
        async with _pool_to(handler) as pool:
            assert await pool.request("GET", "/a", {}, timeout_s=5) == (200, b"ok")
            first = pool._idle[0] if pool._idle else None
            for _ in range(5000):  # until the unasked bytes have arrived (5 s at most)
                if first is None or first.closed:
                    break
                await asyncio.sleep(0.001)
            assert first is None or first.closed
            assert await pool.request("GET", "/b", {}, timeout_s=5) == (200, b"ok")
            assert pool.opened == 2

    asyncio.run(scenario())


def test_no_answer_in_time_fails_and_the_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)  # never answers in time
        writer.close()

    async def scenario() -> None:
        async with _pool_to(handler) as pool:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionFailed, match=r"no answer within 0\.2 s"):
                await pool.request("POST", "/hold", {}, b"x", timeout_s=0.2)
            assert loop.time() - started < 2
            assert pool._idle == []

    asyncio.run(scenario())


def test_an_answer_cut_short_fails_without_a_second_try() -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await _read_request(reader)
        requests += 1
        writer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{"reserv')
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with _pool_to(handler) as pool:
            with pytest.raises(ConnectionFailed, match="connection lost"):
                await pool.request("POST", "/hold", {}, b"x", timeout_s=5)
            assert requests == 1

    asyncio.run(scenario())


def test_nothing_listening_fails_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def scenario() -> None:
        pool = Http1Pool(f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await pool.request("GET", "/", {}, timeout_s=5)

    asyncio.run(scenario())


def test_a_line_break_in_a_header_is_refused_before_sending() -> None:
    async def scenario() -> None:
        pool = Http1Pool("http://127.0.0.1:9")
        with pytest.raises(ValueError, match="line break"):
            await pool.request("POST", "/hold", {"Idempotency-Key": "a\r\nX-Evil: 1"}, timeout_s=1)
        assert pool.opened == 0

    asyncio.run(scenario())


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Http1Pool("ftp://origin")
