"""A workload loads the job's config from the file the platform wrote or from a blob URI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.upload_service import MotoServer
from trainyard.blobs import StorageSettings
from trainyard.workload import ConfigError, load_config
from trainyard.workload import config as workload_config

CONFIG = {"epochs": 3, "name": "données", "nested": {"rate": 0.01, "tags": ["a"]}}
BUCKET = "trainyard-workload-config"


async def test_from_the_file_named_by_trainyard_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trainyard-config.json"
    path.write_text(json.dumps(CONFIG), encoding="utf-8")
    assert await load_config({"TRAINYARD_CONFIG": str(path)}) == CONFIG
    monkeypatch.chdir(tmp_path)
    assert await load_config({"TRAINYARD_CONFIG": "trainyard-config.json"}) == CONFIG
    monkeypatch.setenv("TRAINYARD_CONFIG", str(path))
    assert await load_config() == CONFIG, "os.environ by default"


async def test_from_a_file_uri(tmp_path: Path) -> None:
    path = tmp_path / "with space.json"
    path.write_text(json.dumps(CONFIG))
    assert await load_config({"TRAINYARD_CONFIG_URI": path.as_uri()}) == CONFIG


async def test_from_an_s3_uri(moto: MotoServer) -> None:
    client = moto.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="configs/job-1.json", Body=json.dumps(CONFIG).encode())
    settings = StorageSettings(s3_endpoint_url=moto.endpoint)
    env = {"TRAINYARD_CONFIG_URI": f"s3://{BUCKET}/configs/job-1.json"}
    assert await load_config(env, settings) == CONFIG
    missing = {"TRAINYARD_CONFIG_URI": f"s3://{BUCKET}/configs/nope.json"}
    with pytest.raises(ConfigError, match=r"the config s3://.*/nope.json does not exist"):
        await load_config(missing, settings)
    with pytest.raises(ConfigError, match="is not reachable"):
        await load_config({"TRAINYARD_CONFIG_URI": "s3://no-such-bucket/c.json"}, settings)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1,\n "b": }', r"is not JSON: Expecting value at line 2 column 7"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
async def test_a_bad_config_says_what_and_where(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        await load_config({"TRAINYARD_CONFIG": str(path)})
    assert str(path) in str(caught.value)


async def test_no_config_two_configs_missing_and_too_big(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"none of TRAINYARD_CONFIG .* TRAINYARD_CONFIG_URI"):
        await load_config({})
    with pytest.raises(ConfigError, match="TRAINYARD_CONFIG and TRAINYARD_CONFIG_URI are set"):
        await load_config({"TRAINYARD_CONFIG": "a", "TRAINYARD_CONFIG_URI": "s3://b/k"})
    # No precedence among the three: any two are refused, whatever they hold.
    with pytest.raises(
        ConfigError, match="TRAINYARD_CONFIG_JSON and TRAINYARD_CONFIG_URI are set; expected"
    ):
        await load_config({"TRAINYARD_CONFIG_JSON": "{}", "TRAINYARD_CONFIG_URI": "s3://b/k"})
    with pytest.raises(ConfigError, match="TRAINYARD_CONFIG and TRAINYARD_CONFIG_JSON are"):
        await load_config({"TRAINYARD_CONFIG": "a", "TRAINYARD_CONFIG_JSON": "{}"})
    with pytest.raises(ConfigError, match="does not exist"):
        await load_config({"TRAINYARD_CONFIG": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="unsupported scheme"):
        await load_config({"TRAINYARD_CONFIG_URI": "https://example.com/c.json"})
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"x": "y" * 100}))
    monkeypatch.setattr(workload_config, "MAX_READ_BYTES", 50)
    with pytest.raises(ConfigError, match="larger than 50 bytes"):
        await load_config({"TRAINYARD_CONFIG": str(path)})
    with pytest.raises(ConfigError, match="in TRAINYARD_CONFIG_JSON is larger than 50 bytes"):
        await load_config({"TRAINYARD_CONFIG_JSON": path.read_text()})
    inline = json.dumps({"x": "y" * 41})  # exactly 50 bytes: the limit is inclusive
    assert len(inline) == 50
    assert await load_config({"TRAINYARD_CONFIG_JSON": inline}) == {"x": "y" * 41}


async def test_inline_from_trainyard_config_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Kubernetes backend's way: the JSON itself, the platform section taken out."""
    monkeypatch.setattr(workload_config, "_platform", {})  # this process's, left as it was
    config = {**CONFIG, "platform": {"orchestrator_address": "o:1", "job_token": "tok"}}
    assert await load_config({"TRAINYARD_CONFIG_JSON": json.dumps(config)}) == CONFIG
    assert workload_config.platform_settings() == {
        "orchestrator_address": "o:1",
        "job_token": "tok",
    }


async def test_the_platform_llm_settings_are_kept_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A datagen workload's provider settings come in the platform section, never the config."""
    monkeypatch.setattr(workload_config, "_platform", {})
    monkeypatch.setattr(workload_config, "_platform_llm", {})
    llm = {"provider": "openai", "api_key": "sk-1", "max_attempts": 3}
    config = {**CONFIG, "platform": {"job_token": "tok", "llm": llm}}
    assert await load_config({"TRAINYARD_CONFIG_JSON": json.dumps(config)}) == CONFIG
    assert workload_config.platform_llm() == llm
    bad = {**CONFIG, "platform": {"job_token": "tok", "llm": {"api_key": ["x"]}}}
    with pytest.raises(ConfigError, match=r"platform.llm section is malformed"):
        await load_config({"TRAINYARD_CONFIG_JSON": json.dumps(bad)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1,\n "b": }', r"is not JSON: Expecting value at line 2 column 7"),
        ("[1, 2]", "must be a JSON object, not list"),
        # Bytes that were not UTF-8 in the environment arrive as surrogate escapes.
        (b"\xff\xfe".decode("utf-8", "surrogateescape"), "is not UTF-8 text"),
    ],
)
async def test_a_bad_inline_config_says_what_and_where(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        await load_config({"TRAINYARD_CONFIG_JSON": text})
    assert "the config in TRAINYARD_CONFIG_JSON" in str(caught.value)
