"""Text representation: per-language normalisation, word + character n-gram TF-IDF, SVD, L2.

Everything that a fitted featurizer needs is plain arrays and a JSON config, so a saved model
is data only (no pickle).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str, language_code: str) -> str:
    """Lower-cases with the language's rules (Turkish dotted/dotless i) and NFKC."""
    text = unicodedata.normalize("NFKC", text)
    if language_code.startswith("tr"):
        text = text.replace("İ", "i").replace("I", "\u0131")
    return text.lower()


def words(text: str, language_code: str) -> list[str]:
    return _WORD.findall(normalise(text, language_code))


class Featurizer:
    def __init__(self, language_code: str, dims: int, seed: int) -> None:
        self.language_code = language_code
        self.dims = dims
        self.seed = seed
        self._word = self._word_vectorizer(None)
        self._char = self._char_vectorizer(None)
        self._components: np.ndarray | None = None

    def _word_vectorizer(self, vocabulary: dict[str, int] | None) -> TfidfVectorizer:
        return TfidfVectorizer(
            analyzer=lambda t: words(t, self.language_code),
            ngram_range=(1, 1),
            sublinear_tf=True,
            vocabulary=vocabulary,
        )

    def _char_vectorizer(self, vocabulary: dict[str, int] | None) -> TfidfVectorizer:
        return TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 4),
            preprocessor=lambda t: normalise(t, self.language_code),
            sublinear_tf=True,
            min_df=1,
            max_features=50_000,
            vocabulary=vocabulary,
        )

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        stacked = sparse.hstack(
            [self._word.fit_transform(texts), self._char.fit_transform(texts)]
        ).tocsr()
        dims = max(1, min(self.dims, stacked.shape[1] - 1, stacked.shape[0] - 1))
        if dims >= 2:
            svd = TruncatedSVD(n_components=dims, random_state=self.seed)
            svd.fit(stacked)
            self._components = svd.components_.astype(np.float32)
        else:
            self._components = None
        return self._project(stacked)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        stacked = sparse.hstack([self._word.transform(texts), self._char.transform(texts)]).tocsr()
        return self._project(stacked)

    def _project(self, stacked: sparse.csr_matrix) -> np.ndarray:
        dense = (
            np.asarray(stacked @ self._components.T)
            if self._components is not None
            else stacked.toarray()
        ).astype(np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        result: np.ndarray = dense / norms
        return result

    def word_vocabulary(self) -> list[str]:
        return [str(t) for t in self._word.get_feature_names_out()]

    def word_counts(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Raw (untransformed) word term presence, for c-TF-IDF keywords."""
        matrix: sparse.csr_matrix = self._word.transform(texts)
        return matrix

    def config(self) -> dict[str, Any]:
        return {
            "language_code": self.language_code,
            "dims": self.dims,
            "seed": self.seed,
            "word_vocabulary": self.word_vocabulary(),
            "char_vocabulary": [str(t) for t in self._char.get_feature_names_out()],
            "svd": self._components is not None,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "word_idf": self._word.idf_.astype(np.float64),
            "char_idf": self._char.idf_.astype(np.float64),
        }
        if self._components is not None:
            out["svd_components"] = self._components
        return out

    @classmethod
    def from_saved(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Featurizer:
        self = cls(str(config["language_code"]), int(config["dims"]), int(config["seed"]))
        self._word = self._word_vectorizer(
            {str(t): i for i, t in enumerate(config["word_vocabulary"])}
        )
        self._char = self._char_vectorizer(
            {str(t): i for i, t in enumerate(config["char_vocabulary"])}
        )
        self._word.idf_ = arrays["word_idf"]
        self._char.idf_ = arrays["char_idf"]
        self._components = arrays.get("svd_components") if config["svd"] else None
        return self
