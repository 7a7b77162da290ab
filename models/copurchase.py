"""The co-purchase table: for each product, the products its buyers also buy.

Two signals from order history, per pair of distinct skus (x, y):

- **together**: the number of baskets holding both;
- **then**: the number of customers who bought y in a later basket within `within_days` of a
  basket holding x ("bought X, then Y within N days"; counted once per customer).

Their weighted sum w(x, y) = together + `then_weight` · then is damped by both products'
popularity — score = w / (n(x) · n(y)) ** `damping`, with n the number of baskets holding a sku
(0.5 is the cosine of the two products' basket vectors) — so a bestseller does not top every
list. Pairs below `min_support` are dropped; each sku keeps its `top` best, by score, then sku.

`replenishment_days` estimates how often a category is re-bought from the same history. Both
are pure functions: the origin runs them when seeding and on a schedule.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol


class Basket(NamedTuple):
    """One order, as the co-purchase table sees it."""

    customer: str  # any stable key for the customer: an id or a pseudonymous ref
    placed_at: datetime
    skus: tuple[str, ...]


class _Line(Protocol):
    @property
    def sku(self) -> str: ...


class _Customer(Protocol):
    @property
    def customer_id(self) -> str: ...


class _Order(Protocol):
    @property
    def customer(self) -> _Customer: ...
    @property
    def placed_at(self) -> datetime: ...
    @property
    def lines(self) -> Sequence[_Line]: ...


Table = dict[str, list[tuple[str, float]]]


def baskets_from_orders(orders: Iterable[_Order]) -> list[Basket]:
    """Baskets from `models.world.Order`s (or anything shaped like them)."""
    return [Basket(o.customer.customer_id, o.placed_at, tuple(line.sku for line in o.lines)) for o in orders]


def copurchase_table(
    baskets: Iterable[Basket],
    *,
    within_days: float = 30.0,
    then_weight: float = 0.5,
    damping: float = 0.5,
    min_support: float = 1.0,
    top: int = 20,
) -> Table:
    """sku → [(related sku, score)], best first, at most `top` long."""
    assert top >= 1, "top must be at least 1"
    assert 0 <= damping <= 1, "damping is an exponent between 0 and 1"
    seen: Counter[str] = Counter()
    weight: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_customer: defaultdict[str, list[tuple[datetime, frozenset[str]]]] = defaultdict(list)
    for basket in baskets:
        skus = frozenset(basket.skus)
        seen.update(skus)
        for x in skus:
            row = weight[x]
            for y in skus:
                if y != x:
                    row[y] += 1.0
        by_customer[basket.customer].append((basket.placed_at, skus))

    window = timedelta(days=within_days)
    for history in by_customer.values():
        history.sort(key=lambda entry: entry[0])
        pairs: set[tuple[str, str]] = set()
        for j, (at, skus) in enumerate(history):
            for later_at, later in history[j + 1 :]:
                if later_at - at > window:
                    break
                if later_at == at:
                    continue
                pairs.update((x, y) for x in skus for y in later if y != x)
        for x, y in pairs:
            weight[x][y] += then_weight

    table: Table = {}
    for x in sorted(weight):
        scored = [
            (y, round(w / (seen[x] * seen[y]) ** damping, 6))
            for y, w in weight[x].items()
            if w >= min_support
        ]
        scored.sort(key=lambda item: (-item[1], item[0]))
        if scored:
            table[x] = scored[:top]
    return table


def replenishment_days(
    baskets: Iterable[Basket],
    category_of: Mapping[str, str],
    *,
    top_up_days: float = 3.0,
    min_repeats: int = 20,
    min_repeat_share: float = 0.1,
) -> dict[str, float]:
    """category → the median days between a customer's purchases of the same sku.

    Buying the same sku again within `top_up_days` is a top-up of the same need, not a new one.
    A category is left out when it has fewer than `min_repeats` repeat purchases, or when fewer
    than `min_repeat_share` of its purchases are repeats: it is not bought on a rhythm.
    """
    last: dict[tuple[str, str], datetime] = {}
    needs: Counter[str] = Counter()
    gaps: defaultdict[str, list[float]] = defaultdict(list)
    for basket in sorted(baskets, key=lambda b: b.placed_at):
        for sku in set(basket.skus):
            key, category = (basket.customer, sku), category_of[sku]
            days = (basket.placed_at - last[key]).total_seconds() / 86400 if key in last else None
            if days is not None and days < top_up_days:
                continue
            needs[category] += 1
            if days is not None:
                gaps[category].append(days)
            last[key] = basket.placed_at
    return {
        category: round(statistics.median(days), 3)
        for category, days in sorted(gaps.items())
        if len(days) >= min_repeats and len(days) >= min_repeat_share * needs[category]
    }
