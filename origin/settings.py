"""The origin's settings: one frozen object, from `WAYPOST_*` variables and CLI flags."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from origin.orders import PrivacyKeys
from origin.pii import Keyring, new_key
from origin.signatures import parse_secret

REQUIRED = (
    "WAYPOST_WEBHOOK_SECRET",
    "WAYPOST_EDGE_TOKEN",
    "WAYPOST_ADMIN_TOKEN",
    "WAYPOST_LINK_SECRET",
    "WAYPOST_PII_KEY",
    "WAYPOST_POSTCODE_KEY",
    "WAYPOST_PII_ENCRYPTION_KEYS",
)


@dataclass(frozen=True)
class OriginSettings:
    data_dir: Path
    store_url: str | None = None
    webhook_secrets: tuple[bytes, ...] = ()
    edge_token: str = ""
    admin_token: str = ""
    link_secret: bytes = b""
    pii_key: bytes = b""
    postcode_key: bytes = b""
    operator_token: str = ""  # when set, /metrics needs it (bearer)
    pii_keyring: Keyring | None = None  # seals personal data at rest (origin/pii.py)
    pii_retain_days: float = 30.0  # erase an order's personal data this long after it settled
    public_url: str = ""  # where shoppers open tracking pages; links are relative without it
    easypost_secret: str = ""
    aftership_secret: str = ""
    feed_max_limit: int = 1000
    feed_max_wait_s: float = 30.0
    max_webhook_bytes: int = 64 * 1024
    expiry_interval_s: float = 1.0
    housekeeping_interval_s: float = 60.0
    compact_keep_days: float = 7.0
    compact_interval_s: float = 3600.0
    copurchase_interval_s: float = 6 * 3600.0
    freeze_heap: bool = False  # `python -m origin serve` sets it: the process is the origin's alone
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, insecure_dev: bool = False, **overrides: Any
    ) -> OriginSettings:
        """Read settings; without the secrets, refuse unless `insecure_dev` (then make some)."""
        env = os.environ if env is None else env
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing and not insecure_dev:
            raise SystemExit(
                f"origin: missing settings {', '.join(missing)}; set them (see .env.example)"
                " or pass --insecure-dev to run with throwaway secrets"
            )
        dev = dev_secrets()

        def get(name: str) -> str:
            return env.get(name) or dev[name]

        settings = cls(
            data_dir=Path(env.get("WAYPOST_DATA", "data/origin")),
            store_url=env.get("WAYPOST_STORE") or None,
            webhook_secrets=tuple(parse_secret(s) for s in get("WAYPOST_WEBHOOK_SECRET").split()),
            edge_token=get("WAYPOST_EDGE_TOKEN"),
            admin_token=get("WAYPOST_ADMIN_TOKEN"),
            link_secret=get("WAYPOST_LINK_SECRET").encode(),
            pii_key=get("WAYPOST_PII_KEY").encode(),
            postcode_key=get("WAYPOST_POSTCODE_KEY").encode(),
            pii_keyring=_keyring(get("WAYPOST_PII_ENCRYPTION_KEYS")),
            pii_retain_days=_days(env, "WAYPOST_PII_RETAIN_DAYS", 30.0),
            public_url=env.get("WAYPOST_PUBLIC_URL", "").rstrip("/"),
            operator_token=env.get("WAYPOST_OPERATOR_TOKEN", ""),
            easypost_secret=env.get("WAYPOST_EASYPOST_SECRET", ""),
            aftership_secret=env.get("WAYPOST_AFTERSHIP_SECRET", ""),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    def privacy_keys(self) -> PrivacyKeys:
        assert self.pii_keyring is not None, "these settings have no WAYPOST_PII_ENCRYPTION_KEYS"
        return PrivacyKeys(self.pii_key, self.postcode_key, self.pii_keyring)


def _keyring(text: str) -> Keyring:
    try:
        return Keyring.parse(text)
    except ValueError as exc:
        raise SystemExit(f"origin: {exc} (see .env.example)") from None


def _days(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise SystemExit(f"origin: {name}={raw!r} is not a number of days (0 or more)")
    return days


def dev_secrets() -> dict[str, str]:
    """Throwaway secrets for `--insecure-dev` and the demo; printed, never persisted."""
    import base64

    return {
        "WAYPOST_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        "WAYPOST_EDGE_TOKEN": secrets.token_urlsafe(18),
        "WAYPOST_ADMIN_TOKEN": secrets.token_urlsafe(18),
        "WAYPOST_LINK_SECRET": secrets.token_urlsafe(24),
        "WAYPOST_PII_KEY": secrets.token_urlsafe(24),
        "WAYPOST_POSTCODE_KEY": secrets.token_urlsafe(24),
        "WAYPOST_PII_ENCRYPTION_KEYS": new_key("dev"),
    }
