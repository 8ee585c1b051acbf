"""Schemathesis against the generated OpenAPI document, through real Envoy, on a real
`trainyard up`: seeded, bounded in time, with a user token and the document's links, so that it
also creates uploads and training jobs and then reads, follows and deletes them. It fails on any
5xx other than 501 (routes whose issue has not landed), and on any answer that breaks the
document's schemas or statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.up import running_up, user_token

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEED = 20261201
MAX_SECONDS = int(os.environ.get("TRAINYARD_FUZZ_SECONDS", "100"))
PIPELINE = "fuzz"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"
CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    data = tmp_path_factory.mktemp("fuzz")
    pipelines = {PIPELINE: {"command": ["echo", "trained"]}}
    with running_up(data / "data", {"TRAINYARD_JOBRUNNER_PIPELINES": json.dumps(pipelines)}) as (
        _,
        endpoints,
    ):
        yield data, endpoints


def _document_for_this_instance(out: Path) -> Path:
    """The committed document, with the one fact only a running instance knows: which pipelines
    are registered (so that positive cases for POST /training-jobs can succeed)."""
    doc = json.loads((ROOT / "openapi" / "trainyard.json").read_text())
    for parameter in doc["paths"]["/training-jobs"]["post"]["parameters"]:
        if parameter["name"] == "pipeline":
            parameter["schema"] = {**parameter["schema"], "enum": [PIPELINE]}
    path = out / "openapi.json"
    path.write_text(json.dumps(doc))
    return path


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    up: tuple[Path, dict[str, Any]],
) -> None:
    work, endpoints = up
    token = user_token(work / "data", "fuzzer")
    config = work / "schemathesis.toml"
    config.write_text(CONFIG)
    report = work / "report"
    cmd = [
        str(BIN / "st"),
        "--config-file",
        str(config),
        "run",
        str(_document_for_this_instance(work)),
        "--url",
        endpoints["http"],
        "--header",
        f"Authorization: Bearer {token}",
        "--seed",
        str(SEED),
        "--max-time",
        str(MAX_SECONDS),
        "--checks",
        CHECKS,
        "--generation-database",
        "none",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "har",
        "--report-dir",
        str(report),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=MAX_SECONDS + 300, cwd=work)
    output = run.stdout + run.stderr
    summary = output[output.rfind("=== SUMMARY") :] if "=== SUMMARY" in output else output[-3000:]
    assert run.returncode == 0, output[-12000:]
    # It must have reached the write paths: created uploads and training jobs that worked.
    (har,) = report.glob("*.json")
    entries = json.loads(har.read_text())["log"]["entries"]
    created = {
        path: sum(
            1
            for e in entries
            if e["request"]["method"] == "POST"
            and e["request"]["url"].split("?")[0].endswith(path)
            and e["response"]["status"] == 200
        )
        for path in ("/api/v2/train/upload-data", "/training-jobs")
    }
    assert all(created.values()), (created, summary)
