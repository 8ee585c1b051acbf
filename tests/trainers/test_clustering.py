"""The clustering trainer library on small real multilingual data, without any server: text
features per language, k given and chosen, intent anchoring, assignment, the saved model, the
progress it reports, and LLM naming through the real `openai` SDK against the test server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tests.support.openai_server import ApiError, OpenAIServer
from trainyard.trainers.clustering import (
    ClusteringParams,
    ClusterModel,
    KeywordNamer,
    OpenAINamer,
    TrainResult,
    Utterance,
    load_model,
    train,
)
from trainyard.trainers.clustering.features import normalise, tokens
from trainyard.trainers.clustering.model import MANIFEST, ModelFormatError
from trainyard.trainers.embeddings import MODEL_VAR

# Customer-side utterances of three banking topics, as a contact centre's transcripts have them.
ENGLISH = {
    "lost_card": [
        "I lost my card",
        "my card was stolen yesterday",
        "I can't find my debit card anywhere",
        "someone stole my credit card, please block it",
        "please block my card, I think I lost it",
        "my bank card is missing",
    ],
    "balance": [
        "what is my account balance",
        "how much money is in my account",
        "can you tell me my current balance",
        "show me the balance of my savings account",
        "I want to check my balance",
        "what's the balance on my checking account",
    ],
    "transfer": [
        "I want to send money to my brother",
        "how do I transfer money to another bank",
        "make a transfer of 200 euros to my landlord",
        "send 50 dollars to my friend",
        "transfer funds from savings to checking",
        "I need to wire money abroad",
    ],
}

TURKISH = {
    "kayip_kart": [
        "KARTIMI KAYBETTİM",
        "kartım çalındı, lütfen iptal edin",
        "Kredi kartımı bulamıyorum",
        "kartımı kaybettim ne yapmalıyım",
        "Banka kartım kayıp",
    ],
    "bakiye": [
        "HESAP BAKİYEMİ ÖĞRENMEK İSTİYORUM",
        "bakiyemi öğrenebilir miyim",
        "hesabımda ne kadar para var",
        "Güncel bakiye bilgisi lütfen",
        "hesap bakiyem nedir",
    ],
    "havale": [
        "İSTANBUL'DAKİ annemin hesabına para göndermek istiyorum",
        "arkadaşıma havale yapmak istiyorum",
        "başka bankaya para transferi nasıl yapılır",
        "Kardeşime 500 lira gönder",
        "EFT yapmak istiyorum",
    ],
}

ARABIC = {
    "بطاقة_مفقودة": [
        "فقدت بطاقتي",
        "لقد سُرقت بطاقتي الائتمانية",
        "أين بطاقتي؟ لا أستطيع إيجادها",
        "أرجو إيقاف بطاقتي المفقودة",
        "بطاقتي البنكية ضائعة",
    ],
    "الرصيد": [
        "ما هو رصيد حسابي",
        "أريد معرفة رصيدي",
        "كم رصيدي الحالي",
        "أظهر لي رصيد حساب التوفير",
        "إستعلام عن الرصيد من فضلك",
    ],
    "تحويل": [
        "أريد تحويل مبلغ إلى أخي",
        "كيف أحول المال إلى بنك آخر",
        "إرسال مئة دولار إلى صديقي",
        "تحويل الأموال من حساب التوفير",
        "أريد إرسال المال إلى الخارج",
    ],
}


def _dialogue(groups: dict[str, list[str]]) -> list[Utterance]:
    return [Utterance(text, None, "dialogue") for texts in groups.values() for text in texts]


def _truth(groups: dict[str, list[str]]) -> list[str]:
    return [name for name, texts in groups.items() for _ in texts]


class Progress:
    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def __call__(self, status: str, percent: float) -> None:
        self.events.append((status, percent))


@pytest.fixture
def lexical_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dense embeddings off: the lexical path, and fast."""
    monkeypatch.setenv(MODEL_VAR, "none")


def _train(
    utterances: list[Utterance], tmp_path: Path, language: str, k: int, seed: int = 0
) -> tuple[TrainResult, Path, Progress]:
    out = tmp_path / f"model-{language}-{k}-{seed}"
    progress = Progress()
    result = train(utterances, ClusteringParams(language, k, seed), out, progress)
    return result, out, progress


def _labels(model: ClusterModel, utterances: list[Utterance]) -> list[int]:
    return [a.cluster_id for a in model.assign([u.text for u in utterances])]


def _same_partition(a: list[int], b: list[str]) -> bool:
    pairs = set(zip(a, b, strict=True))
    return len(pairs) == len(set(a)) == len(set(b))


# -- text representation ---------------------------------------------------------------------


def test_turkish_casing_maps_dotted_and_dotless_i_correctly() -> None:
    assert normalise("KARTIMI KAYBETTİM", "tr-TR") == "kartımı kaybettim"
    assert normalise("İSTANBUL", "tr-TR") == "istanbul"
    # Outside Turkish, I is i (and the dotted capital is not split into i + combining dot).
    assert normalise("I LOST IT", "en-US") == "i lost it"
    assert tokens("KARTIMI KAYBETTİM", "tr-TR") == tokens("kartımı kaybettim", "tr-TR")


def test_arabic_normalisation_unifies_alef_forms_and_drops_diacritics() -> None:
    assert normalise("إستعلام", "ar-SA") == normalise("استعلام", "ar-SA")
    assert normalise("سُرِقت", "ar-SA") == "سرقت"
    assert normalise("أحمد", "ar-SA") == "احمد"


def test_stop_words_go_and_words_are_stemmed_per_language() -> None:
    assert tokens("I want to check my balances", "en-US") == ["want", "check", "balanc"]
    assert "bir" not in tokens("bir kart istiyorum", "tr-TR")  # a Turkish stop word
    assert tokens("cartes bancaires", "fr-FR") == tokens("carte bancaire", "fr-FR")
    assert tokens("rekeningen", "nl-NL") == tokens("rekening", "nl-NL")


# -- clustering ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "language", "least_ari"),
    [(ENGLISH, "en-US", 0.7), (TURKISH, "tr-TR", 0.35), (ARABIC, "ar-SA", 0.5)],
)
def test_k_given_finds_the_topics(
    lexical_only: None,
    tmp_path: Path,
    groups: dict[str, list[str]],
    language: str,
    least_ari: float,
) -> None:
    # Lexical features alone on 15-18 short utterances: most, not all, land with their topic
    # (shared words such as "account" or "para" pull a few across).
    utterances = _dialogue(groups)
    result, out, _ = _train(utterances, tmp_path, language, k=3)
    model = load_model(out)
    assert len(result.clusters) == 3
    assert sum(c.size for c in result.clusters) == len(utterances)
    assert adjusted_rand_score(_truth(groups), _labels(model, utterances)) >= least_ari
    metrics = dict(result.metrics)
    assert metrics["num_clusters"] == 3.0 and metrics["auto_k"] == 0.0
    assert 0.0 < metrics["silhouette"] <= 1.0
    assert "ari" not in metrics  # no intents: nothing to compare with


def test_automatic_k_is_chosen_by_silhouette_and_reported(
    lexical_only: None, tmp_path: Path
) -> None:
    utterances = _dialogue(ENGLISH)
    result, out, _ = _train(utterances, tmp_path, "en-US", k=0)
    metrics = dict(result.metrics)
    assert metrics["auto_k"] == 1.0
    assert metrics["num_clusters"] == len(result.clusters) >= 2
    assert adjusted_rand_score(_truth(ENGLISH), _labels(load_model(out), utterances)) >= 0.5


def test_training_is_deterministic_for_a_seed(lexical_only: None, tmp_path: Path) -> None:
    utterances = _dialogue(TURKISH)
    first, out1, _ = _train(utterances, tmp_path / "a", "tr-TR", k=0, seed=7)
    second, out2, _ = _train(utterances, tmp_path / "b", "tr-TR", k=0, seed=7)
    assert first == second
    for name in ("centroids.npy", "lexical_centroids.npy", "svd_components.npy"):
        np.testing.assert_array_equal(np.load(out1 / name), np.load(out2 / name))


def test_intents_anchor_their_clusters_and_dialogue_joins_or_forms_new_ones(
    lexical_only: None, tmp_path: Path
) -> None:
    # Intent data for two topics; dialogue has more of both plus a third topic nobody labelled.
    utterances = [
        Utterance(text, intent, "intent")
        for intent in ("lost_card", "balance")
        for text in ENGLISH[intent][:3]
    ]
    dialogue = [t for intent in ("lost_card", "balance") for t in ENGLISH[intent][3:]]
    utterances += [Utterance(t, None, "dialogue") for t in dialogue + ENGLISH["transfer"]]
    result, out, _ = _train(utterances, tmp_path, "en-US", k=3)

    by_label = {c.label: c for c in result.clusters}
    assert set(by_label) >= {"lost_card", "balance"}
    # The labelled utterances stay with their intent; dialogue adds to them.
    assert by_label["lost_card"].intent == "lost_card" and by_label["lost_card"].size >= 4
    assert by_label["balance"].intent == "balance" and by_label["balance"].size >= 4
    (new,) = [c for c in result.clusters if c.intent is None]
    assert new.size >= 3 and {"transfer", "money"} & set(" ".join(new.keywords).split())
    metrics = dict(result.metrics)
    assert metrics["purity"] == 1.0 and metrics["nmi"] == 1.0 and metrics["ari"] == 1.0

    model = load_model(out)
    (lost, other) = model.assign(
        ["I think somebody took my card", "a transfer of 20 euros to my sister"]
    )
    assert lost.label == "lost_card"
    assert other.cluster_id == new.cluster_id


def test_fewer_clusters_than_intents_keeps_every_intent(lexical_only: None, tmp_path: Path) -> None:
    utterances = [
        Utterance(t, intent, "intent") for intent, texts in ENGLISH.items() for t in texts
    ]
    result, _, _ = _train(utterances, tmp_path, "en-US", k=2)
    assert sorted(c.label for c in result.clusters) == sorted(ENGLISH)
    assert all(c.intent == c.label for c in result.clusters)


def test_automatic_k_with_intents_never_drops_an_intent(lexical_only: None, tmp_path: Path) -> None:
    utterances = [Utterance(t, "lost_card", "intent") for t in ENGLISH["lost_card"][:3]]
    utterances += _dialogue({k: v for k, v in ENGLISH.items() if k != "lost_card"})
    result, _, _ = _train(utterances, tmp_path, "en-US", k=0)
    labels = [c.label for c in result.clusters]
    assert "lost_card" in labels and len(labels) >= 2


def test_clusters_have_keywords_representatives_and_distinct_names(
    lexical_only: None, tmp_path: Path
) -> None:
    result, _, _ = _train(_dialogue(ENGLISH), tmp_path, "en-US", k=3)
    texts = {t for group in ENGLISH.values() for t in group}
    for cluster in result.clusters:
        assert cluster.keywords and len(cluster.keywords) <= 8
        assert 1 <= len(cluster.representatives) <= 5
        assert set(cluster.representatives) <= texts
        assert cluster.intent is None
    assert len({c.label for c in result.clusters}) == 3
    keywords = {w for c in result.clusters for w in " ".join(c.keywords).split()}
    assert {"card", "balance", "money"} <= keywords  # surface words, not stems like "balanc"


def test_assign_returns_the_nearest_cluster_with_a_score_in_0_1(
    lexical_only: None, tmp_path: Path
) -> None:
    _, out, _ = _train(_dialogue(TURKISH), tmp_path, "tr-TR", k=3)
    model = load_model(out)
    by_topic = {
        c.cluster_id: name
        for c in model.clusters()
        for name, texts in TURKISH.items()
        if c.representatives[0] in texts
    }
    near, unrelated = model.assign(["KARTIM KAYIP, KAYBETTİM", "zzz qqq"])
    assert by_topic[near.cluster_id] == "kayip_kart"
    assert 0.0 <= unrelated.score <= near.score <= 1.0
    assert near.score > 0.6
    assert model.assign([]) == []


def test_the_saved_model_is_data_only_and_round_trips(lexical_only: None, tmp_path: Path) -> None:
    result, out, _ = _train(_dialogue(ARABIC), tmp_path, "ar-SA", k=3)
    assert {p.suffix for p in out.iterdir()} == {".npy", ".json"}
    for array in out.glob("*.npy"):
        np.load(array, allow_pickle=False)  # no object arrays
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["libraries"]["scikit-learn"]
    model = load_model(out)
    assert model.clusters() == result.clusters
    assert model.metrics == result.metrics
    again = load_model(out)
    texts = ["فقدت بطاقتي البنكية", "كم رصيدي"]
    assert model.assign(texts) == again.assign(texts)


def test_an_incomplete_or_foreign_model_directory_is_refused(
    lexical_only: None, tmp_path: Path
) -> None:
    _, out, _ = _train(_dialogue(ENGLISH), tmp_path, "en-US", k=3)
    (out / MANIFEST).unlink()  # what a crash before the last write leaves
    with pytest.raises(ModelFormatError, match="no complete clustering model"):
        load_model(out)
    (out / MANIFEST).write_text('{"format": "something-else"}', encoding="utf-8")
    with pytest.raises(ModelFormatError):
        load_model(out)
    (out / MANIFEST).write_text("not json", encoding="utf-8")
    with pytest.raises(ModelFormatError):
        load_model(out)


def test_progress_goes_through_the_statuses_in_order(lexical_only: None, tmp_path: Path) -> None:
    _, _, progress = _train(_dialogue(ENGLISH), tmp_path, "en-US", k=0)
    statuses = [s for s, _ in progress.events]
    order = ["DataProcessing", "TrainingStarted", "Training", "Trained"]
    assert [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s] == order
    percents = [p for _, p in progress.events]
    assert percents == sorted(percents) and percents[0] == 0.0 and percents[-1] == 100.0


@pytest.mark.parametrize(
    ("utterances", "message"),
    [
        ([Utterance("only one", None, "dialogue")], "at least 2"),
        ([Utterance("...", None, "dialogue"), Utterance("!!", None, "dialogue")], "no words"),
    ],
)
def test_data_that_cannot_be_clustered_is_a_value_error(
    lexical_only: None, tmp_path: Path, utterances: list[Utterance], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        train(utterances, ClusteringParams("en-US", 0), tmp_path / "m", Progress())


def test_with_the_packaged_encoder_english_uses_dense_features_and_serves_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    utterances = _dialogue(ENGLISH)
    result, out, _ = _train(utterances, tmp_path, "en-US", k=3)
    assert dict(result.metrics)["dense_embeddings"] == 1.0
    with_encoder = load_model(out)
    assert _same_partition(_labels(with_encoder, utterances), _truth(ENGLISH))
    # Where the encoder is not installed, the lexical centroids still assign.
    monkeypatch.setenv(MODEL_VAR, "none")
    lexical = load_model(out)
    assert _same_partition(_labels(lexical, utterances), _truth(ENGLISH))


def test_turkish_gets_no_english_encoder(tmp_path: Path) -> None:
    result, _, _ = _train(_dialogue(TURKISH), tmp_path, "tr-TR", k=3)
    assert dict(result.metrics)["dense_embeddings"] == 0.0


# -- naming ----------------------------------------------------------------------------------


def test_keyword_namer_joins_distinct_keyword_words() -> None:
    name = KeywordNamer().name(["bank transfer", "transfer", "money"], [], "en-US")
    assert name == "bank_transfer_money"
    assert KeywordNamer().name([], ["..."], "en-US") == "cluster"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


def test_openai_namer_asks_the_chat_model_through_the_sdk(server: OpenAIServer) -> None:
    server.chat = lambda request: '"lost_card"\n'
    namer = OpenAINamer(base_url=server.base_url, api_key=server.api_key, model="gpt-test")
    name = namer.name(["card", "lost"], ["I lost my card", "card stolen"], "en-US")
    assert name == "lost_card"
    (request,) = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert request.body["model"] == "gpt-test"
    prompt = request.body["messages"][-1]["content"]
    assert "I lost my card" in prompt and "card, lost" in prompt and "en-US" in prompt


def test_openai_namer_names_clusters_during_training(
    lexical_only: None, server: OpenAIServer, tmp_path: Path
) -> None:
    server.chat = lambda request: "topic " + str(len(server.requests))
    namer = OpenAINamer(base_url=server.base_url, api_key=server.api_key, model="gpt-test")
    result = train(
        _dialogue(ENGLISH), ClusteringParams("en-US", 3), tmp_path / "m", Progress(), namer
    )
    assert sorted(c.label for c in result.clusters) == ["topic 1", "topic 2", "topic 3"]


def test_openai_namer_retries_then_falls_back_to_keywords(server: OpenAIServer) -> None:
    server.chat_error = ApiError(500, "the provider is down", "server_error")
    namer = OpenAINamer(base_url=server.base_url, api_key=server.api_key, model="gpt-test")
    assert namer.name(["card", "lost"], ["I lost my card"], "en-US") == "card_lost"
    assert len([r for r in server.requests if r.path == "/v1/chat/completions"]) == 3


def test_openai_namer_does_not_retry_a_refused_key(server: OpenAIServer) -> None:
    namer = OpenAINamer(base_url=server.base_url, api_key="wrong-key", model="gpt-test")
    assert namer.name(["balance"], ["my balance"], "en-US") == "balance"
    assert len([r for r in server.requests if r.path == "/v1/chat/completions"]) == 1


def test_automatic_k_never_exceeds_the_cap() -> None:
    """100 tight, far-apart groups of 4 points: silhouette alone would pick ~100 clusters;
    automatic k stops at the intents + √distinct (here 0 + 20)."""
    from trainyard.trainers.clustering.training import _choose_k, auto_k_cap

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 64))
    points = np.repeat(centres, 4, axis=0) + rng.normal(scale=0.01, size=(400, 64))
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    pinned = np.full(len(points), -1, dtype=np.int64)
    k = _choose_k(points, pinned, 0, len(points), 0, lambda *_: None)
    assert auto_k_cap(0, 400) == 20
    assert 2 <= k <= 20
    # With intents the cap moves up by their number.
    assert auto_k_cap(7, 400) == 27
