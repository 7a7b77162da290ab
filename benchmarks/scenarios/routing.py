"""`route`: `POST /v1/route` on an edge at a fixed rate, each a new order with a hold at the origin.

Before the run every site of the region receives plenty of the skus the load orders, so the run
never drains them (each decision holds stock for 15 minutes); the figures are decisions that
confirmed their holds, with the edge's and the origin's CPU per decision. The edge runs as
deployed, allotments on: the row's note says how many holds were drawn from an allotment (sent
to the origin behind the answer) and how many were asked of the origin before it.
"""

from __future__ import annotations

import httpx

from benchmarks import hostcheck
from benchmarks.context import Defaults, Run, Scenario
from benchmarks.results import Target, percentile
from benchmarks.stack import (
    cpu_per_paced_request,
    drive_with_locust,
    note_other_load,
    paced_rows,
    serve_world,
    users_for,
)

SKUS = 40
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
    if run.host is not None:  # the same requests, without those the host's slow moments touched
        slow = run.host.slow_moments()
        mine = [r for r in locust.requests if r.name == "route" and r.outcome == "ok"]
        clear = hostcheck.outside([r.intended for r in mine], slow)
        steady = sorted(r.latency_ms for r, ok in zip(mine, clear, strict=True) if ok)
        if steady and len(steady) < len(mine):
            at = {f"p{q}_ms": percentile(steady, q) for q in (50, 95, 99)}
            run.result.figures["route_while_the_host_was_steady"] = {
                "requests": len(steady),
                "excluded": len(mine) - len(steady),
                **at,
            }
            row.note += (
                f"; due outside the host's {len(slow)} slow moments (0.1 s before to 0.3 s after each,"
                f" {100 * (len(mine) - len(steady)) / len(mine):.1f} % of requests left out): "
                + ", ".join(f"{k.removesuffix('_ms')} {v:.2f}" for k, v in at.items())
                + " ms"
            )
    run.result.rows += rows
    run.result.targets.append(
        Target(
            what=f"route p99 at {run.rate:g} req/s",
            target="≤ 10 ms",
            measured=f"{row.p99_ms} ms",
            met=row.p99_ms is not None and row.p99_ms <= 10,
        )
    )


ROUTE = Scenario(
    name="route",
    summary="POST /v1/route at a fixed rate, each a new order confirmed with a hold at the origin",
    measure=measure_route,
    defaults=Defaults(shipments=20_000, rate=300, duration=30),
)
