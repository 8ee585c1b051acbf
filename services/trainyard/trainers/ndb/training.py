"""Building an NDB model: documents (+ a base model's chunks) -> deletions -> index -> supervised
associations (measured before/after on held-out pairs) -> feedback. A library function, tested
without any server; `__main__` wraps it in the workload.

Supervised files: CSV with columns `query` and `id` (the doc ids the query should return, several
joined by `:`; as CSV doc ids may hold `:` themselves, the parts are rejoined greedily into known
ids). A held-out share (`test_split`, chosen by a seeded hash of the pair's position) is kept out
of training; recall@1/@5 of those pairs (the share of their ids found in the first k references)
are reported before and after the training pairs are learned. Each training pair becomes a
learned association query -> chunk (the target document's chunk that matches the query best).

Feedback (ndb-retrain): upvotes and implicit events are learned the same way (implicit ones
weigh half); an upvoted query then ranks its reference first. Associations become phrase
rewrites (see model.py).
"""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.utils import murmurhash3_32

from trainyard.trainers.embeddings import Encoder
from trainyard.trainers.ndb.model import (
    FEEDBACK_WEIGHTS,
    Association,
    Chunk,
    FeedbackEntry,
    NdbModel,
    Passages,
    Settings,
)
from trainyard.trainers.ndb.parsing import (
    CHUNK_WORDS,
    OVERLAP_WORDS,
    FileEntry,
    ParseStats,
    chunk_document,
    read_documents,
)
from trainyard.workload import InputFile

SEED = 0
DEFAULT_TEST_SPLIT = 0.2
MAX_SUPERVISED_BYTES = 256 * 1024 * 1024
RECALL_AT = (1, 5)

Warn = Callable[[str], None]
Progress = Callable[[float, str], None]


class DataError(Exception):
    """Training data a user must fix (nothing to index, a malformed supervised file)."""


@dataclass(frozen=True)
class Feedback:
    """What users told a model (ndb-retrain)."""

    upvotes: tuple[tuple[str, str], ...] = ()  # (query_text, reference_id)
    associations: tuple[tuple[str, str], ...] = ()  # (source, target)
    implicit: tuple[tuple[str, str, str], ...] = ()  # (query_text, reference_id, event)

    @property
    def empty(self) -> bool:
        return not (self.upvotes or self.associations or self.implicit)


@dataclass(frozen=True)
class TrainParams:
    settings: Settings
    test_split: float = DEFAULT_TEST_SPLIT
    deletions: tuple[str, ...] = ()
    seed: int = SEED


@dataclass(frozen=True)
class Pair:
    query: str
    ids: tuple[str, ...]  # doc ids


@dataclass
class Result:
    model: NdbModel
    chunks: list[Chunk]
    report: dict[str, Any] = field(default_factory=dict)


def train(
    entries: Sequence[FileEntry],
    supervised: Sequence[InputFile],
    params: TrainParams,
    *,
    base: NdbModel | None = None,
    feedback: Feedback | None = None,
    encoder: Encoder | None = None,
    encoder_missing: str | None = None,
    warn: Warn = lambda message: None,
    progress: Progress = lambda fraction, phase: None,
) -> Result:
    """A new model (the base is never modified); DataError for data a user must fix.

    `encoder` is used when the settings ask for advanced search; without one advanced search
    ranks lexically and `encoder_missing` (why there is none) is warned about."""
    started = time.perf_counter()
    settings = params.settings
    report: dict[str, Any] = {"trainer": "ndb", "seed": params.seed}

    # ---- documents -------------------------------------------------------------------------
    progress(0.0, "reading")
    chunks: list[Chunk] = base.chunks() if base is not None else []
    base_docs = len({c.doc_id for c in chunks})
    stats = ParseStats()
    new: dict[str, list[Chunk]] = {}
    for doc in read_documents(entries, warn, stats):
        if doc.doc_id in new:
            stats.duplicate_doc_ids += 1
            if len(stats.examples) < 5:
                stats.examples.append(f"{doc.source}: repeated doc id {doc.doc_id[:100]!r}")
            continue
        new[doc.doc_id] = chunk_document(doc)
    for entry in entries:
        settings.field_weights.update(entry.field_weights)
    if stats.skipped_rows or stats.duplicate_doc_ids:
        warn(
            f"skipped {stats.skipped_rows} CSV row(s) without text and "
            f"{stats.duplicate_doc_ids} document(s) whose id was already used, e.g. "
            + "; ".join(stats.examples[:3])
        )
    replaced = {c.doc_id for c in chunks if c.doc_id in new}
    if replaced:
        warn(
            f"{len(replaced)} document(s) of the base model were replaced by new ones with the "
            f"same doc id, e.g. {sorted(replaced)[0][:100]!r}"
        )
    chunks = [c for c in chunks if c.doc_id not in new]
    for doc_chunks in new.values():
        chunks += doc_chunks

    # ---- deletions -------------------------------------------------------------------------
    deleted: set[str] = set()
    if params.deletions:
        wanted = set(params.deletions)
        present = {c.doc_id for c in chunks}
        deleted = wanted & present
        missing = wanted - present
        if missing:
            shown = ", ".join(repr(d[:100]) for d in sorted(missing)[:5])
            warn(f"{len(missing)} doc id(s) to delete are not in the model: {shown}")
        chunks = [c for c in chunks if c.doc_id not in deleted]
    if not chunks:
        raise DataError(
            "nothing was indexed: "
            + (
                f"none of the {stats.files} file(s) held a usable document (see the warnings)"
                if stats.files
                else "no documents were given"
            )
            + (f" and {len(deleted)} document(s) were deleted" if deleted else "")
        )

    # ---- index -----------------------------------------------------------------------------
    progress(0.2, "indexing")
    use = encoder if settings.advanced_search else None
    if settings.advanced_search and encoder is None:
        warn(
            "advanced_search: no embedding model is available "
            f"({encoder_missing or 'not installed'}); the model ranks with BM25F lexical "
            "search only"
        )
    dense, passages = _reused_vectors(base, chunks, use)
    index_started = time.perf_counter()
    kept_ids = {c.id for c in chunks}
    old_feedback = [e for e in (base.feedback if base else []) if e.chunk_id in kept_ids]
    old_associations = list(base.associations) if base else []
    model = NdbModel.build(settings, chunks, old_feedback, old_associations, use, dense, passages)
    index_seconds = time.perf_counter() - index_started

    # ---- supervised ------------------------------------------------------------------------
    progress(0.7, "supervised")
    if supervised:
        pairs, skipped = _read_pairs(supervised, model, warn)
        train_pairs, held = _split(pairs, params)
        learned = _entries_of(model, train_pairs, "supervised")
        before_model = model
        model = model.with_feedback(learned)
        report["supervised"] = {
            "pairs": len(pairs),
            "skipped_pairs": skipped,
            "training_pairs": len(train_pairs),
            "held_out_pairs": len(held),
            "test_split": params.test_split,
            "learned_associations": len(learned),
            "before": recall(before_model, held or train_pairs),
            "after": recall(model, held or train_pairs),
            "training_before": recall(before_model, train_pairs),
            "training_after": recall(model, train_pairs),
        }
        if not held:
            report["supervised"]["note"] = (
                "no held-out pairs (test_split 0 or too few pairs): before and after are "
                "measured on the training pairs"
            )

    # ---- feedback --------------------------------------------------------------------------
    if feedback is not None and not feedback.empty:
        progress(0.9, "feedback")
        model, summary = _apply_feedback(model, feedback, warn)
        report["feedback"] = summary

    progress(1.0, "indexing")
    report.update(
        {
            "settings": settings.to_json(),
            "dense": model.encoder.name if model.uses_dense and model.encoder else None,
            "chunking": {"chunk_words": CHUNK_WORDS, "overlap_words": OVERLAP_WORDS},
            "files": stats.files,
            "skipped_files": stats.skipped_files,
            "new_documents": len(new),
            "base_documents": base_docs,
            "replaced_documents": len(replaced),
            "deleted_documents": sorted(deleted)[:1000],
            "documents": len({c.doc_id for c in chunks}),
            "chunks": len(chunks),
            "vocabulary": len(model.lexical.vocab),
            "skipped_rows": stats.skipped_rows,
            "duplicate_doc_ids": stats.duplicate_doc_ids,
            "indexing_seconds": round(index_seconds, 3),
            "training_seconds": round(time.perf_counter() - started, 3),
            "continued_from_base_model": base is not None,
        }
    )
    return Result(model, chunks, report)


def _reused_vectors(
    base: NdbModel | None, chunks: Sequence[Chunk], encoder: Encoder | None
) -> tuple[npt.NDArray[np.float32] | None, Passages | None]:
    """The chunks' vectors and passages, taking the base model's where it has them (same
    encoder, same text), encoding only the others."""
    if encoder is None:
        return None, None
    if base is None or base.dense is None or base.settings.encoder != encoder.name:
        return None, None  # build() encodes them all
    out = np.zeros((len(chunks), encoder.dimensions), np.float32)
    known: list[npt.NDArray[np.float32] | None] = []
    todo: list[int] = []
    for i, c in enumerate(chunks):
        row = base.rows.get(c.id)
        if row is not None and base.texts[row] == c.text:
            out[i] = base.dense[row]
            known.append(base.passages.of(row) if base.passages is not None else None)
        else:
            todo.append(i)
            known.append(None)
    if todo:
        out[todo] = encoder.encode([chunks[i].text for i in todo])
    return out, Passages.encode(encoder, [c.text for c in chunks], out, known)


def _read_pairs(files: Sequence[InputFile], model: NdbModel, warn: Warn) -> tuple[list[Pair], int]:
    known_docs = set(model.doc_ids)
    pairs: list[Pair] = []
    skipped = 0
    examples: list[str] = []
    for f in files:
        if f.path.stat().st_size > MAX_SUPERVISED_BYTES:
            raise DataError(f"{f.name}: larger than {MAX_SUPERVISED_BYTES} bytes")
        try:
            content = f.path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{f.name}: not UTF-8 text ({exc.reason})") from exc
        reader = csv.reader(io.StringIO(content, newline=""))
        try:
            header = [c.strip() for c in next(reader, [])]
            if "query" not in header or "id" not in header:
                raise DataError(
                    f"{f.name}: a supervised file needs the columns 'query' and 'id' "
                    f"(found: {', '.join(repr(c) for c in header[:20]) or 'no header'})"
                )
            qi, ii = header.index("query"), header.index("id")
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                where = f"{f.name} line {reader.line_num}"
                query = row[qi].strip() if qi < len(row) else ""
                raw_ids = row[ii].strip() if ii < len(row) else ""
                ids = _doc_ids(raw_ids, known_docs, model)
                if not query or not ids:
                    skipped += 1
                    if len(examples) < 3:
                        why = "no query" if not query else f"unknown id(s) {raw_ids[:100]!r}"
                        examples.append(f"{where}: {why}")
                    continue
                pairs.append(Pair(query, tuple(ids)))
        except csv.Error as exc:
            raise DataError(f"{f.name} line {reader.line_num}: malformed CSV: {exc}") from exc
    if skipped:
        warn(f"skipped {skipped} supervised pair(s), e.g. " + "; ".join(examples))
    if not pairs:
        raise DataError(
            "the supervised files hold no usable pairs (columns 'query' and 'id' with ids of "
            "documents in the model)"
        )
    return pairs, skipped


def _doc_ids(raw: str, known: set[str], model: NdbModel) -> list[str]:
    """The doc ids in `a:b:c`, rejoining parts into ids that contain ':' (CSV row ids are
    `<file>:<row>`); a chunk id `<doc>#<n>` names its document."""
    if not raw:
        return []
    parts = raw.split(":")
    out: list[str] = []
    i = 0
    while i < len(parts):
        for j in range(len(parts), i, -1):  # the longest known id first
            candidate = ":".join(parts[i:j]).strip()
            if candidate in known:
                out.append(candidate)
                i = j
                break
            if model.has_reference(candidate):
                out.append(model.doc_ids[model.rows[candidate]])
                i = j
                break
        else:
            return []  # an id the model does not have: the pair cannot be learned
    return list(dict.fromkeys(out))


def _split(pairs: Sequence[Pair], params: TrainParams) -> tuple[list[Pair], list[Pair]]:
    if params.test_split <= 0 or len(pairs) < 2:
        return list(pairs), []
    positions = np.arange(len(pairs), dtype=np.int32)
    hashed = np.asarray(murmurhash3_32(positions, seed=params.seed, positive=True), np.float64)
    held = hashed / 2.0**32 < params.test_split
    if held.all():
        held[0] = False
    return (
        [p for p, h in zip(pairs, held, strict=True) if not h],
        [p for p, h in zip(pairs, held, strict=True) if h],
    )


def _entries_of(model: NdbModel, pairs: Sequence[Pair], kind: str) -> list[FeedbackEntry]:
    """Each pair's query -> the chunk of each target document that matches it best
    lexically (the first chunk when none does)."""
    if not pairs:
        return []
    chunks_of: dict[str, list[int]] = defaultdict(list)
    for row, doc in enumerate(model.doc_ids):
        chunks_of[doc].append(row)
    scores = model.lexical.scores([model.analyzer.terms(p.query) for p in pairs]).tocsr()
    out = []
    for i, pair in enumerate(pairs):
        row_scores = dict(
            zip(
                scores.indices[scores.indptr[i] : scores.indptr[i + 1]].tolist(),
                scores.data[scores.indptr[i] : scores.indptr[i + 1]].tolist(),
                strict=True,
            )
        )
        for doc in pair.ids:
            rows = chunks_of[doc]
            best = max(rows, key=lambda r: (row_scores.get(r, 0.0), -r))
            out.append(
                FeedbackEntry(pair.query, model.chunk_ids[best], kind, FEEDBACK_WEIGHTS[kind])
            )
    return out


def recall(model: NdbModel, pairs: Sequence[Pair]) -> dict[str, float | int]:
    """recall@k: the mean share of a pair's doc ids among the doc ids of its first k references
    (retrieval recall; sklearn.metrics has no ranking recall over ids, so it is counted here)."""
    if not pairs:
        return {"pairs": 0}
    k = max(RECALL_AT)
    ranked = model.rank([p.query for p in pairs], k)
    out: dict[str, float | int] = {"pairs": len(pairs)}
    for at in RECALL_AT:
        total = 0.0
        for pair, result in zip(pairs, ranked, strict=True):
            found = {model.doc_ids[row] for row, _ in result[:at]}
            total += len(found & set(pair.ids)) / len(pair.ids)
        out[f"recall@{at}"] = round(total / len(pairs), 4)
    return out


def _apply_feedback(
    model: NdbModel, feedback: Feedback, warn: Warn
) -> tuple[NdbModel, dict[str, Any]]:
    entries: list[FeedbackEntry] = []
    unknown = 0
    for query, ref in feedback.upvotes:
        if model.has_reference(ref) and query.strip():
            entries.append(FeedbackEntry(query, ref, "upvote", FEEDBACK_WEIGHTS["upvote"]))
        else:
            unknown += 1
    events: dict[str, int] = defaultdict(int)
    for query, ref, event in feedback.implicit:
        if model.has_reference(ref) and query.strip():
            entries.append(FeedbackEntry(query, ref, "implicit", FEEDBACK_WEIGHTS["implicit"]))
            events[event] += 1
        else:
            unknown += 1
    associations = [
        Association(s, t) for s, t in feedback.associations if s.strip() and t.strip() and s != t
    ]
    if unknown:
        warn(
            f"{unknown} feedback event(s) name references that are no longer in the model "
            "(deleted documents): they were left out"
        )
    return model.with_feedback(entries, associations), {
        "upvotes": sum(1 for e in entries if e.kind == "upvote"),
        "implicit": dict(sorted(events.items())),
        "associations": len(associations),
        "unknown_references": unknown,
    }


def feedback_of(raw: Mapping[str, Any] | None) -> Feedback:
    """The config's `feedback` object as typed values; ValueError naming what is malformed."""
    if not raw:
        return Feedback()
    if not isinstance(raw, Mapping):
        raise ValueError("feedback must be an object")

    def items(key: str, fields: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        value = raw.get(key) or []
        if not isinstance(value, list):
            raise ValueError(f"feedback.{key} must be a list")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or not all(
                isinstance(item.get(f), str) for f in fields
            ):
                raise ValueError(
                    f"feedback.{key}[{i}] must be an object with string {', '.join(fields)}"
                )
            out.append(tuple(str(item[f]) for f in fields))
        return tuple(out)

    upvotes = items("upvotes", ("query_text", "reference_id"))
    associations = items("associations", ("source", "target"))
    implicit = items("implicit", ("query_text", "reference_id", "event"))
    return Feedback(
        upvotes=tuple((a, b) for a, b in upvotes),
        associations=tuple((a, b) for a, b in associations),
        implicit=tuple((a, b, c) for a, b, c in implicit),
    )
