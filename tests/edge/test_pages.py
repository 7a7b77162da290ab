"""A carrier webhook at the origin shows on the edge's tracking page: the whole slice."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Edge, Origin, wait_until
from tests.origin.test_webhooks import event, shipment_in


def test_webhook_status_reaches_the_edge_page(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url, "north")
    s = shipment_in(origin)
    page = edge.http.get(f"/track/{s.tracking_number}")
    assert page.status_code == 200 and s.tracking_number in page.text

    r = origin.webhook(
        event(
            s.tracking_number,
            status="exception",
            message="Parcel damaged, signed for by J SMITH",
            occurred_at="2031-01-02T09:00:00Z",
        )
    )
    assert r.status_code == 202

    def shows_exception() -> bool:
        return edge.http.get(f"/v1/track/{s.tracking_number}").json()["status"] == "exception"

    wait_until(shows_exception, what="the new status on the edge")
    html = edge.http.get(f"/track/{s.tracking_number}").text
    assert "There is a problem with this delivery" in html
    assert "Parcel damaged" in html and "SMITH" not in html
    assert '<html lang="en">' in html


def test_json_view(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url, "north")
    s = shipment_in(origin)
    body = edge.http.get(f"/v1/track/{s.tracking_number}").json()
    assert body["tracking_number"] == s.tracking_number
    assert body["status"] == s.status
    assert len(body["events"]) == len(s.events)
    assert body["data_age_s"] is not None and body["data_age_s"] >= 0


def test_unknown_numbers_get_a_friendly_404(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url, "north")
    r = edge.http.get("/track/NOPE12345")
    assert r.status_code == 404 and "couldn't find" in r.text
    assert edge.http.get("/v1/track/NOPE12345").status_code == 404


def test_an_edge_serves_only_its_region(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url, "north")
    south = shipment_in(origin, "south")
    assert edge.http.get(f"/track/{south.tracking_number}").status_code == 404


def test_sync_status_and_readiness(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url, "north")
    assert edge.http.get("/readyz").status_code == 200
    status = edge.status()
    assert set(status) == {"global", "region:north"}
    for st in status.values():
        assert st["checksum_ok"] is True and st["snapshots"] == 1 and st["last_error"] is None
    assert "waypost_sync_lag_seconds" in edge.http.get("/metrics").text


def test_a_restarted_edge_resumes_from_its_cursors_without_a_snapshot(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    first = start_edge(origin.url, "north", name="same-dir")
    cursor = first.status()["region:north"]["cursor"]
    first.http.close()
    first.server.__exit__()
    s = shipment_in(origin)
    assert origin.webhook(event(s.tracking_number, status="delivered")).status_code == 202
    again = start_edge(origin.url, "north", name="same-dir")
    status = again.status()
    assert status["region:north"]["snapshots"] == 0 and status["global"]["snapshots"] == 0
    wait_until(
        lambda: again.http.get(f"/v1/track/{s.tracking_number}").json()["status"] == "delivered",
        what="the change made while the edge was down",
    )
    assert again.status()["region:north"]["cursor"] == cursor + 1
