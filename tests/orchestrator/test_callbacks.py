"""The job-side callbacks (`update-status`, `log`) as a trainer uses them: with its own job
token only, never for another model, and never changing a training that has ended."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.platform import Platform, start_platform, unique_name


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = start_platform(tmp_path_factory.mktemp("callbacks"))
    try:
        yield p
    finally:
        p.harness.close()


def _model(platform: Platform) -> str:
    """An ndb training that fails: its one file is of no type NDB reads (nothing indexed)."""
    upload = platform.upload([("doc.bin", b"text")])
    resp = platform.train(
        "ndb",
        {
            "model_name": unique_name(),
            "data": {"unsupervised_files": [{"location": "upload", "path": upload}]},
        },
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    return model_id


def _update(platform: Platform, token_model: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{platform.http}/api/v2/train/update-status",
        headers=platform.harness.job_headers(token_model),
        json=body,
    )


def test_user_tokens_cannot_call_back(platform: Platform) -> None:
    model_id = _model(platform)
    for method, path, body in [
        ("POST", "update-status", {"status": "complete"}),
        ("POST", "log", {"level": "error", "message": "x"}),
        ("GET", "log", {"level": "error", "message": "x"}),
    ]:
        resp = httpx.request(
            method, f"{platform.http}/api/v2/train/{path}", headers=platform.headers(), json=body
        )
        assert resp.status_code == 403, (method, path, resp.text)
    assert platform.status(model_id)["status"] != "complete"


def test_an_ended_training_keeps_its_final_status(platform: Platform) -> None:
    model_id = _model(platform)
    final = platform.wait_final(model_id)
    assert final["status"] == "failed"
    again = _update(platform, model_id, {"status": "failed"})
    assert again.status_code == 200, again.text  # the same final status again is idempotent
    flip = _update(platform, model_id, {"status": "complete"})
    assert flip.status_code == 422, flip.text
    assert "already ended" in flip.json()["message"]
    assert platform.status(model_id)["status"] == "failed"


def test_a_job_token_reaches_only_the_model_it_names(platform: Platform) -> None:
    first, second = _model(platform), _model(platform)
    platform.wait_final(first)
    platform.wait_final(second)
    note = httpx.post(
        f"{platform.http}/api/v2/train/log",
        headers=platform.harness.job_headers(second),
        json={"level": "warning", "message": "only on the second"},
    )
    assert note.status_code == 200, note.text
    assert "only on the second" in platform.status(second)["warnings"]
    assert "only on the second" not in platform.status(first)["warnings"]
