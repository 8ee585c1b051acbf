"""What a datagen run is asked to generate, and what it generates: typed values, no I/O.

A token task names its tags (each with examples and a description) and optional sample
sentences; a text task names its labels. Generated rows are `TokenRow`s (one plain tag per
whitespace-free token, the tag of tokens outside any entity being `OUTSIDE`) or `TextRow`s.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

#: The tag of tokens outside any entity (nlp-token's default tag).
OUTSIDE = "O"


class GenerationError(Exception):
    """Generation cannot go on; the message says what to fix (written for the model's owner)."""


@dataclass(frozen=True)
class Entity:
    """A tag or label to generate data for."""

    name: str
    examples: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class TokenRow:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class TextRow:
    text: str
    label: str


@dataclass(frozen=True)
class TokenTask:
    task_prompt: str
    tags: tuple[Entity, ...]
    samples: tuple[TokenRow, ...]
    #: How many sentences to generate in all.
    sentences: int
    #: How many variants of each sample's template the offline provider makes.
    templates_per_sample: int = 10

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags)


@dataclass(frozen=True)
class TextTask:
    task_prompt: str
    labels: tuple[Entity, ...]
    samples_per_label: int


R = TypeVar("R", TokenRow, TextRow)
T = TypeVar("T")


@dataclass
class Generated(Generic[R]):
    """Rows and who produced them: `provider` is shown to the model's owner."""

    rows: list[R]
    provider: str
    warnings: list[str] = field(default_factory=list)


def plain_tag(tag: str, names: Sequence[str]) -> str | None:
    """The entity a tag stands for (`B-NAME`, `I-NAME` and `NAME` are NAME), `OUTSIDE` for the
    outside tag, None for a tag that is neither."""
    if tag == OUTSIDE:
        return OUTSIDE
    if tag in names:
        return tag
    if tag[:2] in ("B-", "I-") and tag[2:] in names:
        return tag[2:]
    return None


def split_rows(rows: Sequence[T], test_size: float, seed: int) -> tuple[list[T], list[T]]:
    """Shuffle (seeded) and hold out `test_size` of the rows, rounded down, keeping at least
    one training row: (train, test)."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    held = min(int(len(shuffled) * test_size), max(len(shuffled) - 1, 0))
    return shuffled[held:], shuffled[:held]
