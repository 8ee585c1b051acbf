"""Clustering trainings end to end with the real trainer (a job-runner workload running
`python -m trainyard.trainers.clustering`), through Envoy: every status in order, metrics,
publication on progress, ready, assign and clusters, LLM naming against the one
OpenAI-compatible test server, forceTrain both ways, Turkish and Arabic data, and the idle
unpublish with its 503 and the republish without retraining."""

# Turkish text on purpose: the dotless i is what these tests are about.
# ruff: noqa: RUF001

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.clustering.support import STATUSES, Clustering, start_clustering
from tests.support.openai_server import OpenAIServer
from tests.support.wait import eventually

TOPICS = {
    "password": [
        "I forgot my password",
        "how do I reset my password",
        "password reset link is not working",
        "I cannot log in, my password is wrong",
        "change my account password please",
        "the password reset email never arrived",
    ],
    "billing": [
        "I was charged twice this month",
        "there is a double charge on my credit card",
        "why is my bill so high",
        "I need a refund for the extra charge",
        "my invoice shows a wrong amount",
        "the payment was taken two times",
    ],
    "delivery": [
        "where is my package",
        "my order has not arrived yet",
        "the delivery is late again",
        "track my shipment please",
        "the courier never delivered my parcel",
        "when will my order be delivered",
    ],
}


def dialogue_csv(topics: dict[str, list[str]]) -> bytes:
    rows = ["conversation_id,speaker,text"]
    n = 0
    for texts in topics.values():
        for text in texts:
            n += 1
            rows.append(f'c{n},customer,"{text}"')
            rows.append(f"c{n},agent,Let me check that for you")
    return ("\n".join(rows) + "\n").encode()


def intent_csv(topics: dict[str, list[str]]) -> bytes:
    rows = ["text,intent"]
    for intent, texts in topics.items():
        rows += [f'"{t} now",{intent}' for t in texts[:3]]
    return ("\n".join(rows) + "\n").encode()


def form(model_id: str, **over: str) -> dict[str, str]:
    return {
        "modelId": model_id,
        "productName": "support",
        "languageCode": "en-US",
        "dataSchema": "dialogue",
        "numClusters": "3",
        "forceTrain": "false",
        **over,
    }


#: Every training status in the document's order, but Failed.
ORDER = list(STATUSES[:-1])


def name_from_prompt(request: dict[str, Any]) -> str:
    """The test provider's answer: a name chosen from the examples in the prompt."""
    prompt = request["messages"][-1]["content"].lower()
    if "password" in prompt:
        return "Password help"
    if "charge" in prompt or "refund" in prompt or "bill" in prompt:
        return "Billing issue"
    return "Delivery status"


@pytest.fixture(scope="module")
def llm() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        server.chat = name_from_prompt
        yield server


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, llm: OpenAIServer) -> Iterator[Clustering]:
    c = start_clustering(
        tmp_path_factory.mktemp("clustering-e2e"),
        openai_base_url=llm.base_url,
        openai_api_key=llm.api_key,
        openai_model="test-model",
    )
    try:
        yield c
    finally:
        c.harness.close()


@pytest.fixture(scope="module")
def trained(svc: Clustering) -> dict[str, Any]:
    """One completed training with dialogue and intent data and LLM names."""
    model_id = f"support-{uuid.uuid4().hex[:8]}"
    files = {
        "dataFile": ("dialogues.csv", dialogue_csv(TOPICS)),
        "secondaryDataFile": ("intents.csv", intent_csv(TOPICS)),
    }
    resp = svc.train(form(model_id, secondaryDataSchema="intent", llm="openai"), files)
    assert resp.status_code == 200, resp.text
    done = svc.wait_status(model_id, ["Completed", "Failed"])
    assert done["trainingStatus"] == "Completed", svc.harness.loop.run(svc.store.latest(model_id))
    return {"model_id": model_id, "experiment": resp.json(), "files": files}


def test_progress_goes_through_every_status_in_order(
    svc: Clustering, trained: dict[str, Any]
) -> None:
    assert svc.history(trained["experiment"]["id"]) == ORDER
    view = svc.harness.loop.run(svc.store.latest(trained["model_id"]))
    names = {m["name"] for m in view.metrics}
    assert {"silhouette", "ari", "nmi", "purity"} <= names, names
    assert view.percent == 100


def test_progress_publishes_then_ready_assign_and_clusters(
    svc: Clustering, trained: dict[str, Any]
) -> None:
    model_id = trained["model_id"]
    first = svc.progress(model_id)
    assert first["trainingStatus"] == "Completed" and first["percent"] == 100
    assert first["inferenceStatus"] in ("Pending", "Running")
    svc.wait_ready(model_id)
    resp = svc.assign(model_id, ["I lost my password", "where is my parcel"])
    assert resp.status_code == 200, resp.text
    a, b = resp.json()["assignments"]
    assert a["text"] == "I lost my password" and 0 <= a["score"] <= 1
    assert a["clusterId"] != b["clusterId"]
    clusters = svc.get(model_id, "clusters")
    assert clusters.status_code == 200, clusters.text
    found = clusters.json()["clusters"]
    assert len(found) == 3
    assert sum(c["size"] for c in found) >= 18
    assert {c["intent"] for c in found} == {"password", "billing", "delivery"}
    assert all(c["keywords"] and c["representatives"] for c in found)
    # Clusters anchored by intent data are named after their intent.
    assert {c["label"] for c in found} == {"password", "billing", "delivery"}
    assert a["label"] == "password"


def test_llm_openai_names_the_clusters(svc: Clustering, llm: OpenAIServer) -> None:
    model_id = f"named-{uuid.uuid4().hex[:8]}"
    resp = svc.train(form(model_id, llm="openai"), {"dataFile": ("d.csv", dialogue_csv(TOPICS))})
    assert resp.status_code == 200, resp.text
    assert svc.wait_status(model_id, ["Completed", "Failed"])["trainingStatus"] == "Completed"
    found = svc.get(model_id, "clusters").json()["clusters"]
    # The names come from the provider, through the real SDK, with the configured model.
    assert {c["label"] for c in found} == {"Password help", "Billing issue", "Delivery status"}
    chats = [r for r in llm.requests if r.path.endswith("/chat/completions")]
    assert chats and all(r.body["model"] == "test-model" for r in chats)


def test_assign_limits(svc: Clustering, trained: dict[str, Any]) -> None:
    model_id = trained["model_id"]
    svc.progress(model_id)
    svc.wait_ready(model_id)
    assert svc.assign(model_id, []).status_code == 400
    too_many = svc.assign(model_id, ["x"] * 1001)
    assert too_many.status_code == 400 and "1 to 1000" in too_many.json()["message"]


def test_force_train_false_with_unchanged_data_redeploys(
    svc: Clustering, trained: dict[str, Any]
) -> None:
    model_id = trained["model_id"]
    svc.progress(model_id)
    svc.wait_ready(model_id)
    resp = svc.train(form(model_id, secondaryDataSchema="intent", llm="openai"), trained["files"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] != trained["experiment"]["id"]
    assert (body["status"], body["statusMessage"], body["percent"]) == (8, "Completed", 100)
    assert {m["name"] for m in body["experimentMetrics"]} >= {"silhouette", "nmi"}
    assert svc.history(body["id"]) == ["Initialized", "Completed"]
    # The model was published (earlier tests): the same artifact keeps serving.
    assert body["endpoints"] == [
        f"/sestekai-api/api/external/trainings/{model_id}/assign",
        f"/sestekai-api/api/external/trainings/{model_id}/clusters",
    ]
    view = svc.harness.loop.run(svc.store.get(body["id"]))
    assert view.job_id is None  # no workload ran
    svc.wait_ready(model_id)


def test_force_train_true_or_changed_data_retrains(
    svc: Clustering, trained: dict[str, Any]
) -> None:
    model_id = trained["model_id"]
    forced = svc.train(
        form(model_id, secondaryDataSchema="intent", llm="openai", forceTrain="true"),
        trained["files"],
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["status"] < 8
    svc.wait_status(model_id, ["Completed", "Failed"])
    assert svc.history(forced.json()["id"]) == ORDER
    more = dict(TOPICS, password=[*TOPICS["password"], "my password expired"])
    changed = svc.train(form(model_id), {"dataFile": ("d.csv", dialogue_csv(more))})
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] < 8
    assert svc.wait_status(model_id, ["Completed", "Failed"])["trainingStatus"] == "Completed"
    assert svc.history(changed.json()["id"]) == ORDER


TURKISH = {
    "şifre": [
        "Şifremi unuttum, nasıl sıfırlarım?",
        "İnternet şubesi şifresi çalışmıyor",
        "şifre sıfırlama mesajı gelmedi",
        "Hesabıma giriş yapamıyorum, şifre yanlış diyor",
    ],
    "kargo": [
        "Kargom hâlâ gelmedi",
        "Siparişim nerede, ısrarla soruyorum",
        "Kargo takip numarası çalışmıyor",
        "Paketim geç teslim edildi",
    ],
}
ARABIC = {
    "password": [
        "نسيت كلمة المرور الخاصة بي",
        "كيف يمكنني إعادة تعيين كلمة المرور؟",
        "رابط إعادة تعيين كلمة المرور لا يعمل",
        "لا أستطيع تسجيل الدخول إلى حسابي",
    ],
    "delivery": [
        "أين طلبي؟ لم يصل بعد",
        "تأخر توصيل الطرد كثيرا",
        "رقم تتبع الشحنة لا يعمل",
        "متى سيتم توصيل طلبي؟",
    ],
}


@pytest.mark.parametrize(("language", "topics"), [("tr-TR", TURKISH), ("ar-SA", ARABIC)])
def test_turkish_and_arabic_data_round_trip(
    svc: Clustering, language: str, topics: dict[str, list[str]]
) -> None:
    model_id = f"{language.lower()}-{uuid.uuid4().hex[:8]}"
    resp = svc.train(
        form(model_id, languageCode=language, numClusters="2"),
        {"dataFile": ("d.csv", b"\xef\xbb\xbf" + dialogue_csv(topics))},
    )
    assert resp.status_code == 200, resp.text
    assert svc.wait_status(model_id, ["Completed", "Failed"])["trainingStatus"] == "Completed"
    clusters = svc.get(model_id, "clusters").json()["clusters"]
    sent = {t for texts in topics.values() for t in texts}
    shown = {r for c in clusters for r in c["representatives"]}
    assert shown and shown <= sent  # byte-exact: every representative is one of the inputs
    svc.progress(model_id)
    svc.wait_ready(model_id)
    first = next(iter(topics.values()))[0]
    [assigned] = svc.assign(model_id, [first]).json()["assignments"]
    assert assigned["text"] == first


def test_idle_unpublish_then_503_then_republish_without_retraining(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    c = start_clustering(
        tmp_path_factory.mktemp("clustering-idle"),
        idle_unpublish_seconds=2.0,
        idle_check_seconds=0.2,
    )
    try:
        model_id = f"idle-{uuid.uuid4().hex[:8]}"
        files = {"dataFile": ("d.csv", dialogue_csv(TOPICS))}
        assert c.train(form(model_id), files).status_code == 200
        assert c.wait_status(model_id, ["Completed", "Failed"])["trainingStatus"] == "Completed"
        assert c.progress(model_id)["inferenceStatus"] in ("Pending", "Running")
        c.wait_ready(model_id)
        # No inference request: the model is unpublished after the idle period.
        eventually(
            lambda: c.get(model_id, "ready").text == "false",
            timeout=60,
            message="the idle model was never unpublished",
        )
        refused = c.assign(model_id, ["where is my package"])
        assert refused.status_code == 503, refused.text
        assert refused.json()["message"] == (
            "Published model is currently unavailable due to inactivity timeout"
        )
        assert c.progress(model_id)["inferenceStatus"] is None
        again = c.train(form(model_id), files)
        assert again.status_code == 200, again.text
        assert again.json()["statusMessage"] == "Completed"
        assert c.history(again.json()["id"]) == ["Initialized", "Completed"]
        eventually(
            lambda: c.get(model_id, "ready").text == "true",
            timeout=60,
            message="the model was never republished",
        )
    finally:
        c.harness.close()
