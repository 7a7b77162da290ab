"""The adaptive admission limit: it shrinks while admitted requests wait too long, grows back after."""

from __future__ import annotations

from edge.shedding import Admission


def test_the_limit_shrinks_while_requests_wait_past_the_target_and_never_below_its_floor() -> None:
    a = Admission(target_s=0.005, min_limit=4, initial=256)
    now = 0.0
    for _ in range(200):
        now += 0.01  # a queue every 10 ms: the first in line waits little, the rest ever longer
        for i in range(50):  # many slow requests of one round shrink it once
            a.waited(0.0005 + i * 0.001, now)
    assert 4 <= a.limit < 8, "down to where those within the target are about what is admitted"
    assert a.admit(3) and not a.admit(8) and a.shed == 1
    floor = Admission(target_s=0.005, min_limit=4, initial=5)
    for i in range(100):
        floor.waited(0.0001 if i == 0 else 0.5, now=0.001 * i)
    assert floor.limit == 4, "never below its floor"


def test_one_slow_batch_shrinks_the_limit_once() -> None:
    a = Admission(target_s=0.005, initial=100)
    a.waited(0.0001, now=1.0)
    for _ in range(100):
        a.waited(0.05, now=1.0)
    assert 90 <= a.limit < 90.1


def test_the_limit_grows_back_by_about_one_per_limit_of_fast_requests_up_to_its_ceiling() -> None:
    a = Admission(target_s=0.005, min_limit=4, max_limit=64, initial=8)
    for _ in range(8):
        a.waited(0.001, now=1.0)
    assert 8.9 < a.limit < 9.1
    for _ in range(10_000):
        a.waited(0.001, now=1.0)
    assert a.limit == 64
    assert all(a.admit(q) for q in range(64)) and not a.admit(64)


def test_a_wait_every_request_sees_is_the_floor_and_only_what_admitting_adds_counts() -> None:
    """Under a flood the loop's round of refusals makes every wait long: that cannot be shed."""
    a = Admission(target_s=0.005, initial=50)
    now = 0.0
    for _ in range(1000):  # every admitted request waits 20-24 ms: the floor is 20 ms
        now += 0.001
        a.waited(0.020 + (now * 1000 % 5) / 1000, now)
    assert a.floor_s == 0.020 and a.limit > 50, "within the target over the floor: it grew"
    for _ in range(100):  # admitting more now adds 30 ms over the floor: it shrinks
        now += 0.01
        a.waited(0.050, now)
    assert a.limit < 10
    for _ in range(3000):  # the flood is over: waits fall, the floor follows within two seconds
        now += 0.001
        a.waited(0.0001, now)
    assert a.floor_s == 0.0001 and a.limit > 20
