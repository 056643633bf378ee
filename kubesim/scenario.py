"""kubesim scenarios: YAML files describing a cluster and its workload.

A scenario is loaded by path or by name (``load_scenario("demo")`` looks in
``kubesim/scenarios/<name>.yaml``) and validated; every problem raises
:class:`ScenarioError` whose message starts with the path of the bad field
(``apps[2].requests.cpu: not a quantity: 'abc'``).

Schema (quantities use Kubernetes notation: ``250m``, ``2``, ``512Mi``)::

    name: demo                       # str, required
    description: free text           # optional
    seed: 42                         # int, default 0; all randomness comes from it
    start: "2024-06-03T08:00:00Z"    # UTC start of the virtual clock, required
    duration_h: 24                   # length of an offline run, default 24
    resolution_s: 10                 # virtual seconds per tick, default 10
    speed: 60                        # virtual s per real s when served; 0 = manual clock
    system_overhead: {cpu: 100m, memory: 512Mi}   # per node, added to node usage
    zones: [zone-a, zone-b]          # required, non-empty
    cluster_autoscaler:              # the baseline node scaler (acts on elastic groups only)
      enabled: true
      scan_interval_s: 10
      scale_down_utilization_threshold: 0.5   # requests / allocatable (max of cpu, memory)
      scale_down_unneeded_s: 600
      scale_down_delay_after_add_s: 600
      max_empty_bulk_delete: 10
    scheduler:
      load_aware_weight: 0           # > 0: also score nodes by measured CPU usage (Trimaran-like
                                     # plugin fed by a load-watcher), weight vs the default scores
    node_groups:                     # required, non-empty
      - name: general
        cpu: 8                       # allocatable per node
        memory: 32Gi
        labels: {k: v}               # optional, added to every node
        taints: [{key: k, value: v, effect: NoSchedule}]   # or PreferNoSchedule / NoExecute
        cost_per_hour: 0.4           # per node-hour (accounting), default 0
        elastic: false               # true: scaled by the cluster-autoscaler model
        min_nodes: 0                 # elastic bounds (max_nodes counts all zones)
        max_nodes: 30
        provisioning_delay_s: 180    # elastic: order -> node joins
        nodes_per_zone: 2            # nodes named <group>-<zone>-<i> (0 allowed for elastic), or
        nodes:                       # explicit nodes (zone required, name optional)
          - {name: node-a-1, zone: zone-a, labels: {...}, taints: [...], unschedulable: false}
    namespaces: [shop]               # kube-system and default always exist
    daemonsets:                      # one pod per node, owner kind DaemonSet
      - {name: kube-proxy, namespace: kube-system, requests: {cpu: 100m, memory: 128Mi},
         usage: {cpu: 50m, memory: 64Mi}}
    apps:                            # Deployments
      - name: web                    # label app=<name>
        count: 10                    # generator: 10 apps web-1..web-10 (default: one app, name as is)
        namespace: shop
        replicas: 4
        requests: {cpu: 250m, memory: 256Mi}
        limits: {cpu: "2"}           # optional; usage is capped at limits.cpu
        max_cpu_per_pod: 1500m       # optional per-pod serving capacity (default limits.cpu)
        startup_s: 30                # scheduled -> Ready delay (virtual seconds); not Ready = no traffic
        labels: {tier: front}        # extra pod labels
        annotations: {cluster-autoscaler.kubernetes.io/safe-to-evict: "false"}   # pod annotations
        priority: 0                  # pod priority; < 0 = placeholder, preempted by higher priority
        node_selector: {k: v}
        tolerations: [{key: k, operator: Exists|Equal, value: v, effect: NoSchedule}]
        topology_spread:             # topologySpreadConstraints over the app's own pods
          - {max_skew: 1, topology_key: zone|hostname, when_unsatisfiable: DoNotSchedule|ScheduleAnyway}
        hpa:                         # baseline reactive HPA (autoscaling/v2 CPU utilisation)
          {min_replicas: 2, max_replicas: 20, target_cpu_utilization: 70, tolerance: 0.1,
           scale_down_stabilization_s: 300, sync_period_s: 15}
        antagonist:                  # a cache / memory-bandwidth hog (episodic when off_min > 0)
          {intensity: 1.0, on_min: 10, off_min: 30, phase_min: 0}
        sensitivity: 1.0             # CPI increase per unit of co-located antagonist activity
                                     #   (default 1, 0 for antagonists)
        base_cpi: 1.0
        base_latency_ms: 20
        character: cpu               # or memory: memory follows served load (demand.memory_per_core)
        demand:                      # total app CPU demand (cores) at virtual time t:
          cpu: 2.0                   #   daily mean
          tide: {ratio: 3, peak_hour: 14}   # peak/trough ratio, hour (UTC) of the peak
          spikes: {every_h: 1, at_min: 0, duration_min: 5, factor: 1.5}   # or a list of spike trains
          weekend_factor: 1.0        # multiplier on Saturday and Sunday (UTC)
          pattern: periodic          # or random_walk: mean-reverting walk of log-demand (6 h time constant)
          volatility: 0.3            # random_walk: std of log-demand per sqrt(hour)
          bursts: {rate_per_h: 2, duration_min: 5, factor: 3}   # Poisson bursts (non-periodic)
          noise: 0.05                # relative gaussian noise per tick
          memory: 300Mi              # per-pod memory usage (+-1 %)
          memory_growth_per_h: 0.01  # relative growth per hour of pod age
          memory_per_core: 256Mi     # character memory: extra memory per core served
        pdb: {minAvailable: 2}       # or {maxUnavailable: "25%"}, optional name; or a list
        pods:                        # per initial pod (by index) overrides
          - {index: 0, node: node-a-1, usage_multiplier: 2.5, deletion_cost: 100}

Generators: any value in an app may be a seeded random draw, made per generated copy from a
generator seeded by (scenario seed, app index): ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{randint: [lo, hi]}`` (inclusive) or ``{choice: [a, b, ...]}``; ranges may be quantities
(``{uniform: [250m, "1"]}``).  The same seed gives the same fleet.

Overrides: ``load_scenario(name, overrides={...})`` deep-merges a partial document; the shorthands
``seed``, ``hours`` (``duration_h``) and ``nodes`` (scale the fixed ``nodes_per_zone`` groups so the
initial fleet has about that many nodes) are accepted in ``overrides`` or as keyword arguments.

Per-pod CPU usage = demand(t) / ready replicas * usage_multiplier (replacement
pods get multiplier 1), capped at the per-pod capacity (``max_cpu_per_pod`` or
``limits.cpu``) and at the node's capacity (pods on an overcommitted node are scaled
down proportionally).  Pods that are running but not yet Ready use 10 % of their CPU
request and serve nothing.  The demand a Ready pod could not serve is its
``unserved_cpu``; a pod with unserved demand (or every replica of an app without a
Ready pod) counts as under-provisioned for that tick (``Cluster.sla``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kubetide.quantity import parse_quantity

SCENARIO_DIR = Path(__file__).parent / "scenarios"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the offending field."""


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def to_dict(self) -> dict[str, str]:
        d = {"key": self.key, "effect": self.effect}
        if self.value:
            d["value"] = self.value
        return d


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value

    def to_dict(self) -> dict[str, str]:
        d = {"operator": self.operator}
        if self.key:
            d["key"] = self.key
        if self.value:
            d["value"] = self.value
        if self.effect:
            d["effect"] = self.effect
        return d


@dataclass(frozen=True)
class NodeSpec:
    name: str
    zone: str
    group: str
    cpu: float
    memory: float
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False


@dataclass(frozen=True)
class NodeGroup:
    name: str
    cpu: float
    memory: float
    nodes: tuple[NodeSpec, ...]
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    elastic: bool = False  # scaled by the cluster-autoscaler model
    min_nodes: int = 0
    max_nodes: int = 0
    provisioning_delay_s: float = 180.0
    cost_per_hour: float = 0.0


@dataclass(frozen=True)
class AutoscalerSpec:
    """The cluster-autoscaler model's flags (names follow CA's command-line flags)."""

    enabled: bool = True
    scan_interval_s: float = 10.0
    scale_down_utilization_threshold: float = 0.5
    scale_down_unneeded_s: float = 600.0
    scale_down_delay_after_add_s: float = 600.0
    max_empty_bulk_delete: int = 10


@dataclass(frozen=True)
class Spikes:
    every_h: float = 1.0
    at_min: float = 0.0
    duration_min: float = 5.0
    factor: float = 1.5


@dataclass(frozen=True)
class Bursts:
    rate_per_h: float = 1.0
    duration_min: float = 5.0
    factor: float = 2.0


@dataclass(frozen=True)
class Demand:
    cpu: float
    tide_ratio: float = 1.0
    peak_hour: float = 14.0
    spikes: Spikes | None = None
    noise: float = 0.0
    memory: float = 256 * 2**20
    extra_spikes: tuple[Spikes, ...] = ()  # further spike trains (e.g. half-hourly)
    weekend_factor: float = 1.0  # demand multiplier on Saturday/Sunday (UTC)
    pattern: str = "periodic"  # periodic | random_walk
    volatility: float = 0.0  # random_walk: std of log-demand per sqrt(hour)
    bursts: Bursts | None = None
    memory_growth_per_h: float = 0.0  # relative per-pod memory growth per hour of pod age
    memory_per_core: float = 0.0  # memory-bound apps: extra bytes per core served

    @property
    def all_spikes(self) -> tuple[Spikes, ...]:
        return ((self.spikes,) if self.spikes is not None else ()) + self.extra_spikes


@dataclass(frozen=True)
class SpreadConstraint:
    max_skew: int = 1
    topology_key: str = "topology.kubernetes.io/zone"
    when_unsatisfiable: str = "DoNotSchedule"  # or ScheduleAnyway


@dataclass(frozen=True)
class HpaSpec:
    min_replicas: int = 1
    max_replicas: int = 10
    target_cpu_utilization: float = 70.0  # percent of requests
    tolerance: float = 0.1
    scale_down_stabilization_s: float = 300.0
    sync_period_s: float = 15.0


@dataclass(frozen=True)
class AntagonistSpec:
    intensity: float = 1.0  # added to co-located victims' relative CPI while active
    on_min: float = 10.0
    off_min: float = 0.0  # 0 = always on
    phase_min: float = 0.0  # offset of the on/off cycle from the scenario start


@dataclass(frozen=True)
class PDBSpec:
    name: str
    min_available: int | str | None = None
    max_unavailable: int | str | None = None


@dataclass(frozen=True)
class PodOverride:
    index: int
    node: str | None = None
    usage_multiplier: float = 1.0
    deletion_cost: int | None = None


@dataclass(frozen=True)
class AppSpec:
    name: str
    namespace: str
    replicas: int
    cpu_request: float
    mem_request: float
    demand: Demand
    cpu_limit: float | None = None
    mem_limit: float | None = None
    startup_s: float = 30.0
    labels: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    pdbs: tuple[PDBSpec, ...] = ()
    pods: tuple[PodOverride, ...] = ()
    image: str = "registry.local/app:1"
    annotations: dict[str, str] = field(default_factory=dict)  # pod annotations (e.g. safe-to-evict)
    priority: int = 0  # pod priority; < 0 = preemptible placeholder
    topology_spread: tuple[SpreadConstraint, ...] = ()
    hpa: HpaSpec | None = None
    antagonist: AntagonistSpec | None = None
    sensitivity: float = 1.0  # how much co-located antagonists raise this app's CPI
    max_cpu_per_pod: float | None = None  # a pod serves at most this (default: limits.cpu)
    base_cpi: float = 1.0
    base_latency_ms: float = 20.0
    character: str = "cpu"  # cpu | memory (memory-bound: memory follows load)

    def override(self, index: int) -> PodOverride | None:
        for o in self.pods:
            if o.index == index:
                return o
        return None

    @property
    def has_daily_period(self) -> bool | None:
        """Ground truth for scoring profiles: True when the app's demand follows a daily tide, False
        when its demand has no period at all (random walk, random bursts or flat, without spikes or
        tide), None when it has some other period (spike trains only, antagonist on/off cycles) or no
        demand."""
        d = self.demand
        if d.cpu <= 0 or self.antagonist is not None:
            return None
        if d.pattern == "periodic" and d.tide_ratio > 1:
            return True
        if d.tide_ratio <= 1 and not d.all_spikes:
            return False
        return None


@dataclass(frozen=True)
class DaemonSetSpec:
    name: str
    namespace: str = "kube-system"
    cpu_request: float = 0.1
    mem_request: float = 128 * 2**20
    usage_cpu: float = 0.05
    usage_memory: float = 64 * 2**20


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    start: datetime
    duration_h: float
    resolution_s: float
    speed: float
    zones: tuple[str, ...]
    node_groups: tuple[NodeGroup, ...]
    namespaces: tuple[str, ...]
    apps: tuple[AppSpec, ...]
    daemonsets: tuple[DaemonSetSpec, ...] = ()
    overhead_cpu: float = 0.1
    overhead_memory: float = 512 * 2**20
    source: str = ""
    autoscaler: AutoscalerSpec = field(default_factory=AutoscalerSpec)
    description: str = ""
    # scheduler.load_aware_weight: > 0 adds a load-aware score (measured node CPU usage, like the
    # Trimaran plugins fed by a load-watcher) to the default scheduler's; 0 = requests only.
    load_aware_weight: float = 0.0

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(n for g in self.node_groups for n in g.nodes)


# ---------------------------------------------------------------- validation helpers


def _err(path: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{path}: {msg}" if path else msg)


def _map(v: Any, path: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, f"expected a mapping, got {type(v).__name__}")
    return v


def _list(v: Any, path: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _err(path, f"expected a list, got {type(v).__name__}")
    return v


def _known(d: dict, allowed: set[str], path: str) -> None:
    for k in d:
        if k not in allowed:
            raise _err(f"{path}.{k}" if path else str(k), f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _required(d: dict, key: str, path: str) -> Any:
    if key not in d or d[key] is None:
        raise _err(f"{path}.{key}" if path else key, "required field is missing")
    return d[key]


def _str(v: Any, path: str, *, dns: bool = False) -> str:
    if not isinstance(v, str) or not v:
        raise _err(path, f"expected a non-empty string, got {v!r}")
    if dns and (len(v) > 63 or not _NAME_RE.match(v)):
        raise _err(path, f"{v!r} is not a valid DNS-1123 label")
    return v


def _num(v: Any, path: str, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _err(path, f"expected a number, got {v!r}")
    if positive and v <= 0:
        raise _err(path, f"must be > 0, got {v!r}")
    if minimum is not None and v < minimum:
        raise _err(path, f"must be >= {minimum}, got {v!r}")
    return float(v)


def _int(v: Any, path: str, *, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(path, f"expected an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise _err(path, f"must be >= {minimum}, got {v!r}")
    return v


def _qty(v: Any, path: str, *, positive: bool = False) -> float:
    try:
        q = parse_quantity(v)
    except ValueError as e:
        raise _err(path, str(e)) from None
    if positive and q <= 0:
        raise _err(path, f"must be > 0, got {v!r}")
    return q


def _labels(v: Any, path: str) -> dict[str, str]:
    d = _map(v, path)
    out = {}
    for k, val in d.items():
        if not isinstance(k, str) or not k:
            raise _err(path, f"label key {k!r} must be a non-empty string")
        if not isinstance(val, str | int | float) or isinstance(val, bool):
            raise _err(f"{path}.{k}", f"label value must be a string, got {val!r}")
        out[k] = str(val)
    return out


def _taints(v: Any, path: str) -> tuple[Taint, ...]:
    out = []
    for i, t in enumerate(_list(v, path)):
        p = f"{path}[{i}]"
        t = _map(t, p)
        _known(t, {"key", "value", "effect"}, p)
        effect = t.get("effect", "NoSchedule")
        if effect not in _EFFECTS:
            raise _err(f"{p}.effect", f"must be one of {', '.join(_EFFECTS)}, got {effect!r}")
        out.append(Taint(_str(_required(t, "key", p), f"{p}.key"), str(t.get("value", "")), effect))
    return tuple(out)


def _tolerations(v: Any, path: str) -> tuple[Toleration, ...]:
    out = []
    for i, t in enumerate(_list(v, path)):
        p = f"{path}[{i}]"
        t = _map(t, p)
        _known(t, {"key", "operator", "value", "effect"}, p)
        op = t.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            raise _err(f"{p}.operator", f"must be Equal or Exists, got {op!r}")
        effect = t.get("effect", "")
        if effect and effect not in _EFFECTS:
            raise _err(f"{p}.effect", f"must be one of {', '.join(_EFFECTS)}, got {effect!r}")
        out.append(Toleration(str(t.get("key", "")), op, str(t.get("value", "")), effect))
    return tuple(out)


def _int_or_percent(v: Any, path: str) -> int | str:
    if isinstance(v, bool):
        raise _err(path, f"expected an integer or a percentage, got {v!r}")
    if isinstance(v, int):
        if v < 0:
            raise _err(path, f"must be >= 0, got {v!r}")
        return v
    if isinstance(v, str) and re.fullmatch(r"\d+%", v) and int(v[:-1]) <= 100:
        return v
    raise _err(path, f"expected an integer or a percentage like '25%', got {v!r}")


# ---------------------------------------------------------------- parsing


def _parse_node_groups(raw: Any, zones: tuple[str, ...]) -> tuple[NodeGroup, ...]:
    groups = []
    seen: set[str] = set()
    items = _list(raw, "node_groups")
    if not items:
        raise _err("node_groups", "at least one node group is required")
    for gi, g in enumerate(items):
        p = f"node_groups[{gi}]"
        g = _map(g, p)
        _known(g, {"name", "cpu", "memory", "labels", "taints", "nodes_per_zone", "nodes", "elastic", "min_nodes",
                   "max_nodes", "provisioning_delay_s", "cost_per_hour"}, p)
        elastic = g.get("elastic", False)
        if not isinstance(elastic, bool):
            raise _err(f"{p}.elastic", f"expected true/false, got {elastic!r}")
        gname = _str(_required(g, "name", p), f"{p}.name", dns=True)
        cpu = _qty(_required(g, "cpu", p), f"{p}.cpu", positive=True)
        mem = _qty(_required(g, "memory", p), f"{p}.memory", positive=True)
        glabels = _labels(g.get("labels"), f"{p}.labels")
        gtaints = _taints(g.get("taints"), f"{p}.taints")
        nodes: list[NodeSpec] = []
        if "nodes_per_zone" in g and "nodes" in g:
            raise _err(f"{p}.nodes", "give either nodes_per_zone or nodes, not both")
        if "nodes" in g:
            for ni, n in enumerate(_list(g["nodes"], f"{p}.nodes")):
                np_ = f"{p}.nodes[{ni}]"
                n = _map(n, np_)
                _known(n, {"name", "zone", "labels", "taints", "unschedulable", "cpu", "memory"}, np_)
                zone = _str(_required(n, "zone", np_), f"{np_}.zone")
                if zone not in zones:
                    raise _err(f"{np_}.zone", f"unknown zone {zone!r} (zones: {', '.join(zones)})")
                name = _str(n.get("name") or f"{gname}-{ni + 1}", f"{np_}.name", dns=True)
                unsched = n.get("unschedulable", False)
                if not isinstance(unsched, bool):
                    raise _err(f"{np_}.unschedulable", f"expected true/false, got {unsched!r}")
                nodes.append(
                    NodeSpec(
                        name=name,
                        zone=zone,
                        group=gname,
                        cpu=_qty(n["cpu"], f"{np_}.cpu", positive=True) if "cpu" in n else cpu,
                        memory=_qty(n["memory"], f"{np_}.memory", positive=True) if "memory" in n else mem,
                        labels={**glabels, **_labels(n.get("labels"), f"{np_}.labels")},
                        taints=gtaints + _taints(n.get("taints"), f"{np_}.taints"),
                        unschedulable=unsched,
                    )
                )
        else:
            per_zone = _int(_required(g, "nodes_per_zone", p), f"{p}.nodes_per_zone", minimum=0 if elastic else 1)
            for zone in zones:
                for i in range(per_zone):
                    name = f"{gname}-{zone}-{i + 1}"
                    _str(name, f"{p}.name", dns=True)
                    nodes.append(NodeSpec(name, zone, gname, cpu, mem, dict(glabels), gtaints))
        for n in nodes:
            if n.name in seen:
                raise _err(f"{p}.nodes", f"duplicate node name {n.name!r}")
            seen.add(n.name)
        min_nodes = _int(g.get("min_nodes", 0), f"{p}.min_nodes", minimum=0)
        max_nodes = _int(g.get("max_nodes", max(len(nodes), min_nodes)), f"{p}.max_nodes", minimum=0)
        if max_nodes < min_nodes:
            raise _err(f"{p}.max_nodes", f"must be >= min_nodes ({min_nodes}), got {max_nodes}")
        if elastic and max_nodes < len(nodes):
            raise _err(f"{p}.max_nodes", f"must be >= the initial node count ({len(nodes)}), got {max_nodes}")
        groups.append(NodeGroup(
            gname, cpu, mem, tuple(nodes), glabels, gtaints, elastic, min_nodes, max_nodes,
            _num(g.get("provisioning_delay_s", 180.0), f"{p}.provisioning_delay_s", minimum=0.0),
            _num(g.get("cost_per_hour", 0.0), f"{p}.cost_per_hour", minimum=0.0)))
    return tuple(groups)


def _parse_demand(raw: Any, path: str) -> Demand:
    d = _map(raw, path)
    _known(d, {"cpu", "tide", "spikes", "noise", "memory", "weekend_factor", "pattern", "volatility", "bursts",
               "memory_growth_per_h", "memory_per_core"}, path)
    cpu = _qty(_required(d, "cpu", path), f"{path}.cpu")
    tide = _map(d.get("tide"), f"{path}.tide")
    _known(tide, {"ratio", "peak_hour"}, f"{path}.tide")
    ratio = _num(tide.get("ratio", 1.0), f"{path}.tide.ratio", minimum=1.0)
    peak_hour = _num(tide.get("peak_hour", 14.0), f"{path}.tide.peak_hour", minimum=0.0)
    if peak_hour >= 24:
        raise _err(f"{path}.tide.peak_hour", f"must be < 24, got {peak_hour!r}")
    trains = []
    raw_spikes = d.get("spikes")
    if raw_spikes is not None:
        for si, item in enumerate(raw_spikes if isinstance(raw_spikes, list) else [raw_spikes]):
            sp = f"{path}.spikes[{si}]" if isinstance(raw_spikes, list) else f"{path}.spikes"
            s = _map(item, sp)
            _known(s, {"every_h", "at_min", "duration_min", "factor"}, sp)
            trains.append(Spikes(
                every_h=_num(s.get("every_h", 1.0), f"{sp}.every_h", positive=True),
                at_min=_num(s.get("at_min", 0.0), f"{sp}.at_min", minimum=0.0),
                duration_min=_num(s.get("duration_min", 5.0), f"{sp}.duration_min", positive=True),
                factor=_num(s.get("factor", 1.5), f"{sp}.factor", minimum=0.0),
            ))
    noise = _num(d.get("noise", 0.0), f"{path}.noise", minimum=0.0)
    mem = _qty(d.get("memory", "256Mi"), f"{path}.memory")
    pattern = d.get("pattern", "periodic")
    if pattern not in ("periodic", "random_walk"):
        raise _err(f"{path}.pattern", f"must be periodic or random_walk, got {pattern!r}")
    bursts = None
    if d.get("bursts") is not None:
        bp = f"{path}.bursts"
        b = _map(d["bursts"], bp)
        _known(b, {"rate_per_h", "duration_min", "factor"}, bp)
        bursts = Bursts(_num(b.get("rate_per_h", 1.0), f"{bp}.rate_per_h", minimum=0.0),
                        _num(b.get("duration_min", 5.0), f"{bp}.duration_min", positive=True),
                        _num(b.get("factor", 2.0), f"{bp}.factor", minimum=0.0))
    return Demand(
        cpu, ratio, peak_hour, trains[0] if trains else None, noise, mem, tuple(trains[1:]),
        weekend_factor=_num(d.get("weekend_factor", 1.0), f"{path}.weekend_factor", minimum=0.0),
        pattern=pattern,
        volatility=_num(d.get("volatility", 0.0), f"{path}.volatility", minimum=0.0),
        bursts=bursts,
        memory_growth_per_h=_num(d.get("memory_growth_per_h", 0.0), f"{path}.memory_growth_per_h", minimum=0.0),
        memory_per_core=_qty(d.get("memory_per_core", 0), f"{path}.memory_per_core"),
    )


def _parse_pdbs(raw: Any, app: str, path: str) -> tuple[PDBSpec, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, item in enumerate(items):
        p = f"{path}[{i}]" if isinstance(raw, list) else path
        d = _map(item, p)
        _known(d, {"name", "minAvailable", "maxUnavailable", "min_available", "max_unavailable"}, p)
        mn = d.get("minAvailable", d.get("min_available"))
        mx = d.get("maxUnavailable", d.get("max_unavailable"))
        if (mn is None) == (mx is None):
            raise _err(f"{p}.minAvailable", "exactly one of minAvailable or maxUnavailable is required")
        name = _str(d.get("name") or (app if i == 0 else f"{app}-{i + 1}"), f"{p}.name", dns=True)
        out.append(
            PDBSpec(
                name,
                _int_or_percent(mn, f"{p}.minAvailable") if mn is not None else None,
                _int_or_percent(mx, f"{p}.maxUnavailable") if mx is not None else None,
            )
        )
    return tuple(out)


def _parse_resources(raw: Any, path: str, *, required: bool) -> tuple[float | None, float | None]:
    d = _map(raw, path)
    _known(d, {"cpu", "memory"}, path)
    if required:
        _required(d, "cpu", path)
        _required(d, "memory", path)
    cpu = _qty(d["cpu"], f"{path}.cpu") if "cpu" in d else None
    mem = _qty(d["memory"], f"{path}.memory") if "memory" in d else None
    return cpu, mem


_SAMPLERS = ("uniform", "loguniform", "randint", "choice")


def _sample(v: Any, rng: np.random.Generator, path: str) -> Any:
    """Replace ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (inclusive) and
    ``{choice: [a, b, ...]}`` anywhere in ``v`` by a seeded random draw (quantities allowed in ranges)."""
    if isinstance(v, dict):
        if len(v) == 1 and next(iter(v)) in _SAMPLERS:
            kind, arg = next(iter(v.items()))
            sp = f"{path}.{kind}"
            if kind == "choice":
                items = _list(arg, sp)
                if not items:
                    raise _err(sp, "needs at least one value")
                return copy.deepcopy(items[int(rng.integers(0, len(items)))])
            rng_ = _list(arg, sp)
            if len(rng_) != 2:
                raise _err(sp, f"expected [low, high], got {arg!r}")
            lo, hi = (_qty(x, f"{sp}[{i}]") for i, x in enumerate(rng_))
            if hi < lo:
                raise _err(sp, f"high < low in {arg!r}")
            if kind == "randint":
                return int(rng.integers(int(lo), int(hi) + 1))
            if kind == "loguniform":
                if lo <= 0:
                    raise _err(sp, "loguniform needs low > 0")
                return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            return float(rng.uniform(lo, hi))
        return {k: _sample(x, rng, f"{path}.{k}") for k, x in v.items()}
    if isinstance(v, list):
        return [_sample(x, rng, f"{path}[{i}]") for i, x in enumerate(v)]
    return v


def _expand_apps(raw: Any, seed: int) -> list[tuple[str, dict]]:
    """Generators: an app with ``count: N`` becomes N apps ``<name>-1..N``; sampled fields are drawn per copy
    from a generator seeded by (scenario seed, app index), so the same seed gives the same fleet."""
    out = []
    for ai, a in enumerate(_list(raw, "apps")):
        p = f"apps[{ai}]"
        a = _map(a, p)
        count = 1
        if "count" in a:
            count = _int(a["count"], f"{p}.count", minimum=0)
        rng = np.random.default_rng([seed, ai])
        base = {k: v for k, v in a.items() if k != "count"}
        for k in range(count):
            one = _sample(base, rng, p)
            if "count" in a and isinstance(one.get("name"), str):
                one["name"] = f"{one['name']}-{k + 1}"
            out.append((p, one))
    return out


def _parse_apps(raw: Any, namespaces: set[str], nodes: set[str], seed: int = 0) -> tuple[AppSpec, ...]:
    apps = []
    seen = set()
    for p, a in _expand_apps(raw, seed):
        _known(
            a,
            {
                "name", "namespace", "replicas", "requests", "limits", "startup_s", "labels",
                "node_selector", "tolerations", "demand", "pdb", "pods", "image", "annotations", "priority",
                "topology_spread", "hpa", "antagonist", "sensitivity", "max_cpu_per_pod", "base_cpi",
                "base_latency_ms", "character", "count",
            },
            p,
        )
        name = _str(_required(a, "name", p), f"{p}.name", dns=True)
        ns = _str(a.get("namespace", "default"), f"{p}.namespace", dns=True)
        if ns not in namespaces:
            raise _err(f"{p}.namespace", f"unknown namespace {ns!r} (declare it under namespaces)")
        if (ns, name) in seen:
            raise _err(f"{p}.name", f"duplicate app {ns}/{name}")
        seen.add((ns, name))
        replicas = _int(_required(a, "replicas", p), f"{p}.replicas", minimum=0)
        cpu_req, mem_req = _parse_resources(_required(a, "requests", p), f"{p}.requests", required=True)
        cpu_lim, mem_lim = _parse_resources(a.get("limits"), f"{p}.limits", required=False)
        overrides = []
        for oi, o in enumerate(_list(a.get("pods"), f"{p}.pods")):
            op = f"{p}.pods[{oi}]"
            o = _map(o, op)
            _known(o, {"index", "node", "usage_multiplier", "deletion_cost"}, op)
            idx = _int(o.get("index", oi), f"{op}.index", minimum=0)
            if idx >= replicas:
                raise _err(f"{op}.index", f"index {idx} >= replicas ({replicas})")
            node = o.get("node")
            if node is not None and node not in nodes:
                raise _err(f"{op}.node", f"unknown node {node!r}")
            cost = o.get("deletion_cost")
            overrides.append(
                PodOverride(
                    idx,
                    node,
                    _num(o.get("usage_multiplier", 1.0), f"{op}.usage_multiplier", minimum=0.0),
                    _int(cost, f"{op}.deletion_cost") if cost is not None else None,
                )
            )
        labels = _labels(a.get("labels"), f"{p}.labels")
        if "app" in labels:
            raise _err(f"{p}.labels.app", "the app label is set from the app name")
        apps.append(
            AppSpec(
                name=name,
                namespace=ns,
                replicas=replicas,
                cpu_request=cpu_req or 0.0,
                mem_request=mem_req or 0.0,
                cpu_limit=cpu_lim,
                mem_limit=mem_lim,
                demand=_parse_demand(_required(a, "demand", p), f"{p}.demand"),
                startup_s=_num(a.get("startup_s", 30.0), f"{p}.startup_s", minimum=0.0),
                labels=labels,
                node_selector=_labels(a.get("node_selector"), f"{p}.node_selector"),
                tolerations=_tolerations(a.get("tolerations"), f"{p}.tolerations"),
                pdbs=_parse_pdbs(a.get("pdb"), name, f"{p}.pdb"),
                pods=tuple(overrides),
                image=_str(a.get("image", f"registry.local/{name}:1"), f"{p}.image"),
                annotations=_labels(a.get("annotations"), f"{p}.annotations"),
                priority=_int(a.get("priority", 0), f"{p}.priority"),
                topology_spread=_parse_spread(a.get("topology_spread"), f"{p}.topology_spread"),
                hpa=_parse_hpa(a.get("hpa"), f"{p}.hpa", replicas),
                antagonist=_parse_antagonist(a.get("antagonist"), f"{p}.antagonist"),
                sensitivity=_num(a.get("sensitivity", 0.0 if a.get("antagonist") else 1.0), f"{p}.sensitivity",
                                 minimum=0.0),
                max_cpu_per_pod=(_qty(a["max_cpu_per_pod"], f"{p}.max_cpu_per_pod", positive=True)
                                 if a.get("max_cpu_per_pod") is not None else None),
                base_cpi=_num(a.get("base_cpi", 1.0), f"{p}.base_cpi", positive=True),
                base_latency_ms=_num(a.get("base_latency_ms", 20.0), f"{p}.base_latency_ms", positive=True),
                character=_choice(a.get("character", "cpu"), ("cpu", "memory"), f"{p}.character"),
            )
        )
    return tuple(apps)


def _choice(v: Any, allowed: tuple[str, ...], path: str) -> str:
    if v not in allowed:
        raise _err(path, f"must be one of {', '.join(allowed)}, got {v!r}")
    return v


_ZONE_KEYS = {"zone": "topology.kubernetes.io/zone", "hostname": "kubernetes.io/hostname"}


def _parse_spread(raw: Any, path: str) -> tuple[SpreadConstraint, ...]:
    out = []
    for i, item in enumerate(_list(raw, path)):
        p = f"{path}[{i}]"
        d = _map(item, p)
        _known(d, {"max_skew", "maxSkew", "topology_key", "topologyKey", "when_unsatisfiable",
                   "whenUnsatisfiable"}, p)
        skew = _int(d.get("max_skew", d.get("maxSkew", 1)), f"{p}.max_skew", minimum=1)
        key = d.get("topology_key", d.get("topologyKey", "topology.kubernetes.io/zone"))
        key = _ZONE_KEYS.get(key, key)
        _choice(key, tuple(_ZONE_KEYS.values()), f"{p}.topology_key")
        when = _choice(d.get("when_unsatisfiable", d.get("whenUnsatisfiable", "DoNotSchedule")),
                       ("DoNotSchedule", "ScheduleAnyway"), f"{p}.when_unsatisfiable")
        out.append(SpreadConstraint(skew, key, when))
    return tuple(out)


def _parse_hpa(raw: Any, path: str, replicas: int) -> HpaSpec | None:
    if raw is None or raw is False:
        return None
    d = _map(raw, path)
    _known(d, {"min_replicas", "max_replicas", "target_cpu_utilization", "tolerance", "scale_down_stabilization_s",
               "sync_period_s"}, path)
    mn = _int(d.get("min_replicas", 1), f"{path}.min_replicas", minimum=1)
    mx = _int(d.get("max_replicas", max(mn, replicas * 3)), f"{path}.max_replicas", minimum=1)
    if mx < mn:
        raise _err(f"{path}.max_replicas", f"must be >= min_replicas ({mn}), got {mx}")
    tol = _num(d.get("tolerance", 0.1), f"{path}.tolerance", minimum=0.0)
    if tol >= 1:
        raise _err(f"{path}.tolerance", f"must be < 1, got {tol}")
    return HpaSpec(mn, mx, _num(d.get("target_cpu_utilization", 70), f"{path}.target_cpu_utilization", positive=True),
                   tol, _num(d.get("scale_down_stabilization_s", 300), f"{path}.scale_down_stabilization_s",
                             minimum=0.0),
                   _num(d.get("sync_period_s", 15), f"{path}.sync_period_s", positive=True))


def _parse_antagonist(raw: Any, path: str) -> AntagonistSpec | None:
    if raw is None or raw is False:
        return None
    d = {} if raw is True else _map(raw, path)
    _known(d, {"intensity", "on_min", "off_min", "phase_min"}, path)
    return AntagonistSpec(_num(d.get("intensity", 1.0), f"{path}.intensity", minimum=0.0),
                          _num(d.get("on_min", 10.0), f"{path}.on_min", positive=True),
                          _num(d.get("off_min", 0.0), f"{path}.off_min", minimum=0.0),
                          _num(d.get("phase_min", 0.0), f"{path}.phase_min", minimum=0.0))


def _parse_daemonsets(raw: Any, namespaces: set[str]) -> tuple[DaemonSetSpec, ...]:
    out = []
    for i, d in enumerate(_list(raw, "daemonsets")):
        p = f"daemonsets[{i}]"
        d = _map(d, p)
        _known(d, {"name", "namespace", "requests", "usage"}, p)
        ns = _str(d.get("namespace", "kube-system"), f"{p}.namespace", dns=True)
        if ns not in namespaces:
            raise _err(f"{p}.namespace", f"unknown namespace {ns!r}")
        cpu, mem = _parse_resources(d.get("requests"), f"{p}.requests", required=False)
        ucpu, umem = _parse_resources(d.get("usage"), f"{p}.usage", required=False)
        out.append(
            DaemonSetSpec(
                _str(_required(d, "name", p), f"{p}.name", dns=True),
                ns,
                0.1 if cpu is None else cpu,
                128 * 2**20 if mem is None else mem,
                0.05 if ucpu is None else ucpu,
                64 * 2**20 if umem is None else umem,
            )
        )
    return tuple(out)


def _parse_start(v: Any) -> datetime:
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise _err("start", f"not an ISO-8601 time: {v!r}") from None
    else:
        raise _err("start", f"expected an ISO-8601 UTC time, got {v!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_scenario(doc: Any, *, source: str = "") -> Scenario:
    """Validate a scenario document (the parsed YAML) and build a :class:`Scenario`."""
    d = _map(doc, "")
    _known(
        d,
        {
            "name", "seed", "start", "duration_h", "resolution_s", "speed", "zones", "node_groups",
            "namespaces", "apps", "daemonsets", "system_overhead", "description", "cluster_autoscaler",
            "scheduler",
        },
        "",
    )
    name = _str(_required(d, "name", ""), "name")
    seed = _int(d.get("seed", 0), "seed", minimum=0)
    start = _parse_start(_required(d, "start", ""))
    zones_raw = _list(_required(d, "zones", ""), "zones")
    if not zones_raw:
        raise _err("zones", "at least one zone is required")
    zones = tuple(_str(z, f"zones[{i}]") for i, z in enumerate(zones_raw))
    if len(set(zones)) != len(zones):
        raise _err("zones", "duplicate zone")
    groups = _parse_node_groups(_required(d, "node_groups", ""), zones)
    ns_list = ["default", "kube-system"]
    for i, ns in enumerate(_list(d.get("namespaces"), "namespaces")):
        ns = _str(ns, f"namespaces[{i}]", dns=True)
        if ns not in ns_list:
            ns_list.append(ns)
    nsset = set(ns_list)
    node_names = {n.name for g in groups for n in g.nodes}
    apps = _parse_apps(d.get("apps"), nsset, node_names, seed)
    overhead = _map(d.get("system_overhead"), "system_overhead")
    ocpu, omem = _parse_resources(overhead, "system_overhead", required=False)
    return Scenario(
        name=name,
        seed=seed,
        start=start,
        duration_h=_num(d.get("duration_h", 24.0), "duration_h", positive=True),
        resolution_s=_num(d.get("resolution_s", 10.0), "resolution_s", positive=True),
        speed=_num(d.get("speed", 60.0), "speed", minimum=0.0),
        zones=zones,
        node_groups=groups,
        namespaces=tuple(ns_list),
        apps=apps,
        daemonsets=_parse_daemonsets(d.get("daemonsets"), nsset),
        overhead_cpu=0.1 if ocpu is None else ocpu,
        overhead_memory=512 * 2**20 if omem is None else omem,
        source=source,
        autoscaler=_parse_autoscaler(d.get("cluster_autoscaler")),
        description=str(d.get("description") or ""),
        load_aware_weight=_parse_scheduler(d.get("scheduler")),
    )


def _parse_scheduler(raw: Any) -> float:
    d = _map(raw, "scheduler")
    _known(d, {"load_aware_weight"}, "scheduler")
    return _num(d.get("load_aware_weight", 0.0), "scheduler.load_aware_weight", minimum=0.0)


def _parse_autoscaler(raw: Any) -> AutoscalerSpec:
    p = "cluster_autoscaler"
    d = _map(raw, p)
    _known(d, {"enabled", "scan_interval_s", "scale_down_utilization_threshold", "scale_down_unneeded_s",
               "scale_down_delay_after_add_s", "max_empty_bulk_delete"}, p)
    enabled = d.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(f"{p}.enabled", f"expected true/false, got {enabled!r}")
    thr = _num(d.get("scale_down_utilization_threshold", 0.5), f"{p}.scale_down_utilization_threshold", minimum=0.0)
    if thr > 1:
        raise _err(f"{p}.scale_down_utilization_threshold", f"must be <= 1, got {thr}")
    return AutoscalerSpec(
        enabled, _num(d.get("scan_interval_s", 10.0), f"{p}.scan_interval_s", positive=True), thr,
        _num(d.get("scale_down_unneeded_s", 600.0), f"{p}.scale_down_unneeded_s", minimum=0.0),
        _num(d.get("scale_down_delay_after_add_s", 600.0), f"{p}.scale_down_delay_after_add_s", minimum=0.0),
        _int(d.get("max_empty_bulk_delete", 10), f"{p}.max_empty_bulk_delete", minimum=1))


def _merge(base: Any, over: Any) -> Any:
    """Deep-merge ``over`` into ``base``; lists of mappings with ``name`` merge by name."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(over, list)
        and all(isinstance(x, dict) and "name" in x for x in base + over)
    ):
        out = [copy.deepcopy(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(out)}
        for item in over:
            if item["name"] in index:
                out[index[item["name"]]] = _merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(over)


def resolve_scenario_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    # A path when it looks like one or names a file; a bare name otherwise (a directory that
    # happens to share a scenario's name, e.g. a run dir called "demo", is not a scenario).
    if p.suffix in (".yaml", ".yml") or p.is_file() or "/" in str(name_or_path):
        if not p.is_file():
            raise ScenarioError(f"scenario file not found: {p}")
        return p
    candidate = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in SCENARIO_DIR.glob("*.yaml"))
        raise ScenarioError(f"unknown scenario {name_or_path!r} (known: {', '.join(known)})")
    return candidate


def _scale_nodes(doc: dict, total: Any) -> dict:
    """``nodes: N`` override: scale the non-elastic ``nodes_per_zone`` groups so the initial fleet (all groups,
    explicit nodes and elastic groups' initial nodes included) has about N nodes (whole nodes per zone)."""
    total = _int(total, "nodes", minimum=1)
    zones = len(_list(doc.get("zones"), "zones")) or 1
    doc = copy.deepcopy(doc)
    scalable, other = [], 0
    for g in _list(doc.get("node_groups"), "node_groups"):
        if not isinstance(g, dict):
            continue
        if "nodes_per_zone" in g and not g.get("elastic") and isinstance(g["nodes_per_zone"], int):
            scalable.append(g)
        elif isinstance(g.get("nodes"), list):
            other += len(g["nodes"])
        elif isinstance(g.get("nodes_per_zone"), int):
            other += g["nodes_per_zone"] * zones
    current = sum(g["nodes_per_zone"] for g in scalable)
    if not scalable or current <= 0:
        raise _err("nodes", "the nodes override needs non-elastic node groups with nodes_per_zone")
    per_zone_target = max(len(scalable), round((total - other) / zones))
    left = per_zone_target
    for i, g in enumerate(scalable):
        per = left if i == len(scalable) - 1 else max(1, round(per_zone_target * g["nodes_per_zone"] / current))
        per = max(1, per)
        left -= per
        g["nodes_per_zone"] = per
    return doc


def load_scenario(
    name_or_path: str | Path | dict, *, overrides: dict | None = None, seed: int | None = None,
    nodes: int | None = None, hours: float | None = None,
) -> Scenario:
    """Load and validate a scenario by name (kubesim/scenarios/<name>.yaml), path, or raw dict.

    ``overrides`` is deep-merged into the document before validation (lists of named
    items such as apps and node_groups merge by ``name``); ``seed`` replaces the seed.
    Three override keys are shorthands (also accepted as keyword arguments): ``seed``,
    ``hours`` (sets ``duration_h``) and ``nodes`` (scales the fixed ``nodes_per_zone``
    groups to about that many initial nodes).
    """
    overrides = dict(overrides or {})
    seed = overrides.pop("seed", seed) if seed is None else seed
    nodes = overrides.pop("nodes", nodes) if nodes is None else nodes
    hours = overrides.pop("hours", hours) if hours is None else hours
    overrides.pop("seed", None)
    overrides.pop("nodes", None)
    overrides.pop("hours", None)
    if isinstance(name_or_path, dict):
        doc, source = copy.deepcopy(name_or_path), "<dict>"
    else:
        path = resolve_scenario_path(name_or_path)
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ScenarioError(f"{path}: invalid YAML: {e}") from None
        source = str(path)
    if overrides:
        doc = _merge(_map(doc, ""), overrides)
    if seed is not None:
        doc = {**_map(doc, ""), "seed": seed}
    if hours is not None:
        doc = {**_map(doc, ""), "duration_h": hours}
    if nodes is not None:
        doc = _scale_nodes(_map(doc, ""), nodes)
    return parse_scenario(doc, source=source)
