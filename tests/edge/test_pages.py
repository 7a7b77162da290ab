"""A carrier webhook at the origin shows on the edge's tracking page: the whole slice."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC
from typing import Any

import httpx
import pytest

from sync.bodies import unpack
from tests.conftest import Edge, Origin, OriginProxy, ServerThread, wait_until
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
        body = edge.http.get(f"/v1/track/{s.tracking_number}").json()
        return bool(body["status"] == "exception" and "Parcel damaged" in body["events"][0]["message"])

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
    assert r.status_code == 404 and "find that parcel" in r.text
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
    r = origin.webhook(event(s.tracking_number, status="exception", message="Made while the edge was down"))
    assert r.status_code == 202
    again = start_edge(origin.url, "north", name="same-dir")
    status = again.status()
    assert status["region:north"]["snapshots"] == 0 and status["global"]["snapshots"] == 0
    wait_until(
        lambda: "Made while the edge was down" in again.http.get(f"/v1/track/{s.tracking_number}").text,
        what="the change made while the edge was down",
    )
    assert again.status()["region:north"]["cursor"] == cursor + 1


# -- the shopper's page: unlocking, languages, caching, outages, privacy ------------------

POSTCODE = "20457"


def unlockable(origin: Origin, tn: str = "WPUNLOCK0001", order_id: str = "o-unlock") -> str:
    """An order with a postcode and its shipment, registered at the origin."""
    lines = [{"sku": origin.world.products[0].sku, "qty": 1}, {"sku": origin.world.products[1].sku, "qty": 2}]
    assert origin.place_order(order_id, lines=lines, postcode=POSTCODE).status_code == 201
    r = origin.http.post(
        "/v1/shipments",
        json={"tracking_number": tn, "carrier": "dhl", "order_id": order_id, "site_id": "north-warehouse-3"},
        headers=origin.admin(),
    )
    assert r.status_code == 201, r.text
    return tn


def wait_for(edge: Edge, tn: str) -> None:
    wait_until(lambda: edge.http.get(f"/v1/track/{tn}").status_code == 200, what=f"{tn} on the edge")


def test_the_right_postcode_unlocks_order_details_with_a_scoped_cookie(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    tn = unlockable(origin)
    edge = start_edge(origin.url, returns_url="https://shop.example/returns")
    wait_for(edge, tn)
    locked = edge.http.get(f"/track/{tn}")
    assert 'name="postcode"' in locked.text and origin.world.products[1].name not in locked.text
    r = edge.http.post(f"/track/{tn}/unlock", data={"postcode": "20 457"}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "wp_unlock=" in cookie and f"Path=/track/{tn}" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = edge.http.get(f"/track/{tn}")
    assert f"2 × {origin.world.products[1].name}" in page.text
    assert "Hamburg" in page.text and "https://shop.example/returns" in page.text
    assert 'name="postcode"' not in page.text
    # The cookie is scoped to this shipment: another parcel stays locked.
    other = edge.http.get(f"/track/{shipment_in(origin).tracking_number}")
    assert "Your order" not in other.text


def test_a_wrong_postcode_is_refused_and_attempts_are_throttled(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    tn = unlockable(origin)
    edge = start_edge(origin.url, unlock_rate=6.0)  # a bucket of 5 attempts
    wait_for(edge, tn)
    for _ in range(5):
        r = edge.http.post(f"/track/{tn}/unlock", data={"postcode": "99999"}, follow_redirects=False)
        assert (
            r.status_code == 403
            and "doesn&#39;t match" in r.text
            and "wp_unlock" not in r.headers.get("set-cookie", "")
        )
    r = edge.http.post(f"/track/{tn}/unlock", data={"postcode": POSTCODE}, follow_redirects=False)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "Your order" not in r.text
    edge.settings.clock.advance(120)  # type: ignore[attr-defined]
    r = edge.http.post(f"/track/{tn}/unlock", data={"postcode": POSTCODE}, follow_redirects=False)
    assert r.status_code == 303


def test_a_signed_link_unlocks_until_it_expires_and_a_tampered_one_never(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    tn = unlockable(origin)
    edge = start_edge(origin.url)
    wait_for(edge, tn)
    url = origin.http.post(
        "/v1/links", json={"tracking_number": tn, "days": 1}, headers=origin.admin()
    ).json()["url"]
    assert url.startswith(f"/track/{tn}?t=")
    page = edge.http.get(url)
    assert "Your order" in page.text and "wp_unlock=" in page.headers["set-cookie"]
    token = url.split("t=")[1]
    fresh = httpx_client(edge)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert "Your order" not in fresh.get(f"/track/{tn}?t={tampered}").text
    assert "Your order" not in fresh.get(f"/track/WPOTHER0001?t={token}").text
    origin.clock.advance(2 * 86400)
    assert "Your order" not in fresh.get(url).text, "an expired link no longer unlocks"
    fresh.close()


def httpx_client(edge: Edge) -> httpx.Client:
    return httpx.Client(base_url=edge.url, timeout=30)


@pytest.mark.parametrize(
    ("how", "lang", "words"),
    [
        ({"params": {"lang": "de"}}, "de", "Sendungsverlauf"),
        ({"headers": {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}}, "fr", "Parcours"),
        ({"headers": {"Accept-Language": "es, de;q=0.5"}}, "de", "Sendungsverlauf"),
        ({"headers": {"Accept-Language": "ja"}}, "en", "Journey"),
        ({"cookie": "fr", "headers": {"Accept-Language": "de"}}, "fr", "Parcours"),
    ],
)
def test_the_language_follows_the_query_then_cookie_then_accept_language(
    origin: Origin, start_edge: Callable[..., Edge], how: dict[str, Any], lang: str, words: str
) -> None:
    edge = start_edge(origin.url)
    s = shipment_in(origin)
    client = httpx_client(edge)
    if "cookie" in how:
        client.cookies.set("wp_lang", how.pop("cookie"))
    r = client.get(f"/track/{s.tracking_number}", **how)
    client.close()
    assert f'<html lang="{lang}">' in r.text and words in r.text
    if "params" in how:
        assert "wp_lang=de" in r.headers["set-cookie"]


def test_dates_are_formatted_for_the_locale(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url)
    s = shipment_in(origin)
    de = edge.http.get(f"/track/{s.tracking_number}?lang=de").text
    fr = edge.http.get(f"/track/{s.tracking_number}?lang=fr").text
    from babel.dates import format_skeleton

    when = s.events[0].occurred_at
    assert format_skeleton("MMMEd", when, tzinfo=UTC, locale="de") in de
    assert format_skeleton("MMMEd", when, tzinfo=UTC, locale="fr") in fr


def test_etag_and_304_and_a_change_is_visible_at_once(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url)
    s = shipment_in(origin)
    first = edge.http.get(f"/track/{s.tracking_number}")
    etag = first.headers["etag"]
    assert "private" in first.headers["cache-control"] and "stale-if-error" in first.headers["cache-control"]
    again = edge.http.get(f"/track/{s.tracking_number}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    version = edge.http.get(f"/v1/track/{s.tracking_number}").json()["version"]
    r = origin.webhook(event(s.tracking_number, status="attempt_fail", occurred_at="2032-01-01T00:00:00Z"))
    assert r.status_code == 202
    wait_until(
        lambda: edge.http.get(f"/v1/track/{s.tracking_number}").json()["version"] > version,
        what="the change",
    )
    changed = edge.http.get(f"/track/{s.tracking_number}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and "Delivery attempt failed" in changed.text
    metrics = edge.http.get("/metrics").text
    assert "waypost_page_not_modified_total 1.0" in metrics
    assert 'waypost_page_cache_total{result="miss"}' in metrics


def test_security_headers(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url)
    r = edge.http.get(f"/track/{shipment_in(origin).tracking_number}")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "style-src 'sha256-" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in r.text


def test_the_page_keeps_serving_through_an_origin_outage_with_its_honest_age(
    origin: Origin, proxy: tuple[OriginProxy, ServerThread], start_edge: Callable[..., Edge]
) -> None:
    p, server = proxy
    edge = start_edge(server.url)
    s = shipment_in(origin)
    assert "can&#39;t reach" not in edge.http.get(f"/track/{s.tracking_number}").text
    p.down = True
    # Once both buckets have failed a request, no answer from before the outage is in flight.
    wait_until(lambda: all(b["last_error"] for b in edge.status().values()), what="the edge to notice")
    edge.settings.clock.advance(600)  # type: ignore[attr-defined]
    page = edge.http.get(f"/track/{s.tracking_number}")
    assert page.status_code == 200 and s.tracking_number in page.text
    assert "can&#39;t reach" in page.text and "10 minutes ago" in page.text
    body = edge.http.get(f"/v1/track/{s.tracking_number}").json()
    assert body["stale"] is True and body["data_age_s"] >= 600
    p.down = False
    wait_until(
        lambda: edge.http.get(f"/v1/track/{s.tracking_number}").json()["stale"] is False, what="recovery"
    )


def test_lookups_are_throttled_so_numbers_cannot_be_enumerated(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url, lookup_rate=60.0)  # 30 tokens; an unknown number costs 5
    codes = [edge.http.get(f"/track/GUESS{i:06d}").status_code for i in range(10)]
    assert codes[:6] == [404] * 6 and 429 in codes
    r = edge.http.get(f"/v1/track/{shipment_in(origin).tracking_number}")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert 'waypost_throttled_total{limit="lookup"}' in edge.http.get("/metrics").text


def test_no_personal_data_reaches_the_edge_files_logs_or_pages(
    origin: Origin, start_edge: Callable[..., Edge], caplog: pytest.LogCaptureFixture
) -> None:
    planted = {
        "name": "Quirinus Zwiebelbacke",
        "email": "quirinus@zwiebel.example",
        "phone": "+49 40 55501234",
        "address": {"street": "Schleichweg 17", "postcode": POSTCODE, "city": "Hamburg", "country": "DE"},
    }
    lines = [{"sku": origin.world.products[0].sku, "qty": 1}]
    assert origin.place_order("o-pii", lines=lines, postcode=POSTCODE, customer=planted).status_code == 201
    r = origin.http.post(
        "/v1/shipments",
        json={
            "tracking_number": "WPPII0000001",
            "carrier": "dhl",
            "order_id": "o-pii",
            "site_id": "north-warehouse-3",
        },
        headers=origin.admin(),
    )
    assert r.status_code == 201
    assert (
        origin.webhook(
            event("WPPII0000001", status="delivered", message="Delivered, signed for by Q ZWIEBELBACKE")
        ).status_code
        == 202
    )
    edge = start_edge(origin.url)
    wait_until(
        lambda: edge.http.get("/v1/track/WPPII0000001").json()["status"] == "delivered", what="delivery"
    )
    assert edge.http.post("/track/WPPII0000001/unlock", data={"postcode": POSTCODE}).status_code == 303
    pages = edge.http.get("/track/WPPII0000001").text + edge.http.get("/v1/track/WPPII0000001").text
    assert "Your order" in pages
    files = b"".join(f.read_bytes() for f in edge.settings.data_dir.rglob("*") if f.is_file())
    # Shipments and orders are stored packed: read them back as the edge does, too.
    db = sqlite3.connect(edge.settings.data_dir / "replica.sqlite3")
    files += b"".join(unpack(bytes(body)) for (body,) in db.execute("SELECT body FROM entity"))
    db.close()
    assert b"o-pii" in files
    secrets = [
        "Quirinus",
        "Zwiebelbacke",
        "ZWIEBELBACKE",
        "quirinus@zwiebel.example",
        "55501234",
        "Schleichweg",
        POSTCODE,
    ]
    for secret in secrets:
        assert secret.encode() not in files, f"{secret} in the edge's files"
        assert secret not in pages, f"{secret} on a page"
        assert secret not in caplog.text, f"{secret} in a log"
