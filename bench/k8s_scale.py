"""Kubernetes backend at scale: N concurrent short jobs through the job-runner (JobRunner +
KubernetesBackend, configured by `from_settings` from a kubeconfig, as in production) against
the API-server double, for each N.

    .venv/bin/python bench/k8s_scale.py [--sizes 10,100,1000] [--timeout 600]

Three processes, so that each measures only itself: the API double (its kubelet runs every pod
as a real `echo` process), the job-runner (submits N jobs at once, waits for all, checks every
job's log line) and this driver, which samples the job-runner every 50 ms with psutil: threads,
TCP connections to the double's port, RSS. Each N gets a fresh double and a fresh job-runner.

Per N it prints: wall time from the first submit until every job finished, how many
succeeded, peak threads, peak open connections to the API server, peak RSS, and the number of
watch requests the double received, how long the submissions took, and the CPU seconds the
job-runner and the double (with its pods' processes) used: CPU per job flat in N means the
work is linear even where a loaded machine stretches the wall time. A run past --timeout is
reported with what it reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from trainyard.jobrunner.domain import JobSpec

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
IMAGE = "busybox:1.36"
SAMPLE_SECONDS = 0.05
SUBMITTERS = 16


# ---- the API double's process ----------------------------------------------------------------


def serve_double() -> None:
    """Run the double until stdin closes; print its port, and at the end its request counts."""
    sys.path.insert(0, str(ROOT))
    from tests.k8s_double import FakeKubernetes

    with FakeKubernetes(known_images=[IMAGE], watch_history=100_000) as fake:
        print(fake.port, flush=True)
        sys.stdin.read()
        requests = fake.requests
        watches = [r for r in requests if "watch" in r.query]
        logs = [r for r in requests if r.path.endswith("/log")]
        print(
            json.dumps({"requests": len(requests), "watches": len(watches), "logs": len(logs)}),
            flush=True,
        )


# ---- the job-runner's process ------------------------------------------------------------------


async def run_jobs(count: int, timeout: float, data: Path) -> dict[str, Any]:
    from trainyard.jobrunner.app import MIGRATIONS, make_backend
    from trainyard.jobrunner.logfile import iter_records
    from trainyard.jobrunner.runner import JobRunner
    from trainyard.jobrunner.settings import JobrunnerSettings
    from trainyard.runtime.db import Database

    own = JobrunnerSettings(
        backend="kubernetes",
        namespace=NAMESPACE,
        ttl_seconds_after_finished=3600,
        kill_grace_seconds=1,
    )
    db = Database("jobrunner", f"sqlite+aiosqlite:///{data / 'jr.db'}", MIGRATIONS)
    await db.start()
    runner = JobRunner(db.sessions, make_backend(own, data / "jobs"), data / "jobs", 4)
    await runner.start()
    spec = JobSpec(image=IMAGE, command=("echo", "hello from a short job"))
    # Submissions come in at most SUBMITTERS at a time, like API clients would (a burst of a
    # thousand at once only measures the database's connection pool); every job stays in
    # flight until its end, so up to N run concurrently.
    gate = asyncio.Semaphore(SUBMITTERS)

    async def submit() -> Any:
        async with gate:
            return await runner.submit(spec, "bench")

    began = time.monotonic()
    submits = [asyncio.ensure_future(submit()) for _ in range(count)]
    await asyncio.wait(submits, timeout=timeout)  # the per-N budget covers submission too
    views = [task.result() for task in submits if task.done() and task.exception() is None]
    for task in submits:
        task.cancel()
    submitted = time.monotonic() - began
    remaining = max(1.0, timeout - submitted)
    waits: list[asyncio.Task[Any]] = [
        asyncio.ensure_future(runner.wait(view.id, remaining)) for view in views
    ]
    done: set[asyncio.Task[Any]] = set()
    if waits:
        done, _pending = await asyncio.wait(waits, timeout=remaining)
    wall = time.monotonic() - began
    finished = [task.result() for task in done if task.exception() is None]
    succeeded = [view for view in finished if view.state == "SUCCEEDED"]
    with_line = sum(
        1
        for view in succeeded
        if [r.text for r in iter_records(runner.log_path(view.id))] == ["hello from a short job"]
    )
    for task in waits:
        task.cancel()
    await runner.close()
    await db.close()
    return {
        "n": count,
        "wall_s": wall,
        "submit_s": submitted,
        "submitted": len(views),
        "finished": len(finished),
        "succeeded": len(succeeded),
        "logged": with_line,
        "timed_out": len(finished) < count,
    }


def job_runner_main(count: int, timeout: float, data: Path) -> None:
    result = asyncio.run(run_jobs(count, timeout, data))
    print("RESULT " + json.dumps(result), flush=True)


# ---- the driver --------------------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process, children: bool = False) -> float:
    times = proc.cpu_times()
    total = times.user + times.system
    if children:
        total += times.children_user + times.children_system
    return total


def sample(proc: psutil.Process, port: int, peaks: dict[str, float]) -> None:
    try:
        peaks["cpu"] = cpu_seconds(proc)
        threads = proc.num_threads()
        rss = proc.memory_info().rss
        connections = sum(
            1
            for c in proc.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return
    peaks["threads"] = max(peaks["threads"], threads)
    peaks["connections"] = max(peaks["connections"], connections)
    peaks["rss"] = max(peaks["rss"], rss)


def measure(count: int, timeout: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["TRAINYARD_LOG_LEVEL"] = "warning"
    double = subprocess.Popen(
        [sys.executable, __file__, "--serve-double"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert double.stdout is not None and double.stdin is not None
    port = int(double.stdout.readline())
    with tempfile.TemporaryDirectory(prefix="k8s-scale-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "double",
                    "clusters": [
                        {"name": "double", "cluster": {"server": f"http://127.0.0.1:{port}"}}
                    ],
                    "users": [{"name": "bench", "user": {"token": "bench"}}],
                    "contexts": [
                        {"name": "double", "context": {"cluster": "double", "user": "bench"}}
                    ],
                }
            )
        )
        runner_env = {**env, "KUBECONFIG": str(kubeconfig)}
        runner_env.pop("KUBERNETES_SERVICE_HOST", None)
        # Its output goes to files, not pipes: nobody reads a pipe while it runs, and a full
        # pipe (a few hundred jobs' warnings) blocks the job-runner on its next write.
        out_path, err_path = Path(tmp) / "runner.out", Path(tmp) / "runner.err"
        with out_path.open("w") as out_file, err_path.open("w") as err_file:
            job_runner = subprocess.Popen(
                [sys.executable, __file__, "--job-runner", str(count), str(timeout), tmp],
                stdout=out_file,
                stderr=err_file,
                text=True,
                env=runner_env,
            )
        proc = psutil.Process(job_runner.pid)
        peaks: dict[str, float] = {"threads": 0, "connections": 0, "rss": 0, "cpu": 0.0}
        hard_deadline = time.monotonic() + timeout + 120
        while job_runner.poll() is None and time.monotonic() < hard_deadline:
            sample(proc, port, peaks)
            time.sleep(SAMPLE_SECONDS)
        if job_runner.poll() is None:
            job_runner.kill()
        job_runner.wait()
        out, errors = out_path.read_text(), err_path.read_text()
    # The double's CPU, with its kubelet's pod processes (reaped children).
    peaks["double_cpu"] = cpu_seconds(psutil.Process(double.pid), children=True)
    double.stdin.close()
    counts = json.loads(double.stdout.readline() or "{}")
    double.wait(timeout=60)
    result: dict[str, Any] = {"n": count, "wall_s": None, "finished": 0, "timed_out": True}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    if result.get("wall_s") is None:
        print(f"N={count}: the job-runner gave no result; its stderr ends:", file=sys.stderr)
        print(errors[-3000:], file=sys.stderr)
    return {**result, **peaks, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated job counts")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per N")
    parser.add_argument("--serve-double", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job-runner", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_double:
        serve_double()
        return
    if args.job_runner:
        count, timeout, data = args.job_runner
        job_runner_main(int(count), float(timeout), Path(data))
        return
    header = (
        f"{'N':>5} {'wall s':>8} {'done':>9} {'logged':>6} {'peak thr':>8} {'peak conn':>9} "
        f"{'peak RSS MiB':>12} {'watch req':>9} {'submit s':>8} {'runner cpu s':>12} "
        f"{'double cpu s':>12}"
    )
    print(header, flush=True)
    for count in (int(part) for part in args.sizes.split(",") if part):
        row = measure(count, args.timeout)
        wall = f"{row['wall_s']:.2f}" if row.get("wall_s") is not None else "-"
        flag = f" (timed out: {row.get('submitted', 0)} submitted)" if row.get("timed_out") else ""
        print(
            f"{count:>5} {wall:>8} {row.get('succeeded', 0):>4}/{count:<4} "
            f"{row.get('logged', 0):>6} {row['threads']:>8} {row['connections']:>9} "
            f"{row['rss'] / 2**20:>12.1f} {row.get('watches', 0):>9} "
            f"{row.get('submit_s', 0):>8.2f} {row['cpu']:>12.1f} {row['double_cpu']:>12.1f}{flag}",
            flush=True,
        )


if __name__ == "__main__":
    main()
