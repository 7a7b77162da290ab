"""The WAL of a file whose writers never checkpoint is copied back, and restarted, by
`WalCheckpointer` — also while writes never pause."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sync.walcheckpoint import WalCheckpointer, autocheckpoint_off
from tests.conftest import wait_until

ROWS = 100  # about 100 pages of log per write


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    autocheckpoint_off(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
    return conn


def _write(conn: sqlite3.Connection, start: int) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO t (id, body) VALUES (?, ?)", [(i, bytes(4000)) for i in range(start, start + ROWS)]
    )
    conn.execute("COMMIT")


def _wal_size(path: Path) -> int:
    return (path.parent / (path.name + "-wal")).stat().st_size


def test_under_a_steady_stream_of_writes_the_log_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = _connect(path)
    lock = threading.Lock()
    wal = WalCheckpointer(path, lock, every_s=0.005)
    try:
        _write(conn, 0)
        one_write = _wal_size(path)
        writes = 1
        # Write without pausing until the checkpointer has had 20 rounds (at least 100 writes).
        while wal.rounds < 20 or writes < 100:
            with lock:
                _write(conn, writes * ROWS)
            writes += 1
            time.sleep(0)  # let the checkpointer have the lock now and then, as requests do
        total = writes * one_write
        assert _wal_size(path) < total / 4, (_wal_size(path), total, wal.rounds)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == writes * ROWS
    finally:
        wal.stop()
        conn.close()


def test_a_round_copies_the_whole_log_back(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = _connect(path)
    wal = WalCheckpointer(path, None, every_s=0.01)
    try:
        _write(conn, 0)
        after = wal.rounds
        wait_until(
            lambda: wal.rounds > after + 1 and wal.last is not None and wal.last[1] == wal.last[2] > 0,
            what="a checkpoint that copied every frame",
        )
        reader = sqlite3.connect(path)
        assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == ROWS
        reader.close()
    finally:
        wal.stop()
        conn.close()
