"""The WAL of a file whose writers never checkpoint is copied back by `WalCheckpointer`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sync.walcheckpoint import WalCheckpointer, autocheckpoint_off
from tests.conftest import wait_until

ROWS = 400  # about 400 pages of log per round


def _write_round(conn: sqlite3.Connection, start: int) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO t (id, body) VALUES (?, ?)", [(i, bytes(4000)) for i in range(start, start + ROWS)]
    )
    conn.execute("COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    autocheckpoint_off(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
    return conn


def test_the_log_stays_bounded_while_writes_go_on(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = _connect(path)
    wal = WalCheckpointer(path, every_s=0.01)
    try:
        sizes = []
        for n in range(5):
            _write_round(conn, n * ROWS)
            after = wal.rounds
            wait_until(
                lambda after=after: (
                    wal.rounds > after + 1 and wal.last is not None and wal.last[1] == wal.last[2]
                ),
                what="a checkpoint that copied the whole log",
            )
            sizes.append((tmp_path / "db.sqlite3-wal").stat().st_size)
        # Each round after the first reuses the log from its start: it stays about one round.
        assert max(sizes) < 1.5 * sizes[0], sizes
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 5 * ROWS
    finally:
        wal.stop()
        conn.close()


def test_without_it_the_log_keeps_every_round(tmp_path: Path) -> None:
    """The control: autocheckpoint off and nobody checkpointing, the log holds all five rounds."""
    path = tmp_path / "db.sqlite3"
    conn = _connect(path)
    try:
        sizes = []
        for n in range(5):
            _write_round(conn, n * ROWS)
            sizes.append((tmp_path / "db.sqlite3-wal").stat().st_size)
        assert sizes[-1] > 4 * sizes[0]
    finally:
        conn.close()
