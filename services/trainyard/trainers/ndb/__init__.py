"""The NDB trainer and retrieval library: `python -m trainyard.trainers.ndb` indexes documents
into a searchable model; `load_model(folder)` serves one.

Library interface (the orchestrator's search, sources and feedback build on it):
    load_model(artifact_dir) -> NdbModel
    NdbModel.search(queries, top_k, constraints=None) -> list[list[Reference]]   (best first)
    NdbModel.sources() -> list[Source]
    NdbModel.has_reference(reference_id) -> bool

The model artifact (models/<model_id>/model) holds plain data, no pickle: ndb.json (format
version, settings, vocabulary, library versions), chunks.jsonl (ids, doc ids, sources,
metadata, CSV fields), texts.bin + text_offsets.npy (chunk texts), lexical.{data,indices,
indptr}.npy (the BM25F term x chunk matrix), dense.npy (advanced search: one L2-normalised
embedding per chunk), passages.npy + passage_starts.npy (the embeddings of each chunk's
sentences; models written before them have none), feedback.jsonl and associations.jsonl (what
training and users taught).

`model_options.in_memory` (default false, as the API documents): false memory-maps the index
arrays, chunk texts and dense vectors from the artifact's files (the OS pages them in as
searches touch them, so a large model costs little resident memory and loads instantly);
true reads them into memory (faster first searches). Chunk ids and metadata are always in
memory.

`model_options.language` (default english, any Snowball language) chooses the stemmer and
stop words. Chunks: 128 words overlapping by 32 (parsing.CHUNK_WORDS / OVERLAP_WORDS).

See `model.py` for the ranking and the artifact's files, `parsing.py` for documents, doc ids
and chunks, `training.py` for supervised training, deletions, base models and feedback.
"""

from trainyard.trainers.ndb.model import NdbModel, Reference, Source, load_model

__all__ = ["NdbModel", "Reference", "Source", "load_model"]
