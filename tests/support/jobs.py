"""Helpers shared by the job-runner tests of every backend."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import psutil
from google.protobuf import json_format

from tests.support.wait import wait_until
from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.jobrunner.domain import JobSpec
from trainyard.jobrunner.logfile import Record
from trainyard.jobrunner.runner import JobRunner, JobView
from trainyard.jobrunner.servicer import spec_from_proto

T = TypeVar("T")


def job_spec(fields: Mapping[str, Any]) -> JobSpec:
    """The JobSpec a client sending these JobSpec JSON fields submits: parsed as the API parses
    it, then mapped by the servicer's own conversion."""
    return spec_from_proto(json_format.ParseDict(dict(fields), msgs.JobSpec()))


async def lines(runner: JobRunner, job_id: str, **kw: Any) -> list[Record]:
    """Every log record of a job (with follow=True, until it ends)."""
    return [i async for i in runner.logs(job_id, **kw) if isinstance(i, Record)]


async def wait_state(runner: JobRunner, job_id: str, state: str, timeout: float = 20) -> JobView:
    async def check() -> JobView | None:
        view = await runner.get(job_id)
        return view if view.state == state else None

    return await wait_until(check, timeout, f"job {job_id} reaches {state}")


def gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def follow_with_reconnects(runner: JobRunner, job_id: str, drop_every: int) -> list[Record]:
    """Follow a job's log to its end, dropping the stream every `drop_every` records and
    resuming from the last sequence seen + 1; asserts there is never a gap or a duplicate."""
    records: list[Record] = []
    next_seq = 1
    while True:
        done = False
        count = 0
        async for item in runner.logs(job_id, follow=True, from_seq=next_seq):
            if isinstance(item, Record):
                assert item.seq == next_seq, f"expected sequence {next_seq}, got {item.seq}"
                records.append(item)
                next_seq = item.seq + 1
                count += 1
                if count == drop_every:  # drop the connection mid-stream
                    break
            else:
                done = True
        if done:
            return records


@functools.cache
def python_runs_as(user: str) -> bool:
    """Whether `user` can run this interpreter (not so when it lives under a private home, as
    pyenv's does under /root): tests of `python` workloads run them as that user only then."""
    if os.geteuid() != 0:
        return False
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", "import trainyard.jobrunner"],
            user=user,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return done.returncode == 0


def open_dir() -> Path:
    """A data dir others could reach if the platform did not protect it (unlike pytest's
    tmp_path, whose parent is private to root), so checks of what a workload user can reach
    mean something."""
    path = Path(tempfile.mkdtemp(prefix="trainyard-sec-"))
    path.chmod(0o755)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


#: The system's interpreter of this Python's version (outside any private home).
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")


def python_for(user: str) -> Path | None:
    """An interpreter `user` can run with this environment's packages: this one when it can
    (python_runs_as), else a bare venv of the system's same-version Python in a folder anyone
    can reach whose site-packages adds this environment's (the binary packages are built for
    this minor version). None when neither works (no such system Python, not root)."""
    if python_runs_as(user):
        return Path(sys.executable)
    if os.geteuid() != 0 or not SYSTEM_PYTHON.exists():
        return None
    venv = open_dir() / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True)
    ours = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pth = venv / "lib" / version / "site-packages" / "trainyard-env.pth"
    pth.write_text(f"import site; site.addsitedir({ours!r})\n")
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import trainyard.trainers.nlp_text.__main__"],
        user=user,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return python if done.returncode == 0 else None
