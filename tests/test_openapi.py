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
