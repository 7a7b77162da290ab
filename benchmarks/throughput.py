"""Throughput with wrk, always beside the bare-Starlette ceiling of the same run.

The machine is shared, so a ceiling taken a minute before a measurement can be taken under a
different load. Targets and the ceiling therefore run interleaved, in rounds (ceiling, A, B,
ceiling, A, B, …), and each target's ratio is the median over rounds of its rate divided by the
ceiling's rate *in that round*. Each row shows the median round; all rounds go in the JSON.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import processes
from benchmarks.context import Run
from benchmarks.cpu import CpuReport, CpuSampler
from benchmarks.loadgen import WrkRun, have_wrk, run_wrk
from benchmarks.processes import BenchmarkError, Service
from benchmarks.results import Row
from benchmarks.stack import check_generator, cpu_per_request, note_other_load, write_paths
from benchmarks.workload import sample_shipments, world_for

CEILING = "ceiling: bare starlette"
PATHS = 2000

# One wrk process per leg, all legs of a target at once: (url, script args) for round i.
Legs = Callable[[int], list[tuple[str, list[str]]]]


@dataclass
class WrkTarget:
    name: str
    script: str  # wrk/<script>.lua
    legs: Legs
    roles: list[str]  # the server processes whose CPU this target costs
    count_accepted: bool = False  # presigned webhooks: only 202s count
    rounds: list[Row] = field(default_factory=list)


def wrk_available(run: Run, what: str) -> bool:
    """Whether wrk parts can run; without wrk they fail the run unless `--no-wrk` asked to skip."""
    if run.options.no_wrk:
        run.skip(f"{what}: --no-wrk")
        return False
    if not have_wrk():
        raise BenchmarkError(f"{what} needs wrk (Debian: apt-get install -y wrk), or pass --no-wrk")
    return True


def paths_target(name: str, service: Service, paths: Path) -> WrkTarget:
    url = service.url
    assert url is not None
    return WrkTarget(name, "paths", lambda _round: [(url, [str(paths)])], [service.role])


def wrk_row(name: str, wrk: WrkRun, count: int) -> Row:
    lat = wrk.latency_us
    return Row(
        name=name,
        method="closed loop (wrk)",
        requests=count,
        rps=round(count / wrk.duration_s, 1) if wrk.duration_s else 0.0,
        p50_ms=round(lat["p50"] / 1000, 2),
        p95_ms=round(lat["p95"] / 1000, 2),
        p99_ms=round(lat["p99"] / 1000, 2),
        p999_ms=round(lat["p999"] / 1000, 2),
        max_ms=round(lat["max"] / 1000, 2),
        errors=wrk.error_count,
    )


def _drive(run: Run, target: WrkTarget, round_no: int) -> tuple[Row, CpuReport]:
    legs = target.legs(round_no)
    tag = "wrk-" + target.name.split(":")[-1].strip().replace(" ", "-") + f"-r{round_no}"
    watched = [(s.role, s.pid) for s in run.procs.services if s.role in target.roles]
    results: list[WrkRun] = []
    errors: list[BaseException] = []

    def leg(i: int, url: str, args: list[str], sampler: CpuSampler) -> None:
        try:
            results.append(
                run_wrk(
                    run.procs,
                    sampler,
                    run.out_dir,
                    script=target.script,
                    url=url,
                    script_args=args,
                    duration_s=run.wrk_duration,
                    connections=max(run.connections // len(legs), 1),
                    tag=tag if len(legs) == 1 else f"{tag}-{i}",
                    env=run.env,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    with CpuSampler(watched, run.cores.server) as sampler:
        threads = [
            threading.Thread(target=leg, args=(i, url, args, sampler)) for i, (url, args) in enumerate(legs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    cpu = sampler.report()
    check_generator(run, cpu, tag)
    # Only answers that did the work count: 202s for webhooks, 2xx/3xx otherwise (a shed 503
    # is fast and cheap; counting it would flatter an overloaded server).
    count = sum(
        (r.accepted or 0) if target.count_accepted else r.requests - r.errors["status"] for r in results
    )
    worst = max(results, key=lambda r: r.latency_us["p99"])
    merged = WrkRun(
        requests=count,
        duration_s=max(r.duration_s for r in results),
        latency_us=worst.latency_us,
        errors={k: sum(r.errors[k] for r in results) for k in worst.errors},
        accepted=count if target.count_accepted else None,
    )
    row = wrk_row(target.name, merged, count)
    row.server_cpu_s_per_request = cpu_per_request(cpu, target.roles, count)
    note_other_load([row], cpu)
    return row, cpu


def _ceiling_paths(run: Run) -> Path:
    world = world_for(PATHS, 1)
    return write_paths(
        run.workdir / "ceiling-paths.txt", (f"/ceiling/{tn}" for tn, _ in sample_shipments(world, PATHS))
    )


def measure_throughput(run: Run, targets: Sequence[WrkTarget], *, rounds: int = 3) -> list[Row]:
    """Interleave the ceiling and `targets` for `rounds` rounds; add median rows to the result."""
    bare = processes.start_bare(run.procs, run.env)
    ceiling = paths_target(CEILING, bare, _ceiling_paths(run))
    everything = [ceiling, *targets]
    try:
        for i in range(rounds):
            for target in everything:
                row, _ = _drive(run, target, i)
                target.rounds.append(row)
    finally:
        run.procs.stop(bare)
    rows = []
    for target in everything:
        rates = [r.rps for r in target.rounds]
        ratios = [r.rps / c.rps for r, c in zip(target.rounds, ceiling.rounds, strict=True) if c.rps]
        median = sorted(target.rounds, key=lambda r: r.rps)[len(target.rounds) // 2]
        median.ceiling_ratio = round(statistics.median(ratios), 3) if ratios else None
        median.note = f"median of {rounds} rounds: " + ", ".join(f"{x:,.0f}" for x in rates) + " req/s"
        rows.append(median)
        run.result.figures.setdefault("wrk_rounds", []).append(
            {"name": target.name, "rps": rates, "ratio_to_ceiling": [round(x, 3) for x in ratios]}
        )
    run.result.ceiling_rps = rows[0].rps
    run.result.rows += rows[1:] + rows[:1]
    return rows[1:]
