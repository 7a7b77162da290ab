"""Is the host slowing this machine down? A thread that measures the CPU's speed during a run.

Steal time does not show every host's interference. On the Firecracker VMs these figures were
taken on, on 27 Nov 2026, a spin loop on either core ran at 8–50 % of its usual speed for
50–300 ms about every 1.5 s — at 10 % duty as at 100 %, with steal reported at 0.03 % — so
every process of a run slowed several-fold at once, and the route p99 rose to 50–75 ms for any
code (the session's start too, in interleaved runs), while the edge's own clock still had
99 % of its answers within 10 ms.

`Watch` runs beside a scenario, in the runner (on the generator's core): every 50 ms it counts
how much fixed work it gets done in 1 ms of its own CPU time. CPU time, not wall time: being
preempted by locust or the origin does not make a window slow, only the core itself running
slower does. A window under `SLOW` of the run's median is slow; the runner warns when more than
`WARN_SHARE` of them are: a tail then says more about the host than about the code. It costs
about 2 % of one core.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

SLOW = 0.6  # a window that got less than this share of the median window's work is slow
WARN_SHARE = 0.02
WINDOW_CPU_S = 0.001
EVERY_S = 0.05


def _window() -> float:
    """Work done per second of this thread's CPU time, over ~`WINDOW_CPU_S` of it."""
    start = time.thread_time()
    n = 0
    while (used := time.thread_time() - start) < WINDOW_CPU_S:
        sum(range(50))
        n += 1
    return n / used


class Watch:
    """`with Watch(core) as w: ...`, then `w.summary()`."""

    def __init__(self, core: int | None) -> None:
        self.core = core
        self.speeds: list[tuple[float, float]] = []  # (wall-clock time, work per CPU second)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="host watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        if self.core is not None:
            os.sched_setaffinity(threading.get_native_id(), {self.core})
        while not self._stop.wait(EVERY_S):
            self.speeds.append((time.time(), _window()))

    def summary(self) -> dict[str, Any]:
        if not self.speeds:
            return {"core": self.core, "windows": 0}
        slow = self.slow_moments()
        start = self.speeds[0][0]
        return {
            "core": self.core,
            "windows": len(self.speeds),
            "slow_share": round(len(slow) / len(self.speeds), 4),
            "slowest": round(min(v for _, v in self.speeds) / self._median(), 3),
            "slow_at_s": [round(t - start, 2) for t in slow[:30]],
        }

    def _median(self) -> float:
        return statistics.median(v for _, v in self.speeds)

    def slow_moments(self) -> list[float]:
        """Wall-clock times of the slow windows so far."""
        if not self.speeds:
            return []
        median = self._median()
        return [t for t, v in self.speeds if v < SLOW * median]


def outside(times: list[float], slow: list[float], before_s: float = 0.1, after_s: float = 0.3) -> list[bool]:
    """For each time: is it clear of every slow moment (from `before_s` before one to `after_s`
    after it, the time a backlog built in a slow stretch takes to drain)?"""
    spans = [(t - before_s, t + after_s) for t in slow]
    return [not any(a <= t <= b for a, b in spans) for t in times]


def warning(found: dict[str, Any]) -> str | None:
    if found.get("windows", 0) < 20 or found["slow_share"] <= WARN_SHARE:
        return None
    return (
        f"the host ran core {found['core']} below {SLOW:.0%} of its speed in"
        f" {found['slow_share']:.1%} of {found['windows']} moments of the run (down to"
        f" {found['slowest']:.0%}), which steal does not show: latency tails here are partly the host's"
    )
