"""Clustering benchmark: the clustering trainer beside scikit-learn KMeans on TF-IDF + SVD, HDBSCAN
and BERTopic, on the same real topic-labelled texts, with k given and k chosen automatically.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"
    .venv/bin/python -m bench.clustering [--languages english,italian,dutch] [--seeds 0,1,2]
                                         [--per-topic 150] [--no-bertopic]

Data: the ChatterBot corpus that the `chatterbot-corpus` wheel ships
(`chatterbot_corpus/data/<language>/<topic>.yml`, read as files; the package is not imported):
conversations written by its contributors and filed by them under topics (money, food, sports,
psychology, AI, ...), in several languages. One item is one conversation (its turns joined by
spaces); its label is the file's topic. Topics with fewer than 5 conversations are left out, and
a large topic is cut to `--per-topic` conversations by a seeded sample so that one topic
(English "tech support": 1,050) does not decide the scores alone. No text is made up or edited.

Systems (same texts, same seed):
    trainyard      this trainer (`train`): per-language stems + char n-gram TF-IDF, SVD, the
                   packaged sentence encoder where it covers the language (English), k-means;
                   automatic k by silhouette
    kmeans         TfidfVectorizer (word 1-2 grams, sublinear tf) -> TruncatedSVD(100) ->
                   L2 -> KMeans(n_init=4); automatic k by the same silhouette search over the
                   same candidates
    hdbscan        sklearn.cluster.HDBSCAN(min_cluster_size=5) on the same TF-IDF + SVD
                   vectors (k is never given: automatic only; noise points count as one cluster)
    bertopic       BERTopic with the same packaged sentence encoder (English only; its default
                   UMAP + HDBSCAN for automatic k, `nr_topics=k` for k given)

Scores: NMI and ARI (sklearn.metrics) of the predicted clusters against the topics, and wall
seconds of one fit (the trainer's includes writing its model files; the encoder is loaded once
before timing, for every system that uses it).
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.preprocessing import normalize

from trainyard.trainers.clustering import ClusteringParams, Utterance, load_model, train
from trainyard.trainers.clustering import training as trainer_module
from trainyard.trainers.embeddings import load_encoder

LANGUAGE_CODES = {"english": "en-US", "italian": "it-IT", "dutch": "nl-NL", "turkish": "tr-TR"}
MIN_PER_TOPIC = 5


def corpus_dir() -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the bench extra: chatterbot-corpus is missing")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_data(language: str, per_topic: int, seed: int) -> tuple[list[str], list[str]]:
    by_topic: dict[str, list[str]] = {}
    for path in sorted((corpus_dir() / language).glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in document.get("conversations") or []:
            turns = [str(t) for t in conversation if isinstance(t, (str, int, float))]
            text = " ".join(turns).strip()
            if text:
                by_topic.setdefault(path.stem, []).append(text)
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[str] = []
    for topic, items in sorted(by_topic.items()):
        if len(items) < MIN_PER_TOPIC:
            continue
        if len(items) > per_topic:
            items = [items[i] for i in sorted(rng.choice(len(items), per_topic, replace=False))]
        texts += items
        labels += [topic] * len(items)
    return texts, labels


def auto_candidates(n: int, distinct: int) -> list[int]:
    """The trainer's own candidate k values, so every system searches the same range."""
    high = min(
        trainer_module.MAX_AUTO_K,
        max(2, distinct // 2),
        n - 1,
        trainer_module.auto_k_cap(0, distinct),
    )
    return trainer_module._candidates(2, high)


def run_trainyard(texts: list[str], language: str, k: int, seed: int) -> list[int]:
    with tempfile.TemporaryDirectory() as out:
        utterances = [Utterance(t, None, "dialogue") for t in texts]
        train(utterances, ClusteringParams(language, k, seed), Path(out), lambda s, p: None)
        model = load_model(Path(out))
        return [a.cluster_id for a in model.assign(texts)]


def tfidf_svd(texts: list[str], seed: int) -> np.ndarray:
    matrix = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    dims = min(100, matrix.shape[1] - 1, matrix.shape[0] - 1)
    reduced = TruncatedSVD(n_components=dims, random_state=seed).fit_transform(matrix)
    return np.asarray(normalize(reduced), dtype=np.float32)


def run_kmeans(texts: list[str], k: int, seed: int) -> list[int]:
    vectors = tfidf_svd(texts, seed)
    if k == 0:
        best, best_score = 2, -1.0
        for candidate in auto_candidates(len(texts), len(set(texts))):
            labels = KMeans(candidate, n_init=4, random_state=seed).fit_predict(vectors)
            score = float(silhouette_score(vectors, labels, metric="cosine"))
            if score > best_score:
                best, best_score = candidate, score
        k = best
    return [int(x) for x in KMeans(k, n_init=4, random_state=seed).fit_predict(vectors)]


def run_hdbscan(texts: list[str], seed: int) -> list[int]:
    vectors = tfidf_svd(texts, seed)
    return [int(x) for x in HDBSCAN(min_cluster_size=5).fit_predict(vectors)]


def run_bertopic(texts: list[str], k: int, seed: int) -> list[int]:
    from bertopic import BERTopic
    from umap import UMAP

    encoder = load_encoder()
    if encoder is None:
        raise RuntimeError("no packaged sentence encoder")
    embeddings = encoder.encode(texts)
    umap = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed)
    model: Any = BERTopic(
        umap_model=umap, nr_topics=k if k else None, calculate_probabilities=False
    )
    topics, _ = model.fit_transform(texts, embeddings)
    return [int(t) for t in topics]


def score(
    name: str, truth: list[str], fit: Callable[[], list[int]]
) -> tuple[str, float, float, float, int]:
    start = time.perf_counter()
    predicted = fit()
    seconds = time.perf_counter() - start
    return (
        name,
        float(normalized_mutual_info_score(truth, predicted)),
        float(adjusted_rand_score(truth, predicted)),
        seconds,
        len(set(predicted)),
    )


def run_language(
    language: str, seed: int, per_topic: int, bertopic: bool, encoder: Any
) -> list[tuple[str, tuple[str, float, float, float, int]]]:
    code = LANGUAGE_CODES[language]
    texts, truth = load_data(language, per_topic, seed)
    k = len(set(truth))
    sizes = Counter(truth)
    print(
        f"\n{language} ({code}), seed {seed}: {len(texts)} conversations, {k} topics "
        f"(largest {max(sizes.values())}, smallest {min(sizes.values())})"
    )
    rows = []
    for mode, given in (("k given", k), ("k auto", 0)):
        rows.append(
            (mode, score("trainyard", truth, partial(run_trainyard, texts, code, given, seed)))
        )
        rows.append((mode, score("kmeans", truth, partial(run_kmeans, texts, given, seed))))
        if given == 0:
            rows.append((mode, score("hdbscan", truth, partial(run_hdbscan, texts, seed))))
        if bertopic and encoder is not None and code == "en-US":
            try:
                rows.append(
                    (mode, score("bertopic", truth, partial(run_bertopic, texts, given, seed)))
                )
            except Exception as exc:  # a peer that fails is reported, not fatal
                print(f"  bertopic failed: {exc}")
    print(f"  {'mode':8} {'system':10} {'NMI':>6} {'ARI':>6} {'seconds':>8} {'clusters':>8}")
    for mode, (name, nmi, ari, seconds, clusters) in rows:
        print(f"  {mode:8} {name:10} {nmi:6.3f} {ari:6.3f} {seconds:8.2f} {clusters:8d}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default="english,italian,dutch")
    parser.add_argument(
        "--seeds", default="0,1,2", help="each seed samples the topics and seeds every system"
    )
    parser.add_argument("--per-topic", type=int, default=150)
    parser.add_argument("--no-bertopic", action="store_true")
    args = parser.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]

    encoder = load_encoder()  # loaded once, before any timing
    print(f"sentence encoder: {encoder.name if encoder else 'none'}")
    for language in args.languages.split(","):
        runs = [
            run_language(language, seed, args.per_topic, not args.no_bertopic, encoder)
            for seed in seeds
        ]
        if len(runs) < 2:
            continue
        print(f"\n{language}: mean (min-max) over seeds {args.seeds}")
        print(f"  {'mode':8} {'system':10} {'NMI':>19} {'ARI':>19} {'clusters':>8}")
        for index, (mode, (name, *_)) in enumerate(runs[0]):
            got = [run[index][1] for run in runs if len(run) > index]
            nmi = [g[1] for g in got]
            ari = [g[2] for g in got]
            clusters = np.mean([g[4] for g in got])
            print(
                f"  {mode:8} {name:10} {np.mean(nmi):.3f} ({min(nmi):.3f}-{max(nmi):.3f}) "
                f"{np.mean(ari):.3f} ({min(ari):.3f}-{max(ari):.3f}) {clusters:8.1f}"
            )


if __name__ == "__main__":
    main()
