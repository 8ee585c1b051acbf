"""Reading labelled text: CSV rows streamed one at a time, and documents in category folders
(txt, pdf, docx, html, or a zip of them) turned into text once, into a local JSON-lines file
that later passes stream like a CSV.

Every input is untrusted: a missing column or a malformed row is a `DataError` naming the file
and the row; a document that cannot be parsed is skipped (and counted); a zip is read member by
member within caps on members and uncompressed bytes, and members with path tricks are skipped.
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from trainyard.trainers.documents import DOCUMENT_TYPES, MAX_DOCUMENT_BYTES
from trainyard.trainers.documents import extract_text as extract_text  # used by tests too
from trainyard.workload import InputFile

#: Largest CSV field (the csv module's default is 128 KiB: a long document would stop the run).
MAX_FIELD_CHARS = 16 * 1024 * 1024
#: A zip input: at most this many members and this many uncompressed bytes in all; one member
#: at most MAX_DOCUMENT_BYTES (a plain document file too).
MAX_ZIP_MEMBERS = 100_000
MAX_ZIP_BYTES = 4 * 1024 * 1024 * 1024

csv.field_size_limit(MAX_FIELD_CHARS)


class DataError(Exception):
    """Training data a user must fix; the message names the file, column or row."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    where: str  # "train.csv row 12", "sports/a.pdf"


@dataclass
class Skipped:
    """What was left out, for warnings and the report."""

    rows: int = 0
    documents: int = 0
    reasons: list[str] = field(default_factory=list)

    def note(self, reason: str, document: bool) -> None:
        if document:
            self.documents += 1
        else:
            self.rows += 1
        if len(self.reasons) < 20:
            self.reasons.append(reason)


class CsvSource:
    """The rows of CSV files with a text and a label column; each iteration reads them anew."""

    def __init__(
        self, files: Sequence[InputFile], text_column: str, label_column: str, delimiter: str
    ) -> None:
        self.files = list(files)
        self.text_column = text_column
        self.label_column = label_column
        self.delimiter = delimiter
        self.skipped = Skipped()

    def __iter__(self) -> Iterator[Example]:
        self.skipped = Skipped()
        for f in self.files:
            yield from self._read(f)

    def _read(self, f: InputFile) -> Iterator[Example]:
        try:
            fh = open(f.path, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise DataError(f"{f.name}: cannot open: {exc.strerror or exc}") from exc
        with fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            try:
                header = next(reader, None)
                if header is None:
                    raise DataError(f"{f.name}: the file is empty (no header row)")
                columns = [c.strip() for c in header]
                missing = [c for c in (self.text_column, self.label_column) if c not in columns]
                if missing:
                    shown = ", ".join(repr(c) for c in columns[:20])
                    raise DataError(
                        f"{f.name}: no column {' or '.join(repr(c) for c in missing)} in the "
                        f"header (columns: {shown}; delimiter {self.delimiter!r})"
                    )
                ti, li = columns.index(self.text_column), columns.index(self.label_column)
                need = max(ti, li)
                for row in reader:
                    where = f"{f.name} row {reader.line_num}"
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    if len(row) <= need:
                        self.skipped.note(
                            f"{where}: {len(row)} fields, header has {len(columns)}", False
                        )
                        continue
                    text, label = row[ti], row[li].strip()
                    if not label or not text.strip():
                        self.skipped.note(f"{where}: empty text or label", False)
                        continue
                    yield Example(text, label, where)
            except csv.Error as exc:
                raise DataError(f"{f.name} line {reader.line_num}: malformed CSV: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{f.name} near line {reader.line_num}: not UTF-8 text ({exc.reason})"
                ) from exc


class JsonlSource:
    """Examples cached as JSON lines (documents already turned into text)."""

    def __init__(self, path: Path, skipped: Skipped) -> None:
        self.path = path
        self.skipped = skipped

    def __iter__(self) -> Iterator[Example]:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                yield Example(item["text"], item["label"], item["where"])


def cache_documents(
    files: Sequence[InputFile],
    dest: Path,
    warn: Callable[[str], None],
    *,
    max_zip_members: int = MAX_ZIP_MEMBERS,
    max_zip_bytes: int = MAX_ZIP_BYTES,
) -> JsonlSource:
    """Every document of `files` (category = first path segment of its name, or of its zip
    member's name) as text, written to `dest` as JSON lines; unreadable ones skipped."""
    skipped = Skipped()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", encoding="utf-8") as out:
        for f in files:
            if f.name.lower().endswith(".zip"):
                docs = _zip_members(f, skipped, max_zip_members, max_zip_bytes)
            else:
                docs = _plain_document(f, skipped)
            for name, read in docs:
                example = _document(name, read, skipped)
                if example is not None:
                    out.write(
                        json.dumps(
                            {"text": example.text, "label": example.label, "where": example.where}
                        )
                        + "\n"
                    )
    if skipped.documents:
        warn(
            f"skipped {skipped.documents} document(s) that could not be used, e.g. "
            + "; ".join(skipped.reasons[:3])
        )
    return JsonlSource(dest, skipped)


def _plain_document(f: InputFile, skipped: Skipped) -> Iterator[tuple[str, Callable[[], bytes]]]:
    def read() -> bytes:
        if f.path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise ValueError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
        return f.path.read_bytes()

    yield f.name, read


def _zip_members(
    f: InputFile, skipped: Skipped, max_members: int, max_bytes: int
) -> Iterator[tuple[str, Callable[[], bytes]]]:
    try:
        archive = zipfile.ZipFile(f.path)
    except (zipfile.BadZipFile, OSError) as exc:
        skipped.note(f"{f.name}: not a readable zip ({exc})", True)
        return
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > max_members:
            raise DataError(f"{f.name}: more than {max_members} members in the zip")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise DataError(f"{f.name}: the zip unpacks to {total} bytes, over {max_bytes}")
        for info in infos:
            name = info.filename
            path = PurePosixPath(name)
            if "\\" in name or path.is_absolute() or ".." in path.parts or ":" in name:
                skipped.note(f"{f.name}: member {name[:200]!r} has an unsafe path", True)
                continue
            if info.file_size > MAX_DOCUMENT_BYTES:
                skipped.note(f"{f.name}: member {name[:200]!r} is too large", True)
                continue

            def read(info: zipfile.ZipInfo = info) -> bytes:
                # zipfile stops at the declared size and checks the CRC, so a member that lies
                # about its size raises instead of growing.
                with archive.open(info) as member:
                    return member.read(MAX_DOCUMENT_BYTES + 1)

            yield name, read


def _document(name: str, read: Callable[[], bytes], skipped: Skipped) -> Example | None:
    parts = PurePosixPath(name).parts
    if len(parts) < 2:
        skipped.note(f"{name}: not inside a category folder (<category>/<file>)", True)
        return None
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in DOCUMENT_TYPES:
        skipped.note(f"{name}: unsupported document type {suffix or '(none)'!r}", True)
        return None
    try:
        text = extract_text(read(), suffix)
    except Exception as exc:  # a parser of untrusted bytes may raise anything: skip the file
        skipped.note(f"{name}: cannot be parsed ({type(exc).__name__}: {str(exc)[:200]})", True)
        return None
    if not text.strip():
        skipped.note(f"{name}: no text", True)
        return None
    return Example(text, parts[0], name)
