"""How `trainyard up` supervises: the restart budget and its notices, and Envoy's health view
of the upstreams (a dead service turns /healthz 503 quickly, a restarted one clears it)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.harness import Harness
from tests.support.recording import Recorder, recording_registrations
from tests.support.wait import eventually
from trainyard.gateway import config
from trainyard.suite import RESTART_BUDGET, RESTART_WINDOW_SECONDS, RestartBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restart_budget_allows_five_a_minute_then_says_why_it_waits() -> None:
    clock = FakeClock()
    budget = RestartBudget(clock)
    said: list[str] = []
    for _ in range(RESTART_BUDGET):
        assert budget.may_restart("upload", -9, said.append)
        clock.now += 1
    assert said == ["upload exited with -9; restarting"] * RESTART_BUDGET
    said.clear()
    assert not budget.may_restart("upload", -9, said.append)
    assert len(said) == 1 and "restart budget" in said[0] and "next restart in" in said[0]
    # Quiet between notices, then another one every few seconds while it waits.
    clock.now += 1
    assert not budget.may_restart("upload", -9, said.append)
    assert len(said) == 1
    clock.now += 5
    assert not budget.may_restart("upload", -9, said.append)
    assert len(said) == 2
    # Once the oldest restart leaves the window, the next one is allowed.
    clock.now = 1000.0 + RESTART_WINDOW_SECONDS + 0.5
    assert budget.may_restart("upload", -9, said.append)
    assert said[-1] == "upload exited with -9; restarting"


def test_health_checks_notice_a_dead_service_within_a_second() -> None:
    cluster = config.render({"upload": "127.0.0.1:1"})["static_resources"]["clusters"][0]
    (check,) = cluster["health_checks"]
    interval = float(check["interval"].removesuffix("s"))
    assert float(check["no_traffic_interval"].removesuffix("s")) == interval
    assert interval * check["unhealthy_threshold"] <= 1.0


def test_healthz_turns_503_when_a_service_dies_and_200_when_it_is_back(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    recorder = Recorder()
    try:
        harness.start_registrations("upload", recording_registrations("upload", recorder))
        harness.start_registrations("jobrunner", recording_registrations("jobrunner", recorder))
        harness.start_envoy()
        healthz = harness.http + "/healthz"
        assert httpx.get(healthz).status_code == 200
        port = harness.servers["upload"].port
        harness.stop_server("upload", grace=0)
        eventually(
            lambda: httpx.get(healthz).status_code == 503,
            message="/healthz still reports a dead upstream as healthy",
        )
        # The same port serving again (as `up` restarts it) clears it.
        from trainyard.runtime.server import App, create_server

        async def restart() -> None:
            app = App(name="upload", registrations=recording_registrations("upload", recorder))
            server, _, _ = await create_server(
                f"127.0.0.1:{port}", app.registrations, harness.authority, app.validators
            )
            await server.start()
            from tests.support.harness import RunningServer

            harness.servers["upload"] = RunningServer(server, port, app)

        harness.loop.run(restart())
        eventually(lambda: httpx.get(healthz).status_code == 200, message="never healthy again")
    finally:
        harness.close()


def test_a_service_runs_alone_without_the_cli_imports() -> None:
    """`python -m trainyard.NAME` (what `up` starts) loads neither typer nor the suite."""
    import subprocess
    import sys

    probe = (
        "import runpy, sys\n"
        "sys.argv = ['x', '--help']\n"
        "try:\n"
        "    runpy.run_module('trainyard.upload', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('typer', 'trainyard.cli', 'trainyard.suite', 'trainyard.gateway')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
