"""Routing at the edge: decisions, holds at the origin, and the outbox when the origin is away.

Real origins and real edges over HTTP; stock is shaped through the origin's own API
(`POST /v1/stock/movements`) and checked there (`GET /v1/stock/…`, `GET /v1/reservations/…`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import helper
from starlette.responses import Response

from edge.decisions import DecisionStore, decision_id
from edge.inference import Loaded, ModelShelf, Slot, canary_share
from edge.routing import choose
from models.geo import haversine_km
from models.serving import session_from_bytes, shipped_artifact
from sync.entities import Line, ModelRelease
from tests.conftest import (
    EDGE_TOKEN,
    STORE_TOKEN,
    Edge,
    Origin,
    OriginProxy,
    ServerThread,
    wait_until,
)

STORE = {"Authorization": f"Bearer {STORE_TOKEN}"}
NORTH = (53.5511, 9.9937)


# Helpers: the origin's stock, the edge's view of it, routing requests.


def stock(origin: Origin, site_id: str, sku: str) -> dict[str, int]:
    r = origin.http.get(f"/v1/stock/{site_id}/{sku}", headers=origin.edge_auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def set_available(origin: Origin, site_id: str, sku: str, units: int) -> None:
    """Adjust a site's stock of a sku so exactly `units` are available."""
    delta = units - stock(origin, site_id, sku)["available"]
    if delta:
        kind = "receive" if delta > 0 else "adjust"
        r = origin.http.post(
            "/v1/stock/movements",
            json={"site_id": site_id, "sku": sku, "kind": kind, "qty": delta},
            headers=origin.admin(),
        )
        assert r.status_code == 201, r.text


def north_sites(origin: Origin) -> list[str]:
    return sorted(s.site_id for s in origin.world.sites if s.region == "north")


def stocked_everywhere(origin: Origin, n: int) -> list[str]:
    """Skus every north site carries (MFCs carry three quarters of the catalog)."""
    sites = north_sites(origin)
    skus = [
        p.sku for p in origin.world.products if all(stock(origin, s, p.sku)["on_hand"] > 0 for s in sites)
    ]
    assert len(skus) >= n, "the small world has enough skus stocked at every site"
    return skus[:n]


def only_at(origin: Origin, sku: str, units: dict[str, int]) -> None:
    """Make `sku` available at the given north sites only, in the given amounts."""
    for site in north_sites(origin):
        set_available(origin, site, sku, units.get(site, 0))


def caught_up(origin: Origin, edge: Edge) -> None:
    heads = {
        b["bucket"]: b["head"] for b in origin.http.get("/v1/buckets", headers=origin.edge_auth()).json()
    }

    def done() -> bool:
        status = edge.status()
        return all(status[b]["cursor"] >= heads[b] for b in ("global", "region:north"))

    wait_until(done, what="the edge to catch up with the origin")


def model_loaded(edge: Edge, rollout: str = "active", version: str | None = None) -> None:
    def loaded() -> bool:
        models = edge.http.get("/v1/sync/status").json()["models"]
        return any(
            m["name"] == "delivery_time"
            and rollout in m["serving"]
            and (version is None or m["version"] == version)
            for m in models
        )

    wait_until(loaded, what=f"a {rollout} delivery_time model on the edge")


def route(
    edge: Edge | httpx.Client,
    order_id: str,
    lines: list[tuple[str, int]],
    *,
    at: tuple[float, float] = NORTH,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    http = edge.http if isinstance(edge, Edge) else edge
    body = {
        "order_id": order_id,
        "destination": {"lat": at[0], "lon": at[1], "city": "Hamburg"},
        "lines": [{"sku": sku, "qty": qty} for sku, qty in lines],
        "placed_at": "2031-03-04T10:00:00Z",
        **extra,
    }
    return http.post("/v1/route", json=body, headers=STORE if headers is None else headers)


def decision(edge: Edge | httpx.Client, did: str) -> dict[str, Any]:
    http = edge.http if isinstance(edge, Edge) else edge
    r = http.get(f"/v1/decisions/{did}", headers=STORE)
    assert r.status_code == 200, r.text
    return dict(r.json())


def hold(origin: Origin, reservation_id: str) -> httpx.Response:
    return origin.http.get(f"/v1/reservations/{reservation_id}", headers=origin.edge_auth())


def sites_of(d: dict[str, Any]) -> list[str]:
    return [a["site_id"] for a in d["allocations"]]


def metric(edge: Edge | httpx.Client, line_start: str) -> float:
    http = edge.http if isinstance(edge, Edge) else edge
    text = http.get("/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


@pytest.fixture
def edge(origin: Origin, start_edge: Callable[..., Edge]) -> Edge:
    e = start_edge(origin.url, "north")
    model_loaded(e)
    return e


# The decision


def test_a_decision_holds_its_stock_at_the_origin(origin: Origin, edge: Edge) -> None:
    sku = stocked_everywhere(origin, 1)[0]
    r = route(edge, "o-1", [(sku, 2)], carrier="ups")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["reservation"] == "confirmed"
    assert d["model_version"] and d["score_kind"] == "p50_hours"
    band = d["eta_hours"]
    assert 0 <= band["p10"] <= band["p50"] <= band["p90"]
    [a] = d["allocations"]
    assert a["lines"] == [{"sku": sku, "qty": 2}] and a["site_id"] in north_sites(origin)
    held = hold(origin, a["reservation_id"]).json()
    assert held["state"] == "held" and held["order_id"] == "o-1" and held["site_id"] == a["site_id"]
    assert stock(origin, a["site_id"], sku)["reserved"] == 2
    assert any("predicted delivery" in reason for reason in d["reasons"])
    # The model ranked every site with stock; the decision took the best of them.
    full = decision(edge, d["decision_id"])
    scores = {c["site_id"]: c["score"] for c in full["candidates"]}
    assert set(scores) == set(north_sites(origin))
    assert scores[a["site_id"]] == min(scores.values()) == d["score"]
    assert [e["event"] for e in full["history"]] == ["decided", "placed", "confirmed"]
    assert metric(edge, 'waypost_route_decisions_total{outcome="confirmed"}') == 1
    assert metric(edge, "waypost_route_seconds_count") == 1


def test_exact_coordinates_are_rounded_and_never_stored(origin: Origin, edge: Edge) -> None:
    sku = stocked_everywhere(origin, 1)[0]
    lat, lon = 53.5612345678, 9.9823456789
    d = route(edge, "o-geo", [(sku, 1)], at=(lat, lon)).json()
    path = edge.settings.data_dir / "decisions.sqlite3"
    store = DecisionStore(path)
    try:
        kept = store.get(d["decision_id"])
    finally:
        store.close()
    assert kept is not None and (kept.order.lat, kept.order.lon) == (53.56, 9.98)
    raw = b"".join(p.read_bytes() for p in edge.settings.data_dir.glob("decisions.sqlite3*"))
    for exact in (lat, lon):
        assert struct.pack(">d", exact) not in raw and repr(exact).encode() not in raw


def test_the_same_order_id_returns_the_same_decision(origin: Origin, edge: Edge) -> None:
    sku = stocked_everywhere(origin, 1)[0]
    first = route(edge, "o-again", [(sku, 3)])
    again = route(edge, "o-again", [(sku, 3)], at=(53.6, 10.1))
    assert again.status_code == 200 and again.headers["idempotency-replayed"] == "true"
    assert again.json() == first.json()
    site = first.json()["allocations"][0]["site_id"]
    assert stock(origin, site, sku)["reserved"] == 3, "one hold, not two"
    changed = route(edge, "o-again", [(sku, 4)])
    assert changed.status_code == 422 and changed.json()["error"] == "order_changed"


def test_routing_never_reserves_unavailable_stock(origin: Origin, edge: Edge) -> None:
    sku = stocked_everywhere(origin, 1)[0]
    a, b, c = north_sites(origin)
    only_at(origin, sku, {a: 2, b: 1})
    caught_up(origin, edge)
    # Five orders for one unit each, at once: the edge counts its own holds before they
    # replicate, so it never asks the origin for a unit it has already promised.
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda i: route(edge, f"o-drain-{i}", [(sku, 1)]), range(5)))
    answers.sort(key=lambda r: r.status_code)
    assert [r.status_code for r in answers] == [200, 200, 200, 409, 409]
    chosen = [r.json()["allocations"][0]["site_id"] for r in answers[:3]]
    assert sorted(chosen) == [a, a, b]
    refused = answers[3].json()
    assert refused["error"] == "insufficient_stock"
    assert refused["lines"] == [{"sku": sku, "requested": 1, "available": 0}]
    for r in answers[:3]:
        history = decision(edge, r.json()["decision_id"])["history"]
        assert "refused" not in [e["event"] for e in history], "never asked the origin for what was gone"
    assert [stock(origin, s, sku)["available"] for s in (a, b, c)] == [0, 0, 0]
    assert metric(edge, 'waypost_route_decisions_total{outcome="insufficient_stock"}') == 2

    # Drain the site a decision would pick: the next one goes elsewhere.
    other = stocked_everywhere(origin, 2)[1]
    first = route(edge, "o-pick", [(other, 1)]).json()["allocations"][0]["site_id"]
    set_available(origin, first, other, 0)
    caught_up(origin, edge)
    second = route(edge, "o-pick-2", [(other, 1)]).json()["allocations"][0]["site_id"]
    assert second != first


def test_two_sites_only_when_no_single_site_can_fill_it(origin: Origin, edge: Edge) -> None:
    x, y = stocked_everywhere(origin, 2)
    a, b, c = north_sites(origin)
    only_at(origin, x, {a: 5})
    only_at(origin, y, {b: 5, c: 5})
    caught_up(origin, edge)
    d = route(edge, "o-split", [(x, 1), (y, 1)]).json()
    assert d["reservation"] == "confirmed"
    assert len(d["allocations"]) == 2
    by_site = {al["site_id"]: [line["sku"] for line in al["lines"]] for al in d["allocations"]}
    assert by_site[a] == [x] and set(by_site) - {a} <= {b, c} and [y] in by_site.values()
    assert any("no single site" in reason for reason in d["reasons"])
    for al in d["allocations"]:
        assert hold(origin, al["reservation_id"]).json()["state"] == "held"
    # With a site that has both, one site it is.
    set_available(origin, a, y, 5)
    caught_up(origin, edge)
    one = route(edge, "o-whole", [(x, 1), (y, 1)]).json()
    assert sites_of(one) == [a] and not any("no single site" in reason for reason in one["reasons"])


def test_choose_splits_greedily_only_when_it_must() -> None:
    lines = [Line("x", 1), Line("y", 1), Line("z", 1)]
    cost = {"a": 1.0, "b": 2.0, "c": 3.0}
    every = {"x", "y", "z"}
    assert choose(lines, ["a", "b", "c"], cost, {"a": every, "b": every, "c": every}) == [("a", lines)]
    assert choose(lines, ["a", "b", "c"], cost, {"a": {"x"}, "b": {"x"}, "c": every}) == [("c", lines)]
    split = choose(lines, ["a", "b", "c"], cost, {"a": {"x", "y"}, "b": {"z"}, "c": {"z"}})
    assert split == [("a", lines[:2]), ("b", lines[2:])]
    assert choose(lines, ["a", "b", "c"], cost, {"a": {"x"}, "b": {"y"}, "c": {"z"}}) is None


def test_bad_requests_name_the_field(origin: Origin, edge: Edge) -> None:
    sku = stocked_everywhere(origin, 1)[0]
    assert route(edge, "o-auth", [(sku, 1)], headers={}).status_code == 401
    assert route(edge, "o-auth", [(sku, 1)], headers={"Authorization": "Bearer nope"}).status_code == 401
    r = route(edge, "o-bad", [(sku, 0)])
    assert r.status_code == 400 and "$.lines[0].qty" in r.json()["detail"]
    r = route(edge, "o-bad", [(sku, 1)], at=(123.0, 9.9))
    assert r.status_code == 400 and "$.destination.lat" in r.json()["detail"]
    r = route(edge, "o-bad", [(sku, 1), ("sku-nope", 1)])
    assert (
        r.status_code == 400 and r.json()["error"] == "unknown_sku" and "$.lines[1].sku" in r.json()["detail"]
    )
    r = edge.http.post("/v1/route", content=b"{", headers=STORE)
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    assert edge.http.get("/v1/decisions/dec_nope", headers=STORE).status_code == 404
    assert edge.http.get("/v1/decisions/dec_nope").status_code == 401


# Models: none, canary, shadow


def register(origin: Origin, blob: bytes, card: dict[str, Any], rollout: str, fraction: float = 1.0) -> None:
    r = origin.http.post(
        "/v1/models",
        json={
            "blob_base64": base64.b64encode(blob).decode(),
            "card": card,
            "rollout": rollout,
            "fraction": fraction,
        },
        headers=origin.admin(),
    )
    assert r.status_code == 201, r.text


def test_without_a_model_the_nearest_site_with_stock_decides(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    # An operator retires the delivery-time model: an edge starting now has none to load.
    blob, card = shipped_artifact("delivery_time")
    register(origin, blob, json.loads(card), "retired")
    edge = start_edge(origin.url, "north")
    wait_until(lambda: edge.http.get("/v1/sync/status").json()["models"], what="the other models")
    assert not any(m["name"] == "delivery_time" for m in edge.http.get("/v1/sync/status").json()["models"])
    sku = stocked_everywhere(origin, 1)[0]
    sites = {s.site_id: s for s in origin.world.sites if s.region == "north"}
    for i, at in enumerate([NORTH, (53.7, 10.2), (53.4, 9.8)]):
        nearest = min(
            sites, key=lambda k: haversine_km(sites[k].lat, sites[k].lon, round(at[0], 2), round(at[1], 2))
        )
        d = route(edge, f"o-near-{i}", [(sku, 1)], at=at).json()
        assert d["model_version"] is None and d["eta_hours"] is None and d["score_kind"] == "distance_km"
        assert sites_of(d) == [nearest]
        assert any("no delivery-time model" in reason for reason in d["reasons"])
        assert d["reservation"] == "confirmed"
    # The nearest *with stock*: drain it and the next nearest decides.
    far = min(
        (k for k in sites if k != nearest),
        key=lambda k: haversine_km(sites[k].lat, sites[k].lon, 53.4, 9.8),
    )
    set_available(origin, nearest, sku, 0)
    caught_up(origin, edge)
    assert sites_of(route(edge, "o-near-x", [(sku, 1)], at=(53.4, 9.8)).json()) == [far]


def _release(fraction: float, rollout: str = "canary", version: str = "2") -> ModelRelease:
    return ModelRelease(
        name="delivery_time",
        version=version,
        sha256="0" * 64,
        schema_version="delivery.v1",
        rollout=rollout,  # type: ignore[arg-type]
        fraction=fraction,
        card="{}",
        released_at=datetime(2031, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_the_canary_decides_its_fraction_of_orders(tmp_path: Path, fraction: float) -> None:
    shelf = ModelShelf(None, None, "global", tmp_path)  # type: ignore[arg-type]
    active = Loaded(_release(1.0, "active", "1"), None)  # type: ignore[arg-type]
    canary = Loaded(_release(fraction), None)  # type: ignore[arg-type]
    shelf.slots["delivery_time"] = Slot(active=active, canary=canary)
    ids = [f"order-{i}" for i in range(10_000)]
    picks = [shelf.pick("delivery_time", i)[0] for i in ids]
    share = sum(p is canary for p in picks) / len(ids)
    assert abs(share - fraction) <= 0.02
    # Deterministic: the same order always meets the same model.
    assert all(shelf.pick("delivery_time", i)[0] is p for i, p in zip(ids[:500], picks, strict=False))
    assert all((canary_share(i) < fraction) == (p is canary) for i, p in zip(ids, picks, strict=True))


def contrarian(blob: bytes, card: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The shipped model with p50 turned upside down (1000 − p50): it prefers the slowest site."""
    m = onnx.load_from_string(blob)
    for node in m.graph.node:
        node.output[:] = ["p50_kept" if o == "p50" else o for o in node.output]
        node.input[:] = ["p50_kept" if i == "p50" else i for i in node.input]
    big = helper.make_tensor("big", onnx.TensorProto.FLOAT, [], [1000.0])
    m.graph.initializer.append(big)
    m.graph.node.append(helper.make_node("Sub", ["big", "p50_kept"], ["p50"], name="contrarian"))
    out = m.SerializeToString()
    session = session_from_bytes(out)
    card = {**card, "version": "contrarian-1", "sha256": hashlib.sha256(out).hexdigest()}
    vectors = []
    for v in card["test_vectors"]:
        got = session.run(card["outputs"], {"features": np.asarray([v["inputs"]], dtype=np.float32)})
        vectors.append({**v, "expected": {k: g.tolist() for k, g in zip(card["outputs"], got, strict=True)}})
    card["test_vectors"] = vectors
    return out, card


def test_a_shadow_scores_but_never_decides(origin: Origin, edge: Edge) -> None:
    shipped, shipped_card = shipped_artifact("delivery_time")
    blob, card = contrarian(shipped, json.loads(shipped_card))
    register(origin, blob, card, "shadow")
    model_loaded(edge, "shadow", "contrarian-1")
    skus = stocked_everywhere(origin, 3)
    spots = [(53.40, 9.70), (53.55, 10.00), (53.70, 10.30), (53.62, 9.85), (53.45, 10.15)]
    disagreed = 0
    for i, at in enumerate(spots * 2):
        d = route(edge, f"o-shadow-{i}", [(skus[i % 3], 1)], at=at).json()
        full = decision(edge, d["decision_id"])
        scores = {c["site_id"]: c["score"] for c in full["candidates"]}
        best = min(scores, key=lambda k: scores[k])
        assert sites_of(d) == [best], "the active model's best site, whatever the shadow thinks"
        assert d["model_version"] != "contrarian-1"
        # The active model's hours, not the shadow's 1000 − p50.
        assert max(scores.values()) < 500 and d["eta_hours"]["p50"] <= d["eta_hours"]["p90"]
        worst = max(scores.values())
        disagreed += scores[best] != worst
    agreed = metric(edge, 'waypost_shadow_decisions_total{agreed="true"')
    against = metric(edge, 'waypost_shadow_decisions_total{agreed="false"')
    assert agreed + against == 10
    assert against >= 1 and against == disagreed


# The outbox


@pytest.fixture
def cut(origin: Origin, start_edge: Callable[..., Edge]) -> Iterator[tuple[OriginProxy, Edge]]:
    """An edge that reaches the origin only through a proxy the test can cut."""
    proxy = OriginProxy(origin.url)
    with ServerThread(proxy.app) as server:
        e = start_edge(server.url, "north", outbox_retry_max_s=0.3, reserve_timeout_s=5.0)
        model_loaded(e)
        yield proxy, e


def forwarded_holds(proxy: OriginProxy, reservation_id: str) -> int:
    """Hold requests for `reservation_id` that reached the origin (the proxy logs its answers)."""
    return sum(
        1
        for p in proxy.log
        if p.method == "POST"
        and p.url in ("/v1/reservations?", "/v1/reservations/batch?")
        and reservation_id.encode() in p.body
    )


def test_origin_down_decides_provisionally_then_replays_once(
    origin: Origin, cut: tuple[OriginProxy, Edge]
) -> None:
    proxy, edge = cut
    sku = stocked_everywhere(origin, 1)[0]
    a, b, _ = north_sites(origin)
    only_at(origin, sku, {a: 1, b: 1})
    caught_up(origin, edge)
    proxy.down = True
    first = route(edge, "o-out-1", [(sku, 1)])
    assert first.status_code == 200 and first.json()["reservation"] == "provisional"
    # The provisional hold counts: the second order for the last units goes to the other site…
    second = route(edge, "o-out-2", [(sku, 1)]).json()
    assert second["reservation"] == "provisional"
    assert sorted(sites_of(first.json()) + sites_of(second)) == [a, b]
    # … and a third finds nothing.
    assert route(edge, "o-out-3", [(sku, 1)]).status_code == 409
    assert [stock(origin, s, sku)["reserved"] for s in (a, b)] == [0, 0], "nothing reached the origin"
    assert metric(edge, "waypost_outbox_depth") == 2
    history = [e["event"] for e in decision(edge, first.json()["decision_id"])["history"]]
    assert history[:2] == ["decided", "unreachable"]

    proxy.down = False

    def confirmed() -> bool:
        return all(
            decision(edge, d["decision_id"])["reservation"] == "confirmed" for d in (first.json(), second)
        )

    wait_until(confirmed, what="the outbox to replay")
    assert [stock(origin, s, sku)["reserved"] for s in (a, b)] == [1, 1]
    for d in (first.json(), second):
        rid = d["allocations"][0]["reservation_id"]
        assert hold(origin, rid).json()["state"] == "held"
        assert forwarded_holds(proxy, rid) == 1, "replayed exactly once"
        assert decision(edge, d["decision_id"])["history"][-1]["event"] == "replayed"
    assert metric(edge, "waypost_outbox_depth") == 0
    again = route(edge, "o-out-1", [(sku, 1)]).json()
    assert again["reservation"] == "confirmed" and again["decision_id"] == first.json()["decision_id"]


def test_a_refused_replay_reroutes(origin: Origin, cut: tuple[OriginProxy, Edge]) -> None:
    proxy, edge = cut
    sku = stocked_everywhere(origin, 1)[0]
    a, b, _ = north_sites(origin)
    only_at(origin, sku, {a: 1, b: 1})
    caught_up(origin, edge)
    proxy.down = True
    d = route(edge, "o-vanish", [(sku, 1)]).json()
    assert d["reservation"] == "provisional"
    [gone] = sites_of(d)
    other = b if gone == a else a
    set_available(origin, gone, sku, 0)  # sold elsewhere while the edge was cut off
    proxy.down = False

    wait_until(lambda: decision(edge, d["decision_id"])["reservation"] == "confirmed", what="the re-route")
    now = decision(edge, d["decision_id"])
    assert sites_of(now) == [other] and now["attempt"] == 2
    events = [e["event"] for e in now["history"]]
    assert events[:2] == ["decided", "unreachable"]
    assert events[2:] == ["refused", "rerouted", "placed", "replayed"]
    assert any("re-routed" in reason for reason in now["reasons"])
    assert hold(origin, now["allocations"][0]["reservation_id"]).json()["state"] == "held"
    assert hold(origin, d["allocations"][0]["reservation_id"]).status_code == 404
    assert stock(origin, other, sku)["reserved"] == 1 and stock(origin, gone, sku)["reserved"] == 0
    # The store asking again gets the decision as it is now.
    assert sites_of(route(edge, "o-vanish", [(sku, 1)]).json()) == [other]


def test_a_live_refusal_is_answered_409_and_not_kept(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    """The replica was behind: the origin refuses every site the edge thought could fill it."""
    proxy = OriginProxy(origin.url)
    stalled = {"feed": False}
    turned_away: set[str] = set()

    async def gate(scope: Any, receive: Any, send: Any) -> None:
        if stalled["feed"] and scope["type"] == "http" and scope["path"].startswith("/v1/feed"):
            turned_away.add(scope["path"])
            await Response(b"feed stalled", status_code=503)(scope, receive, send)
            return
        await proxy.app(scope, receive, send)

    sku = stocked_everywhere(origin, 1)[0]
    a, b, _ = north_sites(origin)
    only_at(origin, sku, {a: 1, b: 1})
    with ServerThread(gate) as server:  # type: ignore[arg-type]
        edge = start_edge(server.url, "north", feed_wait_s=1)
        model_loaded(edge)
        caught_up(origin, edge)
        stalled["feed"] = True
        wait_until(lambda: len(turned_away) == 2, what="both feeds to stall")
        only_at(origin, sku, {})  # gone at the origin; the edge cannot hear of it
        r = route(edge, "o-stale", [(sku, 1)])
        assert r.status_code == 409 and r.json()["error"] == "insufficient_stock"
        assert a in r.json()["detail"] and b in r.json()["detail"]
        kept = decision(edge, r.json()["decision_id"])
        assert kept["reservation"] == "unfilled" and kept["decision_id"] == decision_id("north", "o-stale")
        assert sorted(e["site_id"] for e in kept["history"] if e["event"] == "refused") == [a, b]
        assert [stock(origin, s, sku)["reserved"] for s in (a, b)] == [0, 0]
        # Back in stock and heard of: the same order is routed again, under new reservation ids.
        stalled["feed"] = False
        only_at(origin, sku, {b: 1})
        caught_up(origin, edge)
        again = route(edge, "o-stale", [(sku, 1)])
        assert again.status_code == 200, again.text
        d = again.json()
        assert d["reservation"] == "confirmed" and sites_of(d) == [b] and d["attempt"] >= 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("drawn", [False, True], ids=["provisional", "drawn"])
def test_the_outbox_survives_an_edge_kill(origin: Origin, tmp_path: Path, drawn: bool) -> None:
    """A decision whose hold has not reached the origin — provisional, or drawn from an
    allotment and answered confirmed — is sent exactly once by the restarted edge."""
    proxy = OriginProxy(origin.url)
    data = tmp_path / "edge-proc"
    env = {
        **os.environ,
        "WAYPOST_EDGE_TOKEN": EDGE_TOKEN,
        "WAYPOST_STORE_TOKEN": STORE_TOKEN,
        "WAYPOST_LINK_SECRET": "link-secret",
        "WAYPOST_POSTCODE_KEY": "postcode-key",
    }
    sku = stocked_everywhere(origin, 1)[0]
    site = north_sites(origin)[0]
    if drawn:
        only_at(origin, sku, {site: 100})
    with ServerThread(proxy.app) as server:
        port = free_port()
        cmd = [sys.executable, "-m", "edge", "serve", "--origin", server.url, "--region", "north"]
        cmd += ["--data", str(data), "--port", str(port), "--log-level", "warning"]

        def start() -> tuple[subprocess.Popen[bytes], httpx.Client]:
            proc = subprocess.Popen(cmd, env=env)
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

            def ready() -> bool:
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.HTTPError:
                    assert proc.poll() is None, "the edge exited"
                    return False

            wait_until(ready, timeout=30, what="the edge process")
            return proc, http

        proc, http = start()
        try:
            if drawn:  # an order first, so the edge sees demand there and asks for an allotment
                assert route(http, "o-kill-0", [(sku, 6)]).json()["reservation"] == "confirmed"

                def allotted() -> bool:
                    held = http.get("/v1/sync/status").json()["allotments"]["held"]
                    return any(a["site_id"] == site and a["left"] for a in held)

                wait_until(allotted, what="an allotment")
            proxy.down = True
            d = route(http, "o-kill", [(sku, 2)]).json()
            assert d["reservation"] == ("confirmed" if drawn else "provisional")
            assert d["allocations"][0]["state"] == ("drawn" if drawn else "pending")
            reserved = stock(origin, d["allocations"][0]["site_id"], sku)["reserved"]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            http.close()
            if proc.poll() is None:
                proc.kill()
        proxy.down = False
        rid = d["allocations"][0]["reservation_id"]
        assert hold(origin, rid).status_code == 404, "nothing reached the origin"

        proc, http = start()
        try:
            wait_until(
                lambda: decision(http, d["decision_id"])["allocations"][0]["state"] == "held",
                what="the replay",
            )
            assert decision(http, d["decision_id"])["reservation"] == "confirmed"
            assert hold(origin, rid).json()["state"] == "held"
            # Drawn: the units moved within `reserved`; queued: two more are reserved.
            assert stock(origin, d["allocations"][0]["site_id"], sku)["reserved"] == reserved + (
                0 if drawn else 2
            )
            assert forwarded_holds(proxy, rid) == 1, "replayed exactly once"
            again = route(http, "o-kill", [(sku, 2)]).json()
            assert again["decision_id"] == d["decision_id"] == decision_id("north", "o-kill")
        finally:
            http.close()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


# Allotments: stock the origin set aside for the edge, drawn from without asking first


def allotted(edge: Edge, site: str, sku: str) -> int:
    """Units of `sku` the edge may draw at `site`, as its status says."""
    held = edge.http.get("/v1/sync/status").json()["allotments"]["held"]
    return sum(
        line["qty"]
        for a in held
        if a["site_id"] == site and a["drawable"]
        for line in a["left"]
        if line["sku"] == sku
    )


def stocked_at_one_site(origin: Origin, edge: Edge, units: int) -> tuple[str, str]:
    """A sku the region has only at its first site, `units` of it, and that site."""
    sku = stocked_everywhere(origin, 1)[0]
    site = north_sites(origin)[0]
    only_at(origin, sku, {site: units})
    caught_up(origin, edge)
    return sku, site


@pytest.fixture
def cut_allotting(origin: Origin, start_edge: Callable[..., Edge]) -> Iterator[tuple[OriginProxy, Edge]]:
    """An edge with allotments on, reaching the origin through a proxy the test can cut."""
    proxy = OriginProxy(origin.url)
    with ServerThread(proxy.app) as server:
        e = start_edge(
            server.url,
            "north",
            allotments=True,
            allotment_tick_s=0.05,
            outbox_retry_max_s=0.3,
            reserve_timeout_s=5.0,
        )
        model_loaded(e)
        yield proxy, e


def test_an_allotment_confirms_while_the_origin_is_away_and_the_hold_lands_once(
    origin: Origin, cut_allotting: tuple[OriginProxy, Edge]
) -> None:
    proxy, edge = cut_allotting
    sku, site = stocked_at_one_site(origin, edge, 40)
    first = route(edge, "o-al-1", [(sku, 2)]).json()  # no allotment yet: held at the origin first
    assert first["reservation"] == "confirmed" and first["allocations"][0]["state"] == "held"
    # Demand seen: the edge asks for an allotment there, within its share of what is free.
    wait_until(lambda: allotted(edge, site, sku) > 0, what="an allotment at the site")
    mine = allotted(edge, site, sku)
    assert mine <= 0.5 * (40 - 2)
    assert stock(origin, site, sku)["available"] == 40 - 2 - mine

    proxy.down = True
    d = route(edge, "o-al-2", [(sku, 1)]).json()
    assert d["reservation"] == "confirmed", "drawn from the allotment: no need to ask"
    assert d["allocations"][0]["state"] == "drawn" and sites_of(d) == [site]
    assert allotted(edge, site, sku) == mine - 1
    rid = d["allocations"][0]["reservation_id"]
    assert hold(origin, rid).status_code == 404, "the origin has not heard of it yet"

    proxy.down = False
    wait_until(lambda: decision(edge, d["decision_id"])["allocations"][0]["state"] == "held", what="the send")
    assert hold(origin, rid).json()["state"] == "held"
    assert forwarded_holds(proxy, rid) == 1, "sent exactly once once the origin answered"
    # The units moved from the allotment to the order's hold.
    history = decision(edge, d["decision_id"])["history"]
    assert [e["event"] for e in history][:3] == ["decided", "drawn", "confirmed"]
    assert "placed" in [e["event"] for e in history]
    allotment = hold(origin, history[1]["detail"]).json()
    assert allotment["owner"] == edge.http.get("/v1/sync/status").json()["allotments"]["owner"]
    assert sum(line["qty"] for line in allotment["lines"]) == mine - 1
    assert stock(origin, site, sku)["on_hand"] == 40
    assert metric(edge, 'waypost_route_holds_total{source="allotment"}') == 1


def test_draws_and_holds_together_never_promise_more_than_there_is(
    origin: Origin, cut_allotting: tuple[OriginProxy, Edge]
) -> None:
    _, edge = cut_allotting
    sku, site = stocked_at_one_site(origin, edge, 30)
    assert route(edge, "o-many-0", [(sku, 2)]).json()["reservation"] == "confirmed"
    wait_until(lambda: allotted(edge, site, sku) > 0, what="an allotment at the site")
    with ThreadPoolExecutor(8) as pool:
        burst = list(pool.map(lambda i: route(edge, f"o-many-{i}", [(sku, 1)]), range(1, 41)))
    assert all(r.status_code in (200, 409) for r in burst), [r.text for r in burst]
    ok = [r.json() for r in burst if r.status_code == 200]

    # What is left — free, or in an allotment — the next orders get, one at a time, until none
    # is left anywhere. (A 409 while an older allotment's release is on its way to the origin
    # is not the end: its units are about to be free again.)
    def exhausted() -> bool:
        caught_up(origin, edge)
        held = edge.http.get("/v1/sync/status").json()["allotments"]["held"]
        left = any(a["left"] for a in held if a["site_id"] == site)
        return stock(origin, site, sku)["available"] == 0 and not left

    for n in range(41, 200):
        caught_up(origin, edge)
        r = route(edge, f"o-many-{n}", [(sku, 1)])
        if r.status_code == 200:
            ok.append(r.json())
        elif exhausted():
            break
    assert len(ok) == 28, "30 units: 2 for the first order, then 28 orders of one"

    def all_held() -> bool:
        return all(decision(edge, d["decision_id"])["allocations"][0]["state"] == "held" for d in ok)

    wait_until(all_held, what="every drawn hold to reach the origin")
    for d in ok:
        assert hold(origin, d["allocations"][0]["reservation_id"]).json()["state"] == "held"
    assert stock(origin, site, sku)["available"] == 0 and allotted(edge, site, sku) == 0
    assert metric(edge, 'waypost_route_holds_total{source="allotment"}') >= 1


def test_a_drawn_hold_the_origin_refuses_reroutes(
    origin: Origin, cut_allotting: tuple[OriginProxy, Edge], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allotment was released and the stock sold before the drawn hold arrived: the origin
    refuses the batch, the edge places its holds one by one, and the refused one re-routes."""
    import edge.outbox

    _, edge_ = cut_allotting
    sku, site = stocked_at_one_site(origin, edge_, 40)
    other = north_sites(origin)[1]
    route(edge_, "o-gone-0", [(sku, 2)])
    wait_until(lambda: allotted(edge_, site, sku) > 0, what="an allotment")
    monkeypatch.setattr(edge.outbox, "SEND_LINGER_S", 1.0)  # time to take the stock away
    d = route(edge_, "o-gone", [(sku, 1)]).json()
    assert sites_of(d) == [site] and d["allocations"][0]["state"] == "drawn"
    allotment = decision(edge_, d["decision_id"])["history"][1]["detail"]
    r = origin.http.post(f"/v1/reservations/{allotment}/release", headers=origin.edge_auth())
    assert r.status_code == 200
    set_available(origin, site, sku, 0)
    set_available(origin, other, sku, 3)

    def settled() -> bool:
        now = decision(edge_, d["decision_id"])
        return now["attempt"] == 2 and now["reservation"] == "confirmed"

    wait_until(settled, what="the re-route")
    now = decision(edge_, d["decision_id"])
    events = [e["event"] for e in now["history"]]
    assert events[:3] == ["decided", "drawn", "confirmed"]
    assert events[3:] == ["refused", "rerouted", "placed", "confirmed"]
    assert sites_of(now) == [other]
    assert hold(origin, d["allocations"][0]["reservation_id"]).status_code == 404
    assert hold(origin, now["allocations"][0]["reservation_id"]).json()["state"] == "held"
