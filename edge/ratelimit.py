"""Per-client token buckets: lookups and postcode attempts cannot be hammered.

A bucket refills at `per_minute / 60` tokens a second up to `capacity`; a request takes tokens
or is refused with how long to wait.

Every page view takes a token, so the buckets live in an `OrderedDict` kept in order of last use
rather than in a `cachetools.TTLCache`, whose take cost about as much as the rest of a cached
page. A new client past `maxsize` evicts the one idle longest, and each take also forgets the
longest-idle bucket once it has been idle long enough to be full again: a flood of new client
addresses cannot grow memory without limit, and idle buckets do not linger. A forgotten bucket
is a full one, exactly as if it had been kept.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable


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
        assert maxsize > 0, "keep at least one bucket"
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(5.0, per_minute / 2)
        self.clock = clock
        self.maxsize = maxsize
        # An idle bucket is full again after capacity / rate seconds: forget it then.
        self.full_after_s = max(self.capacity / self.rate, 1.0)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, last use)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens; return 0 when allowed, else the seconds to wait before retrying."""
        now = self.clock()
        buckets = self._buckets
        tokens, last = buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = max(1.0, math.ceil((cost - tokens) / self.rate))
        buckets[key] = (tokens, now)  # last in order: the most recently used
        oldest, (_, used) = next(iter(buckets.items()))
        if len(buckets) > self.maxsize or now - used > self.full_after_s:
            del buckets[oldest]
        return wait
