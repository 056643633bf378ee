"""The ``streams:`` section of the kubetide config, built and validated once at start (pure).

```yaml
streams:
  evictor: {protected_namespaces: [kube-system, kube-public, kube-node-lease, kubetide],
            evict_local_storage_pods: false, priority_threshold: 2000000000, respect_pdb: true}
  profiler: {windows_s: [3600, 86400], buckets_per_window: 12, relative_accuracy: 0.01,
             emit_interval_s: 60, margin: 1.2, ...}
  planner: {history: 10, tick_s: 0, lateness_s: 60}
  guard: {window_s: 3600, max_per_node: 3, max_per_namespace: 10, max_per_workload: 3, max_total: 30,
          pod_cooldown_s: 1800, workload_cooldown_s: 120, backoff_base_s: 600, backoff_factor: 2, ...}
  strategies:
    LowNodeLoad: {mode: absolute, high_cpu_pct: 80, low_cpu_pct: 50, consecutive: 3, ...}
    ZoneSpread: {enabled: true}
    Interference: {enabled: true}
    AllocatedButIdle: {enabled: false, requested_pct: 90, max_usage_pct: 30, ...}
```
See ``docs/strategies.md`` for every setting.
Errors name the bad field, e.g. ``streams.strategies.LowNodeLoad.high_cpu_pct: must be in (0, 100]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetide.config import build, section
from streams.core.profile import ProfileSettings
from streams.core.state import EvictorSettings, GuardSettings
from streams.core.strategies import Strategy, build_strategies


@dataclass(frozen=True)
class PlannerSettings:
    history: int = 10
    tick_s: float = 0.0
    lateness_s: float = 60.0

    def validate(self) -> None:
        if not 1 <= self.history <= 1000:
            raise ValueError("history: must be in [1, 1000]")
        if self.tick_s < 0:
            raise ValueError("tick_s: must be >= 0 (0 = use each summary's ts as is)")
        if self.lateness_s < 0:
            raise ValueError("lateness_s: must be >= 0")


@dataclass(frozen=True)
class StreamsSettings:
    evictor: EvictorSettings = field(default_factory=EvictorSettings)
    profiler: ProfileSettings = field(default_factory=ProfileSettings)
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    strategies: tuple[tuple[Strategy, Any], ...] = ()
    # Whole-cluster tick planners (None = off): built by ``streams.core.autoscaler.settings_from`` and
    # ``streams.core.nodescale.settings_from`` from the ``streams.autoscale`` / ``streams.nodescale``
    # sections; each settings object has ``planner()`` returning a :class:`~streams.core.planner.TickPlanner`.
    autoscale: Any = None
    nodescale: Any = None

    def tick_planners(self) -> list[Any]:
        """Fresh tick planners (autoscaling, then node scaling) for a new :class:`~streams.core.planner.Planner`."""
        return [s.planner() for s in (self.autoscale, self.nodescale) if s is not None]

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> StreamsSettings:
        sec = section(config or {}, "streams")
        known = {"evictor", "guard", "profiler", "planner", "strategies", "autoscale", "nodescale"}
        unknown = set(sec) - known
        if unknown:
            from kubetide.config import ConfigError

            raise ConfigError(f"streams.{sorted(unknown)[0]}: unknown setting (known: {', '.join(sorted(known))})")
        return cls(
            evictor=build(EvictorSettings, section(sec, "evictor"), "streams.evictor"),
            profiler=build(ProfileSettings, section(sec, "profiler"), "streams.profiler"),
            planner=build(PlannerSettings, section(sec, "planner"), "streams.planner"),
            guard=build(GuardSettings, section(sec, "guard"), "streams.guard"),
            strategies=tuple(build_strategies(section(sec, "strategies"))),
            autoscale=_optional(sec, "autoscale", "streams.core.autoscaler"),
            nodescale=_optional(sec, "nodescale", "streams.core.nodescale"),
        )


def _optional(sec: Mapping[str, Any], name: str, module: str) -> Any:
    """``module.settings_from(section, where)`` when the section is present (and not ``enabled: false``)."""
    if name not in sec:
        return None
    data = section(sec, name)
    if data.get("enabled", True) is False:
        return None
    import importlib

    return importlib.import_module(module).settings_from(data, f"streams.{name}")
