"""The edge's models: releases from `global`, blobs by sha256, verified, smoke-tested, swapped.

For every release in the replica (active, canary or shadow) the shelf fetches the blob — from its
own disk when it has it, else from the origin — checks its sha256 against the card, runs the
card's test vectors through onnxruntime (`models.serving`), and only then swaps it in, keeping
the version it replaces for rollback. A release that fails is refused, kept out of service and
reported (status and metrics); the version already serving stays. Blobs are kept on disk, so a
restarted edge serves its models with the origin down.

Canary: an order goes to the canary when a hash of its id falls below the canary's fraction, so
the same order always gets the same model and the split is deterministic.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from anyio import to_thread

from edge.readmodel import ReadModel
from models.serving import MODELS, ModelRefused, ServedModel
from sync.client import FeedClient, OriginError
from sync.entities import ChangeKinds, ModelRelease, decode_entity

log = logging.getLogger("waypost.edge.models")


class TamperedBlob(ModelRefused):
    """The fetched bytes do not hash to the release's sha256."""


def release_id(r: ModelRelease) -> str:
    return f"{r.name}/{r.version}@{r.sha256}"


def canary_share(order_id: str) -> float:
    """A stable number in [0, 1) for an order id."""
    digest = hashlib.blake2b(order_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Loaded:
    release: ModelRelease
    model: ServedModel

    @property
    def version(self) -> str:
        return self.release.version


@dataclass
class ReleaseState:
    name: str
    version: str
    sha256: str
    rollout: str
    state: str = "pending"  # pending, loaded, refused, unavailable
    error: str | None = None


@dataclass
class Slot:
    """What serves one model name."""

    active: Loaded | None = None
    previous: Loaded | None = None
    canary: Loaded | None = None
    shadows: list[Loaded] = field(default_factory=list)


class ModelShelf:
    def __init__(self, client: FeedClient, model: ReadModel, global_bucket: str, data_dir: Path) -> None:
        self.client = client
        self.model = model
        self.global_bucket = global_bucket
        self.dir = data_dir / "models"
        self.slots: dict[str, Slot] = {}
        # Both by release (name, version, sha256): the same blob may come with another card.
        self.states: dict[str, ReleaseState] = {}
        self.refused = 0
        self._loaded: dict[str, Loaded] = {}
        self._wake = asyncio.Event()
        self.reconciled = 0

    def notify(self, kinds: set[str] | None) -> None:
        """A follower listener: reconcile when releases may have changed."""
        if kinds is None or ChangeKinds.MODEL_RELEASE in kinds:
            self._wake.set()

    def releases(self) -> list[ModelRelease]:
        table = self.model.table(self.global_bucket, ChangeKinds.MODEL_RELEASE)
        return [decode_entity(ChangeKinds.MODEL_RELEASE, body) for body in list(table.values())]

    async def run(self) -> None:
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                retry = await self.reconcile()
            except Exception:  # keep serving what is loaded; try again on the next change
                log.exception("reconciling model releases failed")
                retry = True
            if retry:
                asyncio.get_running_loop().call_later(5.0, self._wake.set)

    async def reconcile(self) -> bool:
        """Load what the registry lists, then re-point the slots. True if something must be retried."""
        retry = False
        releases = [r for r in self.releases() if r.rollout != "retired"]
        for r in releases:
            key = release_id(r)
            known = self.states.get(key)
            if key in self._loaded or (known is not None and known.state == "refused"):
                continue
            state = self.states.setdefault(key, ReleaseState(r.name, r.version, r.sha256, r.rollout))
            try:
                self._loaded[key] = await self._load(r)
                state.state, state.error = "loaded", None
            except TamperedBlob as exc:
                # The bytes that arrived are not the release's: refuse them, fetch again later.
                state.state, state.error = "unavailable", exc.reason
                self.refused += 1
                retry = True
                log.warning("%s", exc)
            except ModelRefused as exc:
                state.state, state.error = "refused", exc.reason
                self.refused += 1
                log.warning("%s", exc)
            except (OriginError, OSError) as exc:
                state.state, state.error = "unavailable", f"{type(exc).__name__}: {exc}"
                retry = True
        for r in releases:
            if release_id(r) in self.states:
                self.states[release_id(r)].rollout = r.rollout
        self._point(releases)
        self.reconciled += 1
        return retry

    def _point(self, releases: list[ModelRelease]) -> None:
        names = {r.name for r in releases} | set(self.slots)
        for name in names:
            slot = self.slots.setdefault(name, Slot())
            mine = sorted((r for r in releases if r.name == name), key=lambda r: r.released_at)
            # Pair each loaded model with its release as it is now (its rollout may have changed).
            loaded = [
                Loaded(r, self._loaded[release_id(r)].model) for r in mine if release_id(r) in self._loaded
            ]
            active = [m for m in loaded if m.release.rollout == "active"]
            if active and (
                slot.active is None or release_id(active[-1].release) != release_id(slot.active.release)
            ):
                slot.previous, slot.active = slot.active, active[-1]
            canaries = [m for m in loaded if m.release.rollout == "canary"]
            slot.canary = canaries[-1] if canaries else None
            slot.shadows = [m for m in loaded if m.release.rollout == "shadow"]

    async def _load(self, r: ModelRelease) -> Loaded:
        kind = MODELS.get(r.name)
        if kind is None:
            raise ModelRefused(r.name, "this edge does not know how to serve it")
        path = self.dir / f"{r.sha256}.onnx"
        blob = await to_thread.run_sync(_read_if_intact, path, r.sha256)
        if blob is None:
            blob = await self.client.model_blob(r.sha256)
            got = hashlib.sha256(blob).hexdigest()
            if got != r.sha256:
                raise TamperedBlob(r.name, f"the blob fetched has sha256 {got}, the release says {r.sha256}")
        served = await to_thread.run_sync(kind.from_bytes, blob, r.card)  # verifies and smoke-tests
        await to_thread.run_sync(_write_atomically, path, blob)
        log.info("loaded %s %s (%s)", r.name, r.version, r.rollout)
        return Loaded(r, served)

    def settled(self) -> bool:
        """Every release the replica lists was tried (loaded, refused or unreachable)."""
        if self._wake.is_set():
            return False
        for r in self.releases():
            state = self.states.get(release_id(r))
            if r.rollout != "retired" and (state is None or state.state == "pending"):
                return False
        return True

    def pick(self, name: str, order_id: str) -> tuple[Loaded | None, list[Loaded]]:
        """The release that decides for this order (canary or active), and the shadows."""
        slot = self.slots.get(name)
        if slot is None:
            return None, []
        if slot.canary is not None and canary_share(order_id) < slot.canary.release.fraction:
            return slot.canary, slot.shadows
        return slot.active, slot.shadows

    def active(self, name: str) -> Loaded | None:
        slot = self.slots.get(name)
        return slot.active if slot else None

    def status(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for st in sorted(self.states.values(), key=lambda s: (s.name, s.version)):
            slot = self.slots.get(st.name, Slot())
            serving = [
                role
                for role, m in (("active", slot.active), ("previous", slot.previous), ("canary", slot.canary))
                if m is not None and (m.release.version, m.release.sha256) == (st.version, st.sha256)
            ] + [
                "shadow"
                for m in slot.shadows
                if (m.release.version, m.release.sha256) == (st.version, st.sha256)
            ]
            out.append({**st.__dict__, "serving": serving})
        return out


def _read_if_intact(path: Path, sha256: str) -> bytes | None:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    return blob if hashlib.sha256(blob).hexdigest() == sha256 else None


def _write_atomically(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
