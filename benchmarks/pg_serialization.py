"""How much the bucket-head lock serializes writes to one bucket on PostgreSQL.

`python -m benchmarks.pg_serialization [--store postgresql://…] [--writers 1,4,16] [--seconds 5]
[--rounds 3]`

Each writer is a process of its own with one connection (what PostgreSQL sees of an origin
process), ingesting tracking events in a loop as `POST /v1/webhooks/tracking` does once the
signature is checked: record the webhook id, merge the event into its shipment, log the change.
Every writer count runs twice: all shipments in one bucket, then spread over two. For each run
it reports transactions per second, latency, how long a transaction waited for the head lock
and how long it held it (from acquiring it to the end of COMMIT), and the head lock's
utilisation: the share of the run a bucket's head was held. Utilisation near 1 means that
bucket's writes are serialized; its ceiling is then about 1 / (median hold).

It makes a fresh schema in the database (dropped afterwards), so it can share one with tests.
On a small machine the writers, PostgreSQL and anything else running compete for the cores:
read the ratios of one run, not the absolute numbers, and the CPU columns next to them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psutil
import psycopg
from psycopg import sql

from models.world import World, WorldSpec, world_now
from origin.seed import seed_world
from origin.shipments import TrackingEvent, ingest_event, seen_webhook
from origin.store.postgres import PostgresStore, PostgresTx

DEFAULT_STORE = os.environ.get("WAYPOST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
STATUSES = ("in_transit", "out_for_delivery", "attempt_fail", "exception")


class TimedTx(PostgresTx):
    """Notes when the tail asked for a head lock and when it got it."""

    asked_at = 0.0
    locked_at = 0.0

    def lock_bucket(self, bucket: str) -> tuple[int, int]:
        self.asked_at = time.perf_counter()
        out = super().lock_bucket(bucket)
        self.locked_at = time.perf_counter()
        return out


class TimedStore(PostgresStore):
    tx_class = TimedTx


@dataclass(frozen=True)
class Run:
    writers: int
    buckets: int
    seconds: float
    transactions: int
    tx_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    lock_wait_p50_ms: float
    lock_wait_p99_ms: float
    hold_p50_ms: float
    hold_p99_ms: float
    head_lock_utilisation: float  # per bucket: sum of holds / (run time × buckets)
    writer_cpu_ms_per_tx: float
    postgres_cpu_ms_per_tx: float


def _writer(
    url: str,
    numbers: list[list[str]],
    seconds: float,
    name: str,
    start: Any,
    out: Any,
) -> None:
    """One writer process: ingest events for `seconds`; put (latency, wait, hold) samples, CPU s."""
    store = TimedStore(url, time.time, pool_size=1)
    rng = random.Random(name)
    base = datetime(2031, 3, 1, tzinfo=UTC)
    samples: list[tuple[float, float, float]] = []
    start.wait()
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    n = 0
    while (began := time.perf_counter()) < deadline:
        tn = rng.choice(numbers[n % len(numbers)])
        event = TrackingEvent(
            tracking_number=tn,
            carrier="ups",
            status=rng.choice(STATUSES),  # type: ignore[arg-type]
            message="Benchmark event",
            location="Hub",
            occurred_at=base + timedelta(seconds=rng.randrange(10**9)),  # (almost) never a duplicate
        )
        with store.transaction() as tx:
            assert not seen_webhook(tx, f"{name}-{n}"), "webhook ids must be new"
            ingest_event(tx, event)
        done = time.perf_counter()
        assert isinstance(tx, TimedTx)
        n += 1
        if not tx.committed_heads:
            continue  # a duplicate event: it changed nothing and never took the head lock
        samples.append((done - began, tx.locked_at - tx.asked_at, done - tx.locked_at))
    cpu = time.process_time() - cpu
    store.close()
    out.put((samples, cpu))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else 0.0


def _postgres_cpu() -> float:
    """CPU seconds of the server so far: live processes, and the backends the postmaster reaped."""
    total = 0.0
    for p in psutil.process_iter(["name", "ppid"]):
        if p.info["name"] not in ("postgres", "postmaster"):
            continue
        try:
            t = p.cpu_times()
            total += t.user + t.system
            if psutil.Process(p.info["ppid"]).name() not in ("postgres", "postmaster"):
                total += t.children_user + t.children_system  # the postmaster: ended backends
        except psutil.Error:
            pass
    return total


def measure(url: str, numbers: list[list[str]], writers: int, seconds: float) -> Run:
    run = f"w{writers}-b{len(numbers)}-{secrets.token_hex(3)}"
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(writers + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(url, numbers, seconds, f"{run}-{i}", start, out))
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    start.wait(timeout=120)
    pg_cpu = _postgres_cpu()
    results = []
    for _ in procs:
        try:
            results.append(out.get(timeout=seconds + 120))
        except Empty:
            raise SystemExit("a writer did not report; see its traceback above") from None
    pg_cpu = _postgres_cpu() - pg_cpu
    for p in procs:
        p.join()
    samples = [s for batch, _ in results for s in batch]
    writer_cpu = sum(cpu for _, cpu in results)
    n = len(samples)
    holds = [s[2] for s in samples]
    return Run(
        writers=writers,
        buckets=len(numbers),
        seconds=seconds,
        transactions=n,
        tx_per_s=round(n / seconds, 1),
        latency_p50_ms=round(_pct([s[0] for s in samples], 0.5), 2),
        latency_p99_ms=round(_pct([s[0] for s in samples], 0.99), 2),
        lock_wait_p50_ms=round(_pct([s[1] for s in samples], 0.5), 2),
        lock_wait_p99_ms=round(_pct([s[1] for s in samples], 0.99), 2),
        hold_p50_ms=round(_pct(holds, 0.5), 2),
        hold_p99_ms=round(_pct(holds, 0.99), 2),
        head_lock_utilisation=round(sum(holds) / (seconds * len(numbers)), 2),
        writer_cpu_ms_per_tx=round(1000 * writer_cpu / max(n, 1), 2),
        postgres_cpu_ms_per_tx=round(1000 * pg_cpu / max(n, 1), 2),
    )


def _schema_url(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = urlencode({"options": f"-csearch_path={schema}"})
    return urlunsplit(parts._replace(query="&".join(q for q in (parts.query, query) if q)))


def run(url: str, writer_counts: list[int], seconds: float, shipments: int, rounds: int) -> list[Run]:
    """Every configuration once per round, rounds interleaved so a noisy minute hits them all."""
    schema = f"waypost_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        scoped = _schema_url(url, schema)
        world = World(WorldSpec(seed=3, regions=2, shipments=shipments), world_now(time.time()))
        store = PostgresStore(scoped, time.time)
        try:
            seed_world(store, world)
        finally:
            store.close()
        by_region: dict[str, list[str]] = {}
        for s in world.shipments():
            by_region.setdefault(world.region_of(s.site_id), []).append(s.tracking_number)
        north, south = (by_region[r.name] for r in world.regions[:2])
        runs = []
        for round_no in range(rounds):
            print(f"round {round_no + 1} of {rounds}", flush=True)
            for writers in writer_counts:
                for numbers in ([north], [north, south]):
                    r = measure(scoped, numbers, writers, seconds)
                    print(_line(r), flush=True)
                    runs.append(r)
        return runs
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


HEADER = "writers buckets   tx/s  p50ms  p99ms  wait50  wait99  hold50  hold99  util  cpu/tx(writer, pg)"


def _line(r: Run) -> str:
    return (
        f"{r.writers:7} {r.buckets:7} {r.tx_per_s:6.0f} {r.latency_p50_ms:6.2f} {r.latency_p99_ms:6.2f}"
        f" {r.lock_wait_p50_ms:7.2f} {r.lock_wait_p99_ms:7.2f} {r.hold_p50_ms:7.2f} {r.hold_p99_ms:7.2f}"
        f" {r.head_lock_utilisation:5.2f}  {r.writer_cpu_ms_per_tx:.2f}, {r.postgres_cpu_ms_per_tx:.2f} ms"
    )


def medians(runs: list[Run]) -> list[Run]:
    """Per configuration, the round with the median throughput."""
    out = []
    for config in dict.fromkeys((r.writers, r.buckets) for r in runs):
        mine = sorted((r for r in runs if (r.writers, r.buckets) == config), key=lambda r: r.tx_per_s)
        out.append(mine[len(mine) // 2])
    return out


def ratios(runs: list[Run]) -> dict[str, float]:
    """The figures the README quotes: scaling with writers, and what a second bucket buys."""
    by = {(r.writers, r.buckets): r.tx_per_s for r in medians(runs)}
    out: dict[str, float] = {}
    for w in sorted({r.writers for r in runs}):
        if (w, 1) in by and (1, 1) in by and by[(1, 1)]:
            out[f"{w} writers / 1 writer, one bucket"] = round(by[(w, 1)] / by[(1, 1)], 2)
    for w in sorted({r.writers for r in runs}):
        if (w, 1) in by and (w, 2) in by and by[(w, 1)]:
            out[f"two buckets / one bucket, {w} writers"] = round(by[(w, 2)] / by[(w, 1)], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_serialization", description=__doc__)
    parser.add_argument("--store", default=DEFAULT_STORE, help="a PostgreSQL URL (a schema is made in it)")
    parser.add_argument("--writers", default="1,4,16", help="writer process counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--shipments", type=int, default=4000, help="shipments in the seeded world")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the median round")
    parser.add_argument("--json", type=Path, help="also write the runs and ratios here")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.writers.split(",") if x]
    assert counts and all(c >= 1 for c in counts), "--writers wants positive counts, e.g. 1,4,16"
    print(f"cores: {os.cpu_count()}; {args.seconds:g} s per run; ingesting tracking events", flush=True)
    print(HEADER, flush=True)
    assert args.rounds >= 1, "--rounds must be at least 1"
    runs = run(args.store, counts, args.seconds, args.shipments, args.rounds)
    print("median round per configuration")
    for r in medians(runs):
        print(_line(r))
    figures = ratios(runs)
    for name, value in figures.items():
        print(f"{name}: {value}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        body = {"runs": [asdict(r) for r in runs], "medians": [asdict(r) for r in medians(runs)]}
        args.json.write_text(json.dumps({**body, "ratios": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
