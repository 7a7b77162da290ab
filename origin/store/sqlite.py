"""The embedded default: one SQLite file in WAL mode.

One writer connection (guarded by a lock; `BEGIN IMMEDIATE` also serializes other processes)
and one reader connection per thread. WAL gives every reader a consistent snapshot while the
writer commits, so a feed page or a snapshot never sees half a transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from origin.store.base import FeedSlice, Store, T, Tx, ensure_bucket, new_epoch
from sync import checksum as cks
from sync.walcheckpoint import WalCheckpointer, autocheckpoint_off

BUSY_TIMEOUT_MS = 30_000
INLINE_FEED_CHANGES = 64  # a feed read of at most this many changes runs on the loop
MIGRATIONS: list[str] = [
    # 1: the change log, synced entities, buckets
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE bucket (
        bucket TEXT PRIMARY KEY,
        head INTEGER NOT NULL,
        watermark INTEGER NOT NULL,
        checksum INTEGER NOT NULL
    );
    CREATE TABLE entity (
        bucket TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        body BLOB NOT NULL,
        hash INTEGER NOT NULL,
        PRIMARY KEY (bucket, kind, key)
    ) WITHOUT ROWID;
    CREATE INDEX entity_by_key ON entity (kind, key);
    CREATE TABLE change (
        bucket TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        op TEXT NOT NULL,
        body BLOB,
        checksum INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (bucket, seq)
    ) WITHOUT ROWID;
    CREATE TABLE webhook_seen (id TEXT PRIMARY KEY, received_at REAL NOT NULL);
    CREATE TABLE parked_event (
        tracking_number TEXT NOT NULL,
        carrier TEXT NOT NULL,
        event BLOB NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX parked_by_number ON parked_event (tracking_number);
    CREATE TABLE site_region (site_id TEXT PRIMARY KEY, region TEXT NOT NULL);
    """,
    # 2: the inventory ledger, orders (with their personal data), idempotency keys
    """
    CREATE TABLE region (name TEXT PRIMARY KEY, lat REAL NOT NULL, lon REAL NOT NULL);
    CREATE TABLE stock_level (
        site_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        on_hand INTEGER NOT NULL,
        reserved INTEGER NOT NULL,
        PRIMARY KEY (site_id, sku),
        CHECK (on_hand >= 0 AND reserved >= 0 AND reserved <= on_hand)
    ) WITHOUT ROWID;
    CREATE TABLE movement (
        id TEXT PRIMARY KEY,
        site_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        kind TEXT NOT NULL,
        on_hand_delta INTEGER NOT NULL,
        reserved_delta INTEGER NOT NULL,
        reservation_id TEXT,
        at REAL NOT NULL
    );
    CREATE INDEX movement_by_stock ON movement (site_id, sku);
    CREATE TABLE reservation (
        reservation_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        site_id TEXT NOT NULL,
        lines BLOB NOT NULL,
        state TEXT NOT NULL,
        expires_at REAL NOT NULL,
        created_at REAL NOT NULL,
        settled_at REAL
    );
    CREATE INDEX reservation_live ON reservation (state, expires_at);
    CREATE INDEX reservation_by_order ON reservation (order_id);
    CREATE TABLE customer_order (
        order_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        pii BLOB NOT NULL,
        lines BLOB NOT NULL,
        placed_at REAL NOT NULL
    );
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER,
        body BLOB,
        created_at REAL NOT NULL
    );
    """,
    # 3: the model registry's blobs (releases are synced entities)
    """
    CREATE TABLE model_blob (sha256 TEXT PRIMARY KEY, blob BLOB NOT NULL);
    """,
    # 4: allotments: a hold with an owner (an edge) and no order
    """
    ALTER TABLE reservation ADD COLUMN owner TEXT;
    """,
    # 5: personal data at rest (origin/pii.py, origin/retention.py): the pseudonymous customer ref
    # beside the sealed record (co-purchase and erasure by customer need no key), when the record
    # was erased, and each shipment's order and the time it settled (delivered, returned,
    # expired) for the retention sweep. Touches nothing migration 5 does.
    """
    ALTER TABLE customer_order ADD COLUMN customer_ref TEXT;
    ALTER TABLE customer_order ADD COLUMN erased_at REAL;
    CREATE INDEX customer_order_by_ref ON customer_order (customer_ref);
    CREATE TABLE order_shipment (
        tracking_number TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        settled_at REAL
    );
    CREATE INDEX order_shipment_by_order ON order_shipment (order_id);
    CREATE INDEX order_shipment_settled ON order_shipment (settled_at);
    """,
]


class SQLiteTx(Tx):
    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        super().__init__(now)
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def lock_bucket(self, bucket: str) -> tuple[int, int]:
        # BEGIN IMMEDIATE already holds the database's write lock.
        ensure_bucket(self, bucket)
        row = self.one("SELECT head, checksum FROM bucket WHERE bucket = ?", (bucket,))
        assert row is not None
        return int(row[0]), cks.to_unsigned(row[1])


def _connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # The system of record: a commit is acknowledged only once its WAL frames are synced, so it
    # survives power loss, not just a killed process (NORMAL syncs only at checkpoints). Writes
    # that carry load share that sync through group commit (origin/ingest.py); docs/durability.md.
    conn.execute("PRAGMA synchronous=FULL")
    # Overwrite what an update or delete frees (an erased record, a re-sealed row) where that
    # costs no extra I/O, rather than leave it in free space within pages.
    conn.execute("PRAGMA secure_delete=FAST")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


class WriterBusy(Exception):
    """Another thread or process holds the write lock (only from `_transaction(wait=False)`)."""


def _begin_now(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, or `WriterBusy` at once if another process is writing."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise WriterBusy from None
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class SQLiteStore(Store):
    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(path, check_same_thread=False)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._migrate()
        # Checkpoint the WAL from a thread of its own: left to the writer (SQLite's default), a
        # commit now and then copies the log into the database and syncs it, and every request
        # waiting on that commit stalls (the ingest scenario's p99).
        autocheckpoint_off(self._writer)
        self._wal = WalCheckpointer(path, self._write_lock)

    def _migrate(self) -> None:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                for n, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {n}")
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)", (new_epoch(),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def transaction(self) -> AbstractContextManager[Tx]:
        return self._transaction(wait=True)

    async def write(self, work: Callable[[Tx], T]) -> T:
        """On the event loop itself when the writer is free at once, else in a worker thread.

        A hold's transaction is about 0.3 ms, most of it inside SQLite with the GIL released;
        the hop to a worker thread and back cost more than that (0.6 ms at p50 and 5–6 ms at
        p99 under the route benchmark: the worker waits for the GIL). When another thread of
        this process, or another process, is writing, waiting for it must not block the loop:
        then a worker thread waits instead.
        """
        try:
            with self._transaction(wait=False) as tx:
                return work(tx)
        except WriterBusy:
            return await super().write(work)

    async def read_feed(
        self, bucket: str, after: int, limit: int, *, head: int | None = None
    ) -> FeedSlice | None:
        """On the event loop when `head` says the page is short, else in a worker thread.

        An edge at the tail asks for the few changes since its cursor, dozens of times a
        second. Read in a worker thread, such a page took 0.8–0.9 ms at p50 and ~10 ms at p99
        under the route benchmark, the hop and the GIL costing far more than the read; on the
        loop it is 0.2 ms, 1 ms at p99. A reader catching up, or a head not known yet, go to
        a worker thread as before; a head another process moved on since means more changes
        than expected, read on the loop: only slower.
        """
        if head is not None and head - after <= INLINE_FEED_CHANGES:
            return self.feed(bucket, after, limit)
        return await super().read_feed(bucket, after, limit)

    @contextmanager
    def _transaction(self, *, wait: bool) -> Iterator[Tx]:
        """`wait=False` raises `WriterBusy` before the transaction begins if it would wait."""
        if not self._write_lock.acquire(blocking=wait):
            raise WriterBusy
        try:
            conn = self._writer
            if wait:
                conn.execute("BEGIN IMMEDIATE")
            else:
                _begin_now(conn)
            tx = SQLiteTx(conn, self.clock())
            try:
                yield tx
                tx.flush_changes()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            self._write_lock.release()
        self._committed(tx.committed_heads)

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, check_same_thread=False)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def reader(self) -> Iterator[Tx]:
        conn = self._reader_conn()
        conn.execute("BEGIN")
        try:
            yield SQLiteTx(conn, self.clock())
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def stream_reader(self) -> Iterator[Tx]:
        conn = _connect(self.path, check_same_thread=False)
        conn.execute("BEGIN")
        try:
            yield SQLiteTx(conn, self.clock())
        finally:
            conn.execute("COMMIT")
            conn.close()

    def backup(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(dest)
        try:
            with self._write_lock:
                self._writer.backup(target)
        finally:
            target.close()

    def restore(self, src: Path) -> str:
        """Replace the whole store with the backup at `src`, under a new epoch."""
        if not src.is_file():
            raise FileNotFoundError(f"no backup at {src}")
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            with self._write_lock:
                source.backup(self._writer)
        finally:
            source.close()
        self._migrate()
        return self.new_epoch()

    def close(self) -> None:
        self._wal.stop()
        with self._write_lock:
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
