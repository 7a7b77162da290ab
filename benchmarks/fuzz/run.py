"""`python -m benchmarks fuzz`: hostile requests to every endpoint of a real origin and edge.

One thread draws cases from hypothesis (`benchmarks.fuzz.hostile.cases`, endpoint by endpoint in
rounds, each endpoint's share set by its weight) into a bounded queue; worker threads send them
over HTTP and count the statuses per endpoint. Any 5xx — except the edge's load shedding, a 503
with Retry-After — fails the run: each class (endpoint, status, the exception the server
logged) is minimized and written with a reproducing input to `failures.jsonl`.

Schemathesis: once the services serve `/openapi.json` (API.md, second round), a second source
can feed the same queue — `schemathesis.openapi.from_url(base + "/openapi.json")`, each
generated case turned into a `Case` with a `Raw` body — so its inputs are counted, judged and
minimized here the same way. The run probes for the documents and records what it found.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import math
import queue
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from benchmarks import processes
from benchmarks.chaos.stores import origin_snapshot
from benchmarks.fuzz.catalog import ENDPOINTS, Endpoint, FuzzWorld, valid
from benchmarks.fuzz.hostile import Case, cases, encode
from benchmarks.fuzz.send import Secrets, is_5xx, json_error_missing, minimize, send, wire
from benchmarks.results import git_info, machine, timestamp

WORKERS = 6
PER_EXAMPLE = 10  # cases drawn in one hypothesis example: the engine's cost is per example
KEEP_PER_CLASS = 3  # failing cases kept per (endpoint, status, tag) to minimize from
MINIMIZE_BUDGET = 60  # requests spent shrinking each failing class


@dataclass(frozen=True)
class FuzzOptions:
    inputs: int = 100_000
    seed: int = 1
    max_seconds: float = 900.0
    results_dir: Path | None = None


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.failures: dict[tuple[str, int, str], list[Case]] = defaultdict(list)
        self.failure_counts: Counter[tuple[str, int, str]] = Counter()
        self.not_json: Counter[str] = Counter()
        self.sent = 0
        self.unsendable = 0  # cases httpx refused to send (e.g. a header h11 will not write)

    def record(self, case: Case, status: str, failed: int | None, not_json: bool) -> None:
        with self.lock:
            self.sent += 1
            self.statuses[case.endpoint.label][status] += 1
            if not_json:
                self.not_json[case.endpoint.label] += 1
            if failed is not None:
                k = (case.endpoint.label, failed, case.tag)
                self.failure_counts[k] += 1
                kept = self.failures[k]
                kept.append(case)
                kept.sort(key=lambda c: len(encode(c.body)) if c.body is not None else 0)
                del kept[KEEP_PER_CLASS:]


def world_of(data: Path, origin: str, edge: str, s: Secrets) -> FuzzWorld:
    """Names from the seeded store, and one hold and one decision made for the fuzzer to poke."""
    with origin_snapshot(None, data) as q:
        ((region, lat, lon),) = q("SELECT name, lat, lon FROM region ORDER BY name LIMIT 1")
        sites = tuple(r for (r,) in q("SELECT site_id FROM site_region ORDER BY site_id"))
        skus = tuple(k for (k,) in q("SELECT sku FROM stock_level GROUP BY sku ORDER BY SUM(on_hand) DESC"))
        tns = tuple(k for (k,) in q("SELECT key FROM entity WHERE kind = 'shipment' ORDER BY key LIMIT 200"))
        orders = tuple(k for (k,) in q("SELECT order_id FROM customer_order ORDER BY order_id LIMIT 50"))
        ((epoch,),) = q("SELECT value FROM meta WHERE key = 'epoch'")
        ((sha,),) = q("SELECT sha256 FROM model_blob ORDER BY sha256 LIMIT 1")
    w = FuzzWorld(sites, skus[:10], tns, orders, region, (lat, lon), epoch, sha, "fz-h-seed", "dec_unknown")
    with httpx.Client(timeout=30) as http:
        hold = valid(ENDPOINTS[9], w, 0).body | {"reservation_id": "fz-h-seed"}
        r = http.post(f"{origin}/v1/reservations", json=hold, headers={"authorization": f"Bearer {s.edge}"})
        r.raise_for_status()
        route = valid(next(e for e in ENDPOINTS if e.path == "/v1/route"), w, 0).body
        d = http.post(f"{edge}/v1/route", json=route, headers={"authorization": f"Bearer {s.store}"})
        decision = d.json().get("decision_id", "dec_unknown") if d.status_code == 200 else "dec_unknown"
    return FuzzWorld(sites, skus[:10], tns, orders, region, (lat, lon), epoch, sha, "fz-h-seed", decision)


def produce(
    out: queue.Queue[Case | None], world: FuzzWorld, opts: FuzzOptions, stop: threading.Event
) -> None:
    """Draw cases from hypothesis into `out`, endpoint by endpoint in rounds, until told to stop."""
    total = sum(e.weight for e in ENDPOINTS)
    # Rounds mix the endpoints over time; each round gives an endpoint dozens of examples,
    # since hypothesis opens every run with its simplest example (nothing made hostile).
    rounds = max(1, min(20, opts.inputs // 10_000))
    per_round = {e: max(50, math.ceil(opts.inputs * e.weight / total / rounds)) for e in ENDPOINTS}
    counter = itertools.count(1)
    for rnd in itertools.count():
        for i, ep in enumerate(ENDPOINTS):
            if stop.is_set():
                return
            try:
                drawer(ep, per_round[ep], opts.seed * 1_000_003 + rnd * 1000 + i, out, world, counter, stop)()
            except HypothesisException as exc:  # one endpoint's run; the next round draws again
                print(f"fuzz: hypothesis stopped drawing for {ep.label}: {type(exc).__name__}", flush=True)


def drawer(
    ep: Endpoint,
    examples: int,
    seed: int,
    out: queue.Queue[Case | None],
    world: FuzzWorld,
    counter: Iterator[int],
    stop: threading.Event,
) -> Callable[[], None]:
    """A hypothesis test that puts about `examples` cases for `ep` into `out`, `PER_EXAMPLE` to
    an example (generation only: the judging happens in the workers, and shrinking in
    `minimize_classes`, which knows the request's structure)."""

    @settings(
        max_examples=max(1, examples // PER_EXAMPLE),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(seed)
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        drawn = [data.draw(cases(ep, world, next(counter))) for _ in range(PER_EXAMPLE)]
        if not stop.is_set():  # after drawing: what is drawn must not depend on outside state
            for case in drawn:
                out.put(case)

    return draw


def work(inbox: queue.Queue[Case | None], tally: Tally, bases: dict[str, str], s: Secrets) -> None:
    with httpx.Client(timeout=40.0) as client:
        while True:
            case = inbox.get()
            if case is None:
                return
            try:
                r = send(client, wire(case, bases, s))
            except httpx.LocalProtocolError:  # httpx would not put it on the wire: not an input
                with tally.lock:
                    tally.unsendable += 1
                continue
            except Exception as exc:  # the server hung up, or timed out: counted by its type
                tally.record(case, f"error:{type(exc).__name__}", None, False)
                continue
            failed = r.status_code if is_5xx(case, r) else None
            tally.record(case, str(r.status_code), failed, json_error_missing(case, r))


def exception_logged(log: Path, since: int) -> str | None:
    """The last line of the last traceback written to `log` after byte `since`."""
    try:
        with log.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    last = None
    in_tb = False
    for line in text.splitlines():
        if line.startswith("Traceback"):
            in_tb = True
        elif in_tb and line and not line.startswith((" ", "\t")):
            last, in_tb = line.strip()[:300], False
    return last


def describe(
    case: Case, status: int, exception: str | None, count: int, bases: dict[str, str], s: Secrets
) -> dict[str, Any]:
    w = wire(case, bases, s)
    content = w.content
    return {
        "endpoint": case.endpoint.label,
        "status": status,
        "tag": case.tag,
        "exception": exception,
        "inputs_failing": count,
        "url": w.url.replace(bases[case.endpoint.service], ""),
        "auth": case.endpoint.auth if case.auth == "right" else f"{case.endpoint.auth} ({case.auth})",
        "idempotency_key": case.idempotency_key,
        "body_preview": repr(content[:300]) + (f" … ({len(content)} bytes)" if len(content) > 300 else ""),
        "body_base64": base64.b64encode(content).decode() if len(content) <= 20_000 else None,
    }


def run_fuzz(opts: FuzzOptions, command: list[str]) -> tuple[int, dict[str, Any]]:
    from benchmarks.runner import RESULTS

    out_dir = (opts.results_dir or RESULTS) / f"fuzz-{timestamp()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="waypost-fuzz-"))
    env = processes.bench_env(
        WAYPOST_EASYPOST_SECRET="fuzz-easypost", WAYPOST_AFTERSHIP_SECRET="fuzz-aftership"
    )
    s = Secrets(
        env["WAYPOST_ADMIN_TOKEN"],
        env["WAYPOST_EDGE_TOKEN"],
        env["WAYPOST_STORE_TOKEN"],
        processes.webhook_key(env),
        env["WAYPOST_EASYPOST_SECRET"],
        env["WAYPOST_AFTERSHIP_SECRET"],
    )
    data = work_dir / "origin"
    argv = processes.python_m("origin", "seed", "--data", str(data), "--shipments", "500", "--regions", "1")
    processes.run_to_end([*argv, "--products", "60"], env=env, core=None, timeout=600)
    tally = Tally()
    result: dict[str, Any] = {"command": command, "options": {**vars(opts), "results_dir": None}}
    result |= {"git": git_info(), "machine": machine()}
    with processes.Processes(work_dir, processes.Cores(None, None)) as procs:
        origin = processes.start_origin(procs, data, env, None)
        assert origin.url is not None
        region = "north"
        with origin_snapshot(None, data) as q:
            ((region,),) = q("SELECT name FROM region ORDER BY name LIMIT 1")
        edge = processes.start_edge(procs, origin.url, region, work_dir / "edge", env)
        assert edge.url is not None
        bases = {"origin": origin.url, "edge": edge.url}
        world = world_of(data, origin.url, edge.url, s)
        result["openapi"] = {
            k: httpx.get(f"{u}/openapi.json", timeout=10).status_code for k, u in bases.items()
        }
        inbox: queue.Queue[Case | None] = queue.Queue(maxsize=2000)
        stop = threading.Event()
        producer = threading.Thread(target=produce, args=(inbox, world, opts, stop), daemon=True)
        workers = [threading.Thread(target=work, args=(inbox, tally, bases, s)) for _ in range(WORKERS)]
        started = time.monotonic()
        producer.start()
        for w in workers:
            w.start()
        while tally.sent < opts.inputs and time.monotonic() - started < opts.max_seconds:
            time.sleep(0.2)
            procs.check_alive()
            if not any(w.is_alive() for w in workers):
                raise processes.BenchmarkError("every fuzz worker stopped (see the tracebacks above)")
            if not producer.is_alive():
                raise processes.BenchmarkError("the hypothesis producer stopped (see its traceback above)")
        stop.set()
        drain(inbox)
        producer.join(timeout=30)
        for _ in workers:
            inbox.put(None)
        for w in workers:
            w.join()
        seconds = time.monotonic() - started
        procs.check_alive()
        classes = minimize_classes(tally, bases, s, {"origin": origin.log_path, "edge": edge.log_path})
    result |= {
        "inputs": tally.sent,
        "seconds": round(seconds, 1),
        "inputs_per_second": round(tally.sent / seconds, 1),
        "endpoints": len(ENDPOINTS),
        "statuses": {label: dict(sorted(c.items())) for label, c in sorted(tally.statuses.items())},
        "total_statuses": dict(sorted(sum(tally.statuses.values(), Counter()).items())),
        "5xx": sum(tally.failure_counts.values()),
        "5xx_classes": classes,
        "errors_not_json": dict(tally.not_json),
        "unsendable": tally.unsendable,
    }
    (out_dir / "failures.jsonl").write_text("".join(json.dumps(c) + "\n" for c in classes))
    (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report(result))
    print(f"fuzz: saved {out_dir / 'result.json'} and failures.jsonl")
    return (1 if result["5xx"] else 0), result


def drain(q: queue.Queue[Case | None]) -> None:
    """Empty the queue (cases not sent are not counted), so the workers' sentinels fit."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def minimize_classes(
    tally: Tally, bases: dict[str, str], s: Secrets, logs: dict[str, Path]
) -> list[dict[str, Any]]:
    """Each failing (endpoint, status, tag) minimized; one entry per (endpoint, exception)."""
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    fresh = itertools.count(1)
    with httpx.Client(timeout=40.0) as client:

        def fails(case: Case, status: int) -> bool:
            if case.idempotency_key and case.idempotency_key.startswith("fz-"):
                case.idempotency_key = f"fz-min-{next(fresh)}"  # a new body needs a new key
            try:
                return send(client, wire(case, bases, s)).status_code == status
            except httpx.HTTPError:
                return False

        for (label, status, _tag), kept in sorted(tally.failures.items()):
            case = kept[0]
            small, _spent = minimize(case, functools.partial(fails, status=status), budget=MINIMIZE_BUDGET)
            log = logs[small.endpoint.service]
            since = log.stat().st_size
            fails(small, status)
            time.sleep(0.1)
            exception = exception_logged(log, since)
            key = (label, exception)
            count = sum(
                n for (lb, stt, _), n in tally.failure_counts.items() if lb == label and stt == status
            )
            entry = describe(small, status, exception, count, bases, s)
            if key not in out or len(entry["body_preview"]) < len(out[key]["body_preview"]):
                out[key] = entry
    return list(out.values())


def report(r: dict[str, Any]) -> str:
    lines = [
        f"fuzz: {r['inputs']:,} inputs to {r['endpoints']} endpoints in {r['seconds']} s"
        f" = {r['inputs_per_second']} inputs/s; 5xx: {r['5xx']}",
        "  statuses: " + ", ".join(f"{k} × {v:,}" for k, v in r["total_statuses"].items()),
        f"  /openapi.json: {r['openapi']} (schemathesis pass: when both answer 200)",
    ]
    width = max(len(k) for k in r["statuses"])
    for label, counts in r["statuses"].items():
        lines.append(f"  {label:{width}}  " + ", ".join(f"{k}×{v}" for k, v in counts.items()))
    if r["errors_not_json"]:
        lines.append(f"  errors whose body is not JSON: {r['errors_not_json']}")
    for c in r["5xx_classes"]:
        lines.append(
            f"  5xx {c['status']} {c['endpoint']} [{c['tag']}] {c['exception'] or ''}"
            f" ({c['inputs_failing']} inputs): {c['url']} body {c['body_preview']}"
        )
    return "\n".join(lines)
