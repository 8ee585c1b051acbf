"""Datagen, token feedback and nlp-token-retrain as a user reaches them through Envoy: datagen
for tokens and for text to `complete` on the offline provider (no key configured) and on the
OpenAI-compatible test server (the orchestrator's provider settings point at it; the real SDK
over HTTP), the generated-data download, predict; a provider's refusal failing the training
with its reason; token feedback's validation; nlp-token-retrain moving a prediction toward the
feedback, and 422 without feedback. Real upload, job-runner and orchestrator on SQLite."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.openai_server import ApiError, OpenAIServer
from tests.support.platform import Platform, as_nobody, start_platform, unique_name
from tests.trainers.test_datagen import text_reply, token_reply

PREFIX = "unable to start nlp-token training, found the following errors: "

TOKEN_OPTIONS: dict[str, Any] = {
    "tags": [
        {"name": "NAME", "examples": ["Ada Lovelace", "Alan Turing"], "description": "a person"},
        {"name": "PHONE", "examples": ["555-0100", "555-0199"], "description": "phone number"},
    ],
    "samples": [
        {
            "tokens": ["call", "Ada", "Lovelace", "at", "555-0100"],
            "tags": ["O", "NAME", "NAME", "O", "PHONE"],
        },
        {
            "tokens": ["Alan", "Turing", "rang", "from", "555-0199"],
            "tags": ["NAME", "NAME", "O", "O", "PHONE"],
        },
    ],
    "num_sentences_to_generate": 200,
    "templates_per_sample": 5,
}
TEXT_OPTIONS: dict[str, Any] = {
    "labels": [
        {"name": "billing", "examples": ["I was charged twice", "the invoice amount is wrong"]},
        {"name": "shipping", "examples": ["my parcel never arrived", "where is my package"]},
    ],
    "samples_per_label": 40,
}


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # As root (CI), the trainers run as nobody: they reach their data only through the API.
    where, how = as_nobody(tmp_path_factory.mktemp("datagen-offline"))
    p = start_platform(
        where,
        **how,
        openai_api_key="",
        retrain_generated_sentences=20,
    )
    try:
        yield p
    finally:
        p.harness.close()


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory, provider: OpenAIServer) -> Iterator[Platform]:
    p = start_platform(
        tmp_path_factory.mktemp("datagen-openai"),
        openai_api_key=provider.api_key,
        openai_base_url=provider.base_url,
        openai_model="gpt-test",
        llm_max_attempts=2,
        llm_retry_initial_seconds=0.01,
    )
    try:
        yield p
    finally:
        p.harness.close()


def _post(
    platform: Platform, path: str, body: dict[str, Any], user: str = "alice"
) -> httpx.Response:
    return httpx.post(
        f"{platform.http}{path}", headers=platform.headers(user), json=body, timeout=60
    )


def _get(platform: Platform, path: str, user: str = "alice") -> httpx.Response:
    return httpx.get(f"{platform.http}{path}", headers=platform.headers(user), timeout=60)


def _datagen(platform: Platform, **body: Any) -> tuple[str, dict[str, Any]]:
    resp = platform.train(
        "nlp-datagen",
        {"model_name": unique_name("gen"), "task_prompt": "find contact details", **body},
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    return model_id, platform.wait_final(model_id)


def _generated(platform: Platform, model_id: str) -> dict[str, list[list[str]]]:
    resp = _get(platform, f"/api/v2/model/{model_id}/generated-data")
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as archive:
        assert archive.namelist() == ["MANIFEST.json", "test.csv", "train.csv"]
        return {
            name: list(csv.reader(io.StringIO(archive.read(name).decode())))
            for name in ("train.csv", "test.csv")
        }


def _tags(platform: Platform, model_id: str, query: str) -> list[str]:
    resp = _post(platform, f"/api/v2/model/{model_id}/predict", {"query": query})
    assert resp.status_code == 200, resp.text
    tags: list[str] = resp.json()["predictions"][0]["predicted_tags"]
    return tags


# ---- the offline provider ------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_model(offline: Platform) -> str:
    model_id, status = _datagen(
        offline, token_options=TOKEN_OPTIONS, test_size=0.2, train_options={"epochs": 40}
    )
    assert status["status"] == "complete", status
    return model_id


def test_offline_token_datagen_completes_keeps_its_data_and_predicts(
    offline: Platform, token_model: str
) -> None:
    status = offline.status(token_model)
    assert status["warnings"][0].startswith("the training data was generated by the offline")
    assert "no OpenAI API key is configured" in status["warnings"][0]
    info = _get(offline, f"/api/v2/model/{token_model}").json()
    assert info["type"] == "nlp-token" and info["origin"] == "nlp-datagen"
    assert info["attributes"]["datagen"]["provider"] == "offline"
    data = _generated(offline, token_model)
    assert data["train.csv"][0] == ["source", "target"]
    assert len(data["train.csv"]) - 1 == 160 and len(data["test.csv"]) - 1 == 40
    for source, target in data["train.csv"][1:]:
        assert len(source.split()) == len(target.split())
        assert set(target.split()) <= {"NAME", "PHONE", "O"}
    assert _tags(offline, token_model, "call Grace Hopper at 555-0123") == [
        "O",
        "NAME",
        "NAME",
        "O",
        "PHONE",
    ]
    report = _get(offline, f"/api/v2/train/{token_model}/report").json()
    assert report["evaluated_on"] == "test_files"
    # Another user sees neither the model nor its data.
    assert _get(offline, f"/api/v2/model/{token_model}/generated-data", "bob").status_code == 403


def test_datagen_continues_a_base_model_with_a_new_tag(offline: Platform, token_model: str) -> None:
    model_id, status = _datagen(
        offline,
        base_model_id=token_model,
        token_options={
            "tags": [{"name": "EMAIL", "description": "an email address"}],
            "num_sentences_to_generate": 60,
        },
        train_options={"epochs": 40},
    )
    assert status["status"] == "complete", status
    info = _get(offline, f"/api/v2/model/{model_id}").json()
    assert info["base_model_id"] == token_model and info["type"] == "nlp-token"
    report = _get(offline, f"/api/v2/train/{model_id}/report").json()
    assert {"NAME", "PHONE", "EMAIL"} <= set(report["after_train_metrics"])
    tags = _tags(offline, model_id, "call Grace Hopper at 555-0123 or mail ann@example.org")
    assert tags[1:3] == ["NAME", "NAME"] and tags[-1] == "EMAIL", tags
    # A text model cannot be the base of a token model.
    text_id, _ = _datagen(offline, text_options=TEXT_OPTIONS, llm_provider="offline")
    resp = offline.train(
        "nlp-datagen",
        {
            "model_name": unique_name("gen"),
            "task_prompt": "t",
            "base_model_id": text_id,
            "token_options": {"tags": [{"name": "EMAIL"}]},
        },
    )
    assert resp.status_code == 422, resp.text
    assert "is a nlp-text model, not a nlp-token model" in resp.json()["message"]


def test_offline_text_datagen_completes_and_predicts(offline: Platform) -> None:
    model_id, status = _datagen(offline, text_options=TEXT_OPTIONS, llm_provider="offline")
    assert status["status"] == "complete", status
    info = _get(offline, f"/api/v2/model/{model_id}").json()
    assert info["type"] == "nlp-text" and info["origin"] == "nlp-datagen"
    data = _generated(offline, model_id)
    assert data["train.csv"][0] == ["text", "label"]
    assert len(data["train.csv"]) - 1 == 72 and len(data["test.csv"]) - 1 == 8
    assert {row[1] for row in data["train.csv"][1:]} == {"billing", "shipping"}
    resp = _post(
        offline,
        f"/api/v2/model/{model_id}/predict",
        {"queries": ["I was charged twice", "my parcel never arrived"]},
    )
    assert resp.status_code == 200, resp.text
    assert [p["predicted_classes"][0][0] for p in resp.json()["predictions"]] == [
        "billing",
        "shipping",
    ]


def test_datagen_requests_are_validated(offline: Platform) -> None:
    resp = offline.train(
        "nlp-datagen",
        {
            "model_name": unique_name("bad"),
            "task_prompt": "t" * 10_001,
            "llm_provider": "anthropic",
            "token_options": {
                "tags": [{"name": "O", "examples": ["x" * 1001]}],
                "samples": [{"tokens": ["a"], "tags": ["CITY"]}],
            },
        },
    )
    assert resp.status_code == 422, resp.text
    message = resp.json()["message"]
    assert "may not use 'O'" in message
    assert (
        "token_options.samples[0].tags uses tags that are not in token_options.tags: 'CITY'"
        in message
    )
    assert "llm_provider 'anthropic' is not one of openai, offline" in message
    assert "task_prompt must be at most 10000 characters" in message
    assert "token_options.tags[0].examples may hold at most 100 examples" in message


# ---- token feedback and nlp-token-retrain ----------------------------------------------------


def test_token_feedback_is_validated(offline: Platform, token_model: str) -> None:
    path = f"/api/v2/model/{token_model}/feedback"
    resp = _post(offline, path, {"tokens": ["a", "b"], "tags": ["O"]})
    assert resp.status_code == 422, resp.text
    assert "one tag per token: 2 tokens and 1 tags" in resp.text
    resp = _post(offline, path, {"tokens": ["a", "b"], "tags": ["CITY", "B-NAME"]})
    assert resp.status_code == 422, resp.text
    assert "tags 'CITY' are not tags of model" in resp.json()["message"]
    resp = _post(offline, path, {"tokens": ["a b"], "tags": ["O"]})
    assert resp.status_code == 422 and "without whitespace" in resp.text
    assert _post(offline, path, {"tokens": ["x"], "tags": ["O"]}, "bob").status_code == 403
    text_model, _ = _datagen(offline, text_options=TEXT_OPTIONS, llm_provider="offline")
    resp = _post(offline, f"/api/v2/model/{text_model}/feedback", {"tokens": ["x"], "tags": ["O"]})
    assert resp.status_code == 422 and "token feedback is for nlp-token models" in resp.text


def test_retrain_without_feedback_is_422(offline: Platform) -> None:
    model_id, status = _datagen(
        offline, token_options={**TOKEN_OPTIONS, "num_sentences_to_generate": 40}
    )
    assert status["status"] == "complete", status
    resp = offline.train(
        "nlp-token-retrain", {"model_name": unique_name("re"), "base_model_id": model_id}
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["message"] == (
        f"{PREFIX}base model {model_id!r} has no feedback; give corrected tags with POST "
        f"/api/v2/model/{model_id}/feedback first"
    )


def test_retrain_moves_a_prediction_toward_the_feedback(
    offline: Platform, token_model: str
) -> None:
    sentence = ["dial", "extension", "nine", "please"]
    corrected = ["O", "O", "PHONE", "O"]
    before = _tags(offline, token_model, " ".join(sentence))
    assert before[2] != "PHONE", before  # the base model gets it wrong: something to correct
    resp = _post(
        offline, f"/api/v2/model/{token_model}/feedback", {"tokens": sentence, "tags": corrected}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["feedback_count"] >= 1
    resp = offline.train(
        "nlp-token-retrain",
        {
            "model_name": unique_name("re"),
            "base_model_id": token_model,
            "llm_provider": "offline",
            "test_size": 0.0,
            "train_options": {"epochs": 40},
        },
    )
    assert resp.status_code == 200, resp.text
    new_id = resp.json()["model_id"]
    status = offline.wait_final(new_id)
    assert status["status"] == "complete", status
    info = _get(offline, f"/api/v2/model/{new_id}").json()
    assert info["origin"] == "nlp-token-retrain" and info["base_model_id"] == token_model
    assert info["attributes"]["feedback"]["sentences"] >= 1
    assert info["attributes"]["datagen"]["rows"] == 20  # retrain_generated_sentences
    assert _tags(offline, new_id, " ".join(sentence)) == corrected
    # The base model is unchanged, and the new model still knows what the base knew.
    assert _tags(offline, token_model, " ".join(sentence)) == before
    assert _tags(offline, new_id, "call Grace Hopper at 555-0123")[1:3] == ["NAME", "NAME"]
    data = _generated(offline, new_id)
    assert [" ".join(sentence), " ".join(corrected)] in data["train.csv"]


# ---- the openai provider -------------------------------------------------------------------


def test_openai_token_datagen_completes(online: Platform, provider: OpenAIServer) -> None:
    provider.chat = token_reply
    model_id, status = _datagen(
        online, token_options={**TOKEN_OPTIONS, "num_sentences_to_generate": 60}, test_size=0.1
    )
    assert status["status"] == "complete", status
    assert status["warnings"][0] == (
        "the training data was generated by openai (model gpt-test): 60 rows"
    )
    chats = [r for r in provider.requests if r.path == "/v1/chat/completions"]
    assert chats and chats[-1].body["model"] == "gpt-test"
    data = _generated(online, model_id)
    assert len(data["train.csv"]) - 1 == 54 and len(data["test.csv"]) - 1 == 6
    info = _get(online, f"/api/v2/model/{model_id}").json()
    assert info["attributes"]["datagen"]["provider"] == "openai"
    assert _tags(online, model_id, "ring Bo Li on 555-0177") == ["O", "NAME", "NAME", "O", "PHONE"]


def test_openai_retrain_adds_generated_sentences(online: Platform, provider: OpenAIServer) -> None:
    provider.chat = token_reply
    base, status = _datagen(
        online, token_options={**TOKEN_OPTIONS, "num_sentences_to_generate": 30}
    )
    assert status["status"] == "complete", status
    feedback = {"tokens": ["ring", "Zed", "now"], "tags": ["O", "NAME", "O"]}
    assert _post(online, f"/api/v2/model/{base}/feedback", feedback).status_code == 200
    before = len(provider.requests)
    resp = online.train(
        "nlp-token-retrain",
        {"model_name": unique_name("re"), "base_model_id": base, "llm_provider": "openai"},
    )
    assert resp.status_code == 200, resp.text
    status = online.wait_final(resp.json()["model_id"])
    assert status["status"] == "complete", status
    assert status["warnings"][0].startswith("the training data was generated by openai")
    asked = [r.body for r in provider.requests[before:] if r.path == "/v1/chat/completions"]
    # The prompt shows the feedback sentence as a sample.
    assert asked and '"Zed"' in asked[0]["messages"][1]["content"]


def test_openai_text_datagen_completes(online: Platform, provider: OpenAIServer) -> None:
    provider.chat = text_reply
    model_id, status = _datagen(online, text_options={**TEXT_OPTIONS, "samples_per_label": 20})
    assert status["status"] == "complete", status
    data = _generated(online, model_id)
    assert len(data["train.csv"]) + len(data["test.csv"]) - 2 == 40
    assert ["billing text 3", "billing"] in data["train.csv"] + data["test.csv"]


def test_a_provider_refusal_fails_the_training_with_its_reason(
    online: Platform, provider: OpenAIServer
) -> None:
    provider.chat_error = ApiError(
        403, "Project does not have access to model gpt-test", "invalid_request_error"
    )
    try:
        _, status = _datagen(online, text_options=TEXT_OPTIONS)
    finally:
        provider.chat_error = None
    assert status["status"] == "failed", status
    assert status["errors"] == [
        "the openai provider refused the request (403): Project does not have access to model "
        "gpt-test; the key has no access to this model or API"
    ]


def test_the_openai_key_comes_from_settings_or_openai_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trainyard.orchestrator.settings import OrchestratorSettings

    monkeypatch.delenv("TRAINYARD_ORCHESTRATOR_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert OrchestratorSettings().llm_platform() == {}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    llm = OrchestratorSettings().llm_platform()
    assert llm["api_key"] == "sk-from-env" and llm["model"] == "gpt-4o-mini"
    monkeypatch.setenv("TRAINYARD_ORCHESTRATOR_OPENAI_API_KEY", "sk-own")
    assert OrchestratorSettings().llm_platform()["api_key"] == "sk-own"
    # The key never shows in the settings' text.
    assert "sk-own" not in repr(OrchestratorSettings())
