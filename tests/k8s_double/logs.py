"""Container log storage and rendering (tailLines, sinceTime, timestamps, limitBytes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ._util import rfc3339_nano

# The CRI splits lines longer than this into partial entries.
MAX_LOG_LINE = 16 * 1024


@dataclass(frozen=True)
class LogPiece:
    time: datetime
    data: bytes

    @property
    def ends_line(self) -> bool:
        return self.data.endswith(b"\n")


@dataclass
class LogBuffer:
    """Output of one container instance, as timestamped line pieces.

    A piece is a complete line (ending in a newline) or a partial line: output
    that arrived without a newline is stored as soon as it is read, like the
    CRI's "P" log entries, so followers see it immediately.
    """

    pieces: list[LogPiece] = field(default_factory=list)
    closed: bool = False

    def append(self, moment: datetime, data: bytes) -> None:
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline == -1 else newline + 1
            end = min(end, start + MAX_LOG_LINE)
            self.pieces.append(LogPiece(moment, data[start:end]))
            start = end

    def text(self) -> str:
        return b"".join(piece.data for piece in self.pieces).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class LogOptions:
    tail_lines: int | None = None
    since: datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


def logical_lines(pieces: list[LogPiece]) -> list[tuple[datetime, bytes, int]]:
    """Group pieces into lines: (time of first piece, bytes, index after the last piece)."""
    lines: list[tuple[datetime, bytes, int]] = []
    current: list[bytes] = []
    first: datetime | None = None
    for index, piece in enumerate(pieces):
        if first is None:
            first = piece.time
        current.append(piece.data)
        if piece.ends_line:
            lines.append((first, b"".join(current), index + 1))
            current, first = [], None
    if current and first is not None:
        lines.append((first, b"".join(current), len(pieces)))
    return lines


def render_snapshot(pieces: list[LogPiece], options: LogOptions) -> bytes:
    lines = logical_lines(pieces)
    if options.since is not None:
        since = options.since
        lines = [line for line in lines if line[0] >= since]
    if options.tail_lines is not None:
        lines = lines[-options.tail_lines :] if options.tail_lines > 0 else []
    out = b"".join(
        (rfc3339_nano(moment).encode() + b" " if options.timestamps else b"") + data
        for moment, data, _end in lines
    )
    return out


def render_piece(piece: LogPiece, at_line_start: bool, options: LogOptions) -> bytes:
    if options.timestamps and at_line_start:
        return rfc3339_nano(piece.time).encode() + b" " + piece.data
    return piece.data
