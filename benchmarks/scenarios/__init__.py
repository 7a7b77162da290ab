"""The registry of scenarios `python -m benchmarks run --scenario NAME` knows.

To add one (the models issue adds `route`; the PostgreSQL issue runs `ingest --store
postgresql://… --origins 2`, which already works once the store exists): write a module here
with a `measure(run)` and a `Scenario`, and list it in `SCENARIOS`; add a short run of it to
`SUITE` in `benchmarks/runner.py` and to the smoke test.
"""

from __future__ import annotations

from benchmarks.context import Scenario
from benchmarks.scenarios.overload import OVERLOAD
from benchmarks.scenarios.routing import ROUTE
from benchmarks.scenarios.shoppers import BURST, STEADY
from benchmarks.scenarios.webhooks import INGEST, SYNC_LAG
from benchmarks.scenarios.world import CEILING, MEMORY, SEED

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (STEADY, BURST, SYNC_LAG, INGEST, SEED, MEMORY, CEILING, ROUTE, OVERLOAD)
}

__all__ = ["SCENARIOS", "Scenario"]
