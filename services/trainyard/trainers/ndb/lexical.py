"""The lexical index: BM25F scores precomputed into one sparse term x chunk matrix, as bm25s
does for BM25 (a query's scores are one sparse product, batched over queries).

BM25F (Robertson, Zaragoza & Taylor 2004, the "simple BM25F" of Lucene's
BM25FQuery): a chunk's weighted term frequency sums each field's frequency times the field's
weight, each normalised by that field's length against its mean,

    tf~(t, d) = sum_f w_f * tf_f(t, d) / (1 - b + b * len_f(d) / avglen_f)
    score(t, d) = idf(t) * tf~ * (k1 + 1) / (tf~ + k1)
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))     (Lucene's, never negative)

With one field this is BM25 exactly. Several CSV text columns become fields, so a word in a
short title weighs more than the same word in a long body (bm25s and rank-bm25 only know one
text per document; this is why it is hand-written). Query scores: sum over the query's terms
(repeated terms count again) of score(t, d).

Stored as three .npy arrays (CSR of the term x chunk matrix) + the vocabulary; `load(...,
mmap=True)` maps the arrays from disk instead of reading them (the `in_memory: false` mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

K1 = 1.2
B = 0.75

_ARRAYS = ("data", "indices", "indptr")


@dataclass(frozen=True)
class Bm25Params:
    k1: float = K1
    b: float = B


class LexicalIndex:
    """term x chunk BM25F scores (CSR, float32) and the term -> row vocabulary."""

    def __init__(self, vocab: dict[str, int], matrix: sp.csr_matrix, n_chunks: int) -> None:
        self.vocab = vocab
        self.matrix = matrix
        self.n_chunks = n_chunks

    @classmethod
    def build(
        cls,
        chunks: Sequence[Mapping[str, Sequence[str]]],
        weights: Mapping[str, float],
        params: Bm25Params = Bm25Params(),
    ) -> LexicalIndex:
        """The index of chunks given as {field: terms}; `weights` per field (1.0 if absent)."""
        vocab: dict[str, int] = {}
        n = len(chunks)
        fields = sorted({f for c in chunks for f in c})
        rows: list[npt.NDArray[np.int64]] = []
        cols: list[npt.NDArray[np.int64]] = []
        vals: list[npt.NDArray[np.float64]] = []
        for field in fields:
            ids: list[int] = []
            lengths = np.zeros(n, np.float64)
            indptr = [0]
            for d, chunk in enumerate(chunks):
                terms = chunk.get(field, ())
                lengths[d] = len(terms)
                for term in terms:
                    ids.append(vocab.setdefault(term, len(vocab)))
                indptr.append(len(ids))
            if not ids:
                continue
            counts = sp.csr_matrix(
                (np.ones(len(ids), np.float64), np.array(ids, np.int64), np.array(indptr)),
                shape=(n, max(len(vocab), 1)),
            )
            counts.sum_duplicates()
            present = lengths > 0
            avg = float(lengths[present].mean()) if present.any() else 1.0
            norm = 1.0 - params.b + params.b * lengths / max(avg, 1e-9)
            coo = counts.tocoo()
            rows.append(coo.row.astype(np.int64))
            cols.append(coo.col.astype(np.int64))
            vals.append(coo.data * float(weights.get(field, 1.0)) / norm[coo.row])
        v = max(len(vocab), 1)
        if rows:
            tf = sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(n, v),
            )
            tf.sum_duplicates()
        else:
            tf = sp.csr_matrix((n, v), dtype=np.float64)
        df = np.bincount(tf.indices, minlength=v).astype(np.float64)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        tf.data = idf[tf.indices] * tf.data * (params.k1 + 1.0) / (tf.data + params.k1)
        matrix = sp.csr_matrix(tf.T.tocsr(), dtype=np.float32)
        matrix.sort_indices()
        return cls(vocab, matrix, n)

    def query_matrix(self, queries: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """Queries (as terms) x vocabulary, counts; unknown terms are dropped."""
        ids: list[int] = []
        indptr = [0]
        for terms in queries:
            ids += [i for i in (self.vocab.get(t) for t in terms) if i is not None]
            indptr.append(len(ids))
        q = sp.csr_matrix(
            (np.ones(len(ids), np.float32), np.array(ids, np.int64), np.array(indptr)),
            shape=(len(queries), self.matrix.shape[0]),
        )
        q.sum_duplicates()
        return q

    def scores(self, queries: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """queries x chunks BM25F scores, sparse (only chunks sharing a term)."""
        if not queries:
            return sp.csr_matrix((0, self.n_chunks), dtype=np.float32)
        return sp.csr_matrix(self.query_matrix(queries) @ self.matrix)

    # ---- files -----------------------------------------------------------------------------

    def save(self, folder: Path, prefix: str = "lexical") -> list[str]:
        """Write the arrays under `folder`; the file names written."""
        names = []
        for part in _ARRAYS:
            name = f"{prefix}.{part}.npy"
            np.save(folder / name, getattr(self.matrix, part), allow_pickle=False)
            names.append(name)
        return names

    @classmethod
    def load(
        cls, folder: Path, vocab: list[str], n_chunks: int, *, mmap: bool, prefix: str = "lexical"
    ) -> LexicalIndex:
        """The index saved under `folder`; ValueError when the arrays do not fit together."""
        data, indices, indptr = (
            np.load(
                folder / f"{prefix}.{part}.npy", mmap_mode="r" if mmap else None, allow_pickle=False
            )
            for part in _ARRAYS
        )
        v = max(len(vocab), 1)
        if (
            data.ndim != 1
            or indices.shape != data.shape
            or indptr.shape != (v + 1,)
            or (len(indptr) and int(indptr[-1]) != len(data))
            or data.dtype != np.float32
        ):
            raise ValueError("the lexical index arrays are inconsistent")
        if len(indices) and (int(indices.max()) >= max(n_chunks, 1) or int(indices.min()) < 0):
            raise ValueError("the lexical index names chunks that do not exist")
        matrix = sp.csr_matrix((data, indices, indptr), shape=(v, n_chunks), copy=False)
        return cls({t: i for i, t in enumerate(vocab)}, matrix, n_chunks)

    def terms(self) -> list[str]:
        """The vocabulary in row order."""
        out = [""] * len(self.vocab)
        for term, i in self.vocab.items():
            out[i] = term
        return out
