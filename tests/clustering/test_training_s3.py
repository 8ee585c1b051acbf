"""A clustering training on S3 storage (a moto server): the workload gets no storage
credentials (the job-runner builds its environment from scratch), so its data and its model go
through the clustering service (ReadTrainingData / UploadModel); a trainer that reached for the
bucket itself would fail. The model lands in the service's bucket and serves assign."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.clustering.support import DIALOGUE_CSV, Clustering, start_clustering
from tests.support.upload_service import MotoServer

BUCKET = "clustering-s3"


@pytest.fixture(scope="module")
def on_s3(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clustering]:
    moto.client().create_bucket(Bucket=BUCKET)
    c = start_clustering(
        tmp_path_factory.mktemp("clustering-s3"),
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_prefix="cl/",
        s3_endpoint_url=moto.endpoint,
    )
    try:
        yield c
    finally:
        c.harness.close()


def test_a_training_on_s3_completes_with_its_model_in_the_bucket(
    on_s3: Clustering, moto: MotoServer
) -> None:
    model_id = f"s3-{uuid.uuid4().hex[:8]}"
    form = {
        "modelId": model_id,
        "productName": "p",
        "languageCode": "en-US",
        "dataSchema": "dialogue",
        "numClusters": "3",
    }
    resp = on_s3.train(form, {"dataFile": ("d.csv", DIALOGUE_CSV)})
    assert resp.status_code == 200, resp.text
    experiment = resp.json()["id"]
    done = on_s3.wait_status(model_id, ["Completed", "Failed"])
    assert done["trainingStatus"] == "Completed", on_s3.harness.loop.run(
        on_s3.store.latest(model_id)
    )
    keys = moto.keys(BUCKET, f"cl/clustering/models/{experiment}/model/")
    assert f"cl/clustering/models/{experiment}/model/MANIFEST.json" in keys
    assert any(k.endswith(".npy") for k in keys), keys
    on_s3.wait_ready(model_id)
    assigned = on_s3.assign(model_id, ["my card was charged two times"])
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["assignments"][0]["text"] == "my card was charged two times"
