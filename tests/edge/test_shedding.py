"""The adaptive admission limit: it shrinks while admitted requests wait too long, grows back after."""

from __future__ import annotations

from edge.shedding import Admission


def test_the_limit_shrinks_while_requests_wait_past_the_target_and_never_below_its_floor() -> None:
    a = Admission(target_s=0.005, min_limit=4, initial=256)
    now = 0.0
    for _ in range(200):
        now += 0.01  # one slow batch every 10 ms
        for _ in range(50):  # many slow requests of one batch shrink it once
            a.waited(0.05, now)
    assert a.limit == 4
    assert a.admit(3) and not a.admit(4) and a.shed == 1


def test_one_slow_batch_shrinks_the_limit_once() -> None:
    a = Admission(target_s=0.005, initial=100)
    for _ in range(100):
        a.waited(0.05, now=1.0)
    assert a.limit == 90


def test_the_limit_grows_back_by_about_one_per_limit_of_fast_requests_up_to_its_ceiling() -> None:
    a = Admission(target_s=0.005, min_limit=4, max_limit=64, initial=8)
    for _ in range(8):
        a.waited(0.001, now=1.0)
    assert 8.9 < a.limit < 9.1
    for _ in range(10_000):
        a.waited(0.001, now=1.0)
    assert a.limit == 64
    assert all(a.admit(q) for q in range(64)) and not a.admit(64)
