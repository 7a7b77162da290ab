"""An edge as an attacker or a careless client meets it: no 500, no oracle, no cheap exhaustion."""

from __future__ import annotations

import socket
from collections.abc import Callable

import psutil
import pytest

from sync.server import ServerOptions
from tests.conftest import STORE_TOKEN, Edge, Origin
from tests.origin.test_webhooks import shipment_in


def test_unknown_numbers_at_the_unlock_form_run_into_the_lookup_limit(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    """The form's 404 and 403 tell a known number from an unknown one: it is a lookup too."""
    edge = start_edge(origin.url, lookup_rate=120.0, unlock_rate=1e9)  # 60 tokens; unknown costs 5
    codes = [
        edge.http.post(f"/track/GUESS{i:06d}/unlock", data={"postcode": "12345"}).status_code
        for i in range(300)
    ]
    assert codes.count(404) <= 13 and codes.count(429) >= 285, codes[:20]
    assert codes[:5] == [404] * 5
    known = shipment_in(origin).tracking_number
    r = edge.http.post(f"/track/{known}/unlock", data={"postcode": "12345"})
    assert r.status_code == 429, "a known number is no way round it"


def test_a_rotated_x_forwarded_for_from_an_untrusted_peer_changes_nothing(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    tn = shipment_in(origin).tracking_number
    edge = start_edge(origin.url, lookup_rate=60.0)  # 30 tokens
    codes = [
        edge.http.get(f"/track/{tn}", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
        for i in range(40)
    ]
    assert codes[:30] == [200] * 30 and set(codes[30:]) == {429}
    proxy = ServerOptions(trusted_proxies=("127.0.0.1",))
    trusting = start_edge(origin.url, name="behind-proxy", lookup_rate=60.0, server_options=proxy)
    codes = [
        trusting.http.get(f"/track/{tn}", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
        for i in range(40)
    ]
    assert codes == [200] * 40, "behind a trusted proxy each forwarded client has its own bucket"


def _stream_chunked(port: int, path: str, total: int, headers: str = "") -> bytes:
    """POST `total` bytes as a chunked body, as fast as the server takes them; the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{headers}\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b"p" * (1 << 20))
        try:
            for _ in range(total >> 20):
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before it was all sent: what should happen
        answer = b""
        try:
            while part := s.recv(65536):
                answer += part
        except ConnectionResetError:
            pass
        return answer


def test_a_100_mib_body_is_refused_without_being_buffered(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url)
    tn = shipment_in(origin).tracking_number
    me = psutil.Process()
    before = me.memory_info().rss
    answer = _stream_chunked(edge.server.port, f"/track/{tn}/unlock", 100 << 20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    answer = _stream_chunked(
        edge.server.port, "/v1/route", 100 << 20, f"Authorization: Bearer {STORE_TOKEN}\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413") and b'"too_large"' in answer, answer[:200]
    grew = me.memory_info().rss - before
    assert grew < 8 << 20, f"the edge grew by {grew / 2**20:.1f} MiB reading refused bodies"


@pytest.mark.parametrize(
    "body",
    [
        b'{"order_id": "\xff\xfe", "destination": {"lat": 1, "lon": 2}, "lines": []}',
        b'{"order_id": "o1", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"order_id": "o1", "destination": {"lat": 53.5, "lon": 10.0}, "lines": [{"sku": "a", "qty": 1}],'
        b' "placed_at": "0001-01-01T00:00:00+14:00"}',
    ],
    ids=["utf8", "nesting", "time"],
)
def test_a_hostile_route_body_is_a_400_never_a_500(
    origin: Origin, start_edge: Callable[..., Edge], body: bytes
) -> None:
    edge = start_edge(origin.url)
    r = edge.http.post("/v1/route", content=body, headers={"Authorization": f"Bearer {STORE_TOKEN}"})
    assert r.status_code == 400 and r.json()["error"] in ("invalid_json", "invalid_body"), r.text


def test_operator_data_needs_the_operator_token_when_one_is_set(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url, operator_token="op-secret")
    for path in ("/metrics", "/v1/sync/status"):
        r = edge.http.get(path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
        assert edge.http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert edge.http.get(path, headers={"Authorization": "Bearer op-secret"}).status_code == 200
    assert edge.http.get("/healthz").status_code == 200 and edge.http.get("/readyz").status_code == 200
    tn = shipment_in(origin).tracking_number
    assert edge.http.get(f"/track/{tn}").status_code == 200, "shoppers need no token"


def test_unknown_paths_and_wrong_methods_answer_json(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url)
    r = edge.http.get("/nothing/here")
    assert r.status_code == 404 and r.json()["error"] == "not_found" and r.headers["x-request-id"]
    r = edge.http.get("/v1/route")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed" and "POST" in r.headers["allow"]
