"""Run one scenario, or the short suite `make bench` runs.

A run gets its own output folder `benchmarks/results/<scenario>-<timestamp>/` (result.json, the
generators' raw output, the servers' logs) and its own temporary directory for the world; every
process it starts is stopped when it ends, however it ends. A scenario that cannot run (a
process died, wrk is missing, nothing got ready) is an error and a nonzero exit, never a
quiet skip. A run whose generator was saturated is written and printed as INVALID.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

from benchmarks import hostcheck
from benchmarks.context import Options, Run, Scenario
from benchmarks.processes import Cores, Processes, bench_env
from benchmarks.results import Result, git_info, machine, table, timestamp, write
from benchmarks.scenarios import SCENARIOS

RESULTS = Path(__file__).resolve().parent / "results"

# `make bench`: every scenario, short, on small worlds; under three minutes here, the route floor included.
SUITE: list[tuple[str, Options]] = [
    ("ceiling", Options(wrk_duration=2)),
    ("steady", Options(shipments=10_000, rate=200, duration=10, wrk_duration=2)),
    ("burst", Options(shipments=10_000, rate=30, base_s=5, peak_s=10, after_s=5)),
    ("sync-lag", Options(shipments=10_000, rate=200, duration=10)),
    ("ingest", Options(shipments=10_000, rate=1000, duration=8, wrk_duration=2)),
    ("seed", Options(shipments=40_000)),
    ("memory", Options(sizes=(10_000, 30_000))),
    ("route", Options(shipments=10_000, rate=100, duration=6)),  # then as long again on the floor
    ("overload", Options(shipments=5_000, wrk_duration=4)),  # then as long again on the floor
]


def _out_dir(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    base = root / f"{name}-{timestamp()}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    out.mkdir()
    return out


def run_scenario(name: str, options: Options, *, results_root: Path = RESULTS, command: list[str]) -> Result:
    """Run scenario `name`; write and print its result; return it (`error` set if it could not run)."""
    assert name in SCENARIOS, f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}"
    scenario = SCENARIOS[name]
    out_dir = _out_dir(results_root, name)
    cores = Cores.detect()
    result = Result(
        scenario=name,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        command=command,
        params={},
        machine=machine(),
        git=git_info(),
    )
    result.cpu["cores"] = {"server": cores.server, "generator": cores.generator, "pinned": cores.pinned}
    if not cores.pinned:
        result.invalidate("fewer than two usable cores: the generator would share the server's core")
    print(f"-- {name}: {scenario.summary}\n   writing to {out_dir}", flush=True)
    own_cores = os.sched_getaffinity(0)
    if cores.generator is not None:
        os.sched_setaffinity(0, {cores.generator})  # the runner's own sampling stays off the server core
    try:
        with hostcheck.Watch(cores.generator) as watch:
            _measure(scenario, options, out_dir, cores, result, watch)
    finally:
        os.sched_setaffinity(0, own_cores)
    result.machine["host_speed"] = found = watch.summary()
    if (warning := hostcheck.warning(found)) is not None:
        result.warnings.append(warning)
    write(result, out_dir)
    print(table(result), flush=True)
    if result.error:
        print(
            f"!! {name} FAILED: {result.error}\n   see {out_dir}/error.txt and the *.log files there",
            flush=True,
        )
    return result


def _measure(
    scenario: Scenario, options: Options, out_dir: Path, cores: Cores, result: Result, host: hostcheck.Watch
) -> None:
    """Run the scenario with its own temp dir and processes; every process is stopped after."""
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix=f"waypost-bench-{scenario.name}-") as tmp,
        Processes(out_dir, cores) as procs,
    ):
        run = Run(scenario, options, out_dir, Path(tmp), cores, bench_env(), procs, result, host)
        result.params = scenario.params(run)
        try:
            scenario.measure(run)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            result.invalidate("the scenario could not run to the end")
            (out_dir / "error.txt").write_text(traceback.format_exc())
        finally:
            result.seconds = round(time.monotonic() - started, 1)


def run_suite(results_root: Path = RESULTS, no_wrk: bool = False) -> int:
    """Every scenario in `SUITE`; 1 if any could not run, else 0 (invalid runs are printed)."""
    started = time.monotonic()
    outcomes = []
    for name, options in SUITE:
        opts = replace(options, no_wrk=no_wrk)
        result = run_scenario(name, opts, results_root=results_root, command=["suite", name])
        outcomes.append((name, result))
    elapsed = time.monotonic() - started
    print(f"\n== suite finished in {elapsed:.0f}s" + (" (over its 3-minute budget)" if elapsed > 180 else ""))
    for name, result in outcomes:
        state = "FAILED" if result.error else ("valid" if result.valid else "INVALID")
        print(f"   {name:10} {state}{': ' + result.error if result.error else ''}")
    failed = [n for n, r in outcomes if r.error]
    if failed:
        print(f"!! could not run: {', '.join(failed)}", flush=True)
        return 1
    return 0
