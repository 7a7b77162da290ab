"""Per-client token buckets: refusals, refills, and memory that a flood of addresses cannot grow."""

from __future__ import annotations

from edge.ratelimit import TokenBuckets
from tests.conftest import Clock


def test_a_client_is_refused_once_its_bucket_is_empty_and_served_again_as_it_refills() -> None:
    clock = Clock(0.0)
    buckets = TokenBuckets(60.0, clock)  # a token a second, 30 at most
    assert [buckets.take("a") for _ in range(31)] == [0.0] * 30 + [1.0]
    assert buckets.take("b") == 0.0, "each client has a bucket of its own"
    clock.advance(5)
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 5 + [1.0]
    assert buckets.take("a", cost=10) == 10.0, "the wait is the time the missing tokens take"
    clock.advance(3600)
    assert [buckets.take("a") for _ in range(31)] == [0.0] * 30 + [1.0], "refilled to capacity, no more"


def test_a_flood_of_new_addresses_is_bounded_and_does_not_refill_a_busy_client() -> None:
    clock = Clock(0.0)
    buckets = TokenBuckets(60.0, clock, maxsize=100)
    while not buckets.take("busy"):
        pass
    for i in range(1000):
        assert buckets.take(f"10.0.{i // 250}.{i % 250}") == 0.0
        if i % 50 == 0:
            assert buckets.take("busy") > 0, "the busy client's empty bucket is kept"
        assert len(buckets) <= 100


def test_an_idle_bucket_is_forgotten_once_it_would_be_full_again() -> None:
    clock = Clock(0.0)
    buckets = TokenBuckets(60.0, clock)
    while not buckets.take("idle"):
        pass
    clock.advance(29)
    buckets.take("other")
    assert len(buckets) == 2 and buckets.take("idle") == 0.0, "29 tokens back, still remembered"
    clock.advance(31)
    buckets.take("other")
    assert len(buckets) == 1, "idle for longer than a refill: forgotten"
    assert [buckets.take("idle") for _ in range(31)] == [0.0] * 30 + [1.0], "and full"
