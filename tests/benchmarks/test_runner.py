"""`python -m benchmarks run` keeps working: every scenario, a few seconds each, tiny worlds.

Each scenario runs as its own subprocess (locust never enters pytest), all at once so the whole
module takes about as long as the slowest one. These check that a run starts what it measures,
drives it, stops it and writes a complete result — not how fast anything is.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HAVE_WRK = shutil.which("wrk") is not None
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_WRK_REASON = "wrk is not installed here (apt-get install -y wrk); CI installs it"
WRK_PARTS = {"ceiling", "steady", "ingest", "overload"}

TINY = ["--shipments", "600"]
ONE_WRK_ROUND = ["--wrk-duration", "1", "--rounds", "1"]
SMOKE: dict[str, list[str]] = {
    "ceiling": ["--wrk-duration", "1", "--rounds", "2"],
    "steady": [*TINY, "--rate", "40", "--duration", "3", *ONE_WRK_ROUND],
    "burst": [*TINY, "--rate", "10", "--base-s", "1", "--peak-s", "2", "--after-s", "1"],
    "sync-lag": [*TINY, "--rate", "40", "--duration", "3", "--probes", "1"],
    "ingest": [*TINY, "--rate", "100", "--duration", "3", *ONE_WRK_ROUND],
    "seed": ["--shipments", "2000"],
    "memory": ["--sizes", "400"],
    "route": [*TINY, "--rate", "20", "--duration", "3"],
    "overload": [*TINY, "--connections", "200", "--wrk-duration", "2"],
}
ROW_FIELDS = {"name", "method", "requests", "rps", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "errors"}


@dataclass
class Finished:
    code: int
    output: str
    result: dict[str, Any] | None
    out_dir: Path | None


def _command(name: str, results: Path) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks", "run", "--scenario", name, *SMOKE[name]]
    if name in WRK_PARTS and not HAVE_WRK:
        argv.append("--no-wrk")
    return [*argv, "--results-dir", str(results)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Finished]]:
    """Start every smoke run at once; wait for all (bounded); hand back their results."""
    root = tmp_path_factory.mktemp("bench")
    wanted = [n for n in SMOKE if HAVE_WRK or n != "ceiling"]
    procs = {}
    for name in wanted:
        log = (root / f"{name}.out").open("w")
        procs[name] = subprocess.Popen(
            _command(name, root / name), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        log.close()
    deadline = time.monotonic() + 150
    finished: dict[str, Finished] = {}
    try:
        for name, proc in procs.items():
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            out_dirs = sorted((root / name).glob(f"{name}-*")) if (root / name).exists() else []
            result_file = out_dirs[-1] / "result.json" if out_dirs else None
            result = json.loads(result_file.read_text()) if result_file and result_file.exists() else None
            output = (root / f"{name}.out").read_text()
            finished[name] = Finished(code, output, result, out_dirs[-1] if out_dirs else None)
        yield finished
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def _completed(runs: dict[str, Finished], name: str) -> dict[str, Any]:
    run = runs[name]
    assert run.code == 0, f"{name} exited with {run.code}:\n{run.output[-3000:]}"
    assert run.result is not None, f"{name} wrote no result.json:\n{run.output[-3000:]}"
    result = run.result
    assert result["scenario"] == name
    assert result["error"] is None
    # Where and on what it was measured.
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["python"].count(".") == 2
    assert machine["packages"]["starlette"] and machine["packages"]["locust"]
    assert result["git"]["commit"] and len(result["git"]["commit"]) == 40
    assert result["params"] and result["command"][:3] == ["python", "-m", "benchmarks"]
    assert isinstance(result["valid"], bool)
    assert result["cpu"]["cores"]["pinned"] == (len(os.sched_getaffinity(0)) >= 2)
    assert f"== {name}:" in run.output, "the runner prints its table"
    return result


def _row(result: dict[str, Any], name: str) -> dict[str, Any]:
    rows = {r["name"]: r for r in result["rows"]}
    assert name in rows, f"no row {name!r} in {sorted(rows)}"
    row = rows[name]
    assert row.keys() >= ROW_FIELDS
    return row


def _measured(row: dict[str, Any], *, may_shed: bool = False) -> None:
    """Answered requests with ordered percentiles; errors only where the edge may shed load."""
    assert row["requests"] > 0 and row["rps"] > 0, row
    assert may_shed or row["errors"] == 0, row
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["p999_ms"], row


def _only_shed(result: dict[str, Any]) -> None:
    """On this shared machine an edge may shed (503 + Retry-After); nothing else may fail."""
    assert set(result["figures"]["outcomes"]) <= {"ok", "shed"}, result["figures"]["outcomes"]


def _wrk_checked(result: dict[str, Any], *rows: str) -> None:
    """The throughput rows, with wrk; without it, skip (never on CI) after the rest was checked."""
    if not HAVE_WRK:
        assert not ON_CI, "CI must install wrk (.ci/run does)"
        assert any("--no-wrk" in s for s in result["skipped"])
        pytest.skip(NO_WRK_REASON + ": the paced part passed, the throughput part did not run")
    assert result["ceiling_rps"] > 0
    for name in rows:
        row = _row(result, name)
        _measured(row, may_shed=name.startswith("max: track"))
        assert row["ceiling_ratio"] > 0, row
        assert row["server_cpu_s_per_request"] > 0, row


def test_ceiling_measures_a_bare_starlette_endpoint(runs: dict[str, Finished]) -> None:
    if not HAVE_WRK:
        assert not ON_CI, "CI must install wrk (.ci/run does)"
        pytest.skip(NO_WRK_REASON)
    result = _completed(runs, "ceiling")
    row = _row(result, "ceiling: bare starlette")
    _measured(row)
    assert row["ceiling_ratio"] == 1.0 and result["ceiling_rps"] == row["rps"]
    assert [r["name"] for r in result["figures"]["wrk_rounds"]] == ["ceiling: bare starlette"]
    assert len(result["figures"]["wrk_rounds"][0]["rps"]) == 2, "two interleaved rounds"
    generator = result["cpu"]["generator_runs"][0]
    assert generator["tool"].startswith("wrk-") and "generator_saturated" in generator


def test_steady_reports_each_kind_and_the_edge_against_the_ceiling(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "steady")
    assert result["world"]["shipments"] == 600
    for name in ("track html", "track unlocked", "track json", "track 404", "all"):
        _measured(_row(result, name), may_shed=True)
    _only_shed(result)
    assert _row(result, "all")["server_cpu_s_per_request"] > 0
    assert result["figures"]["outcomes"].get("ok", 0) > 0
    assert runs["steady"].out_dir is not None
    assert "locust-requests.csv" in result["files"] and "locust_stats.csv" in result["files"]
    _wrk_checked(result, "max: track json", "max: track html")


def test_paced_sends_are_evenly_spread(runs: dict[str, Finished]) -> None:
    """A fixed rate means sends spaced at about 1/rate: never two users in near lockstep, which
    would repeat the same burst every interval for the whole run."""
    result = _completed(runs, "steady")
    assert result["params"]["arrivals"] == "even"
    out_dir = runs["steady"].out_dir
    assert out_dir is not None
    with (out_dir / "locust-requests.csv").open() as f:
        due = sorted(float(r["intended"]) for r in csv.DictReader(f))
    spacing = 1 / result["params"]["rate"]
    closest = min(b - a for a, b in itertools.pairwise(due))
    # However few were sent (a loaded machine answers slowly and each user waits for its
    # answer), the times they were due for keep the schedule.
    assert len(due) >= 8 and closest >= 0.5 * spacing, (len(due), closest, spacing)


def test_burst_reports_every_phase_and_what_was_shed(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "burst")
    phases = {p["phase"]: p for p in result["figures"]["phases"]}
    assert list(phases) == ["base", "peak", "after"]
    assert phases["peak"]["offered_rps"] == 10 * phases["base"]["offered_rps"]
    for p in phases.values():
        assert p["ok"] > 0 and {"shed", "shed_without_retry_after", "timeout"} <= p.keys()
    peak = _row(result, "peak (100 req/s offered)")
    assert peak["requests"] > _row(result, "base (10 req/s offered)")["requests"]
    assert [t["what"] for t in result["targets"]] == ["the spike is shed cleanly"]


def test_sync_lag_times_new_statuses_until_the_edge_shows_them(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "sync-lag")
    _measured(_row(result, "webhook"))
    lag = _row(result, "visible on edge")
    _measured(lag)
    assert lag["method"] == "probe"
    assert _row(result, "visible since send")["p50_ms"] >= lag["p50_ms"]


def test_ingest_reports_paced_latency_and_max_events(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "ingest")
    row = _row(result, "webhook")
    _measured(row)
    assert row["server_cpu_s_per_request"] > 0
    assert any(t["target"] == "≤ 25 ms" for t in result["targets"])
    _wrk_checked(result, "max: webhook ingest")
    assert any(t["target"] == "≥ 3,000" and t["met"] is not None for t in result["targets"])


def test_seed_times_the_world(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "seed")
    figures = result["figures"]
    assert figures["seconds"] > 0 and figures["shipments_per_s"] > 0 and figures["store_bytes"] > 0
    (target,) = result["targets"]
    assert target["met"] is None, "2,000 shipments say nothing about the 1,000,000 target"


def test_memory_reports_bytes_per_shipment_and_start_times(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "memory")
    sizes = result["figures"]["sizes"]
    assert [s["shipments"] for s in sizes] == [400]
    for s in sizes:
        assert s["rss_bytes"] > 0 and s["bootstrap_s"] > 0 and s["restart_to_ready_s"] > 0
        assert "bytes_per_shipment" in s


def test_route_reports_decisions_at_a_paced_rate(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "route")
    row = _row(result, "route")
    _measured(row)
    assert row["server_cpu_s_per_request"] > 0
    assert any(t["what"].startswith("route p99") for t in result["targets"])
    # The same load against a bare endpoint, in the same run: the floor the route's tail sits on.
    floor = _row(result, "floor: bare starlette, same load")
    _measured(floor)
    assert floor["requests"] == pytest.approx(row["requests"], rel=0.2)
    assert result["figures"]["route_p99_over_floor_p99"] > 0
    assert "× the floor's" in row["note"]
    # What the hypervisor took from each core meanwhile, so a slow hour shows as one.
    runs_by_tool = {r["tool"]: r for r in result["cpu"]["generator_runs"]}
    assert set(runs_by_tool) == {"locust", "locust-floor"}
    for locust_run in runs_by_tool.values():
        assert set(locust_run["steal"]) == set(locust_run["core_busy"])
        assert all(0 <= share < 1 for share in locust_run["steal"].values())


def test_overload_probes_the_edge_and_the_floor_under_wrk(runs: dict[str, Finished]) -> None:
    result = _completed(runs, "overload")
    if not HAVE_WRK:
        assert not ON_CI, "CI must install wrk (.ci/run does)"
        pytest.skip(NO_WRK_REASON)
    for target in ("edge", "floor: bare starlette"):
        figures = result["figures"][target]
        assert figures["wrk_requests"] > 0 and 0 <= figures["wrk_refused_share"] <= 1, figures
        assert figures["probe_requests"] > 0, figures
        row = _row(result, f"{target}: probe, admitted")
        assert "refused (503)" in row["note"]
    assert result["figures"]["floor: bare starlette"]["wrk_refused_share"] == 0, "the floor never sheds"
    assert result["figures"]["edge_shed_total"] >= 0


def test_a_scenario_that_cannot_run_fails_loudly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--scenario",
            "seed",
            "--shipments",
            "10",
            "--store",
            "postgresql://bench@127.0.0.1:1/nowhere",
            "--results-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "seed FAILED" in proc.stdout
    (result_file,) = tmp_path.glob("seed-*/result.json")
    result = json.loads(result_file.read_text())
    assert result["error"] and result["valid"] is False


def test_the_host_watch_warns_only_when_the_host_slowed_the_cpu() -> None:
    from benchmarks import hostcheck

    with hostcheck.Watch(None) as watch:
        time.sleep(0.3)
    found = watch.summary()
    assert found["windows"] >= 3 and 0 <= found["slow_share"] <= 1
    assert hostcheck.warning({**found, "windows": 600, "slow_share": 0.0}) is None
    slowed = {**found, "core": 1, "slow_share": 0.08, "windows": 600, "slowest": 0.08}
    said = hostcheck.warning(slowed)
    assert said is not None and "core 1" in said and "8.0% of 600" in said


def test_requests_near_a_slow_moment_of_the_host_are_told_apart() -> None:
    from benchmarks import hostcheck

    slow = [100.0, 105.0]
    times = [99.85, 99.95, 100.2, 100.35, 104.9, 105.31, 200.0]
    assert hostcheck.outside(times, slow) == [True, False, False, True, False, True, True]
