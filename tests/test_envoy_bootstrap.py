"""envoy/bootstrap.yaml and envoy/status.lua: the single source of the gateway's static parts."""

from __future__ import annotations

import json
import string
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainyard.gateway import config
from trainyard.gateway.config import fill_template, render
from trainyard.gateway.process import CONCURRENCY_VAR, EnvoyProcess
from trainyard.runtime.http import CLIENT_ADDRESS_HEADER

ROOT = Path(__file__).resolve().parent.parent
ENVOY = ROOT / "envoy"
UPSTREAMS = {"upload": "127.0.0.1:1", "orchestrator": "orchestrator.trainyard:50052"}
VALUES = {
    "http_host": "0.0.0.0",
    "http_port": 8081,
    "admin_host": "127.0.0.2",
    "admin_port": 9901,
    "xff_trusted_hops": 1,
    "max_request_headers_kb": config.MAX_REQUEST_HEADERS_KB,
    "edge_buffer_bytes": config.EDGE_BUFFER_BYTES,
    "client_address_header": CLIENT_ADDRESS_HEADER,
}


def test_the_package_reads_the_top_level_folder() -> None:
    assert config.ENVOY_DIR.resolve() == ENVOY
    assert (ENVOY / "bootstrap.yaml").read_text() == config.BOOTSTRAP_TEMPLATE
    assert (ENVOY / "status.lua").read_text() == config.LUA_STATUS


def _static_parts_kept(template: Any, rendered: Any, where: str = "") -> None:
    """Every value of the template that is not a slot is in the rendered bootstrap as it is."""
    if isinstance(template, str) and template.startswith("slot: "):
        return
    if isinstance(template, dict):
        assert isinstance(rendered, dict), where
        for key, value in template.items():
            if key.startswith("slot+: "):
                continue
            assert key in rendered, f"{where}/{key}"
            _static_parts_kept(value, rendered[key], f"{where}/{key}")
    elif isinstance(template, list):
        assert isinstance(rendered, list) and len(rendered) == len(template), where
        for i, (a, b) in enumerate(zip(template, rendered, strict=True)):
            _static_parts_kept(a, b, f"{where}[{i}]")
    else:
        assert rendered == template, where


@pytest.mark.parametrize("descriptor_path", [None, Path("/etc/trainyard/api.pb")])
def test_rendered_bootstrap_keeps_the_static_parts(descriptor_path: Path | None) -> None:
    text = (ENVOY / "bootstrap.yaml").read_text()
    template = yaml.safe_load(string.Template(text).substitute(VALUES))
    rendered = render(
        UPSTREAMS,
        http_host="0.0.0.0",
        http_port=8081,
        admin_host="127.0.0.2",
        admin_port=9901,
        xff_trusted_hops=1,
        descriptor_path=descriptor_path,
    )
    _static_parts_kept(template, rendered)
    listener = rendered["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8081}
    assert rendered["admin"]["address"]["socket_address"]["port_value"] == 9901
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    lua = filters[1]["typed_config"]["default_source_code"]["inline_string"]
    assert lua.endswith((ENVOY / "status.lua").read_text())
    transcoder = filters[2]["typed_config"]
    key = "proto_descriptor_bin" if descriptor_path is None else "proto_descriptor"
    assert key in transcoder
    assert [c["name"] for c in rendered["static_resources"]["clusters"]] == list(UPSTREAMS)


def test_no_slot_is_left_unfilled() -> None:
    text = str(render(UPSTREAMS))
    assert "slot: " not in text
    assert "slot+: " not in text


def test_slots_must_match_the_template() -> None:
    template = 'a: "slot: x"\nb: ${v}\n'
    assert fill_template(template, {"v": 2}, {"x": [1]}) == {"a": [1], "b": 2}
    with pytest.raises(KeyError):
        fill_template(template, {"v": 2}, {})
    with pytest.raises(ValueError, match="y"):
        fill_template(template, {"v": 2}, {"x": 1, "y": 2})
    with pytest.raises(KeyError):
        fill_template(template, {}, {"x": 1})


def test_envoy_runs_the_configured_worker_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def workers() -> int:
        envoy = EnvoyProcess(render({"upload": "127.0.0.1:1"}, http_port=0), tmp_path / "e")
        envoy.start()
        try:
            assert envoy.admin_url is not None
            with urllib.request.urlopen(envoy.admin_url + "/server_info", timeout=5) as resp:
                info = json.loads(resp.read())
            return int(info["command_line_options"]["concurrency"])
        finally:
            envoy.stop()

    monkeypatch.delenv(CONCURRENCY_VAR, raising=False)
    assert workers() == 1
    monkeypatch.setenv(CONCURRENCY_VAR, "3")
    assert workers() == 3
    for bad in ("-1", "two"):
        monkeypatch.setenv(CONCURRENCY_VAR, bad)
        with pytest.raises(ValueError, match=CONCURRENCY_VAR):
            EnvoyProcess({}, tmp_path / "bad")
