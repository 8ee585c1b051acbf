"""Clustering trainer library: utterances in, named clusters and a reloadable model out.

The service side (data parsing, the workload entry, inference endpoints) calls `train` and
`load_model`; everything here is pure computation over data files (npy/json, never pickle).
"""

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
