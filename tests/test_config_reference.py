"""docs/configuration.md is generated from the settings dataclasses and stays equal to them; every
environment override it names really lands on its key; the shipped config files pass the kafka checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from kubetide import config_reference as ref
from kubetide.config import load, section
from kubetide.kafka import kafka_settings

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_doc_equals_the_generated_reference():
    stale = "docs/configuration.md is stale: run python -m kubetide.config_reference"
    assert ref.DOC.read_text() == ref.render(), stale
    assert ref.main(["--check"]) == 0


def test_every_section_and_field_is_documented():
    text = ref.DOC.read_text()
    sections = list(ref._sections())
    assert {p.split(".")[0] for p, _, _ in sections} >= {"kafka", "collector", "actuator", "streams"}
    for path, cls, _ in sections:
        assert f"## `{path}`" in text
        for f in dataclasses.fields(cls):
            if f.init:
                assert f"| `{f.name}` |" in text, f"{path}.{f.name} is not documented"


def test_documented_environment_overrides_reach_their_keys():
    checked = 0
    for path, cls, _ in ref._sections():
        if path.startswith("streams.strategies."):
            continue
        instance = cls() if all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                                for f in dataclasses.fields(cls) if f.init) else None
        for f in dataclasses.fields(cls):
            if not f.init or instance is None:
                continue
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(value) or isinstance(value, dict):
                continue
            plain = list(value) if isinstance(value, tuple | frozenset | set) else value
            data = load(env={ref._env(path, f.name): yaml.safe_dump(plain)})
            assert section(data, *path.split("."))[f.name] == plain, f"{ref._env(path, f.name)}"
            checked += 1
    assert checked > 50


def _shipped_configs() -> dict[str, dict]:
    out = {"compose/kubetide.yaml": yaml.safe_load((ROOT / "compose" / "kubetide.yaml").read_text())}
    for doc in yaml.safe_load_all((ROOT / "deploy" / "configmap.yaml").read_text()):
        if doc and doc.get("kind") == "ConfigMap" and "config.yaml" in (doc.get("data") or {}):
            out["deploy/configmap.yaml"] = yaml.safe_load(doc["data"]["config.yaml"])
    return out


@pytest.mark.parametrize("name", ["compose/kubetide.yaml", "deploy/configmap.yaml"])
def test_shipped_config_files_pass_the_kafka_checks(name):
    settings = kafka_settings(_shipped_configs()[name])
    assert settings.bootstrap_servers and settings.security_protocol == "PLAINTEXT"
