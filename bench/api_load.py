"""Cheap-read load benchmark: many concurrent clients polling small reads (the training-job list,
the upload list, a model's status) over direct gRPC, gRPC through Envoy and REST through Envoy,
beside each service's own grpc.health.v1.Health/Check in the same run as the reference.

    .venv/bin/python bench/api_load.py [--clients 32] [--seconds 4] [--database both]
                                       [--jobs 10] [--spec-kib 256] [--client-procs 2]
                                       [--rounds 3]

Each case runs --clients clients, spread over --client-procs processes so that one Python client
process is not the bottleneck, for --seconds (after a short warm-up); all cases are measured
--rounds times, interleaved, and each figure printed is the median of its rounds. Every client
has its own connection (gRPC: its own channel; REST: one keep-alive HTTP/1.1 connection).
Responses are not parsed during the run (each target is checked once before). Printed per case:
req/s, p50/p99 latency, the ratio to the same service's health check, and the CPU time per
request of the service, of Envoy and of the clients (all share the machine's cores, so the CPU
figures say where the time goes even when the rates are noisy).

The floor of any gateway: the 1 KiB list also goes through a bare Envoy (the gateway's own
bootstrap with the router as its only HTTP filter: no transcoder, no Lua, no health-check
filter, no upstream health checks), the same binary with the same worker count, so the printed
"bare Envoy gRPC/direct gRPC" is what Envoy itself costs on this machine, and the REST rows'
distance from it is what Trainyard's gateway adds.

The list is measured for two users with --jobs jobs each: one whose job specs are ~1 KiB and one
whose specs are inflated to --spec-kib KiB (environment variables), to show that a list's cost
does not depend on the size of the jobs' specs.

Measured 2026-12-03 (2 shared cores, --seconds 3, medians of 3 rounds; SQLite / PostgreSQL):
    read                        REST/health   REST/direct gRPC   bare Envoy gRPC/direct gRPC
    training-jobs list 1 KiB     69 % / 65 %     87 % / 78 %        77 % / 73 %
    training-jobs list 256 KiB   60 % / 63 %     75 % / 70 %
    upload list                  81 % / 58 %     91 % / 74 %
    model status                 69 % / 95 %     88 % / 88 %
Envoy's CPU a request: ~240-270 µs bare (listener + router), ~290-330 µs for the gateway's REST
path (the Lua filter ~20 µs of it, the health-check filter ~20 µs, the transcoder the rest);
the services ~550-700 µs, their health check ~450-520 µs. Direct gRPC reads are 79-107 % of
the health check. REST cannot come within 15 % of direct gRPC here while a bare Envoy alone
costs 23-27 %: the clients, Envoy and the service share the same two cores. (Those bare
figures are of a hand-written listener + router; with the bare Envoy derived from the
gateway's bootstrap as now, a later, busier run read bare 85 % / 74 % of direct gRPC, Envoy
~305 µs a request, and REST 78-102 % / 70-92 %.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import aiohttp
import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2

from trainyard.api.jobrunner.v1 import messages_pb2 as jobs_msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as jobs_svc
from trainyard.api.orchestrator.v1 import messages_pb2 as orch_msgs
from trainyard.api.upload.v1 import messages_pb2 as upload_msgs
from trainyard.gateway.config import render
from trainyard.gateway.process import EnvoyProcess
from trainyard.runtime.auth import TokenAuthority
from trainyard.suite import ServiceProcess

SECRET = "bench-secret-0123456789abcdefghijklmnop"
POSTGRES_URL = os.environ.get(
    "TRAINYARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
USER = "bench-small"
BIG_USER = "bench-big"
KIND_LABEL = "trainyard.dev/kind"
PIPELINE_LABEL = "trainyard.dev/pipeline"
HEALTH = "/grpc.health.v1.Health/Check"
LIST_JOBS = "/trainyard.api.jobrunner.v1.TrainingJobsService/ListTrainingJobs"
LIST_UPLOADS = "/trainyard.api.upload.v1.UploadService/ListUploads"
TRAIN_STATUS = "/trainyard.api.orchestrator.v1.TrainService/GetTrainStatus"
WARMUP_SECONDS = 0.5
ENV_CHUNK = 4096  # one environment variable of padding (a single execve string is <= 128 KiB)

Kind = Literal["grpc", "http"]


@dataclass(frozen=True)
class Target:
    """One read: a gRPC method at an address, or an HTTP GET at a URL."""

    kind: Kind
    address: str  # host:port (gRPC) or base URL (HTTP)
    method: str  # /pkg.Service/Method (gRPC) or path (HTTP)
    body: bytes = b""  # the serialized request (gRPC)
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class WorkerResult:
    count: int = 0
    errors: int = 0
    first_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class Case:
    read: str  # what is read, e.g. "training-jobs list"
    path: str  # health | direct gRPC | Envoy gRPC | bare Envoy gRPC | REST
    service: str  # whose health check is the reference
    target: Target
    bare: bool = False  # through the bare Envoy (its CPU is the one measured)


@dataclass
class Row:
    case: Case
    rate: float
    p50: float
    p99: float
    errors: int
    client_cpu_us: float
    service_cpu_us: float
    envoy_cpu_us: float
    first_error: str = ""


# ---- clients (run in worker processes) -------------------------------------------------------


async def _grpc_client(target: Target, start: float, stop: float, result: WorkerResult) -> None:
    # A local subchannel pool: each client gets its own connection, as separate clients would.
    async with grpc.aio.insecure_channel(
        target.address, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        call = channel.unary_unary(
            target.method, None, None
        )  # bytes in, bytes out: no client-side parsing
        metadata = tuple(target.headers)
        await channel.channel_ready()
        while (now := time.monotonic()) < stop:
            try:
                await call(target.body, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{exc.code().name}: {exc.details()}"
                await asyncio.sleep(0.01)
                continue
            done = time.monotonic()
            if done >= start and done < stop:
                result.count += 1
                result.latencies_ms.append((done - now) * 1000)


async def _http_client(target: Target, start: float, stop: float, result: WorkerResult) -> None:
    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    async with aiohttp.ClientSession(
        target.address, connector=connector, headers=dict(target.headers)
    ) as session:
        while (now := time.monotonic()) < stop:
            async with session.get(target.method) as resp:
                await resp.read()
                ok = resp.status == 200
            if not ok:
                result.errors += 1
                result.first_error = result.first_error or f"HTTP {resp.status}"
                await asyncio.sleep(0.01)
                continue
            done = time.monotonic()
            if done >= start and done < stop:
                result.count += 1
                result.latencies_ms.append((done - now) * 1000)


async def _run_clients(target: Target, clients: int, start: float, stop: float) -> WorkerResult:
    result = WorkerResult()
    client = _grpc_client if target.kind == "grpc" else _http_client
    await asyncio.gather(*(client(target, start, stop, result) for _ in range(clients)))
    return result


def worker(target: Target, clients: int, start: float, seconds: float) -> WorkerResult:
    """One client process: `clients` concurrent clients from start-WARMUP to start+seconds."""
    cpu = time.process_time()
    result = asyncio.run(_run_clients(target, clients, start, start + seconds))
    result.cpu_seconds = time.process_time() - cpu
    return result


def _noop() -> None:
    """Warms up a worker process (imports done) before the first timed case."""


# ---- the services under test ----------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Stack:
    """upload + job-runner + orchestrator as child processes (ServiceProcess) behind Envoy, on
    SQLite files in a temporary directory or in a PostgreSQL schema of their own."""

    def __init__(self, data: Path, database: str) -> None:
        self.data = data
        self.database = database
        self.auth = TokenAuthority(SECRET)
        self.schema = f"bench_api_load_{os.getpid()}" if database == "postgresql" else None
        self.children: dict[str, ServiceProcess] = {}
        self.envoy: EnvoyProcess | None = None
        self.bare: EnvoyProcess | None = None
        self.skipped: dict[str, str] = {}
        self.env = {
            **os.environ,
            "TRAINYARD_DATA_DIR": str(data),
            "TRAINYARD_AUTH_SECRET": SECRET,
            "TRAINYARD_LOG_FORMAT": "json",
            "TRAINYARD_JOBRUNNER_PIPELINES": json.dumps(
                {"bench": {"command": [sys.executable, "-c", "pass"]}}
            ),
        }
        if self.schema:
            asyncio.run(_postgres(f'CREATE SCHEMA "{self.schema}"'))
            self.env["TRAINYARD_DATABASE_URL"] = POSTGRES_URL
            self.env["TRAINYARD_DATABASE_SCHEMA"] = self.schema

    def start(self) -> None:
        for name in ("upload", "jobrunner"):
            self.children[name] = ServiceProcess(name, self.data / "run", self.env)
            self.children[name].spawn()
        for name in ("upload", "jobrunner"):
            address = self.children[name].await_ready()
            self.env[f"TRAINYARD_{name.upper()}_ADDRESS"] = address
        orchestrator = ServiceProcess("orchestrator", self.data / "run", self.env)
        try:
            orchestrator.start()
            self.children["orchestrator"] = orchestrator
        except (RuntimeError, TimeoutError) as exc:
            self.skipped["orchestrator"] = f"the orchestrator did not start: {exc}"[:200]
        upstreams = {name: c.address or "" for name, c in self.children.items()}
        self.envoy = EnvoyProcess(render(upstreams, http_port=0), self.data / "envoy")
        self.envoy.start()
        self.envoy.wait_healthy()
        self.bare = EnvoyProcess(bare_envoy(self.address("jobrunner")), self.data / "envoy-bare")
        self.bare.start()

    def close(self) -> None:
        for envoy in (self.envoy, self.bare):
            if envoy is not None:
                envoy.stop()
        for child in self.children.values():
            child.stop()
        if self.schema:
            asyncio.run(_postgres(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    def process(self, service: str) -> psutil.Process:
        proc = self.children[service].proc
        assert proc is not None
        return psutil.Process(proc.pid)

    def envoy_process(self, bare: bool = False) -> psutil.Process:
        envoy = self.bare if bare else self.envoy
        assert envoy is not None and envoy.proc is not None
        return psutil.Process(envoy.proc.pid)

    @property
    def bare_gateway(self) -> str:
        assert self.bare is not None
        return f"127.0.0.1:{self.bare.http_port}"

    def address(self, service: str) -> str:
        return self.children[service].address or ""

    @property
    def gateway(self) -> str:
        assert self.envoy is not None
        return f"127.0.0.1:{self.envoy.http_port}"

    def user_headers(self, user: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.auth.mint_user(user, ttl=86400)}"),)

    # ---- seeding --------------------------------------------------------------------------

    def seed_jobs(self, user: str, count: int, spec_kib: float) -> None:
        """`count` finished training jobs for `user` whose specs are about `spec_kib` KiB."""
        service = (("authorization", f"Bearer {self.auth.mint_service('bench')}"),)
        pad = max(0, int(spec_kib * 1024) - 400)
        env = {
            f"PAD_{n}": "x" * min(ENV_CHUNK, pad - offset)
            for n, offset in enumerate(range(0, pad, ENV_CHUNK))
        }
        with grpc.insecure_channel(self.address("jobrunner")) as channel:
            stub = jobs_svc.JobRunnerServiceStub(channel)
            for _ in range(count):
                spec = jobs_msgs.JobSpec(
                    name=f"model-training-bench-{uuid.uuid4()}",
                    command=[sys.executable, "-c", "pass"],
                    env=env,
                    labels={KIND_LABEL: "training-job", PIPELINE_LABEL: "bench", "owner": user},
                )
                stub.SubmitJob(jobs_msgs.SubmitJobRequest(spec=spec), metadata=service)
        deadline = time.monotonic() + 180
        while True:
            jobs = self.list_jobs(user)
            if len(jobs) == count and all(j["status"] in ("Succeeded", "Failed") for j in jobs):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the seeded jobs did not finish: {jobs}")
            time.sleep(0.2)

    def list_jobs(self, user: str) -> list[dict[str, str]]:
        resp = httpx.get(
            f"http://{self.gateway}/training-jobs", headers=dict(self.user_headers(user))
        )
        resp.raise_for_status()
        jobs: list[dict[str, str]] = resp.json()
        return jobs

    def seed_uploads(self, user: str, count: int) -> None:
        for i in range(count):
            httpx.post(
                f"http://{self.gateway}/api/v2/train/upload-data",
                headers=dict(self.user_headers(user)),
                files=[("file", (f"train-{i}.csv", b"text,label\nhello,1\n", "text/csv"))],
                timeout=30,
            ).raise_for_status()

    def seed_model(self, user: str) -> str | None:
        """A model in the orchestrator's registry (training requests need trainers; the status
        read needs only the row), or None with the reason in `skipped`."""
        if "orchestrator" not in self.children:
            return None
        try:
            model_id = asyncio.run(self._create_model(user))
            with grpc.insecure_channel(self.address("orchestrator")) as channel:
                channel.unary_unary(TRAIN_STATUS, None, None)(
                    orch_msgs.GetTrainStatusRequest(model_id=model_id).SerializeToString(),
                    metadata=self.user_headers(user),
                )
            return model_id
        except Exception as exc:  # the read is optional: report why it is skipped
            self.skipped["model status"] = f"{type(exc).__name__}: {exc}"[:200]
            return None

    async def _create_model(self, user: str) -> str:
        from trainyard.orchestrator.registry import ModelRegistry
        from trainyard.runtime.db import Database

        url = (
            POSTGRES_URL
            if self.schema
            else f"sqlite+aiosqlite:///{(self.data / 'orchestrator.db').resolve()}"
        )
        db = Database("orchestrator", url, Path("unused"), self.schema)
        try:
            model = await ModelRegistry(db.sessions).create(
                owner=user, name="bench-model", type="ndb"
            )
            return model.id
        finally:
            await db.close()


def bare_envoy(upstream: str) -> dict[str, Any]:
    """The gateway's own bootstrap for the job-runner, less every HTTP filter but the router
    and less the cluster's health checks: the same listener, routes and upstream settings,
    so what it costs is Envoy's floor."""
    cfg = render({"jobrunner": upstream}, http_port=0)
    (listener,) = cfg["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"] = [
        f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.router"
    ]
    for cluster in cfg["static_resources"]["clusters"]:
        cluster.pop("health_checks", None)
    return cfg


async def _postgres(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# ---- cases ----------------------------------------------------------------------------------


def cases(stack: Stack, spec_kib: float, model_id: str | None) -> list[Case]:
    http = f"http://{stack.gateway}"
    health = health_pb2.HealthCheckRequest().SerializeToString()
    out: list[Case] = []

    def reads(
        read: str, service: str, method: str, body: bytes, rest: str, user: str
    ) -> list[Case]:
        headers = stack.user_headers(user)
        return [
            Case(
                read,
                "direct gRPC",
                service,
                Target("grpc", stack.address(service), method, body, headers),
            ),
            Case(read, "Envoy gRPC", service, Target("grpc", stack.gateway, method, body, headers)),
            Case(read, "REST", service, Target("http", http, rest, headers=headers)),
        ]

    list_jobs = jobs_msgs.ListTrainingJobsRequest().SerializeToString()
    out.append(
        Case(
            "health check",
            "health",
            "jobrunner",
            Target("grpc", stack.address("jobrunner"), HEALTH, health),
        )
    )
    out += reads(
        "training-jobs list 1 KiB", "jobrunner", LIST_JOBS, list_jobs, "/training-jobs", USER
    )
    out.append(
        Case(
            "training-jobs list 1 KiB",
            "bare Envoy gRPC",
            "jobrunner",
            Target("grpc", stack.bare_gateway, LIST_JOBS, list_jobs, stack.user_headers(USER)),
            bare=True,
        )
    )
    out += reads(
        f"training-jobs list {spec_kib:g} KiB",
        "jobrunner",
        LIST_JOBS,
        list_jobs,
        "/training-jobs",
        BIG_USER,
    )
    out.append(
        Case(
            "health check",
            "health",
            "upload",
            Target("grpc", stack.address("upload"), HEALTH, health),
        )
    )
    list_uploads = upload_msgs.ListUploadsRequest().SerializeToString()
    out += reads("upload list", "upload", LIST_UPLOADS, list_uploads, "/api/v2/train/uploads", USER)
    if model_id is not None:
        out.append(
            Case(
                "health check",
                "health",
                "orchestrator",
                Target("grpc", stack.address("orchestrator"), HEALTH, health),
            )
        )
        status = orch_msgs.GetTrainStatusRequest(model_id=model_id).SerializeToString()
        out += reads(
            "model status",
            "orchestrator",
            TRAIN_STATUS,
            status,
            f"/api/v2/train/{model_id}/status",
            USER,
        )
    return out


def check(target: Target) -> str:
    """One request, parsed: a short description of the answer (fails loudly if it is wrong)."""
    if target.kind == "http":
        resp = httpx.get(target.address + target.method, headers=dict(target.headers))
        resp.raise_for_status()
        value = resp.json()
        return f"{len(value)} items" if isinstance(value, list) else f"{len(resp.content)} bytes"
    with grpc.insecure_channel(target.address) as channel:
        raw: bytes = channel.unary_unary(target.method, None, None)(
            target.body, metadata=target.headers
        )
    return f"{len(raw)} bytes"


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(
    pool: ProcessPoolExecutor,
    procs: int,
    case: Case,
    clients: int,
    seconds: float,
    stack: Stack,
) -> Row:
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    start = time.monotonic() + 0.3 + WARMUP_SECONDS  # the same moment in every worker
    futures = [pool.submit(worker, case.target, n, start, seconds) for n in per if n]
    service, envoy = stack.process(case.service), stack.envoy_process(case.bare)
    time.sleep(max(0.0, start - time.monotonic()))
    service_cpu, envoy_cpu = _cpu(service), _cpu(envoy)
    time.sleep(max(0.0, start + seconds - time.monotonic()))
    service_cpu, envoy_cpu = _cpu(service) - service_cpu, _cpu(envoy) - envoy_cpu
    results = [f.result() for f in futures]
    count = sum(r.count for r in results)
    lat = [x for r in results for x in r.latencies_ms]
    cpu = sum(r.cpu_seconds for r in results)
    total = sum(len(r.latencies_ms) for r in results) or 1
    return Row(
        case,
        rate=count / seconds,
        p50=statistics.median(lat) if lat else float("nan"),
        p99=_percentile(lat, 0.99),
        errors=sum(r.errors for r in results),
        client_cpu_us=cpu / total * 1e6 * (seconds / (seconds + WARMUP_SECONDS)),
        service_cpu_us=service_cpu / max(count, 1) * 1e6,
        envoy_cpu_us=envoy_cpu / max(count, 1) * 1e6,
        first_error=next((r.first_error for r in results if r.first_error), ""),
    )


def median_row(rows: list[Row]) -> Row:
    """One case's rounds as one row: the median of each figure (the machine is shared and
    noisy; interleaved rounds and medians keep one bad second from deciding a ratio)."""
    med = statistics.median
    return Row(
        rows[0].case,
        rate=med(r.rate for r in rows),
        p50=med(r.p50 for r in rows),
        p99=med(r.p99 for r in rows),
        errors=sum(r.errors for r in rows),
        client_cpu_us=med(r.client_cpu_us for r in rows),
        service_cpu_us=med(r.service_cpu_us for r in rows),
        envoy_cpu_us=med(r.envoy_cpu_us for r in rows),
        first_error=next((r.first_error for r in rows if r.first_error), ""),
    )


def report(database: str, rows: list[Row], ns: argparse.Namespace, skipped: dict[str, str]) -> None:
    health = {r.case.service: r.rate for r in rows if r.case.path == "health"}
    print(
        f"\n== {database}: {ns.clients} clients in {ns.client_procs} processes, "
        f"{ns.seconds:g}s per case, median of {ns.rounds} interleaved rounds, "
        f"{ns.jobs} jobs per user"
    )
    print(
        f"{'case':<28} {'path':<16} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'/health':>8}   CPU µs/req: {'service':>7} {'Envoy':>6} {'clients':>7}"
    )
    for r in rows:
        ratio = r.rate / health[r.case.service] if health.get(r.case.service) else float("nan")
        name = r.case.read if r.case.path != "health" else f"{r.case.service} health"
        err = f"  ({r.errors} errors: {r.first_error})" if r.errors else ""
        print(
            f"{name:<28} {r.case.path:<16} {r.rate:>8,.0f} {r.p50:>7.2f} {r.p99:>7.2f} "
            f"{ratio:>7.0%} {'':>12} {r.service_cpu_us:>7,.0f} {r.envoy_cpu_us:>6,.0f} "
            f"{r.client_cpu_us:>7,.0f}{err}"
        )
    by = {(r.case.read, r.case.path): r.rate for r in rows}
    for read in dict.fromkeys(r.case.read for r in rows if r.case.path == "REST"):
        direct = by.get((read, "direct gRPC"))
        if direct:
            print(f"REST/direct gRPC   {read:<28} {by[(read, 'REST')] / direct:>6.0%}")
            if by.get((read, "bare Envoy gRPC")):
                floor = by[(read, "bare Envoy gRPC")] / direct
                print(f"bare Envoy gRPC/direct gRPC {read:<19} {floor:>6.0%}  (Envoy's own cost)")
    small, big = "training-jobs list 1 KiB", f"training-jobs list {ns.spec_kib:g} KiB"
    for path in ("direct gRPC", "REST"):
        if by.get((small, path)) and by.get((big, path)):
            ratio = by[(big, path)] / by[(small, path)]
            print(f"{ns.spec_kib:g} KiB/1 KiB specs {path:<28} {ratio:>6.0%}")
    for what, why in skipped.items():
        print(f"skipped: {what}: {why}")


@contextlib.contextmanager
def running(database: str, ns: argparse.Namespace) -> Iterator[tuple[Stack, str | None]]:
    data = Path(tempfile.mkdtemp(prefix="trainyard-api-load-"))
    stack = Stack(data, database)
    try:
        stack.start()
        stack.seed_jobs(USER, ns.jobs, 1)
        stack.seed_jobs(BIG_USER, ns.jobs, ns.spec_kib)
        stack.seed_uploads(USER, 3)
        model_id = stack.seed_model(USER)
        yield stack, model_id
    finally:
        stack.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients per case")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per case")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--jobs", type=int, default=10, help="training jobs per user")
    parser.add_argument("--spec-kib", type=float, default=256, help="size of the big job specs")
    parser.add_argument(
        "--client-procs", type=int, default=2, help="client processes the clients are spread over"
    )
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="every case is measured this many times, interleaved; the median is printed",
    )
    ns = parser.parse_args()
    databases = ("sqlite", "postgresql") if ns.database == "both" else (ns.database,)
    procs = max(1, min(ns.client_procs, ns.clients))
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        for f in [pool.submit(_noop) for _ in range(procs)]:
            f.result()
        for database in databases:
            with running(database, ns) as (stack, model_id):
                chosen = [
                    case
                    for case in cases(stack, ns.spec_kib, model_id)
                    if not ns.only or ns.only in case.read or case.path == "health"
                ]
                for case in chosen:
                    check(case.target)
                runs: list[list[Row]] = [[] for _ in chosen]
                for _ in range(max(1, ns.rounds)):
                    for i, case in enumerate(chosen):
                        runs[i].append(measure(pool, procs, case, ns.clients, ns.seconds, stack))
                report(database, [median_row(r) for r in runs], ns, stack.skipped)


if __name__ == "__main__":
    main()
