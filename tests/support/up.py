"""`trainyard up` as a user runs it, for end-to-end tests: a child process on a fresh data dir
with port 0, and the endpoints it wrote."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from tests.support.wait import eventually

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def running_up(
    data: Path, env: Mapping[str, str] | None = None, stdout: int | IO[Any] = subprocess.DEVNULL
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """(process, endpoints.json) of a `trainyard up` on `data`; SIGTERM when done."""
    proc = subprocess.Popen(
        [str(BIN / "trainyard"), "up", "--data-dir", str(data), "--http-port", "0"],
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout == subprocess.PIPE else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        endpoints = eventually(
            lambda: (
                (data / "endpoints.json").exists()
                and json.loads((data / "endpoints.json").read_text())
            ),
            timeout=120,
            message="trainyard up never wrote endpoints.json",
        )
        yield proc, endpoints
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def user_token(data: Path, user: str) -> str:
    """A user token signed with `data`'s key, minted as a user would (`trainyard token`)."""
    return subprocess.run(
        [str(BIN / "trainyard"), "token", "--data-dir", str(data), "--user", user],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
