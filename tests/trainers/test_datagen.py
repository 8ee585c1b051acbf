"""The datagen trainer: the offline provider for tokens and text (the rows look like the
examples, use only the labels given, come in the sizes asked, the same for the same seed), the
openai provider through the real SDK against tests/support/openai_server.py (its JSON format,
retries, refusals), and the trainer as a process that generates, trains and keeps the data."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import ApiError, OpenAIServer
from tests.support.train_service import RecordingTrainService, serve
from trainyard.blobs import LocalBlobStorage
from trainyard.trainers.datagen.config import DatagenConfig
from trainyard.trainers.datagen.offline import OfflineProvider, faker_kind
from trainyard.trainers.datagen.openai_provider import (
    OpenAIProvider,
    OpenAISettings,
    ProviderRefused,
)
from trainyard.trainers.datagen.tasks import (
    OUTSIDE,
    Entity,
    GenerationError,
    TextTask,
    TokenRow,
    TokenTask,
    split_rows,
)
from trainyard.trainers.nlp_token import inference
from trainyard.workload import Artifacts, ConfigError

PROG = [sys.executable, "-m", "trainyard.trainers.datagen"]

TAGS = (
    Entity("NAME", ("Ada Lovelace", "Grace Hopper"), "a person's full name"),
    Entity("PHONE", ("555-0100",), "a phone number"),
    Entity("EMAIL", (), "an email address"),
)
SAMPLES = (
    TokenRow(("call", "Ada", "Lovelace", "at", "555-0100"), ("O", "NAME", "NAME", "O", "PHONE")),
    TokenRow(("mail", "grace@example.com", "today"), ("O", "EMAIL", "O")),
)
LABELS = (
    Entity("billing", ("I was charged twice for order 4411", "my invoice shows the wrong amount")),
    Entity("shipping", ("my parcel has not arrived since 2024-03-02", "where is my package?")),
    Entity("praise", (), "a customer saying the service was great"),
)


def token_task(sentences: int = 300) -> TokenTask:
    return TokenTask("Extract contact details", TAGS, SAMPLES, sentences, templates_per_sample=4)


def text_task(per_label: int = 40) -> TextTask:
    return TextTask("Route support tickets", LABELS, per_label)


# ---- the offline provider ------------------------------------------------------------------


def test_offline_tokens_look_like_the_examples_and_use_the_given_tags_only() -> None:
    generated = OfflineProvider(seed=1).tokens(token_task(300))
    rows = generated.rows
    assert generated.provider == "offline" and len(rows) == 300
    for row in rows:
        assert len(row.tokens) == len(row.tags) > 0
        assert set(row.tags) <= {"NAME", "PHONE", "EMAIL", OUTSIDE}
        assert all(t and not any(c.isspace() for c in t) for t in row.tokens)
    counts = Counter(tag for row in rows for tag in set(row.tags) - {OUTSIDE})
    # Every tag leads an equal share of the sentences.
    assert min(counts.values()) >= 100, counts
    emails = [t for r in rows for t, g in zip(r.tokens, r.tags, strict=True) if g == "EMAIL"]
    assert all(re.fullmatch(r"[\w.+-]+@[\w-]+\.[\w.]+", e) for e in emails), emails[:5]
    names = {
        " ".join(t for t, g in zip(r.tokens, r.tags, strict=True) if g == "NAME") for r in rows
    }
    # The examples' own values and Faker's names both appear.
    assert "Ada Lovelace" in names and len(names) > 50
    # The samples' carrier words survive in their templates.
    assert any(r.tokens[:1] == ("call",) or "call" in r.tokens for r in rows)
    phones = [t for r in rows for t, g in zip(r.tokens, r.tags, strict=True) if g == "PHONE"]
    assert sum(any(c.isdigit() for c in p) for p in phones) >= 0.9 * len(phones)


def test_offline_generation_is_seeded() -> None:
    first = OfflineProvider(seed=7).tokens(token_task(50)).rows
    assert OfflineProvider(seed=7).tokens(token_task(50)).rows == first
    assert OfflineProvider(seed=8).tokens(token_task(50)).rows != first
    texts = OfflineProvider(seed=7).texts(text_task(10)).rows
    assert OfflineProvider(seed=7).texts(text_task(10)).rows == texts
    assert OfflineProvider(seed=9).texts(text_task(10)).rows != texts


def test_offline_texts_come_from_the_labels_examples_in_the_sizes_asked() -> None:
    rows = OfflineProvider(seed=3).texts(text_task(40)).rows
    assert Counter(r.label for r in rows) == {"billing": 40, "shipping": 40, "praise": 40}
    billing = [r.text for r in rows if r.label == "billing"]
    assert all("charged twice" in t or "invoice" in t for t in billing), billing[:5]
    # Values are varied: the order number is not always the example's.
    assert len({re.sub(r"\D", "", t) for t in billing if "order" in t}) > 3
    praise = [r.text for r in rows if r.label == "praise"]
    assert all("service was great" in t for t in praise)
    assert len(set(billing)) > 10


def test_offline_refuses_a_label_with_nothing_to_build_from() -> None:
    task = TextTask("x", (Entity("a", ("one",)), Entity("b")), 3)
    with pytest.raises(GenerationError, match="label 'b' has no examples and no description"):
        OfflineProvider().texts(task)


def test_a_tag_is_recognised_from_its_name_or_description() -> None:
    assert faker_kind(Entity("EMAIL_ADDRESS")) is not None
    from faker import Faker

    fake = Faker()
    fake.seed_instance(0)
    kind = faker_kind(Entity("X1", (), "the customer's phone number"))
    assert kind is not None and any(c.isdigit() for c in kind(fake))
    assert faker_kind(Entity("ZORP")) is None


def test_split_holds_out_test_size_and_keeps_a_training_row() -> None:
    rows = list(range(10))
    train, test = split_rows(rows, 0.25, seed=0)
    assert len(test) == 2 and len(train) == 8 and sorted(train + test) == rows
    assert split_rows(rows, 0.25, seed=0) == (train, test)
    assert split_rows([1], 0.5, seed=0) == ([1], [])


def test_config_reads_the_request_and_sizes_the_task() -> None:
    raw: dict[str, Any] = {
        "model_id": "m1",
        "task_prompt": "find contacts",
        "token_options": {
            "tags": [{"name": "NAME", "examples": ["Ada"]}, {"name": "PHONE"}],
            "num_samples_per_tag": 30,
            "samples": [{"tokens": ["hi", "Ada"], "tags": ["O", "B-NAME"]}],
        },
    }
    config = DatagenConfig.parse(raw, {})
    assert config.token is not None and config.token.sentences == 60
    assert config.test_size == 0.1 and config.llm_provider is None
    with pytest.raises(ConfigError, match="exactly one of token_options and text_options"):
        DatagenConfig.parse({**raw, "text_options": {"labels": [{"name": "a"}]}}, {})
    bad = {**raw, "token_options": {"tags": [{"name": "O"}], "samples": [{"tokens": ["a b"]}]}}
    with pytest.raises(ConfigError) as info:
        DatagenConfig.parse(bad, {})
    assert "may not use 'O'" in str(info.value) and "samples[0]" in str(info.value)


# ---- the openai provider -------------------------------------------------------------------


def _settings(server: OpenAIServer, **kw: Any) -> OpenAISettings:
    return OpenAISettings(
        base_url=server.base_url,
        model="gpt-test",
        api_key=server.api_key,
        retry_initial_seconds=0.01,
        **kw,
    )


def _asked(request: dict[str, Any]) -> int:
    prompt = request["messages"][-1]["content"]
    match = re.search(r"Write (\d+) new", prompt)
    assert match, prompt
    return int(match.group(1))


def token_reply(request: dict[str, Any]) -> str:
    n = _asked(request)
    samples = [
        {
            "tokens": ["ring", "Bo", "Li", "on", f"555-01{i:02d}"],
            "tags": ["O", "NAME", "NAME", "O", "PHONE"],
        }
        for i in range(n)
    ]
    # One unusable sample per reply: it is dropped and counted.
    samples.append({"tokens": ["a", "b"], "tags": ["O"]})
    return json.dumps({"samples": samples})


def text_reply(request: dict[str, Any]) -> str:
    prompt = request["messages"][-1]["content"]
    label = re.search(r"with the label (\w+)", prompt)
    assert label, prompt
    n = _asked(request)
    return json.dumps({"samples": [{"text": f"{label.group(1)} text {i}"} for i in range(n)]})


async def test_openai_tokens_through_the_sdk() -> None:
    with OpenAIServer() as server:
        server.chat = token_reply
        provider = OpenAIProvider(_settings(server), seed=5)
        try:
            generated = await provider.tokens(token_task(60))
        finally:
            await provider.close()
        assert len(generated.rows) == 60 and generated.provider == "openai"
        assert generated.rows[0].tags == ("O", "NAME", "NAME", "O", "PHONE")
        assert any("unusable" in w for w in generated.warnings)
        chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
        assert len(chats) == 3  # 25 + 25 + 10
        body = chats[0].body
        assert body["model"] == "gpt-test" and body["seed"] == 5
        assert body["response_format"] == {"type": "json_object"}
        system = body["messages"][0]["content"]
        assert "NAME, PHONE, EMAIL" in system
        assert "Extract contact details" in body["messages"][1]["content"]
        assert "Ada Lovelace" in body["messages"][1]["content"]


async def test_openai_texts_per_label() -> None:
    with OpenAIServer() as server:
        server.chat = text_reply
        provider = OpenAIProvider(_settings(server))
        try:
            generated = await provider.texts(text_task(30))
        finally:
            await provider.close()
        assert Counter(r.label for r in generated.rows) == {
            "billing": 30,
            "shipping": 30,
            "praise": 30,
        }
        assert generated.rows[0].text == "billing text 0"


async def test_openai_retries_a_rate_limit_then_says_it_refused() -> None:
    with OpenAIServer() as server:
        server.chat_error = ApiError(429, "Rate limit reached", "rate_limit_error")
        provider = OpenAIProvider(_settings(server, max_attempts=3))
        try:
            with pytest.raises(ProviderRefused, match=r"refused the request \(429\).*Rate limit"):
                await provider.tokens(token_task(5))
        finally:
            await provider.close()
        assert len([r for r in server.requests if r.path == "/v1/chat/completions"]) == 3


async def test_openai_a_bad_key_is_refused_at_once() -> None:
    with OpenAIServer() as server:
        settings = _settings(server)
        provider = OpenAIProvider(
            OpenAISettings(**{**settings.__dict__, "api_key": "sk-wrong"}), seed=0
        )
        try:
            with pytest.raises(ProviderRefused, match=r"\(401\): Incorrect API key.*api_key"):
                await provider.texts(text_task(3))
        finally:
            await provider.close()
        assert len(server.requests) == 1


async def test_openai_replies_without_usable_samples_fail_clearly() -> None:
    with OpenAIServer() as server:
        server.chat = lambda request: "I cannot help with that."
        provider = OpenAIProvider(_settings(server))
        try:
            with pytest.raises(GenerationError, match="returned no usable samples"):
                await provider.tokens(token_task(5))
        finally:
            await provider.close()


# ---- the trainer as a process --------------------------------------------------------------


async def _run(env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *PROG,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _artifact(arts: Path, model_id: str, name: str, path: str) -> bytes:
    storage = LocalBlobStorage(arts)
    await storage.start()
    try:
        return await Artifacts(storage, f"models/{model_id}/").read_bytes(name, path)
    finally:
        await storage.close()


async def test_the_trainer_generates_trains_and_keeps_the_data(tmp_path: Path) -> None:
    arts = tmp_path / "arts"
    servicer = RecordingTrainService()  # type: ignore[abstract]  # see tests/support/train_service.py
    server, address = await serve(servicer)
    config = {
        "model_id": "dg-1",
        "artifacts_uri": arts.as_uri() + "/",
        "base_model": None,
        "task_prompt": "contacts",
        "test_size": 0.2,
        "token_options": {
            "tags": [
                {"name": t.name, "examples": list(t.examples), "description": t.description}
                for t in TAGS
            ],
            "samples": [{"tokens": list(s.tokens), "tags": list(s.tags)} for s in SAMPLES],
            "num_sentences_to_generate": 150,
        },
        "train_options": {"epochs": 30},
        "platform": {"orchestrator_address": address, "job_token": "tok"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    try:
        code, _, err = await _run({"TRAINYARD_CONFIG": str(path)}, tmp_path)
        assert code == 0, err
    finally:
        await server.stop(0)
    warnings = [r.request["message"] for r in servicer.received if r.method == "LogTrainMessage"]
    assert warnings[0].startswith("the training data was generated by the offline provider")
    assert "no OpenAI API key is configured" in warnings[0]
    final = servicer.received[-1].request
    assert final["status"] == "complete"
    assert final["metadata"]["datagen"]["provider"] == "offline"
    assert final["metadata"]["datagen"]["train_rows"] == 120
    assert final["metadata"]["datagen"]["test_rows"] == 30
    train = list(
        csv.reader(
            io.StringIO((await _artifact(arts, "dg-1", "generated-data", "train.csv")).decode())
        )
    )
    test = list(
        csv.reader(
            io.StringIO((await _artifact(arts, "dg-1", "generated-data", "test.csv")).decode())
        )
    )
    assert train[0] == ["source", "target"] and len(train) == 121 and len(test) == 31
    storage = LocalBlobStorage(arts)
    await storage.start()
    artifacts = Artifacts(storage, "models/dg-1/")
    manifest = await artifacts.manifest("model")
    files = {f.path: await artifacts.read_bytes("model", f.path) for f in manifest.files}
    await storage.close()
    [out] = inference.load(files).predict(["call Bo Li at 555-0199"], top_k=1)
    assert out["predicted_tags"][1:3] == ["NAME", "NAME"] and out["predicted_tags"][-1] == "PHONE"
