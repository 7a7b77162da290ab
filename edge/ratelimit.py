"""Per-client token buckets: lookups and postcode attempts cannot be hammered.

A bucket refills at `per_minute / 60` tokens a second up to `capacity`; a request takes tokens
or is refused with how long to wait. Buckets live in a bounded TTL cache, so a flood of new
client addresses cannot grow memory without limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from cachetools import TTLCache


class TokenBuckets:
    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float],
        *,
        capacity: float | None = None,
        maxsize: int = 200_000,
    ) -> None:
        assert per_minute > 0, "a rate must be positive"
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(5.0, per_minute / 2)
        self.clock = clock
        # An idle bucket is full again after capacity / rate seconds: forget it then.
        ttl = max(self.capacity / self.rate, 1.0)
        self._buckets: TTLCache[str, tuple[float, float]] = TTLCache(maxsize, ttl, timer=clock)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens; return 0 when allowed, else the seconds to wait before retrying."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return max(1.0, math.ceil((cost - tokens) / self.rate))
