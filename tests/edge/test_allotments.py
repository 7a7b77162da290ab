"""What an allotment has left to draw, as its draws travel to the origin and come back in the feed.

The read model is fed the changes the origin would write (the shrunk allotment, then the
order's hold, as `origin.ledger` orders them); no server is needed to check the counting. The
draws against a real origin are in `tests/edge/test_routing.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edge.allotments import Allotments
from edge.readmodel import ReadModel
from edge.settings import EdgeSettings
from sync.entities import ChangeKinds, Line, Reservation, encode_entity
from sync.replica import Applied

NOW = 1_800_000_000.0
BUCKET = "region:north"
EXPIRES = datetime.fromtimestamp(NOW + 900, UTC)


def allotments(tmp_path: Path) -> tuple[Allotments, ReadModel]:
    settings = EdgeSettings(origin_url="http://origin", region="north", data_dir=tmp_path, clock=lambda: NOW)
    model = ReadModel()
    mine = Allotments(settings, model, BUCKET, owner="north-edge")
    model.watch(mine)
    return mine, model


def put(model: ReadModel, r: Reservation) -> None:
    model.apply(BUCKET, [Applied(ChangeKinds.RESERVATION, r.reservation_id, encode_entity(r))])


def allotment(left: dict[str, int], aid: str = "al.1") -> Reservation:
    lines = [Line(sku, qty) for sku, qty in left.items()]
    return Reservation(
        reservation_id=aid,
        order_id="",
        site_id="s1",
        lines=lines,
        state="held",
        expires_at=EXPIRES,
        owner="north-edge",
    )


def order_hold(rid: str, lines: list[Line]) -> Reservation:
    return Reservation(
        reservation_id=rid, order_id=f"o-{rid}", site_id="s1", lines=lines, state="held", expires_at=EXPIRES
    )


def test_a_draw_counts_until_its_hold_arrives_and_never_twice(tmp_path: Path) -> None:
    mine, model = allotments(tmp_path)
    put(model, allotment({"A": 10, "B": 4}))
    assert mine.take("s1", [Line("A", 3)], "r1") == "al.1"
    assert mine.take("s1", [Line("A", 2), Line("B", 4)], "r2") == "al.1"
    assert (mine.units("s1", "A"), mine.units("s1", "B"), mine.orders("s1")) == (5, 0, 2)
    assert mine.take("s1", [Line("B", 1)], "r3") is None, "nothing of B is left to draw"

    # The origin shrinks the allotment, then writes r1's hold: r1 is counted once, by the replica.
    put(model, allotment({"A": 7, "B": 4}))
    # Between the two (one feed page apart at most) r1 counts twice: fewer units, never more.
    assert mine.units("s1", "A") == 2
    put(model, order_hold("r1", [Line("A", 3)]))
    assert (mine.units("s1", "A"), mine.units("s1", "B"), mine.orders("s1")) == (5, 0, 1)
    assert mine.left("al.1") == {"A": 5, "B": 0}

    # r2 is given up (its decision re-routed): its units are the allotment's again.
    mine.forget("al.1", "r2")
    assert (mine.units("s1", "A"), mine.units("s1", "B"), mine.orders("s1")) == (7, 4, 0)


def test_a_draw_noted_after_a_restart_counts_only_if_the_replica_lacks_its_hold(tmp_path: Path) -> None:
    mine, model = allotments(tmp_path)
    put(model, allotment({"A": 7}))
    put(model, order_hold("r1", [Line("A", 3)]))  # sent before the kill, and replicated
    mine.note("al.1", "r1", [Line("A", 3)])
    mine.note("al.1", "r2", [Line("A", 2)])  # queued at the kill, not sent
    assert (mine.units("s1", "A"), mine.orders("s1")) == (5, 1)
