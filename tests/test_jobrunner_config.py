"""A job's config reaches its workload: inline (spec.config_json, a file named by
TRAINYARD_CONFIG) or by reference (spec.config_uri, passed as TRAINYARD_CONFIG_URI); the spec
rules refuse what a workload could not be given."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.jobs import job_spec, lines
from trainyard.jobrunner.app import MIGRATIONS
from trainyard.jobrunner.backends.local import LocalBackend
from trainyard.jobrunner.runner import JobRunner, validate_spec
from trainyard.jobrunner.shim import CONFIG_FILE_NAME
from trainyard.jobrunner.workload_config import MAX_CONFIG_BYTES
from trainyard.runtime.db import Database
from trainyard.runtime.errors import InvalidArgument

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="workload users need a root job-runner")
NOBODY = 65534
SHOW = 'echo "$TRAINYARD_CONFIG"; echo "${TRAINYARD_CONFIG_URI:-none}"; cat "$TRAINYARD_CONFIG"'


def open_dir() -> Path:
    """A data dir a workload user can pass through (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="trainyard-config-"))
    path.chmod(0o755)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


async def _runner(data: Path, user: str) -> tuple[JobRunner, Database]:
    db = Database("jobrunner", f"sqlite+aiosqlite:///{data / 'jr.db'}", MIGRATIONS, None)
    await db.start()
    backend = LocalBackend(data / "jobs", grace_seconds=1.0, workload_user=user)
    runner = JobRunner(db.sessions, backend, data / "jobs", 2)
    await runner.start()
    return runner, db


@pytest.fixture(params=["own-user", "workload-user"])
async def runner(request: pytest.FixtureRequest) -> AsyncIterator[tuple[JobRunner, Path, str]]:
    """The job-runner as its own user's workloads' runner, and (as root) with `nobody`."""
    user = "" if request.param == "own-user" else "nobody"
    if user and os.geteuid() != 0:
        pytest.skip("workload users need a root job-runner")
    data = open_dir()
    r, db = await _runner(data, user)
    try:
        yield r, data, user
    finally:
        for view in (await r.list())[0]:
            if not view.done:
                await r.cancel(view.id)
        await r.close()
        await db.close()


async def test_the_inline_config_is_a_private_file_named_by_trainyard_config(
    runner: tuple[JobRunner, Path, str],
) -> None:
    r, data, user = runner
    config = {"epochs": 3, "name": "données", "nested": {"a": [1, 2]}}
    view = await r.submit(
        job_spec({"command": ["/bin/sh", "-c", SHOW], "config_json": json.dumps(config)}), "alice"
    )
    done = await r.wait(view.id, 30)
    assert done.state == "SUCCEEDED", done.message
    out = [rec.text for rec in await lines(r, view.id)]
    path = data / "jobs" / view.id / "work" / CONFIG_FILE_NAME
    assert out[0] == str(path) and out[1] == "none"
    assert json.loads("\n".join(out[2:])) == config
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == (NOBODY if user else os.geteuid()), "the workload's own file"
    assert [p.name for p in path.parent.iterdir()] == [CONFIG_FILE_NAME], "no temp file left"


async def test_a_config_uri_is_passed_as_trainyard_config_uri(
    runner: tuple[JobRunner, Path, str],
) -> None:
    r, _, _ = runner
    uri = "s3://bucket/configs/job-1.json"
    view = await r.submit(
        job_spec(
            {
                "command": [
                    "/bin/sh",
                    "-c",
                    'echo "${TRAINYARD_CONFIG:-none} $TRAINYARD_CONFIG_URI"',
                ],
                "config_uri": uri,
            }
        ),
        "alice",
    )
    done = await r.wait(view.id, 30)
    assert done.state == "SUCCEEDED", done.message
    assert [rec.text for rec in await lines(r, view.id)] == [f"none {uri}"]


async def test_every_attempt_gets_a_fresh_config_and_planted_links_are_not_followed(
    runner: tuple[JobRunner, Path, str],
) -> None:
    """The first attempt replaces its config with a link to a file it may not write and fails;
    the retry must neither write through the link nor read the tampered config."""
    r, data, _ = runner
    target = data / "platform-file"
    target.write_text("the platform's own\n")
    target.chmod(0o644)
    script = (
        'if [ ! -e attempted ]; then touch attempted; rm -f "$TRAINYARD_CONFIG"; '
        f'ln -s {target} "$TRAINYARD_CONFIG"; exit 3; fi; cat "$TRAINYARD_CONFIG"'
    )
    view = await r.submit(
        job_spec({"command": ["/bin/sh", "-c", script], "config_json": '{"x": 1}', "retries": 1}),
        "alice",
    )
    done = await r.wait(view.id, 30)
    assert (done.state, done.attempts) == ("SUCCEEDED", 2), done.message
    assert [rec.text for rec in await lines(r, view.id)] == ['{"x": 1}']
    assert target.read_text() == "the platform's own\n"
    path = data / "jobs" / view.id / "work" / CONFIG_FILE_NAME
    assert not path.is_symlink()


async def test_a_config_that_cannot_be_written_fails_the_attempt_clearly(
    runner: tuple[JobRunner, Path, str],
) -> None:
    r, _, _ = runner
    # The first attempt leaves a directory where the config goes; the retry cannot write it.
    script = 'rm -f "$TRAINYARD_CONFIG"; mkdir "$TRAINYARD_CONFIG"; exit 1'
    view = await r.submit(
        job_spec({"command": ["/bin/sh", "-c", script], "config_json": "{}", "retries": 1}), "alice"
    )
    done = await r.wait(view.id, 30)
    assert (done.state, done.exit_code, done.attempts) == ("FAILED", 127, 2)
    assert done.message.startswith(f"cannot write its config ({CONFIG_FILE_NAME}):")
    texts = [rec.text for rec in await lines(r, view.id)]
    assert any(t.startswith("trainyard: cannot write its config") for t in texts), texts


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"config_json": "[1, 2]"}, "spec.config_json", "must be a JSON object"),
        ({"config_json": "{nope"}, "spec.config_json", "is not JSON"),
        (
            {"config_json": json.dumps({"x": "y" * MAX_CONFIG_BYTES})},
            "spec.config_json",
            r"at most 1048576 \(1 MiB\)",
        ),
        ({"config_json": "{}", "config_uri": "s3://b/k"}, "spec.config_json", "not both"),
        ({"config_uri": "http://example.com/c.json"}, "spec.config_uri", "must be a file:///"),
        ({"config_uri": "s3://"}, "spec.config_uri", "must be a file:///"),
        ({"config_uri": "s3://b/" + "k" * 3000}, "spec.config_uri", "longer than 2048"),
    ],
)
async def test_configs_a_workload_cannot_be_given_are_refused(
    tmp_path: Path, extra: dict[str, str], field: str, message: str
) -> None:
    r, db = await _runner(tmp_path, "")
    try:
        with pytest.raises(InvalidArgument, match=message) as caught:
            await r.submit(job_spec({"command": ["/bin/true"], **extra}), "alice")
        assert [v.field for v in caught.value.violations] == [field]
        assert (await r.list())[0] == [], "nothing was stored"
    finally:
        await r.close()
        await db.close()


def test_a_backend_that_cannot_deliver_a_config_refuses_it() -> None:
    for extra, field in (
        ({"config_json": "{}"}, "spec.config_json"),
        ({"config_uri": "s3://b/k"}, "spec.config_uri"),
    ):
        with pytest.raises(InvalidArgument, match="batch backend cannot hand") as caught:
            validate_spec(job_spec({"image": "trainer:1", "command": ["t"], **extra}), "batch")
        assert [v.field for v in caught.value.violations] == [field]
        # The Kubernetes backend delivers both (a Secret, an env var).
        validate_spec(job_spec({"image": "trainer:1", **extra}), "kubernetes")
    validate_spec(job_spec({"image": "trainer:1"}), "batch")
