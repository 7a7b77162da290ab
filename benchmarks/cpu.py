"""CPU accounting during a measurement: per process, per core, and the generator's saturation.

A sampler thread reads each watched process's CPU time and each core's busy time a few times
a second. From that a run knows its servers' CPU seconds (→ CPU per request), whether the load
generator ever ran above 80% of its core over a short window (→ the run is invalid), and how
busy the server's core was with *other* work (the machine is shared; that is recorded too).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

import psutil

SATURATED = 0.80  # of one core
WINDOW_S = 2.0
SETTLE_S = 2.0  # the generator's own start-up (imports, spawning users) is not load


@dataclass
class Series:
    pid: int
    role: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def sample(self, now: float) -> None:
        try:
            t = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return
        self.times.append(now)
        self.cpu.append(float(t.user + t.system))

    def at(self, t: float) -> float:
        """CPU seconds used by time `t`, interpolated between samples (clamped to the series)."""
        if not self.times:
            return 0.0
        if t <= self.times[0]:
            return self.cpu[0]
        if t >= self.times[-1]:
            return self.cpu[-1]
        hi = bisect.bisect_left(self.times, t)
        lo = hi - 1
        frac = (t - self.times[lo]) / (self.times[hi] - self.times[lo])
        return self.cpu[lo] + frac * (self.cpu[hi] - self.cpu[lo])

    def total(self) -> float:
        return self.cpu[-1] - self.cpu[0] if len(self.cpu) >= 2 else 0.0

    def busiest_window(self, window_s: float = WINDOW_S, skip_s: float = SETTLE_S) -> float:
        """The highest CPU share (of one core) over any `window_s` after the first `skip_s`."""
        if len(self.times) < 2:
            return 0.0
        start = self.times[0] + skip_s
        best = 0.0
        j = 0
        for i, t in enumerate(self.times):
            if t < start:
                continue
            while j < i and self.times[j] < start:
                j += 1
            while j < i and t - self.times[j] > window_s:
                j += 1
            if j < i and t - self.times[j] >= window_s * 0.5:
                best = max(best, (self.cpu[i] - self.cpu[j]) / (t - self.times[j]))
        return best

    def mean_share(self, skip_s: float = SETTLE_S) -> float:
        if len(self.times) < 2:
            return 0.0
        start = self.times[0] + skip_s
        idx = next((i for i, t in enumerate(self.times) if t >= start), 0)
        span = self.times[-1] - self.times[idx]
        return (self.cpu[-1] - self.cpu[idx]) / span if span > 0 else 0.0


@dataclass(frozen=True)
class CpuReport:
    wall_s: float
    servers_cpu_s: float
    per_process: dict[str, float]
    generator_mean: float
    generator_peak: float
    core_busy: dict[int, float]  # share of each core busy over the run, whoever used it
    foreign_on_server_core: float | None  # busy share of the server's core not ours
    # Share of each core's time the hypervisor gave to other guests ("steal"; counted in
    # core_busy and foreign too). A VM's speed swings with it: the same run can take twice as long.
    steal: dict[int, float] = field(default_factory=dict)

    @property
    def generator_saturated(self) -> bool:
        return self.generator_peak > SATURATED

    def as_dict(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "servers_cpu_s": round(self.servers_cpu_s, 3),
            "per_process_cpu_s": {k: round(v, 3) for k, v in self.per_process.items()},
            "generator_cpu_mean": round(self.generator_mean, 3),
            "generator_cpu_peak_2s": round(self.generator_peak, 3),
            "generator_saturated": self.generator_saturated,
            "core_busy": {str(k): round(v, 3) for k, v in self.core_busy.items()},
            "foreign_busy_on_server_core": (
                None if self.foreign_on_server_core is None else round(self.foreign_on_server_core, 3)
            ),
            "steal": {str(k): round(v, 4) for k, v in self.steal.items()},
        }


class CpuSampler:
    """`with CpuSampler(servers, server_core) as s: s.watch_generator(pid) …; s.report()`."""

    def __init__(
        self,
        servers: Iterable[tuple[str, int]],
        server_core: int | None,
        interval: float = 0.2,
        *,
        off_server_core: Iterable[str] = (),
    ):
        self.servers = [Series(pid, role) for role, pid in servers]
        self.off_server_core = set(off_server_core)  # roles of servers pinned elsewhere
        self.generators: list[Series] = []
        self.server_core = server_core
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._cores_start: list[tuple[float, float, float]] = []
        self._cores_end: list[tuple[float, float, float]] = []
        self._t0 = 0.0
        self._t1 = 0.0

    def watch_generator(self, pid: int, role: str = "generator") -> None:
        series = Series(pid, role)
        series.sample(time.time())
        with self._lock:
            self.generators.append(series)

    @staticmethod
    def _cores() -> list[tuple[float, float, float]]:
        """Per core: (busy, total, stolen) CPU seconds since boot."""
        out = []
        for c in psutil.cpu_times(percpu=True):
            idle = c.idle + getattr(c, "iowait", 0.0)
            out.append((float(sum(c) - idle), float(sum(c)), float(getattr(c, "steal", 0.0))))
        return out

    def _sample(self) -> None:
        now = time.time()
        with self._lock:
            for s in [*self.servers, *self.generators]:
                s.sample(now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._t0 = time.time()
        self._cores_start = self._cores()
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._t1 = time.time()
        self._cores_end = self._cores()

    def cpu_between(self, roles: Iterable[str], t0: float, t1: float) -> float:
        """CPU seconds the named processes used between two wall-clock times (epoch seconds)."""
        wanted = set(roles)
        return sum(s.at(t1) - s.at(t0) for s in [*self.servers, *self.generators] if s.role in wanted)

    def report(self) -> CpuReport:
        busy: dict[int, float] = {}
        steal: dict[int, float] = {}
        pairs = zip(self._cores_start, self._cores_end, strict=False)
        for i, ((b0, t0, s0), (b1, t1, s1)) in enumerate(pairs):
            busy[i] = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
            steal[i] = (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0
        wall = self._t1 - self._t0
        servers = sum(s.total() for s in self.servers)
        on_core = sum(s.total() for s in self.servers if s.role not in self.off_server_core)
        foreign = None
        if self.server_core is not None and self.server_core in busy and wall > 0:
            foreign = max(busy[self.server_core] - on_core / wall, 0.0)
        gens = self.generators
        return CpuReport(
            wall_s=wall,
            servers_cpu_s=servers,
            per_process={s.role: s.total() for s in [*self.servers, *gens]},
            generator_mean=max((g.mean_share() for g in gens), default=0.0),
            generator_peak=max((g.busiest_window() for g in gens), default=0.0),
            core_busy=busy,
            foreign_on_server_core=foreign,
            steal=steal,
        )
