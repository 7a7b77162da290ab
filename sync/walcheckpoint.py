"""Checkpointing a SQLite WAL from a thread of its own, and keeping the log from growing.

Left to SQLite, the connection whose commit makes the log pass 1,000 pages copies the log into
the database and syncs it, inside that commit. Where commits run on an event loop (the edge's
decisions) or hold a lock other requests wait for (the origin's writer), that is a stall of
milliseconds every second or so under load: at 300 routing decisions/s the edge's
`decisions.sqlite3` checkpointed about every 0.4 s and the decision written before each hold
took 5–6 ms at p99.9 (0.6–1 ms once checkpointed here).

    wal = WalCheckpointer(path, writer_lock)   # after turning autocheckpoint off on the writers
    ...
    wal.stop()

Each round runs two PASSIVE checkpoints. The first copies the bulk of the log beside the
writers (PASSIVE never waits for readers or writers). But SQLite starts the log over from its
beginning only when a write begins after a checkpoint that copied *every* frame, and under a
steady stream of writes a checkpoint running beside them never does: the origin's log grew
by 27 MB/s under the route benchmark (775 MB in 30 s), every write extending the file. So the
second checkpoint runs holding the writers' lock: it copies the few frames written meanwhile
(well under a millisecond, two fsyncs of ~0.15 ms here) and the next write restarts the log.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import weakref
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

log = logging.getLogger("waypost.sqlite")

EVERY_S = 0.5
_live: weakref.WeakSet[WalCheckpointer] = weakref.WeakSet()


def autocheckpoint_off(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_autocheckpoint=0")


class WalCheckpointer:
    """`writer_lock`: what every writer of this process holds while it writes (None: no
    catch-up round; the log may then only restart when writes pause)."""

    def __init__(
        self, path: Path, writer_lock: AbstractContextManager[Any] | None, every_s: float = EVERY_S
    ) -> None:
        self.path = path
        self.every_s = every_s
        self.writer_lock: AbstractContextManager[Any] = writer_lock or nullcontext()
        self.rounds = 0
        # The last round's (busy, frames in the log, frames copied): the log was all copied
        # back when the last two are equal.
        self.last: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wal checkpoint {path.name}", daemon=True)
        self._thread.start()
        _live.add(self)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            while not self._stop.wait(self.every_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the bulk, beside the writers
                    with self.writer_lock:  # the tail: then the next write restarts the log
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


@atexit.register
def _stop_all() -> None:
    """A file left open at exit: stop its thread before the interpreter is torn down around it."""
    for wal in list(_live):
        wal.stop()
