"""The edge's settings: one frozen object, from `WAYPOST_*` variables and CLI flags."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REQUIRED = ("WAYPOST_EDGE_TOKEN", "WAYPOST_STORE_TOKEN", "WAYPOST_LINK_SECRET", "WAYPOST_POSTCODE_KEY")


@dataclass(frozen=True)
class EdgeSettings:
    origin_url: str
    region: str
    data_dir: Path
    edge_token: str = ""
    store_token: str = ""
    link_secret: bytes = b""
    postcode_key: bytes = b""
    returns_url: str = ""
    operator_token: str = ""  # when set, /metrics and /v1/sync/status need it (bearer)
    lookup_rate: float = 120.0  # requests per minute per client
    unlock_rate: float = 10.0
    timezone: str = "UTC"  # for dates on the page
    stale_after_s: float = 90.0  # past this without word from the origin, the page says so
    page_max_age_s: int = 30
    page_cache_size: int = 20_000
    max_inflight: int = 256
    shed_target_s: float = 0.01  # the admission limit keeps the wait behind other admitted requests near this
    feed_limit: int = 500
    feed_wait_s: int = 20
    feed_batch_s: float = 0.02  # at the tail, the pause before the next page: fewer, fuller pages
    hold_ttl_s: int = 900  # how long the origin keeps a routing decision's hold
    reserve_timeout_s: float = 2.0  # a hold request slower than this leaves the decision provisional
    outbox_retry_max_s: float = 5.0  # the longest wait between replays while the origin is away
    # Allotments (edge/allotments.py): stock the origin sets aside for this edge to draw from
    allotments: bool = True
    allotment_ttl_s: int = 900
    allotment_margin_s: int = 300  # no draws this close to an allotment's expiry
    allotment_horizon_s: float = 30.0  # an allotment holds about this long of the demand seen
    allotment_share: float = 0.5  # at most this share of a site's stock in this edge's allotments
    allotment_tick_s: float = 0.5
    # `python -m edge serve` sets it: the process is the edge's alone (see follower.settle_heap)
    freeze_heap: bool = False
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @property
    def buckets(self) -> tuple[str, str]:
        return ("global", f"region:{self.region}")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        origin_url: str,
        region: str,
        data_dir: Path,
        insecure_dev: bool = False,
        **overrides: Any,
    ) -> EdgeSettings:
        env = os.environ if env is None else env
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing and not insecure_dev:
            raise SystemExit(
                f"edge: missing settings {', '.join(missing)}; set them (see .env.example)"
                " or pass --insecure-dev to run with throwaway secrets"
            )

        def get(name: str) -> str:
            return env.get(name) or secrets.token_urlsafe(18)

        settings = cls(
            origin_url=origin_url,
            region=region,
            data_dir=data_dir,
            edge_token=get("WAYPOST_EDGE_TOKEN"),
            store_token=get("WAYPOST_STORE_TOKEN"),
            link_secret=get("WAYPOST_LINK_SECRET").encode(),
            postcode_key=get("WAYPOST_POSTCODE_KEY").encode(),
            returns_url=env.get("WAYPOST_RETURNS_URL", ""),
            operator_token=env.get("WAYPOST_OPERATOR_TOKEN", ""),
            lookup_rate=float(env.get("WAYPOST_LOOKUP_RATE", "120")),
            unlock_rate=float(env.get("WAYPOST_UNLOCK_RATE", "10")),
            timezone=env.get("WAYPOST_TIMEZONE", "UTC"),
            max_inflight=int(env.get("WAYPOST_MAX_INFLIGHT", "256")),
            shed_target_s=float(env.get("WAYPOST_SHED_TARGET_MS", "10")) / 1000,
            feed_batch_s=float(env.get("WAYPOST_FEED_BATCH_S", "0.02")),
            allotments=env.get("WAYPOST_ALLOTMENTS", "1") not in ("0", "false", "off", "no"),
            allotment_horizon_s=float(env.get("WAYPOST_ALLOTMENT_HORIZON_S", "30")),
            allotment_share=float(env.get("WAYPOST_ALLOTMENT_SHARE", "0.5")),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
