"""The text classifier: hashed word uni+bigram TF-IDF features and a softmax regression trained
with (lazy) Adam, by mini-batches, so the same code trains on a matrix in memory or on chunks
streamed from disk, and continues from a previous model (warm start).

Features: scikit-learn's `HashingVectorizer` (a pure function of its parameters: nothing to fit,
so the artifact only names the parameters), log-scaled term counts (sublinear tf), IDF weights
from document frequencies counted over the training data, then L2 normalisation. The artifact is
data only: `model.json` (labels, feature parameters, document count) and NumPy arrays (document
frequencies, the non-zero weight rows, the bias), read back with `allow_pickle=False` and checked
for shape, dtype and consistency (`TextModel.from_files`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

FORMAT = 1
MODEL_JSON = "model.json"
DOC_FREQ = "doc_freq.npy"
WEIGHT_ROWS = "weight_rows.npy"
WEIGHTS = "weights.npy"
BIAS = "bias.npy"
FILES = (MODEL_JSON, DOC_FREQ, WEIGHT_ROWS, WEIGHTS, BIAS)
MAX_MODEL_JSON_BYTES = 4 * 1024 * 1024
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 1000
#: Hash space bounds (per model), and the weight matrix bound that picks the hash space for
#: many classes: features x classes floats, times three while training (Adam's moments).
MIN_FEATURES = 1 << 10
MAX_FEATURES = 1 << 22
DEFAULT_FEATURES = 1 << 20
MAX_WEIGHT_CELLS = 1 << 24

FloatArray = npt.NDArray[np.float32]


def features_for(n_classes: int) -> int:
    """The hash space for a model of up to `n_classes` classes: the default, halved until the
    weight matrix stays under MAX_WEIGHT_CELLS (memory while training is 3x that, in float32)."""
    n = DEFAULT_FEATURES
    while n > MIN_FEATURES and n * max(n_classes, 1) > MAX_WEIGHT_CELLS:
        n //= 2
    return n


@dataclass(frozen=True)
class FeatureSpec:
    """What turns a text into a sparse count vector; fixed for a model and its descendants."""

    n_features: int = DEFAULT_FEATURES
    ngram_max: int = 2

    def vectorizer(self) -> HashingVectorizer:
        return HashingVectorizer(
            ngram_range=(1, self.ngram_max),
            n_features=self.n_features,
            alternate_sign=False,
            norm=None,
            lowercase=True,
            dtype=np.float32,
        )

    def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Raw hashed term counts, one row per text."""
        return sp.csr_matrix(self.vectorizer().transform(texts))

    def to_json(self) -> dict[str, Any]:
        return {
            "hashing": "sklearn-murmurhash3",
            "n_features": self.n_features,
            "ngram_range": [1, self.ngram_max],
            "analyzer": "word",
            "lowercase": True,
        }

    @classmethod
    def from_json(cls, raw: Any) -> FeatureSpec:
        if not isinstance(raw, dict):
            raise ValueError("model.json: features must be an object")
        n = raw.get("n_features")
        ngram = raw.get("ngram_range")
        if (
            isinstance(n, bool)
            or not isinstance(n, int)
            or not MIN_FEATURES <= n <= MAX_FEATURES
            or n & (n - 1)
        ):
            raise ValueError("model.json: features.n_features must be a power of two in range")
        if (
            not isinstance(ngram, list)
            or len(ngram) != 2
            or ngram[0] != 1
            or not isinstance(ngram[1], int)
            or isinstance(ngram[1], bool)
            or not 1 <= ngram[1] <= 3
        ):
            raise ValueError("model.json: features.ngram_range must be [1, 1..3]")
        if raw.get("analyzer") != "word" or raw.get("hashing") != "sklearn-murmurhash3":
            raise ValueError("model.json: unsupported feature function")
        return cls(n, int(ngram[1]))


def document_frequencies(counts: sp.csr_matrix) -> npt.NDArray[np.int64]:
    """How many rows each feature occurs in."""
    return np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.int64)


def idf_weights(doc_freq: npt.NDArray[np.int64], n_docs: int) -> FloatArray:
    """Smoothed IDF, as scikit-learn's TfidfTransformer(smooth_idf=True) computes it."""
    idf: FloatArray = (np.log((1.0 + n_docs) / (1.0 + doc_freq)) + 1.0).astype(np.float32)
    return idf


def tfidf(counts: sp.csr_matrix, idf: FloatArray) -> sp.csr_matrix:
    """Sublinear tf x idf, L2-normalised rows."""
    x = counts.astype(np.float32, copy=True)
    np.log1p(x.data, out=x.data)
    x = sp.csr_matrix(x.multiply(idf[np.newaxis, :]))
    return sp.csr_matrix(normalize(x, copy=False))


def softmax(logits: FloatArray) -> FloatArray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    out: FloatArray = z
    return out


@dataclass
class TextModel:
    """A trained (or being trained) classifier: labels, features, IDF statistics and weights."""

    labels: list[str]
    spec: FeatureSpec
    doc_freq: npt.NDArray[np.int64]
    n_docs: int
    weights: FloatArray  # (n_features, n_labels), dense while training
    bias: FloatArray  # (n_labels,)
    info: dict[str, Any] = field(default_factory=dict)
    _idf: FloatArray | None = None
    _sparse: sp.csr_matrix | None = None

    @classmethod
    def new(cls, labels: Sequence[str], spec: FeatureSpec) -> TextModel:
        k = len(labels)
        return cls(
            list(labels),
            spec,
            np.zeros(spec.n_features, np.int64),
            0,
            np.zeros((spec.n_features, k), np.float32),
            np.zeros(k, np.float32),
        )

    def add_labels(self, labels: Sequence[str]) -> None:
        """Append labels not yet known (warm start with new classes: their weights start at 0)."""
        new = [label for label in labels if label not in self.labels]
        if not new:
            return
        self.labels += new
        self.weights = np.hstack(
            [self.weights, np.zeros((self.weights.shape[0], len(new)), np.float32)]
        )
        self.bias = np.concatenate([self.bias, np.zeros(len(new), np.float32)])
        self._sparse = None

    def idf(self) -> FloatArray:
        if self._idf is None:
            self._idf = idf_weights(self.doc_freq, self.n_docs)
        return self._idf

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        return tfidf(self.spec.counts(texts), self.idf())

    def _weight_matrix(self) -> sp.csr_matrix:
        if self._sparse is None:
            self._sparse = sp.csr_matrix(self.weights)
        return self._sparse

    def weights_to_serving(self) -> None:
        """Keep only the sparse weights (what predictions use); the model no longer trains."""
        self._weight_matrix()
        self.weights = np.zeros((0, len(self.labels)), np.float32)

    def probabilities(self, x: sp.csr_matrix) -> FloatArray:
        logits = np.asarray((x @ self._weight_matrix()).todense(), dtype=np.float32) + self.bias
        return softmax(logits)

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        return self.probabilities(self.features(texts))

    @property
    def nbytes(self) -> int:
        m = self._weight_matrix()
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes + self.doc_freq.nbytes * 2)

    # ---- the artifact ----------------------------------------------------------------------

    def to_files(self) -> dict[str, bytes]:
        rows = np.flatnonzero(np.any(self.weights != 0, axis=1)).astype(np.int32)
        body = {
            "format": FORMAT,
            "kind": "nlp-text",
            "labels": self.labels,
            "features": self.spec.to_json(),
            "n_docs": self.n_docs,
            **({"info": self.info} if self.info else {}),
        }
        return {
            MODEL_JSON: json.dumps(body, sort_keys=True).encode(),
            DOC_FREQ: _npy(self.doc_freq.astype(np.int64)),
            WEIGHT_ROWS: _npy(rows),
            WEIGHTS: _npy(self.weights[rows]),
            BIAS: _npy(self.bias),
        }

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> TextModel:
        """The model in an artifact's files; ValueError for anything missing or inconsistent
        (the files are untrusted data)."""
        missing = [name for name in FILES if name not in files]
        if missing:
            raise ValueError(f"the model artifact lacks {', '.join(missing)}")
        raw = files[MODEL_JSON]
        if len(raw) > MAX_MODEL_JSON_BYTES:
            raise ValueError("model.json is too large")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"model.json is not JSON: {exc}") from exc
        if (
            not isinstance(body, dict)
            or body.get("format") != FORMAT
            or body.get("kind") != "nlp-text"
        ):
            raise ValueError("model.json is not an nlp-text model of a known format")
        labels = body.get("labels")
        if (
            not isinstance(labels, list)
            or not 1 <= len(labels) <= MAX_LABELS
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_LABEL_CHARS for s in labels)
            or len(set(labels)) != len(labels)
        ):
            raise ValueError("model.json: labels must be distinct non-empty strings")
        spec = FeatureSpec.from_json(body.get("features"))
        n_docs = body.get("n_docs")
        if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 0:
            raise ValueError("model.json: n_docs must be a non-negative integer")
        k, f = len(labels), spec.n_features
        doc_freq = _load(files[DOC_FREQ], DOC_FREQ, np.int64, (f,))
        if doc_freq.size and (doc_freq.min() < 0 or doc_freq.max() > n_docs):
            raise ValueError(f"{DOC_FREQ}: frequencies outside 0..n_docs")
        rows = _load(files[WEIGHT_ROWS], WEIGHT_ROWS, np.int32, None)
        if rows.ndim != 1 or rows.size > f:
            raise ValueError(f"{WEIGHT_ROWS}: must be a vector of at most {f} rows")
        if rows.size and (rows[0] < 0 or rows[-1] >= f or np.any(np.diff(rows) <= 0)):
            raise ValueError(f"{WEIGHT_ROWS}: rows must be increasing and below {f}")
        values = _load(files[WEIGHTS], WEIGHTS, np.float32, (rows.size, k))
        bias = _load(files[BIAS], BIAS, np.float32, (k,))
        if not (np.all(np.isfinite(values)) and np.all(np.isfinite(bias))):
            raise ValueError("the model's weights are not finite numbers")
        weights = np.zeros((f, k), np.float32)
        weights[rows] = values
        info_raw = body.get("info")
        info: dict[str, Any] = info_raw if isinstance(info_raw, dict) else {}
        return cls(list(labels), spec, doc_freq, n_docs, weights, bias, info)


def _npy(array: npt.NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _load(
    raw: bytes, name: str, dtype: type[np.generic], shape: tuple[int, ...] | None
) -> npt.NDArray[Any]:
    """One .npy file, its header checked before any data is read: the dtype, the shape, and a
    size that matches the bytes there are (a header may declare anything)."""
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            d_shape, fortran, d_type = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            d_shape, fortran, d_type = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{name} is not a NumPy array file: {exc}") from exc
    if d_type != np.dtype(dtype) or fortran:
        raise ValueError(f"{name}: expected {np.dtype(dtype).str} in C order, found {d_type.str}")
    if shape is not None and tuple(d_shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, found {tuple(d_shape)}")
    if math.prod(d_shape) * d_type.itemsize != len(raw) - buf.tell():
        raise ValueError(f"{name}: the declared shape {tuple(d_shape)} does not match its size")
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{name}: {exc}") from exc
    return np.asarray(array)


# ---- training ------------------------------------------------------------------------------


@dataclass
class Adam:
    """Adam over the weight matrix and bias, updating only the rows a batch touches (lazy Adam:
    hashed text features are sparse, so a batch touches a small fraction of the rows)."""

    step_size: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: FloatArray | None = None
    v: FloatArray | None = None
    mb: FloatArray | None = None
    vb: FloatArray | None = None

    def fit_batch(self, model: TextModel, x: sp.csr_matrix, y: npt.NDArray[np.int64]) -> float:
        """One step on a batch (rows of TF-IDF features, label indices); the batch's mean loss."""
        w, b = model.weights, model.bias
        if self.m is None or self.m.shape != w.shape:
            self.m, self.v = np.zeros_like(w), np.zeros_like(w)
            self.mb, self.vb = np.zeros_like(b), np.zeros_like(b)
        assert self.v is not None and self.mb is not None and self.vb is not None
        self.t += 1
        cols = np.unique(x.indices)
        xc = sp.csr_matrix(x[:, cols])
        p = softmax(np.asarray(xc @ w[cols], dtype=np.float32) + b)
        n = x.shape[0]
        loss = float(-np.mean(np.log(np.maximum(p[np.arange(n), y], 1e-12))))
        p[np.arange(n), y] -= 1.0
        p /= n
        g = np.asarray(xc.T @ p, dtype=np.float32)
        gb = p.sum(axis=0)
        b1, b2 = self.beta1, self.beta2
        m = b1 * self.m[cols] + (1 - b1) * g
        v = b2 * self.v[cols] + (1 - b2) * g * g
        self.m[cols], self.v[cols] = m, v
        self.mb = b1 * self.mb + (1 - b1) * gb
        self.vb = b2 * self.vb + (1 - b2) * gb * gb
        a = self.step_size * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        w[cols] -= a * m / (np.sqrt(v) + self.eps)
        b -= a * self.mb / (np.sqrt(self.vb) + self.eps)
        model._sparse = None
        return loss


def batches(
    x: sp.csr_matrix, y: npt.NDArray[np.int64], batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[sp.csr_matrix, npt.NDArray[np.int64]]]:
    """The rows in a random order, `batch_size` at a time."""
    order = rng.permutation(x.shape[0])
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield sp.csr_matrix(x[idx]), y[idx]
