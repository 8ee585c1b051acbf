"""The nlp-token trainer: its CSV reading, the CRF and its exported decoder, the artifact
checks of `inference.load`, and the trainer as a process reporting to an orchestrator double."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.train_service import RecordingTrainService, serve
from trainyard.blobs import LocalBlobStorage
from trainyard.trainers.nlp_token import inference
from trainyard.trainers.nlp_token.config import NlpTokenConfig
from trainyard.trainers.nlp_token.data import (
    DataError,
    ReadStats,
    Sentence,
    TagScheme,
    read_sentences,
)
from trainyard.trainers.nlp_token.features import MAX_TOKEN_CHARS, sentence_features, short_shape
from trainyard.trainers.nlp_token.model import CrfParams, CrfTraining, crfsuite_tags, evaluate
from trainyard.trainers.nlp_token.trainer import Progress, fit
from trainyard.workload import Artifacts, InputFile

PROG = [sys.executable, "-m", "trainyard.trainers.nlp_token"]
SCHEME = TagScheme(("PER", "LOC"), "O")

# Hand-written for these tests only: people and places in varied positions.
PEOPLE = ["Alice", "Bruno", "Chen", "Dmitri", "Esther", "Farid", "Greta", "Hiro"]
PLACES = ["Paris", "Lagos", "Osaka", "Quito", "Tallinn", "Hanoi", "Lima", "Oslo"]
TEMPLATES = [
    ("{p} lives in {l}", "PER O O LOC"),
    ("yesterday {p} flew to {l} again", "O PER O O LOC O"),
    ("the train from {l} carried {p}", "O O O LOC O PER"),
    ("{p} and {q} met in {l}", "PER O PER O O LOC"),
    ("nobody knows why it rained", "O O O O O"),
]


def sentences(offset: int = 0) -> list[Sentence]:
    out = []
    for i in range(len(PEOPLE)):
        p, q = PEOPLE[(i + offset) % 8], PEOPLE[(i + offset + 3) % 8]
        place = PLACES[(i * 3 + offset) % 8]
        for text, tags in TEMPLATES:
            out.append(Sentence(text.format(p=p, q=q, l=place).split(), tags.split()))
    return out


def write_csv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "tags")
) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_features_describe_spelling_and_context_and_bound_long_tokens() -> None:
    feats = sentence_features(["Visit", "New", "York", "2024"])
    assert "w=York" in feats[2] and "lw=york" in feats[2] and "title" in feats[2]
    assert "-1:lw=new" in feats[2] and "+1:sh=d" in feats[2] and "-2:lw=visit" in feats[2]
    assert "bi-1=new|york" in feats[2]
    assert "BOS" in feats[0] and "EOS" in feats[3] and "digit" in feats[3]
    assert short_shape("McDonald's") == "XxXx'x"
    long = sentence_features(["x" * 10_000])[0]
    assert max(len(a) for a in long) <= MAX_TOKEN_CHARS + 8


def test_reading_skips_mismatched_rows_and_maps_unknown_tags(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    raw = (
        "\ufeffid,text,tags\r\n"
        '1,"Alice , in Paris","B-PER O O B-LOC"\r\n'
        "2,Bob runs,B-PER\r\n"  # two tokens, one tag: skipped
        "3,Rome calls,B-CITY O\r\n"  # CITY is no target label: becomes O
        "4,,\r\n"
    )
    path.write_bytes(raw.encode())
    stats = ReadStats()
    scheme = TagScheme(("PER", "LOC"), "O")
    got = list(read_sentences(path, "t.csv", "text", "tags", scheme, stats))
    assert got == [
        Sentence(["Alice", ",", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"]),
        Sentence(["Rome", "calls"], ["O", "O"]),
    ]
    assert stats.warnings() == [
        "skipped 1 row(s) whose token and tag counts differ (first: t.csv row 3)",
        "1 tag(s) outside target_labels became the default tag: 'B-CITY' (1)",
    ]
    with pytest.raises(DataError, match=r"t.csv: no column 'label' in the header"):
        list(read_sentences(path, "t.csv", "text", "label", scheme, ReadStats()))


def test_plain_labels_become_spans_for_scoring() -> None:
    assert SCHEME.bio(["PER", "PER", "O", "LOC", "PER"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-PER",
    ]
    assert SCHEME.bio(["B-PER", "I-PER", "X"]) == ["B-PER", "I-PER", "O"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, inference.TokenPredictor]:
    work = tmp_path_factory.mktemp("crf")
    training = CrfTraining(CrfParams(max_iterations=60))
    for s in sentences():
        training.append(s)
    weights = training.train(work)
    predictor = inference.load(weights.files({"target_labels": ["PER", "LOC"]}))
    return work / "model.crfsuite", predictor


def test_the_exported_decoder_equals_crfsuites_tagger(
    trained: tuple[Path, inference.TokenPredictor],
) -> None:
    path, predictor = trained
    held_out = [s.tokens for s in sentences(offset=5)] + [
        ["Zanele", "visited", "Oslo", "and", "Quito"],
        ["in", "Lima", "nobody", "met", "Hiro"],
        ["single"],
    ]
    assert [predictor.tag(t) for t in held_out] == crfsuite_tags(path, held_out)
    ev = evaluate(predictor, sentences(offset=5), SCHEME)
    metrics = ev.metrics()
    assert metrics["overall"]["fmeasure"] > 0.8
    assert set(metrics) == {"PER", "LOC", "overall"}


def test_predict_aligns_one_tag_per_whitespace_token(
    trained: tuple[Path, inference.TokenPredictor],
) -> None:
    _, predictor = trained
    out = predictor.predict(["  Greta  lives in\tLima ", ""], top_k=3)
    assert out[0]["tokens"] == ["Greta", "lives", "in", "Lima"]
    assert out[0]["predicted_tags"] == ["PER", "O", "O", "LOC"]
    assert out[1] == {"query": "", "tokens": [], "predicted_tags": []}
    assert predictor.nbytes > 0


def _npy(array: Any) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    return out.getvalue()


def test_load_refuses_corrupted_or_malicious_artifacts(
    trained: tuple[Path, inference.TokenPredictor],
) -> None:
    _, predictor = trained
    good = predictor.weights.files({})
    n = len(predictor.weights.labels)

    def broken(**changes: bytes) -> dict[str, bytes]:
        return {**good, **changes}

    pickled = _npy(np.array([{"x": 1}], dtype=object))
    huge = bytearray(_npy(np.zeros(3, dtype="<f8")))
    huge[: len(huge)] = huge.replace(b"(3,)", b"(10000000000000,)", 1)
    cases = {
        "pickled array": broken(**{"state_weights.npy": pickled}),
        "pickle for JSON": broken(**{"model.json": pickle.dumps({"format": "x"})}),
        "huge declared size": broken(**{"state_weights.npy": bytes(huge)}),
        "wrong shape": broken(**{"transitions.npy": _npy(np.zeros((n, n + 1)))}),
        "wrong dtype": broken(**{"state_labels.npy": _npy(np.zeros(3, dtype="<f8"))}),
        "label out of range": broken(
            **{
                "state_labels.npy": _npy(
                    np.full(predictor.weights.state_labels.shape, n, dtype="<i4")
                )
            }
        ),
        "not finite": broken(**{"transitions.npy": _npy(np.full((n, n), np.nan))}),
        "missing file": {k: v for k, v in good.items() if k != "attributes.json"},
        "other features version": broken(
            **{
                "model.json": json.dumps(
                    {**json.loads(good["model.json"]), "features_version": 99}
                ).encode()
            }
        ),
    }
    accepted = []
    for what, files in cases.items():
        try:
            inference.load(files)
        except ValueError:
            continue
        accepted.append(what)
    assert accepted == []
    assert inference.load(good).tag(["Alice"]) == predictor.tag(["Alice"])


async def run_trainer(env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *PROG,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def rows(offset: int) -> list[tuple[str, str]]:
    return [(" ".join(s.tokens), " ".join(s.tags)) for s in sentences(offset)]


async def read_artifacts(arts: Path, model_id: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    storage = LocalBlobStorage(arts)
    await storage.start()
    artifacts = Artifacts(storage, f"models/{model_id}/")
    manifest = await artifacts.manifest("model")
    files = {f.path: await artifacts.read_bytes("model", f.path) for f in manifest.files}
    report = json.loads(await artifacts.read_bytes("report", "report.json"))
    await storage.close()
    return files, report


async def test_the_trainer_trains_reports_and_continues_from_a_base_model(tmp_path: Path) -> None:
    train, test, more = tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "more.csv"
    write_csv(train, [*rows(0), ("Alice lives", "PER"), ("Ivo visits Oslo", "PER O CITY")])
    write_csv(test, rows(5))
    write_csv(more, [(r[0], r[1].replace("LOC", "GPE")) for r in rows(2)])
    arts = tmp_path / "arts"
    servicer = RecordingTrainService()  # type: ignore[abstract]  # see tests/support/train_service.py
    server, address = await serve(servicer)
    base_config = {
        "model_id": "tok-1",
        "supervised_files": [train.as_uri()],
        "test_files": [test.as_uri()],
        "artifacts_uri": arts.as_uri() + "/",
        "base_model": None,
        "model_options": {
            "source_column": "text",
            "target_column": "tags",
            "target_labels": ["PER", "LOC"],
        },
        "train_options": {"epochs": 40, "batch_size": 2, "max_in_memory_batches": 2},
        "something_new": "ignored",
    }
    config = tmp_path / "config.json"
    config.write_text(json.dumps(base_config))
    env = {
        "TRAINYARD_CONFIG": str(config),
        "TRAINYARD_ORCHESTRATOR_ADDRESS": address,
        "TRAINYARD_JOB_TOKEN": "the-job-token",
    }
    try:
        code, _, err = await run_trainer(env, tmp_path)
        assert code == 0, err
        calls = [
            (r.method, r.request.get("status") or r.request.get("level")) for r in servicer.received
        ]
        assert calls[0] == ("UpdateTrainStatus", "in_progress")
        assert calls[-1] == ("UpdateTrainStatus", "complete")
        warnings = [
            r.request["message"] for r in servicer.received if r.method == "LogTrainMessage"
        ]
        assert warnings == [
            "skipped 1 row(s) whose token and tag counts differ (first: train.csv row 42)",
            "1 tag(s) outside target_labels became the default tag: 'CITY' (1)",
        ]
        phases = [
            r.request["metadata"]["progress"]["phase"]
            for r in servicer.received
            if "progress" in r.request.get("metadata", {})
        ]
        assert {"reading", "training", "evaluating", "writing"} <= set(phases)
        final = servicer.received[-1].request["metadata"]
        assert final["artifact"] == (arts / "models/tok-1/model/MANIFEST.json").as_uri()

        files, report = await read_artifacts(arts, "tok-1")
        predictor = inference.load(files)
        [out] = predictor.predict(["Farid lives in Hanoi"], top_k=1)
        assert out["predicted_tags"] == ["PER", "O", "O", "LOC"]
        after = report["after_train_metrics"]
        assert after["overall"]["fmeasure"] > 0.8 and after["PER"]["recall"] > 0.8
        assert report["before_train_metrics"]["PER"] == {
            "precision": 0.0,
            "recall": 0.0,
            "fmeasure": 0.0,
        }
        tp = report["after_train_examples"]["LOC"]["true_positives"]
        assert 1 <= len(tp) <= 5 and tp[0]["token"] in tp[0]["sentence"].split()
        assert report["training"]["max_iterations"] == 40
        assert report["training"]["learning_rate"] == {"value": 0.0001, "used": False}

        # Continue with new data that names places GPE: the new model knows all three labels
        # and its before-metrics are the base model's on the same test data.
        servicer.received.clear()
        config.write_text(
            json.dumps(
                {
                    **base_config,
                    "model_id": "tok-2",
                    "supervised_files": [more.as_uri()],
                    "base_model": {"model_id": "tok-1", "artifacts_uri": arts.as_uri() + "/"},
                    "model_options": {"target_labels": ["GPE"]},
                }
            )
        )
        code, _, err = await run_trainer(env, tmp_path)
        assert code == 0, err
        files2, report2 = await read_artifacts(arts, "tok-2")
        assert set(report2["after_train_metrics"]) == {"PER", "LOC", "GPE", "overall"}
        assert report2["before_train_metrics"]["LOC"] == after["LOC"]
        assert report2["training"]["base_model"] == "tok-1"
        # The base's usable rows (its 40 + "Ivo visits Oslo") and the 40 new ones.
        assert report2["training"]["sentences"] == 2 * len(rows(0)) + 1
        labels = set(json.loads(files2["model.json"])["labels"])
        assert {"PER", "LOC", "GPE", "O"} == labels
    finally:
        await server.stop(0)


async def test_bad_config_exits_2_and_bad_data_fails_with_the_file_and_column(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "model_id": "m",
                "supervised_files": [],
                "model_options": {"target_labels": ["PER", "PER"]},
                "train_options": {"epochs": 0, "test_split": 1.5},
            }
        )
    )
    code, _, err = await run_trainer({"TRAINYARD_CONFIG": str(config)}, tmp_path)
    assert code == 2
    assert err.strip() == (
        "trainyard.trainers.nlp_token: bad config: supervised_files must name at least one "
        "file; model_options.source_column is required; model_options.target_column is "
        "required; model_options.target_labels repeats a label; train_options.epochs must be "
        "an integer from 1 to 1000; train_options.test_split must be in [0, 1)"
    )

    data = tmp_path / "d.csv"
    write_csv(data, [("a b", "O O")], header=("sentence", "tags"))
    config.write_text(
        json.dumps(
            {
                "model_id": "m",
                "supervised_files": [data.as_uri()],
                "artifacts_uri": (tmp_path / "arts").as_uri() + "/",
                "model_options": {
                    "source_column": "text",
                    "target_column": "tags",
                    "target_labels": ["PER"],
                },
            }
        )
    )
    code, out, err = await run_trainer({"TRAINYARD_CONFIG": str(config)}, tmp_path)
    assert code == 1
    assert "d.csv: no column 'text' in the header (columns: 'sentence', 'tags')" in err
    assert '"status": "failed"' in out + err  # no orchestrator: the reports go to the log
    assert not (tmp_path / "arts" / "models" / "m" / "model").exists()


def test_test_split_holds_out_a_seeded_share_of_rows_for_the_report(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    write_csv(data, rows(0) + rows(3))
    raw = {
        "model_id": "m",
        "supervised_files": [data.as_uri()],
        "model_options": {
            "source_column": "text",
            "target_column": "tags",
            "target_labels": ["PER", "LOC"],
        },
        "train_options": {"epochs": 30, "test_split": 0.25, "batch_size": 3},
    }
    config = NlpTokenConfig.parse(raw, {})
    files = [InputFile(data, "train.csv", data.as_uri())]
    first = fit(config, files, [], None, tmp_path, Progress())
    again = fit(config, files, [], None, tmp_path, Progress())
    held = first.report["evaluated_sentences"]
    assert 0 < held < 80 and first.report["training"]["sentences"] == 80 - held
    assert first.report["evaluated_on"] == f"test_split hold-out ({held} rows, seed 0)"
    assert again.report["after_train_metrics"] == first.report["after_train_metrics"]
    assert first.report["after_train_metrics"]["overall"]["fmeasure"] > 0.8
