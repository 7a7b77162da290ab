"""`python -m benchmarks fuzz`, the CI length, and its catalog against the route tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from starlette.routing import Route

from benchmarks.fuzz.catalog import ENDPOINTS
from edge.app import create_app as create_edge
from edge.settings import EdgeSettings
from origin.app import create_app as create_origin
from origin.pii import Keyring, new_key
from origin.settings import OriginSettings


def routes(service: str, app_routes: list[object]) -> set[tuple[str, str, str]]:
    out = set()
    for r in app_routes:
        assert isinstance(r, Route), r
        for method in sorted((r.methods or {"GET"}) - {"HEAD"}):
            out.add((service, method, r.path))
    return out


def test_the_fuzzer_covers_every_endpoint(tmp_path: Path) -> None:
    origin = create_origin(OriginSettings(data_dir=tmp_path / "o", pii_keyring=Keyring.parse(new_key())))
    edge = create_edge(EdgeSettings(origin_url="http://127.0.0.1:1", region="north", data_dir=tmp_path / "e"))
    served = routes("origin", origin.routes) | routes("edge", edge.routes)
    fuzzed = {(e.service, e.method, e.path) for e in ENDPOINTS}
    assert served - fuzzed == set(), "endpoints the fuzzer never sends to"
    assert fuzzed - served == set(), "the catalog lists endpoints the services do not serve"


def test_hostile_inputs_never_get_a_5xx(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "benchmarks", "fuzz", "--inputs", "1500", "--max-seconds", "40"]
    done = subprocess.run(
        [*argv, "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=240, check=False
    )
    (result_file,) = tmp_path.glob("fuzz-*/result.json")
    r = json.loads(result_file.read_text())
    assert r["inputs"] >= 1000, r["inputs"]
    statuses = r["total_statuses"]
    # Not vacuous: hostile inputs were refused, and valid ones accepted.
    assert statuses.get("400", 0) > 0 and statuses.get("401", 0) > 0 and statuses.get("201", 0) > 0
    classes = [
        f"{c['status']} {c['endpoint']}: {c['exception']} ← {c['body_preview'][:160]}"
        for c in r["5xx_classes"]
    ]
    assert r["5xx"] == 0, "\n".join(classes)
    assert done.returncode == 0, done.stdout[-3000:]
