"""What a run reports: rows of percentiles, figures against targets, and where they were taken.

Every result carries the machine (cores, CPU model, Python, package versions), the world size,
the git commit and the CPU accounting, and is written as `result.json` next to the load
generator's raw output in `benchmarks/results/<scenario>-<timestamp>/`.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import psutil

PACKAGES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "msgspec",
    "httpx",
    "jinja2",
    "onnxruntime",
    "psycopg",
    "locust",
    "psutil",
)
REPO = Path(__file__).resolve().parent.parent


class Row(msgspec.Struct, kw_only=True):
    """One line of the table: a request kind, measured one way."""

    name: str
    method: str  # how it was measured: "paced (locust)", "closed loop (wrk)", …
    requests: int
    rps: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    errors: int = 0
    server_cpu_s_per_request: float | None = None
    ceiling_ratio: float | None = None
    other_load: float | None = None  # share of the server's core used by other processes meanwhile
    note: str = ""


class Target(msgspec.Struct, kw_only=True):
    what: str
    target: str
    measured: str
    met: bool | None


class Result(msgspec.Struct, kw_only=True):
    scenario: str
    started_at: str
    command: list[str]
    params: dict[str, Any]
    valid: bool = True
    invalid_reasons: list[str] = msgspec.field(default_factory=list)
    warnings: list[str] = msgspec.field(default_factory=list)
    skipped: list[str] = msgspec.field(default_factory=list)
    rows: list[Row] = msgspec.field(default_factory=list)
    figures: dict[str, Any] = msgspec.field(default_factory=dict)
    targets: list[Target] = msgspec.field(default_factory=list)
    ceiling_rps: float | None = None
    world: dict[str, Any] = msgspec.field(default_factory=dict)
    machine: dict[str, Any] = msgspec.field(default_factory=dict)
    git: dict[str, Any] = msgspec.field(default_factory=dict)
    cpu: dict[str, Any] = msgspec.field(default_factory=dict)
    processes: list[dict[str, Any]] = msgspec.field(default_factory=list)
    files: list[str] = msgspec.field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def invalidate(self, reason: str) -> None:
        self.valid = False
        self.invalid_reasons.append(reason)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_row(
    name: str, method: str, latencies_ms: Iterable[float], *, errors: int, span_s: float, note: str = ""
) -> Row:
    values = sorted(latencies_ms)
    n = len(values)

    def q(p: float) -> float | None:
        v = percentile(values, p)
        return None if v is None else round(v, 2)

    return Row(
        name=name,
        method=method,
        requests=n,
        rps=round(n / span_s, 1) if span_s > 0 else 0.0,
        p50_ms=q(50),
        p95_ms=q(95),
        p99_ms=q(99),
        p999_ms=q(99.9),
        max_ms=round(values[-1], 2) if values else None,
        errors=errors,
        note=note,
    )


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False) if _has("wrk") else None
    return {
        "cores": os.cpu_count(),
        "usable_cores": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if wrk else None,
        "shared_machine_note": "other work may run on the same cores; see cpu.foreign_busy_on_server_core",
    }


def _has(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def write(result: Result, out_dir: Path) -> Path:
    result.files = sorted(p.name for p in out_dir.iterdir() if p.name != "result.json")
    path = out_dir / "result.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")
    return path


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _grid(records: list[dict[str, Any]]) -> list[str]:
    """A small aligned table of flat records (nested values are left to the JSON)."""
    keys = [k for k in records[0] if not isinstance(records[0][k], dict)]

    def cell(v: Any) -> str:
        if isinstance(v, list):
            return " / ".join(cell(x) for x in v)
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 10 and not v.is_integer() else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    cells = [[str(k) for k in keys]] + [[cell(r.get(k)) for k in keys] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]


def table(result: Result) -> str:
    """The printed report: validity, the rows, the figures and the targets."""
    lines = [f"== {result.scenario}: " + ("valid" if result.valid else "INVALID — not a figure to quote")]
    lines += [f"   invalid: {r}" for r in result.invalid_reasons]
    lines += [f"   warning: {w}" for w in result.warnings]
    lines += [f"   skipped: {s}" for s in result.skipped]
    if result.rows:
        header = [
            "name",
            "measured",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "srv CPU ms/req",
        ]
        header += ["× ceiling", "other load"]
        body = [
            [
                r.name,
                r.method,
                _fmt(r.rps),
                _fmt(r.p50_ms, 2),
                _fmt(r.p95_ms, 2),
                _fmt(r.p99_ms, 2),
                _fmt(r.p999_ms, 2),
                str(r.errors),
                _fmt(None if r.server_cpu_s_per_request is None else r.server_cpu_s_per_request * 1000, 3),
                _fmt(r.ceiling_ratio, 2),
                "–" if r.other_load is None else f"{r.other_load:.0%}",
            ]
            for r in result.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)]
        for i, cells in enumerate([header, *body]):
            lines.append(
                "  "
                + "  ".join(
                    c.ljust(w) if j < 2 else c.rjust(w)
                    for j, (c, w) in enumerate(zip(cells, widths, strict=False))
                )
            )
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        notes = [f"   {r.name}: {r.note}" for r in result.rows if r.note]
        lines += notes
    if result.ceiling_rps is not None:
        lines.append(
            f"   ceiling (bare Starlette, same server setup, same run): {result.ceiling_rps:,.0f} req/s"
        )
    for key, value in result.figures.items():
        if not isinstance(value, dict | list):
            lines.append(f"   {key}: {value}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"   {key}:")
            lines += ["     " + line for line in _grid(value)]
    for t in result.targets:
        mark = {True: "met", False: "MISSED", None: "n/a"}[t.met]
        lines.append(f"   target {t.what}: {t.target}; measured {t.measured} → {mark}")
    return "\n".join(lines)
