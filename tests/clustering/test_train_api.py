"""POST .../trainings/train as the document reads: field rules, quoted and plain values, 202
while the same modelId trains, another user's modelId, the deprecated path. The trainer here
is a script that waits (trainer_python), so a training stays in progress for as long as the
module runs; the real trainer is exercised in test_training_e2e.py."""

# Turkish text on purpose: the dotless i is what these tests are about.
# ruff: noqa: RUF001

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.clustering.support import (
    DEPRECATED_TRAIN,
    DIALOGUE_CSV,
    INTENT_CSV,
    TRAIN,
    Clustering,
    script,
    start_clustering,
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clustering]:
    waiting = script(tmp_path_factory.mktemp("bin"), "trainer", "exec sleep 600")
    c = start_clustering(
        tmp_path_factory.mktemp("clustering"),
        trainer_python=str(waiting),
        max_file_bytes=64 * 1024,
    )
    try:
        yield c
    finally:
        c.harness.close()


def new_id() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


def form(model_id: str, **over: str) -> dict[str, str]:
    fields = {
        "modelId": model_id,
        "productName": "support",
        "languageCode": "en-US",
        "dataSchema": "dialogue",
        "numClusters": "3",
        "forceTrain": "false",
    }
    fields.update(over)
    return {k: v for k, v in fields.items() if v != "<absent>"}


DATA = {"dataFile": ("dialogues.csv", DIALOGUE_CSV)}


def bad(svc: Clustering, fields: dict[str, str], files: Any = None) -> str:
    resp = svc.train(fields, DATA if files is None else files)
    assert resp.status_code == 400, resp.text
    message: str = resp.json()["message"]
    return message


@pytest.mark.parametrize(
    ("model_id", "says"),
    [
        ("My-Model", "lowercase"),
        ("-model", "start or end"),
        ("model-", "start or end"),
        ("a" * 64, "at most 63"),
        ("model_1", "lowercase"),
        ("müşteri-modeli", "Turkish characters (ü, ş)"),
        ("ığdır", "Turkish characters (ğ, ı)"),
        ("", "required"),
    ],
)
def test_model_id_rules(svc: Clustering, model_id: str, says: str) -> None:
    message = bad(svc, form(model_id))
    assert "modelId" in message and says in message, message


def test_a_63_character_model_id_is_accepted(svc: Clustering) -> None:
    resp = svc.train(form("a" * 30 + "-" + uuid.uuid4().hex[:32]), DATA)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("over", "field", "says"),
    [
        ({"languageCode": "de-DE"}, "languageCode", "en-US, tr-TR, ar-SA, fr-FR, nl-NL, it-IT"),
        ({"languageCode": "<absent>"}, "languageCode", "required"),
        ({"dataSchema": "faq"}, "dataSchema", "dialogue or intent"),
        ({"secondaryDataSchema": "dialogue"}, "secondaryDataSchema", "must differ"),
        ({"numClusters": "-1"}, "numClusters", "integer >= 0"),
        ({"numClusters": "three"}, "numClusters", "integer >= 0"),
        ({"numClusters": "2.5"}, "numClusters", "integer >= 0"),
        ({"numClusters": "<absent>"}, "numClusters", "required"),
        ({"numClusters": "50"}, "numClusters", "more than the 6 utterances"),
        ({"llm": "claude"}, "llm", "empty or use openai"),
        ({"forceTrain": "maybe"}, "forceTrain", "true or false"),
        ({"productName": "<absent>"}, "productName", "required"),
    ],
)
def test_field_rules(svc: Clustering, over: dict[str, str], field: str, says: str) -> None:
    files = dict(DATA)
    if over.get("secondaryDataSchema"):
        files["secondaryDataFile"] = ("more.csv", DIALOGUE_CSV)
    message = bad(svc, form(new_id(), **over), files)
    assert field in message and says in message, message


def test_every_violation_is_reported_at_once(svc: Clustering) -> None:
    resp = svc.train(form("Bad_Id", languageCode="xx", dataSchema="nope"), DATA)
    assert resp.status_code == 400
    fields = {v["field"] for d in resp.json()["details"] for v in d.get("field_violations", [])}
    assert {"modelId", "languageCode", "dataSchema"} <= fields


def test_files_must_be_present_and_parseable(svc: Clustering) -> None:
    assert "dataFile is required" in bad(svc, form(new_id()), {})
    wrong = bad(svc, form(new_id()), {"dataFile": ("d.csv", b"id,who,what\n1,a,b\n")})
    assert "conversation_id,speaker,text" in wrong and "found id,who,what" in wrong
    intent = bad(
        svc, form(new_id(), dataSchema="intent"), {"dataFile": ("i.csv", b"text,label\na,b\n")}
    )
    assert "text,intent" in intent
    broken = bad(svc, form(new_id()), {"dataFile": ("d.json", b'[{"text": ')})
    assert "not valid JSON" in broken
    latin1 = bad(
        svc,
        form(new_id()),
        {
            "dataFile": (
                "d.csv",
                "conversation_id,speaker,text\n1,customer,caf\xe9\n".encode("latin-1"),
            )
        },
    )
    assert "not UTF-8" in latin1
    missing = bad(svc, form(new_id(), secondaryDataSchema="intent"), DATA)
    assert "secondaryDataFile is required" in missing


def test_quoted_and_plain_values_are_the_same(svc: Clustering) -> None:
    quoted_id, plain_id = new_id(), new_id()
    quoted = svc.train(
        {
            "modelId": f'"{quoted_id}"',
            "productName": '"support"',
            "languageCode": '"en-US"',
            "dataSchema": '"dialogue"',
            "secondaryDataSchema": '"intent"',
            "numClusters": '"3"',
            "llm": '""',
            "forceTrain": '"true"',
        },
        {**DATA, "secondaryDataFile": ("intents.csv", INTENT_CSV)},
    )
    assert quoted.status_code == 200, quoted.text
    plain = svc.train(
        form(plain_id, secondaryDataSchema="intent", forceTrain="true"),
        {**DATA, "secondaryDataFile": ("intents.csv", INTENT_CSV)},
    )
    assert plain.status_code == 200, plain.text
    a, b = quoted.json(), plain.json()
    assert a["name"] == quoted_id and b["name"] == plain_id
    assert {**a["trainingParams"], "modelId": ""} == {**b["trainingParams"], "modelId": ""}
    assert a["trainingParams"] == {
        "modelId": quoted_id,
        "productName": "support",
        "languageCode": "en-US",
        "dataSchema": "dialogue",
        "secondaryDataSchema": "intent",
        "numClusters": 3,
        "llm": "",
        "forceTrain": True,
    }


def test_the_experiment_object(svc: Clustering) -> None:
    model_id = new_id()
    resp = svc.train(form(model_id, productName="Call centre"), DATA)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {
        "id",
        "name",
        "description",
        "status",
        "statusMessage",
        "percent",
        "trainingParams",
        "endpoints",
        "experimentMetrics",
        "experimentDatasetMappings",
        "creationTime",
        "lastModificationTime",
    }
    assert body["name"] == model_id and body["description"] == "Call centre"
    # The service stored the data and handed it to the workload: DatasetUploading (2).
    assert (body["status"], body["statusMessage"]) == (2, "DatasetUploading")
    assert body["endpoints"] == [] and body["experimentMetrics"] == []
    [mapping] = body["experimentDatasetMappings"]
    assert mapping["experimentId"] == body["id"] and mapping["datasetColumn"] == "dataFile"
    assert body["creationTime"].endswith("Z")
    assert svc.history(body["id"]) == ["Initialized", "PendingTraining", "DatasetUploading"]


def test_a_second_request_while_training_is_202_and_changes_nothing(svc: Clustering) -> None:
    model_id = new_id()
    first = svc.train(form(model_id), DATA)
    assert first.status_code == 200, first.text
    again = svc.train(form(model_id, forceTrain="true"), DATA)
    assert again.status_code == 202, again.text
    assert again.json()["message"] == (
        f"The training is still in progress for the same model ID: {model_id}"
    )
    latest = svc.harness.loop.run(svc.store.latest(model_id))
    assert latest.id == first.json()["id"]
    assert svc.progress(model_id)["trainingStatus"] == "DatasetUploading"


def test_another_users_model_id_is_403(svc: Clustering) -> None:
    model_id = new_id()
    assert svc.train(form(model_id), DATA, user="alice").status_code == 200
    resp = svc.train(form(model_id), DATA, user="mallory")
    assert resp.status_code == 403, resp.text
    assert "belongs to another user" in resp.json()["message"]
    for what in ("progress", "ready", "clusters"):
        assert svc.get(model_id, what, user="mallory").status_code == 403
    assert svc.assign(model_id, ["hello"], user="mallory").status_code == 403
    assert svc.get(new_id(), "progress").status_code == 404


def test_the_deprecated_path_behaves_the_same_with_a_deprecation_header(svc: Clustering) -> None:
    model_id = new_id()
    resp = svc.train(form(model_id), DATA, path=DEPRECATED_TRAIN)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == model_id
    assert resp.headers["deprecation"] == "true"
    assert TRAIN in resp.headers["link"] and 'rel="successor-version"' in resp.headers["link"]
    assert "deprecation" not in svc.train(form(new_id()), DATA).headers
    refused = svc.train(form("Bad"), DATA, path=DEPRECATED_TRAIN)
    assert refused.status_code == 400 and refused.headers["deprecation"] == "true"
    busy = svc.train(form(model_id), DATA, path=DEPRECATED_TRAIN)
    assert busy.status_code == 202 and busy.headers["deprecation"] == "true"
    assert TRAIN in busy.headers["link"]


def test_progress_and_ready_before_training_ends(svc: Clustering) -> None:
    model_id = new_id()
    assert svc.train(form(model_id), DATA).status_code == 200
    progress = svc.progress(model_id)
    assert progress == {"percent": 0, "trainingStatus": "DatasetUploading", "inferenceStatus": None}
    ready = svc.get(model_id, "ready")
    assert ready.status_code == 200 and ready.text == "false"
    assign = svc.assign(model_id, ["hi"])
    assert assign.status_code == 400, assign.text
    assert svc.get(model_id, "clusters").status_code == 400


def test_unauthenticated_requests_are_401(svc: Clustering) -> None:
    import httpx

    resp = httpx.post(f"{svc.http}{TRAIN}", files={"dataFile": ("d.csv", DIALOGUE_CSV)})
    assert resp.status_code == 401


def test_a_file_over_the_limit_is_413(svc: Clustering) -> None:
    big = DIALOGUE_CSV + b"c9,customer,more words here\n" * 5000
    resp = svc.train(form(new_id()), {"dataFile": ("big.csv", big)})
    assert resp.status_code == 413, resp.text
    assert "dataFile" in resp.json()["message"] and "65536 bytes" in resp.json()["message"]
