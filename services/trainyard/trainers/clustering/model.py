"""Data types of the clustering contract and the saved model (npy + json, no pickle)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainyard.trainers.clustering.features import Featurizer
from trainyard.trainers.embeddings import load_encoder

SUPPORTED_LANGUAGES = ("en-US", "tr-TR", "ar-SA", "fr-FR", "nl-NL", "it-IT")

MANIFEST = "model.json"
CENTROIDS = "centroids.npy"
LEXICAL_CENTROIDS = "lexical_centroids.npy"
FEATURE_ARRAYS = ("word_idf", "char_idf", "svd_components")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Utterance:
    text: str
    intent: str | None
    source: str  # "dialogue" | "intent"


@dataclass(frozen=True)
class ClusteringParams:
    language_code: str
    num_clusters: int  # 0 = automatic k
    seed: int = 0


@dataclass(frozen=True)
class Assignment:
    cluster_id: int
    label: str
    score: float  # in [0, 1]


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: int
    label: str
    size: int
    keywords: list[str]
    representatives: list[str]
    intent: str | None


@dataclass(frozen=True)
class TrainResult:
    metrics: list[tuple[str, float]]
    clusters: list[ClusterInfo]


class ModelFormatError(ValueError):
    """The model directory is missing, incomplete or not a clustering model."""


class ClusterModel:
    """A trained clustering: featurizer + unit centroids; assigns texts to the nearest one.

    Centroids are kept twice: in the combined space (lexical + dense embedding) and in the lexical
    space alone, so a model trained with an encoder still serves where that encoder is missing."""

    def __init__(
        self,
        featurizer: Featurizer,
        centroids: np.ndarray,
        lexical_centroids: np.ndarray,
        infos: list[ClusterInfo],
        metrics: list[tuple[str, float]],
    ) -> None:
        self._featurizer = featurizer
        self._centroids = centroids
        self._lexical_centroids = lexical_centroids
        self._infos = infos
        self.metrics = metrics

    def assign(self, texts: Sequence[str]) -> list[Assignment]:
        if not texts:
            return []
        if self._featurizer.encoder is not None:
            vectors = self._featurizer.transform(list(texts))
            sims = vectors @ self._centroids.T
        else:
            vectors = self._featurizer.lexical(list(texts))
            sims = vectors @ self._lexical_centroids.T
        best = np.argmax(sims, axis=1)
        out: list[Assignment] = []
        for row, index in enumerate(best):
            info = self._infos[int(index)]
            # Cosine similarity of unit vectors is in [-1, 1]; map it onto [0, 1].
            score = float(np.clip((sims[row, index] + 1.0) / 2.0, 0.0, 1.0))
            out.append(Assignment(cluster_id=info.cluster_id, label=info.label, score=score))
        return out

    def clusters(self) -> list[ClusterInfo]:
        return list(self._infos)

    def save(self, model_dir: Path) -> None:
        model_dir.mkdir(parents=True, exist_ok=True)
        # A stale manifest would make half-rewritten files look complete: drop it first.
        (model_dir / MANIFEST).unlink(missing_ok=True)
        arrays = self._featurizer.arrays()
        for name, array in arrays.items():
            np.save(model_dir / f"{name}.npy", array, allow_pickle=False)
        np.save(model_dir / CENTROIDS, self._centroids.astype(np.float32), allow_pickle=False)
        np.save(
            model_dir / LEXICAL_CENTROIDS,
            self._lexical_centroids.astype(np.float32),
            allow_pickle=False,
        )
        manifest = {
            "format": "trainyard-clustering",
            "version": FORMAT_VERSION,
            "libraries": _library_versions(),
            "featurizer": self._featurizer.config(),
            "arrays": sorted(arrays),
            "clusters": [
                {
                    "cluster_id": c.cluster_id,
                    "label": c.label,
                    "size": c.size,
                    "keywords": c.keywords,
                    "representatives": c.representatives,
                    "intent": c.intent,
                }
                for c in self._infos
            ],
            "metrics": [[k, v] for k, v in self.metrics],
        }
        # The manifest is written last, through a rename: a directory without it is incomplete.
        tmp = model_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        tmp.replace(model_dir / MANIFEST)


def load_model(model_dir: Path) -> ClusterModel:
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        raise ModelFormatError("the model directory has no complete clustering model")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != "trainyard-clustering":
            raise ModelFormatError("not a clustering model")
        # Only the file names this module writes: a manifest never chooses a path.
        arrays = {
            name: np.load(model_dir / f"{name}.npy", allow_pickle=False)
            for name in FEATURE_ARRAYS
            if name in manifest["arrays"]
        }
        config = manifest["featurizer"]
        encoder_name = config.get("encoder")
        # The encoder it was trained with, when this process has it; else lexical centroids.
        encoder = load_encoder(str(encoder_name)) if encoder_name else None
        featurizer = Featurizer.from_saved(config, arrays, encoder)
        centroids = np.load(model_dir / CENTROIDS, allow_pickle=False).astype(np.float32)
        lexical = np.load(model_dir / LEXICAL_CENTROIDS, allow_pickle=False).astype(np.float32)
        infos = [
            ClusterInfo(
                cluster_id=int(c["cluster_id"]),
                label=str(c["label"]),
                size=int(c["size"]),
                keywords=[str(k) for k in c["keywords"]],
                representatives=[str(r) for r in c["representatives"]],
                intent=None if c["intent"] is None else str(c["intent"]),
            )
            for c in manifest["clusters"]
        ]
        metrics = [(str(k), float(v)) for k, v in manifest["metrics"]]
        if len(infos) == 0 or len(centroids) != len(infos) or len(lexical) != len(infos):
            raise ModelFormatError("the clustering model's centroids and clusters differ")
        if lexical.shape[1] != featurizer.lexical_width():
            raise ModelFormatError("the clustering model's centroids do not fit its features")
    except ModelFormatError:
        raise
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFormatError("the clustering model files are unreadable") from exc
    return ClusterModel(featurizer, centroids, lexical, infos, metrics)


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("numpy", "scikit-learn", "PyStemmer", "stop-words"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions
