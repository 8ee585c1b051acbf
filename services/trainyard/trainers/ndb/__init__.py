"""The NDB trainer and retrieval library: `python -m trainyard.trainers.ndb` indexes documents
into a searchable model; `load_model(folder)` serves one.

Library interface (the orchestrator's search, sources and feedback build on it):
    load_model(artifact_dir) -> NdbModel
    NdbModel.search(queries, top_k, constraints=None) -> list[list[Reference]]   (best first)
    NdbModel.sources() -> list[Source]
    NdbModel.has_reference(reference_id) -> bool

See `model.py` for the ranking and the artifact's files, `parsing.py` for documents, doc ids
and chunks, `training.py` for supervised training, deletions, base models and feedback.
"""

from trainyard.trainers.ndb.model import NdbModel, Reference, Source, load_model

__all__ = ["NdbModel", "Reference", "Source", "load_model"]
