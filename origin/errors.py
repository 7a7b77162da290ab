"""The origin's exception tree. Every runtime failure a client can cause is one of these.

WaypostError
├── InvalidInput        400: a body or parameter is malformed; `field` names it
├── Unauthorized        401: missing or bad token or signature
├── NotFound            404
├── Conflict            409: the request is well formed but the state refuses it
│   └── Resync          409: a feed reader must re-bootstrap the bucket
├── Unprocessable       422: e.g. an idempotency key reused with another body
├── TooLarge            413
└── NotConfigured       503: the origin lacks a setting the request needs
    └── KeyUnavailable  503: personal data sealed with a key id the key ring lacks (or a wrong key)
"""

from __future__ import annotations

from typing import Any


class WaypostError(Exception):
    status = 400
    code = "error"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


class InvalidInput(WaypostError):
    status = 400
    code = "invalid_body"


class Unauthorized(WaypostError):
    status = 401
    code = "unauthorized"


class NotFound(WaypostError):
    status = 404
    code = "not_found"


class Conflict(WaypostError):
    status = 409
    code = "conflict"


class Resync(Conflict):
    code = "resync"


class Unprocessable(WaypostError):
    status = 422
    code = "unprocessable"


class TooLarge(WaypostError):
    status = 413
    code = "too_large"


class NotConfigured(WaypostError):
    status = 503
    code = "not_configured"


class KeyUnavailable(NotConfigured):
    """`kid` names the key: the message says which order and field, never the key itself."""

    code = "key_unavailable"
