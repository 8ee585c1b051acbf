"""The clustering training data: dialogue and intent files, parsed and normalised.

Both the clustering service (at request time, so a bad file is a 400 before anything is
stored or run) and the clustering workload (reading the normalised result) use this module.

Formats (README "Clustering data formats"):

- dialogue: CSV with the header `conversation_id,speaker,text` (one utterance a row, in
  conversation order), a JSON list of objects with those keys, or JSON Lines of them.
  Clustering uses the customer side: rows whose speaker is one of CUSTOMER_SPEAKERS
  (case-insensitive); when the speaker column holds a single value, every row.
- intent: CSV `text,intent`, a JSON list of `{"text", "intent"}` objects, or JSON Lines.

Columns (keys) must be exactly the expected ones, in any order; anything else is a DataError
naming them. Files are UTF-8, with or without a byte-order mark; text is kept exactly as sent
(only surrounding whitespace is trimmed), so Turkish and Arabic round-trip unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from trainyard.runtime.untrusted import json_depth

DIALOGUE = "dialogue"
INTENT = "intent"
SCHEMAS = (DIALOGUE, INTENT)
COLUMNS = {DIALOGUE: ("conversation_id", "speaker", "text"), INTENT: ("text", "intent")}
#: Speaker values taken as the customer side of a dialogue (compared case-insensitively).
CUSTOMER_SPEAKERS = (
    "customer",
    "user",
    "client",
    "caller",
    "visitor",
    "human",
    "müşteri",
    "musteri",
    "cliente",
    "klant",
    "عميل",
    "العميل",
)
#: Speaker values of the other side (documented; any value not in CUSTOMER_SPEAKERS is not used).
AGENT_SPEAKERS = ("agent", "bot", "assistant", "operator", "temsilci", "agente", "medewerker")
#: Longest utterance kept, in characters (a longer one is a DataError naming its row).
MAX_TEXT_CHARS = 10_000
#: Most rows one file may hold.
MAX_ROWS = 200_000
_JSON_DEPTH = 4
#: The normalised file a workload reads (JSON Lines of `Record`).
NORMALISED_NAME = "utterances.jsonl"


class DataError(ValueError):
    """A file that is not valid training data; the message says what to fix."""


@dataclass(frozen=True)
class Record:
    """One utterance to cluster: its text, its intent (intent data only) and its source."""

    text: str
    intent: str | None
    source: str  # "dialogue" | "intent"


def _text(raw: bytes, where: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where} is not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from exc


def _expected(schema: str) -> str:
    return ",".join(COLUMNS[schema])


def _check_columns(schema: str, found: Sequence[str], where: str, what: str) -> None:
    names = [str(name).strip() for name in found]
    if sorted(names) != sorted(COLUMNS[schema]):
        shown = ",".join(names)[:200] or "none"
        raise DataError(
            f"{where}: {schema} data needs exactly the {what} {_expected(schema)}; found {shown}"
        )


def _rows_csv(schema: str, text: str, where: str) -> Iterator[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{where} is empty; send a header {_expected(schema)} and rows")
        _check_columns(schema, header, where, "columns")
        names = [h.strip() for h in header]
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise DataError(
                    f"{where} line {number}: {len(row)} values, expected {len(names)} "
                    f"({_expected(schema)}); quote values that hold commas"
                )
            yield dict(zip(names, row, strict=True))
    except csv.Error as exc:
        raise DataError(f"{where}: not valid CSV ({exc})") from exc


def _row_of(schema: str, value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DataError(
            f"{where}: each entry must be an object with keys {_expected(schema)}, "
            f"not {type(value).__name__}"
        )
    _check_columns(schema, list(value), where, "keys")
    row: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            if item is None:
                item = ""
            else:
                raise DataError(f"{where}: {key} must be a string")
        row[str(key).strip()] = str(item)
    return row


def _rows_json(schema: str, text: str, where: str) -> Iterator[dict[str, str]]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        if json_depth(stripped.encode()) > _JSON_DEPTH:
            raise DataError(f"{where}: JSON nested too deeply; send a flat list of objects")
        try:
            value = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DataError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(value, list):
            raise DataError(f"{where}: expected a JSON list of objects")
        for number, item in enumerate(value, start=1):
            yield _row_of(schema, item, f"{where} item {number}")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if json_depth(line.encode()) > _JSON_DEPTH:
            raise DataError(f"{where} line {number}: JSON nested too deeply")
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DataError(f"{where} line {number}: not a JSON object ({exc})") from exc
        yield _row_of(schema, item, f"{where} line {number}")


def parse_rows(schema: str, raw: bytes, where: str) -> list[dict[str, str]]:
    """The rows of one file of `schema` (CSV, JSON list or JSON Lines, told apart by their
    first character), each with exactly the schema's columns; DataError otherwise."""
    if schema not in SCHEMAS:
        raise DataError(f"unknown data schema {schema!r}; use dialogue or intent")
    text = _text(raw, where)
    if not text.strip():
        raise DataError(f"{where} is empty")
    first = text.lstrip()[:1]
    rows_iter = _rows_json(schema, text, where) if first in "[{" else _rows_csv(schema, text, where)
    rows: list[dict[str, str]] = []
    for row in rows_iter:
        rows.append(row)
        if len(rows) > MAX_ROWS:
            raise DataError(f"{where} has more than {MAX_ROWS} rows; split the data")
    return rows


def _clean(value: str, where: str, column: str) -> str:
    cleaned = value.strip()
    if len(cleaned) > MAX_TEXT_CHARS:
        raise DataError(f"{where}: {column} is longer than {MAX_TEXT_CHARS} characters")
    return cleaned


def dialogue_records(rows: Sequence[dict[str, str]], where: str) -> list[Record]:
    """The customer-side utterances of dialogue rows (all rows when one speaker value)."""
    speakers = {row["speaker"].strip().casefold() for row in rows}
    if len(speakers) <= 1:
        chosen: Iterable[dict[str, str]] = rows
    else:
        customer = {s.casefold() for s in CUSTOMER_SPEAKERS}
        chosen = [row for row in rows if row["speaker"].strip().casefold() in customer]
        if not chosen:
            shown = ", ".join(sorted(speakers))[:200]
            raise DataError(
                f"{where}: no customer-side utterances; the speaker column holds {shown}, "
                f"and customer rows need one of {', '.join(CUSTOMER_SPEAKERS[:5])} "
                "(or a single speaker value for all rows)"
            )
    out = []
    for i, row in enumerate(chosen, start=1):
        text = _clean(row["text"], f"{where} row {i}", "text")
        if text:
            out.append(Record(text, None, DIALOGUE))
    return out


def intent_records(rows: Sequence[dict[str, str]], where: str) -> list[Record]:
    out = []
    for i, row in enumerate(rows, start=1):
        text = _clean(row["text"], f"{where} row {i}", "text")
        intent = _clean(row["intent"], f"{where} row {i}", "intent")
        if not text:
            continue
        if not intent:
            raise DataError(f"{where} row {i}: intent is empty; give every text its intent")
        out.append(Record(text, intent, INTENT))
    return out


def records_of(schema: str, raw: bytes, where: str) -> list[Record]:
    """The utterances one file contributes (DataError when it has none)."""
    rows = parse_rows(schema, raw, where)
    records = dialogue_records(rows, where) if schema == DIALOGUE else intent_records(rows, where)
    if not records:
        raise DataError(f"{where} holds no utterances")
    return records


def to_jsonl(records: Iterable[Record]) -> bytes:
    """The normalised file (UTF-8 JSON Lines, text kept as is)."""
    return b"".join(
        json.dumps(
            {"text": r.text, "intent": r.intent, "source": r.source}, ensure_ascii=False
        ).encode()
        + b"\n"
        for r in records
    )


def from_jsonl(raw: bytes) -> list[Record]:
    """The records of a normalised file `to_jsonl` wrote."""
    out = []
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            value = json.loads(line)
            out.append(Record(str(value["text"]), value.get("intent"), str(value["source"])))
    return out
