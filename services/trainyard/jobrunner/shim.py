"""The local workload shim: `python -I -m trainyard.jobrunner.shim --dir D --attempt N -- CMD...`.

The runner starts one shim per attempt in a new session, isolated (`-I`) and with a minimal
environment of its own: the user's variables never reach it. They come in `--env-file`, the
workload's whole environment, and are applied to the workload's process only. With `--uid`
(the job-runner runs as root) the workload runs as that unprivileged user, in `work/` of its
job directory, the only place it owns; the shim's own files stay the shim's (mode 0600). A job's
inline config (`config_json` in the env file) is written to work/trainyard-config.json before
the workload starts, mode 0600 and the workload's own.

The shim owns the workload's pipes, writes every output line to the sequenced job log,
enforces the deadline and the memory/CPU limits, and records how the workload ended in
`exit-<attempt>.json`. Because the shim, not the runner, holds the pipes and the exit status,
a workload survives a restart of the runner, which re-attaches by pid + start time and reads
the exit file when the shim is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from trainyard.jobrunner.domain import JobReason
from trainyard.jobrunner.logfile import STDERR, STDOUT, LogWriter
from trainyard.runtime.files import atomic_write

OOM_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def exit_path(job_dir: Path, attempt: int) -> Path:
    return job_dir / f"exit-{attempt}.json"


def shim_path(job_dir: Path, attempt: int) -> Path:
    return job_dir / f"shim-{attempt}.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as fh:
        fh.write(json.dumps(data).encode())


def work_dir(job_dir: Path) -> Path:
    """The workload's working directory and HOME: the only part of its job directory it owns."""
    return job_dir / "work"


def env_path(job_dir: Path, attempt: int) -> Path:
    return job_dir / f"env-{attempt}.json"


#: The file in work/ that holds the job's config (its path is the workload's TRAINYARD_CONFIG).
CONFIG_FILE_NAME = "trainyard-config.json"


def config_path(job_dir: Path) -> Path:
    return work_dir(job_dir) / CONFIG_FILE_NAME


def write_config(cwd: Path, text: str, uid: int | None, gid: int | None) -> None:
    """Write the job's config into the workload's directory `cwd`, mode 0600, owned by uid:gid
    when given. The workload owns `cwd` and may have planted links there (an earlier attempt),
    so nothing is followed: a fresh temp file (O_EXCL, O_NOFOLLOW) renamed over the name, all
    relative to a descriptor of `cwd` opened without following a link either."""
    dir_fd = os.open(cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        tmp = f".{CONFIG_FILE_NAME}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            try:
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    fh.write(text.encode("utf-8", "surrogatepass"))
                    fh.flush()
                    os.fsync(fd)
                os.fchmod(fd, 0o600)
                if uid is not None:
                    os.fchown(fd, uid, gid if gid is not None else uid)
            finally:
                os.close(fd)
            os.replace(tmp, CONFIG_FILE_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def _limits(memory_mb: int, cores: float) -> Any:
    def apply() -> None:
        if memory_mb > 0:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if cores > 0 and hasattr(os, "sched_setaffinity"):
            available = sorted(os.sched_getaffinity(0))
            want = max(1, int(cores + 0.999))
            if want < len(available):
                os.sched_setaffinity(0, available[:want])

    return apply


def _kill_tree(sig: int) -> None:
    for child in psutil.Process().children(recursive=True):
        try:
            child.send_signal(sig)
        except psutil.Error:
            pass


def _user_args(uid: int | None, gid: int | None) -> dict[str, Any]:
    """Popen arguments that start the workload as uid:gid with no supplementary groups."""
    if uid is None:
        return {}
    group = gid if gid is not None else uid
    # extra_groups=[group]: setgroups() is only called for a non-empty list, and root's own
    # supplementary groups must not reach the workload.
    return {"user": uid, "group": group, "extra_groups": [group]}


def _not_started(writer: LogWriter, job_dir: Path, attempt: int, message: str) -> int:
    """Record an attempt whose workload could not be started (exit code 127)."""
    writer.write(STDERR, f"trainyard: {message}")
    writer.close()
    write_json(
        exit_path(job_dir, attempt),
        {
            "exit_code": 127,
            "signal": None,
            "reason": JobReason.EXIT_CODE.value,
            "message": message,
            "finished": time.time(),
        },
    )
    return 0


def run(ns: argparse.Namespace) -> int:
    job_dir: Path = ns.dir
    os.umask(0o077)  # the log and the exit/shim files are the platform's, not the workload's
    job_dir.mkdir(parents=True, exist_ok=True)
    terminate = False

    def on_term(signum: int, _frame: Any) -> None:
        nonlocal terminate
        terminate = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    env: dict[str, str] | None = None
    config_json: str | None = None
    if ns.env_file is not None:
        payload = json.loads(ns.env_file.read_text())
        env = {str(k): str(v) for k, v in payload["env"].items()}
        config_json = payload.get("config_json")
    cwd = work_dir(job_dir)
    cwd.mkdir(mode=0o700, exist_ok=True)
    if ns.uid is not None:
        # Others may pass through the job directory to reach work/ (HOME), never list or read it.
        job_dir.chmod(0o711)
        os.chown(cwd, ns.uid, ns.gid if ns.gid is not None else ns.uid)
    writer = LogWriter(job_dir / "log", ns.attempt, ns.first_seq)
    started = time.time()
    # The name the pipeline gave, never the server path it resolved to (that is the user's to see).
    shown = os.path.basename(ns.command[0])
    if config_json is not None:
        try:
            write_config(cwd, config_json, ns.uid, ns.gid)
        except OSError as exc:
            return _not_started(
                writer,
                job_dir,
                ns.attempt,
                f"cannot write its config ({CONFIG_FILE_NAME}): {exc.strerror}",
            )
    try:
        child = subprocess.Popen(
            ns.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limits(ns.memory_mb, ns.cores),
            cwd=cwd,
            env=env,
            **_user_args(ns.uid, ns.gid),
        )
    except OSError as exc:
        return _not_started(writer, job_dir, ns.attempt, f"cannot start {shown!r}: {exc.strerror}")
    me = psutil.Process()
    write_json(
        shim_path(job_dir, ns.attempt),
        {
            "pid": me.pid,
            "create_time": me.create_time(),
            "child_pid": child.pid,
            "attempt": ns.attempt,
            "started": started,
        },
    )

    assert child.stdout is not None and child.stderr is not None
    sel = selectors.DefaultSelector()
    partial = {STDOUT: b"", STDERR: b""}
    sel.register(child.stdout, selectors.EVENT_READ, STDOUT)
    sel.register(child.stderr, selectors.EVENT_READ, STDERR)
    stderr_tail = b""
    deadline_hit = False
    stop_sent_at: float | None = None
    open_streams = 2
    while open_streams:
        now = time.time()
        if ns.deadline_seconds and not deadline_hit and now - started > ns.deadline_seconds:
            deadline_hit = True
            terminate = True
        if terminate and stop_sent_at is None:
            stop_sent_at = now
            _kill_tree(signal.SIGTERM)
        if stop_sent_at is not None and now - stop_sent_at > ns.grace:
            _kill_tree(signal.SIGKILL)
        for key, _ in sel.select(timeout=0.2):
            stream: str = key.data
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                if partial[stream]:
                    writer.write(stream, partial[stream].decode("utf-8", "replace"))
                    partial[stream] = b""
                continue
            if stream == STDERR:
                stderr_tail = (stderr_tail + chunk)[-8192:]
            *lines, partial[stream] = (partial[stream] + chunk).split(b"\n")
            for line in lines:
                writer.write(stream, line.decode("utf-8", "replace"))
        writer.flush()
    while True:
        try:
            code = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if terminate and stop_sent_at is not None and time.time() - stop_sent_at > ns.grace:
                _kill_tree(signal.SIGKILL)
    writer.close()
    sig = -code if code < 0 else None
    oom_text = any(m.encode() in stderr_tail for m in OOM_MARKERS)
    reason: JobReason
    if code == 0:
        reason, message = JobReason.NONE, "exited 0"
    elif deadline_hit:
        reason = JobReason.DEADLINE_EXCEEDED
        message = f"ran past its deadline of {ns.deadline_seconds:g}s"
    elif ns.memory_mb and (oom_text or sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT)):
        reason, message = JobReason.OOM_KILLED, f"exceeded its memory limit of {ns.memory_mb} MiB"
    elif terminate:
        reason, message = JobReason.CANCELLED, "stopped on request"
    elif sig is not None:
        reason, message = JobReason.SIGNALED, f"killed by signal {signal.Signals(sig).name}"
    else:
        reason, message = JobReason.EXIT_CODE, f"exited with code {code}"
    write_json(
        exit_path(job_dir, ns.attempt),
        {
            "exit_code": code if code >= 0 else None,
            "signal": sig,
            "reason": reason.value,
            "message": message,
            "finished": time.time(),
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainyard.jobrunner.shim")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--first-seq", type=int, default=None)
    parser.add_argument("--deadline-seconds", type=float, default=0)
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--cores", type=float, default=0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--env-file", type=Path, default=None)
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--gid", type=int, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.command[:1] == ["--"]:
        ns.command = ns.command[1:]
    if not ns.command:
        parser.error("no command given after --")
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
