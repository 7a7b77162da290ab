"""The one body reader and decoder: every malformed body is a 4xx naming what is wrong."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import pytest
from starlette.requests import Request

from sync import inbound


class Line(msgspec.Struct, frozen=True):
    sku: str
    qty: Annotated[int, msgspec.Meta(ge=1)]


class Body(msgspec.Struct, frozen=True, kw_only=True):
    lines: list[Line]
    at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        inbound.normalize_times(self, "at")


DECODER = msgspec.json.Decoder(Body)


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        (b'{"lines": [{"sku": "\xff", "qty": 1}]}', "invalid_json", "invalid UTF-8 at byte"),
        (b'{"lines": [], "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", "invalid_json", "nested too deeply"),
        (b'{"lines": [{"sku": "a", "qty": 0}]}', "invalid_body", "$.lines[0].qty"),
        (b'{"lines": [], "at": "0001-01-01T00:00:00+14:00"}', "invalid_body", "`at` must lie between"),
        (b'{"lines": [], "at": "9999-12-31T23:59:59-14:00"}', "invalid_body", "`at` must lie between"),
        (b'{"lines": [], "at": "2026-01-01T00:00:00"}', "invalid_body", "$.at"),
        (b'{"lines": [{"sku": "\\ud800"', "invalid_json", "not valid JSON"),
        (b"", "invalid_json", "not valid JSON"),
    ],
)
def test_every_kind_of_malformed_body_is_a_400_that_says_what(raw: bytes, code: str, says: str) -> None:
    with pytest.raises(inbound.BadBody) as caught:
        inbound.decode_json(raw, DECODER)
    assert caught.value.status == 400 and caught.value.code == code
    assert says in caught.value.detail, caught.value.detail


def test_times_arrive_in_utc_and_at_the_edges_of_the_range_still_convert() -> None:
    body = inbound.decode_json(b'{"lines": [], "at": "2026-03-01T01:30:00+14:00"}', DECODER)
    assert body.at == datetime(2026, 2, 28, 11, 30, tzinfo=UTC) and body.at.tzinfo is UTC
    for edge in ("1970-01-03T00:00:00+14:00", "2199-12-30T00:00:00-14:00"):
        at = inbound.decode_json(b'{"lines": [], "at": "%s"}' % edge.encode(), DECODER).at
        assert at is not None and at.tzinfo is UTC


def request_streaming(
    chunks: list[bytes], headers: dict[str, str] | None = None
) -> tuple[Request, list[int]]:
    """A request whose body arrives in `chunks`; the list counts how many were pulled."""
    pulled: list[int] = []

    async def receive() -> dict[str, Any]:
        i = len(pulled)
        pulled.append(i)
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "headers": raw}, receive), pulled


def test_a_body_over_the_limit_is_refused_while_streaming_not_after_buffering() -> None:
    request, pulled = request_streaming([b"x" * 1024] * 1000)  # 1 MiB, no Content-Length
    with pytest.raises(inbound.BadBody) as caught:
        asyncio.run(inbound.read_body(request, 4096))
    assert caught.value.status == 413 and caught.value.code == "too_large"
    assert len(pulled) == 5, "it stopped at the first chunk past the limit"
    assert caught.value.headers() == {"Connection": "close"}


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request, pulled = request_streaming([b"x"], {"Content-Length": "999999"})
    with pytest.raises(inbound.BadBody) as caught:
        asyncio.run(inbound.read_body(request, 4096))
    assert caught.value.status == 413 and pulled == []


def test_a_body_within_the_limit_is_read_whole() -> None:
    request, _ = request_streaming([b"ab", b"cd", b""])
    assert asyncio.run(inbound.read_body(request, 4)) == b"abcd"
