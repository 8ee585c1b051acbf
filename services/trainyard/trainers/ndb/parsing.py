"""Input files -> documents -> chunks, with the doc ids the API pins.

- A pdf, docx, html, txt or md file is one document whose doc id is its file name (as stored;
  a file entry's `doc_id` overrides it when the entry names one file). Its text is cut into
  chunks of CHUNK_WORDS words, each overlapping the previous by OVERLAP_WORDS words; chunk ids
  are `<doc_id>#<n>`, n counting from 0.
- A csv: each row is a document. Its doc id is the `id` column when there is one, else
  `<file name>:<row number>` (data rows counted from 1, the header not counted). Its text is
  the `text` column when there is one, else all the other columns; the row's remaining columns
  become metadata. A file entry's `options` override this: `id_column`, `text_columns` (several
  become BM25F fields, each optionally weighted by `field_weights: {column: weight}`),
  `metadata_columns`. A row's chunks are `<doc_id>#<n>` too (one chunk unless its text is long).
- A file entry's `metadata` object is attached to all its chunks (a row's own metadata win).

Every input is untrusted: a file that is not one of these types, cannot be parsed or holds no
text is skipped with the warning `Unable to parse <name>. <why>`; a CSV row without text is
skipped and counted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from trainyard.trainers.documents import MAX_DOCUMENT_BYTES, extract_text
from trainyard.trainers.ndb.model import Chunk
from trainyard.workload import InputFile

#: Words per chunk and words shared with the previous chunk (the documented default: about a
#: paragraph, the size passage retrieval benchmarks such as MS MARCO use).
CHUNK_WORDS = 128
OVERLAP_WORDS = 32
MAX_FIELD_CHARS = 16 * 1024 * 1024
MAX_CSV_BYTES = 1024 * 1024 * 1024
#: Metadata values longer than this are cut (they are returned with every reference).
MAX_METADATA_CHARS = 4096
FILE_TYPES = (".pdf", ".docx", ".html", ".htm", ".txt", ".text", ".md", ".markdown")
OPTION_KEYS = ("id_column", "text_columns", "metadata_columns", "field_weights", "metadata")

csv.field_size_limit(MAX_FIELD_CHARS)

Warn = Callable[[str], None]


class FileEntryError(ValueError):
    """A file entry's options a user must fix."""


@dataclass(frozen=True)
class FileEntry:
    """One entry of `unsupervised_files`: the files it resolved to and its options."""

    files: Sequence[InputFile]
    id_column: str | None = None
    text_columns: tuple[str, ...] | None = None
    metadata_columns: tuple[str, ...] | None = None
    field_weights: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    doc_id: str | None = None

    @classmethod
    def of(
        cls,
        files: Sequence[InputFile],
        options: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None = None,
        doc_id: str | None = None,
        where: str = "file entry",
    ) -> FileEntry:
        """An entry from the request's `options` (and `metadata`); FileEntryError naming the
        option that is wrong."""
        opts = dict(options or {})

        def columns(key: str) -> tuple[str, ...] | None:
            value = opts.get(key)
            if value is None:
                return None
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
                raise FileEntryError(f"{where}: options.{key} must be a list of column names")
            return tuple(value)

        id_column = opts.get("id_column")
        if id_column is not None and (not isinstance(id_column, str) or not id_column):
            raise FileEntryError(f"{where}: options.id_column must be a column name")
        weights = opts.get("field_weights") or {}
        if not isinstance(weights, dict) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) and 0 < w <= 100
            for w in weights.values()
        ):
            raise FileEntryError(
                f"{where}: options.field_weights must map column names to numbers in (0, 100]"
            )
        meta = dict(opts.get("metadata") or {})
        if metadata:
            meta.update(metadata)
        if not all(isinstance(k, str) for k in meta):
            raise FileEntryError(f"{where}: metadata keys must be strings")
        return cls(
            files=files,
            id_column=id_column,
            text_columns=columns("text_columns"),
            metadata_columns=columns("metadata_columns"),
            field_weights={str(k): float(v) for k, v in weights.items()},
            metadata=meta,
            doc_id=doc_id if doc_id and len(files) == 1 else None,
        )


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    fields: dict[str, str]
    metadata: dict[str, Any]


@dataclass
class ParseStats:
    files: int = 0
    skipped_files: int = 0
    documents: int = 0
    skipped_rows: int = 0
    duplicate_doc_ids: int = 0
    examples: list[str] = field(default_factory=list)


def read_documents(
    entries: Sequence[FileEntry], warn: Warn, stats: ParseStats
) -> Iterator[Document]:
    """The documents of every entry, in order; unusable files are warned about and skipped."""
    for entry in entries:
        for f in entry.files:
            stats.files += 1
            suffix = PurePosixPath(f.name).suffix.lower()
            try:
                if suffix == ".csv":
                    docs = list(_csv_documents(f, entry, stats))
                elif suffix in FILE_TYPES:
                    docs = [_file_document(f, entry, suffix)]
                else:
                    raise _Unusable("Unsupported filetype.")
            except _Unusable as exc:
                stats.skipped_files += 1
                warn(f"Unable to parse {f.name}. {exc}")
                continue
            except Exception as exc:  # a parser of untrusted bytes may raise anything
                stats.skipped_files += 1
                warn(f"Unable to parse {f.name}. {_reason(exc)}")
                continue
            stats.documents += len(docs)
            yield from docs


class _Unusable(Exception):
    pass


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read(f: InputFile, limit: int) -> bytes:
    if f.path.stat().st_size > limit:
        raise _Unusable(f"The file is larger than {limit} bytes.")
    return f.path.read_bytes()


def _file_document(f: InputFile, entry: FileEntry, suffix: str) -> Document:
    text = extract_text(_read(f, MAX_DOCUMENT_BYTES), suffix)
    if not text.strip():
        raise _Unusable("No text found.")
    return Document(entry.doc_id or f.name, f.name, {"text": text}, dict(entry.metadata))


def _csv_documents(f: InputFile, entry: FileEntry, stats: ParseStats) -> Iterator[Document]:
    raw = _read(f, MAX_CSV_BYTES)
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unusable(f"Not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise _Unusable("The file is empty (no header row).")
        columns = [c.strip() for c in header]
        if len(set(columns)) != len(columns) or any(not c for c in columns):
            raise _Unusable("The header row has empty or repeated column names.")
        id_col = entry.id_column
        if id_col is not None and id_col not in columns:
            raise _Unusable(f"No id column {id_col!r} (columns: {_shown(columns)}).")
        if id_col is None and "id" in columns:
            id_col = "id"
        wanted_meta = entry.metadata_columns
        if entry.text_columns is not None:
            missing = [c for c in entry.text_columns if c not in columns]
            if missing:
                raise _Unusable(
                    f"No text column {', '.join(repr(c) for c in missing)} "
                    f"(columns: {_shown(columns)})."
                )
            text_cols = list(entry.text_columns)
        elif "text" in columns:
            text_cols = ["text"]
        else:
            text_cols = [
                c for c in columns if c != id_col and (wanted_meta is None or c not in wanted_meta)
            ]
        if not text_cols:
            raise _Unusable("No column holds text.")
        if wanted_meta is not None:
            missing = [c for c in wanted_meta if c not in columns]
            if missing:
                raise _Unusable(
                    f"No metadata column {', '.join(repr(c) for c in missing)} "
                    f"(columns: {_shown(columns)})."
                )
            meta_cols = list(wanted_meta)
        else:
            meta_cols = [c for c in columns if c != id_col and c not in text_cols]
        index = {c: i for i, c in enumerate(columns)}
        seen: set[str] = set()
        row_number = 0
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            row_number += 1

            def cell(column: str, row: list[str] = row) -> str:
                i = index[column]
                return row[i] if i < len(row) else ""

            doc_id = cell(id_col).strip() if id_col else ""
            if not doc_id:
                doc_id = f"{f.name}:{row_number}"
            fields = {c: cell(c) for c in text_cols if cell(c).strip()}
            if not fields:
                stats.skipped_rows += 1
                if len(stats.examples) < 5:
                    stats.examples.append(f"{f.name} row {row_number}: no text")
                continue
            if doc_id in seen:
                stats.duplicate_doc_ids += 1
                if len(stats.examples) < 5:
                    stats.examples.append(
                        f"{f.name} row {row_number}: repeated id {doc_id[:100]!r}"
                    )
                continue
            seen.add(doc_id)
            metadata = dict(entry.metadata)
            metadata.update({c: cell(c)[:MAX_METADATA_CHARS] for c in meta_cols})
            yield Document(doc_id, f.name, fields, metadata)
    except csv.Error as exc:
        raise _Unusable(f"Malformed CSV near line {reader.line_num}: {exc}.") from exc


def _shown(columns: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in columns[:20])


def chunk_document(
    doc: Document, chunk_words: int = CHUNK_WORDS, overlap_words: int = OVERLAP_WORDS
) -> list[Chunk]:
    """The document's chunks `<doc_id>#<n>`. A document of several fields (CSV text columns)
    is one chunk; one field is cut into windows of chunk_words words, overlapping by
    overlap_words."""
    if len(doc.fields) != 1:
        return [Chunk(f"{doc.doc_id}#0", doc.doc_id, doc.source, dict(doc.fields), doc.metadata)]
    ((name, text),) = doc.fields.items()
    words = text.split()
    step = max(chunk_words - overlap_words, 1)
    chunks: list[Chunk] = []
    start = 0
    while True:
        piece = " ".join(words[start : start + chunk_words])
        chunks.append(
            Chunk(
                f"{doc.doc_id}#{len(chunks)}", doc.doc_id, doc.source, {name: piece}, doc.metadata
            )
        )
        if start + chunk_words >= len(words):
            break
        start += step
    return chunks
