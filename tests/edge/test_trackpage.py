"""The tracking page's URL, methods, load shedding and failures, as a shopper's browser sees them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from edge.app import create_app
from edge.pages import Pages
from tests.conftest import Clock, Edge, Origin, edge_settings, wait_until
from tests.origin.test_webhooks import shipment_in


def test_only_one_path_segment_is_a_tracking_number(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url)
    tn = shipment_in(origin).tracking_number
    assert edge.http.get(f"/track/{tn}").status_code == 200
    for path in (f"/track/{tn}/extra", "/track/", "/track", f"/track/{tn}/unlock/more", "/track/a%2Fb"):
        r = edge.http.get(path)
        assert r.status_code == 404, path
    # A trailing slash is redirected to the page, query string kept (Starlette's redirect_slashes).
    r = edge.http.get(f"/track/{tn}/?lang=de", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].endswith(f"/track/{tn}?lang=de")
    assert '<html lang="de">' in edge.http.get(f"/track/{tn}/?lang=de", follow_redirects=True).text


def test_under_a_root_path_the_router_serves_the_same_page(
    origin: Origin, tmp_path: Path, clock: Clock
) -> None:
    tn = shipment_in(origin).tracking_number
    settings = edge_settings(origin.url, "north", tmp_path / "edge", clock)
    with TestClient(create_app(settings), root_path="/edge") as client:
        # Ready: the replica is bootstrapped and the models loaded, so nothing the page's ETag
        # covers (loaded models, the catalog's cursor) changes between the two requests below.
        wait_until(lambda: client.get("/edge/readyz").status_code == 200, what="the edge to be ready")
        wait_until(lambda: client.get(f"/edge/v1/track/{tn}").status_code == 200, what=f"{tn} on the edge")
        page = client.get(f"/edge/track/{tn}?lang=de")
        assert page.status_code == 200 and '<html lang="de">' in page.text and tn in page.text
        assert "wp_lang=de" in page.headers["set-cookie"]
        again = client.get(f"/edge/track/{tn}", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304
        assert client.get(f"/edge/track/{tn}/extra").status_code == 404
        assert client.post(f"/edge/track/{tn}").status_code == 405


@pytest.mark.parametrize("segment", ["%zz", "%ff%fe", "%", "WP%00123", "%E2%82%AC", "%3Cscript%3E"])
def test_a_bad_or_odd_percent_encoding_is_a_friendly_404(
    origin: Origin, start_edge: Callable[..., Edge], segment: str
) -> None:
    edge = start_edge(origin.url)
    r = edge.http.get(f"/track/{segment}")
    assert r.status_code == 404 and "find that parcel" in r.text
    assert "<script>" not in r.text


def test_head_answers_like_get_without_a_body_and_other_methods_are_not_allowed(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url)
    tn = shipment_in(origin).tracking_number
    get = edge.http.get(f"/track/{tn}")
    head = edge.http.head(f"/track/{tn}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = edge.http.request(method, f"/track/{tn}")
        assert r.status_code == 405, method
        assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_the_page_metrics_count_answers_cache_hits_and_latency(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url)
    tn = shipment_in(origin).tracking_number
    first = edge.http.get(f"/track/{tn}")
    edge.http.get(f"/track/{tn}")
    assert edge.http.get(f"/track/{tn}", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    metrics = edge.http.get("/metrics").text
    assert 'waypost_page_seconds_count{route="track"} 3.0' in metrics
    assert 'waypost_page_cache_total{result="hit"} 2.0' in metrics
    assert "waypost_page_not_modified_total 1.0" in metrics


def test_a_cookie_and_a_query_pick_the_language_and_only_lang_sets_the_cookie(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url)
    tn = shipment_in(origin).tracking_number
    with httpx.Client(base_url=edge.url, timeout=30) as client:
        chosen = client.get(f"/track/{tn}", params={"lang": "fr"})
        cookie = chosen.headers["set-cookie"]
        assert "wp_lang=fr" in cookie and "Max-Age=31536000" in cookie and "HttpOnly" in cookie
        again = client.get(f"/track/{tn}")  # the cookie the browser kept
        assert '<html lang="fr">' in again.text and "set-cookie" not in again.headers
    # Two Cookie headers make one jar, the later winning; of a repeated ?lang= the last counts.
    jar = [("cookie", "wp_lang=de"), ("cookie", "a=1; wp_lang=fr")]
    assert '<html lang="fr">' in edge.http.get(f"/track/{tn}", headers=jar).text
    assert '<html lang="de">' in edge.http.get(f"/track/{tn}?lang=xx&lang=de").text
    unknown = edge.http.get(f"/track/{tn}", params={"lang": "xx"}, headers={"Accept-Language": "de"})
    assert '<html lang="de">' in unknown.text and "set-cookie" not in unknown.headers


def test_an_overloaded_edge_sheds_the_page_with_503_and_retry_after(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url, max_inflight=0)  # every request is one too many
    tn = shipment_in(origin).tracking_number
    for method in ("GET", "HEAD"):
        r = edge.http.request(method, f"/track/{tn}")
        assert r.status_code == 503 and r.headers["retry-after"] == "1", method
    assert edge.http.get("/healthz").status_code == 200, "probes are never shed"
    assert "waypost_shed_total 2.0" in edge.http.get("/metrics").text


def test_an_unexpected_error_is_a_clean_500_and_the_edge_keeps_serving(
    origin: Origin,
    start_edge: Callable[..., Edge],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge = start_edge(origin.url)
    tn = shipment_in(origin).tracking_number
    pages: Pages = edge.server.server.config.app.state.pages  # type: ignore[attr-defined]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in rendering")

    monkeypatch.setattr(pages, "track_html", broken)
    with httpx.Client(base_url=edge.url, timeout=5) as client:
        r = client.get(f"/track/{tn}", headers={"X-Request-ID": "probe-42"})
    # JSON like every other error, with the id the log line carries (and the client sent).
    assert r.status_code == 500 and r.headers["x-request-id"] == "probe-42"
    assert r.json() == {"error": "internal", "detail": r.json()["detail"], "request_id": "probe-42"}
    logged = [rec for rec in caplog.records if "probe-42" in rec.getMessage()]
    assert logged and logged[0].exc_info and "a bug in rendering" in str(logged[0].exc_info[1])
    monkeypatch.undo()
    assert edge.http.get(f"/track/{tn}").status_code == 200
