"""What a scenario is, and what it is handed when it runs.

A `Scenario` names itself, says what it measures and which options it reads, and has a
`measure(run)` that starts what it needs through `run.procs`, drives it, and fills
`run.result`. The runner owns everything else: the output folder, the temporary world, the
pinned cores, stopping every process, writing and printing the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.hostcheck import Watch
from benchmarks.processes import Cores, Processes
from benchmarks.results import Result


@dataclass(frozen=True)
class Options:
    """Every knob of `python -m benchmarks run`; `None` means the scenario's default."""

    shipments: int | None = None
    rate: float | None = None
    duration: float | None = None
    store: str | None = None
    origins: int = 1
    regions: int = 2
    wrk_duration: float | None = None
    connections: int | None = None
    rounds: int = 3
    no_wrk: bool = False
    sizes: tuple[int, ...] | None = None
    factor: float = 10.0
    base_s: float | None = None
    peak_s: float | None = None
    after_s: float | None = None
    probes: int | None = None
    arrivals: str = "even"  # the locust scenarios' schedule: even or poisson
    no_allotments: bool = False  # route: the edge asks the origin for every hold first


@dataclass(frozen=True)
class Defaults:
    shipments: int = 10_000
    rate: float = 100.0
    duration: float = 30.0
    wrk_duration: float = 10.0
    connections: int = 32  # wrk's


@dataclass
class Run:
    """One scenario run: resolved options, where to write, what was started."""

    scenario: Scenario
    options: Options
    out_dir: Path
    workdir: Path
    cores: Cores
    env: dict[str, str]
    procs: Processes
    result: Result
    host: Watch | None = None  # the host's speed, watched through the run (benchmarks.hostcheck)

    @property
    def shipments(self) -> int:
        return (
            self.options.shipments if self.options.shipments is not None else self.scenario.defaults.shipments
        )

    @property
    def rate(self) -> float:
        return self.options.rate if self.options.rate is not None else self.scenario.defaults.rate

    @property
    def duration(self) -> float:
        return self.options.duration if self.options.duration is not None else self.scenario.defaults.duration

    @property
    def wrk_duration(self) -> float:
        if self.options.wrk_duration is not None:
            return self.options.wrk_duration
        return self.scenario.defaults.wrk_duration

    @property
    def connections(self) -> int:
        if self.options.connections is not None:
            return self.options.connections
        return self.scenario.defaults.connections

    def skip(self, what: str) -> None:
        self.result.skipped.append(what)

    def warn(self, what: str) -> None:
        self.result.warnings.append(what)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    measure: Callable[[Run], None]
    defaults: Defaults = field(default_factory=Defaults)
    uses_wrk: bool = False  # wrk measures part of it (a throughput ceiling)

    def params(self, run: Run) -> dict[str, Any]:
        return {
            "shipments": run.shipments,
            "rate": run.rate,
            "duration_s": run.duration,
            "wrk_duration_s": run.wrk_duration,
            "store": run.options.store or "sqlite",
            "origins": run.options.origins,
            "regions": run.options.regions,
            "connections": run.connections,
            "wrk_rounds": run.options.rounds,
            "arrivals": run.options.arrivals,
            "allotments": not run.options.no_allotments,
        }
