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
    a.outstanding = 3
    assert a.admit() and a.outstanding == 4
    a.outstanding = 8
    assert not a.admit() and a.shed == 1 and a.outstanding == 8
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
    assert all(a.admit() for _ in range(64)) and not a.admit()
    a.answered()
    assert a.admit(), "an answered request makes room"


def test_only_the_wait_behind_requests_run_before_in_the_same_round_counts() -> None:
    """Requests read in one round of the loop wait for the round to be read (under a flood, for
    most of it to be refused): that is no queue the limit made, and is not held against it."""
    from starlette.types import Receive, Scope, Send

    from edge.shedding import ShedLoad
    from sync.server import ARRIVED

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    seen: list[float] = []

    class Recording(Admission):
        def waited(self, seconds: float, now: float) -> None:
            seen.append(seconds)

    shed = ShedLoad(app, admission=Recording(), max_inflight=10)
    import time as clock

    read_at = clock.perf_counter() - 0.2  # a round read 200 ms ago and run only now
    for _ in range(3):
        assert shed.admit({ARRIVED: read_at})
    assert seen[0] < 0.001 < 0.2, "the first of the round waited behind nothing admitted"
    assert seen == sorted(seen), "each later one waited behind those run before it"
    seen.clear()
    assert shed.admit({ARRIVED: clock.perf_counter()})  # read after those ran: a new round
    assert seen[0] < 0.001
    assert not shed.admit({ARRIVED: clock.perf_counter() - 1.0}), "a stalled loop still refuses"
