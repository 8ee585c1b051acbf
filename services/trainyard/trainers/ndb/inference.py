"""Serving an NDB model through the orchestrator's predictor cache: `load(files)` builds a
predictor from the `model` artifact's files (path -> bytes; ValueError when they are not a
consistent NDB model). `predict(queries, top_k)` answers each query with its references, as
search does: {"query", "references": [{"id", "doc_id", "text", "source", "score", "metadata"}]}.

The files are written to a private temporary folder that lives as long as the predictor (a
model trained with in_memory false is memory-mapped from it), removed when it is dropped.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainyard.blobs import check_key
from trainyard.trainers.ndb.model import NdbModel, load_model

MAX_TOP_K = 100


class Predictor:
    def __init__(self, model: NdbModel, nbytes: int) -> None:
        self.model = model
        self.nbytes = nbytes

    def predict(self, queries: Sequence[str], top_k: int) -> list[dict[str, Any]]:
        k = max(1, min(int(top_k), MAX_TOP_K))
        results = self.model.search(list(queries), k)
        return [
            {"query": q, "references": [asdict(r) for r in refs]}
            for q, refs in zip(queries, results, strict=True)
        ]


def load(files: Mapping[str, bytes]) -> Predictor:
    folder = Path(tempfile.mkdtemp(prefix="ndb-model-"))
    try:
        for path, data in files.items():
            target = folder.joinpath(*check_key(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        model = load_model(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    predictor = Predictor(model, sum(len(d) for d in files.values()))
    weakref.finalize(predictor, shutil.rmtree, folder, True)
    return predictor
