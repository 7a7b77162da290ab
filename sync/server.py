"""How both services are served: uvicorn with bounded connections and trusted proxies only.

uvicorn's HTTP protocol closes a keep-alive connection that idles after a response, but nothing
else: a connection that never sends a byte, sends its headers a byte every few seconds, or
trickles a body stays open for as long as the client likes. `GuardedHttpToolsProtocol` gives
each phase of a request a deadline — the first byte after connecting and the whole header block
`header_timeout_s`, the whole body `body_timeout_s` — and closes the connection when it passes
(408 when no request is under way). A deadline is armed only while a request is incomplete
after the bytes at hand, so a request that arrives whole (nearly all of them) arms nothing.

Addresses: `X-Forwarded-For` is believed only from `WAYPOST_TRUSTED_PROXIES` (default none), so
the per-client rate limits key on the peer a client cannot choose. In production run the
services behind nginx (or another proxy) that does the slow-client protection; list it there.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ARRIVED = "waypost.arrived"  # scope key: time.perf_counter() when the request's headers were in
EXEMPT = (b"/healthz", b"/readyz", b"/metrics")  # never refused: probes and scrapes
_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Admission(Protocol):
    """Decides, as a request's headers arrive, whether it joins the queue (edge/shedding.py)."""

    def admit(self, *, waited: bool) -> bool:
        """Whether to run this request; an admitted one is counted until `answered()`.
        `waited`: its connection's last request was refused (and waited out its Retry-After)."""
        ...

    def answered(self) -> None:
        """An admitted request was answered (or its connection lost)."""
        ...


@dataclass(frozen=True)
class ServerOptions:
    """The connection limits and proxy trust both services are served with."""

    trusted_proxies: tuple[str, ...] = ()  # addresses (or CIDRs) whose X-Forwarded-For is believed
    header_timeout_s: float = 10.0  # to send a request's headers, and its first byte after connecting
    body_timeout_s: float = 30.0  # to send a request's whole body
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 4096  # past this uvicorn answers every new request 503
    backlog: int = 2048

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerOptions:
        env = os.environ if env is None else env
        return cls(
            trusted_proxies=tuple(env.get("WAYPOST_TRUSTED_PROXIES", "").replace(",", " ").split()),
            header_timeout_s=float(env.get("WAYPOST_HEADER_TIMEOUT_S", "10")),
            body_timeout_s=float(env.get("WAYPOST_BODY_TIMEOUT_S", "30")),
            keep_alive_s=float(env.get("WAYPOST_KEEP_ALIVE_S", "5")),
            max_connections=int(env.get("WAYPOST_MAX_CONNECTIONS", "4096")),
        )


def config(app: Any, *, host: str, port: int, options: ServerOptions, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn config of a waypost service (`uvicorn.Server(config(...)).run()`); an app with
    an `Admission` in `app.state.admission` has requests refused by it before they queue."""
    protocol = type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": options.header_timeout_s,
            "body_timeout_s": options.body_timeout_s,
            "admission": getattr(getattr(app, "state", None), "admission", None),
        },
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        ws="none",
        proxy_headers=bool(options.trusted_proxies),
        forwarded_allow_ips=list(options.trusted_proxies) or None,
        timeout_keep_alive=int(max(options.keep_alive_s, 1)),
        limit_concurrency=options.max_connections,
        backlog=options.backlog,
        **kwargs,
    )


def run(app: Any, *, host: str, port: int, log_level: str, options: ServerOptions | None = None) -> None:
    """Serve `app` until stopped, as `python -m origin|edge serve` do (options from the environment)."""
    options = options or ServerOptions.from_env()
    served = config(app, host=host, port=port, options=options, log_level=log_level, access_log=False)
    uvicorn.Server(served).run()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    admission: Admission | None = None
    _refused = False  # the request being read was answered 503 without reaching the app
    _counted = False  # the request under way was admitted and is counted by the admission
    _waited = False  # this connection's last request was refused: its next one goes first
    _backoff: asyncio.TimerHandle | None = None  # a refused connection's Retry-After, until read again

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase: str | None = None  # "headers" or "body" while a request is incomplete
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase: str | None = "connect"
        self._deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        phase = self._phase
        if phase == self._deadline_phase or self.transport.is_closing():
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._deadline_phase = phase
        if phase is not None:
            timeout = self.header_timeout_s if phase == "headers" else self.body_timeout_s
            self._deadline = self.loop.call_later(timeout, self._too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = "headers"

    def on_headers_complete(self) -> None:
        self._phase = "body"
        if self.admission is not None and not self._admitted():
            # Refused before it costs a task, the app or a queue place: under overload the
            # refusal is what the edge does most, so it must be the cheapest answer there is.
            self._refused = True
            self.transport.write(_refusal())
            return
        # When the request was in: what it waits from here is the queue in front of the app
        # (edge/shedding.py judges load by it).
        self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]
        super().on_headers_complete()

    def _admitted(self) -> bool:
        assert self.admission is not None
        if self.cycle is not None and not self.cycle.response_complete:
            return True  # a pipelined request: answering now would answer out of order
        if self.url.partition(b"?")[0] in EXEMPT:
            return True
        # Counted here and uncounted when answered: uvicorn's own task set still holds tasks
        # that finished in this round of the loop, so it would count a round twice.
        self._counted = self.admission.admit(waited=self._waited)
        self._waited = False
        return self._counted

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = None
        if self._refused:  # its body read and dropped
            self._refused = False
            self._waited = True  # its next request goes first, whenever it comes
            if not self.parser.should_keep_alive():
                self.transport.close()
                return
            # The connection is not read again until its Retry-After has passed: a client that
            # asks again at once (a retry storm, a load generator) waits in the kernel's buffer,
            # where it costs nothing, instead of being read and refused over and over.
            # Shorter than announced, so a client that honours Retry-After never waits here; and
            # jittered, so the many connections one round refused do not all come back in one
            # later round and be refused together again, every second.
            self.flow.pause_reading()
            pause = RETRY_AFTER_S * random.uniform(0.5, 1.0)
            self._backoff = self.loop.call_later(pause, self._back_from_refusal)
            return
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._counted:
            self._counted = False
            assert self.admission is not None
            self.admission.answered()
        super().on_response_complete()

    def _back_from_refusal(self) -> None:
        self._backoff = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request pipelined behind the refusal is under way: its answer resumes reading
        self.on_response_complete()  # reads again; arms the keep-alive timeout

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            assert self.admission is not None
            self.admission.answered()
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._deadline_phase in ("connect", "headers"):
            self.transport.write(_TIMEOUT_408)
        self.transport.close()


RETRY_AFTER_S = 1
_REFUSAL_BODY = b'{"error":"overloaded","detail":"the server is shedding load; retry after 1 s"}'
_REFUSAL_HEAD = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nretry-after: %d\r\ncache-control: no-store\r\n"
    % (len(_REFUSAL_BODY), RETRY_AFTER_S)
)
_refusals = itertools.count(1)
_REFUSAL_ID = b"x-request-id: shed-" + os.urandom(3).hex().encode() + b"-"


def _refusal() -> bytes:
    """The whole 503 answer, with its own request id like every response."""
    return _REFUSAL_HEAD + _REFUSAL_ID + b"%x\r\n\r\n" % next(_refusals) + _REFUSAL_BODY
