"""The two load generators, each run as a pinned subprocess on the generator's core.

- **locust** (paced, open-ish model): users of constant throughput send at a stated rate; each
  request's latency is measured from the moment it was *meant* to be sent, so a stalled server
  cannot hide its queue (coordinated omission). The locustfile writes one raw row per request.
- **wrk** (closed loop, as fast as the server answers): throughput ceilings. A Lua `done()`
  prints one `WRK-JSON {…}` line that is parsed here.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cpu import CpuSampler
from benchmarks.processes import BenchmarkError, Processes

LOCUSTFILES = Path(__file__).resolve().parent / "locustfiles"
WRK_SCRIPTS = Path(__file__).resolve().parent / "wrk"


@dataclass(frozen=True)
class RawRequest:
    """One request as the locustfile logged it (times are epoch seconds)."""

    name: str
    intended: float
    start: float
    end: float
    status: int
    outcome: str  # ok, error, timeout, connection, shed, shed_without_retry_after
    phase: str

    @property
    def latency_ms(self) -> float:
        """From the intended send time: includes any time the request waited to be sent."""
        return (self.end - self.intended) * 1000

    @property
    def service_ms(self) -> float:
        return (self.end - self.start) * 1000


@dataclass(frozen=True)
class LocustRun:
    requests: list[RawRequest]
    meta: dict[str, Any]
    wall_s: float

    def span_s(self) -> float:
        """Seconds between the first intended send and the last response."""
        if not self.requests:
            return 0.0
        return max(r.end for r in self.requests) - min(r.intended for r in self.requests)


def run_locust(
    procs: Processes,
    sampler: CpuSampler,
    out_dir: Path,
    *,
    locustfile: str,
    host: str,
    users: int,
    duration_s: float,
    params: dict[str, Any],
    env: dict[str, str],
    tag: str = "locust",
) -> LocustRun:
    """Run `locustfiles/<locustfile>.py` headless for `duration_s`; return its raw rows."""
    raw = out_dir / f"{tag}-requests.csv"
    meta = out_dir / f"{tag}-meta.json"
    params_path = out_dir / f"{tag}-params.json"
    params_path.write_text(
        json.dumps({**params, "raw_out": str(raw), "meta_out": str(meta), "duration_s": duration_s}, indent=1)
    )
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILES / f"{locustfile}.py"),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(max(users, 1)),
        # The locustfile stops the run `duration_s` after the test starts (locustfiles/common.py);
        # this is only the backstop. Locust's own timer runs from before the users start, and a
        # loaded machine has taken most of a short run from it (3 s asked, 0.3 s run).
        "--run-time",
        f"{max(round(duration_s), 1) + 30}s",
        "--host",
        host,
        "--csv",
        str(out_dir / tag),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--logfile",
        str(out_dir / f"{tag}.log"),
        "--stop-timeout",
        "3",
        "--exit-code-on-error",
        "0",
    ]
    started = time.monotonic()
    service = procs.start(tag, argv, env={**env, "BENCH_PARAMS": str(params_path)}, generator=True)
    sampler.watch_generator(service.pid, tag)
    try:
        service.popen.wait(timeout=duration_s + 60)
    except Exception:
        procs.stop(service)
        raise BenchmarkError(
            f"locust did not finish within {duration_s + 60:.0f}s:\n{service.tail()}"
        ) from None
    procs.stop(service)
    wall = time.monotonic() - started
    if service.popen.returncode != 0 or not raw.exists():
        raise BenchmarkError(f"locust failed (code {service.popen.returncode}):\n{service.tail(40)}")
    with raw.open() as f:
        rows = [
            RawRequest(
                name=r["name"],
                intended=float(r["intended"]),
                start=float(r["start"]),
                end=float(r["end"]),
                status=int(r["status"]),
                outcome=r["outcome"],
                phase=r["phase"],
            )
            for r in csv.DictReader(f)
        ]
    info: dict[str, Any] = json.loads(meta.read_text()) if meta.exists() else {}
    return LocustRun(rows, info, wall)


@dataclass(frozen=True)
class WrkRun:
    requests: int
    duration_s: float
    latency_us: dict[str, float]
    errors: dict[str, int]
    accepted: int | None  # for presigned webhooks: responses that were 202

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    procs: Processes,
    sampler: CpuSampler,
    out_dir: Path,
    *,
    script: str,
    url: str,
    script_args: list[str],
    duration_s: float,
    connections: int,
    tag: str,
    env: dict[str, str],
) -> WrkRun:
    """`wrk -t1 -c<connections> -d<duration> -s wrk/<script>.lua URL -- <script_args>`."""
    if not have_wrk():
        raise BenchmarkError("wrk is not installed (Debian: apt-get install -y wrk)")
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(round(duration_s), 1)}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPTS / f"{script}.lua"),
        url,
        "--",
        *script_args,
    ]
    service = procs.start(tag, argv, env=env, generator=True)
    sampler.watch_generator(service.pid, tag)
    try:
        service.popen.wait(timeout=duration_s + 60)
    except Exception:
        procs.stop(service)
        raise BenchmarkError(f"wrk did not finish within {duration_s + 60:.0f}s") from None
    procs.stop(service)
    output = service.log_path.read_text(errors="replace")
    line = next((x for x in output.splitlines() if x.startswith("WRK-JSON ")), None)
    if service.popen.returncode != 0 or line is None:
        raise BenchmarkError(f"wrk failed (code {service.popen.returncode}):\n{output[-2000:]}")
    data = json.loads(line.removeprefix("WRK-JSON "))
    return WrkRun(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        latency_us={k: float(data[k]) for k in ("p50", "p95", "p99", "p999", "max")},
        errors={k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")},
        accepted=int(data["accepted"]) if data.get("accepted", -1) >= 0 else None,
    )
