"""The store interface both backends implement, and the change log they share.

Every write happens in a `Tx`. Domain code reads and writes its own tables through
`Tx.execute` and records synced entities with `Tx.put` / `Tx.delete`. At commit the
transaction's entity writes become change-log rows, numbered from the bucket's head inside
the same database transaction (the transactional outbox): sequence order is commit order,
gap-free per bucket, and each row carries the bucket checksum after it. A backend with
several writer processes (PostgreSQL) locks the bucket's head row only for that short tail.

SQL is written once with `?` placeholders; a backend translates it if its driver differs.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from anyio import to_thread
from msgspec import Raw

from sync import checksum as cks
from sync.wire import NIL, BucketInfo, Change, SnapshotHeader, SnapshotRow

Row = tuple[Any, ...]
T = TypeVar("T")


@dataclass
class Pending:
    """Entity writes of one transaction, last write per entity wins."""

    by_bucket: dict[str, dict[tuple[str, str], bytes | None]] = field(default_factory=dict)
    # While a savepoint is open: what each write replaced, to undo it on rollback.
    undo: list[tuple[str, tuple[str, str], bool, bytes | None]] | None = None

    def record(self, bucket: str, kind: str, key: str, body: bytes | None) -> None:
        writes = self.by_bucket.setdefault(bucket, {})
        if self.undo is not None:
            self.undo.append((bucket, (kind, key), (kind, key) in writes, writes.get((kind, key))))
        writes[(kind, key)] = body

    def rollback(self, undo: list[tuple[str, tuple[str, str], bool, bytes | None]]) -> None:
        for bucket, k, existed, body in reversed(undo):
            if existed:
                self.by_bucket[bucket][k] = body
            else:
                del self.by_bucket[bucket][k]

    def lookup(self, kind: str, key: str) -> tuple[str, bytes | None] | None:
        for bucket, writes in self.by_bucket.items():
            if (kind, key) in writes:
                return bucket, writes[(kind, key)]
        return None


class Tx(abc.ABC):
    """One writing transaction."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.pending = Pending()
        self.committed_heads: dict[str, int] = {}

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self.execute(sql, row)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.execute(sql, params).fetchone()
        return row

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit of work: on an exception its SQL and entity writes are undone, the
        transaction goes on (one failed item of a batch must not fail the others)."""
        assert self.pending.undo is None, "savepoints do not nest"
        self.pending.undo = []
        self.execute("SAVEPOINT item")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK TO SAVEPOINT item")
            self.execute("RELEASE SAVEPOINT item")
            self.pending.rollback(self.pending.undo)
            raise
        else:
            self.execute("RELEASE SAVEPOINT item")
        finally:
            self.pending.undo = None

    def put(self, bucket: str, kind: str, key: str, body: bytes) -> None:
        self.pending.record(bucket, kind, key, body)

    def delete(self, bucket: str, kind: str, key: str) -> None:
        self.pending.record(bucket, kind, key, None)

    def get(self, kind: str, key: str, *, for_update: bool = False) -> tuple[str, bytes] | None:
        """An entity's bucket and current body, seeing this transaction's own writes."""
        mine = self.pending.lookup(kind, key)
        if mine is not None:
            bucket, body = mine
            return None if body is None else (bucket, body)
        lock = self.for_update_clause if for_update else ""
        row = self.one(f"SELECT bucket, body FROM entity WHERE kind = ? AND key = ?{lock}", (kind, key))
        return None if row is None else (row[0], bytes(row[1]))

    for_update_clause = ""

    @abc.abstractmethod
    def lock_bucket(self, bucket: str) -> tuple[int, int]:
        """Lock the bucket's head row until commit; return (head, checksum as u64)."""

    def flush_changes(self) -> None:
        """Number this transaction's entity writes from each bucket's head and log them."""
        for bucket in sorted(self.pending.by_bucket):  # a fixed order: no lock cycles
            writes = self.pending.by_bucket[bucket]
            head, checksum = self.lock_bucket(bucket)
            seq = head
            log: list[tuple[Any, ...]] = []
            for (kind, key), body in writes.items():
                old = self.one(
                    "SELECT hash FROM entity WHERE bucket = ? AND kind = ? AND key = ?",
                    (bucket, kind, key),
                )
                h = None if body is None else cks.entity_hash(kind, key, body)
                if old is not None and h is not None and cks.to_unsigned(old[0]) == h:
                    continue  # the same bytes again: no change to log
                if old is not None:
                    checksum = cks.sub(checksum, cks.to_unsigned(old[0]))
                if body is None:
                    if old is None:
                        continue  # deleting what does not exist changes nothing
                    self.execute(
                        "DELETE FROM entity WHERE bucket = ? AND kind = ? AND key = ?",
                        (bucket, kind, key),
                    )
                    op = "delete"
                else:
                    assert h is not None
                    checksum = cks.add(checksum, h)
                    self.execute(
                        "INSERT INTO entity (bucket, kind, key, body, hash) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT (bucket, kind, key)"
                        " DO UPDATE SET body = excluded.body, hash = excluded.hash",
                        (bucket, kind, key, body, cks.to_signed(h)),
                    )
                    op = "put"
                seq += 1
                log.append((bucket, seq, kind, key, op, body, cks.to_signed(checksum), self.now))
            if not log:
                continue
            self.executemany(
                "INSERT INTO change (bucket, seq, kind, key, op, body, checksum, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                log,
            )
            self.execute(
                "UPDATE bucket SET head = ?, checksum = ? WHERE bucket = ?",
                (seq, cks.to_signed(checksum), bucket),
            )
            self.committed_heads[bucket] = seq


@dataclass(frozen=True)
class FeedSlice:
    epoch: str
    head: int
    watermark: int
    changes: list[Change]
    checksum: int  # the bucket checksum at the last change returned (or at head if none)


class Store(abc.ABC):
    """What the origin needs from a database. Both backends pass the same test suite."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._commit_listeners: list[Callable[[dict[str, int]], None]] = []

    def on_commit(self, listener: Callable[[dict[str, int]], None]) -> None:
        """Call `listener({bucket: head})` after each commit that logged changes."""
        self._commit_listeners.append(listener)

    def _committed(self, heads: dict[str, int]) -> None:
        if heads:
            for listener in self._commit_listeners:
                listener(heads)

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]: ...

    async def write(self, work: Callable[[Tx], T]) -> T:
        """`work` in one transaction, from the event loop: here in a worker thread."""

        def run() -> T:
            with self.transaction() as tx:
                return work(tx)

        return await to_thread.run_sync(run)

    async def read_feed(
        self, bucket: str, after: int, limit: int, *, head: int | None = None
    ) -> FeedSlice | None:
        """`feed`, from the event loop: here in a worker thread. `head` is the bucket's newest
        sequence as the caller last heard of it (None: not known), for a backend to judge the
        page's size by."""
        return await to_thread.run_sync(self.feed, bucket, after, limit)

    @abc.abstractmethod
    def reader(self) -> AbstractContextManager[Tx]:
        """A read-only transaction that sees one consistent state."""

    @abc.abstractmethod
    def stream_reader(self) -> AbstractContextManager[Tx]:
        """Like `reader`, on a connection of its own that any thread may use (snapshots)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def backup(self, dest: Path) -> None:
        """Write a consistent copy of the whole store to `dest`."""

    @abc.abstractmethod
    def restore(self, src: Path) -> str:
        """Replace the store's contents with a backup; return the new epoch it writes."""

    def new_epoch(self) -> str:
        """Start a new history (after a restore): every reader must re-bootstrap."""
        epoch = new_epoch()
        with self.transaction() as tx:
            tx.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,))
        return epoch

    def compact(self, cutoff: float) -> dict[str, int]:
        """Truncate each bucket's log of changes made before `cutoff`; return the watermarks.

        The watermark (the highest truncated sequence) never decreases. Readers whose cursor is
        below it get 409 and re-bootstrap from a snapshot; the state, and so the checksums, do
        not change.
        """
        out: dict[str, int] = {}
        with self.transaction() as tx:
            for bucket, watermark in tx.execute("SELECT bucket, watermark FROM bucket").fetchall():
                row = tx.one("SELECT MAX(seq) FROM change WHERE bucket = ? AND at < ?", (bucket, cutoff))
                upto = max(int(watermark), int(row[0] or 0) if row else 0)
                if upto > watermark:
                    tx.execute("DELETE FROM change WHERE bucket = ? AND seq <= ?", (bucket, upto))
                    tx.execute(  # never lower it, whatever a concurrent compaction wrote
                        "UPDATE bucket SET watermark = ? WHERE bucket = ? AND watermark < ?",
                        (upto, bucket, upto),
                    )
                out[bucket] = upto
        return out

    # -- reads every backend answers the same way -------------------------------------

    def epoch(self) -> str:
        with self.reader() as r:
            return _epoch(r)

    def buckets(self) -> list[BucketInfo]:
        with self.reader() as r:
            epoch = _epoch(r)
            rows = r.execute(
                "SELECT bucket, head, watermark, checksum FROM bucket ORDER BY bucket"
            ).fetchall()
        return [
            BucketInfo(bucket=b, epoch=epoch, head=h, watermark=w, checksum=cks.to_unsigned(c))
            for b, h, w, c in rows
        ]

    def head(self, bucket: str) -> int | None:
        with self.reader() as r:
            row = r.one("SELECT head FROM bucket WHERE bucket = ?", (bucket,))
        return None if row is None else int(row[0])

    def feed(self, bucket: str, after: int, limit: int) -> FeedSlice | None:
        """The changes after `after`, at most `limit`; None for an unknown bucket."""
        with self.reader() as r:
            epoch = _epoch(r)
            b = r.one("SELECT head, watermark, checksum FROM bucket WHERE bucket = ?", (bucket,))
            if b is None:
                return None
            head, watermark, checksum = int(b[0]), int(b[1]), cks.to_unsigned(b[2])
            rows = r.execute(
                "SELECT seq, kind, key, op, body, checksum FROM change"
                " WHERE bucket = ? AND seq > ? ORDER BY seq LIMIT ?",
                (bucket, after, limit),
            ).fetchall()
        changes = [
            Change(seq, kind, key, op, NIL if body is None else _raw(body))
            for seq, kind, key, op, body, _ in rows
        ]
        if rows:
            checksum = cks.to_unsigned(rows[-1][5])
        return FeedSlice(epoch, head, watermark, changes, checksum)

    def snapshot(self, bucket: str) -> Iterator[SnapshotHeader | SnapshotRow]:
        """The bucket's whole state at one sequence: a header, then every entity."""
        with self.stream_reader() as r:
            epoch = _epoch(r)
            b = r.one("SELECT head, checksum FROM bucket WHERE bucket = ?", (bucket,))
            if b is None:
                return
            yield SnapshotHeader(bucket=bucket, epoch=epoch, seq=int(b[0]), checksum=cks.to_unsigned(b[1]))
            cur = r.execute(
                "SELECT kind, key, body FROM entity WHERE bucket = ? ORDER BY kind, key", (bucket,)
            )
            while batch := cur.fetchmany(2000):
                for kind, key, body in batch:
                    yield SnapshotRow(kind, key, _raw(body))


def _raw(body: Any) -> Raw:
    return Raw(bytes(body))


def _epoch(r: Tx) -> str:
    row = r.one("SELECT value FROM meta WHERE key = 'epoch'")
    assert row is not None, "the store has no epoch: migrations did not run"
    return str(row[0])


def new_epoch() -> str:
    return secrets.token_hex(8)


def ensure_bucket(tx: Tx, bucket: str) -> None:
    tx.execute(
        "INSERT INTO bucket (bucket, head, watermark, checksum) VALUES (?, 0, 0, 0)"
        " ON CONFLICT (bucket) DO NOTHING",
        (bucket,),
    )
