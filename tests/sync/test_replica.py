"""The replica applies a page and its cursor atomically, and refuses a page that fails checks."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sync import checksum as cks
from sync.replica import ChecksumMismatch, GapInFeed, Replica
from sync.wire import Change, FeedPage, SnapshotHeader, SnapshotRow


def body(n: int) -> bytes:
    return msgspec.msgpack.encode({"n": n})


def page(after: int, changes: list[tuple[int, str, bytes]], checksum: int, epoch: str = "e1") -> FeedPage:
    return FeedPage(
        bucket="b",
        epoch=epoch,
        after=after,
        last=changes[-1][0] if changes else after,
        head=None,
        checksum=checksum,
        changes=[Change(seq, "thing", key, "put", msgspec.Raw(b)) for seq, key, b in changes],
    )


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    r = Replica(tmp_path / "replica.sqlite3")
    rows = [SnapshotRow("thing", "a", msgspec.Raw(body(1)))]
    header = SnapshotHeader(bucket="b", epoch="e1", seq=1, checksum=cks.entity_hash("thing", "a", body(1)))
    staging = r.start_bootstrap(header)
    staging.add(rows)
    staging.finish(now=1.0)
    return r


def expected(*entities: tuple[str, bytes]) -> int:
    total = 0
    for key, b in entities:
        total = cks.add(total, cks.entity_hash("thing", key, b))
    return total


def test_apply_moves_state_and_cursor_together(replica: Replica) -> None:
    applied = replica.apply_page(
        page(1, [(2, "a", body(2)), (3, "b", body(3))], expected(("a", body(2)), ("b", body(3)))), 2.0
    )
    assert [(a.key, a.body) for a in applied] == [("a", body(2)), ("b", body(3))]
    cur = replica.cursor("b")
    assert cur is not None and cur.seq == 3
    assert dict((k, v) for _, k, v in replica.entities("b")) == {"a": body(2), "b": body(3)}


def test_a_flipped_byte_is_refused_and_nothing_is_kept(replica: Replica) -> None:
    good = expected(("a", body(1)), ("b", body(3)))
    corrupted = bytearray(body(3))
    corrupted[-1] ^= 1
    with pytest.raises(ChecksumMismatch):
        replica.apply_page(page(1, [(2, "b", bytes(corrupted))], good), 2.0)
    cur = replica.cursor("b")
    assert cur is not None and cur.seq == 1
    assert [k for _, k, _ in replica.entities("b")] == ["a"]


def test_a_dropped_change_is_refused(replica: Replica) -> None:
    with pytest.raises(GapInFeed):
        replica.apply_page(page(1, [(3, "b", body(3))], expected(("a", body(1)), ("b", body(3)))), 2.0)


def test_changes_already_applied_are_skipped(replica: Replica) -> None:
    state = expected(("a", body(2)))
    replica.apply_page(page(1, [(2, "a", body(2))], state), 2.0)
    # An aligned re-read from 0 brings seq 1 and 2 again: nothing is applied twice.
    again = FeedPage(
        bucket="b",
        epoch="e1",
        after=0,
        last=2,
        head=2,
        checksum=state,
        changes=[
            Change(1, "thing", "a", "put", msgspec.Raw(body(1))),
            Change(2, "thing", "a", "put", msgspec.Raw(body(2))),
        ],
    )
    assert replica.apply_page(again, 3.0) == []


def test_a_snapshot_with_a_wrong_checksum_is_not_swapped_in(replica: Replica) -> None:
    header = SnapshotHeader(bucket="b", epoch="e2", seq=9, checksum=12345)
    staging = replica.start_bootstrap(header)
    staging.add([SnapshotRow("thing", "z", msgspec.Raw(body(9)))])
    with pytest.raises(ChecksumMismatch):
        staging.finish(now=5.0)
    cur = replica.cursor("b")
    assert cur is not None and cur.epoch == "e1"
    assert [k for _, k, _ in replica.entities("b")] == ["a"]
