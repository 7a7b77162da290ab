"""The origin's store: one interface, two backends (SQLite embedded, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from origin.store.base import FeedSlice, Store, Tx, ensure_bucket

__all__ = ["FeedSlice", "Store", "Tx", "ensure_bucket", "open_store"]


def open_store(url: str | None, data_dir: Path, clock: Callable[[], float]) -> Store:
    """Open (and migrate) the store: `url` names PostgreSQL, else DIR's SQLite file."""
    if url and url.startswith(("postgresql://", "postgres://")):
        from origin.store.postgres import PostgresStore

        return PostgresStore(url, clock)
    from origin.store.sqlite import SQLiteStore

    path = Path(url.removeprefix("sqlite:///")) if url else data_dir / "origin.sqlite3"
    return SQLiteStore(path, clock)
