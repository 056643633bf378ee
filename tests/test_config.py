from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kubetide.config import ConfigError, build, load, section


@dataclass(frozen=True)
class Inner:
    weight: float = 1.0


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    threshold_pct: float = 80.0
    consecutive: int = 3
    namespaces: tuple[str, ...] = ("kube-system",)
    mode: str = "all"
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        if not 0 < self.threshold_pct <= 100:
            raise ValueError(f"threshold_pct: must be in (0, 100], got {self.threshold_pct}")


def test_defaults_and_values() -> None:
    assert build(Settings, None, "s") == Settings()
    s = build(Settings, {"threshold_pct": 70, "namespaces": ["a", "b"], "inner": {"weight": 2}}, "s")
    assert s.threshold_pct == 70.0 and s.namespaces == ("a", "b") and s.inner.weight == 2.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"treshold_pct": 1}, r"s\.treshold_pct: unknown setting"),
        ({"consecutive": "3"}, r"s\.consecutive: expected an integer"),
        ({"consecutive": True}, r"s\.consecutive: expected an integer"),
        ({"enabled": "yes"}, r"s\.enabled: expected true/false"),
        ({"namespaces": "kube-system"}, r"s\.namespaces: expected a list"),
        ({"inner": {"weight": "x"}}, r"s\.inner\.weight: expected a number"),
        ({"threshold_pct": 150}, r"s\.threshold_pct: must be in"),
    ],
)
def test_errors_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(Settings, data, "s")


def test_file_and_env_overrides(tmp_path) -> None:
    cfg = tmp_path / "k.yaml"
    cfg.write_text("actuator:\n  dry_run: false\n  rate: 5\n")
    env = {"KUBETIDE__ACTUATOR__DRY_RUN": "true", "KUBETIDE_BOOTSTRAP": "k:9092",
           "KUBETIDE__DESCHEDULE__LOWNODELOAD__HIGH_CPU_PCT": "75"}
    data = load(cfg, env)
    assert section(data, "actuator") == {"dry_run": True, "rate": 5}
    assert data["kafka"]["bootstrap_servers"] == "k:9092"
    assert section(data, "deschedule", "lownodeload") == {"high_cpu_pct": 75}
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load(bad, {})
