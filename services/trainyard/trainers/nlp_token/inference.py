"""Serving an nlp-token model: `load(files)` builds a `TokenPredictor` from the `model` artifact.

The artifact is untrusted data (a workload wrote it), so it is JSON and NumPy `.npy` arrays
only, read without pickle, every array's header checked against its dtype, shape and byte
size before NumPy allocates anything, and every index range-checked: anything inconsistent is
a ValueError. Decoding is first-order Viterbi in NumPy over the CRF's exported weights (the
same sums python-crfsuite's tagger makes, tested to agree with it).

`predict(queries, top_k)` splits each query on whitespace, exactly as the training CSV's
source column was split, and returns one tag per token; `top_k` does not apply to token
tagging (each token gets its single best-path tag) and is ignored.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trainyard.trainers.nlp_token.features import FEATURES_VERSION, sentence_features

MODEL_FORMAT = "trainyard.nlp_token.crf/1"
#: The most labels a model may have (the config allows fewer; this bounds the decoder's work).
MAX_LABELS = 1024
MAX_JSON_BYTES = 512 * 1024 * 1024
MODEL_FILES = (
    "model.json",
    "attributes.json",
    "state_indptr.npy",
    "state_labels.npy",
    "state_weights.npy",
    "transitions.npy",
)


def _npy(files: Mapping[str, bytes], name: str, dtype: str, ndim: int) -> npt.NDArray[Any]:
    """One array, its header checked before NumPy reads the data."""
    raw = files.get(name)
    if raw is None:
        raise ValueError(f"the model artifact has no {name}")
    buf = io.BytesIO(raw)
    try:
        major, _ = np.lib.format.read_magic(buf)
        if major == 1:
            shape, fortran, got = np.lib.format.read_array_header_1_0(buf)
        elif major in (2, 3):
            shape, fortran, got = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unknown .npy version {major}")
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid .npy array: {exc}") from exc
    if got != np.dtype(dtype) or fortran or len(shape) != ndim:
        raise ValueError(f"{name} must be a {ndim}-d {dtype} array, not {len(shape)}-d {got}")
    expected = math.prod(shape) * got.itemsize
    if len(raw) - buf.tell() != expected:
        raise ValueError(f"{name} declares shape {shape} but holds {len(raw) - buf.tell()} bytes")
    try:
        array: npt.NDArray[Any] = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid .npy array: {exc}") from exc
    return array


def _json(files: Mapping[str, bytes], name: str) -> Any:
    raw = files.get(name)
    if raw is None:
        raise ValueError(f"the model artifact has no {name}")
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"{name} is too large")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name} is not UTF-8 JSON: {exc}") from exc


@dataclass(frozen=True)
class CrfWeights:
    """A linear-chain CRF as arrays: state weights in CSR form by attribute (row a holds the
    labels and weights of attribute a), and label-to-label transition weights."""

    labels: list[str]
    attributes: list[str]
    state_indptr: npt.NDArray[np.int64]  # [n_attributes + 1]
    state_labels: npt.NDArray[np.int32]  # [nnz]
    state_weights: npt.NDArray[np.float64]  # [nnz]
    transitions: npt.NDArray[np.float64]  # [n_labels, n_labels], from → to

    def files(self, meta: Mapping[str, Any]) -> dict[str, bytes]:
        """The model artifact's files; `meta` is stored in model.json beside the format."""

        def npy(array: npt.NDArray[Any]) -> bytes:
            out = io.BytesIO()
            np.save(out, np.ascontiguousarray(array), allow_pickle=False)
            return out.getvalue()

        model = {
            **meta,
            "format": MODEL_FORMAT,
            "features_version": FEATURES_VERSION,
            "labels": self.labels,
        }
        return {
            "model.json": json.dumps(model, sort_keys=True).encode(),
            "attributes.json": json.dumps(self.attributes, ensure_ascii=False).encode(),
            "state_indptr.npy": npy(self.state_indptr),
            "state_labels.npy": npy(self.state_labels),
            "state_weights.npy": npy(self.state_weights),
            "transitions.npy": npy(self.transitions),
        }


def viterbi(scores: npt.NDArray[np.float64], transitions: npt.NDArray[np.float64]) -> list[int]:
    """The best label path of a [T, L] score matrix under [L, L] transitions. Ties go to the
    lowest label id, as in crfsuite's decoder (strict `>` while scanning upwards)."""
    length = scores.shape[0]
    if length == 0:
        return []
    delta = scores[0].copy()
    back = np.zeros(scores.shape, dtype=np.int64)
    for t in range(1, length):
        cand = delta[:, None] + transitions  # [from, to]
        back[t] = np.argmax(cand, axis=0)
        delta = cand[back[t], np.arange(cand.shape[1])] + scores[t]
    path = [int(np.argmax(delta))]
    for t in range(length - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    path.reverse()
    return path


class TokenPredictor:
    """Tags whitespace-split tokens with a CRF's best path."""

    def __init__(self, weights: CrfWeights, meta: Mapping[str, Any]) -> None:
        self.weights = weights
        self.meta = dict(meta)
        self._index = {a: i for i, a in enumerate(weights.attributes)}
        arrays = (
            weights.state_indptr,
            weights.state_labels,
            weights.state_weights,
            weights.transitions,
        )
        # Arrays, plus the attribute dict: roughly a str and a dict slot per attribute.
        self.nbytes = sum(a.nbytes for a in arrays) + sum(len(a) + 120 for a in weights.attributes)

    def tag(self, tokens: Sequence[str]) -> list[str]:
        w = self.weights
        n_labels = len(w.labels)
        scores = np.zeros((len(tokens), n_labels), dtype=np.float64)
        for t, attrs in enumerate(sentence_features(tokens)):
            for name in attrs:
                a = self._index.get(name)
                if a is None:
                    continue  # never seen in training: no weight, as in crfsuite
                lo, hi = w.state_indptr[a], w.state_indptr[a + 1]
                scores[t, w.state_labels[lo:hi]] += w.state_weights[lo:hi]
        return [w.labels[i] for i in viterbi(scores, w.transitions)]

    def predict(self, queries: Sequence[str], top_k: int) -> list[dict[str, Any]]:
        out = []
        for query in queries:
            tokens = query.split()
            out.append({"query": query, "tokens": tokens, "predicted_tags": self.tag(tokens)})
        return out


def load(files: Mapping[str, bytes]) -> TokenPredictor:
    """The predictor of a `model` artifact's files (path → bytes); ValueError if they are not
    a consistent model this version can serve."""
    meta = _json(files, "model.json")
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"model.json is not a {MODEL_FORMAT} model")
    if meta.get("features_version") != FEATURES_VERSION:
        raise ValueError(
            f"the model was trained with features version {meta.get('features_version')!r}; "
            f"this version computes version {FEATURES_VERSION}: retrain it"
        )
    labels = meta.get("labels")
    if (
        not isinstance(labels, list)
        or not 1 <= len(labels) <= MAX_LABELS
        or not all(isinstance(x, str) for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ValueError("model.json labels must be 1 to 1024 distinct strings")
    attributes = _json(files, "attributes.json")
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise ValueError("attributes.json must be a list of strings")
    if len(set(attributes)) != len(attributes):
        raise ValueError("attributes.json repeats an attribute")
    indptr = _npy(files, "state_indptr.npy", "<i8", 1)
    state_labels = _npy(files, "state_labels.npy", "<i4", 1)
    state_weights = _npy(files, "state_weights.npy", "<f8", 1)
    transitions = _npy(files, "transitions.npy", "<f8", 2)
    n_labels = len(labels)
    if transitions.shape != (n_labels, n_labels):
        raise ValueError(f"transitions.npy must be {n_labels}x{n_labels}")
    if indptr.shape != (len(attributes) + 1,):
        raise ValueError("state_indptr.npy must have one entry per attribute plus one")
    nnz = state_labels.shape[0]
    if state_weights.shape != (nnz,):
        raise ValueError("state_weights.npy and state_labels.npy differ in length")
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise ValueError("state_indptr.npy is not a monotone index into the state arrays")
    if nnz and (state_labels.min() < 0 or state_labels.max() >= n_labels):
        raise ValueError("state_labels.npy names a label the model does not have")
    if not (np.all(np.isfinite(state_weights)) and np.all(np.isfinite(transitions))):
        raise ValueError("the model's weights are not all finite")
    weights = CrfWeights(labels, attributes, indptr, state_labels, state_weights, transitions)
    return TokenPredictor(weights, meta)
