"""The edge's in-memory read model: each entity kept as its encoded bytes, plus a few views.

Pages decode a shipment when they render it; holding bytes rather than objects keeps a region
of a million shipments within memory, and shipments and orders are kept packed (`sync.bodies`).
It changes only after the replica committed, and a re-bootstrapped bucket is swapped in whole.

A `View` keeps something derived from one kind of entity up to date as changes arrive (the
orders of each customer, stock per sku across the region), so a page or a decision never scans
a table. Views see every put with the body it replaces, and are rebuilt when a bucket is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sync.bodies import unpack
from sync.entities import ChangeKinds, decode_entity
from sync.replica import Applied

Table = dict[str, bytes]


class View:
    """Derived state over one kind; subclasses add and remove one entity at a time."""

    kind: str

    def reset(self) -> None:
        raise NotImplementedError

    def add(self, key: str, entity: Any) -> None:
        raise NotImplementedError

    def remove(self, key: str, entity: Any) -> None:
        raise NotImplementedError


class ReadModel:
    def __init__(self, views: Iterable[View] = ()) -> None:
        # bucket → kind → key → body
        self._buckets: dict[str, dict[str, Table]] = {}
        self._views: dict[str, list[View]] = {}
        for view in views:
            self.watch(view)

    def watch(self, view: View) -> None:
        """Keep `view` up to date from now on (add views before the replica is loaded)."""
        self._views.setdefault(view.kind, []).append(view)

    def table(self, bucket: str, kind: str) -> Table:
        """A kind's bodies as stored: packed for `sync.bodies.PACKED_KINDS` (use `get` for those)."""
        return self._buckets.setdefault(bucket, {}).setdefault(kind, {})

    def get(self, bucket: str, kind: str, key: str) -> bytes | None:
        """An entity's MessagePack body, unpacked."""
        stored = self._buckets.get(bucket, {}).get(kind, {}).get(key)
        return None if stored is None else unpack(stored)

    def count(self, bucket: str, kind: str) -> int:
        return len(self._buckets.get(bucket, {}).get(kind, {}))

    def apply(self, bucket: str, applied: Iterable[Applied]) -> None:
        kinds = self._buckets.setdefault(bucket, {})
        for a in applied:
            table = kinds.setdefault(a.kind, {})
            views = self._views.get(a.kind)
            old = table.get(a.key)
            if views and old is not None:
                entity = decode_entity(a.kind, unpack(old))
                for v in views:
                    v.remove(a.key, entity)
            if a.body is None:
                table.pop(a.key, None)
            else:
                table[a.key] = a.body
                if views:
                    entity = decode_entity(a.kind, unpack(a.body))
                    for v in views:
                        v.add(a.key, entity)

    def replace_bucket(self, bucket: str, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Build a bucket's tables aside, then swap them in with one assignment."""
        kinds: dict[str, Table] = {}
        for kind, key, body in rows:
            kinds.setdefault(kind, {})[key] = body
        self._buckets[bucket] = kinds
        for kind, views in self._views.items():
            if kind in kinds:
                for v in views:
                    v.reset()
                for key, body in kinds[kind].items():
                    entity = decode_entity(kind, unpack(body))
                    for v in views:
                        v.add(key, entity)


class CustomerOrders(View):
    """customer_ref → the ids of that customer's orders in the region."""

    kind = ChangeKinds.ORDER

    def __init__(self) -> None:
        self.by_customer: dict[str, set[str]] = {}

    def reset(self) -> None:
        self.by_customer = {}

    def add(self, key: str, entity: Any) -> None:
        self.by_customer.setdefault(entity.customer_ref, set()).add(key)

    def remove(self, key: str, entity: Any) -> None:
        self.by_customer.get(entity.customer_ref, set()).discard(key)


class RegionStock(View):
    """sku → (units available across the region's sites, sites with any available), and each
    site's available units by stock key (`site_id/sku`), decoded once as they arrive.

    `flips` counts skus going in or out of stock, so caches of what is in stock know when to
    forget."""

    kind = ChangeKinds.STOCK

    def __init__(self) -> None:
        self.by_sku: dict[str, tuple[int, int]] = {}
        self.at: dict[str, int] = {}
        self.flips = 0

    def reset(self) -> None:
        self.by_sku = {}
        self.at = {}
        self.flips += 1

    def _bump(self, sku: str, available: int, sign: int) -> None:
        units, sites = self.by_sku.get(sku, (0, 0))
        was = units > 0
        units += sign * available
        sites += sign * (1 if available > 0 else 0)
        self.by_sku[sku] = (units, sites)
        if was != (units > 0):
            self.flips += 1

    def add(self, key: str, entity: Any) -> None:
        self._bump(entity.sku, entity.available, +1)
        self.at[key] = entity.available

    def remove(self, key: str, entity: Any) -> None:
        self._bump(entity.sku, entity.available, -1)
        self.at.pop(key, None)


class HeldAtSite(View):
    """site_id → units held by live orders' reservations: the pick backlog the delivery model reads."""

    kind = ChangeKinds.RESERVATION

    def __init__(self) -> None:
        self.units: dict[str, int] = {}

    def reset(self) -> None:
        self.units = {}

    def _bump(self, entity: Any, sign: int) -> None:
        if entity.holds_an_order:
            self.units[entity.site_id] = self.units.get(entity.site_id, 0) + sign * sum(
                line.qty for line in entity.lines
            )

    def add(self, key: str, entity: Any) -> None:
        self._bump(entity, +1)

    def remove(self, key: str, entity: Any) -> None:
        self._bump(entity, -1)
