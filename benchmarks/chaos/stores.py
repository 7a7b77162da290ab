"""Read-only looks at the origin's store, the edge's replica and the edge's decision file.

The checks read the files and tables the services wrote, not the services' answers about
them: a service that lost a write cannot vouch for it. Each `snapshot()` is one read
transaction, so everything it returns is one consistent state. The origin's store is read
through SQLite (`mode=ro`) or PostgreSQL (a read-only repeatable-read transaction); nothing
here opens it the way `origin.store.open_store` does, which would migrate it and start a
checkpointer beside the running origin.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from sync import checksum as cks
from sync.bodies import unpack


class Query(Protocol):
    def __call__(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@contextlib.contextmanager
def sqlite_snapshot(path: Path) -> Iterator[Query]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN")

        def query(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            return db.execute(sql, tuple(params)).fetchall()

        yield query
        db.execute("ROLLBACK")
    finally:
        db.close()


@contextlib.contextmanager
def postgres_snapshot(url: str) -> Iterator[Query]:
    import psycopg

    from origin.store.postgres import to_pg

    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction(force_rollback=True):

            def query(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return [tuple(row) for row in conn.execute(to_pg(sql).encode(), tuple(params)).fetchall()]

            yield query


def origin_snapshot(store_url: str | None, data_dir: Path) -> contextlib.AbstractContextManager[Query]:
    if store_url and store_url.startswith(("postgresql://", "postgres://")):
        return postgres_snapshot(store_url)
    return sqlite_snapshot(data_dir / "origin.sqlite3")


def bucket_sums(q: Query, buckets: Sequence[str], *, packed: bool = False) -> dict[str, int]:
    """Each bucket's checksum recomputed from the stored bodies (API.md's recipe), never from a
    stored hash. `packed`: the edge's replica, which keeps shipments and orders deflated
    (`sync.bodies`); unpacked they must be the exact bytes the origin shipped."""
    sums: dict[str, int] = {}
    where = f" WHERE bucket IN ({', '.join('?' * len(buckets))})"
    for bucket, kind, key, body in q(f"SELECT bucket, kind, key, body FROM entity{where}", buckets):
        raw = unpack(bytes(body)) if packed else bytes(body)
        sums[bucket] = cks.add(sums.get(bucket, 0), cks.entity_hash(kind, key, raw))
    return sums


def unsigned(v: int) -> int:
    return v & cks.MASK
