"""The sequenced job log: reading backwards across block boundaries, torn tails."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.jobrunner.logfile import (
    LogWriter,
    drop_torn_tail,
    iter_records,
    last_seq,
    records_backwards,
)


@pytest.mark.parametrize("sizes", [[1, 2, 3], [70_000, 5, 200_000, 1], [65_530] * 5, [0] * 3000])
def test_records_backwards_is_the_log_reversed(tmp_path: Path, sizes: list[int]) -> None:
    path = tmp_path / "log"
    writer = LogWriter(path, attempt=1)
    for i, size in enumerate(sizes):
        writer.write("o" if i % 2 else "e", f"{i}:" + "x" * size)
    writer.close()
    forward = list(iter_records(path))
    assert [r.seq for r in forward] == list(range(1, len(sizes) + 1))
    assert list(records_backwards(path)) == forward[::-1]
    assert last_seq(path) == len(sizes)


def test_a_torn_tail_is_ignored_then_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = LogWriter(path, attempt=1)
    for text in ("a", "b"):
        writer.write("o", text)
    writer.close()
    with open(path, "ab") as fh:  # a writer killed in the middle of record 3
        fh.write(b"3\t1\to\t17\thalf a li")
    assert last_seq(path) == 2
    assert [r.text for r in records_backwards(path)] == ["b", "a"]
    again = LogWriter(path, attempt=2)  # the next attempt continues the log
    again.write("o", "c")
    again.close()
    assert [(r.seq, r.attempt, r.text) for r in iter_records(path)] == [
        (1, 1, "a"),
        (2, 1, "b"),
        (3, 2, "c"),
    ]


def test_drop_torn_tail_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "log"
    drop_torn_tail(path)  # no file: nothing to do
    path.write_bytes(b"")
    drop_torn_tail(path)
    assert path.read_bytes() == b""
    path.write_bytes(b"no newline at all " * 1000)
    drop_torn_tail(path)
    assert path.read_bytes() == b""
    path.write_bytes(b"1\t1\to\t5\tfine\n")
    drop_torn_tail(path)
    assert path.read_bytes() == b"1\t1\to\t5\tfine\n"
    assert list(records_backwards(tmp_path / "missing")) == []
