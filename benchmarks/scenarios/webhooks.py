"""`ingest` and `sync-lag`: signed carrier webhooks into the origin.

`ingest` measures the origin alone: latency at a paced rate (locust, intended-time), then the
most events per second it accepts (wrk POSTing pre-signed, never-replayed webhooks), as a
fraction of the bare-Starlette ceiling of the same run. `sync-lag` sends webhooks at a stated
rate while probes time how long each new status takes to show on the edge's `/v1/track`.
"""

from __future__ import annotations

from typing import Any

import httpx

from benchmarks.context import Defaults, Run, Scenario
from benchmarks.processes import BenchmarkError, webhook_key
from benchmarks.results import Target
from benchmarks.stack import (
    cpu_per_paced_request,
    drive_with_locust,
    note_other_load,
    paced_rows,
    serve_world,
    users_for,
)
from benchmarks.throughput import WrkTarget, measure_throughput, wrk_available
from benchmarks.workload import sample_shipments, write_presigned

INGEST_TARGET_RPS = 3000.0
INGEST_TARGET_P99_MS = 25.0
PRESIGNED_PER_S = 12_000  # more than SQLite ingest can take; the set must outlast the run
PRESIGNED_MAX = 400_000


def measure_ingest(run: Run) -> None:
    served = serve_world(run, edge=False, origins=run.options.origins)
    urls = [s.url for s in served.origins if s.url]
    roles = [s.role for s in served.origins]
    shipments = sample_shipments(served.world, 20_000)
    users, per_user = users_for(run.rate)
    params: dict[str, Any] = {
        "per_user_rate": per_user,
        "origins": urls,
        "shipments": shipments,
        "webhook_key_hex": webhook_key(run.env).hex(),
    }
    locust, sampler, cpu = drive_with_locust(
        run,
        served,
        locustfile="webhooks",
        host=urls[0],
        users=users,
        duration_s=run.duration,
        params=params,
    )
    (row,) = paced_rows(run, locust, ["webhook"], total=None)
    note_other_load([row], cpu)
    row.server_cpu_s_per_request = cpu_per_paced_request(sampler, roles, locust)
    row.note = f"offered {run.rate:g} events/s by {users} users; latency from intended send time"
    run.result.rows.append(row)
    run.result.targets.append(
        Target(
            what=f"p99 at {run.rate:g} events/s",
            target=f"≤ {INGEST_TARGET_P99_MS:g} ms",
            measured=f"{row.p99_ms} ms",
            met=None if row.p99_ms is None else row.p99_ms <= INGEST_TARGET_P99_MS and row.errors == 0,
        )
    )

    if not wrk_available(run, "ingest throughput and ceiling"):
        run.result.targets.append(
            Target(what="events/s", target="≥ 3,000", measured="not measured", met=None)
        )
        return
    key = webhook_key(run.env)
    per_leg = min(int(run.wrk_duration * PRESIGNED_PER_S / len(urls)), PRESIGNED_MAX)

    def legs(round_no: int) -> list[tuple[str, list[str]]]:
        out = []
        for i, url in enumerate(urls):
            path = run.workdir / f"presigned-r{round_no}-{i}.tsv"
            mine = shipments[i :: len(urls)] or shipments
            write_presigned(path, mine, per_leg, key, f"{run.result.started_at}-r{round_no}-{i}")
            out.append((url, [str(path)]))
        return out

    target = WrkTarget("max: webhook ingest", "presigned", legs, roles, count_accepted=True)
    (maxed,) = measure_throughput(run, [target], rounds=run.options.rounds)
    if any(r.requests >= per_leg * len(urls) for r in target.rounds):
        run.warn("wrk used up its pre-signed webhooks before the end of a round (that round was shorter)")
    maxed.note += f"; each a real write (202), {len(urls)} origin process(es); latency closed-loop"
    run.result.targets.append(
        Target(
            what="events/s (wrk, pre-signed, each a real write)",
            target=f"≥ {INGEST_TARGET_RPS:,.0f}",
            measured=f"{maxed.rps:,.0f}",
            met=maxed.rps >= INGEST_TARGET_RPS,
        )
    )


def measure_sync_lag(run: Run) -> None:
    served = serve_world(run)
    edge = served.edge
    assert edge is not None and edge.url is not None and served.origin.url is not None
    probes = run.options.probes if run.options.probes is not None else 4
    pool = sample_shipments(served.world, 2000 + probes * 10, served.region)
    if len(pool) < probes * 10 + 1:
        raise BenchmarkError(f"sync-lag needs more than {probes * 10} shipments in {served.region!r}")
    writers, per_user = users_for(run.rate)
    params: dict[str, Any] = {
        "per_user_rate": per_user,
        "origins": [served.origin.url],
        "edge": edge.url,
        "shipments": pool[probes * 10 :],
        "probe_shipments": pool[: probes * 10],
        "probes": probes,
        "webhook_key_hex": webhook_key(run.env).hex(),
    }
    locust, sampler, cpu = drive_with_locust(
        run,
        served,
        locustfile="sync_lag",
        host=served.origin.url,
        users=writers + probes,
        duration_s=run.duration,
        params=params,
    )
    rows = paced_rows(run, locust, ["webhook"], total=None)
    roles = [s.role for s in served.origins] + [edge.role]
    rows[0].server_cpu_s_per_request = cpu_per_paced_request(sampler, roles, locust)
    rows[0].note = f"offered {run.rate:g} events/s (+ probes); origin + edge CPU per event"
    lag = paced_rows(run, locust, ["visible on edge", "visible since send"], total=None)
    for r in lag:
        r.method = "probe"
        r.note = "from the origin's 202" if r.name == "visible on edge" else "from the webhook's send"
    note_other_load(rows + lag, cpu)
    run.result.rows += rows + lag
    status = httpx.get(f"{edge.url}/v1/sync/status", timeout=5).json()
    run.result.figures["edge_sync_status_at_end"] = status.get("buckets", [])
    run.result.figures["lag_samples"] = lag[0].requests
    if lag[0].requests < 100:
        run.warn(f"only {lag[0].requests} lag samples: p99 and p99.9 rest on few points")


INGEST = Scenario(
    name="ingest",
    summary="signed webhook ingestion at the origin: latency at a paced rate, max events/s vs ceiling",
    measure=measure_ingest,
    defaults=Defaults(shipments=100_000, rate=INGEST_TARGET_RPS, duration=30, wrk_duration=15),
    uses_wrk=True,
)
SYNC_LAG = Scenario(
    name="sync-lag",
    summary="webhooks into the origin at a stated rate; time until each new status is visible on the edge",
    measure=measure_sync_lag,
    defaults=Defaults(shipments=100_000, rate=200, duration=60),
)
