"""The model API (/api/v2/model/...) as its users see it through Envoy: listing (own and public,
filters, pages), one model's description, sharing, permissions, deleting, and the refusals of
download/predict/report for a model that is not complete. Predictions from trained models are
tested end to end with the trainers (tests/orchestrator/test_training_e2e.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.platform import Platform, start_platform, unique_name


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = start_platform(tmp_path_factory.mktemp("model-api"))
    try:
        yield p
    finally:
        p.harness.close()


def _ndb(platform: Platform, user: str = "alice", name: str | None = None) -> str:
    """An ndb training that fails: its one file is of no type NDB reads (nothing indexed)."""
    upload = platform.upload([("doc.bin", b"some text")], user=user)
    resp = platform.train(
        "ndb",
        {
            "model_name": name or unique_name(),
            "data": {"unsupervised_files": [{"location": "upload", "path": upload}]},
        },
        user=user,
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    return model_id


def _get(platform: Platform, path: str, user: str = "alice", **params: Any) -> httpx.Response:
    return httpx.get(
        f"{platform.http}/api/v2/model/{path}", headers=platform.headers(user), params=params
    )


def test_a_model_as_its_owner_and_others_see_it(platform: Platform) -> None:
    name = unique_name()
    model_id = _ndb(platform, name=name)
    mine = _get(platform, model_id)
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["model_id"] == model_id
    assert body["model_name"] == name
    assert body["type"] == "ndb"
    assert body["access"] == "private"
    assert body["username"] == "alice"
    assert body["train_status"] in ("starting", "in_progress", "failed", "not_started")
    assert body["publish_date"].endswith("Z")
    assert set(body["progress"]) == {"fraction", "phase"}
    assert _get(platform, model_id, user="bob").status_code == 403
    assert _get(platform, "00000000-0000-0000-0000-000000000000").status_code == 404
    perms = _get(platform, f"{model_id}/permissions").json()
    assert perms == {"read": True, "write": True, "owner": True}
    assert _get(platform, f"{model_id}/permissions", user="bob").status_code == 403


def test_sharing_is_the_owners_and_public_models_are_listed_for_all(platform: Platform) -> None:
    model_id = _ndb(platform, user="carol")
    access = f"{platform.http}/api/v2/model/{model_id}/access"
    # Another user cannot share it; a bad value is 422.
    assert (
        httpx.post(access, headers=platform.headers("dave"), json={"access": "public"}).status_code
        == 403
    )
    bad = httpx.post(access, headers=platform.headers("carol"), json={"access": "everyone"})
    assert bad.status_code == 422, bad.text
    ok = httpx.post(access, headers=platform.headers("carol"), json={"access": "public"})
    assert ok.status_code == 200, ok.text
    assert _get(platform, model_id, user="dave").json()["access"] == "public"
    perms = _get(platform, f"{model_id}/permissions", user="dave").json()
    assert perms == {"read": True, "write": False, "owner": False}
    listed = {m["model_id"] for m in _get(platform, "list", user="dave").json()["models"]}
    assert model_id in listed
    # Read access is not write access.
    delete = httpx.delete(
        f"{platform.http}/api/v2/model/{model_id}", headers=platform.headers("dave")
    )
    assert delete.status_code == 403
    back = httpx.post(access, headers=platform.headers("carol"), json={"access": "private"})
    assert back.status_code == 200
    listed = {m["model_id"] for m in _get(platform, "list", user="dave").json()["models"]}
    assert model_id not in listed


def test_the_list_pages_and_filters(platform: Platform) -> None:
    ids = [_ndb(platform, user="erin") for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        params: dict[str, Any] = {"page_size": 2}
        if token:
            params["page_token"] = token
        page = _get(platform, "list", user="erin", **params).json()
        assert len(page["models"]) <= 2
        seen += [m["model_id"] for m in page["models"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(ids))  # newest first, each once
    only_text = _get(platform, "list", user="erin", type="nlp-text").json()["models"]
    assert only_text == []
    assert _get(platform, "list", user="erin", type="bogus").status_code == 400
    assert _get(platform, "list", user="erin", page_token="garbage!").status_code == 400


def test_delete_removes_the_model(platform: Platform) -> None:
    model_id = _ndb(platform, user="frank")
    resp = httpx.delete(
        f"{platform.http}/api/v2/model/{model_id}", headers=platform.headers("frank")
    )
    assert resp.status_code == 200, resp.text
    assert _get(platform, model_id, user="frank").status_code == 404
    status = httpx.get(
        f"{platform.http}/api/v2/train/{model_id}/status", headers=platform.headers("frank")
    )
    assert status.status_code == 404


def test_a_model_that_is_not_complete_cannot_be_used(platform: Platform) -> None:
    model_id = _ndb(platform)
    platform.wait_final(model_id)
    predict = httpx.post(
        f"{platform.http}/api/v2/model/{model_id}/predict",
        headers=platform.headers(),
        json={"query": "hello"},
    )
    assert predict.status_code == 422, predict.text
    assert "not complete" in predict.json()["message"]
    download = _get(platform, f"{model_id}/download")
    assert download.status_code == 422, download.text
    report = httpx.get(
        f"{platform.http}/api/v2/train/{model_id}/report", headers=platform.headers()
    )
    assert report.status_code == 422, report.text


def test_predict_requests_are_checked(platform: Platform) -> None:
    model_id = _ndb(platform)
    url = f"{platform.http}/api/v2/model/{model_id}/predict"
    both = httpx.post(url, headers=platform.headers(), json={"query": "a", "queries": ["b"]})
    assert both.status_code == 422, both.text
    many = httpx.post(url, headers=platform.headers(), json={"queries": ["q"] * 1001})
    assert many.status_code == 422
    top = httpx.post(url, headers=platform.headers(), json={"query": "a", "top_k": 0})
    assert top.status_code == 422
    assert httpx.post(url, headers=platform.headers("bob"), json={"query": "a"}).status_code == 403


def test_stop_is_the_owners_and_refused_once_ended(platform: Platform) -> None:
    model_id = _ndb(platform)
    stop = f"{platform.http}/api/v2/train/{model_id}/stop"
    assert httpx.post(stop, headers=platform.headers("bob"), json={}).status_code == 403
    platform.wait_final(model_id)
    ended = httpx.post(stop, headers=platform.headers(), json={})
    assert ended.status_code == 422, ended.text


def test_logs_hold_one_entry_per_allocation(platform: Platform) -> None:
    model_id = _ndb(platform)
    platform.wait_final(model_id)
    resp = httpx.get(f"{platform.http}/api/v2/train/{model_id}/logs", headers=platform.headers())
    assert resp.status_code == 200, resp.text
    logs = resp.json()
    assert isinstance(logs, list) and len(logs) == 1
    assert set(logs[0]) == {"stdout", "stderr"}
    assert "nothing was indexed" in logs[0]["stderr"]
    foreign = httpx.get(
        f"{platform.http}/api/v2/train/{model_id}/logs", headers=platform.headers("bob")
    )
    assert foreign.status_code == 403
