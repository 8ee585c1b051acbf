"""The sequenced job log: one file per job, written by whoever captures the workload's output
(the local shim, or the runner for Kubernetes pods), read by every log reader.

Each record is one line: `seq \\t attempt \\t o|e \\t unix_ns \\t text`. Sequence numbers start
at 1 and have no gaps across streams and attempts, so a reader that resumes from `last + 1`
misses nothing and sees nothing twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STDOUT, STDERR = "o", "e"


@dataclass(frozen=True)
class Record:
    seq: int
    attempt: int
    stream: str  # "o" | "e"
    time_ns: int
    text: str


def parse(line: str) -> Record | None:
    """A record from one complete line; None for a torn (incomplete) line."""
    if not line.endswith("\n"):
        return None
    parts = line[:-1].split("\t", 4)
    if len(parts) != 5:
        return None
    seq, attempt, stream, ts, text = parts
    return Record(int(seq), int(attempt), stream, int(ts), text)


class LogWriter:
    """Appends records; `first_seq` continues an existing log."""

    def __init__(self, path: Path, attempt: int, first_seq: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(path)
        self.path = path
        self.attempt = attempt
        self.next_seq = first_seq if first_seq is not None else last_seq(path) + 1
        self._fh: IO[str] = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def write(self, stream: str, text: str, time_ns: int | None = None) -> None:
        """Append one line; `time_ns` defaults to now (Kubernetes passes the kubelet's stamp)."""
        text = text.replace("\n", " ").replace("\r", "")
        stamp = time.time_ns() if time_ns is None else time_ns
        self._fh.write(f"{self.next_seq}\t{self.attempt}\t{stream}\t{stamp}\t{text}\n")
        self.next_seq += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


def records_backwards(path: Path) -> Iterator[Record]:
    """The log's complete records from the last to the first (a torn tail is skipped), reading
    the file from its end in blocks, so the tail of a large log is found without a full scan."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed when the generator ends
    except FileNotFoundError:
        return
    with fh:
        end = fh.seek(0, os.SEEK_END)  # everything before `end` is still to be yielded
        block = 1 << 16
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            pieces = fh.read(end - start).split(b"\n")
            pieces.pop()  # after the last newline: empty, or the torn tail of a dead writer
            new_end = start
            if start > 0:
                # The first piece may begin before `start`: leave it for the next block.
                new_end = start + len(pieces[0]) + 1 if pieces else end
                if new_end == end:  # a line longer than the block: read more at once
                    block *= 4
                    continue
                pieces = pieces[1:]
            for raw in reversed(pieces):
                rec = parse(raw.decode("utf-8", "replace") + "\n")
                if rec is not None:
                    yield rec
            end = new_end


def last_seq(path: Path) -> int:
    """The last complete record's sequence number (0 for no log)."""
    return next((rec.seq for rec in records_backwards(path)), 0)


def drop_torn_tail(path: Path) -> None:
    """Cut an incomplete last line (a writer that died mid-record), so that what is appended
    next starts on a line of its own."""
    try:
        fh = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return
    with fh:
        size = fh.seek(0, os.SEEK_END)
        block = 4096
        while size:
            start = max(0, size - block)
            fh.seek(start)
            data = fh.read(size - start)
            cut = data.rfind(b"\n")
            if cut >= 0 or start == 0:
                fh.truncate(start + cut + 1)  # cut == -1 at start 0: no complete line at all
                return
            block *= 4


class LogReader:
    """Reads records in order from a sequence number, remembering its offset so that polling
    for new records never rescans the file."""

    def __init__(self, path: Path, from_seq: int = 1) -> None:
        self.path = path
        self.next_seq = max(1, from_seq)
        self._offset = 0

    def read(self, limit: int = 10_000) -> list[Record]:
        out: list[Record] = []
        try:
            fh = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return out
        with fh:
            fh.seek(self._offset)
            while len(out) < limit:
                raw = fh.readline()
                if not raw:
                    break
                rec = parse(raw.decode("utf-8", "replace"))
                if rec is None:  # torn tail: the writer is mid-line; read it next time
                    break
                self._offset += len(raw)
                if rec.seq >= self.next_seq:
                    out.append(rec)
                    self.next_seq = rec.seq + 1
        return out


def iter_records(path: Path) -> Iterator[Record]:
    reader = LogReader(path)
    while batch := reader.read():
        yield from batch
