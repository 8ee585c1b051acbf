"""NDB end to end through Envoy: upload pdf, docx, html, csv and txt files (and one NDB cannot
read), POST /api/v2/train/ndb with per-file options and metadata and a supervised file, reach
`complete`, read the report (documents, warnings, recall@1/@5 before and after); then a model
from it as base with deletions. The model artifact is downloaded and searched with the library
(ndb-api's tests search it through REST)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.documents import docx_bytes, pdf_bytes
from tests.support.platform import Platform, as_nobody, start_platform, unique_name
from trainyard.trainers.ndb import NdbModel, load_model

PAIRS = [
    ("money back guarantee", "refunds.txt"),
    ("get my money back", "refunds.txt"),
    ("money back after a month", "refunds.txt"),
    ("locked out of my profile", "P-2"),
    ("locked out cannot sign in", "P-2"),
    ("profile locked out help", "P-2"),
    ("broken blade repair", "manual.pdf"),
    ("blade broken who fixes", "manual.pdf"),
    ("broken blade replacement", "manual.pdf"),
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # As root (CI), the trainers run as nobody: they reach their data only through the API.
    where, how = as_nobody(tmp_path_factory.mktemp("ndb-e2e"))
    p = start_platform(where, **how)
    try:
        yield p
    finally:
        p.harness.close()


def _get(platform: Platform, path: str) -> httpx.Response:
    return httpx.get(f"{platform.http}{path}", headers=platform.headers(), timeout=60)


def _download(platform: Platform, model_id: str, dest: Path) -> NdbModel:
    resp = _get(platform, f"/api/v2/model/{model_id}/download")
    assert resp.status_code == 200, resp.text[:200]
    with zipfile.ZipFile(io.BytesIO(resp.content)) as archive:
        for name in archive.namelist():
            if name != "MANIFEST.json":
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_bytes(archive.read(name))
    return load_model(dest)


def _train(platform: Platform, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    resp = platform.train("ndb", body)
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    status = platform.wait_final(model_id)
    assert status["status"] == "complete", status
    return model_id, status


def test_ndb_trains_from_every_file_type_and_reports_recall(
    platform: Platform, tmp_path: Path
) -> None:
    docs = platform.upload(
        [
            ("manual.pdf", pdf_bytes("The turbine blade pitch is set by the hub motor")),
            ("memo.docx", docx_bytes("Budget for the lighthouse repairs this winter")),
            (
                "page.html",
                b"<html><script>var tulip;</script><body><p>Roses grow in clay soil</p></body>"
                b"</html>",
            ),
            ("refunds.txt", b"Refund policy: return a product within thirty days for the price"),
            ("image.png", b"\x89PNG\r\n"),
        ]
    )
    products = platform.upload(
        [
            (
                "products.csv",
                b"sku,title,body,brand\nP-1,Rain jacket,Keeps hikers dry,Peak\n"
                b"P-2,Account help,Reset the password from the login page,Shop\n",
            )
        ]
    )
    pairs = "query,id\n" + "".join(f"{q},{d}\n" for q, d in PAIRS)
    supervised = platform.upload([("pairs.csv", pairs.encode())])
    model_id, status = _train(
        platform,
        {
            "model_name": unique_name("ndb"),
            "model_options": {"in_memory": False, "advanced_search": False},
            "data": {
                "unsupervised_files": [
                    {"location": "upload", "path": docs, "metadata": {"team": "docs"}},
                    {
                        "location": "upload",
                        "path": products,
                        "options": {
                            "id_column": "sku",
                            "text_columns": ["title", "body"],
                            "metadata_columns": ["brand"],
                        },
                        "metadata": {"team": "shop"},
                    },
                ],
                "supervised_files": [{"location": "upload", "path": supervised}],
            },
            "train_options": {"test_split": 0.5},
        },
    )
    assert "Unable to parse image.png. Unsupported filetype." in status["warnings"]

    report = _get(platform, f"/api/v2/train/{model_id}/report")
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["documents"] == 6 and body["skipped_files"] == 1
    sup = body["supervised"]
    assert sup["pairs"] == len(PAIRS) and sup["held_out_pairs"] >= 1
    assert sup["test_split"] == 0.5  # train_options.test_split reached the trainer (default 0.2)
    for when in ("before", "after"):
        assert {"recall@1", "recall@5"} <= set(sup[when]), sup
    assert sup["training_after"]["recall@1"] > sup["training_before"]["recall@1"]

    model = _download(platform, model_id, tmp_path / "m")
    assert {s.doc_id: s.source for s in model.sources()} == {
        "manual.pdf": "manual.pdf",
        "memo.docx": "memo.docx",
        "page.html": "page.html",
        "refunds.txt": "refunds.txt",
        "P-1": "products.csv",
        "P-2": "products.csv",
    }
    jacket = model.search(["jacket"], 1)[0][0]
    assert (jacket.id, jacket.metadata) == ("P-1#0", {"team": "shop", "brand": "Peak"})
    assert model.search(["lighthouse"], 1)[0][0].metadata == {"team": "docs"}
    assert model.search(["money back please"], 1)[0][0].doc_id == "refunds.txt"

    # a new model from it: one more document, one deleted; the base answers as before
    extra = platform.upload([("returns.txt", b"Print the return label and drop the parcel off")])
    child_id, _ = _train(
        platform,
        {
            "model_name": unique_name("ndb-child"),
            "base_model_id": model_id,
            "data": {
                "unsupervised_files": [{"location": "upload", "path": extra}],
                "deletions": ["memo.docx"],
            },
        },
    )
    child = _download(platform, child_id, tmp_path / "child")
    docs_of_child = {s.doc_id for s in child.sources()}
    assert "returns.txt" in docs_of_child and "memo.docx" not in docs_of_child
    assert child.search(["money back please"], 1)[0][0].doc_id == "refunds.txt"
    again = _download(platform, model_id, tmp_path / "again")
    assert "memo.docx" in {s.doc_id for s in again.sources()}


def test_an_ndb_model_in_french_stems_and_drops_french_stop_words(
    platform: Platform, tmp_path: Path
) -> None:
    docs = platform.upload(
        [
            ("garantie.txt", "La garantie couvre les réparations pendant deux ans".encode()),
            ("livraison.txt", b"La livraison des colis se fait le lendemain"),
        ]
    )
    model_id, _ = _train(
        platform,
        {
            "model_name": unique_name("ndb-fr"),
            "model_options": {"language": "french"},
            "data": {"unsupervised_files": [{"location": "upload", "path": docs}]},
        },
    )
    model = _download(platform, model_id, tmp_path / "m")
    assert (model.settings.language, model.settings.stop_words) == ("french", True)
    # "réparation" finds "réparations" (the French stemmer); "de la" and "les" are not terms.
    assert model.analyzer.terms("les réparations de la garantie") == model.analyzer.terms(
        "réparation garantie"
    )
    resp = httpx.post(
        f"{platform.http}/api/v2/model/{model_id}/search",
        headers=platform.headers(),
        json={"query": "la réparation de la garantie", "top_k": 1},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["references"][0]["doc_id"] == "garantie.txt"


def test_an_unknown_ndb_language_is_422_naming_the_choices(platform: Platform) -> None:
    resp = platform.train(
        "ndb",
        {
            "model_name": unique_name("ndb-xx"),
            "model_options": {"language": "klingon"},
            "data": {"unsupervised_files": [{"location": "upload", "path": "u"}]},
        },
    )
    assert resp.status_code == 422, resp.text
    assert "model_options.language 'klingon' is not supported" in resp.text
    assert "french" in resp.text
