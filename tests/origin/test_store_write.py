"""`SQLiteStore.write`: on the event loop when the writer is free, never blocking it when not."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from origin.store.base import Tx
from origin.store.sqlite import SQLiteStore


def _count(tx: Tx) -> int:
    row = tx.one("SELECT count(*) FROM meta WHERE key LIKE 'test-%'")
    assert row is not None
    return int(row[0])


def _put(key: str) -> Callable[[Tx], int]:
    def work(tx: Tx) -> int:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, threading.current_thread().name))
        return threading.get_ident()

    return work


def test_a_free_writer_writes_on_the_loop_itself(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "origin.sqlite3", time.time)
    try:

        async def main() -> tuple[int, int]:
            return threading.get_ident(), await store.write(_put("test-1"))

        loop_thread, ran_on = asyncio.run(main())
        assert ran_on == loop_thread
        with store.reader() as r:
            assert _count(r) == 1
    finally:
        store.close()


def _while_busy(store_write_blocked_by: str, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "origin.sqlite3", time.time)
    other_done = threading.Event()
    release = threading.Event()
    holding = threading.Event()

    def other_process() -> None:  # a second origin process on the same file
        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO meta (key, value) VALUES ('test-other', 'x')")
        holding.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()
        other_done.set()

    def other_thread() -> None:  # e.g. the webhook writer, in a long transaction
        with store.transaction() as tx:
            tx.execute("INSERT INTO meta (key, value) VALUES ('test-other', 'x')")
            holding.set()
            release.wait(10)
        other_done.set()

    holder = threading.Thread(target=other_process if store_write_blocked_by == "process" else other_thread)
    holder.start()
    assert holding.wait(10)
    try:

        async def main() -> tuple[int, int, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    if ticks == 20:
                        release.set()  # the loop kept running while the write waited: let it go
                    await asyncio.sleep(0.001)

            t = asyncio.create_task(ticker())
            ran_on = await store.write(_put("test-mine"))
            t.cancel()
            return threading.get_ident(), ran_on, ticks

        loop_thread, ran_on, ticks = asyncio.run(main())
        assert ticks >= 20  # the write finished only after the other writer let go
        assert ran_on != loop_thread  # it waited in a worker thread
        assert other_done.wait(10)
        with store.reader() as r:
            assert _count(r) == 2  # both writes committed
    finally:
        release.set()
        holder.join(10)
        store.close()


def test_a_write_waits_for_another_process_in_a_worker_thread(tmp_path: Path) -> None:
    _while_busy("process", tmp_path)


def test_a_write_waits_for_another_thread_in_a_worker_thread(tmp_path: Path) -> None:
    _while_busy("thread", tmp_path)
