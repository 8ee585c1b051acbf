"""The workload's reporter against a real grpc.aio server on port 0: what reaches the
orchestrator's RPCs (messages and the job token), and how refusals surface."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.support.train_service import RecordingTrainService, serve
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc
from trainyard.workload import Reporter, ReportError


@pytest.fixture
async def orchestrator() -> AsyncIterator[tuple[RecordingTrainService, str]]:
    servicer = RecordingTrainService()  # type: ignore[abstract]  # see tests/support/train_service.py
    server, address = await serve(servicer)
    try:
        yield servicer, address
    finally:
        await server.stop(0)


async def test_status_progress_and_log_reach_the_rpcs_with_the_job_token(
    orchestrator: tuple[RecordingTrainService, str],
) -> None:
    servicer, address = orchestrator
    env = {"TRAINYARD_ORCHESTRATOR_ADDRESS": address, "TRAINYARD_JOB_TOKEN": "job-token-1"}
    async with Reporter.from_env(env) as report:
        assert report.connected
        await report.status("starting")
        await report.progress(0.25, "load")
        await report.log("warning", "3 rows skipped")
        await report.progress(1, "train")
        await report.status("complete", {"accuracy": 0.9})
    assert [(r.method, r.request) for r in servicer.received] == [
        ("UpdateTrainStatus", {"status": "starting"}),
        (
            "UpdateTrainStatus",
            {
                "status": "in_progress",
                "metadata": {"progress": {"fraction": 0.25, "phase": "load"}},
            },
        ),
        ("LogTrainMessage", {"level": "warning", "message": "3 rows skipped"}),
        (
            "UpdateTrainStatus",
            {
                "status": "in_progress",
                "metadata": {"progress": {"fraction": 1.0, "phase": "train"}},
            },
        ),
        (
            "UpdateTrainStatus",
            {
                "status": "complete",
                "metadata": {"accuracy": 0.9, "progress": {"fraction": 1.0, "phase": "train"}},
            },
        ),
    ]
    assert {r.authorization for r in servicer.received} == {"Bearer job-token-1"}


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "check the job token in TRAINYARD_JOB_TOKEN"),
        (grpc.StatusCode.INVALID_ARGUMENT, ""),
    ],
)
async def test_a_refused_report_raises_naming_rpc_code_and_reason(
    orchestrator: tuple[RecordingTrainService, str], code: grpc.StatusCode, hint: str
) -> None:
    servicer, address = orchestrator
    servicer.refuse = code
    async with Reporter(address, "t") as report:
        with pytest.raises(ReportError) as caught:
            await report.log("error", "boom")
    assert caught.value.code == code and caught.value.rpc == "LogTrainMessage"
    assert str(caught.value).startswith(
        f"LogTrainMessage failed: {code.name}: refused by the test ({code.name})"
    )
    assert hint in str(caught.value)


async def test_an_orchestrator_without_the_rpcs_answers_unimplemented_clearly() -> None:
    server, address = await serve(svc.TrainServiceServicer())  # type: ignore[abstract]  # see tests/support/train_service.py
    try:
        async with Reporter(address, "t") as report:
            with pytest.raises(ReportError) as caught:
                await report.status("in_progress")
    finally:
        await server.stop(0)
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert f"the orchestrator at {address} does not implement UpdateTrainStatus" in str(
        caught.value
    )


async def test_an_unreachable_orchestrator_delays_no_training_but_fails_its_end() -> None:
    server, address = await serve(svc.TrainServiceServicer())  # type: ignore[abstract]  # see tests/support/train_service.py
    await server.stop(0)  # the port is now closed
    out = io.StringIO()
    async with Reporter(address, "t", timeout=0.3, final_timeout=1.0, stream=out) as report:
        await report.progress(0.5)  # not worth stopping a training for: logged, not raised
        with pytest.raises(ReportError) as caught:
            await report.status("complete")
    undelivered = json.loads(out.getvalue().splitlines()[0].split(" ", 2)[2])
    assert undelivered["rpc"] == "UpdateTrainStatus"
    assert undelivered["request"]["status"] == "in_progress"
    assert caught.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert "TRAINYARD_ORCHESTRATOR_ADDRESS" in str(caught.value)


async def test_the_final_report_waits_for_an_orchestrator_that_comes_back() -> None:
    first, address = await serve(svc.TrainServiceServicer())  # type: ignore[abstract]  # see tests/support/train_service.py
    await first.stop(0)
    servicer = RecordingTrainService()  # type: ignore[abstract]  # see tests/support/train_service.py

    async def come_back() -> grpc.aio.Server:
        await asyncio.sleep(1.0)
        server = grpc.aio.server()
        svc.add_TrainServiceServicer_to_server(servicer, server)
        server.add_insecure_port(address)
        await server.start()
        return server

    returning = asyncio.ensure_future(come_back())
    try:
        async with Reporter(address, "t", timeout=0.3, final_timeout=30.0) as report:
            await report.status("complete", {"accuracy": 0.5})
        assert [(r.method, r.request["status"]) for r in servicer.received] == [
            ("UpdateTrainStatus", "complete")
        ]
    finally:
        await (await returning).stop(0)


async def test_offline_reports_go_to_the_log_and_bad_reports_are_refused_first() -> None:
    out = io.StringIO()
    report = Reporter.from_env({}, stream=out)
    assert not report.connected
    await report.progress(0.5, "train")
    await report.log("warning", "careful")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trainyard-report status ")
    assert json.loads(lines[0].split(" ", 2)[2]) == {
        "metadata": {"progress": {"fraction": 0.5, "phase": "train"}},
        "status": "in_progress",
    }
    assert lines[1] == 'trainyard-report log {"level": "warning", "message": "careful"}'
    for bad, message in (
        (report.status("done"), "unknown status 'done'"),
        (report.progress(1.5), "from 0 to 1"),
        (report.progress(float("nan")), "a number from 0 to 1"),
        (report.log("info", "x"), "unknown level 'info'"),
        (report.log("error", "  "), "must not be empty"),
    ):
        with pytest.raises(ValueError, match=message):
            await bad
    with pytest.raises(ValueError, match="TRAINYARD_JOB_TOKEN is not set"):
        Reporter.from_env({"TRAINYARD_ORCHESTRATOR_ADDRESS": "127.0.0.1:1"})
    with pytest.raises(ValueError, match="TRAINYARD_ORCHESTRATOR_ADDRESS is not set"):
        Reporter.from_env({"TRAINYARD_JOB_TOKEN": "t"})
