"""Local backend: each attempt runs under a shim in its own session (see shim.py).

Nothing of the user's reaches platform code: the shim starts isolated (`python -I`) with a
minimal environment of its own, and gets the workload's environment in a file it applies to the
workload's process only. That environment is built here from scratch (a fixed PATH, HOME = the
job's work directory, the job's id and name, where its config is, the user's variables):
nothing of the job-runner's own environment (settings, secrets) leaks into it. A job's inline
config travels in the same file; the shim writes it into the work directory for the workload.
When the job-runner runs as root, workloads run as an unprivileged user
(TRAINYARD_JOBRUNNER_WORKLOAD_USER) that owns only its work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import structlog

from trainyard.jobrunner.backends.base import Backend, OnRunning, Outcome, Workload
from trainyard.jobrunner.domain import JobReason, JobState, parse_reason
from trainyard.jobrunner.logfile import last_seq
from trainyard.jobrunner.shim import config_path, env_path, exit_path, work_dir
from trainyard.runtime.children import stop_process_group
from trainyard.runtime.files import atomic_write
from trainyard.workload.config import CONFIG_PATH_VAR, CONFIG_URI_VAR

log = structlog.get_logger("trainyard.jobrunner.local")

RETRYABLE = frozenset({JobReason.EXIT_CODE, JobReason.OOM_KILLED, JobReason.SIGNALED})
#: The PATH of every workload (and shim): the job-runner's interpreter's bin first, so `python`
#: and the tools installed beside it are found, then the system's.
SAFE_PATH = os.pathsep.join(
    dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
)


def workload_identity(user: str) -> tuple[int, int] | None:
    """(uid, gid) to run workloads as: `user` (a name or a number) when this process is root;
    None (run as this process's user) when `user` is empty or this process is not root."""
    if not user or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError as exc:
        raise ValueError(
            f"TRAINYARD_JOBRUNNER_WORKLOAD_USER={user!r} is not a user of this machine"
        ) from exc
    if entry.pw_uid == 0:
        raise ValueError("TRAINYARD_JOBRUNNER_WORKLOAD_USER must not be root")
    return entry.pw_uid, entry.pw_gid


def _alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == create_time and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _read_exit(job_dir: Path, attempt: int) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(exit_path(job_dir, attempt).read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def can_execute(path: str, uid: int, gid: int) -> bool:
    """Whether uid:gid (no supplementary groups) may execute `path`: every folder on the way
    searchable, the file executable, by the permission bits that apply to them."""

    def allowed(st: os.stat_result, bit: int) -> bool:
        if st.st_uid == uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid == gid:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    try:
        real = Path(os.path.realpath(path))
        for folder in [*reversed(real.parents), *reversed(Path(path).parents)]:
            if not allowed(folder.stat(), 1):
                return False
        return allowed(real.stat(), 1)
    except OSError:
        return False


def parse_uid_range(text: str) -> range | None:
    """`FIRST-LAST` (inclusive) as a range of uids; None for an empty setting."""
    if not text:
        return None
    try:
        first, last = (int(part) for part in text.split("-", 1))
    except ValueError as exc:
        raise ValueError(
            f"TRAINYARD_JOBRUNNER_WORKLOAD_UIDS={text!r} is not FIRST-LAST, e.g. 200000-265535"
        ) from exc
    if first <= 0 or last < first:
        raise ValueError(f"TRAINYARD_JOBRUNNER_WORKLOAD_UIDS={text!r}: need 0 < FIRST <= LAST")
    return range(first, last + 1)


class LocalBackend(Backend):
    name = "local"
    runner_admission = True

    def __init__(
        self,
        log_root: Path,
        grace_seconds: float = 5.0,
        workload_user: str = "",
        workload_uids: str = "",
    ) -> None:
        self.log_root = log_root
        self.grace = grace_seconds
        #: (uid, gid) workloads run as; None: as the job-runner's own user.
        self.identity = workload_identity(workload_user)
        #: With a range (and root), each running job gets a uid of its own from it instead,
        #: so workloads of different jobs cannot signal, trace or read one another either.
        self.uid_range = parse_uid_range(workload_uids) if os.geteuid() == 0 else None
        self._uids: dict[str, int] = {}
        if self.uid_range is not None:
            self.identity = None
        elif self.identity is not None and not can_execute(sys.executable, *self.identity):
            log.warning(
                "jobrunner.workload_user_cannot_run_python",
                user=workload_user,
                interpreter=sys.executable,
                hint="python workloads will fail to start; install the interpreter where "
                "that user can reach it, or set TRAINYARD_JOBRUNNER_WORKLOAD_USER",
            )
        self._cancelled: set[str] = set()

    def _env(self, wl: Workload) -> dict[str, str]:
        """The workload's whole environment: built from scratch, never from os.environ."""
        env = {
            "PATH": SAFE_PATH,
            "HOME": str(work_dir(wl.log_path.parent)),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "TRAINYARD_JOB_ID": wl.job_id,
            "TRAINYARD_JOB_NAME": wl.name,
        }
        if wl.config_json:
            # The shim writes the file (the workload's own, 0600) before the workload starts.
            env[CONFIG_PATH_VAR] = str(config_path(wl.log_path.parent))
        if wl.config_uri:
            env[CONFIG_URI_VAR] = wl.config_uri
        # The reserved names were refused on submit; the platform's values win regardless.
        env.update({k: v for k, v in wl.env.items() if k not in env})
        return env

    def _write_env(self, wl: Workload, attempt: int) -> Path:
        path = env_path(wl.log_path.parent, attempt)
        payload: dict[str, Any] = {"env": self._env(wl)}
        if wl.config_json:
            payload["config_json"] = wl.config_json
        with atomic_write(path, mode=0o600) as fh:
            fh.write(json.dumps(payload).encode())
        return path

    def _command(self, wl: Workload) -> list[str]:
        cmd = [*wl.command, *wl.args]
        if not cmd:
            raise ValueError("the local backend needs a command")
        if cmd[0] in ("python", "python3"):
            cmd[0] = sys.executable
        return cmd

    def _identity_for(self, job_id: str) -> tuple[int, int] | None:
        """The uid:gid a job's workload runs as: its own from the range (kept across its
        attempts and restarts of the runner), or the one workload user, or None."""
        if self.uid_range is None:
            return self.identity
        uid = self._uids.get(job_id)
        if uid is None:
            taken = set(self._uids.values())
            size = len(self.uid_range)
            start = uuid.UUID(job_id).int % size if _is_uuid(job_id) else 0
            free = (self.uid_range[(start + i) % size] for i in range(size))
            uid = next((u for u in free if u not in taken), None)
            if uid is None:
                raise RuntimeError("every uid of TRAINYARD_JOBRUNNER_WORKLOAD_UIDS is in use")
            self._uids[job_id] = uid
        return uid, uid

    async def run(
        self, wl: Workload, handle: dict[str, Any] | None, on_running: OnRunning
    ) -> Outcome:
        if handle and handle.get("uid") is not None and self.uid_range is not None:
            self._uids[wl.job_id] = int(handle["uid"])
        try:
            return await self._run(wl, handle, on_running)
        finally:
            self._uids.pop(wl.job_id, None)

    async def _run(
        self, wl: Workload, handle: dict[str, Any] | None, on_running: OnRunning
    ) -> Outcome:
        job_dir = wl.log_path.parent
        job_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.identity is not None or self.uid_range is not None:
            # Workloads pass through (never list) the jobs tree to reach their own work/.
            self.log_root.chmod(0o711)
        first_start = wl.started_at.timestamp() if wl.started_at else None
        attempt = 0
        result: dict[str, Any] | None = None
        if handle:
            attempt = int(handle["attempt"])
            if _alive(int(handle["shim_pid"]), float(handle["create_time"])):
                log.info("job.reattached", job_id=wl.job_id, pid=handle["shim_pid"])
                while _alive(int(handle["shim_pid"]), float(handle["create_time"])):
                    await asyncio.sleep(0.2)
            result = _read_exit(job_dir, attempt)
            if result is None:
                return Outcome(
                    JobState.FAILED,
                    JobReason.LOST,
                    "the workload vanished while the job-runner was down and left no exit status",
                    attempts=attempt,
                )
        while True:
            if result is not None:
                outcome = self._outcome(wl, result, attempt)
                if outcome.state != JobState.FAILED or outcome.reason not in RETRYABLE:
                    return outcome
                if attempt > wl.retries or wl.job_id in self._cancelled:
                    return outcome
                log.info("job.retry", job_id=wl.job_id, attempt=attempt + 1, reason=outcome.reason)
            if wl.job_id in self._cancelled:
                return Outcome(
                    JobState.CANCELLED,
                    JobReason.CANCELLED,
                    "cancelled before it started",
                    attempts=attempt,
                )
            attempt += 1
            if first_start is None:
                first_start = time.time()
            remaining = 0.0
            if wl.deadline_seconds:
                remaining = wl.deadline_seconds - (time.time() - first_start)
                if remaining <= 0:
                    return Outcome(
                        JobState.FAILED,
                        JobReason.DEADLINE_EXCEEDED,
                        f"ran past its deadline of {wl.deadline_seconds:g}s",
                        attempts=attempt - 1,
                    )
            result = await self._attempt(wl, attempt, remaining, on_running)

    async def _attempt(
        self, wl: Workload, attempt: int, deadline: float, on_running: OnRunning
    ) -> dict[str, Any]:
        job_dir = wl.log_path.parent
        env_file = self._write_env(wl, attempt)
        ids: list[str] = []
        identity = self._identity_for(wl.job_id)
        if identity is not None:
            ids = ["--uid", str(identity[0]), "--gid", str(identity[1])]
        cmd = [
            sys.executable,
            "-I",  # isolated: no PYTHON* variables, no user site, no script dir on sys.path
            "-m",
            "trainyard.jobrunner.shim",
            "--dir",
            str(job_dir),
            "--attempt",
            str(attempt),
            "--first-seq",
            str(last_seq(wl.log_path) + 1),
            "--deadline-seconds",
            str(deadline),
            "--memory-mb",
            str(wl.memory_mb),
            "--cores",
            str(wl.cores),
            "--grace",
            str(self.grace),
            "--env-file",
            str(env_file),
            *ids,
            "--",
            *self._command(wl),
        ]
        # The shim's own errors (tracebacks, server paths) are the platform's: 0600.
        err_fd = os.open(job_dir / "shim.err", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(err_fd, "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
                start_new_session=True,
            )
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = 0.0
        handle: dict[str, Any] = {
            "attempt": attempt,
            "shim_pid": proc.pid,
            "create_time": create_time,
        }
        if self.uid_range is not None and identity is not None:
            handle["uid"] = identity[0]
        await on_running(handle, attempt)
        if wl.job_id in self._cancelled:
            # Cancelled while this attempt was being launched: the shim stops its workload
            # (SIGTERM, then SIGKILL after the grace period) and records it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        await proc.wait()
        result = _read_exit(job_dir, attempt)
        if result is None:
            stopped = wl.job_id in self._cancelled
            return {
                "exit_code": None,
                "signal": -(proc.returncode or 0) or None,
                "reason": JobReason.CANCELLED if stopped else JobReason.SIGNALED,
                "message": "stopped on request"
                if stopped
                else "the workload's supervisor was killed",
            }
        return result

    def _outcome(self, wl: Workload, result: dict[str, Any], attempt: int) -> Outcome:
        if wl.job_id in self._cancelled:
            code = result.get("exit_code")
            return Outcome(JobState.CANCELLED, JobReason.CANCELLED, "cancelled", code, attempt)
        if result.get("exit_code") == 0:
            return Outcome(JobState.SUCCEEDED, JobReason.NONE, "exited 0", 0, attempt)
        # The exit file is the shim's, in a directory the workload can reach: a reason that is
        # none of ours counts as a plain non-zero exit.
        reason = parse_reason(str(result.get("reason") or "")) or JobReason.EXIT_CODE
        if reason == JobReason.DEADLINE_EXCEEDED and wl.deadline_seconds:
            return Outcome(
                JobState.FAILED,
                JobReason.DEADLINE_EXCEEDED,
                f"ran past its deadline of {wl.deadline_seconds:g}s",
                result.get("exit_code"),
                attempt,
            )
        return Outcome(
            JobState.FAILED,
            reason,
            str(result.get("message") or ""),
            result.get("exit_code"),
            attempt,
        )

    async def cancel(self, wl: Workload, handle: dict[str, Any] | None) -> None:
        self._cancelled.add(wl.job_id)
        if not handle:
            return
        pid, create_time = int(handle["shim_pid"]), float(handle["create_time"])
        if not _alive(pid, create_time):
            return
        await stop_process_group(pid, self.grace)  # the shim leads its session's group

    async def delete(self, wl: Workload, handle: dict[str, Any] | None) -> None:
        await self.cancel(wl, handle)

    async def orphans(self, known_job_ids: set[str]) -> list[str]:
        """Kill shims whose job has no record (e.g. submitted just before a crash, whose
        insert was rolled back)."""
        stopped: list[str] = []
        if not self.log_root.exists():
            return stopped
        for job_dir in self.log_root.iterdir():
            if job_dir.name in known_job_ids or not job_dir.is_dir():
                continue
            for info in job_dir.glob("shim-*.json"):
                try:
                    data = json.loads(info.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                if _alive(int(data["pid"]), float(data["create_time"])):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(data["pid"]), signal.SIGKILL)
                    stopped.append(job_dir.name)
        return stopped

    def forget(self, job_id: str) -> None:
        self._cancelled.discard(job_id)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
