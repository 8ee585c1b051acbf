"""The generated OpenAPI document is a valid OpenAPI 3 document that lists every documented REST
row (the same table the route tests drive through Envoy)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from openapi_spec_validator import validate

from tests.test_rest_routes import ROWS

DOC = json.loads((Path(__file__).parent.parent / "openapi" / "trainyard.json").read_text())


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path) is not None


def test_document_is_valid_openapi() -> None:
    validate(DOC)


def test_every_documented_row_is_described() -> None:
    missing = []
    for row in ROWS:
        path = row.path.split("?", 1)[0]
        found = [t for t in DOC["paths"] if _matches(t, path)]
        if not found or not any(row.method.lower() in DOC["paths"][t] for t in found):
            missing.append(row.id)
    for extra in (
        "/api/v2/train/upload-data",
        "/connect/token",
        "/sestekai-api/api/external/trainings/train",
    ):
        if "post" not in DOC["paths"].get(extra, {}):
            missing.append(f"POST {extra}")
    assert not missing


def test_auth_and_streams_are_described() -> None:
    paths = DOC["paths"]
    assert "security" not in paths["/connect/token"]["post"]
    assert paths["/training-jobs"]["get"]["security"] == [{"bearer": []}]
    assert "job tokens" in paths["/api/v2/train/update-status"]["post"]["description"]
    follow = paths["/training-jobs/{name}/logs/follow"]["get"]["responses"]["200"]
    assert "text/event-stream" in follow["content"]
    upload = paths["/api/v2/train/upload-data"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload


def test_the_document_says_what_the_server_enforces() -> None:
    paths = DOC["paths"]
    create = paths["/training-jobs"]["post"]
    params = {p["name"]: p for p in create["parameters"]}
    assert params["pipeline"]["required"] is True
    assert "required" not in params["pipeline_step"]
    for path in ("/training-jobs", "/api/v2/train/uploads"):
        (size,) = [p for p in paths[path]["get"]["parameters"] if p["name"] == "page_size"]
        assert size["schema"]["minimum"] == 0
    schemas = DOC["components"]["schemas"]
    assert (
        schemas["trainyard.api.orchestrator.v1.UpdateTrainStatusRequest"]["additionalProperties"]
        is False
    )
    # Free-form bodies (hyperparameters) stay open.
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is True

    def statuses(path: str, verb: str) -> set[str]:
        return set(paths[path][verb]["responses"]) - {"default", "200"}

    edge = {"400", "414", "431"}
    assert statuses("/training-jobs", "post") == edge | {"401", "403", "404", "413"}
    assert statuses("/training-jobs", "get") == edge | {"401", "403"}
    assert statuses("/connect/token", "post") == edge | {"401", "413", "429"}
    assert "Retry-After" in paths["/connect/token"]["post"]["responses"]["429"]["headers"]
    assert statuses("/api/v2/train/update-status", "post") == edge | {
        "401",
        "403",
        "404",
        "413",
        "422",
    }
    assert "501" in statuses("/api/v1/finetunings", "post")
    # The REST statuses of the contract's options (success/validation_http_status, http_statuses).
    assert "201" in paths["/api/v1/finetunings"]["post"]["responses"]
    assert "200" not in paths["/api/v1/finetunings"]["post"]["responses"]
    assert "422" in statuses("/api/v2/train/ndb", "post")
    assert "422" not in statuses("/training-jobs", "post")
    assert {"413", "507"} <= statuses("/api/v2/train/upload-data", "post")
    train = paths["/sestekai-api/api/external/trainings/train"]["post"]["responses"]
    assert train["202"]["content"] == train["200"]["content"]
    assert "501" not in statuses("/training-jobs", "post")
    assert not any(
        "429" in op["responses"]
        for path, item in paths.items()
        for op in item.values()
        if path != "/connect/token"
    ), "429 is for the token rate limit only"
    assert "Body limit: 65536 bytes" in create["description"]
    assert "Body limit: 16384 bytes" in paths["/connect/token"]["post"]["description"]
