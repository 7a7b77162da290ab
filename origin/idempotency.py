"""Idempotency keys: a retried write gets the first response, never a second effect.

A key is claimed in a short transaction of its own (state `pending`); the write and the saving
of its response then happen in one transaction, so a response is saved exactly when the write
committed. A replay with the same body gets the saved status and body; the same key with another
body is 422; the same key while the first request is still running is 409. A claim left pending
by a crashed process can be taken over after `STALE_S`. A request refused as malformed (400)
saves nothing: it never ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from origin.errors import Conflict, InvalidInput, Unprocessable, WaypostError
from origin.store import Store, Tx
from sync.wire import to_json

STALE_S = 60.0
KEEP_S = 24 * 3600.0
MAX_KEY = 255


@dataclass(frozen=True)
class Outcome:
    status: int
    body: bytes
    replayed: bool = False


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(f"{method} {path}\n".encode() + body).hexdigest()


def claim(tx: Tx, key: str, fp: str) -> Outcome | None:
    """Claim `key` for this request; or return the saved outcome of its first use."""
    cur = tx.execute(
        "INSERT INTO idempotency (key, fingerprint, state, created_at) VALUES (?, ?, 'pending', ?)"
        " ON CONFLICT (key) DO NOTHING",
        (key, fp, tx.now),
    )
    if cur.rowcount == 1:
        return None
    row = tx.one("SELECT fingerprint, state, status, body, created_at FROM idempotency WHERE key = ?", (key,))
    assert row is not None
    if row[0] != fp:
        raise Unprocessable(
            f"Idempotency-Key {key!r} was used with another request", code="idempotency_mismatch"
        )
    if row[1] == "done":
        return Outcome(int(row[2]), bytes(row[3]), replayed=True)
    if tx.now - float(row[4]) < STALE_S:
        raise Conflict(f"a request with Idempotency-Key {key!r} is still in flight", code="in_flight")
    tx.execute("UPDATE idempotency SET created_at = ? WHERE key = ?", (tx.now, key))
    return None


def save(tx: Tx, key: str, status: int, body: bytes) -> None:
    tx.execute(
        "UPDATE idempotency SET state = 'done', status = ?, body = ? WHERE key = ?", (status, body, key)
    )


def run(store: Store, key: str | None, fp: str, work: Callable[[Tx], tuple[int, Any]]) -> Outcome:
    """Run `work` in a transaction at most once per key; runs in a worker thread."""
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise InvalidInput(f"Idempotency-Key must be 1..{MAX_KEY} characters", field="Idempotency-Key")
    if key is None:
        with store.transaction() as tx:
            status, body = work(tx)
        return Outcome(status, to_json(body))
    with store.transaction() as tx:
        saved = claim(tx, key, fp)
    if saved is not None:
        return saved
    try:
        with store.transaction() as tx:
            status, body = work(tx)
            encoded = to_json(body)
            save(tx, key, status, encoded)
        return Outcome(status, encoded)
    except InvalidInput:
        with store.transaction() as tx:
            tx.execute("DELETE FROM idempotency WHERE key = ? AND state = 'pending'", (key,))
        raise
    except WaypostError as exc:
        # The request ran and was refused (e.g. 409 insufficient stock): that is its answer.
        encoded = to_json(exc.body())
        with store.transaction() as tx:
            save(tx, key, exc.status, encoded)
        return Outcome(exc.status, encoded)
    except BaseException:
        with store.transaction() as tx:
            tx.execute("DELETE FROM idempotency WHERE key = ? AND state = 'pending'", (key,))
        raise


def forget_old(tx: Tx) -> int:
    cur = tx.execute("DELETE FROM idempotency WHERE created_at < ?", (tx.now - KEEP_S,))
    return int(cur.rowcount)
