"""Node-scale decisions for elastic node groups (pure; event time only): the ``NodeScale`` tick planner.

kubetide does the controller's part of an elastic node group; the cluster-autoscaler still adds and
removes the nodes. After every completed tick :class:`NodeScaler` reads the shared
:class:`~streams.core.state.ClusterState` and emits :class:`~kubetide.models.NodescaleDecision`\\ s
(topic ``decisions.nodescale``, key = node group):

- ``taint`` — an elastic node without ``taint_key`` gets it with ``taint_effect`` (PreferNoSchedule:
  pods fill the fixed nodes first); with ``taint: false`` an elastic node carrying it gets ``untaint``.
- ``annotate-pods`` — one decision per node with the pods whose
  ``controller.kubernetes.io/pod-deletion-cost`` differs from the wanted value: on elastic nodes
  ``elastic_deletion_cost`` − ``deletion_cost_step`` × the node's join rank (low: a ReplicaSet scale-in
  removes them first, the newest node's first, which empties whole elastic nodes, last in first out),
  on fixed nodes ``fixed_deletion_cost`` (``null`` = remove the annotation). ``params``:
  ``pods`` (comma-separated ``namespace/name``, at most ``max_pods_per_annotation``) and ``cost``
  (a string, or null to clear).
- ``size-placeholder`` — the overprovisioning placeholder Deployment of each elastic group
  (``placeholder``, ``{group}`` is replaced by the group name) gets ``replicas`` =
  ``ceil(growth / placeholder pod CPU request)`` clamped to [``placeholder_min``,
  ``placeholder_max``], where *growth* is how much the group's demand (CPU requests of the
  non-placeholder pods on its nodes, on the fixed nodes and of the pending pods: all but the other elastic
  groups') is predicted to rise within the next
  provisioning-delay window: :func:`streams.core.forecast.forecast` over the demand history
  (sampled every ``sample_s``, up to ``history_s``) → :func:`~streams.core.forecast.window_max` over
  ``provisioning_delay_s + sample_s`` × (1 + ``margin``) − demand now, less the CPU already free on the
  fixed nodes (``subtract_free``; whole placeholder pods per node; elastic nodes are left out, since the
  nodes the placeholders make the autoscaler add must not shrink them again). **Fallback** (history shorter
  than ``min_history_s``, no period found, or backtest WAPE above ``max_forecast_error``): the
  largest rise of the demand over any provisioning-delay window in the last ``fallback_lookback_s``
  (what a reactive sizing would have needed recently). Re-sized at most every ``resize_interval_s``.
- ``drain`` — in the trough, an elastic node whose pods all fit elsewhere is cordoned and emptied
  through the Eviction API (the actuator; PDB-safe: a 429 is retried), so the cluster-autoscaler
  removes it. A node is a candidate when: no non-placeholder pod is pending; the group's last node
  joined at least ``drain_after_join_s`` ago; it has at most ``drain_max_pods`` movable pods and
  none is protected (bare pod, ``safe-to-evict: "false"``, ``kubetide.io/evict: never``, local
  storage, mirror, protected namespace, a PDB with no disruption allowed); every pod (placeholders
  too, biggest request first) fits by requests on the other nodes — fixed nodes first, then the
  fullest other elastic nodes — with their taints and selectors; and the cluster's predicted
  maximum demand over ``trough_lookahead_s`` stays under ``trough_max_packing`` of the allocatable
  CPU left without the node (fallback without a forecast: demand now + its largest rise within a
  lookahead window of the last two, × (1 + ``margin``)).
  At most ``max_draining`` nodes of a group are cordoned at once (nodes already cordoned count);
  the least requested node goes first. A cordoned node that still has movable pods gets a fresh
  ``drain`` every ``reissue_s`` (its remaining pods).

Every decision has a deterministic id (hash of its inputs and the tick time), ``made_at`` = tick
time and ``expires_at`` = tick + ``ttl_s``. The same request is not repeated within ``reissue_s``.

Settings (``streams.nodescale`` in the config; all optional)::

    streams:
      nodescale:
        elastic_groups: [elastic]       # node groups kubetide treats as elastic (NodeSnapshot.node_group)
        elastic_label: kubetide.io/elastic   # ... or nodes labelled <elastic_label>: "true"
        taint: true
        taint_key: kubetide.io/elastic
        taint_effect: PreferNoSchedule
        elastic_deletion_cost: -100
        fixed_deletion_cost: null       # null = clear the annotation
        placeholder: overprovisioning/placeholder   # namespace/name of the placeholder Deployment
        provisioning_delay_s: 180
        max_draining: 1
        trough_lookahead_s: 1800
        trough_max_packing: 0.85
        drain_max_pods: 2
        drain_after_join_s: 900
        ...                             # see NodeScaleSettings
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubetide.config import build
from kubetide.models import NodescaleDecision, PodSnapshot, decision_id
from streams.core import forecast as fc
from streams.core.state import (
    EVICT_ANNOTATION,
    SAFE_TO_EVICT_ANNOTATION,
    ClusterState,
    Key,
    PerVersion,
    node_fit,
)

STRATEGY = "NodeScale"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass(frozen=True)
class NodeScaleSettings:
    """``streams.nodescale`` (see the module doc). Defaults on the fields."""

    elastic_groups: tuple[str, ...] = ("elastic",)
    elastic_label: str = "kubetide.io/elastic"
    taint: bool = True
    taint_key: str = "kubetide.io/elastic"
    taint_value: str = "true"
    taint_effect: str = "PreferNoSchedule"
    annotate: bool = True
    elastic_deletion_cost: int = -100
    deletion_cost_step: int = 1
    fixed_deletion_cost: int | None = None
    max_pods_per_annotation: int = 50
    placeholder: str = "overprovisioning/placeholder"
    size_placeholder: bool = True
    placeholder_min: int = 0
    placeholder_max: int = 50
    subtract_free: bool = True
    provisioning_delay_s: float = 180.0
    sample_s: float = 60.0
    history_s: float = 3 * 86400.0
    min_history_s: float = 86400.0
    margin: float = 0.1
    max_forecast_error: float = 0.5
    forecast_interval_s: float = 600.0
    fallback_lookback_s: float = 5400.0
    resize_interval_s: float = 60.0
    drain: bool = True
    max_draining: int = 1
    trough_lookahead_s: float = 1800.0
    trough_max_packing: float = 0.85
    drain_max_pods: int = 2
    drain_after_join_s: float = 900.0
    reissue_s: float = 120.0
    ttl_s: float = 300.0
    protected_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease", "kubetide")

    def validate(self) -> None:
        if self.taint_effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError("taint_effect: must be NoSchedule, PreferNoSchedule or NoExecute")
        if not self.taint_key:
            raise ValueError("taint_key: must not be empty")
        if self.placeholder.count("/") != 1 or not all(self.placeholder.split("/")):
            raise ValueError("placeholder: must be namespace/name ({group} may appear in either)")
        if not 0 <= self.placeholder_min <= self.placeholder_max:
            raise ValueError("placeholder_min: must be >= 0 and <= placeholder_max")
        for f in ("provisioning_delay_s", "sample_s", "history_s", "ttl_s", "trough_lookahead_s",
                  "forecast_interval_s"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f}: must be > 0")
        for f in ("min_history_s", "fallback_lookback_s", "resize_interval_s", "drain_after_join_s", "reissue_s",
                  "margin", "max_forecast_error"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f}: must be >= 0")
        if self.history_s < 2 * self.sample_s:
            raise ValueError("history_s: must be at least 2 samples (2 x sample_s)")
        if self.max_draining < 0:
            raise ValueError("max_draining: must be >= 0 (0 = never drain)")
        if self.drain_max_pods < 1 or self.max_pods_per_annotation < 1:
            raise ValueError("drain_max_pods / max_pods_per_annotation: must be >= 1")
        if not 0 < self.trough_max_packing <= 1:
            raise ValueError("trough_max_packing: must be in (0, 1]")

    def planner(self) -> NodeScaler:
        return NodeScaler(self)


def settings_from(data: Mapping[str, Any], where: str = "streams.nodescale") -> NodeScaleSettings:
    """``streams.nodescale`` → :class:`NodeScaleSettings` (``enabled`` is handled by the caller)."""
    return build(NodeScaleSettings, {k: v for k, v in data.items() if k != "enabled"}, where)


# ---------------------------------------------------------------- demand history


@dataclass
class History:
    """A demand series sampled every ``sample_s`` (last value of each bucket), at most ``n`` samples."""

    sample_s: float
    n: int
    buckets: deque[tuple[int, float]] = field(default_factory=deque)
    # the series as of the last call, keyed by (first bucket, last bucket, buckets held): only the last
    # bucket's value can change under the same key (the open bucket's latest tick)
    _series: tuple[tuple[int, int, int], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def add(self, ts: float, value: float) -> None:
        b = math.floor(ts / self.sample_s)
        if self.buckets and self.buckets[-1][0] == b:
            self.buckets[-1] = (b, value)
        elif not self.buckets or b > self.buckets[-1][0]:
            self.buckets.append((b, value))
        while self.buckets and self.buckets[0][0] <= b - self.n:
            self.buckets.popleft()

    def series(self) -> np.ndarray:
        """The samples oldest first, NaN where a bucket had no tick (never 0)."""
        if not self.buckets:
            return np.zeros(0)
        b0, (bl, vl) = self.buckets[0][0], self.buckets[-1]
        key = (b0, bl, len(self.buckets))
        if self._series is None or self._series[0] != key:
            out = np.full(bl - b0 + 1, np.nan)
            for b, v in self.buckets:
                out[b - b0] = v
            self._series = (key, out)
        out = self._series[1].copy()
        out[-1] = vl
        return out


def max_rise(x: np.ndarray, k: int) -> float:
    """The largest ``x[j] - x[i]`` with ``0 <= j - i <= k`` (NaN skipped); 0 for an empty series."""
    best = 0.0
    v = x[~np.isnan(x)] if len(x) else x
    for i in range(len(v)):
        hi = np.max(v[i:i + k + 1])
        best = max(best, float(hi - v[i]))
    return best


def predicted_max(hist: np.ndarray, s: NodeScaleSettings, window_s: float,
                  cache: dict[str, Any] | None = None, at: int | None = None) -> tuple[float | None, dict[str, Any]]:
    """The forecast maximum over the next ``window_s`` × (1 + margin), or None when the forecast is not
    usable (too short, not periodic, backtest error too high). Evidence explains which.

    ``cache`` (a dict owned by the caller, one per series): the forecast is refitted only every
    ``forecast_interval_s`` of samples; in between the stored one is read from the right offset. ``at``: the
    sample index of the last value (its time bucket), default ``len(hist)``."""
    present = int((~np.isnan(hist)).sum())
    if present * s.sample_s < s.min_history_s or present < 4:
        return None, {"forecast": "short-history", "history_s": present * s.sample_s}
    k = max(1, math.ceil(window_s / s.sample_s))
    step = max(1, round(s.forecast_interval_s / s.sample_s))
    n = len(hist) if at is None else at
    if cache is not None and cache.get("k") == k and 0 <= n - cache.get("n", -10**9) < step:
        f, off = cache["f"], n - cache["n"]
    else:
        f = fc.forecast(hist, s.sample_s, k + step, season_hint_s=86400.0)
        off = 0
        if cache is not None:
            cache.update(f=f, n=n, k=k)
    if f.method == "none" or not f.periods:
        return None, {"forecast": "not-periodic", "method": f.method}
    if f.backtest_error is not None and f.backtest_error > s.max_forecast_error:
        return None, {"forecast": "error-too-high", "wape": round(f.backtest_error, 4)}
    peak = fc.window_max(f.values[off:], s.sample_s, window_s, margin=s.margin)
    if not math.isfinite(peak):
        return None, {"forecast": "nan"}
    return peak, {"forecast": f.method, "wape": None if f.backtest_error is None else round(f.backtest_error, 4),
                  "period_s": f.periods[0].period_s}


def placeholder_replicas(hist: np.ndarray, pod_cpu: float, s: NodeScaleSettings,
                         free_cores: float = 0.0, cache: dict[str, Any] | None = None,
                         at: int | None = None) -> tuple[int, dict[str, Any]]:
    """Placeholder replicas for a group's demand history (CPU cores, oldest first) — see the module doc.
    ``free_cores``: CPU already free for the group's pods now (room that needs no new node)."""
    window_s = s.provisioning_delay_s + s.sample_s
    present = hist[~np.isnan(hist)]
    now = float(present[-1]) if len(present) else 0.0
    peak, ev = predicted_max(hist, s, window_s, cache, at)
    if peak is not None:
        growth = max(0.0, peak - now)
        ev["sizing"] = "forecast"
    else:
        k = max(1, math.ceil(window_s / s.sample_s))
        look = max(k + 1, math.ceil(s.fallback_lookback_s / s.sample_s))
        growth = max_rise(hist[-look:], k) * (1.0 + s.margin)
        ev["sizing"] = "fallback-recent-rise"
    need = max(0.0, growth - max(0.0, free_cores))
    n = math.ceil(need / pod_cpu - 1e-9) if pod_cpu > 0 else 0
    n = min(max(n, s.placeholder_min), s.placeholder_max)
    ev.update(demand_now=round(now, 3), growth_cores=round(growth, 3), free_cores=round(free_cores, 3),
              pod_cpu=pod_cpu)
    return n, ev


# ---------------------------------------------------------------- the planner


class NodeScaler:
    """The ``NodeScale`` tick planner (see the module doc). Keeps only its own small memory:
    demand histories, when each node was first seen, and what it asked for recently."""

    def __init__(self, settings: NodeScaleSettings | None = None) -> None:
        self.s = settings or NodeScaleSettings()
        n = max(2, int(self.s.history_s / self.s.sample_s))
        self._n = n
        self.group_hist: dict[str, History] = {}
        self.total_hist = History(self.s.sample_s, n)
        self.first_seen: dict[str, float] = {}
        self.join_seq: dict[str, int] = {}  # elastic node -> its join rank (0, 1, 2, ... in the order seen)
        self._seq = 0
        self.asked: dict[tuple, float] = {}  # request key -> made_at
        self.last_resize: dict[str, float] = {}
        self._trough: tuple[int | None, tuple[float | None, dict[str, Any]]] | None = None
        self._fc_cache: dict[tuple, dict[str, Any]] = {}
        self._placeholder_refs = frozenset(self.placeholder_ref(g) for g in self.s.elastic_groups)
        self._per_version = PerVersion()  # derived from the state's objects: rebuilt after an event

    # ------------------------------------------------------------ helpers
    def group_of(self, state: ClusterState, node: str) -> str | None:
        """The node's elastic group name, or None for a non-elastic node."""
        snap = state.nodes.get(node)
        if snap is None:
            return None
        if snap.node_group and snap.node_group in self.s.elastic_groups:
            return snap.node_group
        if snap.labels.get(self.s.elastic_label) == "true":
            return snap.node_group or "elastic"
        return None

    def placeholder_ref(self, group: str) -> tuple[str, str]:
        ns, name = self.s.placeholder.replace("{group}", group).split("/", 1)
        return ns, name

    def is_placeholder(self, key: Key, pod: PodSnapshot) -> bool:
        if pod.priority < 0:
            return True
        if pod.workload is None:
            return False
        return (pod.workload.namespace, pod.workload.name) in self._placeholder_refs

    def elastic_cost(self, node: str) -> str:
        """The pod-deletion-cost for pods on an elastic node: ``elastic_deletion_cost`` minus
        ``deletion_cost_step`` × the node's join rank, so a scale-in takes the newest node's pods first
        and empties whole nodes (last in, first out) instead of thinning them all."""
        return str(self.s.elastic_deletion_cost - self.s.deletion_cost_step * self.join_seq.get(node, 0))

    def _fresh(self, key: tuple, ts: float) -> bool:
        """True (and remembered) unless the same request was made within ``reissue_s``."""
        last = self.asked.get(key)
        if last is not None and ts - last < self.s.reissue_s:
            return False
        self.asked[key] = ts
        return True

    def _decision(self, ts: float, action: str, group: str, reason: str, *, node: str | None = None,
                  replicas: int | None = None, params: dict[str, Any] | None = None,
                  evidence: dict[str, Any] | None = None) -> NodescaleDecision:
        params = params or {}
        did = decision_id(STRATEGY, action, group, node, replicas, params, ts)
        return NodescaleDecision(id=did, made_at=ts, expires_at=ts + self.s.ttl_s, strategy=STRATEGY,
                                 reason=reason, evidence=evidence or {}, action=action, node_group=group,
                                 node=node, replicas=replicas, params=params)

    # ------------------------------------------------------------ plan
    def plan(self, state: ClusterState, ts: float) -> list[NodescaleDecision]:
        elastic = {n: g for n in sorted(state.nodes) if (g := self.group_of(state, n)) is not None}
        for n in elastic:
            self.first_seen.setdefault(n, ts)
            if n not in self.join_seq:
                self.join_seq[n] = self._seq
                self._seq += 1
        for n in [n for n in self.first_seen if n not in state.nodes]:
            del self.first_seen[n]
            self.join_seq.pop(n, None)
        self.asked = {k: t for k, t in self.asked.items() if ts - t < max(self.s.reissue_s, self.s.ttl_s)}
        self._observe(state, ts, elastic)
        out: list[NodescaleDecision] = []
        out += self._taints(state, ts, elastic)
        if self.s.annotate:
            out += self._annotations(state, ts, elastic)
        if self.s.size_placeholder:
            out += self._placeholders(state, ts, elastic)
        if self.s.drain and self.s.max_draining > 0:
            out += self._drains(state, ts, elastic)
        return out

    def _demand(self, state: ClusterState, elastic: dict[str, str]) -> tuple[float, dict[str, float]]:
        """(total, per elastic group) CPU requests of the non-placeholder, non-DaemonSet pods, from every
        pod (the plain rule that :meth:`_demand_fast` keeps up to date from the events)."""
        return self._sums(self._fresh_rows(state), elastic)

    def _fresh_rows(self, state: ClusterState) -> dict[Key, tuple[float, str | None]]:
        return {k: (p.requests.cpu_cores, p.node) for k, p in state.pods.items() if self._demanding(k, p)}

    def _sums(self, rows: dict[Key, tuple[float, str | None]],
              elastic: dict[str, str]) -> tuple[float, dict[str, float]]:
        per_group = dict.fromkeys(self.s.elastic_groups, 0.0)
        for g in elastic.values():
            per_group.setdefault(g, 0.0)
        total = 0.0
        for cpu, node in rows.values():
            total += cpu
            if node and node in elastic:
                per_group[elastic[node]] += cpu
        return total, per_group

    def _demanding(self, key: Key, pod: PodSnapshot) -> bool:
        """Does the pod count in :meth:`_demand` (Running / Pending, not a placeholder, not a DaemonSet pod)?"""
        return (pod.phase in ("Running", "Pending") and not self.is_placeholder(key, pod)
                and not (pod.workload is not None and pod.workload.kind == "DaemonSet"))

    def _demand_rows(self, state: ClusterState) -> dict[Key, tuple[float, str | None]]:
        """Pod key -> (CPU request, node) of the pods :meth:`_demand` counts, in :attr:`ClusterState.pods` order
        (kept up to date from the pod events: ``ClusterState.incremental``)."""
        def catch_up(old: dict[Key, tuple[float, str | None]], keys: list[Key]) -> dict[Key, tuple[float, str | None]]:
            rows = dict(old)
            # each event moves its pod to the end of state.pods (or out of it): re-add the changed pods still
            # counted in the order of their last event
            for k in list(dict.fromkeys(reversed(keys)))[::-1]:
                rows.pop(k, None)
                p = state.pods.get(k)
                if p is not None and self._demanding(k, p):
                    rows[k] = (p.requests.cpu_cores, p.node)
            return rows

        return state.incremental(("nodescale-demand", self._placeholder_refs), lambda: self._fresh_rows(state),
                                 catch_up)

    def _demand_fast(self, state: ClusterState, elastic: dict[str, str]) -> tuple[float, dict[str, float]]:
        """:meth:`_demand` from :meth:`_demand_rows`: the same sums, in the same order."""
        return self._sums(self._demand_rows(state), elastic)

    def _observe(self, state: ClusterState, ts: float, elastic: dict[str, str]) -> None:
        # the sums read only the state's objects (and ``elastic``, derived from its nodes): once per event
        total, per_group = self._per_version.get(state, "demand", lambda: self._demand_fast(state, elastic))
        self.total_hist.add(ts, total)
        elastic_total = sum(per_group.values())
        for g, v in per_group.items():
            # what this group and the fixed nodes serve: all of it but the other elastic groups' pods. Its rise is
            # the group's (the fixed nodes' free room is subtracted when sizing); unlike the group's own share,
            # which swings from zero to its peak every day, it forecasts well (a low relative error)
            self.group_hist.setdefault(g, History(self.s.sample_s, self._n)).add(ts, total - (elastic_total - v))

    # taints ---------------------------------------------------------------
    def _taints(self, state: ClusterState, ts: float, elastic: dict[str, str]) -> list[NodescaleDecision]:
        out = []
        for n, g in elastic.items():
            snap = state.nodes[n]
            has = any(t.key == self.s.taint_key and t.effect == self.s.taint_effect for t in snap.taints)
            if self.s.taint and not has and self._fresh(("taint", n), ts):
                out.append(self._decision(ts, "taint", g, f"elastic node {n} joined without {self.s.taint_key}",
                                          node=n, params={"key": self.s.taint_key, "value": self.s.taint_value,
                                                          "effect": self.s.taint_effect}))
            elif not self.s.taint and any(t.key == self.s.taint_key for t in snap.taints) \
                    and self._fresh(("untaint", n), ts):
                out.append(self._decision(ts, "untaint", g, f"taint {self.s.taint_key} is off in the config",
                                          node=n, params={"key": self.s.taint_key}))
        return out

    # deletion cost -------------------------------------------------------
    def _cost_mismatches(self, state: ClusterState,
                         elastic: dict[str, str]) -> list[tuple[str, str, str | None, list[Key]]]:
        """Per node with pods (sorted): (node, group, wanted cost, the annotatable pods whose
        pod-deletion-cost differs from it, in ``pods_on`` order); only the nodes with such pods."""
        out = []
        fx_cost = None if self.s.fixed_deletion_cost is None else str(self.s.fixed_deletion_cost)
        for node in sorted(state.pods_by_node):
            snap = state.nodes.get(node)
            if snap is None:
                continue
            want = self.elastic_cost(node) if node in elastic else fx_cost
            group = elastic.get(node) or snap.node_group or ""
            # per node, until a pod event on it: the annotatable pods whose cost differs, per wanted cost
            by_want = state._node_memo(("nodescale-cost", self._placeholder_refs, self.s.protected_namespaces),
                                       node, dict)
            keys = by_want.get(want)
            if keys is None:
                keys = by_want[want] = self._cost_differs(state, node, want)
            if keys:
                out.append((node, group, want, keys))
        return out

    def _cost_differs(self, state: ClusterState, node: str, want: str | None) -> list[Key]:
        """The node's annotatable pods (Running, of a Deployment / ReplicaSet, not protected, not placeholders)
        whose pod-deletion-cost is not ``want``, in ``pods_on`` order."""
        keys = []
        for key, pod in state.pods_on(node):
            if pod.phase != "Running" or pod.workload is None or pod.workload.kind not in ("ReplicaSet",
                                                                                           "Deployment"):
                continue
            if key[0] in self.s.protected_namespaces or self.is_placeholder(key, pod):
                continue
            if pod.annotations.get(DELETION_COST) != want:
                keys.append(key)
        return keys

    def _annotations(self, state: ClusterState, ts: float, elastic: dict[str, str]) -> list[NodescaleDecision]:
        out = []
        # what differs reads only the state's objects and the join ranks (which change only with its nodes)
        mismatches = self._per_version.get(state, "cost", lambda: self._cost_mismatches(state, elastic),
                                           key=tuple(sorted(self.join_seq.items())))
        for node, group, want, keys in mismatches:
            todo = [f"{key[0]}/{key[1]}" for key in keys if self._fresh(("cost", key, node, want), ts)]
            for i in range(0, len(todo), self.s.max_pods_per_annotation):
                chunk = todo[i:i + self.s.max_pods_per_annotation]
                kind = "elastic" if node in elastic else "fixed"
                out.append(self._decision(ts, "annotate-pods", group,
                                          f"{len(chunk)} pod(s) on {kind} node {node}: pod-deletion-cost "
                                          f"{want if want is not None else 'cleared'}",
                                          node=node, params={"pods": ",".join(chunk), "cost": want},
                                          evidence={"pods": len(chunk), "elastic": node in elastic}))
        return out

    # placeholder ---------------------------------------------------------
    def _placeholders(self, state: ClusterState, ts: float, elastic: dict[str, str]) -> list[NodescaleDecision]:
        out = []
        for g in sorted(self.group_hist):
            if g not in self.s.elastic_groups and g not in elastic.values():
                continue
            if ts - self.last_resize.get(g, -math.inf) < self.s.resize_interval_s:
                continue
            ref = self.placeholder_ref(g)
            dep = state.deployments.get(ref)
            if dep is None:
                continue
            self.last_resize[g] = ts
            pod_cpu = dep.pod_requests.cpu_cores if dep.pod_requests is not None else 0.0
            if pod_cpu <= 0:
                pod_cpu = next((p.requests.cpu_cores for k, p in state.pods.items()
                                if p.workload is not None and (p.workload.namespace, p.workload.name) == ref), 0.0)
            if pod_cpu <= 0:
                continue
            want, ev = placeholder_replicas(self.group_hist[g].series(), pod_cpu, self.s,
                                            self._free_cores(state, pod_cpu, elastic) if self.s.subtract_free else 0.0,
                                            self._fc_cache.setdefault(("group", g), {}),
                                            self.group_hist[g].buckets[-1][0] if self.group_hist[g].buckets else None)
            if want == dep.replicas or not self._fresh(("size", g, want), ts):
                continue
            out.append(self._decision(ts, "size-placeholder", g,
                                      f"headroom for the demand predicted in the next {self.s.provisioning_delay_s:.0f}"
                                      f" s: {ev['growth_cores']} cores ({ev['sizing']})",
                                      replicas=want, params={"namespace": ref[0], "name": ref[1],
                                                             "current": dep.replicas},
                                      evidence={k: v for k, v in ev.items() if isinstance(v, str | int | float)}))
        return out

    def _free_cores(self, state: ClusterState, pod_cpu: float, elastic: dict[str, str]) -> float:
        """CPU free for new pods now on the ready, schedulable *fixed* nodes (placeholders' requests count as free:
        real pods preempt them), in whole placeholder pods per node. Elastic nodes are left out on purpose: the
        nodes the placeholders themselves make the autoscaler add must not shrink the placeholders (that loop
        oscillates)."""
        free = 0.0
        for n, snap in state.nodes.items():
            if n in elastic or not snap.ready or snap.unschedulable:
                continue
            used = state._node_memo(("nodescale-used", self._placeholder_refs), n, lambda n=n: sum(
                p.requests.cpu_cores for k, p in state.pods_on(n) if not self.is_placeholder(k, p)))
            room = max(0.0, snap.allocatable.cpu_cores - used)
            free += math.floor(room / pod_cpu + 1e-9) * pod_cpu
        return free

    # drain ---------------------------------------------------------------
    def _movable(self, state: ClusterState, key: Key, pod: PodSnapshot) -> str | None:
        """None when a drain may evict this pod, else the reason it blocks the node."""
        if pod.mirror:
            return "mirror-pod"
        if pod.workload is None or pod.workload.kind == "Pod":
            return "bare-pod"
        if key[0] in self.s.protected_namespaces:
            return "protected-namespace"
        if pod.annotations.get(SAFE_TO_EVICT_ANNOTATION) == "false":
            return "safe-to-evict-false"
        if pod.annotations.get(EVICT_ANNOTATION) == "never":
            return "annotation-never"
        if pod.local_storage and pod.annotations.get(SAFE_TO_EVICT_ANNOTATION) != "true":
            return "local-storage"
        for (_, name), pdb in state.pdbs_for(key[0], pod):
            if pdb.disruptions_allowed <= 0 and pod.ready:
                return f"pdb-{name}"
        return None

    def _drains(self, state: ClusterState, ts: float, elastic: dict[str, str]) -> list[NodescaleDecision]:
        out: list[NodescaleDecision] = []
        by_group: dict[str, list[str]] = {}
        for n, g in elastic.items():
            by_group.setdefault(g, []).append(n)
        # pods still on cordoned elastic nodes: continue those drains
        for n, g in elastic.items():
            snap = state.nodes[n]
            if not snap.unschedulable:
                continue
            left = [(k, p) for k, p in state.pods_on(n) if not _daemon(p)]
            if left and self._fresh(("drain", n), ts):
                out.append(self._drain(ts, g, n, left, "continue the drain of cordoned node"))
        pending = self._per_version.get(state, "pending", lambda: any(
            not p.node and p.phase == "Pending" and not self.is_placeholder(k, p) for k, p in state.pods.items()))
        if pending:
            return out
        total = self.total_hist.series()
        bucket = self.total_hist.buckets[-1][0] if self.total_hist.buckets else None
        if self._trough is None or self._trough[0] != bucket:  # once per sample, not per tick
            self._trough = (bucket, predicted_max(total, self.s, self.s.trough_lookahead_s,
                                                  self._fc_cache.setdefault(("total",), {}), bucket))
        peak, fev = self._trough[1]
        present = total[~np.isnan(total)]
        now_demand = float(present[-1]) if len(present) else 0.0
        if peak is None:  # no usable forecast: assume it may rise again as much as it did recently
            k = max(1, math.ceil(self.s.trough_lookahead_s / self.s.sample_s))
            peak = (now_demand + max_rise(total[-(2 * k):], k)) * (1.0 + self.s.margin)
        peak = max(peak, now_demand)
        alloc_total = sum(s.allocatable.cpu_cores for s in state.nodes.values() if s.ready and not s.unschedulable)
        for g, nodes in sorted(by_group.items()):
            draining = sum(1 for n in nodes if state.nodes[n].unschedulable)
            if draining >= self.s.max_draining:
                continue
            newest = max(self.first_seen.get(n, ts) for n in nodes)
            if ts - newest < self.s.drain_after_join_s:
                continue
            cands = []
            for n in nodes:
                snap = state.nodes[n]
                if snap.unschedulable or not snap.ready:
                    continue
                pods = [(k, p) for k, p in state.pods_on(n) if not _daemon(p)]
                movable = [(k, p) for k, p in pods if not self.is_placeholder(k, p)]
                if len(movable) > self.s.drain_max_pods:
                    continue
                if any(self._movable(state, k, p) is not None for k, p in pods):
                    continue
                cands.append((state.requested_on(n)[0], n, pods))
            for _, n, pods in sorted(cands):
                if draining >= self.s.max_draining:
                    break
                left = alloc_total - state.nodes[n].allocatable.cpu_cores
                if peak > self.s.trough_max_packing * left:
                    break  # the least requested node does not fit the predicted peak: no trough
                if not self._fits_elsewhere(state, n, pods, elastic):
                    continue
                if not self._fresh(("drain", n), ts):
                    continue
                out.append(self._drain(ts, g, n, pods, "trough: its pods fit elsewhere",
                                       {"predicted_demand_cores": round(peak, 3),
                                        "allocatable_left_cores": round(left, 3),
                                        **{k: v for k, v in fev.items() if isinstance(v, str | int | float)}}))
                draining += 1
                alloc_total = left
        return out

    def _drain(self, ts: float, g: str, n: str, pods: list[tuple[Key, PodSnapshot]], reason: str,
               evidence: dict[str, Any] | None = None) -> NodescaleDecision:
        names = ",".join(f"{k[0]}/{k[1]}" for k, _ in pods)
        return self._decision(ts, "drain", g, f"{reason} {n}" if "cordoned" in reason else f"{reason} ({n})",
                              node=n, params={"pods": names},
                              evidence={"pods": len(pods), **(evidence or {})})

    def _fits_elsewhere(self, state: ClusterState, node: str, pods: list[tuple[Key, PodSnapshot]],
                        elastic: dict[str, str]) -> bool:
        """Place every pod by requests (biggest first) on the other nodes: fixed nodes first, then the
        fullest other elastic nodes (so one drain does not spread over many)."""
        extra: dict[str, list[float]] = {}
        others = [n for n in state.nodes if n != node and state.nodes[n].ready and not state.nodes[n].unschedulable]

        def order(n: str) -> tuple:
            cpu, _ = state.requested_on(n)
            alloc = state.nodes[n].allocatable.cpu_cores or 1.0
            return (n in elastic, -cpu / alloc, n)

        others.sort(key=order)
        for _, pod in sorted(pods, key=lambda kp: (-kp[1].requests.cpu_cores, kp[0])):
            for n in others:
                e = extra.setdefault(n, [0.0, 0.0])
                ok, _ = node_fit(pod, n, state, (e[0], e[1]))
                if ok:
                    e[0] += pod.requests.cpu_cores
                    e[1] += pod.requests.mem_bytes
                    break
            else:
                return False
        return True


def _daemon(p: PodSnapshot) -> bool:
    return p.workload is not None and p.workload.kind == "DaemonSet"

