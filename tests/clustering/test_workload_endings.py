"""How a clustering training ends without the real trainer: a workload that dies without
reporting is Failed with the reason, and the job-token status callback (gRPC) accepts only its
own training's statuses, forward only, never after the end."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import pytest

from tests.clustering.support import DIALOGUE_CSV, Clustering, script, start_clustering
from tests.support.harness import TEST_SECRET
from tests.support.wait import eventually
from trainyard.api.clustering.v1 import messages_pb2 as msgs
from trainyard.api.clustering.v1 import service_pb2_grpc as svc_grpc
from trainyard.clustering.app import build as build_clustering
from trainyard.clustering.settings import ClusteringSettings
from trainyard.runtime.settings import CommonSettings
from trainyard.workload import Artifacts

FORM = {
    "modelId": "",
    "productName": "p",
    "languageCode": "en-US",
    "dataSchema": "dialogue",
    "numClusters": "2",
}


def _train(c: Clustering) -> tuple[str, str]:
    model_id = f"m-{uuid.uuid4().hex[:10]}"
    resp = c.train({**FORM, "modelId": model_id}, {"dataFile": ("d.csv", DIALOGUE_CSV)})
    assert resp.status_code == 200, resp.text
    return model_id, str(resp.json()["id"])


@pytest.fixture(scope="module")
def crashing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clustering]:
    trainer = script(tmp_path_factory.mktemp("bin"), "trainer", 'echo "fell over" >&2\nexit 3')
    c = start_clustering(tmp_path_factory.mktemp("crash"), trainer_python=str(trainer))
    try:
        yield c
    finally:
        c.harness.close()


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clustering]:
    trainer = script(tmp_path_factory.mktemp("bin"), "trainer", "exec sleep 600")
    c = start_clustering(tmp_path_factory.mktemp("wait"), trainer_python=str(trainer))
    try:
        yield c
    finally:
        c.harness.close()


def test_a_workload_that_dies_without_reporting_fails_the_training(crashing: Clustering) -> None:
    model_id, experiment = _train(crashing)
    progress = crashing.wait_status(model_id, ["Failed", "Completed"], timeout=60)
    assert progress["trainingStatus"] == "Failed"
    assert progress["inferenceStatus"] is None
    view = crashing.harness.loop.run(crashing.store.get(experiment))
    assert view.error == "the trainer exited with code 3"
    assert crashing.history(experiment)[-1] == "Failed"
    # The modelId is free again: a new request starts a new training.
    again = crashing.train({**FORM, "modelId": model_id}, {"dataFile": ("d.csv", DIALOGUE_CSV)})
    assert again.status_code == 200, again.text


def _report(c: Clustering, token: str, **fields: object) -> grpc.RpcError | None:
    with grpc.insecure_channel(c.harness.servers["clustering"].address) as channel:
        stub = svc_grpc.ClusteringTrainingServiceStub(channel)
        try:
            stub.ReportTrainingStatus(
                msgs.ReportTrainingStatusRequest(**fields),  # type: ignore[arg-type]
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
        except grpc.RpcError as exc:
            return exc
    return None


def test_the_status_callback_moves_forward_only(waiting: Clustering) -> None:
    model_id, experiment = _train(waiting)
    job = waiting.harness.authority.mint_job("alice", model_id=experiment)
    assert _report(waiting, job, status="DataProcessing", percent=10) is None
    assert _report(waiting, job, status="Training", percent=40) is None
    assert _report(waiting, job, status="TrainingStarted", percent=20) is None  # ignored: back
    assert waiting.progress(model_id) == {
        "percent": 40,
        "trainingStatus": "Training",
        "inferenceStatus": None,
    }
    unknown = _report(waiting, job, status="Dancing")
    assert unknown is not None and unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Completed needs the model artifact the trainer writes first.
    early = _report(waiting, job, status="Completed", percent=100)
    assert early is not None and early.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _report(waiting, job, status="Failed", error="out of ideas") is None
    late = _report(waiting, job, status="Training")
    assert late is not None and late.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert waiting.history(experiment) == [
        "Initialized",
        "PendingTraining",
        "DatasetUploading",
        "DataProcessing",
        "Training",
        "Failed",
    ]
    assert waiting.progress(model_id)["trainingStatus"] == "Failed"


def test_only_job_tokens_call_back(waiting: Clustering) -> None:
    _, experiment = _train(waiting)
    user = _report(waiting, waiting.harness.authority.mint_user("alice"), status="Training")
    assert user is not None and user.code() == grpc.StatusCode.PERMISSION_DENIED
    other = _report(
        waiting, waiting.harness.authority.mint_job("alice", model_id="nope"), status="Training"
    )
    assert other is not None and other.code() == grpc.StatusCode.NOT_FOUND
    assert waiting.history(experiment)[-1] == "DatasetUploading"


def test_a_workload_that_ends_while_the_service_is_down_is_settled_on_restart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gate = tmp_path_factory.mktemp("gate") / "open"
    trainer = script(
        tmp_path_factory.mktemp("bin"),
        "trainer",
        f'while [ ! -e "{gate}" ]; do sleep 0.1; done\nexit 4',
    )
    data = tmp_path_factory.mktemp("restart")
    c = start_clustering(data, trainer_python=str(trainer))
    try:
        model_id, experiment = _train(c)
        c.harness.stop_server("clustering")
        gate.touch()  # the workload ends while nobody follows it
        jobrunner = c.harness.servers["jobrunner"].address
        common = CommonSettings(data_dir=data, auth_secret=TEST_SECRET, jobrunner_address=jobrunner)
        settings = ClusteringSettings(
            database_url=f"sqlite+aiosqlite:///{data / 'c.db'}", trainer_python=str(trainer)
        )
        app = c.harness.loop.run(build_clustering(common, settings))
        c.harness.start_app("clustering", app)
        store = app.state["store"]
        view = eventually(
            lambda: (v := c.harness.loop.run(store.get(experiment))).final and v,
            timeout=60,
            message="the restarted service never settled the ended workload",
        )
        assert view.status_name == "Failed"
        assert view.error == "the trainer exited with code 4"
        assert model_id == view.model_id
    finally:
        c.harness.close()


# ---- the relay: a workload's data and model through the service, with its job token --------


def _stub(c: Clustering) -> tuple[grpc.Channel, svc_grpc.ClusteringTrainingServiceStub]:
    channel = grpc.insecure_channel(c.harness.servers["clustering"].address)
    return channel, svc_grpc.ClusteringTrainingServiceStub(channel)


def _read(c: Clustering, token: str) -> bytes | grpc.RpcError:
    channel, stub = _stub(c)
    with channel:
        try:
            call = stub.ReadTrainingData(
                msgs.ReadTrainingDataRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
            return b"".join(r.chunk for r in call)
        except grpc.RpcError as exc:
            return exc


def _upload(
    c: Clustering, token: str, parts: list[tuple[str, bytes]]
) -> msgs.UploadModelResponse | grpc.RpcError:
    channel, stub = _stub(c)
    with channel:
        try:
            return stub.UploadModel(
                iter(msgs.UploadModelRequest(path=p, chunk=b) for p, b in parts),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
        except grpc.RpcError as exc:
            return exc


def test_the_workload_reads_its_data_and_uploads_its_model_through_the_service(
    waiting: Clustering,
) -> None:
    _, experiment = _train(waiting)
    job = waiting.harness.authority.mint_job("alice", model_id=experiment)
    data = _read(waiting, job)
    assert isinstance(data, bytes)
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert [line["text"] for line in lines] == [  # the customer side of DIALOGUE_CSV
        "I want to reset my password",
        "how do I change my password",
        "my card was charged twice",
        "there is a double charge on my card",
        "please cancel my subscription",
        "I would like to cancel my plan",
    ]
    big = bytes(range(256)) * 10_000  # 2.5 MB: several messages
    done = _upload(
        waiting,
        job,
        [("manifest.json", b"{}"), ("weights/c.npy", big[:1000]), ("", big[1000:]), ("e", b"")],
    )
    assert isinstance(done, msgs.UploadModelResponse), done
    assert (done.files, done.bytes) == (3, 2 + len(big))
    artifacts = Artifacts(waiting.store_storage, f"models/{experiment}/")
    manifest = waiting.harness.loop.run(artifacts.manifest("model"))
    assert {f.path: f.size for f in manifest.files} == {
        "manifest.json": 2,
        "weights/c.npy": len(big),
        "e": 0,
    }
    assert waiting.harness.loop.run(artifacts.read_bytes("model", "weights/c.npy")) == big


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ([("../escape", b"x")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("x" * 300, b"x")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("/abs", b"x")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("", b"no path first")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("a", b"1"), ("a", b"2")], grpc.StatusCode.INVALID_ARGUMENT),
        ([], grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_a_bad_model_upload_is_refused_and_stores_nothing(
    waiting: Clustering, parts: list[tuple[str, bytes]], code: grpc.StatusCode
) -> None:
    _, experiment = _train(waiting)
    job = waiting.harness.authority.mint_job("alice", model_id=experiment)
    refused = _upload(waiting, job, parts)
    assert isinstance(refused, grpc.RpcError) and refused.code() == code, refused
    keys = waiting.harness.loop.run(_keys(waiting, f"models/{experiment}/"))
    assert keys == []


async def _keys(c: Clustering, prefix: str) -> list[str]:
    return [b.key async for b in c.store_storage.list_blobs(prefix)]


def test_the_relay_answers_only_the_job_of_a_running_training(waiting: Clustering) -> None:
    _, experiment = _train(waiting)
    authority = waiting.harness.authority
    user = _read(waiting, authority.mint_user("alice"))
    assert isinstance(user, grpc.RpcError) and user.code() == grpc.StatusCode.PERMISSION_DENIED
    other = _read(waiting, authority.mint_job("alice", model_id="nope"))
    assert isinstance(other, grpc.RpcError) and other.code() == grpc.StatusCode.NOT_FOUND
    job = authority.mint_job("alice", model_id=experiment)
    assert _report(waiting, job, status="Failed", error="gave up") is None
    late = _read(waiting, job)
    assert isinstance(late, grpc.RpcError) and late.code() == grpc.StatusCode.FAILED_PRECONDITION
    upload = _upload(waiting, job, [("a", b"1")])
    assert isinstance(upload, grpc.RpcError)
    assert upload.code() == grpc.StatusCode.FAILED_PRECONDITION
