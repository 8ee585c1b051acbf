"""The one list of services (trainyard/catalogue.py): every view of it says the same."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from trainyard import services, suite
from trainyard.catalogue import CATALOGUE, phases, service
from trainyard.gateway import descriptors
from trainyard.runtime import settings
from trainyard.runtime.settings import CommonSettings, ServiceSettings


def test_settings_views_equal_the_catalogue() -> None:
    assert tuple(s.name for s in CATALOGUE) == settings.SERVICE_NAMES
    assert {s.name: s.default_port for s in CATALOGUE} == settings.DEFAULT_PORTS


def test_names_and_ports_are_unique() -> None:
    assert len({s.name for s in CATALOGUE}) == len(CATALOGUE)
    assert len({s.default_port for s in CATALOGUE}) == len(CATALOGUE)


def test_every_service_has_an_address_setting() -> None:
    common = CommonSettings()
    for s in CATALOGUE:
        assert common.address_of(s.name) == f"127.0.0.1:{s.default_port}"


def test_gateway_views_equal_the_catalogue() -> None:
    assert {s.name: s.proto_services for s in CATALOGUE} == descriptors.SERVICES
    modules = [m for s in CATALOGUE for m in s.proto_modules]
    assert list(descriptors._MODULES[: len(modules)]) == modules
    assert set(descriptors._MODULES[len(modules) :]) == {
        "google.rpc.status_pb2",
        "google.rpc.error_details_pb2",
    }


def test_proto_services_are_in_their_modules() -> None:
    for s in CATALOGUE:
        defined = {
            svc.full_name
            for name in s.proto_modules
            for svc in importlib.import_module(name).DESCRIPTOR.services_by_name.values()
        }
        assert set(s.proto_services) <= defined, s.name


def test_start_phases_equal_the_catalogue() -> None:
    assert phases() == suite.PHASES
    assert suite.PHASES == (("upload", "jobrunner"), ("orchestrator", "finetuning", "clustering"))
    assert sorted(n for p in suite.PHASES for n in p) == sorted(s.name for s in CATALOGUE)


def test_services_module_loads_each_entry() -> None:
    for s in CATALOGUE:
        cls = services.settings_class(s.name)
        assert issubclass(cls, ServiceSettings)
        assert f"{cls.__module__}:{cls.__name__}" == s.settings
        build = services.builder(s.name)
        assert f"{build.__module__}:{build.__name__}" == s.builder
        assert services.default_port(s.name) == s.default_port


def test_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="upload"):
        service("nope")
    with pytest.raises(KeyError):
        services.builder("nope")


def test_deploy_manifests_are_generated_from_the_catalogue() -> None:
    """deploy/<service>.yaml is what scripts/gen_deploy.py writes (./dev gen)."""
    import runpy

    root = Path(__file__).resolve().parent.parent
    gen = runpy.run_path(str(root / "scripts" / "gen_deploy.py"))
    for s in CATALOGUE:
        assert gen["manifest"](s) == (root / "deploy" / f"{s.name}.yaml").read_text(), s.name
