"""The nlp-text trainer: its ML code on small hand-written data, its readers on hostile inputs,
its artifact as untrusted data, and the program end to end against an orchestrator double."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import docx
import numpy as np
import pytest

from tests.support.train_service import RecordingTrainService, serve
from trainyard.blobs import LocalBlobStorage
from trainyard.trainers.nlp_text import inference
from trainyard.trainers.nlp_text.config import TextConfig
from trainyard.trainers.nlp_text.model import TextModel
from trainyard.trainers.nlp_text.reading import (
    CsvSource,
    DataError,
    Example,
    cache_documents,
    extract_text,
)
from trainyard.trainers.nlp_text.training import TrainParams, train
from trainyard.workload import Artifacts, ConfigError, InputFile

# Written for these tests only: two topics with distinct vocabularies.
SPORT = [
    "the striker scored a late goal in the football match",
    "our team won the league after a penalty shootout",
    "the goalkeeper saved the penalty and the crowd cheered",
    "a hat trick from the striker sealed the match",
    "the coach praised the defence after the league win",
    "fans filled the stadium for the cup final match",
]
COOKING = [
    "simmer the tomato sauce with garlic and fresh basil",
    "bake the bread until the crust is golden brown",
    "whisk the eggs with sugar and fold in the flour",
    "roast the vegetables with olive oil and rosemary",
    "season the soup with salt pepper and a little cream",
    "knead the dough and let it rise before you bake",
]
ROWS = [(t, "sport") for t in SPORT] + [(t, "cooking") for t in COOKING]


def examples(rows: list[tuple[str, str]]) -> list[Example]:
    return [Example(t, label, f"row {i}") for i, (t, label) in enumerate(rows)]


def params(**kw: Any) -> TrainParams:
    base: dict[str, Any] = {
        "epochs": 30,
        "learning_rate": 0.01,
        "batch_size": 4,
        "max_in_memory_batches": 10,
        "n_target_classes": 2,
    }
    return TrainParams(**{**base, **kw})


def write_csv(path: Path, rows: list[tuple[str, str]], delimiter: str = ",") -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def test_a_model_trained_in_memory_separates_the_topics_and_reports_metrics() -> None:
    result = train(examples(ROWS * 3), examples(ROWS), params())
    assert (result.report["mode"], result.report["solver"]) == ("in_memory", "nb-svm")
    assert result.report["accuracy"] == 1.0
    assert result.report["macro_f1"] == 1.0
    assert result.report["per_class"]["sport"]["support"] == len(SPORT)
    assert result.report["confusion_matrix"] == {
        "labels": ["cooking", "sport"],
        "matrix": [[6, 0], [0, 6]],
    }
    probs = result.model.predict_proba(["the striker and the goal", "bake with garlic"])
    assert list(np.argmax(probs, 1)) == [1, 0]
    assert np.allclose(probs.sum(1), 1.0)


def test_data_larger_than_the_memory_budget_is_streamed_over_several_passes() -> None:
    # 36 rows, 2 batches of 4 in memory: the data is read again for every epoch.
    result = train(examples(ROWS * 3), None, params(max_in_memory_batches=2))
    assert (result.report["mode"], result.report["solver"]) == ("streaming", "adam")
    assert len(result.report["epoch_losses"]) == 30
    assert result.report["epoch_losses"][-1] < result.report["epoch_losses"][0]
    assert "accuracy" not in result.report and result.report["training_rows"] == 36
    got = inference.load(result.model.to_files()).predict(["the goalkeeper and the crowd"], 1)
    assert got[0]["predicted_classes"][0][0] == "sport"


def test_test_split_holds_out_the_same_rows_on_every_pass() -> None:
    result = train(examples(ROWS * 10), None, params(test_split=0.25, max_in_memory_batches=3))
    held = result.report["held_out_rows"]
    assert result.report["test_rows"] == held and 0 < held < 120
    assert result.report["training_rows"] + held == 120


def test_more_labels_than_n_target_classes_fail_naming_the_row() -> None:
    rows = [*ROWS, ("a completely different topic", "politics")]
    with pytest.raises(DataError, match=r"row 12: label 'politics' .* n_target_classes \(2\)"):
        train(examples(rows), None, params())


def test_predictions_survive_the_artifact_round_trip_exactly() -> None:
    model = train(examples(ROWS), None, params(epochs=5)).model
    queries = ["the match and the goal", "garlic bread", "nothing in common", ""]
    predictor = inference.load(model.to_files())
    got = predictor.predict(queries, top_k=5)
    expected = model.predict_proba(queries)
    for q, item, row in zip(queries, got, expected, strict=True):
        assert item["query"] == q
        assert [c[1] for c in item["predicted_classes"]] == sorted(row.tolist(), reverse=True)
        assert {c[0]: c[1] for c in item["predicted_classes"]} == dict(
            zip(model.labels, row.tolist(), strict=True)
        )
    assert [len(i["predicted_classes"]) for i in predictor.predict(queries, 1)] == [1, 1, 1, 1]
    assert predictor.nbytes > 0


def test_a_base_model_is_continued_with_an_added_label() -> None:
    base = train(examples(ROWS), None, params()).model
    weights = base.weights.copy()
    travel = [("the flight landed at the airport late", "travel")] * 6
    more = train(
        examples(travel + ROWS),
        None,
        params(n_target_classes=3),
        base=TextModel.from_files(base.to_files()),
    )
    assert more.model.labels == ["cooking", "sport", "travel"]
    assert more.model.n_docs == base.n_docs + 18
    assert not np.array_equal(more.model.weights[:, :2], weights)
    probs = more.model.predict_proba(["the flight to the airport"])
    assert more.model.labels[int(np.argmax(probs))] == "travel"


def npy(array: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("weights.npy", npy(np.zeros((3, 2), np.float32)), "expected shape"),
        ("bias.npy", npy(np.array([{"x": 1}, None], dtype=object)), "expected <f4"),
        ("weight_rows.npy", None, "declared shape"),  # a header claiming a huge array
        ("weight_rows.npy", npy(np.array([5, 3], np.int32)), "increasing"),
        ("bias.npy", npy(np.array([np.nan, 0], np.float32)), "not finite"),
        ("model.json", b"{not json", "not JSON"),
        (
            "model.json",
            json.dumps({"format": 1, "kind": "nlp-text", "labels": ["a", "a"]}).encode(),
            "distinct",
        ),
        ("doc_freq.npy", b"\x93NUMPY garbage", "not a NumPy array"),
    ],
)
def test_a_corrupt_or_malicious_artifact_is_refused(
    file: str, content: bytes | None, message: str
) -> None:
    files = train(examples(ROWS), None, params(epochs=1)).model.to_files()
    if content is None:
        header = "{'descr': '<i4', 'fortran_order': False, 'shape': (100000000000,), }"
        content = (
            b"\x93NUMPY\x01\x00"
            + len(header + "\n").to_bytes(2, "little")
            + header.encode()
            + b"\n"
        )
    files[file] = content
    with pytest.raises(ValueError, match=message):
        inference.load(files)
    del files[file]
    with pytest.raises(ValueError, match="lacks"):
        inference.load(files)


def test_csv_reading_handles_delimiters_quotes_crlf_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(
        '\ufefftext;label;extra\r\n"a quoted; multi\r\nline text";sport;x\r\n'
        "plain text;cooking;y\r\n;cooking;z\r\nshort\r\n".encode()
    )
    source = CsvSource([InputFile(path, "data.csv", path.as_uri())], "text", "label", ";")
    got = list(source)
    assert [(e.text, e.label) for e in got] == [
        ("a quoted; multi\r\nline text", "sport"),
        ("plain text", "cooking"),
    ]
    assert source.skipped.rows == 2
    assert "data.csv row 5" in source.skipped.reasons[0]


def test_a_missing_column_names_the_file_and_the_columns_there(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ROWS)
    source = CsvSource([InputFile(path, "train.csv", path.as_uri())], "body", "label", ",")
    with pytest.raises(DataError, match=r"train.csv: no column 'body' .*'text', 'label'"):
        list(source)


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def test_documents_in_category_folders_and_zips_become_examples(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sport").mkdir(parents=True)
    (folder / "cooking").mkdir()
    (folder / "sport" / "a.txt").write_text(SPORT[0])
    (folder / "sport" / "b.html").write_text(
        f"<html><script>var x = 'recipe';</script><body><p>{SPORT[1]}</p></body></html>"
    )
    (folder / "cooking" / "c.docx").write_bytes(docx_bytes(COOKING[0]))
    (folder / "cooking" / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a pdf")
    (folder / "cooking" / "d.exe").write_bytes(b"MZ")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("cooking/e.txt", COOKING[1])
        z.writestr("../escape/f.txt", "path trick")
        z.writestr("/abs/g.txt", "absolute")
    files = [
        InputFile(folder / "sport" / "a.txt", "sport/a.txt", ""),
        InputFile(folder / "sport" / "b.html", "sport/b.html", ""),
        InputFile(folder / "cooking" / "c.docx", "cooking/c.docx", ""),
        InputFile(folder / "cooking" / "broken.pdf", "cooking/broken.pdf", ""),
        InputFile(folder / "cooking" / "d.exe", "cooking/d.exe", ""),
        InputFile(archive, "more.zip", ""),
    ]
    warnings: list[str] = []
    source = cache_documents(files, tmp_path / "cache.jsonl", warnings.append)
    got = [(e.label, e.text.strip(), e.where) for e in source]
    assert got == [
        ("sport", SPORT[0], "sport/a.txt"),
        ("sport", SPORT[1], "sport/b.html"),
        ("cooking", COOKING[0], "cooking/c.docx"),
        ("cooking", COOKING[1], "cooking/e.txt"),
    ]
    assert source.skipped.documents == 4
    assert len(warnings) == 1 and warnings[0].startswith("skipped 4 document(s)")


def test_a_zip_over_its_caps_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("sport/zeros.txt", b"\0" * 1_000_000)
        z.writestr("sport/b.txt", "b")
    files = [InputFile(archive, "bomb.zip", "")]
    with pytest.raises(DataError, match="unpacks to 1000001 bytes"):
        cache_documents(files, tmp_path / "c.jsonl", print, max_zip_bytes=100_000)
    with pytest.raises(DataError, match="more than 1 members"):
        cache_documents(files, tmp_path / "c.jsonl", print, max_zip_members=1)


def test_extract_text_of_html_skips_scripts() -> None:
    assert extract_text(b"<p>a &amp; b</p><style>x{}</style>", ".html") == "a & b"


def test_the_config_lists_every_problem_and_ignores_unknown_keys() -> None:
    with pytest.raises(ConfigError) as err:
        TextConfig.parse(
            {
                "model_id": "m",
                "supervised_files": [],
                "train_options": {"epochs": 0, "test_split": 1},
                "model_options": {"delimiter": ";;"},
                "whatever": 1,
            },
            {},
        )
    assert str(err.value) == (
        "supervised_files must name at least one file; model_options.text_column is required "
        "(unless doc_classification); model_options.label_column is required (unless "
        "doc_classification); model_options.delimiter must be one character (not a quote or "
        "newline); model_options.n_target_classes is required; epochs must be from 1 to 1000; "
        "test_split must be a number in [0, 1)"
    )
    ok = TextConfig.parse(
        {
            "model_id": "m",
            "supervised_files": ["file:///x"],
            "doc_classification": True,
            "model_options": {"n_target_classes": 3},
            "future_key": {},
        },
        {},
    )
    assert (ok.epochs, ok.learning_rate, ok.batch_size, ok.max_in_memory_batches) == (
        5,
        0.0001,
        1000,
        20,
    )


# ---- the program ---------------------------------------------------------------------------

PROG = [sys.executable, "-m", "trainyard.trainers.nlp_text"]


async def run_trainer(config: dict[str, Any], tmp: Path) -> tuple[int, str, RecordingTrainService]:
    servicer = RecordingTrainService()  # type: ignore[abstract]  # see tests/support/train_service.py
    server, address = await serve(servicer)
    path = tmp / f"config-{config.get('model_id')}.json"
    path.write_text(json.dumps(config))
    env = {
        "PATH": os.environ["PATH"],
        "TRAINYARD_CONFIG": str(path),
        "TRAINYARD_ORCHESTRATOR_ADDRESS": address,
        "TRAINYARD_JOB_TOKEN": "tok",
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            *PROG, cwd=tmp, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await server.stop(0)
    assert proc.returncode is not None
    return proc.returncode, err.decode(), servicer


async def test_the_trainer_writes_a_model_and_a_report_and_continues_from_it(
    tmp_path: Path,
) -> None:
    train_csv = write_csv(tmp_path / "train.csv", ROWS * 4, delimiter="\t")
    test_csv = write_csv(tmp_path / "test.csv", ROWS, delimiter="\t")
    arts = tmp_path / "arts"
    config: dict[str, Any] = {
        "model_id": "m-1",
        "supervised_files": [train_csv.as_uri()],
        "test_files": [test_csv.as_uri()],
        "train_options": {"epochs": 20, "learning_rate": 0.005, "batch_size": 8},
        "model_options": {
            "text_column": "text",
            "label_column": "label",
            "n_target_classes": 2,
            "delimiter": "\t",
        },
        "doc_classification": False,
        "artifacts_uri": arts.as_uri() + "/",
        "base_model": None,
        "an_unknown_key": True,
    }
    code, err, servicer = await run_trainer(config, tmp_path)
    assert code == 0, err
    statuses = [r.request.get("status") for r in servicer.received]
    assert statuses[0] == "in_progress" and statuses[-1] == "complete"
    phases = [
        r.request.get("metadata", {}).get("progress", {}).get("phase") for r in servicer.received
    ]
    assert {"reading", "training", "evaluating", "writing"} <= set(phases)
    final = servicer.received[-1].request["metadata"]
    assert final["artifact"] == (arts / "models/m-1/model/MANIFEST.json").as_uri()

    storage = LocalBlobStorage(arts)
    await storage.start()
    artifacts = Artifacts(storage, "models/m-1/")
    report = json.loads(await artifacts.read_bytes("report", "report.json"))
    assert report["accuracy"] == 1.0 and report["test_rows"] == 12
    assert report["training_rows"] == 48 and report["label_counts"] == {"cooking": 24, "sport": 24}
    assert report["artifact_version"] == final["artifact_version"]
    manifest = await artifacts.manifest("model")
    files = {f.path: await artifacts.read_bytes("model", f.path) for f in manifest.files}
    got = inference.load(files).predict(["the striker scored"], 2)
    assert got[0]["predicted_classes"][0][0] == "sport"

    # Continue from it with a new label; n_target_classes 2 is now too few.
    more = write_csv(
        tmp_path / "more.csv", [("the flight landed at the airport", "travel")] * 8, delimiter="\t"
    )
    config2 = {
        **config,
        "model_id": "m-2",
        "supervised_files": [more.as_uri()],
        "test_files": [],
        "base_model": {"model_id": "m-1", "artifacts_uri": arts.as_uri() + "/"},
    }
    code, err, servicer = await run_trainer(config2, tmp_path)
    assert code == 1
    assert "more distinct labels than n_target_classes (2)" in err
    logged = [r.request for r in servicer.received if r.method == "LogTrainMessage"]
    assert logged[-1]["level"] == "error" and "more.csv row 2" in logged[-1]["message"]
    assert servicer.received[-1].request["status"] == "failed"

    config2["model_options"] = {**config["model_options"], "n_target_classes": 3}
    code, err, _ = await run_trainer(config2, tmp_path)
    assert code == 0, err
    report2 = json.loads(
        await Artifacts(storage, "models/m-2/").read_bytes("report", "report.json")
    )
    assert report2["labels"] == ["cooking", "sport", "travel"]
    assert report2["base_model_id"] == "m-1" and "accuracy" not in report2
    await storage.close()


async def test_the_trainer_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    code, err, servicer = await run_trainer({"model_id": "m", "supervised_files": "x"}, tmp_path)
    assert code == 2
    assert "bad config: supervised_files must be a list of URIs" in err
    assert servicer.received == []


async def test_the_trainer_classifies_documents_of_a_zip_and_warns_of_skipped_ones(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i, (text, label) in enumerate(ROWS):
            z.writestr(f"{label}/{i}.txt", text)
        z.writestr("sport/broken.docx", b"PK not really a docx")
    arts = tmp_path / "arts"
    config = {
        "model_id": "docs",
        "supervised_files": [archive.as_uri()],
        "doc_classification": True,
        "model_options": {"n_target_classes": 2},
        "artifacts_uri": arts.as_uri() + "/",
    }
    code, err, servicer = await run_trainer(config, tmp_path)
    assert code == 0, err
    warned = [r.request["message"] for r in servicer.received if r.method == "LogTrainMessage"]
    assert len(warned) == 1 and warned[0].startswith("skipped 1 document(s)")
    assert "sport/broken.docx: cannot be parsed" in warned[0]
    storage = LocalBlobStorage(arts)
    await storage.start()
    report = json.loads(
        await Artifacts(storage, "models/docs/").read_bytes("report", "report.json")
    )
    await storage.close()
    assert report["label_counts"] == {"cooking": 6, "sport": 6}
    assert report["skipped"]["documents"] == 1 and "macro_f1" not in report
