"""Training: featurize, cluster, describe, save.

Clustering (all on unit vectors, so Euclidean k-means is cosine k-means):
- No intent data: scikit-learn KMeans (k-means++, `N_INIT` restarts, seeded).
- Intent data (semi-supervised): seeded, constrained spherical k-means. Each intent's labelled
  utterances give one starting centroid and stay in that cluster; the other clusters start by
  k-means++ among the unlabelled utterances, far from the intents; unlabelled utterances join the
  nearest cluster, an intent's or a new one. scikit-learn has no constrained k-means, hence the
  loop below (numpy, memory in blocks of `BLOCK` rows).
- k: `num_clusters` when given (raised to the number of intents: each intent keeps its cluster);
  with 0 the model chooses: the k with the highest mean silhouette (cosine) among `_candidates`
  up to `auto_k_cap` (the intents + √distinct utterances),
  each clustering fitted on the same seeded sample of at most `AUTO_K_SAMPLE` utterances; the
  final clustering is then fitted on everything. The chosen k is the metric `num_clusters`, and
  `auto_k` is 1.

Per cluster: size, keywords by c-TF-IDF (class-based TF-IDF as in BERTopic, over the stems and
stem bigrams, shown as the most frequent surface word of each stem), up to `N_REPRESENTATIVES`
distinct utterances closest to the centroid, and a name: the majority intent where intents are
given, else the namer's (keywords by default, an LLM with `OpenAINamer`).

Metrics: num_utterances, num_clusters, auto_k, silhouette (cosine, seeded sample), cluster size
min/max/mean, dense_embeddings (1 when a sentence encoder was used), seed; with intents also ARI,
NMI and purity (sklearn.metrics) of the labelled utterances' nearest centroid against their
intent: the labelled utterances are pinned to their intent while training, so these measure
how cleanly the intents separate around their centroids, not the constraint itself.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.metrics.cluster import contingency_matrix

from trainyard.trainers.clustering.features import (
    Featurizer,
    Matrix,
    encoder_for,
    normalise,
    tokens,
)
from trainyard.trainers.clustering.model import (
    SUPPORTED_LANGUAGES,
    ClusterInfo,
    ClusteringParams,
    ClusterModel,
    TrainResult,
    Utterance,
)
from trainyard.trainers.clustering.naming import KeywordNamer, Namer

Labels = npt.NDArray[np.int64]
Report = Callable[[str, float], None]

SVD_DIMS = 150
N_INIT = 4
MAX_ITER = 100
MAX_AUTO_K = 80
AUTO_K_CANDIDATES = 16
AUTO_K_SAMPLE = 3000
SILHOUETTE_SAMPLE = 5000
N_KEYWORDS = 8
N_REPRESENTATIVES = 5
BLOCK = 8192


def train(
    utterances: Sequence[Utterance],
    params: ClusteringParams,
    out_dir: Path,
    report: Report,
    namer: Namer | None = None,
) -> TrainResult:
    """Cluster the utterances, write the model into out_dir, return its metrics and clusters.

    ValueError for data that cannot be clustered (the message says why)."""
    namer = namer or KeywordNamer()
    report("DataProcessing", 0.0)
    if params.language_code not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language {params.language_code!r}")
    if params.num_clusters < 0:
        raise ValueError("num_clusters must be 0 (automatic) or positive")
    texts = [u.text for u in utterances]
    if len(texts) < 2:
        raise ValueError("clustering needs at least 2 utterances")
    rng_seed = params.seed

    featurizer = Featurizer(
        params.language_code, SVD_DIMS, rng_seed, encoder_for(params.language_code)
    )
    vectors = featurizer.fit_transform(texts)
    report("DataProcessing", 25.0)
    intents = sorted({u.intent for u in utterances if u.intent})
    index = {name: i for i, name in enumerate(intents)}
    pinned = np.array([index[u.intent] if u.intent else -1 for u in utterances], dtype=np.int64)
    distinct = len({normalise(t, params.language_code) for t in texts})

    report("TrainingStarted", 30.0)
    auto = params.num_clusters == 0
    if auto:
        k = _choose_k(vectors, pinned, len(intents), distinct, rng_seed, report)
    else:
        k = max(min(params.num_clusters, distinct), len(intents), 1)
    labels, centroids = _cluster(vectors, k, pinned, len(intents), rng_seed)
    report("Training", 85.0)

    lexical = featurizer.lexical(texts) if featurizer.encoder is not None else vectors
    lexical_centroids = _centroids(lexical, labels, len(centroids))
    infos = _describe(featurizer, texts, vectors, labels, centroids, utterances, intents, namer)
    metrics = _metrics(vectors, labels, centroids, pinned, auto, featurizer, rng_seed)
    report("Training", 95.0)
    ClusterModel(featurizer, centroids, lexical_centroids, infos, metrics).save(out_dir)
    report("Trained", 100.0)
    return TrainResult(metrics=metrics, clusters=infos)


def _unit(matrix: Matrix) -> Matrix:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Matrix = (matrix / norms).astype(np.float32)
    return result


def _centroids(vectors: Matrix, labels: Labels, k: int) -> Matrix:
    sums = np.zeros((k, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, vectors)
    return _unit(sums.astype(np.float32))


def _nearest(vectors: Matrix, centroids: Matrix) -> tuple[Labels, Matrix]:
    """Index and cosine of each row's nearest centroid, in blocks of rows."""
    best = np.empty(len(vectors), dtype=np.int64)
    sims = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start : start + BLOCK] @ centroids.T
        best[start : start + BLOCK] = np.argmax(block, axis=1)
        sims[start : start + BLOCK] = block[np.arange(len(block)), best[start : start + BLOCK]]
    return best, sims


def _cluster(
    vectors: Matrix, k: int, pinned: Labels, n_intents: int, seed: int
) -> tuple[Labels, Matrix]:
    k = min(k, len(vectors))
    if n_intents == 0:
        if k == 1:
            labels = np.zeros(len(vectors), dtype=np.int64)
        else:
            km = KMeans(n_clusters=k, n_init=N_INIT, max_iter=MAX_ITER, random_state=seed)
            labels = km.fit_predict(vectors).astype(np.int64)
        labels = _compact(labels)
        return labels, _centroids(vectors, labels, int(labels.max()) + 1)
    return _seeded_kmeans(vectors, max(k, n_intents), pinned, n_intents, seed)


def _compact(labels: Labels) -> Labels:
    """Renumber labels 0..m-1 keeping their order (drops clusters that ended empty)."""
    used = np.unique(labels)
    mapping = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    mapping[used] = np.arange(len(used))
    compacted: Labels = mapping[labels]
    return compacted


def _seeded_kmeans(
    vectors: Matrix, k: int, pinned: Labels, n_intents: int, seed: int
) -> tuple[Labels, Matrix]:
    rng = np.random.default_rng(seed)
    free = np.flatnonzero(pinned < 0)
    seeds = _centroids(vectors[pinned >= 0], pinned[pinned >= 0], n_intents)
    extra = min(k - n_intents, len(free))
    centroids = np.vstack([seeds, _plus_plus(vectors[free], seeds, extra, rng)])
    labels = pinned.copy()
    for _ in range(MAX_ITER):
        if len(free):
            nearest, _ = _nearest(vectors[free], centroids)
            if np.array_equal(nearest, labels[free]):
                break
            labels[free] = nearest
        new = _centroids(vectors, labels, len(centroids))
        empty = np.flatnonzero(np.bincount(labels, minlength=len(centroids)) == 0)
        if len(empty):
            # An empty new cluster restarts at the free utterance farthest from its centroid.
            _, sims = _nearest(vectors[free], new)
            for c, i in zip(empty, np.argsort(sims)[: len(empty)], strict=False):
                new[c] = vectors[free[i]]
        centroids = new
        if not len(free):
            break
    labels = _compact(labels)
    # Intents keep ids 0..n_intents-1: they are pinned, so never empty.
    return labels, _centroids(vectors, labels, int(labels.max()) + 1)


def _plus_plus(points: Matrix, existing: Matrix, count: int, rng: np.random.Generator) -> Matrix:
    """k-means++ starting centroids among points, away from the existing ones."""
    chosen: list[Matrix] = []
    if count <= 0 or len(points) == 0:
        return np.zeros((0, points.shape[1]), dtype=np.float32)
    if len(existing):
        _, sims = _nearest(points, existing)
        dist = np.maximum(1.0 - sims, 0.0).astype(np.float64)
    else:
        first = points[int(rng.integers(len(points)))]
        chosen.append(first)
        dist = np.maximum(1.0 - points @ first, 0.0).astype(np.float64)
    while len(chosen) < count:
        total = dist.sum()
        pick = (
            int(rng.choice(len(points), p=dist / total))
            if total > 0
            else int(rng.integers(len(points)))
        )
        chosen.append(points[pick])
        dist = np.minimum(dist, np.maximum(1.0 - points @ points[pick], 0.0))
    return np.array(chosen, dtype=np.float32)


def auto_k_cap(n_intents: int, distinct: int) -> int:
    """The most clusters automatic k may choose: the intents plus the square root of the
    distinct utterances. Mean silhouette keeps rising as clusters shrink to near-duplicate
    groups (on the ChatterBot bench it chose 80 clusters for 20 topics, NMI 0.634 against
    0.650 with this cap); √n is the usual rule-of-thumb ceiling for k."""
    return max(2, n_intents + math.isqrt(max(distinct, 0)))


def _candidates(low: int, high: int) -> list[int]:
    if high <= low:
        return [low]
    grid = np.unique(np.round(np.geomspace(low, high, AUTO_K_CANDIDATES)).astype(int))
    return [int(k) for k in grid]


def _choose_k(
    vectors: Matrix, pinned: Labels, n_intents: int, distinct: int, seed: int, report: Report
) -> int:
    rng = np.random.default_rng(seed)
    if len(vectors) > AUTO_K_SAMPLE:
        sample = np.sort(rng.choice(len(vectors), size=AUTO_K_SAMPLE, replace=False))
    else:
        sample = np.arange(len(vectors))
    points, sample_pinned = vectors[sample], pinned[sample]
    sample_intents = np.unique(sample_pinned[sample_pinned >= 0])
    # Intents missing from the sample would leave ids unused: renumber the ones present.
    remap = np.full(max(n_intents, 1), -1, dtype=np.int64)
    remap[sample_intents] = np.arange(len(sample_intents))
    sample_pinned = np.where(sample_pinned >= 0, remap[np.maximum(sample_pinned, 0)], -1)
    low = max(2, n_intents)
    high = min(
        MAX_AUTO_K, max(low, distinct // 2), len(points) - 1, auto_k_cap(n_intents, distinct)
    )
    if high < low or distinct < 3:
        return max(n_intents, min(2, distinct))
    best_k, best_score = low, -math.inf
    candidates = _candidates(low, high)
    for step, k in enumerate(candidates):
        extra = k - n_intents
        labels, _ = _cluster(
            points, len(sample_intents) + extra, sample_pinned, len(sample_intents), seed
        )
        score = _silhouette(points, labels, seed)
        if score > best_score + 1e-6:
            best_k, best_score = k, score
        report("Training", 30.0 + 45.0 * (step + 1) / len(candidates))
    return best_k


def _silhouette(vectors: Matrix, labels: Labels, seed: int) -> float:
    count = len(np.unique(labels))
    if count < 2 or count >= len(labels):
        return 0.0
    size = min(len(labels), SILHOUETTE_SAMPLE)
    return float(
        silhouette_score(vectors, labels, metric="cosine", sample_size=size, random_state=seed)
    )


def _keywords(featurizer: Featurizer, texts: list[str], labels: Labels, k: int) -> list[list[str]]:
    presence = featurizer.word_presence(texts)
    vocabulary = featurizer.word_vocabulary()
    one_hot = np.zeros((k, len(texts)), dtype=np.float32)
    one_hot[labels, np.arange(len(texts))] = 1.0
    per_cluster = np.asarray((presence.T @ one_hot.T).T, dtype=np.float64)  # k x terms
    totals = per_cluster.sum(axis=0)
    average = per_cluster.sum() / k
    idf = np.log1p(average / np.maximum(totals, 1.0))
    scores = per_cluster / np.maximum(per_cluster.sum(axis=1, keepdims=True), 1.0) * idf
    surface = _surface_forms(featurizer.language_code, texts)
    out: list[list[str]] = []
    for c in range(k):
        words: list[str] = []
        for term in np.argsort(-scores[c], kind="stable"):
            if scores[c, term] <= 0 or len(words) == N_KEYWORDS:
                break
            word = " ".join(surface.get(stem, stem) for stem in vocabulary[term].split(" "))
            if word not in words:
                words.append(word)
        out.append(words)
    return out


def _surface_forms(language_code: str, texts: list[str]) -> dict[str, str]:
    """The most frequent surface word for each stem (keywords read `cards`, not `card`)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for text in texts:
        for word in normalise(text, language_code).split():
            for stem in tokens(word, language_code):
                counts[stem][word.strip(".,;:!?\"'()[]")] += 1
    return {stem: c.most_common(1)[0][0] for stem, c in counts.items() if c}


def _describe(
    featurizer: Featurizer,
    texts: list[str],
    vectors: Matrix,
    labels: Labels,
    centroids: Matrix,
    utterances: Sequence[Utterance],
    intents: list[str],
    namer: Namer,
) -> list[ClusterInfo]:
    k = len(centroids)
    keywords = _keywords(featurizer, texts, labels, k)
    infos: list[ClusterInfo] = []
    used: set[str] = set()
    for c in range(k):
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(-(vectors[members] @ centroids[c]), kind="stable")]
        representatives: list[str] = []
        for i in order:
            if texts[i] not in representatives:
                representatives.append(texts[i])
            if len(representatives) == N_REPRESENTATIVES:
                break
        votes = Counter(u.intent for u in (utterances[int(i)] for i in members) if u.intent)
        intent = min(votes, key=lambda name: (-votes[name], name)) if votes else None
        if c < len(intents):  # the intent's own cluster (its utterances are pinned there)
            label = intents[c]
        else:
            label = namer.name(keywords[c], representatives, featurizer.language_code)
        label = label.strip() or "cluster"
        unique, n = label, 2
        while unique in used:
            unique, n = f"{label} {n}", n + 1
        used.add(unique)
        infos.append(ClusterInfo(c, unique, len(members), keywords[c], representatives, intent))
    return infos


def _metrics(
    vectors: Matrix,
    labels: Labels,
    centroids: Matrix,
    pinned: Labels,
    auto: bool,
    featurizer: Featurizer,
    seed: int,
) -> list[tuple[str, float]]:
    sizes = np.bincount(labels, minlength=len(centroids))
    metrics = [
        ("num_utterances", float(len(labels))),
        ("num_clusters", float(len(centroids))),
        ("auto_k", 1.0 if auto else 0.0),
        ("silhouette", _silhouette(vectors, labels, seed)),
        ("cluster_size_min", float(sizes.min())),
        ("cluster_size_max", float(sizes.max())),
        ("cluster_size_mean", float(sizes.mean())),
        ("dense_embeddings", 0.0 if featurizer.encoder is None else 1.0),
        ("seed", float(seed)),
    ]
    labelled = np.flatnonzero(pinned >= 0)
    if len(labelled):
        truth = pinned[labelled]
        predicted, _ = _nearest(vectors[labelled], centroids)
        table = contingency_matrix(truth, predicted)
        metrics += [
            ("ari", float(adjusted_rand_score(truth, predicted))),
            ("nmi", float(normalized_mutual_info_score(truth, predicted))),
            ("purity", float(table.max(axis=0).sum() / table.sum())),
        ]
    return metrics
