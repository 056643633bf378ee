"""The stream worker's command line (no broker)."""

from __future__ import annotations

import argparse

import pytest

from streams.cli import add_arguments, default_embedded, run


@pytest.mark.parametrize(("bootstrap", "env", "expected"), [
    ("127.0.0.1:9092", "", True), ("localhost:9092,127.0.0.1:9093", "", True), ("kafka://[::1]:9092", "", True),
    ("kafka-0.kafka:9092", "", False), ("127.0.0.1:9092,kafka-1:9092", "", False),
    ("kafka-0:9092", "1", True), ("127.0.0.1:9092", "0", False),
])
def test_default_embedded(bootstrap: str, env: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETIDE_EMBEDDED", env)
    assert default_embedded(bootstrap) is expected


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETIDE_BOOTSTRAP", "h:1")
    a = _parse()
    assert (a.bootstrap_servers, a.embedded, a.web_port, a.app_id) == ("h:1", None, 0, "kubetide-streams")
    assert _parse("--embedded").embedded is True and _parse("--no-embedded").embedded is False


def test_bad_config_and_missing_bootstrap_exit_2(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("KUBETIDE_BOOTSTRAP", raising=False)
    assert run(_parse()) == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text("streams:\n  strategies:\n    LowNodeLoad:\n      high_cpu_pct: 300\n")
    assert run(_parse("--bootstrap-servers", "127.0.0.1:1", "--config", str(cfg))) == 2
    assert "streams.strategies.LowNodeLoad.high_cpu_pct" in capsys.readouterr().err
