"""NDB search, sources, feedback and ndb-retrain (/api/v2/model/{id}/search, upvote, associate,
implicit-feedback, sources; /api/v2/train/ndb-retrain) as a user sees them through real Envoy:
what is refused and why (these need no trained model: an unknown id, another user's private
model, a model of another type, a model that is not complete, and every bound of the bodies)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.harness import TEST_SECRET
from tests.support.platform import Platform, start_platform, unique_name
from trainyard.orchestrator.app import build as build_orchestrator
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.runtime.settings import CommonSettings

RETRAIN_PREFIX = "unable to start ndb training, found the following errors: "
UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = start_platform(tmp_path_factory.mktemp("ndb-api"))
    try:
        yield p
    finally:
        p.harness.close()


def _post(
    platform: Platform, model_id: str, action: str, body: dict[str, Any], user: str = "alice"
) -> httpx.Response:
    return httpx.post(
        f"{platform.http}/api/v2/model/{model_id}/{action}",
        headers=platform.headers(user),
        json=body,
        timeout=60,
    )


def _sources(
    platform: Platform, model_id: str, user: str = "alice", **params: Any
) -> httpx.Response:
    return httpx.get(
        f"{platform.http}/api/v2/model/{model_id}/sources",
        headers=platform.headers(user),
        params=params,
        timeout=60,
    )


def _failed_ndb(platform: Platform, user: str = "alice") -> str:
    """An ndb model whose training failed (nothing in it can be indexed)."""
    upload = platform.upload([("picture.bin", b"\x00\x01\x02 not a document")], user=user)
    resp = platform.train(
        "ndb",
        {
            "model_name": unique_name("ndb"),
            "data": {"unsupervised_files": [{"location": "upload", "path": upload}]},
        },
        user=user,
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    assert platform.wait_final(model_id, user)["status"] == "failed"
    return model_id


def _text_model(platform: Platform) -> str:
    """An nlp-text model (whatever its status: its type alone rules it out)."""
    upload = platform.upload([("train.csv", b"text,label\ngood film,pos\nbad film,neg\n")])
    resp = platform.train(
        "nlp-text",
        {
            "model_name": unique_name("text"),
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": 2,
            },
            "data": {"supervised_files": [{"location": "upload", "path": upload}]},
        },
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    return model_id


@pytest.fixture(scope="module")
def failed_ndb(platform: Platform) -> str:
    return _failed_ndb(platform)


FEEDBACK_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("search", {"query": "hello"}),
    ("upvote", {"text_id_pairs": [{"query_text": "hello", "reference_id": "doc.txt#0"}]}),
    ("associate", {"text_pairs": [{"source": "hi", "target": "hello"}]}),
    (
        "implicit-feedback",
        {"query_text": "hello", "reference_id": "doc.txt#0", "event": "click"},
    ),
]


@pytest.mark.parametrize(("action", "body"), FEEDBACK_CALLS, ids=[a for a, _ in FEEDBACK_CALLS])
def test_unknown_foreign_other_type_and_unfinished_models_are_refused(
    platform: Platform, failed_ndb: str, action: str, body: dict[str, Any]
) -> None:
    unknown = _post(platform, UNKNOWN, action, body)
    assert unknown.status_code == 404, unknown.text
    assert UNKNOWN in unknown.json()["message"]

    foreign = _post(platform, failed_ndb, action, body, user="mallory")
    assert foreign.status_code == 403, foreign.text
    assert "read access" in foreign.json()["message"]

    text_model = _text_model(platform)
    other_type = _post(platform, text_model, action, body)
    assert other_type.status_code == 422, other_type.text
    assert "is a nlp-text model" in other_type.json()["message"]
    assert "need an ndb model" in other_type.json()["message"]

    unfinished = _post(platform, failed_ndb, action, body)
    assert unfinished.status_code == 422, unfinished.text
    assert "its training is failed, not complete" in unfinished.json()["message"]


def test_sources_of_unknown_foreign_and_unfinished_models_are_refused(
    platform: Platform, failed_ndb: str
) -> None:
    assert _sources(platform, UNKNOWN).status_code == 404
    assert _sources(platform, failed_ndb, user="mallory").status_code == 403
    unfinished = _sources(platform, failed_ndb)
    assert unfinished.status_code == 422, unfinished.text
    assert "not complete" in unfinished.json()["message"]
    assert _sources(platform, failed_ndb, page_size=-1).status_code == 422
    garbage = _sources(platform, failed_ndb, page_token="not-a-token!")
    assert garbage.status_code == 422, garbage.text
    assert "page_token" in garbage.json()["message"]


def _violations(resp: httpx.Response) -> str:
    assert resp.status_code == 422, resp.text
    message: str = resp.json()["message"]
    return message


BAD_SEARCHES: list[tuple[dict[str, Any], str]] = [
    ({"query": "a", "queries": ["b"]}, "give either query or queries"),
    ({}, "give either query or queries"),
    ({"queries": ["q"] * 1001}, "at most 1000 entries"),
    ({"query": "x" * 100_001}, "at most 100000 characters"),
    ({"query": "a", "top_k": 0}, "top_k must be from 1 to 100"),
    ({"query": "a", "top_k": 101}, "top_k must be from 1 to 100"),
    ({"queries": ["q"] * 1000, "top_k": 11}, "at most 10000 references"),
    ({"query": "a", "constraints": {"year": {"gt": 3}}}, "must be a string, number or boolean"),
    ({"query": "a", "constraints": {"year": []}}, "at least one value"),
    ({"query": "a", "constraints": {"year": [{"a": 1}]}}, "only strings, numbers or booleans"),
    ({"query": "a", "constraints": {"year": None}}, "must be a string, number or boolean"),
    ({"query": "a", "constraints": {f"k{i}": 1 for i in range(101)}}, "at most 100 metadata"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_SEARCHES)
def test_search_bodies_are_checked(
    platform: Platform, failed_ndb: str, body: dict[str, Any], expected: str
) -> None:
    assert expected in _violations(_post(platform, failed_ndb, "search", body))


def _pair(**overrides: str) -> dict[str, str]:
    return {"query_text": "what is it", "reference_id": "doc.txt#0", **overrides}


BAD_FEEDBACK: list[tuple[str, dict[str, Any], str]] = [
    ("upvote", {"text_id_pairs": []}, "text_id_pairs must hold at least one pair"),
    ("upvote", {"text_id_pairs": [_pair()] * 1001}, "at most 1000 pairs a call"),
    ("upvote", {"text_id_pairs": [_pair(query_text=" ")]}, "query_text must not be empty"),
    (
        "upvote",
        {"text_id_pairs": [_pair(), _pair(query_text="q" * 1001)]},
        "text_id_pairs[1].query_text must be at most 1000 characters",
    ),
    (
        "upvote",
        {"text_id_pairs": [_pair(reference_id="r" * 4097)]},
        "reference_id must be at most 4096 characters",
    ),
    ("upvote", {"text_id_pairs": [_pair(query_text="a\x00b")]}, "must not contain NUL"),
    ("associate", {"text_pairs": []}, "text_pairs must hold at least one pair"),
    (
        "associate",
        {"text_pairs": [{"source": "same", "target": " same "}]},
        "text_pairs[0] associates a phrase with itself",
    ),
    ("associate", {"text_pairs": [{"source": "x", "target": ""}]}, "target must not be empty"),
    (
        "associate",
        {"text_pairs": [{"source": "s" * 1001, "target": "t"}]},
        "source must be at most 1000 characters",
    ),
    ("implicit-feedback", {"query_text": "q", "reference_id": "r"}, "event is required"),
    (
        "implicit-feedback",
        {"query_text": "q", "reference_id": "r", "event": "a click"},
        "event must be 1 to 64 letters",
    ),
    (
        "implicit-feedback",
        {"query_text": "", "reference_id": "r", "event": "click"},
        "query_text must not be empty",
    ),
]


@pytest.mark.parametrize(("action", "body", "expected"), BAD_FEEDBACK)
def test_feedback_bodies_are_checked(
    platform: Platform, failed_ndb: str, action: str, body: dict[str, Any], expected: str
) -> None:
    assert expected in _violations(_post(platform, failed_ndb, action, body))


def test_retrain_needs_a_complete_ndb_base_the_caller_may_read(
    platform: Platform, failed_ndb: str
) -> None:
    def retrain(base: str, user: str = "alice") -> httpx.Response:
        return platform.train(
            "ndb-retrain", {"model_name": unique_name("retrain"), "base_model_id": base}, user=user
        )

    missing = retrain("")
    assert missing.status_code == 422, missing.text
    assert missing.json()["message"] == RETRAIN_PREFIX + "base_model_id is required"
    assert retrain(UNKNOWN).status_code == 404
    assert retrain(failed_ndb, user="mallory").status_code == 403
    unfinished = retrain(failed_ndb)
    assert unfinished.status_code == 422, unfinished.text
    assert unfinished.json()["message"].startswith(RETRAIN_PREFIX)
    assert "is not complete" in unfinished.json()["message"]
    other_type = retrain(_text_model(platform))
    assert other_type.status_code == 422, other_type.text
    assert "not a ndb model" in other_type.json()["message"]


# ---- a trained model: search, sources, feedback, restart, retrain -------------------------------

GUIDE = """Brewing espresso at home

A good espresso needs finely ground coffee, water just off the boil and nine bars of pressure.
Tamp the grounds evenly and pull the shot for about twenty-five seconds.

Caring for a lawn

Mow the grass high in summer, water deeply once a week, and feed the lawn in autumn so the
roots grow strong before winter.
"""

PRODUCTS = (
    "id,text,category,brand\n"
    "p-kettle,Electric kettle that boils water in two minutes,kitchen,Acme\n"
    "p-grinder,Burr coffee grinder for an even espresso grind,kitchen,Beanco\n"
    "p-mower,Cordless lawn mower with a wide cutting deck,garden,Acme\n"
    "p-hose,Expanding garden hose for watering the lawn,garden,Flowy\n"
    "p-lamp,Desk lamp with a warm dimmable light,office,Acme\n"
)


def _search(
    platform: Platform, model_id: str, body: dict[str, Any], user: str = "alice"
) -> list[dict[str, Any]]:
    resp = _post(platform, model_id, "search", body, user=user)
    assert resp.status_code == 200, resp.text
    results: list[dict[str, Any]] = resp.json()["results"]
    return results


def _top(platform: Platform, model_id: str, query: str, top_k: int = 5) -> list[str]:
    (result,) = _search(platform, model_id, {"query": query, "top_k": top_k})
    return [ref["doc_id"] for ref in result["references"]]


def _train(platform: Platform, user: str = "alice") -> str:
    upload = platform.upload(
        [("guide.txt", GUIDE.encode()), ("products.csv", PRODUCTS.encode())], user=user
    )
    resp = platform.train(
        "ndb",
        {
            "model_name": unique_name("ndb"),
            "data": {"unsupervised_files": [{"location": "upload", "path": upload}]},
        },
        user=user,
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    status = platform.wait_final(model_id, user)
    assert status["status"] == "complete", status
    return model_id


@pytest.fixture(scope="module")
def trained(platform: Platform) -> str:
    return _train(platform)


def test_search_answers_single_and_batched_queries_best_first(
    platform: Platform, trained: str
) -> None:
    (single,) = _search(platform, trained, {"query": "burr grinder for espresso", "top_k": 3})
    assert single["query"] == "burr grinder for espresso"
    refs = single["references"]
    assert 1 <= len(refs) <= 3
    best = refs[0]
    assert best["doc_id"] == "p-grinder"
    assert best["id"].startswith("p-grinder")
    assert best["source"] == "products.csv"
    assert "grinder" in best["text"].lower()
    assert best["metadata"] == {"category": "kitchen", "brand": "Beanco"}
    scores = [r["score"] for r in refs]
    assert scores == sorted(scores, reverse=True)

    queries = ["cordless mower", "how long to pull an espresso shot", "dimmable desk lamp"]
    batch = _search(platform, trained, {"queries": queries})
    assert [r["query"] for r in batch] == queries
    assert [r["references"][0]["doc_id"] for r in batch] == ["p-mower", "guide.txt", "p-lamp"]
    assert all(len(r["references"]) <= 5 for r in batch)  # top_k defaults to 5
    guide = batch[1]["references"][0]
    assert guide["source"] == "guide.txt" and guide["id"].startswith("guide.txt#")

    # An ndb model answers search, not predict.
    predict = _post(platform, trained, "predict", {"query": "kettle"})
    assert predict.status_code == 422, predict.text
    assert f"/api/v2/model/{trained}/search" in predict.json()["message"]


def test_search_constraints_keep_matching_metadata_only(platform: Platform, trained: str) -> None:
    (garden,) = _search(
        platform, trained, {"query": "water", "top_k": 10, "constraints": {"category": "garden"}}
    )
    assert {r["doc_id"] for r in garden["references"]} == {"p-hose"}
    (acme,) = _search(
        platform,
        trained,
        {"query": "lamp mower kettle", "top_k": 10, "constraints": {"brand": ["Acme", "Flowy"]}},
    )
    assert {r["metadata"]["brand"] for r in acme["references"]} <= {"Acme", "Flowy"}
    assert {"p-lamp", "p-mower", "p-kettle"} <= {r["doc_id"] for r in acme["references"]}
    (nothing,) = _search(
        platform, trained, {"query": "water", "constraints": {"category": "bathroom"}}
    )
    assert nothing["references"] == []


def test_sources_list_every_document_a_page_at_a_time(platform: Platform, trained: str) -> None:
    whole = _sources(platform, trained)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["next_page_token"] == ""
    by_id = {s["doc_id"]: s for s in body["sources"]}
    assert set(by_id) == {"guide.txt", "p-kettle", "p-grinder", "p-mower", "p-hose", "p-lamp"}
    assert by_id["guide.txt"]["source"] == "guide.txt"
    assert by_id["guide.txt"]["chunk_count"] >= 1
    assert by_id["p-lamp"] == {"doc_id": "p-lamp", "source": "products.csv", "chunk_count": 1}
    paged: list[str] = []
    token = ""
    while True:
        params: dict[str, Any] = {"page_size": 4}
        if token:
            params["page_token"] = token
        page = _sources(platform, trained, **params).json()
        assert len(page["sources"]) <= 4
        paged += [s["doc_id"] for s in page["sources"]]
        token = page["next_page_token"]
        if not token:
            break
    assert paged == [s["doc_id"] for s in body["sources"]]


def test_feedback_names_only_references_of_the_model(platform: Platform, trained: str) -> None:
    (result,) = _search(platform, trained, {"query": "kettle"})
    real = result["references"][0]["id"]
    bad = _post(
        platform,
        trained,
        "upvote",
        {
            "text_id_pairs": [
                {"query_text": "kettle", "reference_id": real},
                {"query_text": "kettle", "reference_id": "no-such-doc#7"},
            ]
        },
    )
    assert bad.status_code == 422, bad.text
    assert "'no-such-doc#7'" in bad.json()["message"]
    implicit = _post(
        platform,
        trained,
        "implicit-feedback",
        {"query_text": "kettle", "reference_id": "/etc/passwd", "event": "click"},
    )
    assert implicit.status_code == 422, implicit.text
    assert "'/etc/passwd'" in implicit.json()["message"]
    # Another user may not give feedback on alice's private model.
    foreign = _post(
        platform,
        trained,
        "upvote",
        {"text_id_pairs": [{"query_text": "kettle", "reference_id": real}]},
        user="mallory",
    )
    assert foreign.status_code == 403, foreign.text


def _restart_orchestrator(platform: Platform) -> None:
    """Stop the orchestrator and start a new one on the same database and storage (and Envoy
    in front of it again, since the new one listens on another port)."""
    harness = platform.harness
    harness.stop_server("orchestrator")
    common = CommonSettings(
        data_dir=platform.data,
        auth_secret=TEST_SECRET,
        upload_address=harness.servers["upload"].address,
        jobrunner_address=harness.servers["jobrunner"].address,
    )
    own = OrchestratorSettings(database_url=f"sqlite+aiosqlite:///{platform.data / 'o.db'}")
    harness.start_app("orchestrator", harness.loop.run(build_orchestrator(common, own)))
    assert harness.envoy is not None
    harness.envoy.stop()
    harness.start_envoy()


def test_upvotes_and_associations_survive_a_restart_and_retrain_the_rankings(
    platform: Platform, trained: str
) -> None:
    upvoted_query = "water for the garden"
    before = _top(platform, trained, upvoted_query, top_k=10)
    assert before[0] != "p-kettle"
    (kettle,) = _search(platform, trained, {"query": "electric kettle", "top_k": 1})
    kettle_ref = kettle["references"][0]["id"]
    upvote = _post(
        platform,
        trained,
        "upvote",
        {"text_id_pairs": [{"query_text": upvoted_query, "reference_id": kettle_ref}]},
    )
    assert upvote.status_code == 200, upvote.text
    assert upvote.json() == {"recorded": 1}

    assert _top(platform, trained, "zorblax")[:1] != ["p-lamp"]
    associate = _post(
        platform,
        trained,
        "associate",
        {"text_pairs": [{"source": "zorblax", "target": "dimmable desk lamp"}]},
    )
    assert associate.status_code == 200, associate.text
    assert associate.json() == {"recorded": 1}
    implicit = _post(
        platform,
        trained,
        "implicit-feedback",
        {"query_text": "boil water", "reference_id": kettle_ref, "event": "click"},
    )
    assert implicit.status_code == 200, implicit.text

    _restart_orchestrator(platform)

    resp = platform.train(
        "ndb-retrain", {"model_name": unique_name("retrained"), "base_model_id": trained}
    )
    assert resp.status_code == 200, resp.text
    retrained: str = resp.json()["model_id"]
    status = platform.wait_final(retrained)
    assert status["status"] == "complete", status
    info = httpx.get(
        f"{platform.http}/api/v2/model/{retrained}", headers=platform.headers(), timeout=30
    ).json()
    assert info["type"] == "ndb" and info["base_model_id"] == trained

    assert _top(platform, retrained, upvoted_query)[0] == "p-kettle"
    assert _top(platform, retrained, "zorblax")[0] == "p-lamp"
    # The base model is unchanged.
    assert _top(platform, trained, upvoted_query, top_k=10) == before

    # The new model has no feedback of its own yet.
    again = platform.train(
        "ndb-retrain", {"model_name": unique_name("again"), "base_model_id": retrained}
    )
    assert again.status_code == 422, again.text
    message = again.json()["message"]
    assert message.startswith(RETRAIN_PREFIX), message
    assert "no feedback" in message


def test_readers_of_a_public_model_give_feedback_and_retrain_on_their_own_and_the_owners(
    platform: Platform,
) -> None:
    model_id = _train(platform, user="olga")
    access = httpx.post(
        f"{platform.http}/api/v2/model/{model_id}/access",
        headers=platform.headers("olga"),
        json={"access": "public"},
        timeout=30,
    )
    assert access.status_code == 200, access.text
    (result,) = _search(platform, model_id, {"query": "kettle"}, user="bob")
    ref = result["references"][0]["id"]
    for user in ("olga", "bob", "carol"):
        resp = _post(
            platform,
            model_id,
            "upvote",
            {"text_id_pairs": [{"query_text": f"{user}'s query", "reference_id": ref}]},
            user=user,
        )
        assert resp.status_code == 200, (user, resp.text)
    sources = _sources(platform, model_id, user="carol")
    assert sources.status_code == 200, sources.text

    def fed(retrain_user: str) -> set[str]:
        resp = platform.train(
            "ndb-retrain",
            {"model_name": unique_name("retrain"), "base_model_id": model_id},
            user=retrain_user,
        )
        assert resp.status_code == 200, resp.text
        with sqlite3.connect(platform.data / "o.db") as db:
            (raw,) = db.execute(
                "SELECT train_config FROM orchestrator_models WHERE id = ?",
                (resp.json()["model_id"],),
            ).fetchone()
        config = json.loads(raw)["config"]
        assert config["base_model"]["model_id"] == model_id
        return {u["query_text"] for u in config["feedback"]["upvotes"]}

    assert fed("olga") == {"olga's query", "bob's query", "carol's query"}
    assert fed("bob") == {"olga's query", "bob's query"}

    # The feedback goes with the model.
    deleted = httpx.delete(
        f"{platform.http}/api/v2/model/{model_id}", headers=platform.headers("olga"), timeout=30
    )
    assert deleted.status_code == 200, deleted.text
    with sqlite3.connect(platform.data / "o.db") as db:
        (left,) = db.execute(
            "SELECT count(*) FROM orchestrator_ndb_feedback WHERE model_id = ?", (model_id,)
        ).fetchone()
    assert left == 0
    gone = _post(platform, model_id, "search", {"query": "kettle"}, user="bob")
    assert gone.status_code == 404, gone.text
