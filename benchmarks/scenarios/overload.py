"""`overload`: wrk with 1,000 connections on the tracking page, and shoppers' probes meanwhile.

A closed loop of `--connections` (default here 1,000) keep-alive connections asks for pages as
fast as the edge answers, far past what one core serves, and asks again at once after a 503
(a retry storm). Meanwhile four probes each ask for a page every 20 ms on a connection of their
own, as shoppers would, wait out a 503's Retry-After, and time each answer. What the edge should
show: the probes' admitted (200) answers stay fast, and what it cannot serve is refused with 503
at once. The same load against a bare Starlette endpoint served like the services is the floor:
the tail the host and the generator set with no shedding at all.

Figures: per target, wrk's total and admitted rates and the share refused; the probe's admitted
and refused percentiles; the edge's own count of refusals.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

from benchmarks import processes
from benchmarks.context import Defaults, Run, Scenario
from benchmarks.cpu import CpuSampler
from benchmarks.loadgen import run_wrk
from benchmarks.processes import Service
from benchmarks.results import Row
from benchmarks.stack import check_generator, cpu_per_request, serve_world, write_paths
from benchmarks.throughput import wrk_available
from benchmarks.workload import sample_shipments

PROBE_EVERY_S = 0.02
PROBES = 4  # shoppers, each on a connection of its own


@dataclass
class Probe:
    """A shopper's requests every 20 ms on one keep-alive connection, timed; after a 503 it
    waits out the Retry-After, as a well-behaved client does."""

    host: str
    port: int
    path: str
    seconds: dict[int, list[float]] = field(default_factory=dict)  # status → latencies
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self.stop.wait(PROBE_EVERY_S):
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except OSError:
                self.failed += 1
                conn = None
                continue
            self.seconds.setdefault(status, []).append(time.perf_counter() - started)
            if status == 503:
                self.stop.wait(float(response.getheader("retry-after") or 1))
        if conn is not None:
            conn.close()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 2)


def _drive(run: Run, name: str, service: Service, paths: str, probe_path: str) -> Row:
    assert service.url is not None
    host, port = service.url.removeprefix("http://").split(":")
    probes = [Probe(host, int(port), probe_path) for _ in range(PROBES)]
    threads = [threading.Thread(target=p.run, daemon=True) for p in probes]
    with CpuSampler([(service.role, service.pid)], run.cores.server) as sampler:
        for t in threads:
            t.start()
        wrk = run_wrk(
            run.procs,
            sampler,
            run.out_dir,
            script="paths",
            url=service.url,
            script_args=[paths],
            duration_s=run.wrk_duration,
            connections=run.connections,
            tag=f"wrk-overload-{service.role}",
            env=run.env,
        )
        for p in probes:
            p.stop.set()
        for t in threads:
            t.join()
    cpu = sampler.report()
    check_generator(run, cpu, f"wrk overload {service.role}")
    refused = wrk.errors["status"]
    admitted = wrk.requests - refused
    ok = [s for p in probes for s in p.seconds.get(200, [])]
    shed = [s for p in probes for s in p.seconds.get(503, [])]
    probed = len(ok) + len(shed)
    failed = sum(p.failed for p in probes)
    figures = {
        "wrk_requests": wrk.requests,
        "wrk_rps": round(wrk.rps, 1),
        "wrk_admitted_rps": round(admitted / wrk.duration_s, 1) if wrk.duration_s else 0.0,
        "wrk_refused_share": round(refused / wrk.requests, 4) if wrk.requests else None,
        "wrk_p50_ms": round(wrk.latency_us["p50"] / 1000, 2),
        "wrk_p99_ms": round(wrk.latency_us["p99"] / 1000, 2),
        "probe_requests": probed,
        "probe_admitted_p50_ms": _pct(ok, 0.5),
        "probe_admitted_p99_ms": _pct(ok, 0.99),
        "probe_refused_p50_ms": _pct(shed, 0.5),
        "probe_refused_p99_ms": _pct(shed, 0.99),
        "probe_refused_share": round(len(shed) / probed, 4) if probed else None,
        "probe_failed": failed,
    }
    run.result.figures[name] = figures
    row = Row(
        name=f"{name}: probe, admitted",
        method=f"{PROBES} probes, each every 20 ms, beside wrk -c{run.connections}",
        requests=len(ok),
        rps=round(len(ok) / run.wrk_duration, 1),
        p50_ms=_pct(ok, 0.5),
        p95_ms=_pct(ok, 0.95),
        p99_ms=_pct(ok, 0.99),
        max_ms=_pct(ok, 1.0),
        errors=failed,
        server_cpu_s_per_request=cpu_per_request(cpu, [service.role], wrk.requests),
        note=(
            f"wrk: {wrk.rps:,.0f} req/s, {figures['wrk_admitted_rps']:,.0f} admitted, "
            f"{(figures['wrk_refused_share'] or 0):.1%} refused (503); probe refused "
            f"{(figures['probe_refused_share'] or 0):.1%}, refusal p50 {figures['probe_refused_p50_ms']} ms"
        ),
    )
    run.result.rows.append(row)
    return row


def measure_overload(run: Run) -> None:
    if not wrk_available(run, "overload"):
        return
    served = serve_world(run, origin_off_server_core=True)
    assert served.edge is not None
    numbers = [tn for tn, _ in sample_shipments(served.world, 200, region=served.region)]
    paths = write_paths(run.workdir / "overload-paths.txt", (f"/track/{tn}" for tn in numbers))
    before = _shed_total(served.edge)
    _drive(run, "edge", served.edge, str(paths), f"/track/{numbers[0]}")
    run.result.figures["edge_shed_total"] = _shed_total(served.edge) - before
    bare = processes.start_bare(run.procs, run.env)
    try:
        _drive(run, "floor: bare starlette", bare, str(paths), f"/track/{numbers[0]}")
    finally:
        run.procs.stop(bare)


def _shed_total(edge: Service) -> float:
    import httpx

    assert edge.url is not None
    text = httpx.get(f"{edge.url}/metrics", timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith("waypost_shed_total ")), "x 0")
    return float(line.split()[1])


OVERLOAD = Scenario(
    name="overload",
    summary="wrk with 1,000 connections on the page while a probe times a shopper's requests",
    measure=measure_overload,
    defaults=Defaults(shipments=5000, wrk_duration=10, connections=1000),
    uses_wrk=True,
)
