"""Serving an nlp-text model: `load(files)` builds a predictor from the `model` artifact's files
(JSON + NumPy arrays, checked: ValueError on anything inconsistent), `predict(queries, top_k)`
gives each query's classes with softmax probabilities, best first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainyard.trainers.nlp_text.model import TextModel

MAX_TOP_K = 100


class Predictor:
    def __init__(self, model: TextModel) -> None:
        self.model = model
        self.nbytes = model.nbytes

    def predict(self, queries: Sequence[str], top_k: int) -> list[dict[str, Any]]:
        if not queries:
            return []
        k = max(1, min(int(top_k), MAX_TOP_K, len(self.model.labels)))
        probs = self.model.predict_proba(list(queries))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            {
                "query": q,
                "predicted_classes": [[self.model.labels[j], float(probs[i, j])] for j in order[i]],
            }
            for i, q in enumerate(queries)
        ]


def load(files: Mapping[str, bytes]) -> Predictor:
    """A predictor for the model in these files (path -> bytes); ValueError if they are not a
    consistent nlp-text model."""
    model = TextModel.from_files(files)
    model.weights_to_serving()
    return Predictor(model)
