"""What the load is made of: real tracking numbers from the seeded world, signed webhooks.

Tracking numbers are drawn from the same deterministic world `python -m origin seed` wrote
(same spec, same seed), spread over the whole world rather than its first shipments.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from models.world import World, WorldSpec, world_now
from origin.signatures import sign

BLOCKS = 64
EVENT_STATUSES = ("in_transit", "out_for_delivery", "in_transit", "attempt_fail")


def world_for(shipments: int, regions: int, seed: int = 7) -> World:
    return World(WorldSpec(seed=seed, regions=regions, shipments=shipments), world_now(time.time()))


def sample_shipments(world: World, count: int, region: str | None = None) -> list[tuple[str, str]]:
    """Up to `count` (tracking_number, carrier) pairs, taken in blocks across the whole world."""
    total = world.spec.shipments
    if total == 0 or count <= 0:
        return []
    share = len(world.regions) if region else 1
    per_block = max(count * share // BLOCKS + 1, 1)
    regions = {s.site_id: s.region for s in world.sites}
    out: list[tuple[str, str]] = []
    starts = sorted({total * b // BLOCKS for b in range(BLOCKS)})
    for start in starts:
        for s in islice(world.shipments(start), per_block):
            if region is None or regions[s.site_id] == region:
                out.append((s.tracking_number, s.carrier))
    random.Random(1).shuffle(out)
    return out[:count]


def unknown_numbers(count: int) -> list[str]:
    """Well-formed tracking numbers that no carrier in the world issues (→ 404)."""
    rng = random.Random(2)
    return [f"ZZBENCH{rng.randrange(10**12):012d}" for _ in range(count)]


def write_presigned(
    path: Path,
    shipments: list[tuple[str, str]],
    count: int,
    key: bytes,
    run_id: str,
) -> int:
    """`count` signed tracking webhooks, one per line: id, timestamp, signature, body (tab-separated).

    Each has its own `webhook-id` and `occurred_at`, so none is a replay or a duplicate: every
    one is a real write. Signed now, they stay within the five-minute tolerance for the run.
    """
    assert shipments, "presigned webhooks need at least one tracking number"
    ts = int(time.time())
    base = datetime.now(UTC) - timedelta(hours=1)
    with path.open("w") as f:
        for i in range(count):
            tn, carrier = shipments[i % len(shipments)]
            occurred = base + timedelta(microseconds=i * 1000)
            body = json.dumps(
                {
                    "tracking_number": tn,
                    "carrier": carrier,
                    "status": EVENT_STATUSES[i % len(EVENT_STATUSES)],
                    "message": "Benchmark scan",
                    "location": "Bench Hub",
                    "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
                },
                separators=(",", ":"),
            ).encode()
            msg_id = f"msg_{run_id}_{i}"
            f.write(f"{msg_id}\t{ts}\t{sign(key, msg_id, ts, body)}\t{body.decode()}\n")
    return count
