"""Training: featurize, cluster (k given or by silhouette; intents seed centroids), describe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

from trainyard.trainers.clustering.features import Featurizer
from trainyard.trainers.clustering.model import (
    ClusterInfo,
    ClusteringParams,
    ClusterModel,
    TrainResult,
    Utterance,
)
from trainyard.trainers.clustering.naming import KeywordNamer, Namer

SVD_DIMS = 128
MAX_AUTO_K = 30
N_KEYWORDS = 8
N_REPRESENTATIVES = 5


def train(
    utterances: Sequence[Utterance],
    params: ClusteringParams,
    out_dir: Path,
    report: Callable[[str, float], None],
    namer: Namer | None = None,
) -> TrainResult:
    namer = namer or KeywordNamer()
    report("DataProcessing", 0.0)
    texts = [u.text for u in utterances]
    if len(texts) < 2:
        raise ValueError("clustering needs at least 2 utterances")
    featurizer = Featurizer(params.language_code, SVD_DIMS, params.seed)
    vectors = featurizer.fit_transform(texts)
    intents = sorted({u.intent for u in utterances if u.intent})
    report("TrainingStarted", 20.0)

    seeds = _intent_centroids(vectors, utterances, intents)
    n = len(texts)
    if params.num_clusters > 0:
        k = max(min(params.num_clusters, n), len(intents))
        labels, centroids = _kmeans(vectors, k, seeds, params.seed)
    else:
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        low = max(2, len(intents))
        high = max(low, min(MAX_AUTO_K, n - 1))
        for step, k in enumerate(range(low, high + 1)):
            labels_k, centroids_k = _kmeans(vectors, k, seeds, params.seed)
            score = _silhouette(vectors, labels_k, params.seed)
            if best is None or score > best[0]:
                best = (score, labels_k, centroids_k)
            report("Training", 20.0 + 60.0 * (step + 1) / (high - low + 1))
        assert best is not None
        _, labels, centroids = best
    report("Training", 80.0)

    infos = _describe(
        featurizer, texts, vectors, labels, centroids, utterances, intents, params, namer
    )
    metrics = _metrics(vectors, labels, utterances, params.seed)
    model = ClusterModel(featurizer, centroids, infos, metrics)
    model.save(out_dir)
    report("Trained", 100.0)
    return TrainResult(metrics=metrics, clusters=infos)


def _intent_centroids(
    vectors: np.ndarray, utterances: Sequence[Utterance], intents: list[str]
) -> np.ndarray:
    rows = []
    for intent in intents:
        mask = np.array([u.intent == intent for u in utterances])
        rows.append(_unit(vectors[mask].mean(axis=0)))
    return np.array(rows, dtype=np.float32).reshape(len(intents), vectors.shape[1])


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _kmeans(
    vectors: np.ndarray, k: int, seeds: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(vectors))
    if len(seeds) and k >= len(seeds):
        rng = np.random.default_rng(seed)
        extra = (
            vectors[rng.choice(len(vectors), size=k - len(seeds), replace=False)]
            if k > len(seeds)
            else vectors[:0]
        )
        init = np.vstack([seeds, extra])
        km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed)
    else:
        km = KMeans(n_clusters=k, n_init=4, random_state=seed)
    labels = km.fit_predict(vectors)
    centroids = np.array([_unit(c) for c in km.cluster_centers_], dtype=np.float32)
    return labels.astype(np.int64), centroids


def _silhouette(vectors: np.ndarray, labels: np.ndarray, seed: int) -> float:
    if len(set(labels.tolist())) < 2 or len(set(labels.tolist())) >= len(labels):
        return -1.0
    sample = min(len(labels), 5000)
    return float(
        silhouette_score(vectors, labels, metric="cosine", sample_size=sample, random_state=seed)
    )


def _describe(
    featurizer: Featurizer,
    texts: list[str],
    vectors: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    utterances: Sequence[Utterance],
    intents: list[str],
    params: ClusteringParams,
    namer: Namer,
) -> list[ClusterInfo]:
    counts = featurizer.word_counts(texts)
    counts.data[:] = 1.0
    vocab = np.array(featurizer.word_vocabulary(), dtype=object)
    k = len(centroids)
    per_class = np.vstack([np.asarray(counts[labels == c].sum(axis=0)).ravel() for c in range(k)])
    avg = per_class.sum() / max(k, 1)
    idf = np.log1p(avg / np.maximum(per_class.sum(axis=0), 1e-9))
    ctfidf = per_class / np.maximum(per_class.sum(axis=1, keepdims=True), 1e-9) * idf
    infos = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        top = np.argsort(-ctfidf[c], kind="stable")[:N_KEYWORDS]
        keywords = [str(vocab[i]) for i in top if ctfidf[c, i] > 0]
        sims = vectors[members] @ centroids[c]
        order = members[np.argsort(-sims, kind="stable")]
        reps: list[str] = []
        for i in order:
            if texts[i] not in reps:
                reps.append(texts[i])
            if len(reps) == N_REPRESENTATIVES:
                break
        member_intents = [m for m in (utterances[int(i)].intent for i in members) if m]
        intent = (
            max(set(member_intents), key=lambda x: (member_intents.count(x), x))
            if member_intents
            else None
        )
        label = intent if intent else namer.name(keywords, reps, params.language_code)
        infos.append(ClusterInfo(c, label, len(members), keywords, reps, intent))
    return infos


def _metrics(
    vectors: np.ndarray, labels: np.ndarray, utterances: Sequence[Utterance], seed: int
) -> list[tuple[str, float]]:
    sizes = np.bincount(labels)
    metrics = [
        ("cluster_count", float(len(sizes))),
        ("silhouette", _silhouette(vectors, labels, seed)),
        ("min_cluster_size", float(sizes.min())),
        ("max_cluster_size", float(sizes.max())),
        ("mean_cluster_size", float(sizes.mean())),
    ]
    labelled = [i for i, u in enumerate(utterances) if u.intent]
    if labelled:
        truth = [utterances[i].intent or "" for i in labelled]
        pred = labels[labelled]
        metrics.append(("ari", float(adjusted_rand_score(truth, pred))))
        metrics.append(("nmi", float(normalized_mutual_info_score(truth, pred))))
        purity = 0
        for c in set(pred.tolist()):
            members = [truth[j] for j in range(len(truth)) if pred[j] == c]
            purity += max(members.count(x) for x in set(members))
        metrics.append(("purity", purity / len(truth)))
    return metrics
