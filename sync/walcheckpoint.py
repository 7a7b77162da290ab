"""Checkpointing a SQLite WAL from a thread of its own.

Left to SQLite, the connection whose commit makes the log pass 1,000 pages copies the log into
the database and syncs it, inside that commit. Where commits run on an event loop (the edge's
decisions) or hold a lock other requests wait for (the origin's writer), that is a stall of
milliseconds every second or so under load: at 300 routing decisions/s the edge's
`decisions.sqlite3` checkpointed about every 0.4 s and the decision written before each hold
took 5–6 ms at p99.9 (0.6–1 ms once checkpointed here).

    wal = WalCheckpointer(path)   # after turning autocheckpoint off on every writing connection
    ...
    wal.stop()

A PASSIVE checkpoint never waits for readers or writers; it copies what it can and the next
one copies the rest.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("waypost.sqlite")

EVERY_S = 0.5


def autocheckpoint_off(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_autocheckpoint=0")


class WalCheckpointer:
    def __init__(self, path: Path, every_s: float = EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        self.rounds = 0
        # The last round's (busy, frames in the log, frames copied): the log was all copied
        # back when the last two are equal.
        self.last: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wal checkpoint {path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            while not self._stop.wait(self.every_s):
                try:
                    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.last = (busy, frames, copied)
                except sqlite3.Error as exc:  # e.g. busy: the next round copies what this missed
                    log.warning("checkpointing %s: %s", self.path.name, exc)
                self.rounds += 1
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop checkpointing (closing the file's last connection checkpoints what is left)."""
        self._stop.set()
        self._thread.join(timeout=10)
