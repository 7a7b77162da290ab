"""The edge's in-memory read model: each entity kept as its encoded bytes.

Pages decode a shipment when they render it; holding bytes rather than objects keeps a region
of a million shipments within memory (about a kilobyte each). It changes only after the
replica committed, and a re-bootstrapped bucket is swapped in whole.
"""

from __future__ import annotations

from collections.abc import Iterable

from sync.replica import Applied

Table = dict[str, bytes]


class ReadModel:
    def __init__(self) -> None:
        # bucket → kind → key → body
        self._buckets: dict[str, dict[str, Table]] = {}

    def table(self, bucket: str, kind: str) -> Table:
        return self._buckets.setdefault(bucket, {}).setdefault(kind, {})

    def get(self, bucket: str, kind: str, key: str) -> bytes | None:
        return self._buckets.get(bucket, {}).get(kind, {}).get(key)

    def count(self, bucket: str, kind: str) -> int:
        return len(self._buckets.get(bucket, {}).get(kind, {}))

    def apply(self, bucket: str, applied: Iterable[Applied]) -> None:
        kinds = self._buckets.setdefault(bucket, {})
        for a in applied:
            table = kinds.setdefault(a.kind, {})
            if a.body is None:
                table.pop(a.key, None)
            else:
                table[a.key] = a.body

    def replace_bucket(self, bucket: str, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Build a bucket's tables aside, then swap them in with one assignment."""
        kinds: dict[str, Table] = {}
        for kind, key, body in rows:
            kinds.setdefault(kind, {})[key] = body
        self._buckets[bucket] = kinds
