"""Turning text into index terms: Unicode word tokens, lower-cased, stop words dropped, stemmed
with the Snowball stemmer of the model's language (PyStemmer).

Stop words (`stop_words=True`, what new models use): scikit-learn's English list for English,
the `stop-words` package's list for the other Snowball languages it covers (French, German,
Spanish, Italian, Dutch, Turkish, Russian, Arabic, ...), none for the rest (Basque, Tamil, ...).
Models built before the non-English lists existed record `stop_words: false` for those
languages (model.Settings reads an absent flag so), and are searched as they were built.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import Stemmer

from trainyard.trainers.stopwords import stop_word_list

#: The language of a new model when none is given.
DEFAULT_LANGUAGE = "english"
#: Words longer than this are cut (a base64 blob in a document is not a word to search for).
MAX_TOKEN_CHARS = 64

_TOKEN = re.compile(r"\w+", re.UNICODE)


def languages() -> list[str]:
    """The languages an analyzer can stem."""
    return sorted(str(name) for name in Stemmer.algorithms())


@functools.cache
def stop_words_of(language: str) -> frozenset[str] | None:
    """The language's stop words, lower-cased; None when no list covers it."""
    words = stop_word_list(language)
    return None if words is None else frozenset(w.lower() for w in words)


class Analyzer:
    """Text -> stemmed terms, for one language."""

    def __init__(self, language: str = DEFAULT_LANGUAGE, *, stop_words: bool = True) -> None:
        if language not in languages():
            raise ValueError(f"unknown language {language!r}; one of: {', '.join(languages())}")
        self.language = language
        self._stemmer = Stemmer.Stemmer(language)
        self._stop = stop_words_of(language) if stop_words else None
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
