"""`steady` and `burst`: shoppers on an edge's tracking pages.

`steady` sends the page mix (plain and link-unlocked pages, JSON lookups, unknown numbers) at
one fixed rate and reports intended-time percentiles per kind, then (with wrk) the edge's
maximum throughput for JSON and HTML lookups as a fraction of the bare-Starlette ceiling
measured in the same run. `burst` runs the same mix through a base → 10× → base shape and
reports each phase, counting shed requests (429/503 with Retry-After) apart from timeouts.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from benchmarks.context import Defaults, Run, Scenario
from benchmarks.results import Target, latency_row
from benchmarks.stack import (
    WRK_PATHS,
    Served,
    cpu_per_paced_request,
    drive_with_locust,
    note_other_load,
    paced_rows,
    serve_world,
    users_for,
    write_paths,
)
from benchmarks.throughput import measure_throughput, paths_target, wrk_available
from benchmarks.workload import sample_shipments, unknown_numbers
from sync.links import sign_token

# Request kinds and their weights (the locustfile names what each one does).
MIX: dict[str, float] = {"track html": 5, "track unlocked": 1, "track json": 3, "track 404": 1}
UNLOCKED_LINKS = 500
OUTCOMES = ("ok", "shed", "shed_without_retry_after", "timeout", "connection", "error")


def shopper_params(run: Run, served: Served, per_user_rate: float) -> dict[str, Any]:
    numbers = [tn for tn, _ in sample_shipments(served.world, WRK_PATHS, served.region)]
    assert numbers, f"the world has no shipments in region {served.region!r}"
    secret = run.env["WAYPOST_LINK_SECRET"].encode()
    expires = int(time.time()) + 86400
    unlocked = [[tn, f"/track/{tn}?t={sign_token(secret, tn, expires)}"] for tn in numbers[:UNLOCKED_LINKS]]
    return {
        "tracking_numbers": numbers,
        "unlocked": unlocked,
        "unknown_numbers": unknown_numbers(500),
        "per_user_rate": per_user_rate,
        "mix": MIX,
    }


def measure_steady(run: Run) -> None:
    served = serve_world(run)
    edge = served.edge
    assert edge is not None and edge.url is not None
    users, per_user = users_for(run.rate)
    params = shopper_params(run, served, per_user)
    locust, sampler, cpu = drive_with_locust(
        run,
        served,
        locustfile="steady",
        host=edge.url,
        users=users,
        duration_s=run.duration,
        params=params,
    )
    rows = paced_rows(run, locust, list(MIX))
    note_other_load(rows, cpu)
    rows[-1].server_cpu_s_per_request = cpu_per_paced_request(sampler, [edge.role], locust)
    rows[-1].note = f"offered {run.rate:g} req/s by {users} users; latency from intended send time"
    run.result.rows += rows

    if not wrk_available(run, "edge throughput and ceiling"):
        return
    numbers = params["tracking_numbers"]
    json_paths = write_paths(run.workdir / "json-paths.txt", (f"/v1/track/{tn}" for tn in numbers))
    html_paths = write_paths(run.workdir / "html-paths.txt", (f"/track/{tn}" for tn in numbers))
    measure_throughput(
        run,
        [
            paths_target("max: track json", edge, json_paths),
            paths_target("max: track html", edge, html_paths),
        ],
        rounds=run.options.rounds,
    )


def burst_phases(run: Run) -> list[tuple[str, float, float]]:
    o = run.options
    base_s = o.base_s if o.base_s is not None else 20.0
    peak_s = o.peak_s if o.peak_s is not None else 60.0
    after_s = o.after_s if o.after_s is not None else 20.0
    return [("base", base_s, run.rate), ("peak", peak_s, run.rate * o.factor), ("after", after_s, run.rate)]


def measure_burst(run: Run) -> None:
    served = serve_world(run)
    edge = served.edge
    assert edge is not None and edge.url is not None
    phases = burst_phases(run)
    _, per_user = users_for(run.rate)
    params = {**shopper_params(run, served, per_user), "phases": phases, "timeout_s": 2.0}
    total_s = sum(seconds for _, seconds, _ in phases)
    peak_users = max(int(rate / per_user + 0.999) for _, _, rate in phases)
    locust, sampler, cpu = drive_with_locust(
        run,
        served,
        locustfile="burst",
        host=edge.url,
        users=peak_users,
        duration_s=total_s + 1,
        params=params,
    )
    per_phase: dict[str, Any] = {}
    for name, seconds, rate in phases:
        mine = [r for r in locust.requests if r.phase == name]
        ok = [r.latency_ms for r in mine if r.outcome == "ok"]
        row = latency_row(
            f"{name} ({rate:g} req/s offered)",
            "paced (locust)",
            ok,
            errors=len(mine) - len(ok),
            span_s=seconds,
        )
        row.rps = round(len(mine) / seconds, 1) if seconds else 0.0
        note_other_load([row], cpu)
        run.result.rows.append(row)
        counts = Counter(r.outcome for r in mine)
        per_phase[name] = {"seconds": seconds, "offered_rps": rate, **{k: counts.get(k, 0) for k in OUTCOMES}}
    run.result.figures["edge_cpu_s_per_request"] = cpu_per_paced_request(sampler, [edge.role], locust)
    run.result.figures["phases"] = [{"phase": k, **v} for k, v in per_phase.items()]
    timeouts = sum(v["timeout"] + v["connection"] for v in per_phase.values())
    bare = sum(v["shed_without_retry_after"] for v in per_phase.values())
    shed = sum(v["shed"] for v in per_phase.values())
    run.result.figures["shed_with_retry_after"] = shed
    run.result.figures["timeouts_and_connection_errors"] = timeouts
    run.result.targets.append(
        Target(
            what="the spike is shed cleanly",
            target="no timeouts; every 429/503 carries Retry-After",
            measured=f"{timeouts} timeouts, {shed} shed with Retry-After, {bare} without",
            met=timeouts == 0 and bare == 0,
        )
    )
    paced_rows(run, locust, list(MIX), total=None)  # per-kind figures into the JSON


STEADY = Scenario(
    name="steady",
    summary="tracking pages, JSON lookups and 404s on one edge at a fixed rate; edge max vs ceiling",
    measure=measure_steady,
    defaults=Defaults(shipments=100_000, rate=300, duration=60, wrk_duration=10),
    uses_wrk=True,
)
BURST = Scenario(
    name="burst",
    summary="the delivery-window spike: base rate, ×10 for 60 s, back; percentiles per phase",
    measure=measure_burst,
    defaults=Defaults(shipments=100_000, rate=100, duration=100),
)
