"""POST /api/v2/train/* as the Model Bazaar document reads: every endpoint's validation (422
with the documented message, every problem at once), malformed JSON (400), a taken name (409),
uploads and base models the caller may not use (404/403), local-path escapes, and an accepted
request for a type whose trainer is not in this version ending `failed` with the reason.
Real upload, job-runner and orchestrator services on SQLite behind real Envoy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.platform import Platform, start_platform, unique_name

PREFIX = "unable to start {kind} training, found the following errors: "


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    allowed = tmp_path_factory.mktemp("allowed")
    outside = tmp_path_factory.mktemp("outside")
    (allowed / "train.csv").write_text("text,label\nhello,a\n")
    (outside / "secret.csv").write_text("text,label\nsecret,b\n")
    os.symlink(outside / "secret.csv", allowed / "link.csv")
    return allowed, outside


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, roots: tuple[Path, Path]
) -> Iterator[Platform]:
    p = start_platform(tmp_path_factory.mktemp("train-api"), local_roots=[roots[0]])
    try:
        yield p
    finally:
        p.harness.close()


def _problems(resp: httpx.Response, kind: str) -> list[str]:
    assert resp.status_code == 422, resp.text
    message: str = resp.json()["message"]
    prefix = PREFIX.format(kind=kind)
    assert message.startswith(prefix), message
    return message[len(prefix) :].split("; ")


def _text_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": unique_name(),
        "model_options": {"text_column": "text", "label_column": "label", "n_target_classes": 2},
        "data": {"supervised_files": [{"location": "upload", "path": "x"}]},
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("kind", "body", "problems"),
    [
        (
            "ndb",
            {"data": {}},
            [
                "model_name is required",
                "unsupervised_files and supervised_files cannot both be empty",
            ],
        ),
        (
            "ndb",
            {
                "model_name": "n",
                "base_model_id": "b",
                "model_options": {"in_memory": True},
                "data": {"unsupervised_files": [{"location": "ftp", "path": ""}]},
                "train_options": {"test_split": 1.0},
            },
            [
                "model_options cannot be specified together with base_model_id",
                "data.unsupervised_files[0].location 'ftp' is not supported: use one of "
                "upload, local, nfs, s3",
                "data.unsupervised_files[0].path is required",
                "train_options.test_split must be in [0, 1)",
            ],
        ),
        ("ndb-retrain", {"model_name": "n"}, ["base_model_id is required"]),
        (
            "nlp-token",
            {"model_name": "n", "model_options": {}, "data": {}},
            [
                "source_column must be specified",
                "target_column must be specified",
                "data.supervised_files cannot be empty",
            ],
        ),
        (
            "nlp-text",
            {"model_name": "n", "model_options": {}, "data": {"supervised_files": []}},
            [
                "text_column must be specified",
                "label_column must be specified",
                "n_target_classes must be specified",
                "data.supervised_files cannot be empty",
            ],
        ),
        (
            "nlp-text",
            {
                "model_name": "n",
                "doc_classification": True,
                "model_options": {},
                "data": {"supervised_files": [{"location": "upload", "path": "u"}]},
            },
            ["n_target_classes must be specified"],
        ),
        (
            "nlp-datagen",
            {"model_name": "n", "task_prompt": "t"},
            ["exactly one of token_options and text_options must be given"],
        ),
        (
            "nlp-datagen",
            {
                "model_name": "n",
                "task_prompt": "t",
                "token_options": {"tags": []},
                "text_options": {"labels": [{"name": "a"}], "samples_per_label": 3},
            },
            [
                "exactly one of token_options and text_options must be given",
                "token_options.tags cannot be empty",
                "text_options.labels needs at least 2 labels to train a classifier (or a "
                "base_model_id that has others)",
            ],
        ),
        ("nlp-token-retrain", {"model_name": "n"}, ["base_model_id is required"]),
    ],
)
def test_each_endpoint_answers_every_problem_at_once(
    platform: Platform, kind: str, body: dict[str, Any], problems: list[str]
) -> None:
    model_kind = {"ndb-retrain": "ndb", "nlp-token-retrain": "nlp-token"}.get(kind, kind)
    resp = platform.train(kind, body)
    assert _problems(resp, model_kind) == problems
    fields = {v["field"] for d in resp.json()["details"] for v in d.get("field_violations", [])}
    assert fields, resp.json()


def test_numbers_out_of_range_are_422(platform: Platform) -> None:
    resp = platform.train(
        "nlp-text",
        _text_body(
            train_options={"epochs": -1, "test_split": 1.0, "learning_rate": 0},
            job_options={"allocation_cores": 0, "allocation_memory": 10**9},
        ),
    )
    assert _problems(resp, "nlp-text") == [
        "train_options.epochs must be from 1 to 1000",
        "train_options.learning_rate must be a number greater than 0",
        "train_options.test_split must be in [0, 1)",
        "job_options.allocation_cores must be at least 1",
        "job_options.allocation_memory must be at most 65536 (MB)",
    ]


def test_malformed_json_is_400(platform: Platform) -> None:
    resp = httpx.post(
        f"{platform.http}/api/v2/train/nlp-text",
        headers={**platform.headers(), "content-type": "application/json"},
        content=b'{"model_name": ',
    )
    assert resp.status_code == 400, resp.text


def test_uploads_must_exist_and_be_the_callers(platform: Platform) -> None:
    missing = platform.train(
        "nlp-text",
        _text_body(data={"supervised_files": [{"location": "upload", "path": "no-such-upload"}]}),
    )
    assert missing.status_code == 404, missing.text
    assert "no-such-upload" in missing.json()["message"]
    bobs = platform.upload([("train.csv", b"text,label\nhi,a\n")], user="bob")
    foreign = platform.train(
        "nlp-text", _text_body(data={"supervised_files": [{"location": "upload", "path": bobs}]})
    )
    assert foreign.status_code == 403, foreign.text


def test_a_taken_name_is_409_for_its_owner_only(platform: Platform) -> None:
    upload = platform.upload([("train.csv", b"text,label\nhi,a\nho,b\n")])
    name = unique_name()
    body = _text_body(
        model_name=name, data={"supervised_files": [{"location": "upload", "path": upload}]}
    )
    first = platform.train("nlp-text", body)
    assert first.status_code == 200, first.text
    assert platform.train("nlp-text", body).status_code == 409
    bobs = platform.upload([("train.csv", b"text,label\nhi,a\nho,b\n")], user="bob")
    body["data"] = {"supervised_files": [{"location": "upload", "path": bobs}]}
    assert platform.train("nlp-text", body, user="bob").status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("{allowed}/../{outside_name}/secret.csv", 403),
        ("{allowed}/link.csv", 403),
        ("{outside}/secret.csv", 403),
        ("relative/train.csv", 403),
        ("{allowed}/missing.csv", 404),
    ],
)
def test_local_paths_stay_inside_the_configured_roots(
    platform: Platform, roots: tuple[Path, Path], path: str, status: int
) -> None:
    allowed, outside = roots
    where = path.format(allowed=allowed, outside=outside, outside_name=outside.name)
    resp = platform.train(
        "nlp-text", _text_body(data={"supervised_files": [{"location": "local", "path": where}]})
    )
    assert resp.status_code == status, resp.text


def test_a_local_path_inside_a_root_is_accepted(
    platform: Platform, roots: tuple[Path, Path]
) -> None:
    resp = platform.train(
        "nlp-text",
        _text_body(
            data={"supervised_files": [{"location": "local", "path": f"{roots[0]}/train.csv"}]}
        ),
    )
    assert resp.status_code == 200, resp.text


def test_base_models_must_exist_be_readable_of_the_type_and_complete(platform: Platform) -> None:
    upload = platform.upload([("train.csv", b"text,label\nhi,a\n")])
    files = {"supervised_files": [{"location": "upload", "path": upload}]}
    unknown = platform.train(
        "nlp-text", _text_body(base_model_id="00000000-0000-0000-0000-000000000000", data=files)
    )
    assert unknown.status_code == 404, unknown.text
    bobs_upload = platform.upload([("d.txt", b"doc")], user="bob")
    bobs = platform.train(
        "ndb",
        {
            "model_name": unique_name(),
            "data": {"unsupervised_files": [{"location": "upload", "path": bobs_upload}]},
        },
        user="bob",
    )
    assert bobs.status_code == 200, bobs.text
    bob_model = bobs.json()["model_id"]
    foreign = platform.train("nlp-text", _text_body(base_model_id=bob_model, data=files))
    assert foreign.status_code == 403, foreign.text
    # Bob shares it: now readable, but an ndb model is no base for nlp-text, and not complete.
    shared = httpx.post(
        f"{platform.http}/api/v2/model/{bob_model}/access",
        headers=platform.headers("bob"),
        json={"access": "public"},
    )
    assert shared.status_code == 200, shared.text
    wrong = platform.train("nlp-text", _text_body(base_model_id=bob_model, data=files))
    assert wrong.status_code == 422, wrong.text
    message = wrong.json()["message"]
    assert "is a ndb model, not a nlp-text model" in message
    assert "is not complete" in message


def test_an_ndb_training_with_nothing_indexable_ends_failed_with_the_reason(
    platform: Platform,
) -> None:
    upload = platform.upload([("doc.bin", b"some text")])
    resp = platform.train(
        "ndb",
        {
            "model_name": unique_name(),
            "data": {"unsupervised_files": [{"location": "upload", "path": upload}]},
        },
    )
    assert resp.status_code == 200, resp.text
    status = platform.wait_final(resp.json()["model_id"])
    assert status["status"] == "failed"
    assert "Unable to parse doc.bin. Unsupported filetype." in status["warnings"]
    assert any("nothing was indexed" in e for e in status["errors"]), status["errors"]
