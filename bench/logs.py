"""Log streaming benchmark: a workload's print -> a follow client, over gRPC (direct to the
job-runner; one line per message, and batched with max_batch=1000) and over Server-Sent Events
through Envoy, side by side.

    .venv/bin/python bench/logs.py [--lines 100000] [--rate 1000] [--seconds 3]

Throughput: the workload prints --lines lines as fast as it can; lines/s is measured at the
client from the first to the last line. Latency: the workload prints --rate lines/s for
--seconds, each stamped with time.time_ns(); the client records receive - stamp per line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import httpx

from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.gateway.config import render
from trainyard.gateway.process import EnvoyProcess
from trainyard.runtime.auth import TokenAuthority
from trainyard.suite import ServiceProcess

SECRET = "bench-secret-0123456789abcdefghijklmnop"
WORKLOAD = (
    "import os, sys, time\n"
    "mode = os.environ['mode']; n = int(os.environ['n']); rate = float(os.environ['rate'])\n"
    "w = sys.stdout.write\n"
    "if mode == 'burst':\n"
    "    for i in range(n): w(f'{time.time_ns()} {i}\\n')\n"
    "else:\n"
    "    start = time.perf_counter()\n"
    "    for i in range(n):\n"
    "        due = start + i / rate\n"
    "        while time.perf_counter() < due: time.sleep(max(0.0, due - time.perf_counter()))\n"
    "        w(f'{time.time_ns()} {i}\\n'); sys.stdout.flush()\n"
)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Bench:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.auth = TokenAuthority(SECRET)
        self.user = {"authorization": f"Bearer {self.auth.mint_user('bench')}"}
        self.service = (("authorization", f"Bearer {self.auth.mint_service('bench')}"),)
        env = {
            **os.environ,
            "TRAINYARD_DATA_DIR": str(data),
            "TRAINYARD_AUTH_SECRET": SECRET,
            "TRAINYARD_LOG_FORMAT": "json",
            "TRAINYARD_JOBRUNNER_PIPELINES": json.dumps(
                {"bench": {"command": ["python", "-c", WORKLOAD]}}
            ),
        }
        self.runner = ServiceProcess("jobrunner", data, env)
        self.address = self.runner.start()
        self.envoy = EnvoyProcess(render({"jobrunner": self.address}, http_port=0), data / "envoy")
        self.envoy.start()
        self.envoy.wait_healthy()
        self.http = f"http://127.0.0.1:{self.envoy.http_port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = svc.JobRunnerServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.envoy.stop()
        self.runner.stop()

    def create(self, mode: str, n: int, rate: float) -> str:
        resp = httpx.post(
            f"{self.http}/training-jobs?pipeline=bench",
            headers=self.user,
            json={"mode": mode, "n": n, "rate": rate},
            timeout=30,
        )
        resp.raise_for_status()
        name: str = resp.json()
        return name

    def job_id(self, name: str) -> str:
        jobs = self.stub.ListJobs(
            msgs.ListJobsRequest(labels={"trainyard.dev/pipeline": "bench"}, page_size=50),
            metadata=self.service,
        ).jobs
        return next(j.job_id for j in jobs if j.name == name)

    def follow_grpc(self, name: str, max_batch: int = 0) -> list[tuple[int, int]]:
        """(stamp_ns, received_ns) per line."""
        out = []
        req = msgs.StreamJobLogsRequest(job_id=self.job_id(name), follow=True, max_batch=max_batch)
        for item in self.stub.StreamJobLogs(req, metadata=self.service):
            now = time.time_ns()
            for line in [item.line] if item.HasField("line") else item.lines:
                out.append((int(line.text.split(" ", 1)[0]), now))
        return out

    def follow_grpc_batched(self, name: str) -> list[tuple[int, int]]:
        return self.follow_grpc(name, max_batch=1000)

    def follow_sse(self, name: str) -> list[tuple[int, int]]:
        out = []
        with httpx.stream(
            "GET", f"{self.http}/training-jobs/{name}/logs/follow", headers=self.user, timeout=120
        ) as resp:
            for raw in resp.iter_lines():
                if not raw.startswith("data: "):
                    continue
                now = time.time_ns()
                event = json.loads(raw[6:])
                if event.get("line"):
                    out.append((int(event["line"]["text"].split(" ", 1)[0]), now))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=3)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        try:
            rows = {}
            for transport, follow in (
                ("gRPC", bench.follow_grpc),
                ("gRPC/batch", bench.follow_grpc_batched),
                ("SSE/Envoy", bench.follow_sse),
            ):
                burst = follow(bench.create("burst", ns.lines, 0))
                assert len(burst) == ns.lines, f"{transport}: {len(burst)} of {ns.lines} lines"
                span = (burst[-1][1] - burst[0][1]) / 1e9
                paced_n = int(ns.rate * ns.seconds)
                paced = follow(bench.create("paced", paced_n, ns.rate))
                assert len(paced) == paced_n
                lat = [(recv - stamp) / 1e6 for stamp, recv in paced]
                rows[transport] = (
                    ns.lines / span if span > 0 else float("inf"),
                    statistics.median(lat),
                    percentile(lat, 0.99),
                )
        finally:
            bench.close()
    print(
        f"{'transport':<10} {'lines/s':>12} {'p50 ms':>8} {'p99 ms':>8}   "
        f"(burst {ns.lines} lines; latency at {ns.rate:g} lines/s for {ns.seconds:g}s)"
    )
    for name, (rate, p50, p99) in rows.items():
        print(f"{name:<10} {rate:>12,.0f} {p50:>8.2f} {p99:>8.2f}")
    g = rows["gRPC"]
    for name, label in (("gRPC/batch", "batch/gRPC"), ("SSE/Envoy", "SSE/gRPC")):
        r = rows[name]
        print(f"{label:<10} {r[0] / g[0]:>11.2f}x {r[1] / g[1]:>7.2f}x {r[2] / g[2]:>7.2f}x")


if __name__ == "__main__":
    main()
