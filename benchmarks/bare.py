"""The ceiling: a bare Starlette endpoint, served exactly as `python -m origin|edge serve` serve.

It answers every path (GET or POST) with a small JSON body and does nothing else, so its
throughput under wrk, on the same core and with the same uvicorn settings, is what the framework
and server alone allow. Every service throughput is printed as a fraction of it, measured in the
same run; the route scenario's floor is the route load against it.
Keep `serve` in step with `origin/__main__.py` and `edge/__main__.py` (uvicorn.run with
defaults, `access_log=False`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"status":"ok"}'


async def ok(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/healthz", ok), Route("/{path:path}", ok, methods=["GET", "POST"])])


def serve(host: str, port: int) -> None:
    from sync import server

    server.run(create_app(), host=host, port=port, log_level="warning")
