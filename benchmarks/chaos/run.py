"""`python -m benchmarks chaos`: kill the origin and the edge at random moments under mixed
load, and check after every `--every` kills (and at the end) that nothing acknowledged was
lost, no replica diverged, nothing was oversold and every outbox drained exactly once.

A cycle: wait a random delay (the load runs on), SIGKILL a random victim — the origin, the
edge, or now and then both — start it again on the same port and data, wait until it is
ready. Restarting dominates a cycle; each start is timed and the result gives the medians.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import processes
from benchmarks.chaos.book import Book
from benchmarks.chaos.load import Load, Target
from benchmarks.chaos.services import Restartable, edge_service, origin_service
from benchmarks.chaos.stores import origin_snapshot
from benchmarks.chaos.verify import Findings, Places, check, wait_converged, wait_drained
from benchmarks.results import git_info, machine, timestamp
from sync.entities import ChangeKinds, decode_entity

# What a checkpoint may not find; `provisional_unfilled` and `leaked` are allowed by the
# contract (a refused replay may end unfilled; a release the origin did not get expires).
FATAL = ("lost", "duplicated", "oversold", "divergent", "ledger", "outbox", "broken_promise")
SKUS = 12
SHIPMENTS = 300


@dataclass(frozen=True)
class ChaosOptions:
    kills: int = 20
    seed: int = 1
    store: str | None = None
    every: int = 50  # a checkpoint after this many kills
    max_delay_s: float = 1.0  # the load runs a random 0..this between kills
    shipments: int = 500
    results_dir: Path | None = None
    keep: bool = False  # keep the temporary data dirs even when every check passed


def load_target(opts: ChaosOptions, data: Path, env: dict[str, str], origin: str, edge: str) -> Target:
    with origin_snapshot(opts.store, data) as q:
        ((region, lat, lon),) = q("SELECT name, lat, lon FROM region ORDER BY name LIMIT 1")
        sites = [
            s for (s,) in q("SELECT site_id FROM site_region WHERE region = ? ORDER BY site_id", (region,))
        ]
        skus = [
            k
            for (k, _) in q(
                "SELECT sku, COUNT(*) FROM stock_level GROUP BY sku ORDER BY COUNT(*) DESC, sku LIMIT ?",
                (SKUS,),
            )
        ]
        shipments = []
        for key, body in q(
            "SELECT key, body FROM entity WHERE kind = 'shipment' AND bucket = ? ORDER BY key LIMIT ?",
            (f"region:{region}", SHIPMENTS),
        ):
            shipments.append((key, decode_entity(ChangeKinds.SHIPMENT, bytes(body)).carrier))
    return Target(
        origin_url=origin,
        edge_url=edge,
        region=region,
        center=(float(lat), float(lon)),
        sites=tuple(sites),
        skus=tuple(skus),
        shipments=tuple(shipments),
        webhook_key=processes.webhook_key(env),
        admin_token=env["WAYPOST_ADMIN_TOKEN"],
        edge_token=env["WAYPOST_EDGE_TOKEN"],
        store_token=env["WAYPOST_STORE_TOKEN"],
    )


def seed(opts: ChaosOptions, data: Path, env: dict[str, str]) -> float:
    argv = processes.python_m("origin", "seed", "--data", str(data), "--shipments", str(opts.shipments))
    argv += ["--regions", "1", "--products", "60", "--seed", str(opts.seed)]
    argv += ["--store", opts.store] if opts.store else []
    return processes.run_to_end(argv, env=env, core=None, timeout=600).wall_s


def checkpoint(load: Load, book: Book, places: Places, services: list[Restartable]) -> dict[str, Any]:
    started = time.monotonic()
    load.pause()
    for s in services:
        if not s.alive():
            raise processes.BenchmarkError(f"{s.role} died on its own:\n{s.tail()}")
    f = Findings()
    unsent = wait_drained(places, timeout_s=90)
    if unsent:
        f.counts["outbox:not_drained"] = unsent
    wait_converged(places, f, timeout_s=90)
    check(book, places, f)
    load.resume()
    return {
        "kills": sum(s.kills for s in services),
        "seconds": round(time.monotonic() - started, 2),
        "acknowledged": book.acked(),
        **f.as_dict(),
    }


def service_errors(services: list[Restartable]) -> dict[str, list[str]]:
    """Exceptions the services logged (the last line of each traceback), by service."""
    out: dict[str, list[str]] = {}
    for s in services:
        try:
            lines = s.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        errors, in_tb = [], False
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                in_tb = True
            elif in_tb and line and not line.startswith((" ", "\t")):
                errors.append(line[:300])
                in_tb = False
            elif (
                "ERROR" in line and not in_tb and i + 1 < len(lines) and not lines[i + 1].startswith("Trace")
            ):
                errors.append(line[:300])
        if errors:
            out[s.role] = errors
    return out


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median_s": None, "p90_s": None, "max_s": None}
    ordered = sorted(values)
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p90_s": round(ordered[min(int(len(ordered) * 0.9), len(ordered) - 1)], 3),
        "max_s": round(ordered[-1], 3),
    }


def run_chaos(opts: ChaosOptions, command: list[str]) -> tuple[int, dict[str, Any]]:
    from benchmarks.runner import RESULTS

    root = opts.results_dir or RESULTS
    out_dir = root / f"chaos-{timestamp()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="waypost-chaos-"))
    env = processes.bench_env()
    rng = random.Random(opts.seed)
    book = Book()
    origin_data, edge_data = work / "origin", work / "edge"
    result: dict[str, Any] = {"command": command, "options": _jsonable(opts), "git": git_info()}
    result["machine"] = machine()
    result["seed_s"] = round(seed(opts, origin_data, env), 2)
    origin = origin_service(work, origin_data, env, opts.store)
    origin.start()
    region = load_target(opts, origin_data, env, origin.url, "").region
    edge = edge_service(work, origin.url, region, edge_data, env)
    edge.start()
    services = [origin, edge]
    places = Places(opts.store, origin_data, edge_data, ("global", f"region:{region}"))
    target = load_target(opts, origin_data, env, origin.url, edge.url)
    load = Load(target, book, opts.seed)
    checkpoints: list[dict[str, Any]] = []
    victims = {"origin": 0, "edge": 0, "both": 0}
    started = time.monotonic()
    error = None
    try:
        load.start()
        for n in range(1, opts.kills + 1):
            time.sleep(rng.uniform(0, opts.max_delay_s))
            victim = rng.choices(("origin", "edge", "both"), (45, 45, 10))[0]
            victims[victim] += 1
            chosen = services if victim == "both" else [origin if victim == "origin" else edge]
            for s in chosen:
                s.kill()
            for s in chosen:
                s.start()
            if n % opts.every == 0 and n < opts.kills:
                checkpoints.append(checkpoint(load, book, places, services))
                print(f"chaos: {n} kills, checkpoint {_brief(checkpoints[-1])}", flush=True)
        chaos_s = time.monotonic() - started
        load.stop()
        checkpoints.append(checkpoint(load, book, places, services))
    except Exception as exc:  # report what was learned so far, then fail the run
        error = f"{type(exc).__name__}: {exc}"
        chaos_s = time.monotonic() - started
        load.stop()
    finally:
        for s in services:
            s.stop()
    final = checkpoints[-1] if checkpoints else {"counts": {}}
    counts: dict[str, int] = final["counts"]
    kills = origin.kills + edge.kills

    def total(prefix: str) -> int:
        return sum(v for k, v in counts.items() if k.split(":")[0] == prefix)

    result.update(
        {
            "error": error,
            "cycles": sum(victims.values()),
            "kills": kills,
            "kills_per_service": {"origin": origin.kills, "edge": edge.kills},
            "cycles_by_victim": victims,
            "chaos_seconds": round(chaos_s, 1),
            "kills_per_minute": round(kills / chaos_s * 60, 1) if chaos_s else None,
            "restart": {"origin": _stats(origin.starts_s[1:]), "edge": _stats(edge.starts_s[1:])},
            **{k: total(k) for k in ("lost", "divergent", "oversold", "duplicated", "ledger", "outbox")},
            "broken_promises": total("broken_promise"),
            "provisional_unfilled": total("provisional_unfilled"),
            "leaked_until_expiry": total("leaked"),
            "load": book.summary(),
            "checkpoints": checkpoints,
            "failed_checkpoints": [c["kills"] for c in checkpoints if _fatal(c["counts"])],
            "service_errors": service_errors(services),
        }
    )
    failed = bool(error or result["failed_checkpoints"] or sum(book.unresolved.values()))
    if failed or opts.keep:
        for s in services:
            shutil.copy(s.log_path, out_dir / s.log_path.name)
        result["workdir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(summary(result))
    print(f"chaos: saved {out_dir / 'result.json'}")
    return (1 if failed else 0), result


def _fatal(counts: dict[str, int]) -> bool:
    return any(k.split(":")[0] in FATAL and v for k, v in counts.items())


def _brief(c: dict[str, Any]) -> str:
    bad = {k: v for k, v in c["counts"].items() if v}
    return f"{c['seconds']}s, acknowledged {c['acknowledged']}, findings {bad or 'none'}"


def _jsonable(opts: ChaosOptions) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}


def summary(r: dict[str, Any]) -> str:
    acked = r["load"]["acknowledged"]
    lines = [
        f"chaos: {r['cycles']} cycles, {r['kills']} kills (origin {r['kills_per_service']['origin']},"
        f" edge {r['kills_per_service']['edge']}) in {r['chaos_seconds']} s"
        f" = {r['kills_per_minute']} kills/min",
        f"  restart to ready, median: origin {r['restart']['origin']['median_s']} s,"
        f" edge {r['restart']['edge']['median_s']} s",
        "  acknowledged: " + ", ".join(f"{k} {v}" for k, v in acked.items()),
        "  retried (answer lost): "
        + (", ".join(f"{k} {v}" for k, v in r["load"]["retried"].items()) or "none"),
        f"  lost {r['lost']}, divergent {r['divergent']}, oversold {r['oversold']},"
        f" duplicated {r['duplicated']}, ledger mismatches {r['ledger']}, outbox unsent {r['outbox']},"
        f" broken promises {r['broken_promises']}",
        f"  allowed: provisional decisions unfilled {r['provisional_unfilled']},"
        f" holds leaked until expiry {r['leaked_until_expiry']};"
        f" unresolved {r['load']['unresolved'] or 'none'}",
        f"  checkpoints {len(r['checkpoints'])}, failed at kills {r['failed_checkpoints'] or 'none'}",
    ]
    if r["error"]:
        lines.append(f"  ERROR: {r['error']}")
    for role, errors in r["service_errors"].items():
        lines.append(f"  {role} logged {len(errors)} errors, e.g. {errors[:3]}")
    return "\n".join(lines)
