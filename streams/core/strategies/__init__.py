"""Strategy registry: config name → (settings dataclass, pure ``plan(state, settings)``).

To add a strategy: a module here with a frozen settings dataclass (defaults on the fields,
``validate()``) and ``plan(state, settings) -> list[DescheduleDecision]``, plus one line below.
Every strategy chooses pods through the shared :class:`streams.core.state.Choice` (filters,
anti-thrash guard, node fit, topology spread, kept-apart workloads). The planner runs them in
registry order within a tick and records each one's decisions before the next one plans, so a
later strategy sees the earlier ones' moves (targets' requests, limits, spread counts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubetide.config import ConfigError, build
from kubetide.models import DescheduleDecision
from streams.core.strategies import allocatedbutidle, interference, lownodeload, zonespread


@dataclass(frozen=True)
class Strategy:
    name: str
    settings_cls: type
    plan: Callable[[Any, Any], list[DescheduleDecision]]


# Order matters within a tick: safety repairs first, then load balancing.
REGISTRY: dict[str, Strategy] = {
    zonespread.NAME: Strategy(zonespread.NAME, zonespread.ZoneSpreadSettings, zonespread.plan),
    interference.NAME: Strategy(interference.NAME, interference.InterferenceSettings, interference.plan),
    lownodeload.NAME: Strategy(lownodeload.NAME, lownodeload.LowNodeLoadSettings, lownodeload.plan),
    allocatedbutidle.NAME: Strategy(allocatedbutidle.NAME, allocatedbutidle.AllocatedButIdleSettings,
                                    allocatedbutidle.plan),
}


def build_strategies(config: Mapping[str, Any] | None,
                     where: str = "streams.strategies") -> list[tuple[Strategy, Any]]:
    """Every registered strategy with its settings (from ``config[name]``, defaults otherwise).

    Unknown names are an error; disabled strategies are still returned (``plan`` honours ``enabled``).
    """
    config = config or {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping of strategy name to settings")
    for name in config:
        if name not in REGISTRY:
            raise ConfigError(f"{where}.{name}: unknown strategy (known: {', '.join(sorted(REGISTRY))})")
    return [(st, build(st.settings_cls, config.get(name), f"{where}.{name}")) for name, st in REGISTRY.items()]


def get(strategies: list[tuple[Strategy, Any]], name: str) -> Any:
    """The settings of strategy ``name`` in a built list (KeyError when absent)."""
    for st, settings in strategies:
        if st.name == name:
            return settings
    raise KeyError(name)
