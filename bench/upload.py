"""Upload benchmark: one large file as a REST multipart request through Envoy and as gRPC file
chunks straight to the upload service, side by side, with the service's peak RSS growth.

    .venv/bin/python bench/upload.py [--size-mib 1024] [--chunk-kib 1024] [--rounds 1]

The upload service runs as a subprocess (local storage in a temp dir, SQLite), Envoy in front.
MB/s = 10^6 bytes per second of wall time from the first byte sent to the response. RSS growth
= the service's peak RSS while the upload runs (sampled every 10 ms) minus its RSS just before.
With --rounds N, the transports take turns N times; the summary shows each one's best MB/s and
its largest RSS growth.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil

from trainyard.api.upload.v1 import messages_pb2 as msgs
from trainyard.api.upload.v1 import service_pb2_grpc as svc
from trainyard.gateway.config import render
from trainyard.gateway.process import EnvoyProcess
from trainyard.runtime.auth import TokenAuthority
from trainyard.suite import ServiceProcess

SECRET = "bench-secret-0123456789abcdefghijklmnop"
MiB = 1024 * 1024
BOUNDARY = "trainyard-bench-boundary"


class PeakRss:
    """Samples a process's RSS in a thread; `growth` is peak minus the RSS at start."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.start_rss = self._proc.memory_info().rss
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


class Bench:
    def __init__(self, data: Path, size: int, chunk: int) -> None:
        self.size = size
        self.chunk = chunk
        self.block = os.urandom(chunk)
        auth = TokenAuthority(SECRET)
        self.user_token = auth.mint_user("bench")
        env = {
            **os.environ,
            "TRAINYARD_DATA_DIR": str(data),
            "TRAINYARD_AUTH_SECRET": SECRET,
            "TRAINYARD_LOG_FORMAT": "json",
            "TRAINYARD_LOG_LEVEL": "warning",
        }
        self.service = ServiceProcess("upload", data, env)
        self.address = self.service.start()
        self.envoy = EnvoyProcess(render({"upload": self.address}, http_port=0), data / "envoy")
        self.envoy.start()
        self.envoy.wait_healthy()
        self.http = f"http://127.0.0.1:{self.envoy.http_port}"
        self.channel = grpc.insecure_channel(
            self.address, options=[("grpc.max_send_message_length", 64 * MiB)]
        )
        self.stub = svc.UploadServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.envoy.stop()
        self.service.stop()

    def _blocks(self) -> Iterator[bytes]:
        left = self.size
        while left > 0:
            yield self.block if left >= self.chunk else self.block[:left]
            left -= self.chunk

    def rest(self) -> str:
        def body() -> Iterator[bytes]:
            yield (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                'filename="bench.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            yield from self._blocks()
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        resp = httpx.post(
            f"{self.http}/api/v2/train/upload-data",
            content=body(),
            headers={
                "authorization": f"Bearer {self.user_token}",
                "content-type": f"multipart/form-data; boundary={BOUNDARY}",
            },
            timeout=600,
        )
        resp.raise_for_status()
        upload_id: str = resp.json()["upload_id"]
        return upload_id

    def grpc(self) -> str:
        requests = (
            msgs.UploadDataRequest(file=msgs.FileChunk(filename="bench.bin", data=block))
            for block in self._blocks()
        )
        resp = self.stub.UploadData(
            requests, metadata=(("authorization", f"Bearer {self.user_token}"),), timeout=600
        )
        return resp.upload_id

    def check_and_delete(self, upload_id: str) -> None:
        headers = {"authorization": f"Bearer {self.user_token}"}
        got = httpx.get(f"{self.http}/api/v2/train/uploads/{upload_id}", headers=headers).json()
        size = int(got["upload"]["files"][0]["size_bytes"])
        assert size == self.size, f"stored {size} bytes, sent {self.size}"
        httpx.delete(f"{self.http}/api/v2/train/uploads/{upload_id}", headers=headers)

    def measure(self, name: str) -> tuple[float, int]:
        run = self.rest if name == "REST/Envoy" else self.grpc
        assert self.service.proc is not None
        with PeakRss(self.service.proc.pid) as rss:
            started = time.perf_counter()
            upload_id = run()
            elapsed = time.perf_counter() - started
        self.check_and_delete(upload_id)
        return self.size / elapsed / 1e6, rss.growth


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-kib", type=int, default=1024, help="client write / message size")
    parser.add_argument("--rounds", type=int, default=1)
    ns = parser.parse_args()
    size = ns.size_mib * MiB
    results: dict[str, list[tuple[float, int]]] = {"REST/Envoy": [], "gRPC": []}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), size, ns.chunk_kib * 1024)
        try:
            for _ in range(ns.rounds):
                for name in results:
                    results[name].append(bench.measure(name))
        finally:
            bench.close()
    print(
        f"upload of {ns.size_mib} MiB in {ns.chunk_kib} KiB chunks, {ns.rounds} round(s) "
        f"({os.cpu_count()} CPUs)"
    )
    print(f"{'transport':<11} {'MB/s':>8} {'peak RSS growth':>16}")
    for name, rows in results.items():
        for rate, growth in rows:
            print(f"{name:<11} {rate:>8.0f} {growth / MiB:>12.1f} MiB")
    best = {name: max(rate for rate, _ in rows) for name, rows in results.items()}
    worst = {name: max(growth for _, growth in rows) for name, rows in results.items()}
    print("summary: best MB/s, largest RSS growth")
    for name in results:
        print(f"{name:<11} {best[name]:>8.0f} {worst[name] / MiB:>12.1f} MiB")
    print(f"REST/gRPC   {best['REST/Envoy'] / best['gRPC']:>8.2f}x")


if __name__ == "__main__":
    main()
