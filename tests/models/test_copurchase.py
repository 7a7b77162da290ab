from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.copurchase import Basket, copurchase_table, replenishment_days

DAY0 = datetime(2031, 1, 5, 10, tzinfo=UTC)


def at(days: float) -> datetime:
    return DAY0 + timedelta(days=days)


# A: in 3 baskets, B: 2, C: 3. Together: A+B twice, A+C once. Then (within 30 days, once per
# customer): c1 bought A and B, then C three days later; c2's C came 40 days later (too late).
HISTORY = [
    Basket("c1", at(0), ("A", "B")),
    Basket("c1", at(3), ("C",)),
    Basket("c2", at(0), ("B", "A")),
    Basket("c2", at(40), ("C",)),
    Basket("c3", at(1), ("A", "C")),
]


def test_scores_are_damped_co_occurrence_plus_bought_then() -> None:
    table = copurchase_table(HISTORY)
    # A→B: 2 together / sqrt(3·2); A→C: (1 together + 0.5 · 1 then) / sqrt(3·3);
    # C→A: 1 together / 3 (C was never bought before A); B→C: 0.5 is below min_support.
    assert table == {
        "A": [("B", 0.816497), ("C", 0.5)],
        "B": [("A", 0.816497)],
        "C": [("A", 0.333333)],
    }


def test_support_threshold_damping_and_length_are_parameters() -> None:
    loose = copurchase_table(HISTORY, min_support=0.5)
    assert loose["B"] == [("A", 0.816497), ("C", 0.204124)]
    raw = copurchase_table(HISTORY, damping=0.0)
    assert raw["A"] == [("B", 2.0), ("C", 1.5)]
    assert copurchase_table(HISTORY, top=1)["A"] == [("B", 0.816497)]


def test_bought_then_counts_each_customer_once_and_respects_the_window() -> None:
    repeat = [
        Basket("c1", at(0), ("A",)),
        Basket("c1", at(1), ("A",)),
        Basket("c1", at(2), ("C",)),
        Basket("c1", at(2.5), ("C",)),
    ]
    # Together never; then: A→C once for c1 however often it happened; no self pairs.
    assert copurchase_table(repeat, min_support=0.1, damping=0.0) == {"A": [("C", 0.5)]}
    assert copurchase_table(repeat, within_days=0.5, min_support=0.1) == {}


def test_ties_rank_by_sku_and_the_table_is_deterministic() -> None:
    baskets = [Basket("c1", at(0), ("X", "Z", "Y"))]
    table = copurchase_table(baskets)
    assert table["X"] == [("Y", 1.0), ("Z", 1.0)]
    assert copurchase_table(reversed(baskets)) == table


def test_replenishment_days_is_the_median_gap_between_needs_per_category() -> None:
    baskets = [
        Basket("c1", at(0), ("coffee-1",)),
        Basket("c1", at(10), ("coffee-1",)),
        Basket("c1", at(24), ("coffee-1", "tee-1")),
        Basket("c2", at(0), ("coffee-1",)),
        Basket("c2", at(12), ("coffee-1",)),
        Basket("c3", at(0), ("coffee-1", "tee-2")),
        Basket("c3", at(1), ("coffee-1",)),  # a top-up, not a new need
        Basket("c3", at(11), ("coffee-1",)),
    ]
    category = {"coffee-1": "coffee", "tee-1": "apparel", "tee-2": "apparel"}
    # gaps 10, 14 (c1), 12 (c2), 11 (c3): median 11.5; tees are never bought again.
    assert replenishment_days(baskets, category, min_repeats=4) == {"coffee": 11.5}
    assert replenishment_days(baskets, category, min_repeats=5) == {}
    assert replenishment_days(baskets, category, min_repeats=1, top_up_days=0.5)["coffee"] == 10.0
    # 4 repeats out of 7 needs: a rhythm at a share of 0.5, not at 0.6.
    assert replenishment_days(baskets, category, min_repeats=1, min_repeat_share=0.6) == {}
