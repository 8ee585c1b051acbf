"""Clustering trainer library: utterances in, named clusters and a reloadable model out.

The service side (data parsing, the workload entry, inference endpoints) calls `train` and
`load_model`; everything here is pure computation over data files (npy/json, never pickle).

The names below are imported on first use (PEP 562): the clustering service imports `data`
from this package when it starts, and must not pay for scikit-learn and NumPy there, so that a
restarted service answers again within seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainyard.trainers.clustering.model import (
        SUPPORTED_LANGUAGES,
        Assignment,
        ClusterInfo,
        ClusteringParams,
        ClusterModel,
        TrainResult,
        Utterance,
        load_model,
    )
    from trainyard.trainers.clustering.naming import KeywordNamer, Namer, OpenAINamer
    from trainyard.trainers.clustering.training import train

_WHERE = {
    "SUPPORTED_LANGUAGES": "model",
    "Assignment": "model",
    "ClusterInfo": "model",
    "ClusterModel": "model",
    "ClusteringParams": "model",
    "TrainResult": "model",
    "Utterance": "model",
    "load_model": "model",
    "KeywordNamer": "naming",
    "Namer": "naming",
    "OpenAINamer": "naming",
    "train": "training",
}

__all__ = [
    "SUPPORTED_LANGUAGES",
    "Assignment",
    "ClusterInfo",
    "ClusterModel",
    "ClusteringParams",
    "KeywordNamer",
    "Namer",
    "OpenAINamer",
    "TrainResult",
    "Utterance",
    "load_model",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
