"""The model registry: releases travel to edges in `global`; blobs are fetched by sha256.

A release names a model version and how it rolls out: `active` (decides), `canary` (decides a
deterministic share of orders), `shadow` (scores every request, decides nothing). Registering a
new active version retires the previous active one; it stays in the registry (and on edges'
disks), so rolling back is registering it as active again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from origin.errors import InvalidInput, NotFound, Unprocessable
from origin.http import decode_json, json_response, read_body, require
from origin.store import Store, Tx
from sync.entities import (
    GLOBAL_BUCKET,
    ChangeKinds,
    ModelRelease,
    Rollout,
    decode_entity,
    encode_entity,
)

MAX_BLOB = 16 * 1024 * 1024


class NewRelease(msgspec.Struct, frozen=True, kw_only=True):
    blob_base64: str
    card: dict[str, Any]
    rollout: Rollout = "active"
    fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0


def release_key(name: str, version: str) -> str:
    return f"{name}/{version}"


def register(tx: Tx, blob: bytes, card: dict[str, Any], rollout: Rollout, fraction: float) -> ModelRelease:
    """Store a blob and publish its release; the card must name the blob's sha256."""
    sha = hashlib.sha256(blob).hexdigest()
    name, version = card.get("name"), card.get("version")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,64}", name):
        raise InvalidInput("card.name must be a model name like 'delivery_time'", field="card.name")
    if not isinstance(version, str) or not version:
        raise InvalidInput("card.version is required", field="card.version")
    if card.get("sha256") != sha:
        raise Unprocessable(
            f"the blob's sha256 is {sha}, the card says {card.get('sha256')!r}", code="sha256_mismatch"
        )
    schema = card.get("feature_schema", {})
    schema_version = str(schema.get("version", "")) if isinstance(schema, dict) else ""
    if rollout != "canary":
        fraction = 1.0
    tx.execute(
        "INSERT INTO model_blob (sha256, blob) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING", (sha, blob)
    )
    if rollout == "active":
        for key, body in tx.execute(
            "SELECT key, body FROM entity WHERE bucket = ? AND kind = ?",
            (GLOBAL_BUCKET, ChangeKinds.MODEL_RELEASE),
        ).fetchall():
            other: ModelRelease = decode_entity(ChangeKinds.MODEL_RELEASE, bytes(body))
            if other.name == name and other.rollout == "active" and other.version != version:
                retired = msgspec.structs.replace(other, rollout="retired")
                tx.put(GLOBAL_BUCKET, ChangeKinds.MODEL_RELEASE, key, encode_entity(retired))
    release = ModelRelease(
        name=name,
        version=version,
        sha256=sha,
        schema_version=schema_version,
        rollout=rollout,
        fraction=fraction,
        card=json.dumps(card, sort_keys=True),
        released_at=datetime.fromtimestamp(tx.now, UTC),
    )
    tx.put(GLOBAL_BUCKET, ChangeKinds.MODEL_RELEASE, release_key(name, version), encode_entity(release))
    return release


def release_json(r: ModelRelease) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(r).items() if k != "card"}


async def create_release(request: Request) -> Response:
    require(request, "admin")
    store: Store = request.app.state.store
    req = decode_json(await read_body(request, MAX_BLOB * 4 // 3 + 1024 * 1024), NewRelease)
    try:
        blob = base64.b64decode(req.blob_base64, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: a character outside ASCII
        raise InvalidInput(f"blob_base64 is not base64: {exc}", field="blob_base64") from None
    if not blob or len(blob) > MAX_BLOB:
        raise InvalidInput(f"the blob must be 1..{MAX_BLOB} bytes", field="blob_base64")

    def work() -> dict[str, Any]:
        with store.transaction() as tx:
            return release_json(register(tx, blob, req.card, req.rollout, req.fraction))

    return json_response(await to_thread.run_sync(work), 201)


async def fetch_blob(request: Request) -> Response:
    require(request, "edge")
    store: Store = request.app.state.store
    sha = request.path_params["sha256"]

    def read() -> bytes | None:
        with store.reader() as r:
            row = r.one("SELECT blob FROM model_blob WHERE sha256 = ?", (sha,))
        return None if row is None else bytes(row[0])

    blob = await to_thread.run_sync(read)
    if blob is None:
        raise NotFound(f"no model blob {sha}", code="unknown_model")
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"Cache-Control": "public, max-age=31536000, immutable", "ETag": f'"{sha}"'},
    )


def register_shipped(tx: Tx) -> list[str]:
    """Register the models committed in models/artifacts as active, unless a release exists."""
    from models.serving import shipped_artifact

    done = []
    for name in ("delivery_time", "return_risk", "recommender"):
        exists = tx.one(
            "SELECT 1 FROM entity WHERE bucket = ? AND kind = ? AND key LIKE ?",
            (GLOBAL_BUCKET, ChangeKinds.MODEL_RELEASE, f"{name}/%"),
        )
        if exists is None:
            blob, card = shipped_artifact(name)
            register(tx, blob, json.loads(card), "active", 1.0)
            done.append(name)
    return done
