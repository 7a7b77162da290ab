"""Load shedding that holds the tail: admit what can be answered fast, refuse the rest at once.

Under overload every request an event loop has accepted waits behind all the others: with L
requests queued and λ answered a second, each waits L/λ (Little's law), however cheap the page.
Refusing inside the app does not help — a refused request has already waited its turn and costs
nearly what a cached page does. So the refusal happens where the request arrives, before it
joins the queue: the server's protocol (`sync.server`) asks `Admission.admit` as each request's
headers come in, and a refused one is answered a prepared 503 with `Retry-After` straight from
the protocol — no task, no middleware, no page.

`Admission` is an adaptive concurrency limit (in the spirit of Netflix's concurrency-limits and
Envoy's adaptive concurrency filter): a limit on requests admitted and not yet answered, found by
AIMD against a target queueing delay. The delay that counts is the one admitting causes: how long
a request waited behind the requests run before it in the same round of the event loop.
`ShedLoad` (the app's outermost middleware) measures it — a request that arrived after the
previous one was run starts a new round — and reports it: a wait over `target_s` shrinks the
limit by a tenth (at most once per `target_s`, so one slow round counts once), a wait within it
grows the limit by one per limit's worth of requests. The rest of a request's wait — the loop
reading its round's requests, and under a flood of clients that resend at once, refusing most of
them — no limit can take away, so it is not held against the limit (a limit that chased it
would sink to its minimum and serve almost nothing). At rest the limit sits well above what is
queued and nothing is refused; under overload it settles where what is admitted waits about the
target behind the rest admitted with it, and what the edge cannot serve is refused in
microseconds.

`ShedLoad` also keeps a cap on requests in flight (`max_inflight`: those awaiting the origin or a
thread) and refuses a request that waited longer than `stall_s` in all (the loop stalled).
Probes and metrics are never shed.

`LoopLag` samples how late the loop runs a 10 ms timer: a gauge for operators.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from sync.server import ARRIVED

EXEMPT = ("/healthz", "/readyz", "/metrics")

_SHED_BODY = b'{"error":"overloaded","detail":"the edge is shedding load; retry after 1 s"}'
_SHED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_SHED_BODY)).encode()),
    (b"retry-after", b"1"),
    (b"cache-control", b"no-store"),
]


class LoopLag:
    """An exponentially weighted estimate of how late the event loop runs a 10 ms timer."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            late = max(loop.time() - start - self.interval_s, 0.0)
            self.lag_s = 0.7 * self.lag_s + 0.3 * late


class Admission:
    """An adaptive limit on requests admitted and not yet answered (`sync.server.Admission`)."""

    def __init__(
        self,
        *,
        target_s: float = 0.01,
        min_limit: int = 4,
        max_limit: int = 1024,
        initial: int = 256,
    ) -> None:
        assert 0 < min_limit <= initial <= max_limit, "min_limit <= initial <= max_limit"
        self.target_s = target_s
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.limit = float(initial)
        self.outstanding = 0  # admitted and not yet answered
        self.shed = 0  # refused by the limit, by the in-flight cap or after a stall
        self._shrunk_at = 0.0

    def admit(self, *, waited: bool = False) -> bool:
        # A client refused before that waited out its Retry-After goes first (up to twice the
        # limit), so no one is refused round after round while others are served.
        if self.outstanding < (2 * self.limit if waited else self.limit):
            self.outstanding += 1
            return True
        self.shed += 1
        return False

    def answered(self) -> None:
        self.outstanding -= 1

    def waited(self, seconds: float, now: float) -> None:
        """An admitted request waited `seconds` behind the requests admitted before it."""
        if seconds > self.target_s:
            if now - self._shrunk_at > self.target_s:
                self.limit = max(self.min_limit, self.limit * 0.9)
                self._shrunk_at = now
        elif self.limit < self.max_limit:
            self.limit = min(self.max_limit, self.limit + 1.0 / self.limit)


class ShedLoad:
    def __init__(
        self,
        app: ASGIApp,
        *,
        admission: Admission,
        max_inflight: int,
        stall_s: float = 0.5,
    ) -> None:
        self.app = app
        self.admission = admission
        self.max_inflight = max_inflight
        self.stall_s = stall_s
        self.inflight = 0
        self._round_start = 0.0  # when the first request of the loop's current round was run
        self._last_start = 0.0  # when the last request was run

    def admit(self, scope: Scope) -> bool:
        if self.inflight >= self.max_inflight:
            return False
        arrived: float | None = scope.get(ARRIVED)
        if arrived is None:  # not served through sync.server (a test client): nothing to judge by
            return True
        now = time.perf_counter()
        # A request that arrived after the last one was run was read in a later round of the
        # loop: it starts a new round. What a request waits behind the ones run before it in its
        # round is the queue that admitting made; the rest of its wait (the loop reading, and
        # under a flood refusing, the round's other requests) no limit can take away.
        if arrived > self._last_start:
            self._round_start = now
        self._last_start = now
        self.admission.waited(now - self._round_start, now)
        return now - arrived <= self.stall_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if not self.admit(scope):
            self.admission.shed += 1
            await send({"type": "http.response.start", "status": 503, "headers": list(_SHED_HEADERS)})
            await send({"type": "http.response.body", "body": _SHED_BODY})
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
