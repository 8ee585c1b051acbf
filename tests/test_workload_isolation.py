"""No user runs code in a platform process or reads its secrets (issue 8, section 1).

Through real Envoy: the exact chain of the report (upload `sitecustomize.py`, learn its server
path, put it on PYTHONPATH) and its cousins end in 400 with nothing executed. On the local
backend as root, an accepted workload runs as the unprivileged workload user, in its own work
directory, and cannot read the auth secret, the databases or the upload store; the shim (platform
code) starts isolated with a clean environment even when the job-runner's own carries PYTHON*.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest

from tests.support.harness import Harness
from tests.support.jobs import gone, job_spec, lines, open_dir
from tests.support.wait import eventually, wait_until
from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.blobs import LocalBlobStorage
from trainyard.jobrunner.app import MIGRATIONS
from trainyard.jobrunner.app import build as build_jobrunner
from trainyard.jobrunner.backends.local import (
    LocalBackend,
    can_execute,
    parse_uid_range,
    workload_identity,
)
from trainyard.jobrunner.runner import JobRunner
from trainyard.jobrunner.settings import JobrunnerSettings, Pipeline
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.db import Database, create_engine
from trainyard.runtime.settings import CommonSettings, ensure_local_secret
from trainyard.suite import client_credentials
from trainyard.upload.app import build as build_upload
from trainyard.upload.settings import UploadSettings

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="workload users need a root job-runner")
NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- the platform's files are its own -------------------------------------------------------


async def test_secrets_databases_and_blobs_are_private() -> None:
    data = open_dir()
    ensure_local_secret(data / "auth-secret")
    assert mode(data / "auth-secret") == 0o600
    assert mode(data) == 0o711, "others may pass through to their work dir, never list"
    (data / "clients.json").write_text(json.dumps({"cli": "s"}))
    (data / "clients.json").chmod(0o644)  # as an older version left it
    client_credentials(data)
    assert mode(data / "clients.json") == 0o600
    (data / "old-secret").write_text("x")
    (data / "old-secret").chmod(0o644)
    ensure_local_secret(data / "old-secret")
    assert mode(data / "old-secret") == 0o600
    engine = create_engine(f"sqlite+aiosqlite:///{data / 'x.db'}")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("create table t (a int)")
    await engine.dispose()
    for db_file in data.glob("x.db*"):
        assert mode(db_file) == 0o600, db_file
    store = LocalBlobStorage(data / "uploads")
    await store.start()
    assert mode(data / "uploads") == 0o700


@AS_ROOT
def test_the_workload_user_setting_is_checked_at_start() -> None:
    assert workload_identity("nobody") == (NOBODY, NOBODY)
    assert workload_identity(str(NOBODY)) == (NOBODY, NOBODY)
    assert workload_identity("") is None
    with pytest.raises(ValueError, match="not a user of this machine"):
        workload_identity("no-such-user-here")
    with pytest.raises(ValueError, match="must not be root"):
        workload_identity("root")
    assert parse_uid_range("200000-200009") == range(200000, 200010)
    for bad in ("0-10", "5-1", "abc", "100"):
        with pytest.raises(ValueError):
            parse_uid_range(bad)


def test_the_backend_knows_what_the_workload_user_can_run(tmp_path: Path) -> None:
    """So a root job-runner can warn when `python` workloads would fail to start as nobody."""
    assert can_execute("/bin/sh", NOBODY, NOBODY)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    tool = private / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert not can_execute(str(tool), NOBODY, NOBODY)
    assert can_execute(str(tool), os.geteuid(), os.getegid())
    link = open_dir() / "link"
    link.symlink_to(tool)
    assert not can_execute(str(link), NOBODY, NOBODY), "the link's target is out of reach"


# ---- the exact chain of the report, through Envoy ---------------------------------------------


@pytest.fixture(scope="module")
def platform() -> Iterator[tuple[Harness, Path]]:
    """upload + job-runner on one world-reachable data dir with a file-kept auth secret."""
    data = open_dir()
    secret = ensure_local_secret(data / "auth-secret")
    common = CommonSettings(data_dir=data)
    probe = (
        "echo uid=$(id -u) groups=$(id -G); echo home=$HOME pwd=$(pwd)\n"
        f"cat {data}/auth-secret 2>&1\n"
        f"cat {data}/jobrunner.db {data}/upload.db 2>&1 >/dev/null; ls {data}/uploads 2>&1\n"
        f"ls {data} 2>&1\n"
        "cat ../log 2>&1\n"
        "echo mine > own.txt && cat own.txt\n"
        "env | sort | grep -v '^_=' | cut -d= -f1 | tr '\\n' ' '; echo\n"
    )
    own = JobrunnerSettings(
        database_url=f"sqlite+aiosqlite:///{data / 'jobrunner.db'}",
        kill_grace_seconds=1,
        workload_user="nobody",
        pipelines={
            "churn": Pipeline(command=["python", "-c", "print('ran')"]),
            "probe": Pipeline(command=["/bin/sh", "-c", probe]),
        },
    )
    harness = Harness(data, authority=TokenAuthority(secret))
    upload_own = UploadSettings(database_url=f"sqlite+aiosqlite:///{data / 'upload.db'}")
    harness.start_app("upload", harness.loop.run(build_upload(common, upload_own)))
    harness.start_app("jobrunner", harness.loop.run(build_jobrunner(common, own)))
    harness.start_envoy()
    try:
        yield harness, data
    finally:
        harness.close()


def _violations(resp: httpx.Response) -> list[str]:
    return [
        v["field"]
        for d in resp.json()["details"]
        if d["@type"].endswith("BadRequest")
        for v in d["field_violations"]
    ]


def test_the_reported_chain_ends_in_400_with_nothing_run(
    platform: tuple[Harness, Path], tmp_path: Path
) -> None:
    h, data = platform
    auth = h.user_headers("mallory")
    marker = tmp_path / "pwned"
    payload = (
        "import pathlib\n"
        f"p = pathlib.Path({str(marker)!r})\n"
        f"p.write_text(open({str(data / 'auth-secret')!r}).read())\n"
    )
    up = httpx.post(
        h.http + "/api/v2/train/upload-data",
        headers=auth,
        files=[("file", ("sitecustomize.py", payload.encode(), "text/x-python"))],
    )
    assert up.status_code == 200, up.text
    upload_id = up.json()["upload_id"]

    listed = httpx.get(h.http + "/api/v2/train/uploads", headers=auth)
    assert listed.status_code == 200
    assert upload_id in listed.text
    assert "file:" not in listed.text and str(data) not in listed.text, listed.text
    for f in listed.json()["uploads"][0]["files"]:
        assert f.get("uri", "") == "" and f.get("local_path", "") == ""

    # The attacker's folder, as the old `uri` gave it away.
    folder = data / "uploads" / upload_id
    assert (folder / "sitecustomize.py").exists()
    attempts = {
        "PYTHONPATH": str(folder),
        "LD_PRELOAD": str(folder / "sitecustomize.py"),
        "PYTHONSTARTUP": str(folder / "sitecustomize.py"),
        "BASH_ENV": str(folder / "sitecustomize.py"),
    }
    for key, value in attempts.items():
        resp = httpx.post(
            f"{h.http}/training-jobs?pipeline=churn", headers=auth, json={key: value, "epochs": 1}
        )
        assert resp.status_code == 400, (key, resp.text)
        assert repr(key) in resp.json()["message"] and "reserved" in resp.json()["message"]
        assert _violations(resp) == [key]
    # Nothing was stored, so nothing can run later.
    assert httpx.get(f"{h.http}/training-jobs", headers=auth).json() == []
    assert not marker.exists()


def test_values_that_cannot_be_an_environment_are_400(platform: tuple[Harness, Path]) -> None:
    h, _ = platform
    auth = h.user_headers("carol")
    resp = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn", headers=auth, json={"text": "a\u0000b"}
    )
    assert resp.status_code == 400, resp.text
    assert "NUL" in resp.json()["message"]
    # Bodies this large never pass the edge (64 KiB for JSON routes: 413), so the value rules
    # are checked where they live, on the gRPC API.
    stub = svc.TrainingJobsServiceStub(grpc.insecure_channel(h.servers["jobrunner"].address))
    for body, rule in (
        ({"big": "x" * (128 * 1024 + 1)}, "128 KiB"),
        ({f"v{i}": "x" * 120_000 for i in range(9)}, "1 MiB"),
    ):
        edge = httpx.post(f"{h.http}/training-jobs?pipeline=churn", headers=auth, json=body)
        assert edge.status_code == 413, edge.text
        request = msgs.CreateTrainingJobRequest(pipeline="churn")
        request.hyperparameters.update(body)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateTrainingJob(request, metadata=tuple(auth.items()), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rule in (refused.value.details() or "")
    assert httpx.get(f"{h.http}/training-jobs", headers=auth).json() == []


@AS_ROOT
def test_an_accepted_workload_runs_unprivileged_and_cannot_read_secrets(
    platform: tuple[Harness, Path],
) -> None:
    h, data = platform
    auth = h.user_headers("alice")
    resp = httpx.post(f"{h.http}/training-jobs?pipeline=probe", headers=auth, json={"epochs": 3})
    assert resp.status_code == 200, resp.text
    name = resp.json()

    def ended() -> bool:
        jobs = httpx.get(f"{h.http}/training-jobs", headers=auth).json()
        return any(j["name"] == name and j["status"] == "Succeeded" for j in jobs)

    eventually(ended, timeout=30, message="the probe never succeeded")
    out = httpx.get(f"{h.http}/training-jobs/{name}", headers=auth).json()
    lines_ = out.splitlines()
    assert lines_[0] == f"uid={NOBODY} groups={NOBODY}", out
    secret = (data / "auth-secret").read_text().strip()
    assert secret not in out
    assert f"cat: {data}/auth-secret: Permission denied" in out
    assert f"ls: cannot open directory '{data}/uploads': Permission denied" in out
    for db_file in ("jobrunner.db", "upload.db"):
        assert f"cat: {data}/{db_file}: Permission denied" in out
    assert f"ls: cannot open directory '{data}': Permission denied" in out
    assert "cat: ../log: Permission denied" in out
    assert "mine" in lines_
    home = lines_[1]
    assert home.startswith("home=") and home.split()[0][5:] == home.split()[1][4:]
    assert home.split()[0].endswith("/work")
    env_names = lines_[-1].split()
    assert "epochs" in env_names and "TRAINYARD_JOB_ID" in env_names
    assert not [n for n in env_names if n.startswith("TRAINYARD_") and "JOB" not in n]


# ---- the shim starts isolated, whatever the job-runner's own environment holds ----------------


@pytest.fixture
async def root_runner(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[JobRunner, Path]]:
    data = open_dir()
    marker_dir = open_dir()
    (marker_dir / "sitecustomize.py").write_text(
        f"open({str(marker_dir / 'ran')!r}, 'w').write('shim')\n"
    )
    # The job-runner's own environment carries what a user would have liked to inject.
    monkeypatch.setenv("PYTHONPATH", str(marker_dir))
    monkeypatch.setenv("PYTHONSTARTUP", str(marker_dir / "sitecustomize.py"))
    monkeypatch.setenv("TRAINYARD_AUTH_SECRET", "must-not-leak")
    db = Database("jobrunner", f"sqlite+aiosqlite:///{data / 'jr.db'}", MIGRATIONS, None)
    await db.start()
    user = "nobody" if os.geteuid() == 0 else ""
    backend = LocalBackend(data / "jobs", grace_seconds=1.0, workload_user=user)
    runner = JobRunner(db.sessions, backend, data / "jobs", 2)
    await runner.start()
    try:
        yield runner, marker_dir
    finally:
        for view in (await runner.list())[0]:
            if not view.done:
                await runner.cancel(view.id)
        await runner.close()
        await db.close()


async def test_the_shim_runs_isolated_with_a_clean_environment(
    root_runner: tuple[JobRunner, Path],
) -> None:
    runner, marker_dir = root_runner
    view = await runner.submit(
        job_spec({"command": ["/bin/sh", "-c", "echo up; exec sleep 60"], "env": {"epochs": "3"}}),
        "a",
    )
    job_dir = runner.log_root / view.id
    shim_file = job_dir / "shim-1.json"

    def shim_info() -> dict[str, Any] | None:
        return json.loads(shim_file.read_text()) if shim_file.exists() else None

    info = await wait_until(shim_info, what="the shim started its workload")

    def log_written() -> bool:
        log = job_dir / "log"
        return log.exists() and log.stat().st_size > 0

    await wait_until(log_written, what="the workload wrote its first line")
    shim = psutil.Process(info["pid"])
    assert shim.cmdline()[1:4] == ["-I", "-m", "trainyard.jobrunner.shim"]
    shim_env = shim.environ()
    assert set(shim_env) <= {"PATH", "LANG"}, shim_env
    workload = psutil.Process(info["child_pid"])
    work_env = workload.environ()
    assert work_env["epochs"] == "3" and work_env["HOME"] == str(job_dir / "work")
    assert "PYTHONPATH" not in work_env and "PYTHONSTARTUP" not in work_env
    assert "TRAINYARD_AUTH_SECRET" not in work_env
    if os.geteuid() == 0:
        assert workload.uids().real == NOBODY and shim.uids().real == 0
        assert workload.gids().real == NOBODY and workload.gids().effective == NOBODY
        for own in ("log", "shim.err", "shim-1.json", "env-1.json"):
            assert mode(job_dir / own) == 0o600 and (job_dir / own).stat().st_uid == 0, own
        assert mode(job_dir) == 0o711
        assert (job_dir / "work").stat().st_uid == NOBODY
    # Cancel still stops a workload of another user, and its whole group.
    done = await runner.cancel(view.id)
    assert done.state == "CANCELLED"
    await wait_until(lambda: gone(info["child_pid"]), what="the workload is gone")
    assert not (marker_dir / "ran").exists(), "the runner's PYTHON* reached the shim"


@AS_ROOT
async def test_limits_still_apply_to_an_unprivileged_workload(
    root_runner: tuple[JobRunner, Path],
) -> None:
    runner, _ = root_runner
    view = await runner.submit(
        job_spec(
            {
                "command": ["/bin/sh", "-c", "ulimit -v; grep Cpus_allowed_list /proc/self/status"],
                "resources": {"memory_mb": "256", "cores": 1},
            }
        ),
        "a",
    )
    done = await runner.wait(view.id, 30)
    assert done.state == "SUCCEEDED", done.message
    out = [r.text for r in await lines(runner, view.id)]
    assert out[0] == str(256 * 1024)
    cpus = out[1].split(":")[1].strip()
    assert "," not in cpus and "-" not in cpus, cpus


@AS_ROOT
async def test_with_a_uid_range_each_job_is_a_user_of_its_own(tmp_path: Path) -> None:
    data = open_dir()
    db = Database("jobrunner", f"sqlite+aiosqlite:///{data / 'jr.db'}", MIGRATIONS, None)
    await db.start()
    backend = LocalBackend(data / "jobs", 1.0, "nobody", workload_uids="200000-200009")
    runner = JobRunner(db.sessions, backend, data / "jobs", 3)
    await runner.start()
    try:
        first = await runner.submit(
            job_spec({"command": ["/bin/sh", "-c", "id -u; echo private > secret; exec sleep 60"]}),
            "a",
        )
        first_work = data / "jobs" / first.id / "work"
        await wait_until(
            lambda: (first_work / "secret").exists(), what="the first job wrote its file"
        )
        probe = "id -u; cat $OTHER/secret 2>&1; ls $OTHER 2>&1; true"
        second = await runner.submit(
            job_spec({"command": ["/bin/sh", "-c", probe], "env": {"OTHER": str(first_work)}}), "b"
        )
        done = await runner.wait(second.id, 30)
        assert done.state == "SUCCEEDED", done.message
        out = [r.text for r in await lines(runner, second.id)]
        first_uid = int((await lines(runner, first.id))[0].text)
        assert 200000 <= first_uid <= 200009 and 200000 <= int(out[0]) <= 200009
        assert int(out[0]) != first_uid
        assert f"cat: {first_work}/secret: Permission denied" in out
        assert f"ls: cannot open directory '{first_work}': Permission denied" in out
        # Only running jobs hold a uid; the first keeps its own for all its attempts.
        assert backend._uids == {first.id: first_uid}
    finally:
        for view in (await runner.list())[0]:
            if not view.done:
                await runner.cancel(view.id)
        await runner.close()
        await db.close()
    assert backend._uids == {}
