"""Reading token-tagging CSVs row by row: `read_sentences` yields one `Sentence` per usable row.

The source column holds space-separated tokens and the target column as many space-separated
tags. A row whose counts differ is skipped and counted (`ReadStats`); a tag that is neither the
default tag, a target label, nor `B-`/`I-` + a target label becomes the default tag and is
counted too, so the trainer can warn once with totals instead of once per row.
"""

from __future__ import annotations

import csv
import io
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: A field may be this long (the csv module's default, 128 KiB, is too small for long texts).
MAX_FIELD_CHARS = 16 * 1024 * 1024
#: How many first row numbers of skipped rows a warning names.
SHOWN_ROWS = 5


class DataError(Exception):
    """Training data a user must fix; the message names the file, the column or the row."""


@dataclass(frozen=True)
class Sentence:
    tokens: list[str]
    tags: list[str]


@dataclass(frozen=True)
class TagScheme:
    """Which tags a model learns: the target labels, plain (`PER`) or in BIO form (`B-PER`,
    `I-PER`), and the default tag for every other token."""

    target_labels: tuple[str, ...]
    default_tag: str

    def label_of(self, tag: str) -> str | None:
        """The target label a tag belongs to; None for the default tag or an unknown one."""
        if tag in self.target_labels:
            return tag
        if tag[:2] in ("B-", "I-") and tag[2:] in self.target_labels:
            return tag[2:]
        return None

    def bio(self, tags: Sequence[str]) -> list[str]:
        """The tags as BIO for span scoring: BIO tags stay, a run of one plain label becomes
        one span (B- then I-), anything else is outside."""
        out: list[str] = []
        previous: str | None = None
        for tag in tags:
            label = self.label_of(tag)
            if label is None:
                out.append("O")
            elif tag != label:  # already B-X / I-X
                out.append(tag)
            else:
                out.append(("I-" if previous == label else "B-") + label)
            previous = label
        return out


@dataclass
class ReadStats:
    rows: int = 0
    sentences: int = 0
    tokens: int = 0
    length_mismatch: int = 0
    mismatch_rows: list[str] = field(default_factory=list)
    empty_rows: int = 0
    unknown_tags: Counter[str] = field(default_factory=Counter)

    def warnings(self) -> list[str]:
        out = []
        if self.length_mismatch:
            out.append(
                f"skipped {self.length_mismatch} row(s) whose token and tag counts differ "
                f"(first: {', '.join(self.mismatch_rows)})"
            )
        if self.unknown_tags:
            total = sum(self.unknown_tags.values())
            shown = ", ".join(f"{t!r} ({n})" for t, n in self.unknown_tags.most_common(10))
            out.append(
                f"{total} tag(s) outside target_labels became the default tag: {shown}"
                + (" ..." if len(self.unknown_tags) > 10 else "")
            )
        return out


def read_sentences(
    path: Path,
    name: str,
    source_column: str,
    target_column: str,
    scheme: TagScheme,
    stats: ReadStats,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[Sentence]:
    """The usable rows of one CSV (UTF-8, optional BOM, `,`-delimited, quoted fields)."""
    csv.field_size_limit(min(MAX_FIELD_CHARS, sys.maxsize))
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{name}: cannot read the header row: {exc}") from exc
        if header is None:
            raise DataError(f"{name}: the file is empty (no header row)")
        missing = [c for c in (source_column, target_column) if c not in header]
        if missing:
            raise DataError(
                f"{name}: no column {' or '.join(map(repr, missing))} in the header "
                f"(columns: {', '.join(map(repr, header[:20]))})"
            )
        src, tgt = header.index(source_column), header.index(target_column)
        width = max(src, tgt)
        row_number = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{name}: row {row_number + 1}: {exc}") from exc
            row_number += 1
            stats.rows += 1
            if on_bytes is not None and row_number % 256 == 0:
                on_bytes(raw.tell())  # the text layer cannot tell() mid-iteration
            if len(row) <= width:
                if not any(cell.strip() for cell in row):
                    stats.empty_rows += 1
                    continue
                raise DataError(
                    f"{name}: row {row_number} has {len(row)} field(s); the "
                    f"{'target' if tgt == width else 'source'} column is number {width + 1}"
                )
            tokens, tags = row[src].split(), row[tgt].split()
            if not tokens and not tags:
                stats.empty_rows += 1
                continue
            if len(tokens) != len(tags):
                stats.length_mismatch += 1
                if len(stats.mismatch_rows) < SHOWN_ROWS:
                    stats.mismatch_rows.append(f"{name} row {row_number}")
                continue
            clean = []
            for tag in tags:
                if tag != scheme.default_tag and scheme.label_of(tag) is None:
                    stats.unknown_tags[tag[:64]] += 1
                    tag = scheme.default_tag
                clean.append(tag)
            stats.sentences += 1
            stats.tokens += len(tokens)
            yield Sentence(tokens, clean)
