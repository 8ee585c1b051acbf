"""Stop-word lists per Snowball language, shared by the trainers that index words (ndb,
clustering): scikit-learn's classic English list for English (the `stop-words` package's
1,300-word English list drops content words such as "help", "need", "order"), the `stop-words`
package's list for the other languages it covers, None for the rest. Words are returned as the
list has them; each trainer folds case its own way (Turkish dotted/dotless i)."""

from __future__ import annotations

import functools

import stop_words
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

#: Snowball algorithms whose list has another name in the `stop-words` package.
_LIST_NAMES = {"dutch_porter": "dutch", "porter": "english"}


@functools.cache
def stop_word_list(language: str) -> tuple[str, ...] | None:
    """The stop words of a Snowball language (`english`, `turkish`, ...); None without a list."""
    name = _LIST_NAMES.get(language, language)
    if name == "english":
        return tuple(sorted(ENGLISH_STOP_WORDS))
    if name not in stop_words.AVAILABLE_LANGUAGES:
        return None
    words = list(stop_words.get_stop_words(name))
    if name == "turkish":
        # The package's Turkish list is Windows-1254 text decoded as Latin-1 (`altmýþ`).
        words = [w.encode("latin-1", "ignore").decode("cp1254", "ignore") for w in words]
    return tuple(w for w in words if w.strip())
