"""Reading what a client sends, for both services: one body reader, one decoder, one time rule.

Every way a body can be wrong ends in `BadBody`, a 4xx whose detail names the field where
msgspec can say it: too large (413, decided while streaming, before anything past the limit is
buffered), not JSON, invalid UTF-8 inside a string, nested deeper than anyone means, the wrong
shape or type, a value out of range. Nothing a client sends can reach a handler as a Python
exception of another kind, so nothing a client sends becomes a 500.

Times: every time a client sends is checked to lie in `EARLIEST`..`LATEST` *before* it is
converted to UTC (`utc_time`), so no `astimezone` or later date arithmetic can overflow, and what
reaches the domain is always an aware UTC datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

T = TypeVar("T")

# Wide enough for any real event, narrow enough that adding a few years never overflows.
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_MARGIN = timedelta(days=1)  # no UTC offset is a day or more


class BadBody(ValueError):
    """A request body the service refuses: `status` (400 or 413), `code`, `detail`."""

    def __init__(self, detail: str, *, status: int = 400, code: str = "invalid_body") -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail}

    def headers(self) -> dict[str, str]:
        """A connection whose body was refused unread is closed, not kept alive to read the rest."""
        return {"Connection": "close"} if self.status == 413 else {}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as the declared or streamed size passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadBody(f"body of {declared} bytes is over the limit of {limit}", status=413, code="too_large")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadBody(f"body is over the limit of {limit} bytes", status=413, code="too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadBody("the client went away before sending the whole body", code="incomplete_body") from None
    return b"".join(chunks)


def decode_json(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """`decoder.decode(body)`, with every failure a `BadBody` naming the field where it can."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadBody(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadBody(f"body is not valid JSON: {exc}", code="invalid_json") from None
    except UnicodeDecodeError as exc:
        raise BadBody(f"body holds invalid UTF-8 at byte {exc.start}", code="invalid_json") from None
    except RecursionError:
        raise BadBody("body is nested too deeply", code="invalid_json") from None
    except (ValueError, OverflowError) as exc:  # a conversion msgspec could not make
        raise BadBody(f"body holds a value out of range: {exc}") from None


def utc_time(value: datetime, name: str) -> datetime:
    """`value` in UTC, or ValueError naming `name` when it lies outside EARLIEST..LATEST.

    For a struct's `__post_init__`: msgspec turns the ValueError into a ValidationError with the
    path of the struct, so the client reads e.g. "`occurred_at` … - at `$.events[2]`".
    """
    if value.tzinfo is None:
        raise ValueError(f"`{name}` needs a time zone")
    naive = value.replace(tzinfo=None)
    if not (EARLIEST.replace(tzinfo=None) + _MARGIN <= naive <= LATEST.replace(tzinfo=None) - _MARGIN):
        raise ValueError(f"`{name}` must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value.astimezone(UTC)


def normalize_times(struct: msgspec.Struct, *names: str) -> None:
    """Check and convert to UTC the named datetime fields of `struct` (None is left alone);
    call it from `__post_init__`. Frozen structs are set through `force_setattr`."""
    for name in names:
        value = getattr(struct, name)
        if value is not None:
            msgspec.structs.force_setattr(struct, name, utc_time(value, name))
