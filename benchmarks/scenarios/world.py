"""`seed`, `memory` and `ceiling`: how long a world takes to make, what it costs an edge to
hold, and what the bare framework allows.

`memory` seeds one region and grows it through the given sizes (seeding extends a world); for
each size a fresh edge bootstraps from the origin's snapshot (spawn → ready), its RSS is read,
and it is restarted on its own replica (restart → ready). Bytes per shipment are the RSS above
an edge of the same world with no shipments, divided by the shipments it holds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks import processes
from benchmarks.context import Defaults, Run, Scenario
from benchmarks.cpu import CpuSampler
from benchmarks.processes import Service, wait_ready
from benchmarks.results import Target
from benchmarks.throughput import measure_throughput, wrk_available

SEED_TARGET_S = 180.0
SEED_TARGET_N = 1_000_000
BYTES_TARGET = 1536
MEMORY_SIZES = (10_000, 100_000, 1_000_000)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_seed(run: Run) -> None:
    data = run.workdir / "origin"
    n = run.shipments
    with CpuSampler([], None) as sampler:
        summary, done = processes.seed(
            data, shipments=n, regions=run.options.regions, env=run.env, store=run.options.store
        )
    cpu = sampler.report()
    busy_core_s = sum(cpu.core_busy.values()) * cpu.wall_s
    other = max(busy_core_s - done.cpu_s, 0.0) / (cpu.wall_s * len(cpu.core_busy)) if cpu.wall_s else 0.0
    run.result.world = {
        "shipments": n,
        "regions": summary["regions"],
        "products": summary.get("products"),
        "seed": 7,
    }
    per_s = n / done.wall_s if done.wall_s else 0.0
    run.result.figures.update(
        {
            "seconds": round(done.wall_s, 2),
            "shipments_per_s": round(per_s),
            "cpu_s": round(done.cpu_s, 2),
            "peak_rss_mb": round(done.max_rss_bytes / 2**20, 1),
            "store_bytes": _dir_bytes(data) if not run.options.store else None,
            "cores": "all usable (seeding is measured alone; it may fork helpers)",
            "other_load_on_machine": round(other, 3),
        }
    )
    if other > 0.2:
        run.warn(f"{other:.0%} of the machine's CPU went to other processes while seeding (shared machine)")
    projected = SEED_TARGET_N / per_s if per_s else float("inf")
    run.result.targets.append(
        Target(
            what=f"seed {SEED_TARGET_N:,} shipments",
            target=f"< {SEED_TARGET_S:g} s",
            measured=(
                f"{done.wall_s:.1f} s for {n:,}"
                if n >= SEED_TARGET_N
                else f"{done.wall_s:.1f} s for {n:,} (≈ {projected:.0f} s for 1M if linear)"
            ),
            met=done.wall_s < SEED_TARGET_S if n >= SEED_TARGET_N else None,
        )
    )


def _boot(
    run: Run, origin_url: str, region: str, data: Path, timeout: float
) -> tuple[Service, dict[str, float]]:
    """Start an edge; times from spawn to `/healthz` (process up) and to `/readyz` (bootstrapped)."""
    spawned = time.monotonic()
    edge = processes.start_edge(run.procs, origin_url, region, data, run.env, wait=False)
    assert edge.url is not None
    alive = wait_ready(run.procs, f"{edge.url}/healthz", timeout)
    ready = wait_ready(run.procs, f"{edge.url}/readyz", timeout)
    time.sleep(1.0)  # let the last batch's garbage go before reading RSS
    return edge, {"to_alive_s": alive - spawned, "to_ready_s": ready - spawned}


def _edge_at(run: Run, data: Path, region: str, shipments: int) -> dict[str, Any]:
    origin = processes.start_origin(run.procs, data, run.env, run.options.store)
    assert origin.url is not None
    timeout = 60 + shipments / 2000
    edge_dir = run.workdir / f"edge-{shipments}"
    try:
        edge, boot = _boot(run, origin.url, region, edge_dir, timeout)
        rss = edge.rss_bytes()
        run.procs.stop(edge)
        edge, again = _boot(run, origin.url, region, edge_dir, timeout)
        rss_restart = edge.rss_bytes()
        run.procs.stop(edge)
    finally:
        run.procs.stop(origin)
    return {
        "shipments": shipments,
        "rss_mb": round(rss / 2**20, 1),
        "rss_bytes": rss,
        "bootstrap_s": round(boot["to_ready_s"], 2),
        "process_start_s": round(boot["to_alive_s"], 2),
        "restart_to_ready_s": round(again["to_ready_s"], 2),
        "rss_after_restart_mb": round(rss_restart / 2**20, 1),
        "replica_bytes": _dir_bytes(edge_dir),
    }


def measure_memory(run: Run) -> None:
    sizes = sorted(run.options.sizes or MEMORY_SIZES)
    data = run.workdir / "origin"
    points = []
    seeded = 0
    for n in [0, *sizes]:
        summary, done = processes.seed(data, shipments=n, regions=1, env=run.env, store=run.options.store)
        region = summary["regions"][0]
        point = _edge_at(run, data, region, n)
        point["seed_s"] = round(done.wall_s, 2)
        seeded = n
        points.append(point)
    base = points[0]["rss_bytes"]
    for p in points[1:]:
        p["bytes_per_shipment"] = round((p["rss_bytes"] - base) / p["shipments"])
    run.result.world = {"shipments": seeded, "regions": 1, "sizes": sizes, "seed": 7}
    run.result.figures["baseline_rss_mb"] = points[0]["rss_mb"]
    run.result.figures["sizes"] = points[1:]
    largest = points[-1]
    run.result.targets.append(
        Target(
            what=f"edge memory per shipment at {largest['shipments']:,}",
            target=f"≤ {BYTES_TARGET:,} B",
            measured=f"{largest['bytes_per_shipment']:,} B (RSS above an empty region)",
            met=largest["bytes_per_shipment"] <= BYTES_TARGET,
        )
    )


def measure_bare(run: Run) -> None:
    if wrk_available(run, "throughput ceiling"):
        measure_throughput(run, [], rounds=run.options.rounds)


SEED = Scenario(
    name="seed",
    summary="time to seed a world of N shipments (python -m origin seed)",
    measure=measure_seed,
    defaults=Defaults(shipments=SEED_TARGET_N),
)
MEMORY = Scenario(
    name="memory",
    summary="edge RSS after bootstrap, bytes per shipment, bootstrap and restart-to-ready times",
    measure=measure_memory,
    defaults=Defaults(shipments=max(MEMORY_SIZES)),
)
CEILING = Scenario(
    name="ceiling",
    summary="a bare Starlette endpoint served like the services, under wrk: the throughput ceiling",
    measure=measure_bare,
    defaults=Defaults(wrk_duration=10),
    uses_wrk=True,
)
