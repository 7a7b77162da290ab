"""Model releases reach edges verified: a tampered blob or a failing model is refused."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from models.serving import shipped_artifact
from tests.conftest import Edge, Origin, OriginProxy, ServerThread, wait_until


def models_status(edge: Edge) -> list[dict[str, Any]]:
    return list(edge.http.get("/v1/sync/status").json()["models"])


def serving(edge: Edge, name: str) -> dict[str, str]:
    """role → version of what serves `name`."""
    return {role: m["version"] for m in models_status(edge) if m["name"] == name for role in m["serving"]}


def release(
    origin: Origin,
    name: str,
    version: str,
    rollout: str = "active",
    *,
    new_bytes: bool = False,
    **card_changes: Any,
) -> Any:
    blob, card_json = shipped_artifact(name)
    card = {**json.loads(card_json), "version": version, **card_changes}
    if new_bytes:
        # Another blob of the same model: an unknown protobuf field (99, varint 1) onnxruntime skips.
        blob += b"\x98\x06\x01"
        card["sha256"] = hashlib.sha256(blob).hexdigest()
    body = {"blob_base64": base64.b64encode(blob).decode(), "card": card, "rollout": rollout}
    return origin.http.post("/v1/models", json=body, headers=origin.admin())


def test_the_seeded_models_are_loaded_and_serving(origin: Origin, start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(origin.url)
    for name in ("delivery_time", "return_risk", "recommender"):
        wait_until(lambda name=name: "active" in serving(edge, name), what=f"{name} active")
    assert 'waypost_model_serving{name="delivery_time"' in edge.http.get("/metrics").text


def test_a_model_failing_its_test_vectors_is_refused_and_the_active_one_stays(
    origin: Origin, start_edge: Callable[..., Edge]
) -> None:
    edge = start_edge(origin.url)
    wait_until(lambda: "active" in serving(edge, "delivery_time"), what="the seeded model")
    before = serving(edge, "delivery_time")["active"]
    _, card_json = shipped_artifact("delivery_time")
    vectors = json.loads(card_json)["test_vectors"]
    broken = json.loads(json.dumps(vectors))
    first = broken[0]["expected"] if isinstance(broken[0], dict) and "expected" in broken[0] else None
    assert first is not None, "cards carry expected outputs"
    for out, value in first.items():
        first[out] = json.loads(json.dumps(value).replace("0", "9").replace("1", "8"))
    r = release(origin, "delivery_time", "9.9-broken", test_vectors=broken)
    assert r.status_code == 201, r.text

    def refused() -> bool:
        return any(m["version"] == "9.9-broken" and m["state"] == "refused" for m in models_status(edge))

    wait_until(refused, what="the refusal")
    assert serving(edge, "delivery_time")["active"] == before
    assert "waypost_model_refused_total 1.0" in edge.http.get("/metrics").text


def test_a_blob_that_does_not_match_its_card_is_refused_by_the_origin(origin: Origin) -> None:
    r = release(origin, "return_risk", "2.0-wrong", sha256="0" * 64)
    assert r.status_code == 422 and r.json()["error"] == "sha256_mismatch"


def test_a_blob_tampered_in_transit_is_refused_then_fetched_again(
    origin: Origin, proxy: tuple[OriginProxy, ServerThread], start_edge: Callable[..., Edge]
) -> None:
    p, server = proxy

    def flip(path: str, body: bytes) -> bytes | None:
        if not path.startswith("/v1/models/"):
            return None
        return body[:100] + bytes([body[100] ^ 1]) + body[101:]

    edge = start_edge(server.url)
    wait_until(lambda: "active" in serving(edge, "recommender"), what="the seeded model")
    p.tamper = flip
    assert release(origin, "recommender", "2.0-new", new_bytes=True).status_code == 201
    wait_until(
        lambda: any(
            m["version"] == "2.0-new" and "sha256" in (m["error"] or "") for m in models_status(edge)
        ),
        what="the tampered blob to be refused",
    )
    assert serving(edge, "recommender")["active"] != "2.0-new"
    wait_until(
        lambda: serving(edge, "recommender").get("active") == "2.0-new", timeout=30, what="a clean fetch"
    )
    assert serving(edge, "recommender")["previous"] != "2.0-new", "the previous version stays for rollback"


def test_a_restarted_edge_serves_its_models_from_disk_with_the_origin_down(
    origin: Origin, proxy: tuple[OriginProxy, ServerThread], start_edge: Callable[..., Edge]
) -> None:
    p, server = proxy
    first = start_edge(server.url, name="disk")
    wait_until(lambda: "active" in serving(first, "delivery_time"), what="models loaded")
    first.http.close()
    first.server.__exit__()
    p.down = True
    again = start_edge(server.url, name="disk")
    wait_until(lambda: "active" in serving(again, "delivery_time"), what="models from disk")
