"""Is the host slowing this machine down? A few seconds of duty-cycled spinning on one core.

Steal time does not show every host's interference. On the Firecracker VMs these figures were
taken on, on 27 Nov 2026, a spin loop on either core ran at 8–50 % of its usual speed for
50–300 ms about every 1.5 s — at 10 % duty as at 100 %, with steal reported at 0.03 % — so
every process of a run slowed several-fold at once, and the route p99 rose to 50–75 ms for any
code (the session's start too, in interleaved runs), while the edge's own clock still had
99.5 % of its answers within 10 ms. `probe` measures that before each run, and the runner
warns when it finds it: then a tail says more about the host than about the code.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

SLOW = 0.6  # a window that got less than this share of the median window's work is slow
WARN_SHARE = 0.02


def probe(
    core: int | None, seconds: float = 3.0, window_s: float = 0.005, duty: float = 0.25
) -> dict[str, Any]:
    """Spin `window_s` at a time (then rest, for `duty`) on `core`; how often was a window slow?"""
    own = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    work: list[tuple[float, int]] = []
    try:
        start = time.perf_counter()
        while (now := time.perf_counter()) - start < seconds:
            n = 0
            while time.perf_counter() - now < window_s:
                sum(range(100))
                n += 1
            work.append((now - start, n))
            time.sleep(window_s * (1 / duty - 1))
    finally:
        os.sched_setaffinity(0, own)
    median = statistics.median(n for _, n in work)
    slow = [(t, n / median) for t, n in work if n < SLOW * median]
    return {
        "core": core,
        "seconds": seconds,
        "windows": len(work),
        "slow_share": round(len(slow) / len(work), 4),
        "slowest": round(min(n for _, n in work) / median, 3),
        "slow_at_s": [round(t, 2) for t, _ in slow[:20]],
    }


def warning(found: dict[str, Any]) -> str | None:
    if found["slow_share"] <= WARN_SHARE:
        return None
    return (
        f"the host slowed core {found['core']} below {SLOW:.0%} of its speed in"
        f" {found['slow_share']:.1%} of {found['windows']} moments (down to {found['slowest']:.0%}),"
        " with steal not showing it: latency tails of this run are partly the host's"
    )
