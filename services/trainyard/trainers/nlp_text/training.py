"""Training and evaluating a `TextModel` on streamed examples, memory bounded by
`batch_size * max_in_memory_batches` rows.

Pass 1 (reading) counts labels and document frequencies chunk by chunk; when all training rows
fit in one chunk their counts are kept and training runs on that matrix, otherwise each epoch
reads the data again, chunk by chunk (rows shuffled within a chunk). Held-out rows
(`test_split`) are chosen by a seeded hash of the row's position, so every pass agrees on them.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.svm import LinearSVC
from sklearn.utils import murmurhash3_32

from trainyard.trainers.nlp_text.model import (
    Adam,
    FeatureSpec,
    TextModel,
    batches,
    document_frequencies,
    features_for,
    tfidf,
)
from trainyard.trainers.nlp_text.reading import DataError, Example

SEED = 0
MAX_MISCLASSIFIED = 50
MAX_SHOWN_TEXT = 1000

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 5
    learning_rate: float = 0.0001
    batch_size: int = 1000
    max_in_memory_batches: int = 20
    test_split: float = 0.0
    n_target_classes: int = 2
    seed: int = SEED

    @property
    def chunk_rows(self) -> int:
        return self.batch_size * self.max_in_memory_batches

    @property
    def step_size(self) -> float:
        # learning_rate is per sample; Adam's step is per batch mean gradient (linear scaling).
        return self.learning_rate * self.batch_size


@dataclass
class Result:
    model: TextModel
    report: dict[str, Any]


def _chunks(items: Iterable[Example], size: int) -> Iterator[list[Example]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _held_out(start: int, n: int, params: TrainParams) -> npt.NDArray[np.bool_]:
    if params.test_split <= 0:
        return np.zeros(n, bool)
    positions = np.arange(start, start + n, dtype=np.int64).astype(np.int32)
    hashed = murmurhash3_32(positions, seed=params.seed, positive=True)
    return np.asarray(hashed, dtype=np.float64) / 2.0**32 < params.test_split


def _split(
    source: Iterable[Example], params: TrainParams
) -> Iterator[tuple[list[Example], list[Example]]]:
    """(training, held-out) examples, chunk by chunk."""
    start = 0
    for chunk in _chunks(source, params.chunk_rows):
        held = _held_out(start, len(chunk), params)
        start += len(chunk)
        yield (
            [e for e, h in zip(chunk, held, strict=True) if not h],
            [e for e, h in zip(chunk, held, strict=True) if h],
        )


def train(
    source: Iterable[Example],
    tests: Iterable[Example] | None,
    params: TrainParams,
    base: TextModel | None = None,
    progress: Progress = lambda fraction, phase: None,
) -> Result:
    """A model trained on `source` (continuing `base` when given), evaluated on the held-out
    rows and `tests`; DataError for data a user must fix."""
    started = time.perf_counter()
    rng = np.random.default_rng(params.seed)
    spec = base.spec if base is not None else FeatureSpec(features_for(params.n_target_classes))
    known = list(base.labels) if base is not None else []
    seen = set(known)
    label_counts: Counter[str] = Counter()
    doc_freq = np.zeros(spec.n_features, np.int64)
    kept: list[sp.csr_matrix] = []
    kept_labels: list[str] = []
    held_rows = 0
    n_train = 0
    in_memory = True

    # ---- reading ---------------------------------------------------------------------------
    progress(0.0, "reading")
    for chunk_no, (rows, held) in enumerate(_split(source, params)):
        held_rows += len(held)
        for e in rows:
            label_counts[e.label] += 1
            if e.label in seen:
                continue
            seen.add(e.label)
            if len(seen) > params.n_target_classes:
                raise DataError(
                    f"{e.where}: label {e.label[:100]!r} makes more distinct labels than "
                    f"n_target_classes ({params.n_target_classes}); labels so far: "
                    + ", ".join(sorted(label_counts)[:20])
                )
        if not rows:
            continue
        counts = spec.counts([e.text for e in rows])
        doc_freq += document_frequencies(counts)
        n_train += len(rows)
        if in_memory and chunk_no == 0:
            kept.append(counts)
            kept_labels += [e.label for e in rows]
        else:
            in_memory = False
            kept, kept_labels = [], []
        progress(0.0, "reading")
    if n_train == 0:
        raise DataError("no training rows: the supervised files hold no usable labelled text")

    labels = known + sorted(set(label_counts) - set(known))
    if base is not None:
        model = base
        model.add_labels(labels)
    else:
        model = TextModel.new(labels, spec)
    model.doc_freq = model.doc_freq + doc_freq
    model.n_docs += n_train
    model._idf = None
    index = {label: i for i, label in enumerate(model.labels)}
    idf = model.idf()
    adam = Adam(params.step_size)

    # ---- training --------------------------------------------------------------------------
    losses: list[float] = []
    solver = "adam"
    if in_memory and base is None and len(model.labels) > 1:
        solver = "nb-svm"
        counts = sp.csr_matrix(sp.vstack(kept))
        y = np.array([index[label] for label in kept_labels], np.int64)
        kept = []
        progress(0.0, "training")
        fit_nb_svm(model, counts, tfidf(counts, idf), y, params.seed)
    elif in_memory:
        x = tfidf(sp.csr_matrix(sp.vstack(kept)), idf)
        y = np.array([index[label] for label in kept_labels], np.int64)
        kept = []
        for epoch in range(params.epochs):
            total = 0.0
            for i, (xb, yb) in enumerate(batches(x, y, params.batch_size, rng)):
                total += adam.fit_batch(model, xb, yb) * xb.shape[0]
                progress(
                    (epoch + (i + 1) * params.batch_size / max(n_train, 1)) / params.epochs,
                    "training",
                )
            losses.append(total / n_train)
    else:
        for epoch in range(params.epochs):
            done, total = 0, 0.0
            for rows, _ in _split(source, params):
                if not rows:
                    continue
                xc = tfidf(spec.counts([e.text for e in rows]), idf)
                yc = np.array([index[e.label] for e in rows], np.int64)
                for xb, yb in batches(xc, yc, params.batch_size, rng):
                    total += adam.fit_batch(model, xb, yb) * xb.shape[0]
                done += len(rows)
                progress((epoch + min(done / n_train, 1.0)) / params.epochs, "training")
            losses.append(total / max(done, 1))
    progress(1.0, "training")
    train_seconds = time.perf_counter() - started

    report: dict[str, Any] = {
        "trainer": "nlp-text",
        "seed": params.seed,
        "mode": "in_memory" if in_memory else "streaming",
        "solver": solver,
        "parameters": {
            "epochs": params.epochs,
            "learning_rate": params.learning_rate,
            "adam_step_size": params.step_size,
            "batch_size": params.batch_size,
            "max_in_memory_batches": params.max_in_memory_batches,
            "test_split": params.test_split,
            "n_target_classes": params.n_target_classes,
            "features": spec.to_json(),
        },
        "labels": model.labels,
        "training_rows": n_train,
        "label_counts": dict(sorted(label_counts.items())),
        "epoch_losses": [round(v, 6) for v in losses],
        "training_seconds": round(train_seconds, 3),
        "continued_from_base_model": base is not None,
    }

    # ---- evaluating ------------------------------------------------------------------------
    if params.test_split > 0 or tests is not None:
        progress(0.0, "evaluating")
        report.update(evaluate(model, _evaluation_rows(source, tests, params), params))
        report["held_out_rows"] = held_rows
        progress(1.0, "evaluating")
    return Result(model, report)


def fit_nb_svm(
    model: TextModel,
    counts: sp.csr_matrix,
    x: sp.csr_matrix,
    y: npt.NDArray[np.int64],
    seed: int,
) -> None:
    """The in-memory fit: NB-SVM (Wang & Manning 2012), one-vs-rest. For each class, the
    features are scaled by the log-count ratio of the class against the rest (from binarised
    counts, add-one smoothed) and a LinearSVC is fitted on them; scaling by r and then weighting
    by w is the linear model r * w on the unscaled features, so the artifact stays one weight
    matrix. The margins are turned into probabilities by one softmax temperature, fitted by
    likelihood on the training rows (and folded into the weights)."""
    k = len(model.labels)
    onehot = sp.csr_matrix((np.ones(len(y), np.float32), (y, np.arange(len(y)))), shape=(k, len(y)))
    present = np.asarray((onehot @ (counts > 0).astype(np.float32)).todense(), dtype=np.float64)
    total = present.sum(axis=0)
    weights = np.zeros((model.spec.n_features, k), np.float32)
    bias = np.zeros(k, np.float32)
    for c in range(k):
        p = present[c] + 1.0
        q = total - present[c] + 1.0
        r = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
        target = y == c
        if target.all() or not target.any():
            continue  # a label only the base model had: no rows to separate
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svc = LinearSVC(C=1.0, random_state=seed).fit(sp.csr_matrix(x.multiply(r)), target)
        weights[:, c] = r * svc.coef_.ravel().astype(np.float32)
        bias[c] = svc.intercept_[0]
    margins = np.asarray(x @ weights, dtype=np.float64) + bias

    def nll(temperature: float) -> float:
        z = margins * temperature
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    temperature = float(minimize_scalar(nll, bounds=(0.01, 100.0), method="bounded").x)
    model.weights = weights * np.float32(temperature)
    model.bias = bias * np.float32(temperature)
    model._sparse = None


def _evaluation_rows(
    source: Iterable[Example], tests: Iterable[Example] | None, params: TrainParams
) -> Iterator[Example]:
    if params.test_split > 0:
        for _, held in _split(source, params):
            yield from held
    if tests is not None:
        yield from tests


def predict_labels(model: TextModel, texts: Sequence[str]) -> list[str]:
    probs = model.predict_proba(texts)
    return [model.labels[i] for i in np.argmax(probs, axis=1)]


def evaluate(model: TextModel, rows: Iterable[Example], params: TrainParams) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1, the confusion matrix and up to 50
    misclassified examples, over `rows` (streamed in chunks)."""
    truth: list[str] = []
    predicted: list[str] = []
    wrong: list[dict[str, str]] = []
    for chunk in _chunks(rows, params.chunk_rows):
        got = predict_labels(model, [e.text for e in chunk])
        for e, p in zip(chunk, got, strict=True):
            if p != e.label and len(wrong) < MAX_MISCLASSIFIED:
                wrong.append({"text": e.text[:MAX_SHOWN_TEXT], "label": e.label, "predicted": p})
        truth += [e.label for e in chunk]
        predicted += got
    if not truth:
        return {"test_rows": 0, "metrics_note": "no test rows: no metrics"}
    labels = sorted(set(truth) | set(predicted))
    p, r, f, s = precision_recall_fscore_support(
        truth, predicted, labels=labels, average=None, zero_division=0
    )
    mp, mr, mf, _ = precision_recall_fscore_support(
        truth, predicted, labels=labels, average="macro", zero_division=0
    )
    return {
        "test_rows": len(truth),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_precision": float(mp),
        "macro_recall": float(mr),
        "macro_f1": float(mf),
        "per_class": {
            label: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": labels,
            "matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
        },
        "misclassified": wrong,
    }
