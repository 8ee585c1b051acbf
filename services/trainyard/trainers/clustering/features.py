"""Text representation for clustering, per language.

1. Normalisation: NFKC, the language's lower-casing (Turkish: dotted capital I (U+0130) → i,
   capital I → dotless i (U+0131), so "KIRMIZI" meets its lower-case spelling and "ISTANBUL"
   with a dotted capital becomes "istanbul"); Arabic: diacritics and tatweel removed, the alef
   forms with hamza or madda → bare alef, alef maqsura → ya, ta marbuta → ha.
2. Words: Unicode word tokens, the language's stop words dropped, Snowball stems (PyStemmer
   covers all six languages); TF-IDF over stem uni- and bigrams (sublinear tf).
3. Characters: TF-IDF over character 2-5-grams inside word boundaries of the normalised text
   (robust to inflection, typos and the languages where stemming is coarse).
4. Both blocks (each L2-normalised) are stacked, reduced with truncated SVD and L2-normalised.
5. With a packaged sentence encoder for the language (`trainyard.trainers.embeddings`), its unit
   vectors are concatenated with the lexical ones (weights below) and the result re-normalised.

A fitted featurizer is plain arrays plus a JSON config, so a saved model is data only.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import Stemmer
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from trainyard.trainers.embeddings import Encoder, load_encoder
from trainyard.trainers.stopwords import stop_word_list

Matrix = npt.NDArray[np.float32]

#: Snowball algorithm and stop-word list per supported language.
_LANGUAGES = {
    "en": "english",
    "tr": "turkish",
    "ar": "arabic",
    "fr": "french",
    "nl": "dutch",
    "it": "italian",
}

#: Squared share of each part in the combined unit vector (lexical + dense = 1).
DENSE_WEIGHT = 0.6
#: Character n-grams' share inside the lexical block (words get the rest).
CHAR_WEIGHT = 0.5
MAX_WORD_FEATURES = 100_000
MAX_CHAR_FEATURES = 100_000

_WORD = re.compile(r"\w+", re.UNICODE)
_ARABIC_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_ARABIC_LETTERS = str.maketrans(
    {"\u0623": "\u0627", "\u0625": "\u0627", "\u0622": "\u0627", "\u0671": "\u0627",
     "\u0649": "\u064a", "\u0629": "\u0647"}
)  # fmt: skip


def base_language(language_code: str) -> str:
    return language_code.split("-", 1)[0].lower()


def normalise(text: str, language_code: str) -> str:
    """The text in the form every feature sees: NFKC, lower case by the language's rules."""
    text = unicodedata.normalize("NFKC", text)
    language = base_language(language_code)
    if language in ("tr", "az"):
        text = text.replace("\u0130", "i").replace("I", "\u0131")
        # Lower-casing never produces a combining dot any more: `İ` is already `i`.
        return text.lower()
    if language == "ar":
        text = _ARABIC_MARKS.sub("", text).translate(_ARABIC_LETTERS)
    return text.lower()


@functools.cache
def _stop_words(language_code: str) -> frozenset[str]:
    language = _LANGUAGES.get(base_language(language_code))
    words = (stop_word_list(language) if language else None) or ()
    return frozenset(normalise(w, language_code) for w in words)


@functools.cache
def _stemmer(language_code: str) -> Stemmer.Stemmer | None:
    algorithm = _LANGUAGES.get(base_language(language_code))
    return Stemmer.Stemmer(algorithm) if algorithm else None


def tokens(text: str, language_code: str) -> list[str]:
    """Content-word stems of a text: normalised, stop words dropped, Snowball-stemmed."""
    stops = _stop_words(language_code)
    words = [w for w in _WORD.findall(normalise(text, language_code)) if w not in stops]
    words = [w for w in words if not w.isdigit()]
    stemmer = _stemmer(language_code)
    return list(stemmer.stemWords(words)) if stemmer else words


def _unit_rows(matrix: Matrix) -> Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Matrix = (matrix / norms).astype(np.float32)
    return result


def encoder_for(language_code: str) -> Encoder | None:
    """The packaged sentence encoder when one is installed and trained for the language."""
    encoder = load_encoder()
    if encoder is None or base_language(language_code) not in encoder.languages:
        return None
    return encoder


class Featurizer:
    """Fit on training texts, then turn any text into the same unit-vector space."""

    def __init__(
        self,
        language_code: str,
        dims: int,
        seed: int,
        encoder: Encoder | None = None,
    ) -> None:
        self.language_code = language_code
        self.dims = dims
        self.seed = seed
        self.encoder = encoder
        self._word = self._word_vectorizer(None)
        self._char = self._char_vectorizer(None)
        self._components: Matrix | None = None

    @property
    def encoder_name(self) -> str | None:
        return self.encoder.name if self.encoder is not None else None

    def _analyze(self, text: str) -> list[str]:
        stems = tokens(text, self.language_code) or _WORD.findall(
            normalise(text, self.language_code)
        )  # an utterance of stop words only ("yes", "evet") keeps its words
        return stems + [f"{a} {b}" for a, b in itertools.pairwise(stems)]

    def _preprocess(self, text: str) -> str:
        return normalise(text, self.language_code)

    def _word_vectorizer(self, vocabulary: dict[str, int] | None) -> TfidfVectorizer:
        return TfidfVectorizer(
            analyzer=self._analyze,
            sublinear_tf=True,
            max_features=None if vocabulary else MAX_WORD_FEATURES,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def _char_vectorizer(self, vocabulary: dict[str, int] | None) -> TfidfVectorizer:
        return TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            preprocessor=self._preprocess,
            lowercase=False,
            sublinear_tf=True,
            max_features=None if vocabulary else MAX_CHAR_FEATURES,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def _stack(self, word: sparse.csr_matrix, char: sparse.csr_matrix) -> sparse.csr_matrix:
        # Each block is L2-normalised by its vectorizer; weight them so the stack stays unit.
        stacked: sparse.csr_matrix = sparse.hstack(
            [word * np.sqrt(1.0 - CHAR_WEIGHT), char * np.sqrt(CHAR_WEIGHT)], format="csr"
        )
        return stacked

    def fit_transform(self, texts: Sequence[str]) -> Matrix:
        try:
            word = self._word.fit_transform(texts)
            char = self._char.fit_transform(texts)
        except ValueError as exc:  # scikit-learn: "empty vocabulary"
            raise ValueError("the utterances contain no words to cluster") from exc
        stacked = self._stack(word, char)
        dims = min(self.dims, stacked.shape[1] - 1, stacked.shape[0] - 1)
        if dims >= 2:
            svd = TruncatedSVD(n_components=dims, random_state=self.seed, algorithm="randomized")
            reduced = svd.fit_transform(stacked).astype(np.float32)
            self._components = svd.components_.astype(np.float32)
        else:
            self._components = None
            reduced = stacked.toarray().astype(np.float32)
        return self._combine(_unit_rows(reduced), texts)

    def transform(self, texts: Sequence[str]) -> Matrix:
        return self._combine(self.lexical(texts), texts)

    def lexical(self, texts: Sequence[str]) -> Matrix:
        """The lexical part alone (unit rows): what a model without its encoder falls back to."""
        stacked = self._stack(self._word.transform(texts), self._char.transform(texts))
        if self._components is None:
            return _unit_rows(stacked.toarray().astype(np.float32))
        return _unit_rows(np.asarray(stacked @ self._components.T, dtype=np.float32))

    def lexical_width(self) -> int:
        if self._components is not None:
            return int(self._components.shape[0])
        return len(self._word.vocabulary_) + len(self._char.vocabulary_)

    def _combine(self, lexical: Matrix, texts: Sequence[str]) -> Matrix:
        if self.encoder is None:
            return lexical
        dense = self.encoder.encode(list(texts))
        combined = np.hstack(
            [lexical * np.sqrt(1.0 - DENSE_WEIGHT), dense * np.sqrt(DENSE_WEIGHT)]
        ).astype(np.float32)
        return _unit_rows(combined)

    def word_vocabulary(self) -> list[str]:
        return [str(t) for t in self._word.get_feature_names_out()]

    def word_presence(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Which word features (stems and stem bigrams) each text has, as 0/1."""
        matrix: sparse.csr_matrix = self._word.transform(texts).tocsr()
        matrix.data[:] = 1.0
        return matrix

    def config(self) -> dict[str, Any]:
        return {
            "language_code": self.language_code,
            "dims": self.dims,
            "seed": self.seed,
            "encoder": self.encoder_name,
            "dense_weight": DENSE_WEIGHT,
            "char_weight": CHAR_WEIGHT,
            "word_vocabulary": self.word_vocabulary(),
            "char_vocabulary": [str(t) for t in self._char.get_feature_names_out()],
            "svd": self._components is not None,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "word_idf": np.asarray(self._word.idf_, dtype=np.float64),
            "char_idf": np.asarray(self._char.idf_, dtype=np.float64),
        }
        if self._components is not None:
            out["svd_components"] = self._components
        return out

    @classmethod
    def from_saved(
        cls, config: dict[str, Any], arrays: dict[str, np.ndarray], encoder: Encoder | None
    ) -> Featurizer:
        self = cls(str(config["language_code"]), int(config["dims"]), int(config["seed"]), encoder)
        words = [str(t) for t in config["word_vocabulary"]]
        chars = [str(t) for t in config["char_vocabulary"]]
        if len(words) != len(arrays["word_idf"]) or len(chars) != len(arrays["char_idf"]):
            raise ValueError("vocabulary and IDF sizes differ")
        self._word = self._word_vectorizer({t: i for i, t in enumerate(words)})
        self._char = self._char_vectorizer({t: i for i, t in enumerate(chars)})
        self._word.idf_ = arrays["word_idf"]
        self._char.idf_ = arrays["char_idf"]
        if config["svd"]:
            components = arrays["svd_components"].astype(np.float32)
            if components.ndim != 2 or components.shape[1] != len(words) + len(chars):
                raise ValueError("SVD components do not fit the vocabularies")
            self._components = components
        return self
