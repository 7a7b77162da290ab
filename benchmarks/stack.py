"""Pieces every scenario uses: a seeded world served on loopback, rows from raw requests,
CPU accounting onto rows, the generator check, and the ceiling measured in the same run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import processes
from benchmarks.context import Run
from benchmarks.cpu import SATURATED, CpuReport, CpuSampler
from benchmarks.loadgen import LocustRun, RawRequest, run_locust
from benchmarks.processes import Service
from benchmarks.results import Row, latency_row
from benchmarks.workload import world_for
from models.world import World

PER_USER_RATE = 10.0  # requests per second per locust user; users = rate / this
WRK_PATHS = 2000


@dataclass
class Served:
    world: World
    origins: list[Service]
    edge: Service | None
    region: str

    @property
    def origin(self) -> Service:
        return self.origins[0]

    def servers(self) -> list[tuple[str, int]]:
        out = [(s.role, s.pid) for s in self.origins]
        if self.edge is not None:
            out.append((self.edge.role, self.edge.pid))
        return out


def seed_world(run: Run, data: Path, shipments: int, regions: int) -> World:
    summary, done = processes.seed(
        data,
        shipments=shipments,
        regions=regions,
        env=run.env,
        store=run.options.store,
    )
    run.result.world = {
        "shipments": shipments,
        "regions": summary["regions"],
        "shipments_per_region": shipments // max(len(summary["regions"]), 1),
        "products": summary.get("products"),
        "seed": 7,
    }
    run.result.figures["seed_s"] = round(done.wall_s, 2)
    return world_for(shipments, regions)


def serve_world(
    run: Run, *, edge: bool = True, origins: int = 1, origin_off_server_core: bool = False
) -> Served:
    """Seed `run.shipments` into a temporary store, start the origin(s) and one edge, wait for ready.

    `origin_off_server_core` puts the origin(s) on the generator's core, leaving the server core
    to the edge alone: for scenarios where the edge is measured and the origin, in production
    another machine, is only what it talks to."""
    data = run.workdir / "origin"
    world = seed_world(run, data, run.shipments, run.options.regions)
    if origins > 1 and not run.options.store:
        run.warn(f"{origins} origin processes share one SQLite file: their writes serialize on its lock")
    started = [
        processes.start_origin(
            run.procs, data, run.env, run.options.store, i, generator_core=origin_off_server_core
        )
        for i in range(origins)
    ]
    region = world.regions[0].name
    edge_service = None
    if edge:
        origin_url = started[0].url
        assert origin_url is not None
        edge_service = processes.start_edge(
            run.procs,
            origin_url,
            region,
            run.workdir / f"edge-{region}",
            run.env,
            ready_timeout=60 + run.shipments / 5000,
        )
    run.result.processes = [s.describe() for s in run.procs.services]
    return Served(world, started, edge_service, region)


def users_for(rate: float) -> tuple[int, float]:
    """How many paced users give `rate` requests/s, and each one's rate."""
    users = max(math.ceil(rate / PER_USER_RATE), 1)
    return users, rate / users


def rows_by_name(
    requests: Sequence[RawRequest], names: Iterable[str], *, method: str, span_s: float
) -> list[Row]:
    rows = []
    for name in names:
        mine = [r for r in requests if r.name == name]
        ok = [r.latency_ms for r in mine if r.outcome == "ok"]
        bad = sum(1 for r in mine if r.outcome != "ok")
        rows.append(latency_row(name, method, ok, errors=bad, span_s=span_s))
    return rows


def paced_rows(run: Run, locust: LocustRun, names: Sequence[str], *, total: str | None = "all") -> list[Row]:
    """Rows of intended-time latency per request name (and an overall row)."""
    span = locust.span_s()
    method = "paced (locust)"
    rows = rows_by_name(locust.requests, names, method=method, span_s=span)
    if total:
        mine = [r for r in locust.requests if r.name in names]
        ok = [r.latency_ms for r in mine if r.outcome == "ok"]
        rows.append(latency_row(total, method, ok, errors=len(mine) - len(ok), span_s=span))
    outcomes = Counter(r.outcome for r in locust.requests)
    run.result.figures.setdefault("outcomes", {}).update(dict(outcomes))
    service = {}
    for name in names:
        values = sorted(r.service_ms for r in locust.requests if r.name == name and r.outcome == "ok")
        if values:
            service[name] = {
                "p50_ms": round(values[len(values) // 2], 2),
                "p99_ms": round(values[min(int(len(values) * 0.99), len(values) - 1)], 2),
            }
    run.result.figures.setdefault("service_time_from_actual_send", {}).update(service)
    behind = int(locust.meta.get("behind", 0))
    if behind:
        run.warn(f"locust users ended {behind} sends behind schedule (the server could not keep up)")
    return rows


STEAL_WARN = 0.01


def check_generator(run: Run, cpu: CpuReport, tool: str) -> None:
    run.result.cpu.setdefault("generator_runs", []).append({"tool": tool, **cpu.as_dict()})
    if cpu.generator_saturated:
        run.result.invalidate(
            f"{tool} used {cpu.generator_peak:.0%} of its core over a 2 s window (limit {SATURATED:.0%}):"
            " the generator, not the server, may have set the pace"
        )
    foreign = cpu.foreign_on_server_core
    if foreign is not None and foreign > 0.2:
        run.warn(f"{foreign:.0%} of the server core went to other processes during {tool} (shared machine)")
    stolen = max(cpu.steal.values(), default=0.0)
    if stolen > STEAL_WARN:
        run.warn(
            f"the hypervisor took {stolen:.1%} of a core from this VM during {tool} (steal): "
            "compare with runs interleaved in the same hour, not across hours"
        )


def note_other_load(rows: Iterable[Row], cpu: CpuReport) -> None:
    """Record on each row how much of the server's core other processes took meanwhile."""
    for row in rows:
        if cpu.foreign_on_server_core is not None:
            row.other_load = round(cpu.foreign_on_server_core, 3)


def cpu_per_request(cpu: CpuReport, roles: Sequence[str], requests: int) -> float | None:
    used = sum(cpu.per_process.get(r, 0.0) for r in roles)
    return round(used / requests, 6) if requests else None


def cpu_per_paced_request(sampler: CpuSampler, roles: Sequence[str], locust: LocustRun) -> float | None:
    """Server CPU per request over the paced load itself (not locust's start-up or wind-down)."""
    if not locust.requests:
        return None
    t0 = min(r.intended for r in locust.requests)
    t1 = max(r.end for r in locust.requests)
    return round(sampler.cpu_between(roles, t0, t1) / len(locust.requests), 6)


def write_paths(path: Path, paths: Iterable[str]) -> Path:
    path.write_text("".join(f"{p}\n" for p in paths))
    return path


def drive_with_locust(
    run: Run,
    served: Served,
    *,
    locustfile: str,
    host: str,
    users: int,
    duration_s: float,
    params: dict[str, Any],
    tag: str = "locust",
) -> tuple[LocustRun, CpuSampler, CpuReport]:
    """Run a locustfile against the served processes while sampling their CPU; a saturated
    generator marks the run invalid."""
    elsewhere = [
        s.role for s in [*served.origins, served.edge] if s is not None and s.core != run.cores.server
    ]
    with CpuSampler(served.servers(), run.cores.server, off_server_core=elsewhere) as sampler:
        locust = run_locust(
            run.procs,
            sampler,
            run.out_dir,
            locustfile=locustfile,
            host=host,
            users=users,
            duration_s=duration_s,
            params={**params, "arrivals": run.options.arrivals},
            env=run.env,
            tag=tag,
        )
    cpu = sampler.report()
    check_generator(run, cpu, tag)
    return locust, sampler, cpu
