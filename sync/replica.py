"""The edge's durable replica: one SQLite file of entities and per-bucket cursors.

A feed page and its new cursor are applied in one local transaction, and only after the
bucket checksum the page announces matches the one the replica computes from its own stored
hashes. A page that fails (a changed byte, a dropped change) is rolled back whole: nothing of
it is kept, and the caller learns which check failed. A bootstrap stages a snapshot in a side
table and swaps it in at once, so readers see the old state until the new one is complete.

Shipments and orders are stored packed (`sync.bodies`); hashes are always of the exact bytes
the origin shipped.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sync import checksum as cks
from sync.bodies import pack
from sync.walcheckpoint import WalCheckpointer, autocheckpoint_off
from sync.wire import FeedPage, SnapshotHeader, SnapshotRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entity (
    bucket TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    body BLOB NOT NULL, hash INTEGER NOT NULL,
    PRIMARY KEY (bucket, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staged (
    bucket TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    body BLOB NOT NULL, hash INTEGER NOT NULL,
    PRIMARY KEY (bucket, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursor (
    bucket TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
    checksum INTEGER NOT NULL, synced_at REAL NOT NULL
);
"""


class ReplicaError(Exception):
    """A page or snapshot the replica refuses; the bucket must be re-bootstrapped."""


class ChecksumMismatch(ReplicaError):
    pass


class GapInFeed(ReplicaError):
    pass


@dataclass(frozen=True)
class Cursor:
    bucket: str
    epoch: str
    seq: int
    checksum: int
    synced_at: float


@dataclass(frozen=True)
class Applied:
    """One change as it reached the replica, for the read model to follow."""

    kind: str
    key: str
    body: bytes | None  # as stored (see sync.bodies); None: deleted


class Replica:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # One connection, used from the event loop and worker threads: every use holds this lock.
        self.lock = threading.RLock()
        # Pages apply while the loop serves; a checkpoint inside one would hold this lock (and
        # the page, and on the loop every request) for its sync.
        autocheckpoint_off(self._db)
        self._wal = WalCheckpointer(path, self.lock)

    def close(self) -> None:
        self._wal.stop()
        self._db.close()

    def cursor(self, bucket: str) -> Cursor | None:
        with self.lock:
            return self._cursor(bucket)

    def _cursor(self, bucket: str) -> Cursor | None:
        row = self._db.execute(
            "SELECT epoch, seq, checksum, synced_at FROM cursor WHERE bucket = ?", (bucket,)
        ).fetchone()
        if row is None:
            return None
        return Cursor(bucket, row[0], row[1], cks.to_unsigned(row[2]), row[3])

    def entities(self, bucket: str) -> Iterator[tuple[str, str, bytes]]:
        """Every (kind, key, stored body) of a bucket, for loading the read model."""
        with self.lock:
            rows = self._db.execute(
                "SELECT kind, key, body FROM entity WHERE bucket = ?", (bucket,)
            ).fetchall()
        yield from rows

    def apply_page(self, page: FeedPage, now: float) -> list[Applied]:
        """Apply the page's changes past the cursor and move the cursor, atomically."""
        with self.lock:
            return self._apply_page(page, now)

    def _apply_page(self, page: FeedPage, now: float) -> list[Applied]:
        cur = self._cursor(page.bucket)
        if cur is None or cur.epoch != page.epoch:
            raise ReplicaError(f"bucket {page.bucket!r}: no cursor in epoch {page.epoch}")
        fresh = [c for c in page.changes if c.seq > cur.seq]
        if page.last < cur.seq:
            raise GapInFeed(f"bucket {page.bucket!r}: page ends at {page.last}, cursor is {cur.seq}")
        expected_seq = cur.seq + 1
        for c in fresh:
            if c.seq != expected_seq:
                raise GapInFeed(f"bucket {page.bucket!r}: expected seq {expected_seq}, got {c.seq}")
            expected_seq += 1
        if expected_seq - 1 != page.last:
            raise GapInFeed(
                f"bucket {page.bucket!r}: page says last={page.last}, changes end at {expected_seq - 1}"
            )
        applied: list[Applied] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            checksum = cur.checksum
            for c in fresh:
                old = db.execute(
                    "SELECT hash FROM entity WHERE bucket = ? AND kind = ? AND key = ?",
                    (page.bucket, c.kind, c.key),
                ).fetchone()
                if old is not None:
                    checksum = cks.sub(checksum, cks.to_unsigned(old[0]))
                if c.op == "delete":
                    db.execute(
                        "DELETE FROM entity WHERE bucket = ? AND kind = ? AND key = ?",
                        (page.bucket, c.kind, c.key),
                    )
                    applied.append(Applied(c.kind, c.key, None))
                    continue
                body = bytes(c.body)
                h = cks.entity_hash(c.kind, c.key, body)
                checksum = cks.add(checksum, h)
                stored = pack(c.kind, body)
                db.execute(
                    "INSERT OR REPLACE INTO entity (bucket, kind, key, body, hash) VALUES (?, ?, ?, ?, ?)",
                    (page.bucket, c.kind, c.key, stored, cks.to_signed(h)),
                )
                applied.append(Applied(c.kind, c.key, stored))
            if checksum != page.checksum:
                raise ChecksumMismatch(
                    f"bucket {page.bucket!r} at seq {page.last}:"
                    f" checksum {checksum} != origin's {page.checksum}"
                )
            db.execute(
                "UPDATE cursor SET seq = ?, checksum = ?, synced_at = ? WHERE bucket = ?",
                (page.last, cks.to_signed(checksum), now, page.bucket),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return applied

    def touch(self, bucket: str, now: float) -> None:
        """Record that the bucket was confirmed current at `now` (an empty long-poll)."""
        with self.lock:
            self._db.execute("UPDATE cursor SET synced_at = ? WHERE bucket = ?", (now, bucket))

    def start_bootstrap(self, header: SnapshotHeader) -> Staging:
        """Begin staging a snapshot beside the live rows; readers keep the old state."""
        with self.lock:
            self._db.execute("DELETE FROM staged WHERE bucket = ?", (header.bucket,))
        return Staging(self._db, self.lock, header)


class Staging:
    """A snapshot being written into the side table, then verified and swapped in at once."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, header: SnapshotHeader) -> None:
        self._db = db
        self._lock = lock
        self.header = header
        self.checksum = 0
        self.count = 0

    def add(self, rows: Iterable[SnapshotRow]) -> None:
        staged = []
        for row in rows:
            body = bytes(row.body)
            h = cks.entity_hash(row.kind, row.key, body)
            self.checksum = cks.add(self.checksum, h)
            staged.append((self.header.bucket, row.kind, row.key, pack(row.kind, body), cks.to_signed(h)))
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO staged VALUES (?, ?, ?, ?, ?)", staged)
            self._db.execute("COMMIT")
        self.count += len(staged)

    def finish(self, now: float) -> None:
        with self._lock:
            self._finish(now)

    def _finish(self, now: float) -> None:
        db = self._db
        bucket, header = self.header.bucket, self.header
        if self.checksum != header.checksum:
            db.execute("DELETE FROM staged WHERE bucket = ?", (bucket,))
            raise ChecksumMismatch(
                f"snapshot of {bucket!r} at seq {header.seq}: checksum {self.checksum} != {header.checksum}"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM entity WHERE bucket = ?", (bucket,))
            db.execute("INSERT INTO entity SELECT * FROM staged WHERE bucket = ?", (bucket,))
            db.execute("DELETE FROM staged WHERE bucket = ?", (bucket,))
            db.execute(
                "INSERT OR REPLACE INTO cursor (bucket, epoch, seq, checksum, synced_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (bucket, header.epoch, header.seq, cks.to_signed(self.checksum), now),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
