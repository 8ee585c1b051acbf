"""An NDB model: chunks of documents, their lexical (BM25F) index, optional dense vectors, and
what was learned from supervised pairs and feedback; searching it, saving and loading it.

Ranking, for each query (batched):
1. Association rewrites: where the query holds an associated source phrase (as terms), the
   phrase is replaced by its target, so the source retrieves like the target.
2. Lexical: BM25F scores of the chunks sharing a term, divided by the best one (1.0 at the top).
3. Dense (advanced search with an encoder): for every chunk, the mean of two cosines of the
   query's embedding: to the whole chunk's and to the best of the chunk's passages (its
   sentences, `passages_of`; the best passage, Dai & Callan 2019's MaxP, finds the one
   sentence a short query is about, the whole chunk its gist). Both signals become z-scores
   over all chunks (a chunk sharing no term has lexical score 0), and the hybrid score is
   HYBRID_ALPHA * z(lexical) + (1 - HYBRID_ALPHA) * z(dense), a convex combination (Bruch et
   al. 2023) in which neither signal's own scale dominates. The best HYBRID_CANDIDATES keep
   their hybrid score divided by the best one (1.0 at the top, 0 for an average chunk and
   below), the scale of step 2, so that feedback weighs the same in both.
4. Learned associations (supervised pairs, upvotes, implicit feedback): each stored query is a
   TF-IDF vector (its own small vocabulary); a chunk gains FEEDBACK_BETA * max over its stored
   queries of weight * cosine(query, stored query), for cosines from FEEDBACK_MIN_COSINE.
   So a new query worded like a trained one is drawn to the trained chunk.
5. Exact feedback: a query whose terms equal a stored upvoted/supervised query's puts that
   query's chunks first (by weight), as a user who upvoted a result expects.
6. Constraints keep only the chunks whose metadata match, then the best top_k are returned.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from trainyard.trainers.embeddings import Encoder
from trainyard.trainers.ndb.analysis import DEFAULT_LANGUAGE, Analyzer
from trainyard.trainers.ndb.lexical import Bm25Params, LexicalIndex

FORMAT = "trainyard-ndb"
FORMAT_VERSION = 1
MANIFEST = "ndb.json"
CHUNKS = "chunks.jsonl"
TEXTS = "texts.bin"
TEXT_OFFSETS = "text_offsets.npy"
DENSE = "dense.npy"
PASSAGES = "passages.npy"
PASSAGE_STARTS = "passage_starts.npy"
FEEDBACK = "feedback.jsonl"
ASSOCIATIONS = "associations.jsonl"

MAX_TOP_K = 1000
#: The lexical share of the hybrid score (of z-scores). 0.3 was the best of 0.1..0.5 (steps of
#: 0.05) on `bench/ndb.py --dev`, a split of its data disjoint from the queries it reports
#: (recall@5 0.231 there, against 0.227 at 0.25, 0.228 at 0.35 and 0.176 lexical only).
HYBRID_ALPHA = 0.3
#: Chunks that keep a hybrid score per query (the rest count as 0, as a chunk sharing no term
#: does in plain search); at least top_k.
HYBRID_CANDIDATES = 100
FEEDBACK_BETA = 1.0
FEEDBACK_MIN_COSINE = 0.2
#: Weight of one feedback event of each kind (implicit events are weaker upvotes); the weights
#: of one query -> chunk pair add up, to at most MAX_FEEDBACK_WEIGHT.
FEEDBACK_WEIGHTS = {"supervised": 1.0, "upvote": 1.0, "implicit": 0.5}
MAX_FEEDBACK_WEIGHT = 3.0
#: Queries scored at once against the dense vectors, and the most cells of that queries x
#: chunks block (float32): a large model takes fewer queries at a time.
DENSE_QUERY_BATCH = 256
DENSE_BLOCK_CELLS = 1 << 25
#: A chunk's passages: its sentences, a sentence of fewer than MIN_PASSAGE_WORDS words joined to
#: the next, at most MAX_PASSAGES (the rest joined into the last).
MIN_PASSAGE_WORDS = 4
MAX_PASSAGES = 16
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Reference:
    """One retrieved chunk."""

    id: str
    doc_id: str
    text: str
    source: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One document of the model."""

    doc_id: str
    source: str
    chunk_count: int


@dataclass(frozen=True)
class Chunk:
    """A chunk as indexed: its text per field (one field `text` for files)."""

    id: str
    doc_id: str
    source: str
    fields: dict[str, str]
    metadata: dict[str, Any]

    @property
    def text(self) -> str:
        return "\n".join(v for v in self.fields.values() if v)


@dataclass(frozen=True)
class FeedbackEntry:
    """A learned query -> chunk association (kind: supervised, upvote or implicit)."""

    query: str
    chunk_id: str
    kind: str
    weight: float


@dataclass(frozen=True)
class Association:
    """`source` should retrieve like `target`."""

    source: str
    target: str


@dataclass
class Settings:
    language: str = DEFAULT_LANGUAGE
    field_weights: dict[str, float] = field(default_factory=dict)
    bm25: Bm25Params = field(default_factory=Bm25Params)
    advanced_search: bool = False
    in_memory: bool = True
    encoder: str | None = None  # the dense model's name when dense vectors are stored
    stop_words: bool = True  # the language's stop-word list is applied (analysis.Analyzer)

    def to_json(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "field_weights": self.field_weights,
            "bm25": {"k1": self.bm25.k1, "b": self.bm25.b},
            "advanced_search": self.advanced_search,
            "in_memory": self.in_memory,
            "encoder": self.encoder,
            "stop_words": self.stop_words,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Settings:
        bm25 = raw.get("bm25") or {}
        weights = raw.get("field_weights") or {}
        language = str(raw.get("language", DEFAULT_LANGUAGE))
        if not isinstance(weights, dict) or not isinstance(bm25, dict):
            raise ValueError("malformed settings")
        return cls(
            language=language,
            field_weights={str(k): float(v) for k, v in weights.items()},
            bm25=Bm25Params(float(bm25.get("k1", Bm25Params.k1)), float(bm25.get("b", 0.75))),
            advanced_search=bool(raw.get("advanced_search", False)),
            in_memory=bool(raw.get("in_memory", True)),
            encoder=str(raw["encoder"]) if raw.get("encoder") else None,
            # Models written before the flag had stop words in English only.
            stop_words=bool(raw.get("stop_words", language in ("english", "porter"))),
        )


class _Texts:
    """Chunk texts from one UTF-8 blob and offsets (memory-mapped when not in memory)."""

    def __init__(self, blob: bytes | np.memmap[Any, Any], offsets: npt.NDArray[np.int64]) -> None:
        self._blob = blob
        self._offsets = offsets

    def __getitem__(self, row: int) -> str:
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        return bytes(self._blob[start:end]).decode("utf-8")

    def __len__(self) -> int:
        return len(self._offsets) - 1


class _FeedbackLayer:
    """Stored queries as L2-normalised TF-IDF vectors over their own vocabulary."""

    def __init__(
        self, analyzer: Analyzer, entries: Sequence[FeedbackEntry], rows: Mapping[str, int]
    ) -> None:
        grouped: dict[tuple[str, int], float] = defaultdict(float)
        keys: dict[str, list[str]] = {}
        for e in entries:
            row = rows.get(e.chunk_id)
            if row is None:
                continue
            terms = analyzer.terms(e.query)
            if not terms:
                continue
            key = " ".join(terms)
            keys[key] = terms
            grouped[(key, row)] = min(grouped[(key, row)] + e.weight, MAX_FEEDBACK_WEIGHT)
        self.exact: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for (key, row), weight in grouped.items():
            self.exact[key].append((weight, row))
        for key in self.exact:
            self.exact[key].sort(key=lambda wr: (-wr[0], wr[1]))
        self.keys = list(keys)
        self.vocab: dict[str, int] = {}
        for key in self.keys:
            for t in keys[key]:
                self.vocab.setdefault(t, len(self.vocab))
        n = len(self.keys)
        self.empty = n == 0
        v = max(len(self.vocab), 1)
        counts = self._counts([keys[k] for k in self.keys], v)
        df = np.bincount(counts.indices, minlength=v).astype(np.float64)
        self.idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self.unknown_idf = math.log(1.0 + n) + 1.0
        self.matrix = self._weigh(counts, [0.0] * n)  # keys x vocab
        # key -> chunk rows with weights, as a sparse keys x chunks matrix built on demand
        self._key_rows = {k: i for i, k in enumerate(self.keys)}
        self.targets: list[list[tuple[float, int]]] = [self.exact[k] for k in self.keys]

    def _counts(self, term_lists: Sequence[Sequence[str]], v: int) -> sp.csr_matrix:
        ids: list[int] = []
        indptr = [0]
        for terms in term_lists:
            ids += [i for i in (self.vocab.get(t) for t in terms) if i is not None]
            indptr.append(len(ids))
        m = sp.csr_matrix(
            (np.ones(len(ids)), np.array(ids, np.int64), np.array(indptr)),
            shape=(len(term_lists), v),
        )
        m.sum_duplicates()
        return m

    def _weigh(self, counts: sp.csr_matrix, unknown_sq: Sequence[float]) -> sp.csr_matrix:
        m = counts.copy().astype(np.float64)
        m.data = (1.0 + np.log(m.data)) * self.idf[m.indices]
        sq = np.asarray(m.multiply(m).sum(axis=1)).ravel() + np.asarray(unknown_sq)
        norms = np.sqrt(np.maximum(sq, 1e-12))
        return sp.csr_matrix(sp.diags(1.0 / norms) @ m)

    def similarities(self, term_lists: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """queries x stored-queries cosines."""
        v = max(len(self.vocab), 1)
        counts = self._counts(term_lists, v)
        unknown = []
        for terms in term_lists:
            missing: dict[str, int] = defaultdict(int)
            for t in terms:
                if t not in self.vocab:
                    missing[t] += 1
            unknown.append(
                sum(((1.0 + math.log(c)) * self.unknown_idf) ** 2 for c in missing.values())
            )
        q = self._weigh(counts, unknown)
        return sp.csr_matrix(q @ self.matrix.T)


def passages_of(text: str) -> list[str]:
    """A chunk's passages for dense scoring (see MIN_PASSAGE_WORDS and MAX_PASSAGES); one at
    least (the text itself when it has no sentence)."""
    out: list[str] = []
    pending = ""
    for sentence in _SENTENCE_END.split(text.strip()):
        pending = f"{pending} {sentence}" if pending else sentence
        if len(pending.split()) >= MIN_PASSAGE_WORDS:
            out.append(pending)
            pending = ""
    if pending:
        if out:
            out[-1] = f"{out[-1]} {pending}"
        else:
            out.append(pending)
    if len(out) > MAX_PASSAGES:
        out[MAX_PASSAGES - 1 :] = [" ".join(out[MAX_PASSAGES - 1 :])]
    return out or [text]


@dataclass(frozen=True)
class Passages:
    """The chunks' passage vectors: chunk i's are rows starts[i]:starts[i + 1] of `vectors`
    (one at least)."""

    vectors: npt.NDArray[np.float32]
    starts: npt.NDArray[np.int64]

    @classmethod
    def encode(
        cls,
        encoder: Encoder,
        texts: Sequence[str],
        chunk_vectors: npt.NDArray[np.float32],
        known: Sequence[npt.NDArray[np.float32] | None] = (),
    ) -> Passages:
        """The passages of these chunk texts. A chunk of one passage takes its chunk vector
        (the same text); `known[i]`, where given, are chunk i's vectors already encoded."""
        parts: list[npt.NDArray[np.float32] | list[str]] = []
        todo: list[str] = []
        for i, text in enumerate(texts):
            reused = known[i] if i < len(known) else None
            if reused is not None:
                parts.append(np.asarray(reused, np.float32))
                continue
            pieces = passages_of(text)
            if len(pieces) == 1:
                parts.append(np.asarray(chunk_vectors[i : i + 1], np.float32))
            else:
                parts.append(pieces)
                todo.extend(pieces)
        encoded = encoder.encode(todo) if todo else None
        blocks: list[npt.NDArray[np.float32]] = []
        used = 0
        for part in parts:
            if isinstance(part, list):
                assert encoded is not None
                blocks.append(encoded[used : used + len(part)])
                used += len(part)
            else:
                blocks.append(part)
        starts = np.zeros(len(blocks) + 1, np.int64)
        np.cumsum([len(b) for b in blocks], out=starts[1:])
        dims = chunk_vectors.shape[1] if chunk_vectors.ndim == 2 else encoder.dimensions
        vectors = np.concatenate(blocks) if blocks else np.zeros((0, dims), np.float32)
        return cls(np.ascontiguousarray(vectors, np.float32), starts)

    def of(self, chunk: int) -> npt.NDArray[np.float32]:
        return np.asarray(self.vectors[self.starts[chunk] : self.starts[chunk + 1]])

    def best(self, queries: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """queries x chunks: each chunk's best passage cosine."""
        sims = queries @ np.asarray(self.vectors).T
        return np.maximum.reduceat(sims, self.starts[:-1], axis=1)

    def check(self, n: int, dims: int, count: int) -> None:
        """ValueError unless these are `count` passages of n chunks, dims wide."""
        s = self.starts
        if (
            self.vectors.shape != (count, dims)
            or self.vectors.dtype != np.float32
            or s.shape != (n + 1,)
            or s.dtype != np.int64
            or int(s[0]) != 0
            or int(s[-1]) != count
            or bool(np.any(np.diff(s) < 1))
        ):
            raise ValueError("the passage vectors do not fit the chunks")


class NdbModel:
    """A searchable NDB model (see the module doc for the ranking)."""

    def __init__(
        self,
        settings: Settings,
        chunk_ids: list[str],
        doc_ids: list[str],
        sources: list[str],
        metadata: list[dict[str, Any]],
        texts: _Texts | Sequence[str],
        lexical: LexicalIndex,
        dense: npt.NDArray[np.float32] | None,
        feedback: list[FeedbackEntry],
        associations: list[Association],
        encoder: Encoder | None = None,
        folder: Path | None = None,
        passages: Passages | None = None,
    ) -> None:
        self.settings = settings
        self.chunk_ids = chunk_ids
        self.doc_ids = doc_ids
        self.source_names = sources
        self.metadata = metadata
        self.texts = texts
        self.lexical = lexical
        self.dense = dense
        self.passages = passages if dense is not None else None
        self.feedback = feedback
        self.associations = associations
        self.encoder = encoder
        self.folder = folder
        self.analyzer = Analyzer(settings.language, stop_words=settings.stop_words)
        self.rows = {cid: i for i, cid in enumerate(chunk_ids)}
        self._layer: _FeedbackLayer | None = None
        self._rewrites: list[tuple[list[str], list[str], str, str]] | None = None
        self._metadata_index: dict[str, dict[str, npt.NDArray[np.int64]]] = {}

    # ---- the contract ----------------------------------------------------------------------

    def search(
        self,
        queries: Sequence[str],
        top_k: int,
        constraints: Mapping[str, Any] | None = None,
    ) -> list[list[Reference]]:
        """The best `top_k` references of each query, best first. `constraints`: metadata
        equality ({"key": value}); a list value means any of its values."""
        if not queries:
            return []
        k = max(1, min(int(top_k), MAX_TOP_K))
        allowed = self._allowed(constraints) if constraints else None
        ranked = self.rank(queries, k, allowed)
        return [[self._reference(row, score) for row, score in result] for result in ranked]

    def sources(self) -> list[Source]:
        """The documents, in the model's order, with their chunk counts."""
        counts: dict[str, int] = {}
        names: dict[str, str] = {}
        for doc, source in zip(self.doc_ids, self.source_names, strict=True):
            counts[doc] = counts.get(doc, 0) + 1
            names.setdefault(doc, source)
        return [Source(doc, names[doc], n) for doc, n in counts.items()]

    def has_reference(self, reference_id: str) -> bool:
        return reference_id in self.rows

    # ---- ranking ---------------------------------------------------------------------------

    @property
    def uses_dense(self) -> bool:
        return self.dense is not None and self.encoder is not None

    def rank(
        self,
        queries: Sequence[str],
        k: int,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> list[list[tuple[int, float]]]:
        """(chunk row, score) of each query's best k, best first."""
        original = [self.analyzer.terms(q) for q in queries]
        rewritten = [self._rewrite(q, terms) for q, terms in zip(queries, original, strict=True)]
        lexical = self.lexical.scores([terms for _, terms in rewritten])
        hybrid = (
            self._hybrid([text for text, _ in rewritten], lexical, k, allowed)
            if self.uses_dense
            else None
        )
        layer = self._feedback_layer()
        sims = None if layer.empty else layer.similarities(original)
        out: list[list[tuple[int, float]]] = []
        for i in range(len(queries)):
            scores: dict[int, float]
            if hybrid is None:
                start, end = lexical.indptr[i], lexical.indptr[i + 1]
                values = np.asarray(lexical.data[start:end], np.float64)
                best = float(values.max()) if len(values) else 0.0
                scores = (
                    dict(
                        zip(
                            lexical.indices[start:end].tolist(),
                            (values / best).tolist(),
                            strict=True,
                        )
                    )
                    if best > 0
                    else {}
                )
            else:
                scores = hybrid[i]
            if sims is not None:
                s_start, s_end = sims.indptr[i], sims.indptr[i + 1]
                boost: dict[int, float] = {}
                for key_no, cosine in zip(
                    sims.indices[s_start:s_end].tolist(),
                    sims.data[s_start:s_end].tolist(),
                    strict=True,
                ):
                    if cosine < FEEDBACK_MIN_COSINE:
                        continue
                    for weight, row in layer.targets[key_no]:
                        boost[row] = max(boost.get(row, 0.0), min(weight, 1.0) * cosine)
                for row, b in boost.items():
                    scores[row] = scores.get(row, 0.0) + FEEDBACK_BETA * b
                exact = layer.exact.get(" ".join(original[i]))
                if exact:
                    top = max(scores.values(), default=0.0)
                    for weight, row in exact:
                        scores[row] = top + 1.0 + weight
            if allowed is not None:
                scores = {r: s for r, s in scores.items() if allowed[r]}
            if len(scores) > k:
                items = list(scores.items())
                keys = np.array([s for _, s in items])
                part = np.argpartition(-keys, k - 1)[:k]
                chosen = [items[j] for j in part]
            else:
                chosen = list(scores.items())
            chosen.sort(key=lambda rs: (-rs[1], rs[0]))
            out.append([(int(r), float(s)) for r, s in chosen])
        return out

    def _hybrid(
        self,
        texts: Sequence[str],
        lexical: sp.csr_matrix,
        k: int,
        allowed: npt.NDArray[np.bool_] | None,
    ) -> list[dict[int, float]]:
        """Each query's best chunks by the hybrid score (module doc, step 3), scaled to 1.0."""
        assert self.encoder is not None and self.dense is not None
        dense = np.asarray(self.dense)
        n = dense.shape[0]
        take = min(max(k, HYBRID_CANDIDATES), n)
        cells = n + (len(self.passages.vectors) if self.passages is not None else 0)
        batch = max(1, min(DENSE_QUERY_BATCH, DENSE_BLOCK_CELLS // max(cells, 1)))
        out: list[dict[int, float]] = []
        for start in range(0, len(texts), batch):
            q = self.encoder.encode(list(texts[start : start + batch]))
            cosines = q @ dense.T
            if self.passages is not None:
                cosines += self.passages.best(q)
                cosines /= 2
            block = _zscores(cosines)
            block *= 1 - HYBRID_ALPHA
            for j in range(block.shape[0]):
                row = block[j]
                lo, hi = lexical.indptr[start + j], lexical.indptr[start + j + 1]
                values = np.asarray(lexical.data[lo:hi], np.float64)
                if len(values):
                    # z-scores over all n chunks; the chunks without a shared term score 0
                    mean = values.sum() / n
                    sd = math.sqrt(max(float(np.square(values).sum()) / n - mean * mean, 0.0))
                    if sd > 0:
                        row -= HYBRID_ALPHA * mean / sd
                        row[lexical.indices[lo:hi]] += (HYBRID_ALPHA / sd * values).astype(
                            row.dtype
                        )
                if allowed is not None:
                    row[~allowed] = -np.inf
                idx = np.argpartition(-row, take - 1)[:take] if take < n else np.arange(n)
                vals = row[idx].astype(np.float64)
                keep = np.isfinite(vals)
                idx, vals = idx[keep], vals[keep]
                best = float(vals.max()) if len(vals) else 0.0
                scaled = np.maximum(vals / best, 0.0) if best > 0 else np.zeros_like(vals)
                out.append(dict(zip(idx.tolist(), scaled.tolist(), strict=True)))
        return out

    def _feedback_layer(self) -> _FeedbackLayer:
        if self._layer is None:
            self._layer = _FeedbackLayer(self.analyzer, self.feedback, self.rows)
        return self._layer

    def _rewrite(self, query: str, terms: list[str]) -> tuple[str, list[str]]:
        """The query with associated source phrases replaced by their targets."""
        if not self.associations:
            return query, terms
        if self._rewrites is None:
            rules = []
            for a in self.associations:
                source = self.analyzer.terms(a.source)
                if source:
                    rules.append((source, self.analyzer.terms(a.target), a.source, a.target))
            rules.sort(key=lambda r: -len(r[0]))  # the longest phrase first
            self._rewrites = rules
        text = query
        for source, target, source_text, target_text in self._rewrites:
            n = len(source)
            i, replaced, changed = 0, [], False
            while i < len(terms):
                if terms[i : i + n] == source:
                    replaced += target
                    i += n
                    changed = True
                else:
                    replaced.append(terms[i])
                    i += 1
            if changed:
                terms = replaced
                pattern = re.compile(re.escape(source_text), re.IGNORECASE)
                text = (
                    pattern.sub(target_text.replace("\\", "\\\\"), text)
                    if pattern.search(text)
                    else f"{text} {target_text}"
                )
        return text, terms

    # ---- constraints -----------------------------------------------------------------------

    def _allowed(self, constraints: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
        mask = np.ones(len(self.chunk_ids), bool)
        for key, wanted in constraints.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            index = self._values_of(str(key))
            hit = np.zeros(len(self.chunk_ids), bool)
            for v in values:
                rows = index.get(_constraint_key(v))
                if rows is not None:
                    hit[rows] = True
            mask &= hit
        return mask

    def _values_of(self, key: str) -> dict[str, npt.NDArray[np.int64]]:
        if key not in self._metadata_index:
            found: dict[str, list[int]] = defaultdict(list)
            for row, meta in enumerate(self.metadata):
                if key in meta:
                    found[_constraint_key(meta[key])].append(row)
            self._metadata_index[key] = {v: np.array(r, np.int64) for v, r in found.items()}
        return self._metadata_index[key]

    def _reference(self, row: int, score: float) -> Reference:
        return Reference(
            id=self.chunk_ids[row],
            doc_id=self.doc_ids[row],
            text=self.texts[row],
            source=self.source_names[row],
            score=round(score, 6),
            metadata=dict(self.metadata[row]),
        )

    # ---- building and files ----------------------------------------------------------------

    @classmethod
    def build(
        cls,
        settings: Settings,
        chunks: Sequence[Chunk],
        feedback: Sequence[FeedbackEntry] = (),
        associations: Sequence[Association] = (),
        encoder: Encoder | None = None,
        dense: npt.NDArray[np.float32] | None = None,
        passages: Passages | None = None,
    ) -> NdbModel:
        """A model of these chunks; `dense` (rows of the chunks) and `passages` when already
        encoded, else encoded with `encoder` when given."""
        analyzer = Analyzer(settings.language, stop_words=settings.stop_words)
        lexical = LexicalIndex.build(
            [{f: analyzer.terms(t) for f, t in c.fields.items()} for c in chunks],
            settings.field_weights,
            settings.bm25,
        )
        if encoder is not None and dense is None:
            dense = encoder.encode([c.text for c in chunks])
        if encoder is not None and dense is not None and passages is None:
            passages = Passages.encode(encoder, [c.text for c in chunks], dense)
        if encoder is None:
            dense = passages = None
        settings.encoder = encoder.name if encoder is not None else None
        return cls(
            settings,
            [c.id for c in chunks],
            [c.doc_id for c in chunks],
            [c.source for c in chunks],
            [dict(c.metadata) for c in chunks],
            [c.text for c in chunks],
            lexical,
            dense,
            list(feedback),
            list(associations),
            encoder,
            passages=passages,
        )

    def with_feedback(
        self, feedback: Iterable[FeedbackEntry], associations: Iterable[Association] = ()
    ) -> NdbModel:
        """The same model with more learned associations (the index is shared)."""
        return NdbModel(
            self.settings,
            self.chunk_ids,
            self.doc_ids,
            self.source_names,
            self.metadata,
            self.texts,
            self.lexical,
            self.dense,
            [*self.feedback, *feedback],
            [*self.associations, *associations],
            self.encoder,
            self.folder,
            self.passages,
        )

    def save(self, folder: Path, fields: Sequence[dict[str, str]] | None = None) -> None:
        """Write the model's files into `folder` (see `files()` for what they are)."""
        folder.mkdir(parents=True, exist_ok=True)
        blob = bytearray()
        offsets = [0]
        with open(folder / CHUNKS, "w", encoding="utf-8") as out:
            for row, cid in enumerate(self.chunk_ids):
                text = self.texts[row]
                blob += text.encode("utf-8")
                offsets.append(len(blob))
                item: dict[str, Any] = {
                    "id": cid,
                    "doc_id": self.doc_ids[row],
                    "source": self.source_names[row],
                    "metadata": self.metadata[row],
                }
                if fields is not None and list(fields[row]) != ["text"]:
                    item["fields"] = fields[row]
                out.write(json.dumps(item, ensure_ascii=False) + "\n")
        (folder / TEXTS).write_bytes(bytes(blob))
        np.save(folder / TEXT_OFFSETS, np.array(offsets, np.int64), allow_pickle=False)
        self.lexical.save(folder)
        if self.dense is not None:
            np.save(folder / DENSE, np.asarray(self.dense, np.float32), allow_pickle=False)
        if self.passages is not None:
            np.save(folder / PASSAGES, np.asarray(self.passages.vectors), allow_pickle=False)
            np.save(folder / PASSAGE_STARTS, np.asarray(self.passages.starts), allow_pickle=False)
        with open(folder / FEEDBACK, "w", encoding="utf-8") as out:
            for e in self.feedback:
                out.write(
                    json.dumps(
                        {
                            "query": e.query,
                            "chunk_id": e.chunk_id,
                            "kind": e.kind,
                            "weight": e.weight,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        with open(folder / ASSOCIATIONS, "w", encoding="utf-8") as out:
            for a in self.associations:
                out.write(
                    json.dumps({"source": a.source, "target": a.target}, ensure_ascii=False) + "\n"
                )
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "settings": self.settings.to_json(),
            "chunks": len(self.chunk_ids),
            "vocabulary": self.lexical.terms(),
            "dense_dimensions": int(self.dense.shape[1]) if self.dense is not None else None,
            "dense_passages": len(self.passages.vectors) if self.passages is not None else None,
            "libraries": _library_versions(),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")

    def chunks(self) -> list[Chunk]:
        """Every chunk with its fields (read back from the model's files when loaded)."""
        fields: dict[str, dict[str, str]] = {}
        if self.folder is not None:
            with open(self.folder / CHUNKS, encoding="utf-8") as fh:
                for line in fh:
                    item = json.loads(line)
                    if "fields" in item:
                        fields[item["id"]] = item["fields"]
        return [
            Chunk(
                cid,
                self.doc_ids[row],
                self.source_names[row],
                fields.get(cid) or {"text": self.texts[row]},
                dict(self.metadata[row]),
            )
            for row, cid in enumerate(self.chunk_ids)
        ]


def _zscores(block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Each row as z-scores of its own values (a constant row becomes 0)."""
    mean = block.mean(axis=1, keepdims=True)
    sd = block.std(axis=1, keepdims=True)
    sd[sd == 0] = 1.0
    out: npt.NDArray[np.float32] = ((block - mean) / sd).astype(np.float32, copy=False)
    return out


def _constraint_key(value: Any) -> str:
    """Metadata values and constraint values compare by this key: CSV metadata are strings,
    a JSON constraint may be a number or a boolean (3 matches "3", true matches "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _library_versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for name in ("numpy", "scipy", "PyStemmer"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def load_model(artifact_dir: Path, encoder: Encoder | None = None) -> NdbModel:
    """The model in an artifact folder (as downloaded from blob storage); ValueError when the
    files are not a consistent NDB model. The index arrays are memory-mapped when the model
    was trained with `in_memory: false`. Dense vectors are used when the model has them and
    `encoder` (else the installed one, `trainyard.trainers.embeddings`) is the one that made
    them; without it the model searches lexically."""
    folder = Path(artifact_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"not an NDB model: no {MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an NDB model: {MANIFEST} is not JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError("not an NDB model")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unknown NDB model format version {manifest.get('format_version')!r}")
    try:
        settings = Settings.from_json(manifest["settings"])
        n = int(manifest["chunks"])
        vocab = [str(t) for t in manifest["vocabulary"]]
        chunk_ids, doc_ids, sources, metadata = [], [], [], []
        with open(folder / CHUNKS, encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                chunk_ids.append(str(item["id"]))
                doc_ids.append(str(item["doc_id"]))
                sources.append(str(item["source"]))
                meta = item.get("metadata") or {}
                if not isinstance(meta, dict):
                    raise ValueError("chunk metadata must be objects")
                metadata.append(meta)
        if len(chunk_ids) != n:
            raise ValueError(f"{CHUNKS} holds {len(chunk_ids)} chunks, the manifest {n}")
        mmap = not settings.in_memory
        offsets = np.load(
            folder / TEXT_OFFSETS, mmap_mode="r" if mmap else None, allow_pickle=False
        )
        size = (folder / TEXTS).stat().st_size
        if offsets.shape != (n + 1,) or int(offsets[0]) != 0 or int(offsets[-1]) != size:
            raise ValueError("the text offsets do not fit the texts")
        blob: bytes | np.memmap[Any, Any]
        if mmap and size:
            blob = np.memmap(folder / TEXTS, dtype=np.uint8, mode="r")
        else:
            blob = (folder / TEXTS).read_bytes()
        lexical = LexicalIndex.load(folder, vocab, n, mmap=mmap)
        dense = None
        if manifest.get("dense_dimensions"):
            dense = np.load(folder / DENSE, mmap_mode="r" if mmap else None, allow_pickle=False)
            if dense.shape != (n, int(manifest["dense_dimensions"])) or dense.dtype != np.float32:
                raise ValueError("the dense vectors do not fit the chunks")
        passages = None
        if dense is not None and manifest.get("dense_passages"):
            # models written before passages have none: they score the whole chunk alone
            passages = Passages(
                np.load(folder / PASSAGES, mmap_mode="r" if mmap else None, allow_pickle=False),
                np.load(folder / PASSAGE_STARTS, allow_pickle=False),
            )
            passages.check(n, dense.shape[1], int(manifest["dense_passages"]))
        feedback = []
        if (folder / FEEDBACK).exists():
            with open(folder / FEEDBACK, encoding="utf-8") as fh:
                for line in fh:
                    item = json.loads(line)
                    feedback.append(
                        FeedbackEntry(
                            str(item["query"]),
                            str(item["chunk_id"]),
                            str(item["kind"]),
                            float(item["weight"]),
                        )
                    )
        associations = []
        if (folder / ASSOCIATIONS).exists():
            with open(folder / ASSOCIATIONS, encoding="utf-8") as fh:
                for line in fh:
                    item = json.loads(line)
                    associations.append(Association(str(item["source"]), str(item["target"])))
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"the NDB model files are malformed ({type(exc).__name__}: {exc})"
        ) from exc
    except FileNotFoundError as exc:
        raise ValueError(
            f"the NDB model is incomplete: no {Path(exc.filename or '').name}"
        ) from exc
    used: Encoder | None = None
    if dense is not None and settings.encoder:
        if encoder is None:
            from trainyard.trainers.embeddings import load_encoder

            encoder = load_encoder(settings.encoder)
        if encoder is not None and encoder.name == settings.encoder:
            used = encoder
    return NdbModel(
        settings,
        chunk_ids,
        doc_ids,
        sources,
        metadata,
        _Texts(blob, np.asarray(offsets, np.int64) if not mmap else offsets),
        lexical,
        dense,
        feedback,
        associations,
        used,
        folder,
        passages,
    )
