"""`route`: `POST /v1/route` on an edge at a fixed rate, each a new order with a hold at the origin.

Before the run every site of the region receives plenty of the skus the load orders, so the run
never drains them (each decision holds stock for 15 minutes); the figures are decisions that
confirmed their holds, with the edge's and the origin's CPU per decision. The edge runs as
deployed, allotments on: the row's note says how many holds were drawn from an allotment (sent
to the origin behind the answer) and how many were asked of the origin before it.

Then the same load, same rate and length, goes to a bare Starlette endpoint on the edge's core
(the `floor` row): what locust, loopback, uvicorn and this host cost with no work behind the
answer. The route row gives its p99 as a multiple of the floor's: the part of the tail the
edge adds. On a host that slows every core several-fold for a moment, the floor's own tail
says what no edge could beat on that machine.
"""

from __future__ import annotations

from typing import Any

import httpx

from benchmarks import hostcheck, processes
from benchmarks.context import Defaults, Run, Scenario
from benchmarks.loadgen import LocustRun
from benchmarks.results import Row, Target, percentile
from benchmarks.stack import (
    Served,
    cpu_per_paced_request,
    drive_with_locust,
    note_other_load,
    paced_rows,
    rows_by_name,
    serve_world,
    users_for,
)

SKUS = 40
FLOOR = "floor: bare starlette, same load"
REPLENISH = 100_000  # the most one movement may receive


def replenish(run: Run, origin_url: str, sites: list[str], skus: list[str]) -> None:
    headers = {"Authorization": f"Bearer {run.env['WAYPOST_ADMIN_TOKEN']}"}
    with httpx.Client(base_url=origin_url, headers=headers, timeout=30) as client:
        for site in sites:
            for sku in skus:
                r = client.post(
                    "/v1/stock/movements",
                    json={"site_id": site, "sku": sku, "kind": "receive", "qty": REPLENISH},
                )
                r.raise_for_status()


def edge_figures(edge_url: str) -> tuple[dict[str, float], dict[float, float]]:
    """From the edge's /metrics: `waypost_route_holds_total` by source, and the share of
    answers within each `waypost_route_seconds` bucket (the edge's own clock, from the request
    reaching the app to the answer leaving it)."""
    text = httpx.get(f"{edge_url}/metrics", timeout=30).text
    holds: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("waypost_route_holds_total{"):
            source = line.split('source="', 1)[1].split('"', 1)[0]
            holds[source] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("waypost_route_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    total = buckets.get(float("inf"), 0.0)
    return holds, {le: n / total for le, n in buckets.items()} if total else {}


def measure_route(run: Run) -> None:
    if run.options.no_allotments:
        run.env["WAYPOST_ALLOTMENTS"] = "0"
    served = serve_world(run, origin_off_server_core=True)
    edge = served.edge
    assert edge is not None and edge.url is not None
    world = served.world
    region = next(r for r in world.regions if r.name == served.region)
    sites = [s.site_id for s in world.sites if s.region == served.region]
    skus = [p.sku for p in world.products[:SKUS]]
    assert served.origin.url is not None
    replenish(run, served.origin.url, sites, skus)
    users, per_user = users_for(run.rate)
    params = {
        "skus": skus,
        "center": [region.lat, region.lon],
        "store_token": run.env["WAYPOST_STORE_TOKEN"],
        "per_user_rate": per_user,
    }
    with httpx.Client(base_url=edge.url, timeout=30) as client:  # let the replenishment reach the edge
        client.get("/readyz").raise_for_status()
    locust, sampler, cpu = drive_with_locust(
        run,
        served,
        locustfile="route",
        host=edge.url,
        users=users,
        duration_s=run.duration,
        params=params,
    )
    holds, within = edge_figures(edge.url)
    rows = paced_rows(run, locust, ["route"], total=None)
    note_other_load(rows, cpu)
    row = rows[0]
    row.server_cpu_s_per_request = cpu_per_paced_request(sampler, [edge.role, served.origin.role], locust)
    drawn, asked = holds.get("allotment", 0.0), holds.get("origin", 0.0)
    share = f"{100 * drawn / (drawn + asked):.1f} %" if drawn + asked else "none"
    row.note = (
        f"offered {run.rate:g} decisions/s by {users} users; edge + origin CPU per decision;"
        f" holds drawn from allotments: {share} ({drawn:.0f} of {drawn + asked:.0f});"
        f" the edge's own clock: {100 * within.get(0.005, 0):.2f} % within 5 ms,"
        f" {100 * within.get(0.01, 0):.2f} % within 10 ms"
    )
    clear_of_host(run, locust, row, "route_while_the_host_was_steady")
    floor = measure_floor(run, served, users=users, params=params)
    run.result.rows += [*rows, floor]
    if row.p99_ms is not None and floor.p99_ms:
        ratio = round(row.p99_ms / floor.p99_ms, 2)
        run.result.figures["route_p99_over_floor_p99"] = ratio
        row.note += f"; p99 {ratio:g} × the floor's (same load on a bare endpoint, next row)"
    run.result.targets.append(
        Target(
            what=f"route p99 at {run.rate:g} req/s",
            target="≤ 10 ms",
            measured=f"{row.p99_ms} ms (the floor's, same load on a bare endpoint: {floor.p99_ms} ms)",
            met=row.p99_ms is not None and row.p99_ms <= 10,
        )
    )


def clear_of_host(run: Run, locust: LocustRun, row: Row, figure: str) -> None:
    """Percentiles of the requests due clear of the host's slow moments, when some were not:
    into the result's figures as `figure`, and onto the row's note."""
    if run.host is None:
        return
    slow = run.host.slow_moments()
    mine = [r for r in locust.requests if r.name == "route" and r.outcome == "ok"]
    clear = hostcheck.outside([r.intended for r in mine], slow)
    steady = sorted(r.latency_ms for r, ok in zip(mine, clear, strict=True) if ok)
    if not steady or len(steady) == len(mine):
        return
    at = {f"p{q}_ms": percentile(steady, q) for q in (50, 95, 99)}
    left_out = 100 * (len(mine) - len(steady)) / len(mine)
    run.result.figures[figure] = {"requests": len(steady), "excluded": len(mine) - len(steady), **at}
    row.note += (
        f"; due outside the host's {len(slow)} slow moments (0.1 s before to 0.3 s after each,"
        f" {left_out:.1f} % of requests left out): "
        + ", ".join(f"{k.removesuffix('_ms')} {v:.2f}" for k, v in at.items())
        + " ms"
    )


def measure_floor(run: Run, served: Served, *, users: int, params: dict[str, Any]) -> Row:
    """The same locust load, same rate and length, against a bare Starlette endpoint on the
    edge's core, right after: what this machine's generator, loopback and server framework
    cost with no work behind the answer. A route p99 near this floor is the host's, not the
    edge's; the route row's ratio is its p99 over this one's."""
    bare = processes.start_bare(run.procs, run.env)
    assert bare.url is not None
    try:
        locust, _sampler, _cpu = drive_with_locust(
            run,
            served,
            locustfile="route",
            host=bare.url,
            users=users,
            duration_s=run.duration,
            params={**params, "must_contain": '"status"'},
            tag="locust-floor",
        )
    finally:
        run.procs.stop(bare)
    (row,) = rows_by_name(locust.requests, ["route"], method="paced (locust)", span_s=locust.span_s())
    row.name = FLOOR
    row.note = "the route load against a bare endpoint, just after the route run"
    clear_of_host(run, locust, row, "floor_while_the_host_was_steady")
    return row


ROUTE = Scenario(
    name="route",
    summary="POST /v1/route at a fixed rate, each a new order confirmed with a hold at the origin",
    measure=measure_route,
    defaults=Defaults(shipments=20_000, rate=300, duration=30),
)
