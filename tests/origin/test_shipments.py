"""The status rule: latest event by (occurred_at, received), late events, duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from origin.shipments import TrackingEvent, merge_event
from sync.entities import Shipment

T0 = datetime(2031, 1, 1, 10, 0, tzinfo=UTC)


def empty() -> Shipment:
    return Shipment(
        tracking_number="1Z1",
        carrier="ups",
        order_id="o1",
        site_id="s1",
        status="pending",
        eta=None,
        events=[],
        updated_at=T0,
        version=1,
    )


def ev(status: str, at: datetime, location: str = "Hub", eta: datetime | None = None) -> TrackingEvent:
    return TrackingEvent(
        tracking_number="1Z1",
        carrier="ups",
        status=status,
        message=status,
        location=location,  # type: ignore[arg-type]
        occurred_at=at,
        eta=eta,
    )


def apply(s: Shipment, e: TrackingEvent, received: datetime) -> Shipment:
    out = merge_event(s, e, received)
    assert out is not None
    return out


def test_status_follows_the_latest_event_by_occurrence() -> None:
    s = apply(empty(), ev("in_transit", T0), T0)
    s = apply(s, ev("out_for_delivery", T0 + timedelta(hours=2)), T0 + timedelta(hours=2))
    assert s.status == "out_for_delivery"
    assert [e.status for e in s.events] == ["in_transit", "out_for_delivery"]


def test_a_late_event_joins_the_timeline_but_never_changes_the_status() -> None:
    s = apply(empty(), ev("out_for_delivery", T0 + timedelta(hours=2)), T0 + timedelta(hours=2))
    late = apply(s, ev("in_transit", T0), T0 + timedelta(hours=3))
    assert late.status == "out_for_delivery"
    assert [e.status for e in late.events] == ["in_transit", "out_for_delivery"]
    assert late.version == s.version + 1


def test_same_occurrence_time_breaks_ties_by_receipt() -> None:
    s = apply(empty(), ev("out_for_delivery", T0), T0 + timedelta(minutes=1))
    s = apply(s, ev("delivered", T0), T0 + timedelta(minutes=2))
    assert s.status == "delivered"


def test_a_duplicate_is_one_event_and_changes_nothing() -> None:
    s = apply(empty(), ev("in_transit", T0, location="Hub A"), T0)
    assert merge_event(s, ev("in_transit", T0, location="Hub A"), T0 + timedelta(minutes=5)) is None
    other_place = merge_event(s, ev("in_transit", T0, location="Hub B"), T0 + timedelta(minutes=5))
    assert other_place is not None and len(other_place.events) == 2


def test_eta_comes_from_the_latest_event_that_gives_one() -> None:
    eta1 = T0 + timedelta(days=2)
    eta2 = T0 + timedelta(days=1)
    s = apply(empty(), ev("in_transit", T0 + timedelta(hours=1), eta=eta1), T0)
    assert s.eta == eta1
    late = apply(s, ev("info_received", T0, eta=eta2), T0 + timedelta(hours=2))
    assert late.eta == eta1, "a late event's ETA is stale"
    newer = apply(late, ev("out_for_delivery", T0 + timedelta(hours=5), eta=eta2), T0 + timedelta(hours=5))
    assert newer.eta == eta2
