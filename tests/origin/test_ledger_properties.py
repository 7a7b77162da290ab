"""Property test: random movements, holds, settlements, expiries and retries keep the invariants.

After every step: on_hand and reserved equal the sums of their movements; available is never
negative; reserved equals what live holds hold; each hold is settled at most once.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from models.world import World, WorldSpec, world_now
from origin import ledger
from origin.errors import Conflict, NotFound
from origin.seed import seed_world
from origin.store import open_store
from sync.entities import Line
from tests.conftest import Clock, pg_schema

SPEC = WorldSpec(seed=5, regions=1, sites_per_region=2, products=3, shipments=1)
SITES = ["north-mfc-1", "north-mfc-2"]
SKUS = ["sku-00001", "sku-00002", "sku-00003"]
RIDS = [f"r{i}" for i in range(8)]


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, store_url: str | None) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = Clock(1_900_000_000.0)
        self.schema = contextlib.ExitStack()
        # Each example starts empty: its own SQLite file, or its own PostgreSQL schema.
        url = self.schema.enter_context(pg_schema()) if store_url else None
        self.store = open_store(url, Path(self.dir.name), self.clock)
        seed_world(self.store, World(SPEC, world_now(self.clock())))
        self.movement_ids: list[str] = []

    def teardown(self) -> None:
        self.store.close()
        self.schema.close()
        self.dir.cleanup()

    @rule(
        site=st.sampled_from(SITES),
        sku=st.sampled_from(SKUS),
        kind=st.sampled_from(["receive", "adjust"]),
        qty=st.integers(-20, 20),
        retry=st.booleans(),
    )
    def movement(self, site: str, sku: str, kind: str, qty: int, retry: bool) -> None:
        mid = self.movement_ids[-1] if retry and self.movement_ids else f"m{len(self.movement_ids)}"
        self.movement_ids.append(mid)
        try:
            with self.store.transaction() as tx:
                ledger.record_movement(tx, mid, site, sku, kind, qty)  # type: ignore[arg-type]
        except (Conflict, ledger.InvalidInput):
            pass

    @rule(
        rid=st.sampled_from(RIDS),
        site=st.sampled_from(SITES),
        lines=st.dictionaries(st.sampled_from(SKUS), st.integers(1, 15), min_size=1, max_size=3),
        ttl=st.integers(1, 120),
    )
    def reserve(self, rid: str, site: str, lines: dict[str, int], ttl: int) -> None:
        try:
            with self.store.transaction() as tx:
                ledger.reserve(tx, rid, f"o-{rid}", site, [Line(k, v) for k, v in sorted(lines.items())], ttl)
        except Conflict:
            pass

    @rule(rid=st.sampled_from(RIDS), action=st.sampled_from(["commit", "release", "read"]))
    def settle(self, rid: str, action: str) -> None:
        fn = {"commit": ledger.commit, "release": ledger.release, "read": ledger.read_hold}[action]
        try:
            with self.store.transaction() as tx:
                fn(tx, rid)
        except (Conflict, NotFound):
            pass

    @rule(seconds=st.integers(1, 90))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)
        with self.store.transaction() as tx:
            ledger.expire_due(tx)

    @invariant()
    def balances_equal_their_movements_and_holds(self) -> None:
        with self.store.reader() as r:
            levels = r.execute("SELECT site_id, sku, on_hand, reserved FROM stock_level").fetchall()
            for site, sku, on_hand, reserved in levels:
                sums = r.one(
                    "SELECT COALESCE(SUM(on_hand_delta), 0), COALESCE(SUM(reserved_delta), 0)"
                    " FROM movement WHERE site_id = ? AND sku = ?",
                    (site, sku),
                )
                assert sums == (on_hand, reserved)
                assert on_hand - reserved >= 0 and reserved >= 0
                held = 0
                for (rid,) in r.execute(
                    "SELECT reservation_id FROM reservation WHERE state = 'held' AND site_id = ?", (site,)
                ).fetchall():
                    hold = ledger.get_hold(r, rid)
                    assert hold is not None
                    held += sum(line.qty for line in hold.lines if line.sku == sku)
                assert held == reserved

    @invariant()
    def each_hold_is_settled_at_most_once(self) -> None:
        with self.store.reader() as r:
            rows = r.execute(
                "SELECT reservation_id, COUNT(DISTINCT kind) FROM movement"
                " WHERE kind IN ('ship', 'release', 'expire') GROUP BY reservation_id"
            ).fetchall()
            for rid, kinds in rows:
                assert kinds == 1, f"{rid} settled {kinds} ways"
                state = r.one("SELECT state FROM reservation WHERE reservation_id = ?", (rid,))
                assert state is not None and state[0] != "held"


def test_random_ledger_operations_keep_the_invariants(store_url: str | None) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(store_url),
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None),
    )
