"""Token features of the CRF: one list of attribute names per token of a sentence.

Training (python-crfsuite) and serving (the NumPy decoder in `inference`) both call
`sentence_features`, so a model sees at prediction time exactly the attributes it was trained
on; an attribute the model never saw carries no weight, as in crfsuite's own tagger.

`FEATURES_VERSION` goes into the model artifact: a change here that alters any attribute name
must bump it, and `inference.load` refuses a model written with another version rather than
silently predicting with features it was not trained on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

FEATURES_VERSION = 1

#: Only this many characters of a token feed its features: a token is untrusted input, and a
#: megabyte-long "word" must not make megabyte-long attribute names (nor distinguish itself
#: from its first 64 characters, which says all a CRF can use anyway).
MAX_TOKEN_CHARS = 64

_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")
_DIGIT = re.compile(r"[0-9]")
_RUN = re.compile(r"(.)\1+")


def word_shape(word: str) -> str:
    """`Xxxx` / `dd-dd` style shape: upper → X, lower → x, digit → d, other kept."""
    out = []
    for ch in word:
        if ch.isupper():
            out.append("X")
        elif ch.islower():
            out.append("x")
        elif ch.isdigit():
            out.append("d")
        else:
            out.append(ch)
    return "".join(out)


def short_shape(word: str) -> str:
    """The shape with repeated characters collapsed (`Xxxxx` → `Xx`): generalises over length."""
    return _RUN.sub(r"\1", word_shape(word))


def _kind(word: str) -> str:
    """A coarse class of tokens that spelling features alone would split up."""
    lower = word.lower()
    if lower.startswith(("http://", "https://", "www.")):
        return "url"
    if word.startswith("@") and len(word) > 1:
        return "mention"
    if word.startswith("#") and len(word) > 1:
        return "hashtag"
    if any(ch.isalnum() for ch in word):
        return "word"
    return "punct"


def _token_attributes(word: str) -> list[str]:
    """The attributes of one token on its own (also used, prefixed, for its neighbours)."""
    lower = word.lower()
    attrs = [
        f"w={word}",
        f"lw={lower}",
        f"sh={short_shape(word)}",
        f"kind={_kind(word)}",
    ]
    if len(word) <= 8:
        attrs.append(f"fsh={word_shape(word)}")
    for n in range(1, 5):
        if len(lower) >= n:
            attrs.append(f"p{n}={lower[:n]}")
            attrs.append(f"s{n}={lower[-n:]}")
    if word.istitle():
        attrs.append("title")
    if word.isupper():
        attrs.append("upper")
    if word.isdigit():
        attrs.append("digit")
    elif _DIGIT.search(word):
        attrs.append("has_digit")
    if "-" in word:
        attrs.append("hyphen")
    if _UPPER.search(word[1:]) and _LOWER.search(word):
        attrs.append("mixed_case")
    return attrs


def _context_attributes(word: str) -> list[str]:
    """What a neighbour contributes: less than the token itself, to keep the model small."""
    lower = word.lower()
    return [f"lw={lower}", f"sh={short_shape(word)}", f"s3={lower[-3:]}"] + (
        ["title"] if word.istitle() else []
    )


def sentence_features(tokens: Sequence[str]) -> list[list[str]]:
    """Attribute names for each token: its own spelling and shape, the words and shapes of the
    tokens up to two away, and the word bigrams around it."""
    words = [t[:MAX_TOKEN_CHARS] for t in tokens]
    n = len(words)
    own = [_token_attributes(w) for w in words]
    ctx = [_context_attributes(w) for w in words]
    lowers = [w.lower() for w in words]
    out: list[list[str]] = []
    for i in range(n):
        attrs = ["bias", *own[i]]
        for offset in (-2, -1, 1, 2):
            j = i + offset
            if 0 <= j < n:
                attrs += [f"{offset:+d}:{a}" for a in ctx[j]]
            elif offset in (-1, 1):
                attrs.append("BOS" if offset < 0 else "EOS")
        if i > 0:
            attrs.append(f"bi-1={lowers[i - 1]}|{lowers[i]}")
        if i + 1 < n:
            attrs.append(f"bi+1={lowers[i]}|{lowers[i + 1]}")
        out.append(attrs)
    return out
