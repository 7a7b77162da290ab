"""Load shedding: answer 503 at once, with Retry-After, rather than let latency collapse.

An async server that is overloaded does not show it by requests in flight — a handler that
never awaits finishes before the next starts — but by event-loop lag: how late a timer fires.
`LoopLag` samples it; `ShedLoad` refuses new requests while the lag, or the number of requests
in flight, is over its bound, and recovers by itself when it falls back. Probes and metrics are
never shed.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

EXEMPT = ("/healthz", "/readyz", "/metrics")


class LoopLag:
    """An exponentially weighted estimate of how late the event loop runs a 10 ms timer,
    and how many requests were shed because of it (or of too many in flight)."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0
        self.shed = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            late = max(loop.time() - start - self.interval_s, 0.0)
            self.lag_s = 0.7 * self.lag_s + 0.3 * late


class ShedLoad:
    def __init__(
        self,
        app: ASGIApp,
        *,
        lag: LoopLag,
        max_lag_s: float,
        max_inflight: int,
    ) -> None:
        self.app = app
        self.lag = lag
        self.max_lag_s = max_lag_s
        self.max_inflight = max_inflight
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight or self.lag.lag_s > self.max_lag_s:
            self.lag.shed += 1
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", b"1"),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
            body = b'{"error":"overloaded","detail":"the edge is shedding load; retry after 1 s"}'
            await send({"type": "http.response.body", "body": body})
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
