"""`python -m benchmarks chaos`, the CI length: 20 SIGKILLs of real servers under load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_twenty_kills_lose_nothing_acknowledged(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "benchmarks", "chaos", "--kills", "20", "--every", "10"]
    argv += ["--max-delay", "0.5", "--shipments", "300", "--results-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    (result_file,) = tmp_path.glob("chaos-*/result.json")
    r = json.loads(result_file.read_text())
    assert r["error"] is None, done.stdout + done.stderr
    # Not vacuous: both services were killed, and every kind of write was acknowledged.
    assert r["kills"] >= 20 and min(r["kills_per_service"].values()) > 0
    acked = r["load"]["acknowledged"]
    assert min(acked["webhooks"], acked["movements"], acked["holds"], acked["decisions"]) > 0, acked
    assert sum(r["load"]["retried"].values()) > 0, "no request ever lost its answer: nothing was tested"
    found = {k: r[k] for k in ("lost", "divergent", "oversold", "duplicated", "ledger", "outbox")}
    assert found == dict.fromkeys(found, 0), r["checkpoints"][-1]["examples"]
    assert r["broken_promises"] == 0 and not r["load"]["unresolved"]
    assert done.returncode == 0, done.stdout[-3000:]
