"""Idempotency keys: a retried write gets the first response, never a second effect.

A key is claimed, the write made and its response saved in one transaction, so a response is
saved exactly when the write committed, and a concurrent request with the same key waits for
that commit and replays it. (Claiming in a transaction of its own cost every hold a second
commit.) A replay with the same body gets the saved status and body; the same key with another
body is 422. A claim committed `pending` — by an origin from before this change, or by another
process — answers 409 `in_flight` until it is `STALE_S` old, then is taken over. A request
refused as malformed (400) saves nothing: it never ran.
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


async def run(store: Store, key: str | None, fp: str, work: Callable[[Tx], tuple[int, Any]]) -> Outcome:
    """Run `work` in a transaction at most once per key (`Store.write`: off the event loop or
    briefly on it)."""
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise InvalidInput(f"Idempotency-Key must be 1..{MAX_KEY} characters", field="Idempotency-Key")
    if key is None:
        status, body = await store.write(work)
        return Outcome(status, to_json(body))
    return await store.write(lambda tx: once(tx, key, fp, work))


def once(tx: Tx, key: str, fp: str, work: Callable[[Tx], tuple[int, Any]]) -> Outcome:
    # The claim, the write and its saved response in one transaction: a second request with the
    # key waits for it (SQLite's write lock, PostgreSQL's unique index) and then finds the
    # response. Only a crashed claim from an older origin is ever seen `pending`.
    saved = claim(tx, key, fp)  # or 422 idempotency_mismatch / 409 in_flight: nothing runs
    if saved is not None:
        return saved
    try:
        with tx.savepoint():
            status, body = work(tx)
        encoded = to_json(body)
    except InvalidInput:
        raise  # malformed: it never ran, and the claim rolls back with the transaction
    except WaypostError as exc:
        # It ran and was refused (e.g. 409 insufficient stock): its writes are undone and
        # the refusal is its answer.
        status, encoded = exc.status, to_json(exc.body())
    save(tx, key, status, encoded)
    return Outcome(status, encoded)


def forget_old(tx: Tx) -> int:
    cur = tx.execute("DELETE FROM idempotency WHERE created_at < ?", (tx.now - KEEP_S,))
    return int(cur.rowcount)
