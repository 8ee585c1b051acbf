"""The small shared helpers of trainyard.runtime: atomic files, the page token, the UTC clock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from trainyard.runtime.children import group_alive, stop_process_group, stop_processes
from trainyard.runtime.clock import as_utc, utcnow
from trainyard.runtime.errors import InvalidArgument
from trainyard.runtime.files import atomic_write
from trainyard.runtime.pagination import decode_page_token, encode_page_token


def test_atomic_write_replaces_the_whole_file_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with atomic_write(target, mode=0o600) as fh:
        fh.write(b"new")
        assert target.read_text() == "old", "readers see the old file until the end"
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def interrupted() -> None:
        with atomic_write(target) as fh:
            fh.write(b"half")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_page_tokens_round_trip_in_utc() -> None:
    naive = datetime(2026, 5, 1, 12, 30, 15, 123456)  # as SQLite returns a stored UTC time
    token = encode_page_token(naive, "id-1")
    assert decode_page_token(token) == (naive.replace(tzinfo=UTC), "id-1")
    paris = datetime(2026, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    created, _ = decode_page_token(encode_page_token(paris, "x"))
    assert created == paris and created.utcoffset() == timedelta(0)


@pytest.mark.parametrize("token", ["nope!", "e30", "eyJjIjogMX0"])  # bad base64, {}, {"c": 1}
def test_page_tokens_not_issued_here_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_page_token(token, field="page_token")
    assert [v.field for v in err.value.violations] == ["page_token"]


def test_clock_is_aware_utc() -> None:
    assert utcnow().utcoffset() == timedelta(0)
    assert as_utc(None) is None
    assert as_utc(datetime(2026, 1, 1)).tzinfo is UTC


#: A child that says it is ready, then ignores SIGTERM (as a stuck process would).
STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _started(code: str, **kw: object) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-c", code], stdout=subprocess.PIPE, **kw
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_stop_processes_terminates_then_kills() -> None:
    polite = _started("import time; print('ready', flush=True); time.sleep(60)")
    stubborn = _started(STUBBORN)
    stop_processes([polite, stubborn], grace=0.5)
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL


async def test_stop_process_group_kills_the_whole_group() -> None:
    leader = _started(
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {STUBBORN!r}]).wait()\n",
        start_new_session=True,
    )
    try:
        await stop_process_group(leader.pid, grace=0.5)
        assert not group_alive(leader.pid)
        assert leader.wait(10) == -signal.SIGTERM
    finally:
        stop_processes([leader], grace=0)
