"""Child processes: ones that never outlive their parent (Linux PR_SET_PDEATHSIG), and the one
way to stop a process or a process group (SIGTERM, a grace period, then SIGKILL).

The parent death signal is set by `setpriv --pdeathsig` (util-linux) between our fork and the
child's program, never by Python code in the child: a `preexec_fn` makes subprocess fork the
whole multithreaded interpreter and run Python there, and with gRPC's threads about that child
crashed now and then before its exec (Envoy "exited with -6/-11"). Without preexec_fn,
subprocess uses vfork/posix_spawn and runs nothing of ours in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psutil

_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def with_parent_death(command: Sequence[str], signal_name: str = "TERM") -> list[str]:
    """`command`, started so that it gets SIG<signal_name> when its parent dies (Linux with
    util-linux's setpriv; elsewhere the command as it is, and the parent's own shutdown
    stops its children)."""
    if _SETPRIV is None:
        return list(command)
    return [_SETPRIV, "--pdeathsig", signal_name, "--", *command]


def stop_processes(procs: Iterable[subprocess.Popen[Any]], grace: float) -> None:
    """SIGTERM every process still running, give them `grace` seconds together to exit, then
    SIGKILL those still there; returns once all are reaped."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies do not count)."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


async def stop_process_group(pgid: int, grace: float) -> None:
    """SIGTERM process group `pgid`, give it `grace` seconds to exit, then SIGKILL what is left;
    returns once no process of the group runs. A group that is gone (or not ours to signal) is
    left alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    while group_alive(pgid):
        await asyncio.sleep(0.02)
