"""The CRF: training with python-crfsuite, export to `CrfWeights`, and evaluation.

Training is L-BFGS on crfsuite's elastic-net objective (c1 L1, c2 L2): one iteration is one
pass over the training data (plus line-search passes), so `epochs` caps the iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycrfsuite
from seqeval.metrics import classification_report as span_report
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from trainyard.trainers.nlp_token.data import Sentence, TagScheme
from trainyard.trainers.nlp_token.features import sentence_features
from trainyard.trainers.nlp_token.inference import CrfWeights, TokenPredictor

#: Regularisation tuned on real NER data (bench/nlp_token.py): more L1 than this prunes
#: useful rare-word features, less lets the rich feature set overfit.
C1 = 0.1
C2 = 0.1
#: At most this many examples per tag and kind in the report.
EXAMPLES = 5
MAX_SENTENCE_CHARS = 500


@dataclass(frozen=True)
class CrfParams:
    max_iterations: int
    c1: float = C1
    c2: float = C2

    def crfsuite(self) -> dict[str, Any]:
        return {
            "c1": self.c1,
            "c2": self.c2,
            "max_iterations": self.max_iterations,
            # Transitions between every pair of labels, also ones the data never shows, so a
            # rare label sequence gets a learned (negative) weight instead of none.
            "feature.possible_transitions": True,
        }


class _Trainer(pycrfsuite.Trainer):  # type: ignore[misc]
    def __init__(self, on_iteration: Callable[[int], None]) -> None:
        super().__init__(algorithm="lbfgs", verbose=False)
        self._report = on_iteration

    def on_iteration(self, log: Any, info: dict[str, Any]) -> None:
        self._report(int(info.get("num", 0)))


@dataclass
class CrfTraining:
    """A crfsuite training set fed one sentence at a time (crfsuite copies each into its own
    data set, so nothing of it stays in Python), then trained and exported."""

    params: CrfParams
    on_iteration: Callable[[int], None] = lambda _: None
    sentences: int = 0
    labels_seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._trainer = _Trainer(self.on_iteration)
        self._trainer.set_params(self.params.crfsuite())

    def append(self, sentence: Sentence) -> None:
        self._trainer.append(sentence_features(sentence.tokens), sentence.tags)
        self.sentences += 1
        self.labels_seen.update(sentence.tags)

    def train(self, workdir: Path) -> CrfWeights:
        path = workdir / "model.crfsuite"
        self._trainer.train(str(path))
        self._trainer.clear()
        return export(path)


def export(path: Path) -> CrfWeights:
    """A crfsuite model file's weights as arrays (attributes with no state weight dropped)."""
    tagger = pycrfsuite.Tagger()
    tagger.open(str(path))
    try:
        info = tagger.info()
    finally:
        tagger.close()
    labels = [name for name, _ in sorted(info.labels.items(), key=lambda kv: int(kv[1]))]
    label_id = {name: i for i, name in enumerate(labels)}
    by_attr: dict[str, list[tuple[int, float]]] = {}
    for (attr, label), weight in info.state_features.items():
        by_attr.setdefault(attr, []).append((label_id[label], float(weight)))
    attributes = sorted(by_attr)
    indptr = np.zeros(len(attributes) + 1, dtype=np.int64)
    state_labels: list[int] = []
    state_weights: list[float] = []
    for i, attr in enumerate(attributes):
        for lab, w in sorted(by_attr[attr]):
            state_labels.append(lab)
            state_weights.append(w)
        indptr[i + 1] = len(state_labels)
    transitions = np.zeros((len(labels), len(labels)), dtype=np.float64)
    for (src, dst), weight in info.transitions.items():
        transitions[label_id[src], label_id[dst]] = float(weight)
    return CrfWeights(
        labels,
        attributes,
        indptr,
        np.asarray(state_labels, dtype=np.int32),
        np.asarray(state_weights, dtype=np.float64),
        transitions,
    )


@dataclass
class Evaluation:
    """Gold and predicted tags of an evaluation set, kept for scoring (bounded by the caller),
    with a few example tokens per tag and outcome."""

    scheme: TagScheme
    gold: list[list[str]] = field(default_factory=list)
    pred: list[list[str]] = field(default_factory=list)
    examples: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)

    def add(self, sentence: Sentence, predicted: Sequence[str]) -> None:
        self.gold.append(sentence.tags)
        self.pred.append(list(predicted))
        text = " ".join(sentence.tokens)[:MAX_SENTENCE_CHARS]
        for token, g, p in zip(sentence.tokens, sentence.tags, predicted, strict=True):
            gl, pl = self.scheme.label_of(g), self.scheme.label_of(p)
            for label, kind in (
                (gl, "true_positives" if gl == pl else "false_negatives"),
                (pl, "false_positives" if gl != pl else None),
            ):
                if label is None or kind is None:
                    continue
                bucket = self.examples.setdefault(
                    label, {"true_positives": [], "false_positives": [], "false_negatives": []}
                )[kind]
                if len(bucket) < EXAMPLES:
                    bucket.append({"token": token[:200], "sentence": text})

    def metrics(self) -> dict[str, dict[str, float]]:
        """Per target label, token-level precision/recall/F1 (a token counts for a label in
        any of its forms, `PER`, `B-PER`, `I-PER`); `overall`: span-level (seqeval, exact
        span and type) precision/recall/F1 and token accuracy over all tags."""
        labels = list(self.scheme.target_labels)
        none = "\x00outside"
        y_true = [self.scheme.label_of(t) or none for s in self.gold for t in s]
        y_pred = [self.scheme.label_of(t) or none for s in self.pred for t in s]
        out: dict[str, dict[str, float]] = {}
        if y_true:
            p, r, f, _ = precision_recall_fscore_support(
                y_true, y_pred, labels=labels, zero_division=0
            )
            for i, label in enumerate(labels):
                out[label] = {
                    "precision": float(p[i]),
                    "recall": float(r[i]),
                    "fmeasure": float(f[i]),
                }
        else:
            out = {label: {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0} for label in labels}
        gold_bio = [self.scheme.bio(s) for s in self.gold]
        pred_bio = [self.scheme.bio(s) for s in self.pred]
        overall = {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
        if any(t != "O" for s in gold_bio + pred_bio for t in s):
            report = span_report(gold_bio, pred_bio, output_dict=True, zero_division=0)
            micro = report["micro avg"]
            overall = {
                "precision": float(micro["precision"]),
                "recall": float(micro["recall"]),
                "fmeasure": float(micro["f1-score"]),
            }
        flat_gold = [t for s in self.gold for t in s]
        flat_pred = [t for s in self.pred for t in s]
        overall["token_accuracy"] = (
            float(accuracy_score(flat_gold, flat_pred)) if flat_gold else 0.0
        )
        out["overall"] = overall
        return out


def evaluate(
    predictor: TokenPredictor, sentences: Iterable[Sentence], scheme: TagScheme
) -> Evaluation:
    """Tags every sentence with the exported model (what the platform serves) and scores it;
    tags outside the scheme a base model predicts count as the default tag."""
    ev = Evaluation(scheme)
    for sentence in sentences:
        predicted = [
            t if scheme.label_of(t) is not None else scheme.default_tag
            for t in predictor.tag(sentence.tokens)
        ]
        ev.add(sentence, predicted)
    return ev


def crfsuite_tags(weights_path: Path, sentences: Iterable[Sequence[str]]) -> list[list[str]]:
    """python-crfsuite's own tagging (what the exported decoder must agree with)."""
    tagger = pycrfsuite.Tagger()
    tagger.open(str(weights_path))
    try:
        return [list(tagger.tag(sentence_features(tokens))) for tokens in sentences]
    finally:
        tagger.close()
