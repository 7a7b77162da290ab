"""A `Case` on the wire (tokens, signatures, path and query), what counts as a 5xx, and the
minimizer that shrinks a failing case while it still fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx

from benchmarks.fuzz.hostile import Case, Nest, Raw, encode, form, paths, replaced, value_at
from origin.aggregators import aftership, easypost
from origin.signatures import sign


@dataclass(frozen=True)
class Secrets:
    admin: str
    edge: str
    store: str
    webhook_key: bytes
    easypost: str
    aftership: str


@dataclass(frozen=True)
class Wire:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


def wire(case: Case, bases: dict[str, str], s: Secrets) -> Wire:
    ep = case.endpoint
    path = ep.path
    for name, value in case.params.items():
        path = path.replace("{" + name + "}", quote(value, safe="%"))
    url = bases[ep.service] + path
    if case.query:
        url += "?" + "&".join(f"{quote(k)}={quote(v, safe='%')}" for k, v in case.query.items())
    content = (
        b"" if ep.body == "none" and case.body is None else (form if ep.body == "form" else encode)(case.body)
    )
    headers = dict(case.headers)
    if ep.body == "json":
        headers["content-type"] = "application/json"
    elif ep.body == "form":
        headers["content-type"] = "application/x-www-form-urlencoded"
    if case.idempotency_key is not None:
        headers["idempotency-key"] = case.idempotency_key
    headers.update(_auth(case, content, s))
    return Wire(ep.method, url, headers, content)


def _auth(case: Case, content: bytes, s: Secrets) -> dict[str, str]:
    kind, how = case.endpoint.auth, case.auth
    if kind == "none" or how == "none":
        return {}
    if kind in ("admin", "edge", "store"):
        token = {"admin": s.admin, "edge": s.edge, "store": s.store}[kind]
        return {"authorization": f"Bearer {token if how == 'right' else 'not-the-token'}"}
    if kind == "webhook":
        msg_id = f"msg_fuzz_{time.time_ns()}"
        ts = int(time.time()) - (400 if how == "stale" else 0)
        signature = sign(s.webhook_key if how != "wrong" else b"wrong-key", msg_id, ts, content)
        return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}
    if kind == "easypost":
        return {easypost.HEADER: easypost.signature(s.easypost if how == "right" else "wrong", content)}
    return {aftership.HEADER: aftership.signature(s.aftership if how == "right" else "wrong", content)}


def send(client: httpx.Client, w: Wire) -> httpx.Response:
    # Latin-1 bytes: a header value may be any octet (httpx would refuse non-ASCII text).
    headers = {k.encode(): v.encode("latin-1", "replace") for k, v in w.headers.items()}
    return client.request(w.method, w.url, headers=headers, content=w.content)


def is_5xx(case: Case, r: httpx.Response) -> bool:
    """A 5xx the services must never answer; the edge's load shedding (503 + Retry-After) is allowed."""
    if r.status_code < 500:
        return False
    return not (case.endpoint.service == "edge" and r.status_code == 503 and "retry-after" in r.headers)


def json_error_missing(case: Case, r: httpx.Response) -> bool:
    """An error from a /v1 JSON endpoint whose body is not JSON (API.md: errors are JSON)."""
    return (
        r.status_code >= 400
        and case.endpoint.path.startswith("/v1/")
        and not r.headers.get("content-type", "").startswith("application/json")
    )


def simpler(case: Case) -> Iterator[Case]:
    """Candidates one step simpler than `case`, the biggest steps first."""
    body = case.body
    for p in sorted(paths(body), key=len) if body is not None else []:
        yield replace(case, body=replaced(body, p, None, delete=True))
    for p in paths(body) if body is not None else []:
        yield from (replace(case, body=replaced(body, p, v)) for v in _smaller(value_at(body, p)))
    yield from (replace(case, body=v) for v in _smaller(body))
    for name in case.query:
        yield replace(case, query={k: v for k, v in case.query.items() if k != name})


def _smaller(v: Any) -> list[Any]:
    if isinstance(v, Nest) and v.depth > 1:
        return [Nest(v.depth // 2, v.opener)]
    if isinstance(v, str) and len(v) > 4:
        return [v[: len(v) // 2], v[len(v) // 2 :]]
    if isinstance(v, Raw) and len(v.data) > 16 and len(set(v.data)) == 1:
        return [Raw(v.data[: len(v.data) // 2])]
    return []


def minimize(case: Case, fails: Callable[[Case], bool], budget: int = 150) -> tuple[Case, int]:
    """Greedy: take the first simpler case that still fails, until none does or the budget is
    spent. Returns the smallest failing case and the requests it took."""
    spent = 0
    progress = True
    while progress and spent < budget:
        progress = False
        for candidate in simpler(case):
            spent += 1
            if fails(candidate):
                case, progress = candidate, True
                break
            if spent >= budget:
                break
    return case, spent
