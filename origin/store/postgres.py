"""PostgreSQL: one ledger that several origin processes, on one or many machines, serve.

Connections come from a `psycopg_pool.ConnectionPool`. They are in autocommit mode and this
module says `BEGIN …` itself, so every transaction names its isolation level.

**Writes run at READ COMMITTED, and that is enough.** Every guarantee the domain needs is a row
lock or a conditional statement, and READ COMMITTED re-checks those against the newest committed
row (PostgreSQL's EvalPlanQual) instead of a stale snapshot:

- Balances change only by a conditional `UPDATE stock_level … WHERE available stays ≥ 0`
  (`ledger._move`). A second writer of the row waits for the first to commit, then re-checks the
  condition on the committed balance: no oversell (the CHECK constraint refuses anything else).
- A hold settles by `UPDATE reservation … WHERE state = 'held'`: the loser of a race (a commit
  against an expiry in another process) matches no row and reads the winner's state with a fresh
  statement snapshot. Exactly one settlement, whichever process runs it.
- Movement ids, webhook ids, idempotency keys and order ids are claimed by
  `INSERT … ON CONFLICT DO NOTHING`, which waits for a concurrent inserter of the same key and
  then sees its row: a retry in another process is a replay, never a second effect.
- Read-modify-write of an entity (a shipment's timeline) goes through
  `Tx.get(…, for_update=True)`: `SELECT … FOR UPDATE`, and when there is no row to lock, a
  transaction-scoped advisory lock on (kind, key) and a second look. So a webhook parking an event
  for a tracking number that another process is registering at that moment waits for it, and
  then finds the shipment instead of parking the event forever (or the registration waits for
  the webhook, and then finds the parked event).
- The change-log tail (`Tx.flush_changes`) locks the bucket's head row with
  `SELECT … FOR UPDATE`. That waits until the previous writer of the bucket has committed, and
  every later statement of the tail takes a new snapshot that includes that commit: the head, the
  checksum and the old entity hashes it reads are the latest. So sequence order is commit order,
  gap-free. REPEATABLE READ would be wrong here, not merely slower: its snapshot is fixed at the
  transaction's first statement, so a contended head lock would end in a serialization failure.

The tail adds no lock cycle: heads are locked in bucket order, and while holding one a writer
touches only entity, change and bucket rows, which only the holder of that head writes. (Domain
code that locks several rows of its own in different orders can still deadlock; PostgreSQL then
aborts one of the two transactions, and its request fails whole.)

Readers are REPEATABLE READ READ ONLY: a feed page reads the bucket row and its change rows in
one snapshot, and a streamed snapshot (on a connection of its own, with a server-side cursor)
sees every entity at one head.

**Waking long-polls in every process.** The tail ends with
`pg_notify('waypost_changes', '{"bucket": head, …}')`; PostgreSQL delivers it at commit, in commit
order, to every session that listens. A store with commit listeners keeps one listening
connection in a thread and calls them, so a long-poll in any process wakes on a commit made
through any process. After (re)connecting, the listener reports the current heads, so a
notification missed while it was away cannot leave a long-poll asleep. A store in a schema other
than `public` (`?options=-csearch_path%3Dname` in the URL) uses the channel
`waypost_changes.<schema>`, so deployments sharing a database never wake each other.

**Backups are COPY-based**, one file and no client tools: a header (schema version, epoch, the
columns of each table) then each table as `COPY … (FORMAT binary)` frames, all read in one
REPEATABLE READ transaction. A restore drops the tables, recreates them at the backup's schema
version, copies the rows in, migrates forward and writes a new epoch, all in one transaction.

Migrations run on start under a transaction-scoped advisory lock, so origin processes starting
at once migrate once. `MIGRATIONS` mirrors `origin.store.sqlite.MIGRATIONS`: add to both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg import pq, sql
from psycopg_pool import ConnectionPool

from origin.store.base import Store, Tx, ensure_bucket, new_epoch
from sync import checksum as cks

log = logging.getLogger("waypost.origin.store")

Connection = psycopg.Connection[tuple[Any, ...]]
CHANNEL = "waypost_changes"
# The two-int advisory-lock space; entity locks use the one-bigint space, which never overlaps.
MIGRATION_LOCK = (0x77617970, 0x6F737401)
BACKUP_MAGIC = b"WAYPOST-PG-BACKUP 1\n"

MIGRATIONS: list[str] = [
    # 1: the change log, synced entities, buckets
    """
    CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE bucket (
        bucket TEXT COLLATE "C" PRIMARY KEY,
        head BIGINT NOT NULL,
        watermark BIGINT NOT NULL,
        checksum BIGINT NOT NULL
    );
    CREATE TABLE entity (
        bucket TEXT COLLATE "C" NOT NULL,
        kind TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        body BYTEA NOT NULL,
        hash BIGINT NOT NULL,
        PRIMARY KEY (bucket, kind, key)
    );
    CREATE INDEX entity_by_key ON entity (kind, key);
    CREATE TABLE change (
        bucket TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        op TEXT NOT NULL,
        body BYTEA,
        checksum BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (bucket, seq)
    );
    CREATE TABLE webhook_seen (id TEXT COLLATE "C" PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE parked_event (
        tracking_number TEXT COLLATE "C" NOT NULL,
        carrier TEXT NOT NULL,
        event BYTEA NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX parked_by_number ON parked_event (tracking_number);
    CREATE TABLE site_region (site_id TEXT COLLATE "C" PRIMARY KEY, region TEXT NOT NULL);
    """,
    # 2: the inventory ledger, orders (with their personal data), idempotency keys
    """
    CREATE TABLE region (
        name TEXT COLLATE "C" PRIMARY KEY, lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE stock_level (
        site_id TEXT COLLATE "C" NOT NULL,
        sku TEXT COLLATE "C" NOT NULL,
        on_hand BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        PRIMARY KEY (site_id, sku),
        CHECK (on_hand >= 0 AND reserved >= 0 AND reserved <= on_hand)
    );
    CREATE TABLE movement (
        id TEXT COLLATE "C" PRIMARY KEY,
        site_id TEXT COLLATE "C" NOT NULL,
        sku TEXT COLLATE "C" NOT NULL,
        kind TEXT NOT NULL,
        on_hand_delta BIGINT NOT NULL,
        reserved_delta BIGINT NOT NULL,
        reservation_id TEXT COLLATE "C",
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX movement_by_stock ON movement (site_id, sku);
    CREATE TABLE reservation (
        reservation_id TEXT COLLATE "C" PRIMARY KEY,
        order_id TEXT COLLATE "C" NOT NULL,
        site_id TEXT COLLATE "C" NOT NULL,
        lines BYTEA NOT NULL,
        state TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        settled_at DOUBLE PRECISION
    );
    CREATE INDEX reservation_live ON reservation (state, expires_at);
    CREATE INDEX reservation_by_order ON reservation (order_id);
    CREATE TABLE customer_order (
        order_id TEXT COLLATE "C" PRIMARY KEY,
        region TEXT NOT NULL,
        pii BYTEA NOT NULL,
        lines BYTEA NOT NULL,
        placed_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE idempotency (
        key TEXT COLLATE "C" PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER,
        body BYTEA,
        created_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 3: the model registry's blobs (releases are synced entities)
    """
    CREATE TABLE model_blob (sha256 TEXT COLLATE "C" PRIMARY KEY, blob BYTEA NOT NULL);
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
    ALTER TABLE customer_order ADD COLUMN customer_ref TEXT COLLATE "C";
    ALTER TABLE customer_order ADD COLUMN erased_at DOUBLE PRECISION;
    CREATE INDEX customer_order_by_ref ON customer_order (customer_ref);
    CREATE TABLE order_shipment (
        tracking_number TEXT COLLATE "C" PRIMARY KEY,
        order_id TEXT COLLATE "C" NOT NULL,
        settled_at DOUBLE PRECISION
    );
    CREATE INDEX order_shipment_by_order ON order_shipment (order_id);
    CREATE INDEX order_shipment_settled ON order_shipment (settled_at);
    """,
]

# Every table the migrations create, in creation order (what a backup holds).
TABLES: tuple[str, ...] = tuple(
    m.group(1) for script in MIGRATIONS for m in re.finditer(r"CREATE TABLE (\w+)", script)
)

_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|%")


@lru_cache(maxsize=4096)
def to_pg(query: str) -> str:
    """The one translation of our SQL: `?` → psycopg's `%s`, a literal `%` → `%%`.

    A `?` inside a quoted literal stays as it is; a `%` anywhere is doubled, since psycopg reads
    placeholders in literals too.
    """

    def swap(m: re.Match[str]) -> str:
        text = m.group(0)
        return "%s" if text == "?" else text.replace("%", "%%")

    return _TOKENS.sub(swap, query)


def entity_lock_id(kind: str, key: str) -> int:
    """The advisory-lock key of one entity: 64 bits of BLAKE2b over kind and key."""
    digest = hashlib.blake2b(f"{kind}\x00{key}".encode(), digest_size=8).digest()
    return int(struct.unpack(">q", digest)[0])


class PostgresTx(Tx):
    for_update_clause = " FOR UPDATE"

    def __init__(self, conn: Connection, now: float, *, server_cursors: bool = False) -> None:
        super().__init__(now)
        self._conn = conn
        self._server_cursors = server_cursors
        self._opened: list[psycopg.ServerCursor[tuple[Any, ...]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._server_cursors:  # a streamed snapshot: rows arrive in batches, not all at once
            cur = self._conn.cursor(name=f"waypost_{len(self._opened)}")
            cur.itersize = 2000
            self._opened.append(cur)
            return cur.execute(to_pg(sql), tuple(params))
        return self._conn.execute(to_pg(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if len(rows) == 1:  # the usual change-log row: a pipeline would cost more than it saves
            self.execute(sql, rows[0])
            return
        with self._conn.cursor() as cur:
            cur.executemany(to_pg(sql), rows)  # pipelined: one round trip for the batch

    def get(self, kind: str, key: str, *, for_update: bool = False) -> tuple[str, bytes] | None:
        found = super().get(kind, key, for_update=for_update)
        if found is None and for_update and self.pending.lookup(kind, key) is None:
            # No row to lock: take the entity's advisory lock, then look again with a snapshot
            # taken after it (whoever held it has committed by now).
            self.execute("SELECT pg_advisory_xact_lock(?)", (entity_lock_id(kind, key),))
            found = super().get(kind, key, for_update=True)
        return found

    def lock_bucket(self, bucket: str) -> tuple[int, int]:
        query = "SELECT head, checksum FROM bucket WHERE bucket = ? FOR UPDATE"
        row = self.one(query, (bucket,))
        if row is None:
            ensure_bucket(self, bucket)
            row = self.one(query, (bucket,))
        assert row is not None, f"bucket {bucket!r} has no head row"
        return int(row[0]), cks.to_unsigned(row[1])

    def close_cursors(self) -> None:
        for cur in self._opened:
            cur.close()
        self._opened.clear()


def _end(conn: Connection, ok: bool) -> None:
    """COMMIT (or ROLLBACK) what `BEGIN` opened; a broken connection is left to the pool."""
    status = conn.info.transaction_status
    if status == pq.TransactionStatus.IDLE:
        return
    if ok and status == pq.TransactionStatus.INTRANS:
        conn.execute("COMMIT")
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        log.warning("rollback failed; the pool will replace the connection", exc_info=True)


def _apply_migrations(conn: Connection, upto: int | None = None) -> None:
    """Bring the schema to version `upto` (the newest by default). Call inside a transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migration"
        " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
    )
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migration").fetchone()
    version = int(row[0]) if row else 0
    target = len(MIGRATIONS) if upto is None else upto
    for n in range(version + 1, target + 1):
        conn.execute(MIGRATIONS[n - 1].encode())
        conn.execute("INSERT INTO schema_migration (version, applied_at) VALUES (%s, %s)", (n, time.time()))


def channel_for(schema: str) -> str:
    """The NOTIFY channel of the store in `schema` (a channel name is at most 63 bytes)."""
    if schema == "public":
        return CHANNEL
    name = f"{CHANNEL}.{schema}"
    if len(name.encode()) <= 63:
        return name
    return f"{CHANNEL}.{hashlib.blake2b(schema.encode(), digest_size=16).hexdigest()}"


def _decode_heads(payload: str) -> dict[str, int]:
    try:
        heads = json.loads(payload)
        return {str(b): int(h) for b, h in heads.items()}
    except (ValueError, AttributeError, TypeError):
        log.warning("ignoring a malformed change notification: %r", payload[:200])
        return {}


class PostgresStore(Store):
    tx_class: type[PostgresTx] = PostgresTx  # benchmarks/pg_serialization.py times the tail

    def __init__(self, url: str, clock: Callable[[], float], *, pool_size: int = 16) -> None:
        super().__init__(clock)
        assert pool_size >= 1, "pool_size must be at least 1"
        self.url = url
        self.channel = self._migrate()
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="waypost-origin",
        )
        self.pool.open(wait=True, timeout=30.0)
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._wake = f"waypost_stop_{secrets.token_hex(6)}"
        self._listener: threading.Thread | None = None

    def _connect(self) -> Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def _migrate(self) -> str:
        """Bring the schema up to date; return the NOTIFY channel of the schema it is in."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
                _apply_migrations(conn)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('epoch', %s) ON CONFLICT (key) DO NOTHING",
                    (new_epoch(),),
                )
                row = conn.execute("SELECT current_schema()").fetchone()
            except BaseException:
                _end(conn, ok=False)
                raise
            _end(conn, ok=True)
        assert row is not None and row[0], f"no schema to create tables in at {_redacted(self.url)}"
        return channel_for(str(row[0]))

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            tx = self.tx_class(conn, self.clock())
            try:
                yield tx
                tx.flush_changes()
                if tx.committed_heads:  # delivered at COMMIT, in commit order
                    heads = json.dumps(tx.committed_heads)
                    conn.execute("SELECT pg_notify(%s, %s)", (self.channel, heads))
            except BaseException:
                _end(conn, ok=False)
                raise
            _end(conn, ok=True)
        self._committed(tx.committed_heads)

    @contextmanager
    def reader(self) -> Iterator[Tx]:
        with self.pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            ok = False
            try:
                yield PostgresTx(conn, self.clock())
                ok = True
            finally:
                _end(conn, ok)

    @contextmanager
    def stream_reader(self) -> Iterator[Tx]:
        # Its own connection: a slow snapshot download must not hold one of the pool's.
        with self._connect() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            tx = PostgresTx(conn, self.clock(), server_cursors=True)
            ok = False
            try:
                yield tx
                ok = True
            finally:
                if ok:
                    tx.close_cursors()
                _end(conn, ok)

    # -- LISTEN/NOTIFY ----------------------------------------------------------------------

    def on_commit(self, listener: Callable[[dict[str, int]], None]) -> None:
        super().on_commit(listener)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="waypost-pg-listen", daemon=True)
            self._listener.start()
            if not self._listening.wait(timeout=30.0):
                raise RuntimeError(f"could not LISTEN on {self.channel} at {_redacted(self.url)}")

    def _listen(self) -> None:
        """Hand every commit, made through any process, to this store's commit listeners."""
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._wake)))
                    if self._stop.is_set():
                        return
                    rows = conn.execute("SELECT bucket, head FROM bucket").fetchall()
                    self._notify_listeners({str(b): int(h) for b, h in rows})
                    self._listening.set()
                    for note in conn.notifies():
                        if note.channel == self._wake:
                            return
                        self._notify_listeners(_decode_heads(note.payload))
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                log.warning("LISTEN %s lost (%s); reconnecting", self.channel, exc)
                self._stop.wait(1.0)

    def _notify_listeners(self, heads: dict[str, int]) -> None:
        try:
            self._committed(heads)
        except Exception:  # a failing listener must not stop the others from waking
            log.exception("a commit listener failed")

    # -- backup and restore -----------------------------------------------------------------

    def backup(self, dest: Path) -> None:
        """Write every table, read in one snapshot, to `dest` (see the module docstring)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        with self._connect() as conn, partial.open("wb") as out:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                row = conn.execute("SELECT MAX(version) FROM schema_migration").fetchone()
                epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
                columns = {t: _columns(conn, t) for t in TABLES}
                header = {
                    "version": int(row[0]) if row and row[0] is not None else 0,
                    "epoch": epoch[0] if epoch else None,
                    "tables": columns,
                }
                out.write(BACKUP_MAGIC)
                _write_frame(out, json.dumps(header).encode())
                for table, cols in columns.items():
                    with conn.cursor().copy(_copy(table, cols, "TO STDOUT")) as copy:
                        for data in copy:
                            _write_frame(out, bytes(data))
                    _write_frame(out, b"")
            finally:
                _end(conn, ok=True)
        partial.replace(dest)

    def restore(self, src: Path) -> str:
        """Replace every table with the backup at `src`, under a new epoch; stop the origins first."""
        if not src.is_file():
            raise FileNotFoundError(f"no backup at {src}")
        epoch = new_epoch()
        with src.open("rb") as f, self._connect() as conn:
            if f.read(len(BACKUP_MAGIC)) != BACKUP_MAGIC:
                raise ValueError(f"{src} is not a waypost PostgreSQL backup")
            header = json.loads(_read_frame(f, src))
            version = int(header["version"])
            if version > len(MIGRATIONS):
                raise ValueError(
                    f"{src} has schema version {version}; this build knows up to {len(MIGRATIONS)}"
                )
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
                dropped = sql.SQL(", ").join(sql.Identifier(t) for t in (*TABLES, "schema_migration"))
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(dropped))
                _apply_migrations(conn, version)
                for table, cols in header["tables"].items():
                    with conn.cursor().copy(_copy(table, cols, "FROM STDIN")) as copy:
                        while data := _read_frame(f, src):
                            copy.write(data)
                _apply_migrations(conn)
                conn.execute("UPDATE meta SET value = %s WHERE key = 'epoch'", (epoch,))
            except BaseException:
                _end(conn, ok=False)
                raise
            _end(conn, ok=True)
        return epoch

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            try:
                with self.pool.connection(timeout=5.0) as conn:
                    conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(self._wake)))
            except psycopg.Error:
                log.warning("could not wake the LISTEN thread", exc_info=True)
            self._listener.join(timeout=5.0)
        self.pool.close()


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//…@", url)


def _columns(conn: Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _copy(table: str, cols: list[str], direction: str) -> sql.Composed:
    return sql.SQL("COPY {} ({}) {} (FORMAT binary)").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(direction),  # one of two constants, never input
    )


def _write_frame(out: BinaryIO, data: bytes) -> None:
    out.write(struct.pack(">I", len(data)))
    out.write(data)


def _read_frame(f: BinaryIO, src: Path) -> bytes:
    size = f.read(4)
    if len(size) != 4:
        raise ValueError(f"{src} ends early: the backup is truncated")
    (n,) = struct.unpack(">I", size)
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{src} ends early: the backup is truncated")
    return data
