"""Turning text into index terms: Unicode word tokens, lower-cased, stop words dropped, stemmed
with the Snowball stemmer of the model's language (PyStemmer).

Stop words: scikit-learn's English list for English; for the other Snowball languages none
(BM25's IDF already weighs frequent words down, and a wrong list would hide real words). The
analyzer is named in the artifact, so a model is always searched with the terms it was built
with.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import Stemmer
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

#: The language of a new model when none is given.
DEFAULT_LANGUAGE = "english"
#: Words longer than this are cut (a base64 blob in a document is not a word to search for).
MAX_TOKEN_CHARS = 64

_TOKEN = re.compile(r"\w+", re.UNICODE)


def languages() -> list[str]:
    """The languages an analyzer can stem."""
    return sorted(str(name) for name in Stemmer.algorithms())


class Analyzer:
    """Text -> stemmed terms, for one language."""

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        if language not in languages():
            raise ValueError(f"unknown language {language!r}; one of: {', '.join(languages())}")
        self.language = language
        self._stemmer = Stemmer.Stemmer(language)
        self._stop = frozenset(ENGLISH_STOP_WORDS) if language in ("english", "porter") else None
        self._stem = functools.lru_cache(maxsize=200_000)(self._stemmer.stemWord)

    def words(self, text: str) -> list[str]:
        """The text's words, lower-cased, stop words dropped (not stemmed)."""
        words = [w[:MAX_TOKEN_CHARS] for w in _TOKEN.findall(text.lower())]
        if self._stop is not None:
            words = [w for w in words if w not in self._stop]
        return words

    def terms(self, text: str) -> list[str]:
        """The text's index terms, in order."""
        stem = self._stem
        return [stem(w) for w in self.words(text)]

    def terms_of(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.terms(t) for t in texts]
