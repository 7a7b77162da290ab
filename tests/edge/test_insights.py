"""What the models add to the page: an ETA band, in-stock recommendations, sizing help."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from edge.pages import Pages
from sync.entities import Order
from tests.conftest import Edge, Origin, wait_until
from tests.edge.test_inference import serving
from tests.edge.test_pages import POSTCODE, unlockable, wait_for


def pages_of(edge: Edge) -> Pages:
    pages: Pages = edge.server.server.config.app.state.pages  # type: ignore[attr-defined]
    return pages


def ready(edge: Edge) -> None:
    for name in ("delivery_time", "return_risk", "recommender"):
        wait_until(lambda name=name: "active" in serving(edge, name), what=f"{name} loaded")


def test_without_a_carrier_eta_the_page_shows_the_models_band(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    tn = unlockable(origin)
    edge = start_edge(origin.url)
    wait_for(edge, tn)
    ready(edge)
    assert edge.http.get(f"/v1/track/{tn}").json()["eta"] is None
    page = edge.http.get(f"/track/{tn}").text
    assert "our estimate" in page and "most likely" in page and "between" in page


def test_recommendations_are_in_stock_in_the_region_and_drop_out_when_they_sell_out(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    tn = unlockable(origin)
    edge = start_edge(origin.url)
    wait_for(edge, tn)
    ready(edge)
    p = pages_of(edge)
    order = p.order("o-unlock")
    assert isinstance(order, Order)
    now = datetime.now(UTC)
    recs = p.insights.recommendations(order, p.insights.history(order), now)
    assert recs, "a shopper with an order gets suggestions"
    assert all(p.insights.stock.by_sku[r.sku][0] > 0 for r in recs)
    assert edge.http.post(f"/track/{tn}/unlock", data={"postcode": POSTCODE}).status_code == 303
    before = edge.http.get(f"/track/{tn}")
    assert "You might also like" in before.text and recs[0].name in before.text
    # Sell the first suggestion out everywhere in the region.
    gone = recs[0].sku
    for site in (s.site_id for s in origin.world.sites if s.region == "north"):
        st = origin.http.get(f"/v1/stock/{site}/{gone}", headers=origin.edge_auth()).json()
        if st["available"]:
            r = origin.http.post(
                "/v1/stock/movements",
                json={"site_id": site, "sku": gone, "kind": "adjust", "qty": -st["available"]},
                headers=origin.admin(),
            )
            assert r.status_code == 201, r.text
    wait_until(lambda: p.insights.stock.by_sku[gone][0] == 0, what="the sell-out to reach the edge")
    after = p.insights.recommendations(order, p.insights.history(order), now)
    assert gone not in {r.sku for r in after}
    assert edge.http.get(f"/track/{tn}").headers["etag"] != before.headers["etag"]


def test_return_risk_adds_sizing_help_only_to_risky_lines(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    shoes = [x for x in origin.world.products if x.category == "shoes"][:1]
    snacks = [x for x in origin.world.products if x.category == "snacks"][:1]
    lines = [{"sku": shoes[0].sku, "qty": 2}, {"sku": snacks[0].sku, "qty": 1}]
    assert origin.place_order("o-fit", lines=lines, postcode=POSTCODE).status_code == 201
    r = origin.http.post(
        "/v1/shipments",
        json={
            "tracking_number": "WPFIT0000001",
            "carrier": "dhl",
            "order_id": "o-fit",
            "site_id": "north-warehouse-3",
        },
        headers=origin.admin(),
    )
    assert r.status_code == 201, r.text
    edge = start_edge(origin.url)
    wait_for(edge, "WPFIT0000001")
    ready(edge)
    p = pages_of(edge)
    order = p.order("o-fit")
    assert order is not None
    risky = p.insights.risky_lines(order, p.insights.history(order))
    assert risky == {shoes[0].sku}, "two pairs of one shoe come back; snacks do not"
    assert edge.http.post("/track/WPFIT0000001/unlock", data={"postcode": POSTCODE}).status_code == 303
    page = edge.http.get("/track/WPFIT0000001").text
    assert page.count("Not sure about the size?") == 1
