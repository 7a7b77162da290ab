"""Serving the models: verify a blob, smoke-test it, then predict with one onnxruntime session.

    delivery = DeliveryTimeModel.from_bytes(blob, card_json)   # raises ModelRefused
    bands = delivery.predict(sites, lat, lon, "dhl", placed_at, backlogs)   # one EtaBand per site

A model is served only when its blob's sha256 equals its card's, the card's feature schema is the
one `models.features` builds, and the card's test vectors reproduce within the card's tolerance;
otherwise `ModelRefused` names the model and what failed. Each model gets one `InferenceSession`
with one intra-op thread, built once; callers keep the object for the life of the release.
`load_shipped()` loads the artifacts committed in `models/artifacts/`.

This module needs onnxruntime and numpy, never scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.features import (
    DELIVERY,
    RECOMMEND,
    RETURNS,
    SCHEMAS,
    CustomerHistory,
    LineFacts,
    Matrix,
    RecommendationContext,
    delivery_features,
    recommendation_candidates,
    recommendation_features,
    return_features,
)
from sync.entities import Site

Array = npt.NDArray[Any]
INPUT = "features"


class ModelRefused(Exception):
    """A model that must not be served; the message names the model and the reason."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} refused: {reason}")
        self.model = model
        self.reason = reason


@dataclass(frozen=True)
class TestVector:
    inputs: list[float]  # one row, in the schema's feature order
    expected: dict[str, Any]  # output name → the output for that row (nested lists)


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    sha256: str
    schema_version: str
    features: tuple[str, ...]
    outputs: tuple[str, ...]  # the outputs test vectors check
    test_vectors: tuple[TestVector, ...]
    atol: float
    rtol: float
    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, data: bytes | str | Mapping[str, Any]) -> ModelCard:
        raw: Any = json.loads(data) if isinstance(data, bytes | str) else data
        name = str(raw.get("name", "?")) if isinstance(raw, Mapping) else "?"
        try:
            schema = raw["feature_schema"]
            return cls(
                name=name,
                version=str(raw["version"]),
                sha256=str(raw["sha256"]),
                schema_version=str(schema["version"]),
                features=tuple(schema["features"]),
                outputs=tuple(raw["outputs"]),
                test_vectors=tuple(
                    TestVector(inputs=[float(x) for x in v["inputs"]], expected=dict(v["expected"]))
                    for v in raw["test_vectors"]
                ),
                atol=float(raw["tolerance"]["atol"]),
                rtol=float(raw["tolerance"]["rtol"]),
                raw=raw,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelRefused(name, f"malformed card: {exc!r}") from None


def session_from_bytes(blob: bytes) -> Any:
    """An onnxruntime session on one intra-op thread (the edge serves many requests at once)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """A verified, smoke-tested ONNX model and its card."""

    def __init__(self, blob: bytes, card: ModelCard | bytes | str | Mapping[str, Any]) -> None:
        card = card if isinstance(card, ModelCard) else ModelCard.parse(card)
        self.card = card
        digest = hashlib.sha256(blob).hexdigest()
        if digest != card.sha256:
            raise ModelRefused(card.name, f"sha256 {digest} does not match the card's {card.sha256}")
        schema = SCHEMAS.get(card.name)
        if schema is None:
            raise ModelRefused(card.name, "no feature schema of that name")
        if (card.schema_version, card.features) != (schema.version, schema.names):
            raise ModelRefused(
                card.name, f"feature schema {card.schema_version} is not this build's {schema.version}"
            )
        try:
            self.session = session_from_bytes(blob)
        except Exception as exc:  # onnxruntime raises its own types for a bad graph
            raise ModelRefused(card.name, f"onnxruntime cannot load it: {exc}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = set(card.outputs) - set(self.output_names)
        if missing:
            raise ModelRefused(card.name, f"outputs {sorted(missing)} are missing")
        self._smoke_test()

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def sha256(self) -> str:
        return self.card.sha256

    def _smoke_test(self) -> None:
        if not self.card.test_vectors:
            raise ModelRefused(self.name, "the card has no test vectors")
        for i, vector in enumerate(self.card.test_vectors):
            got = self.run(np.asarray([vector.inputs], dtype=np.float32))
            for output in self.card.outputs:
                expected = np.asarray(vector.expected.get(output), dtype=np.float64)
                actual = got[output].astype(np.float64)
                ok = expected.shape == actual.shape and np.allclose(
                    actual, expected, atol=self.card.atol, rtol=self.card.rtol
                )
                if not ok:
                    raise ModelRefused(
                        self.name,
                        f"test vector {i} output {output!r}: expected {expected.tolist()}, "
                        f"got {actual.tolist()}",
                    )

    def run(self, x: Matrix) -> dict[str, Array]:
        """Run the graph on a float32 matrix whose columns follow the card's features."""
        outputs = self.session.run(self.output_names, {INPUT: x})
        return dict(zip(self.output_names, outputs, strict=True))


class ServedModel:
    """A typed wrapper for one of the three models."""

    NAME: ClassVar[str]

    def __init__(self, model: OnnxModel) -> None:
        if model.name != self.NAME:
            raise ModelRefused(model.name, f"is not a {self.NAME} model")
        self.model = model

    @classmethod
    def from_bytes(cls, blob: bytes, card: bytes | str | Mapping[str, Any]) -> Self:
        return cls(OnnxModel(blob, card))

    @classmethod
    def shipped(cls) -> Self:
        """The artifact committed in `models/artifacts/`."""
        return cls.from_bytes(*shipped_artifact(cls.NAME))

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def sha256(self) -> str:
        return self.model.sha256


@dataclass(frozen=True)
class EtaBand:
    """Predicted hours from placing the order to delivery: 10th, 50th and 90th percentiles."""

    p10: float
    p50: float
    p90: float


class DeliveryTimeModel(ServedModel):
    NAME = DELIVERY.model

    def predict_matrix(self, x: Matrix) -> tuple[Array, Array, Array]:
        """(p10, p50, p90) per row; the graph itself guarantees p10 ≤ p50 ≤ p90."""
        out = self.model.run(x)
        return out["p10"].reshape(-1), out["p50"].reshape(-1), out["p90"].reshape(-1)

    def predict(
        self,
        sites: Sequence[Site],
        dest_lat: float,
        dest_lon: float,
        carrier: str,
        placed_at: datetime,
        backlogs: Sequence[int],
    ) -> list[EtaBand]:
        """One band per candidate site for one order, in the order of `sites`."""
        if not sites:
            return []
        x = delivery_features(sites, dest_lat, dest_lon, carrier, placed_at, backlogs)
        p10, p50, p90 = self.predict_matrix(x)
        return [EtaBand(float(a), float(b), float(c)) for a, b, c in zip(p10, p50, p90, strict=True)]


class ReturnRiskModel(ServedModel):
    NAME = RETURNS.model

    def predict_matrix(self, x: Matrix) -> Array:
        return self.model.run(x)["probabilities"][:, 1]

    def predict(self, lines: Sequence[LineFacts], history: CustomerHistory) -> list[float]:
        """The chance each line of one order comes back; `history` is the customer's past."""
        if not lines:
            return []
        return [float(p) for p in self.predict_matrix(return_features(lines, history))]


class RecommendationRanker(ServedModel):
    NAME = RECOMMEND.model

    @property
    def replenishment_days(self) -> dict[str, float]:
        """category → days between re-purchases, as estimated from the training history."""
        return {str(k): float(v) for k, v in self.model.card.raw.get("replenishment_days", {}).items()}

    def score_matrix(self, x: Matrix) -> Array:
        return self.model.run(x)["probabilities"][:, 1]

    def rank(
        self,
        anchor_skus: Sequence[str],
        history: CustomerHistory,
        at: datetime,
        ctx: RecommendationContext,
        k: int = 5,
    ) -> list[tuple[str, float]]:
        """The `k` best in-stock products for a shopper after an order, best first.

        `history` includes the order itself; `ctx.region_stock` decides what is in stock."""
        candidates = recommendation_candidates(anchor_skus, history, ctx)
        if not candidates:
            return []
        scores = self.score_matrix(recommendation_features(anchor_skus, candidates, history, at, ctx))
        order = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), candidates[i]))
        return [(candidates[i], float(scores[i])) for i in order[:k]]


MODELS: dict[str, type[ServedModel]] = {
    DeliveryTimeModel.NAME: DeliveryTimeModel,
    ReturnRiskModel.NAME: ReturnRiskModel,
    RecommendationRanker.NAME: RecommendationRanker,
}


def shipped_artifact(name: str) -> tuple[bytes, bytes]:
    """(blob, card JSON) of a model committed in `models/artifacts/`."""
    folder = resources.files("models") / "artifacts"
    return (folder / f"{name}.onnx").read_bytes(), (folder / f"{name}.card.json").read_bytes()


@dataclass(frozen=True)
class ShippedModels:
    delivery: DeliveryTimeModel
    returns: ReturnRiskModel
    recommender: RecommendationRanker


def load_shipped() -> ShippedModels:
    """All three committed models, verified and smoke-tested."""
    return ShippedModels(
        delivery=DeliveryTimeModel.shipped(),
        returns=ReturnRiskModel.shipped(),
        recommender=RecommendationRanker.shipped(),
    )
