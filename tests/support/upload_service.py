"""Real processes for upload tests: `trainyard serve upload` as a child (so it can be killed)
and a moto S3 server on an ephemeral port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.harness import TEST_SECRET
from tests.support.wait import eventually
from trainyard.runtime.children import stop_processes
from trainyard.suite import ServiceProcess
from trainyard.upload.store import UploadLimits

BIN = Path(sys.executable).parent
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def upload_process(data_dir: Path, env: dict[str, str] | None = None) -> ServiceProcess:
    """The upload service as a child process (so it can be killed) on the test key."""
    return ServiceProcess(
        "upload",
        data_dir,
        {
            **os.environ,
            "TRAINYARD_DATA_DIR": str(data_dir),
            "TRAINYARD_AUTH_SECRET": TEST_SECRET,
            "TRAINYARD_LOG_FORMAT": "json",
            **(env or {}),
        },
    )


class MotoServer:
    """`moto_server` on port 0; the port is read from what it prints."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self) -> str:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **AWS_ENV},
            )

        def port() -> str | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited:\n{self.log.read_text()}")
            found = re.search(r"Running on http://127\.0\.0\.1:(\d+)", self.log.read_text())
            return found.group(1) if found else None

        self.endpoint = f"http://127.0.0.1:{eventually(port, timeout=30, message='moto_server')}"
        return self.endpoint

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        resp = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for obj in resp.get("Contents", []))

    def multipart_uploads(self, bucket: str, prefix: str = "") -> list[str]:
        resp = self.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return sorted(u["Key"] for u in resp.get("Uploads", []))

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], 30)


#: Small upload limits for store-level tests (the `store` fixture in conftest.py).
STORE_LIMITS = UploadLimits(max_file_bytes=4 << 20, max_files=5, max_total_bytes=6 << 20)
