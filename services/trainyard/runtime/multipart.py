"""Incremental multipart/form-data decoding (python-multipart) into part events.

Shared by every service that takes a multipart body (uploads, clustering training requests).
`feed()` takes the body chunk by chunk and returns what it found in that chunk; part data comes
as views of the fed bytes, so nothing is copied or buffered beyond the chunk at hand. Malformed
bodies are INVALID_ARGUMENT; each service passes the `hint` its callers should read (how to
send the body right), appended to those messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from trainyard.runtime.errors import InvalidArgument

DEFAULT_HINT = "send a multipart/form-data body, e.g. `curl -F name=value -F file=@data.csv ...`"


@dataclass(frozen=True)
class PartStart:
    """A part begins. `filename` is None for a plain form field (which is not stored)."""

    field: str
    filename: str | None


@dataclass(frozen=True)
class PartData:
    data: memoryview


@dataclass(frozen=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


def boundary_of(content_type: str, hint: str = DEFAULT_HINT) -> bytes:
    """The boundary of a multipart/form-data content type; INVALID_ARGUMENT for anything else."""
    if not content_type.strip():
        raise InvalidArgument("the request has no content type; " + hint, reason="NOT_MULTIPART")
    media, params = parse_options_header(content_type)
    if media != b"multipart/form-data":
        raise InvalidArgument(
            f"expected a multipart/form-data body, got {media.decode('latin-1')!r}; " + hint,
            reason="NOT_MULTIPART",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidArgument(
            "the multipart/form-data content type has no boundary parameter; " + hint,
            reason="NOT_MULTIPART",
        )
    return boundary


def _header_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class MultipartDecoder:
    """Decodes one body; `hint` ends the message of every INVALID_ARGUMENT it raises."""

    def __init__(self, content_type: str, hint: str = DEFAULT_HINT) -> None:
        self._hint = hint
        boundary = boundary_of(content_type, hint)
        self._events: list[Event] = []
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                },
            )
        except Exception as exc:
            raise InvalidArgument(
                f"unusable multipart boundary: {exc}", reason="MALFORMED_MULTIPART"
            ) from exc

    # python-multipart callbacks ----------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        # Kept as latin-1 text (lossless); parse_options_header turns it back into the bytes.
        name = bytes(self._field).decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._value).decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        raw_filename = params.get(b"filename")
        # Clients send UTF-8 names. None: a plain form field, or a file input left empty.
        filename = _header_text(raw_filename) if raw_filename else None
        self._events.append(
            PartStart(field=_header_text(params.get(b"name", b"")), filename=filename)
        )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(PartData(memoryview(data)[start:end]))

    def _on_part_end(self) -> None:
        self._events.append(PartEnd())

    # ---------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse the next chunk of the body; returns the events it completed."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidArgument(
                f"malformed multipart body: {exc}; " + self._hint, reason="MALFORMED_MULTIPART"
            ) from exc
        events, self._events = self._events, []
        return events

    def finish(self) -> None:
        """The body ended: INVALID_ARGUMENT unless the closing boundary was seen."""
        if self._parser.state != MultipartState.END:
            raise InvalidArgument(
                "the multipart body ended before its closing boundary (`--BOUNDARY--`); "
                "the upload was truncated",
                reason="MALFORMED_MULTIPART",
            )
