"""`kubetide evaluate`: run a kubesim scenario with kubetide and with the plain-Kubernetes baseline, score both.

    kubetide evaluate --scenario NAME|PATH [--seed N] [--nodes N] [--hours H] [--offline]
                      --report report.json [--plot report.png]

Both runs start from the same scenario and seed (the same cluster, the same demand noise):

- **kubetide**: with ``--offline`` the decision path runs in-process through the same
  ``streams/core`` functions the faust agents call (:mod:`kubetide.offline`); without it, through
  the real pipeline: the embedded broker, the collector, the faust stream worker and the
  actuator as processes, against kubesim's HTTP API on a manual clock advanced in lockstep (one
  tick, then wait until the collector has published that tick's metrics of every node, then let
  the pipeline act for a bounded moment).
- **baseline**: what a cluster without kubetide does: no descheduler; kubesim's reactive HPA
  (``streams/core/hpa.py``: tolerance 0.1, 300 s scale-down stabilisation) on the apps with ``hpa:``
  and its cluster-autoscaler model on elastic node groups where the scenario enables it (kubesim's
  ``Cluster`` defaults).

Offline, the kubetide run autoscales every app with an ``hpa:`` spec itself (kubesim's HPA off): a
kubetide policy per app derived from the spec (same min / max / target utilisation / tolerance, the
predictive trigger on; :func:`kubetide.offline_autoscale.with_scenario_autoscale`, ``streams.autoscale``
in ``--config`` adds a ``default_policy`` or explicit ``workloads``, ``enabled: false`` keeps kubesim's
HPA), its ``decisions.autoscale`` applied through ``Cluster.set_replicas``
(:mod:`kubetide.offline_autoscale`). The cluster-autoscaler model is the same in both runs. A scenario
with a load-aware scheduler (``scheduler.load_aware_weight``) tells kubetide so, as an operator would
(``streams.guard.scheduler_load_weight``, unless ``--config`` sets it: :func:`scheduler_config`).

The report (``--report``) is one JSON object ``{"scenario", "seed", "sim_hours", "tick_s", "mode",
"kubetide": {...}, "baseline": {...}, "wall_s": {...}, "decisions": [...]}``; each run has the keys
of :data:`KEYS` (computed by :mod:`kubetide.scorecard` from per-tick series):

- ``node_cpu_spread_p95_p5``: time-mean of the p95 − p5 spread of node CPU usage % (points).
- ``max_zone_skew``: the worst per-workload zone skew (max − min Running pods over the cluster's
  zones) at the end of the initial tick and of every tick with an action (eviction, replica change,
  node added or removed).
- ``pdb_violations``: evictions applied by kubetide after which a PDB of the pod had fewer healthy
  pods than it requires (kubesim's Eviction API refuses those with 429, so this stays 0 unless
  something bypasses it). 0 for the baseline, which evicts nothing.
- ``evictions``: evictions the cluster performed (its counter: kubetide's, and in both runs the
  cluster-autoscaler model's drains of elastic nodes). ``repeat_evictions_30m`` and
  ``pdb_violations`` look at kubetide's evictions only (through the Eviction API).
- ``repeat_evictions_30m``: see :func:`kubetide.scorecard.repeat_evictions` — an eviction of a
  workload within 30 min of an earlier eviction of the same workload whose replacement pod is the
  pod now evicted, or whose replacement landed on the node the pod is now evicted from.
- ``underprovisioned_pod_minutes``: kubesim's per-tick count of under-provisioned pods (Ready pods
  that could not serve more than 1 % of their share of demand — per-pod cap, a contended node shared by
  request like CFS — plus
  every replica of an app with demand and no Ready pod) × tick length. (With a kubesim without
  ``Cluster.sla``: unserved demand in pods of the app's request,
  :func:`kubetide.scorecard.underprovisioned_pod_minutes`.)
- ``replica_hours``: Running (non-DaemonSet) pods × time. ``node_hours``: nodes × time.
- ``scale_events``: replica changes of Deployments (one per Deployment per tick its ``replicas`` changed),
  whoever made them (kubesim's HPA, kubetide's autoscaler).
- ``pending_pod_seconds_p95``: p95 of the seconds each pod created during the run (not DaemonSet pods,
  not negative-priority placeholders) waited from creation until bound to a node (:class:`PodWaits`).
  ``packing_rate_peak``: mean requested / allocatable CPU (schedulable nodes; placeholders excluded)
  over the ticks whose demand is at or above its 90th percentile. ``node_scale_evictions``: evictions of
  workload pods (placeholders, which no workload misses, are left out as in the two keys before)
  made to remove nodes — the cluster-autoscaler model's drains in both runs, plus kubetide's node-scale
  drains (offline, scenarios with an elastic group turn on ``streams.nodescale``:
  :func:`kubetide.offline_nodescale.elastic_config`; the cluster-autoscaler model runs in both runs;
  the online run does not turn node scaling on yet, so there only the cluster-autoscaler's count).
- ``ideal_node_hours``: kubesim's per-tick ideal node count (``accounting()["ideal_nodes_now"]``) × tick
  length: the fewest nodes that fit the requests of all pods but DaemonSet pods and placeholders
  (negative priority) — of the largest type, or, with an elastic group, every node of the other groups
  plus the fewest nodes of the elastic group for the rest (its ``min_nodes`` at least). (Without it:
  ``max(1, ceil(total CPU usage / node size))`` per tick.)
- ``interference_precision`` / ``_recall`` / ``antagonist_top1``: the offline kubetide run feeds
  every node scrape to ``streams/core/interference.update`` (with per-pod CPI and latency columns
  taken from the simulated pods, what a collector reading the custom metrics API would add) and
  scores its ``open`` anomalies against kubesim's ground truth (``Cluster.truth_view()``: one
  episode per antagonist episode and victim) with :func:`kubetide.scorecard.interference_scores`, a
  finding matching an episode up to 12 ticks after it ended (detection lag). **null** for the
  baseline (no detector), for the online run (today's collector does not read CPI / latency and
  the stream worker runs no detector) and for a kubesim without ground truth.
- ``periodic_daily_found`` / ``nonperiodic_no_period``: the share of apps with a daily tide whose
  profile found a period of 24 h (± 10 %), and the share of apps with no period at all (random walk,
  random bursts, flat) whose profile claims none (:func:`periodicity`, ground truth
  ``AppSpec.has_daily_period``; apps with only spike trains or antagonist cycles are not counted).
  Offline kubetide runs with the profiler, at least ``profiler.period_min_cycles`` (3) days long;
  null otherwise and for the baseline.
- ``decision_latency_p99_s``: kubetide offline: the tick quantum (processing is instantaneous in
  virtual time; a change is observed at the next tick at the latest). Online: p99 of the real
  seconds from the clock step of a tick to the arrival of a decision made for that tick. Baseline:
  null (it makes no decisions).

Exit codes: 0 done, 2 bad arguments or bad scenario (kubesim's ``ScenarioError``), 1 other failures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from kubetide import scorecard as sc

log = logging.getLogger("kubetide.evaluate")

KEYS = (
    "node_cpu_spread_p95_p5", "max_zone_skew", "pdb_violations", "evictions", "repeat_evictions_30m",
    "underprovisioned_pod_minutes", "replica_hours", "node_hours", "ideal_node_hours",
    "interference_precision", "interference_recall", "antagonist_top1", "decision_latency_p99_s",
    "scale_events",
    "pending_pod_seconds_p95", "packing_rate_peak", "node_scale_evictions",
    "periodic_daily_found", "nonperiodic_no_period",
)


class EvaluateError(ValueError):
    """Bad arguments or scenario: exit code 2 with this message."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", required=True, help="kubesim scenario name or YAML path")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--nodes", type=int, default=None,
                        help="scale node groups given by nodes_per_zone to about N nodes in all")
    parser.add_argument("--hours", type=float, default=None,
                        help="virtual hours to simulate (default: the scenario's duration_h)")
    parser.add_argument("--offline", action="store_true",
                        help="run kubetide's decision path in-process (no broker, no processes)")
    parser.add_argument("--config", default=None,
                        help="kubetide YAML config (streams: / actuator: sections) for the kubetide run, both modes")
    parser.add_argument("--report", required=True, help="write the JSON report here")
    parser.add_argument("--plot", default=None, help="write a PNG figure of both runs here")
    parser.add_argument("--fast", action="store_true",
                        help="offline: also skip the profiler (it changes no decision)")
    parser.add_argument("--codec", action="store_true",
                        help="offline: render every object and scrape to Kubernetes JSON and round-trip every "
                             "message through the Kafka codec, as the workers see them, and emit profiles "
                             "(the same decisions, several times slower)")
    parser.add_argument("--serial", action="store_true",
                        help="offline: run the baseline after the kubetide run instead of alongside it in a "
                             "second process")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.add_argument("--run-dir", default=".kubetide/evaluate",
                        help="logs of the online run's processes (default .kubetide/evaluate)")
    parser.add_argument("--settle", type=float, default=0.3,
                        help="online: real seconds allowed after a decision's outcome for the collector to "
                             "forward its effects before the clock moves (default 0.3)")
    parser.add_argument("--log-level", default="WARNING")


# ---------------------------------------------------------------------------- scenario


def load(scenario: str, *, seed: int | None, nodes: int | None) -> Any:
    """Load the scenario through kubesim (``--nodes``: kubesim's ``nodes`` override, which scales the
    non-elastic ``nodes_per_zone`` groups to about N initial nodes)."""
    from kubesim.scenario import ScenarioError, load_scenario

    if nodes is not None and nodes < 1:
        raise EvaluateError("--nodes: must be >= 1")
    try:
        return load_scenario(scenario, seed=seed, nodes=nodes)
    except ScenarioError as exc:
        raise EvaluateError(str(exc)) from None


def load_config(path: str | None) -> dict[str, Any]:
    """The kubetide config (file + environment), checked for the sections the kubetide run uses."""
    from kubetide.config import ConfigError, load

    try:
        cfg = load(path)
        settings_from_config(cfg)
    except (ConfigError, ValueError) as exc:
        raise EvaluateError(f"--config: {exc}") from None
    return cfg


def settings_from_config(config: dict[str, Any] | None) -> tuple[Any, Any]:
    """(StreamsSettings, ActuatorSettings) exactly as the stream worker and the actuator build them."""
    from kubetide import topics
    from kubetide.config import build, section
    from streams.core.settings import StreamsSettings
    from workers.actuator import ActuatorSettings

    cfg = config or {}
    # The offline actuator applies descheduling decisions only (the one decision type the stream
    # worker emits today), whatever topics the actuator section lists.
    act = {**section(cfg, "actuator"), "topics": [topics.DECISIONS_DESCHEDULE]}
    return StreamsSettings.from_config(cfg), build(ActuatorSettings, act, "actuator")


# ---------------------------------------------------------------------------- per-tick series


@dataclass
class Series:
    """What each tick of a run looked like (the input of the scorecard and of the plot)."""

    t: list[float] = field(default_factory=list)
    node_pct: list[dict[str, float]] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    usage_cores: list[float] = field(default_factory=list)
    demand: list[list[float]] = field(default_factory=list)
    served: list[list[float]] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    needed: list[float] = field(default_factory=list)
    skew: list[int] = field(default_factory=list)
    under_pods: list[int] = field(default_factory=list)
    ideal_nodes: list[int] = field(default_factory=list)
    action: list[bool] = field(default_factory=list)
    evictions: list[int] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    pod_cores: list[float] = field(default_factory=list)
    scale_events: list[int] = field(default_factory=list)  # Deployments whose replicas changed in the tick
    _last: tuple | None = None
    # node scaling: seconds each scale-out pod waited for a node, requested (non-placeholder) and
    # allocatable CPU per tick (see PodWaits)
    waits: list[float] = field(default_factory=list)
    requested_cores: list[float] = field(default_factory=list)
    allocatable_cores: list[float] = field(default_factory=list)
    _waits: Any = None
    _arrays: tuple | None = None  # (pods, nodes, per pod: running, zones, zone of each node, per pod: placed)

    def observe(self, cluster: Any) -> None:
        deps = list(cluster.deployments.values())
        if not self.apps:
            self.apps = [f"{d.namespace}/{d.name}" for d in deps]
            self.pod_cores = [d.spec.cpu_request for d in deps]
        zones = sorted({n.zone for n in cluster.nodes.values() if not n.unschedulable})
        fast = self._from_arrays(cluster, deps, zones)
        if fast is not None:
            served_l, running, skew = fast
        else:
            served = dict.fromkeys(((d.namespace, d.name) for d in deps), 0.0)
            per_zone: dict[tuple[str, str], dict[str, int]] = {}
            running = 0
            for p in cluster.pods.values():
                if p.daemon or not p.app:
                    continue
                key = (p.namespace, p.app)
                if p.ready and p.node_name and key in served:
                    served[key] += p.usage_cpu
                if p.phase == "Running" and p.node_name:
                    running += 1
                    node = cluster.nodes.get(p.node_name)
                    if node is not None:
                        z = per_zone.setdefault(key, {})
                        z[node.zone] = z.get(node.zone, 0) + 1
            served_l = [served[(d.namespace, d.name)] for d in deps]
            skew = max((sc.zone_skew(per_zone.get((d.namespace, d.name), {}), zones) for d in deps
                        if d.replicas > 0), default=0)
        self.t.append(cluster.t)
        self.node_pct.append({n.name: 100.0 * n.usage_cpu / n.cpu for n in cluster.nodes.values()})
        self.nodes.append(len(cluster.nodes))
        self.usage_cores.append(sum(n.usage_cpu for n in cluster.nodes.values()))
        demand = [cluster.app_demand.get((d.namespace, d.name), 0.0) for d in deps]
        self.demand.append(demand)
        self.served.append(served_l)
        self.replicas.append(running)
        self.needed.append(sum(x / c for x, c in zip(demand, self.pod_cores, strict=False) if c > 0))
        self.skew.append(skew)
        sla = getattr(cluster, "sla", None)
        if isinstance(sla, dict) and "underprovisioned_pods" in sla:
            self.under_pods.append(int(sla["underprovisioned_pods"]))
        if hasattr(cluster, "accounting"):
            self.ideal_nodes.append(int(cluster.accounting().get("ideal_nodes_now", 0)))
        ev = cluster.counters["evictions"]
        state = (ev, tuple(d.replicas for d in deps), tuple(cluster.nodes))
        if self._waits is None and hasattr(cluster, "listeners"):
            self._waits = PodWaits(cluster, self.waits)
        if self._waits is not None:
            self.requested_cores.append(self._waits.requested)
            self.allocatable_cores.append(sum(n.cpu for n in cluster.nodes.values() if not n.unschedulable))
        self.scale_events.append(0 if self._last is None else sum(
            a != b for a, b in zip(state[1], self._last[1], strict=False)))
        self.action.append(self._last is not None and state != self._last)
        self.evictions.append(ev)
        self._last = state

    def _from_arrays(self, c: Any, deps: list[Any], zones: list[str]) -> tuple[list[float], int, int] | None:
        """(served cores per Deployment, running pods, worst zone skew) from kubesim's per-pod tick arrays, when
        they are current (no pod or node changed since its last usage update): the loop in :meth:`observe`
        gives the same figures (the sums in the same pod order), at a fraction of the cost. None otherwise."""
        if getattr(c, "_struct_dirty", True) or not hasattr(c, "_p_cpu") or len(c._p_cpu) != len(c._P) \
                or c._dep_keys != [(d.namespace, d.name) for d in deps]:
            return None
        cache = self._arrays
        if cache is None or cache[0] is not c._P or cache[1] is not c._N:
            runs = np.array([not p.daemon and bool(p.app) and p.phase == "Running" and bool(p.node_name)
                             for p in c._P], dtype=bool)
            zone_names = sorted({n.zone for n in c._N})
            zi = {z: i for i, z in enumerate(zone_names)}
            node_zone = np.array([zi[n.zone] for n in c._N], dtype=np.int64)
            named = np.array([bool(p.node_name) for p in c._P], dtype=bool)
            cache = self._arrays = (c._P, c._N, runs, zone_names, node_zone, named)
        _, _, runs, zone_names, node_zone, named = cache
        app, node = c._p_app, c._p_node
        nd = len(deps)
        ok = (app >= 0) & (node >= 0) & ~c._p_daemon
        sv = ((app >= 0) & ~c._p_daemon) & named & c._p_ready
        served = np.bincount(app[sv], weights=c._p_cpu[sv], minlength=nd).tolist()
        placed = runs & ok
        nz = len(zone_names)
        counts = np.bincount(app[placed] * nz + node_zone[node[placed]], minlength=nd * nz).reshape(nd, nz)
        cols = [zone_names.index(z) for z in zones if z in zone_names]
        live = np.array([d.replicas > 0 for d in deps], dtype=bool)
        skew = 0
        if live.any():
            if len(cols) < len(zones):  # a zone without nodes in the arrays counts 0 pods
                counts = np.concatenate([counts, np.zeros((nd, 1), dtype=counts.dtype)], axis=1)
                cols += [nz] * (len(zones) - len(cols))
            if cols:
                sel = counts[live][:, cols]
                skew = int((sel.max(axis=1) - sel.min(axis=1)).max())
        return served, int(runs.sum()), skew

    def __getstate__(self) -> dict[str, Any]:
        # (pickled back from the baseline process: not the pods)
        return {**self.__dict__, "_arrays": None, "_waits": None}

    def node_matrix(self) -> tuple[list[str], np.ndarray]:
        names = sorted({n for row in self.node_pct for n in row})
        a = np.full((len(self.node_pct), len(names)), np.nan)
        for i, row in enumerate(self.node_pct):
            for j, n in enumerate(names):
                if n in row:
                    a[i, j] = row[n]
        return names, a


class PodWaits:
    """A kubesim listener for the node-scaling keys: appends to ``waits`` the seconds each scale-out pod
    (created after the start; not a DaemonSet pod, not a negative-priority placeholder) waited from
    creation until bound to a node (or until deleted unbound), and keeps ``requested``: the CPU requested
    by the bound non-placeholder pods (DaemonSet pods included)."""

    def __init__(self, cluster: Any, waits: list[float]) -> None:
        self.cluster = cluster
        self.waits = waits
        self.t0 = cluster.t
        self.created: dict[tuple[str, str], float] = {}
        self.bound: dict[tuple[str, str], float] = {}
        self.requested = 0.0
        for p in cluster.pods.values():
            if p.node_name and p.priority >= 0:
                self.bound[(p.namespace, p.name)] = p.cpu_request
                self.requested += p.cpu_request
        cluster.listeners.append(self._on_change)

    def _on_change(self, etype: str, resource: str, obj: Any) -> None:
        if resource != "pods" or obj.priority < 0:
            return
        key = (obj.namespace, obj.name)
        on = etype != "DELETED" and bool(obj.node_name)
        if on and key not in self.bound:
            self.bound[key] = obj.cpu_request
            self.requested += obj.cpu_request
        elif not on and key in self.bound:
            self.requested -= self.bound.pop(key)
        if obj.daemon:
            return
        if etype == "ADDED" and not obj.node_name and obj.created >= self.t0:
            self.created[key] = obj.created
        elif key in self.created and (on or etype == "DELETED"):
            t0 = self.created.pop(key)
            t1 = (obj.scheduled_at if on and obj.scheduled_at is not None else self.cluster.t)
            self.waits.append(max(0.0, t1 - t0))

    def still_pending(self, now: float) -> list[float]:
        return [max(0.0, now - t) for t in self.created.values()]


def score(series: Series, dt_s: float, node_cores: float, *, evictions: list[sc.Eviction] | None,
          pdb_violations: int | None, latency: list[float] | None, evictions_total: int,
          node_scale_evictions: int | None = None) -> dict[str, Any]:
    # Sample 0 is the state before the first tick: it counts for the zone skew (the initial
    # placement), not for the time integrals and means, which cover the ticks that were run.
    _, mat = series.node_matrix()
    k = 1 if len(series.t) > 1 else 0
    return {
        "node_cpu_spread_p95_p5": _round(sc.spread_p95_p5(mat[k:])),
        "max_zone_skew": _round(sc.max_zone_skew(series.skew, series.action)),
        "pdb_violations": pdb_violations,
        "evictions": evictions_total,
        "repeat_evictions_30m": sc.repeat_evictions(evictions) if evictions is not None else 0,
        "underprovisioned_pod_minutes": _round(
            (sc.hours(series.under_pods[k:], dt_s) or 0.0) * 60.0 if len(series.under_pods) == len(series.t)
            else sc.underprovisioned_pod_minutes(series.demand[k:], series.served[k:], series.pod_cores, dt_s)),
        "replica_hours": _round(sc.hours(series.replicas[k:], dt_s)),
        "node_hours": _round(sc.hours(series.nodes[k:], dt_s)),
        "ideal_node_hours": _round(
            sc.hours(series.ideal_nodes[k:], dt_s) if len(series.ideal_nodes) == len(series.t)
            else sc.ideal_node_hours(series.usage_cores[k:], node_cores, dt_s)),
        "interference_precision": None,
        "interference_recall": None,
        "antagonist_top1": None,
        "decision_latency_p99_s": _round(sc.p99(latency)) if latency is not None else None,
        "scale_events": int(sum(series.scale_events[k:])),
        "pending_pod_seconds_p95": _round(sc.pending_seconds_p95(
            series.waits + (series._waits.still_pending(series.t[-1]) if series._waits is not None else []))),
        "packing_rate_peak": _round(sc.packing_rate_peak(series.requested_cores[k:], series.allocatable_cores[k:],
                                                         series.needed[k:])) if series.requested_cores else None,
        "node_scale_evictions": node_scale_evictions,
        "periodic_daily_found": None,
        "nonperiodic_no_period": None,
    }


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _node_cores(scenario: Any) -> float:
    cpus = [n.cpu for n in scenario.nodes]
    return float(np.mean(cpus)) if cpus else 0.0


# ---------------------------------------------------------------------------- runs


Progress = Callable[[int], None]


@contextlib.contextmanager
def long_run_gc(gen0: int = 20_000) -> Iterator[None]:
    """The garbage collector set up for a long simulation loop: what exists before it (modules, scenario,
    cluster) is frozen out of the collections (:func:`gc.freeze`) and a young collection runs every ``gen0``
    net allocations instead of 700. A run allocates millions of short-lived objects (snapshots, messages,
    tuples): at the defaults the full collections alone took ~15 % of the CPU, each one walking every
    long-lived object. Reference cycles are still collected; nothing a run computes depends on when."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def run_baseline(scenario: Any, seed: int | None, ticks: int, progress: Progress | None = None) -> dict[str, Any]:
    """No descheduler (and, where the scenario has them, Kubernetes' own autoscalers)."""
    from kubesim.model import Cluster

    cluster = Cluster(scenario, seed=seed)
    series = Series()
    ev0 = cluster.counters["evictions"]
    series.observe(cluster)
    t0 = time.monotonic()
    with long_run_gc():
        for i in range(ticks):
            cluster.step()
            series.observe(cluster)
            if progress:
                progress(i + 1)
    wall = time.monotonic() - t0
    dt = scenario.resolution_s
    res = score(series, dt, _node_cores(scenario), evictions=[], pdb_violations=0, latency=None,
                evictions_total=cluster.counters["evictions"] - ev0,
                node_scale_evictions=cluster.counters.get("autoscaler_evictions", 0))
    return {"scores": res, "series": series, "wall_s": wall, "decisions": []}


class BackgroundBaseline:
    """:func:`run_baseline` in a forked process (the offline kubetide run goes on in this one: on two cores
    the two runs take about the time of the longer one). Same scenario, seed and computation, so the
    same result; ``result`` waits for it (showing its progress) and re-raises its failure."""

    def __init__(self, scenario: Any, seed: int | None, ticks: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.ticks = ticks
        self.done = ctx.Value("i", 0, lock=False)
        self._recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_baseline_child, args=(send, scenario, seed, ticks, self.done),
                                name="kubetide-evaluate-baseline", daemon=True)
        self.proc.start()
        send.close()

    def result(self, progress: Progress | None = None) -> dict[str, Any]:
        while not self._recv.poll(0.2):
            if progress:
                progress(self.done.value - self.done.value % 20)
            if not self.proc.is_alive() and not self._recv.poll(0):
                raise RuntimeError(f"the baseline run died (exit code {self.proc.exitcode})")
        status, payload = self._recv.recv()
        self.proc.join()
        if status != "ok":
            raise RuntimeError(f"the baseline run failed: {payload}")
        if progress:
            progress(self.ticks)
        return payload

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join()
        self._recv.close()


def _baseline_child(conn: Any, scenario: Any, seed: int | None, ticks: int, done: Any) -> None:
    try:
        def progress(i: int) -> None:
            done.value = i

        conn.send(("ok", run_baseline(scenario, seed, ticks, progress)))
    except BaseException as exc:  # the parent reports it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _evictions(records: list[Any]) -> list[sc.Eviction]:
    return [sc.Eviction(r.t, r.workload, r.pod, r.from_node, r.replacement_pod, r.replacement_node) for r in records]


INTERFERENCE_SLACK_TICKS = 12  # a finding may open up to 12 ticks after its episode ended (detection lag)


def episodes_from_truth(cluster: Any) -> list[sc.Episode]:
    """kubesim's ground truth → one :class:`~kubetide.scorecard.Episode` per (antagonist episode, victim)."""
    from workers.kube import parse_timestamp

    out = []
    for ep in cluster.truth_view().get("episodes", []):
        for v in ep.get("victims", []):
            t0, t1 = parse_timestamp(v.get("first_seen")), parse_timestamp(v.get("last_seen"))
            if t0 is not None and t1 is not None:
                out.append(sc.Episode(ep["node"], v["pod"], (ep["antagonist"],), t0, t1))
    return out


def findings_from(anomalies: list[Any]) -> list[sc.Finding]:
    """The detector's ``open`` anomalies as findings (victim and antagonists as namespace/name)."""
    return [sc.Finding(a.ts, a.node, f"{a.victim.namespace}/{a.victim.name}",
                       tuple(f"{x.namespace}/{x.name}" for x in a.antagonists))
            for a in anomalies if a.state == "open"]


def scheduler_config(scenario: Any, config: dict[str, Any] | None) -> dict[str, Any] | None:
    """``config`` telling kubetide how the scenario's scheduler scores nodes: ``streams.guard.scheduler_load_weight``
    from kubesim's ``scheduler.load_aware_weight`` (a load-aware scheduler), unless the config sets it or the
    scenario has none — what an operator states about a cluster running such a scheduler; kubetide uses it
    to predict where an evicted pod's replacement lands (:func:`streams.core.state.predicted_landing`)."""
    weight = float(getattr(scenario, "load_aware_weight", 0.0) or 0.0)
    streams = dict((config or {}).get("streams") or {})
    guard = dict(streams.get("guard") or {})
    if weight <= 0 or "scheduler_load_weight" in guard:
        return config
    return {**(config or {}), "streams": {**streams, "guard": {**guard, "scheduler_load_weight": weight}}}


def run_offline(scenario: Any, seed: int | None, ticks: int, progress: Progress | None = None, *,
                config: dict[str, Any] | None = None, fast: bool = False, codec: bool = False) -> dict[str, Any]:
    """kubetide in-process (:class:`kubetide.offline.OfflineKubetide`), configured like the workers by ``config``."""
    from kubesim.model import Cluster
    from kubetide.offline import OfflineKubetide, decision_key
    from kubetide.offline_autoscale import install as install_autoscale
    from kubetide.offline_autoscale import with_scenario_autoscale

    # kubetide autoscales every app with an `hpa:` spec (policies derived from it): kubesim's own HPA is off
    config, autoscaled = with_scenario_autoscale(config, scenario)
    # node scaling (taints, pod-deletion-cost, placeholder sizing, trough drains) on scenarios with an elastic
    # group; kubesim's cluster-autoscaler model still adds and removes the nodes, as in the baseline
    from kubetide.offline_nodescale import elastic_config
    from kubetide.offline_nodescale import install as install_nodescale

    config = scheduler_config(scenario, elastic_config(scenario, config))
    cluster = Cluster(scenario, seed=seed, hpa=False if autoscaled else None)
    t_start = cluster.t
    streams, actuator = settings_from_config(config)
    # Without the codec the metrics are built from the Cluster directly and the profiler is fed a tick at a
    # time without emitting profiles (nothing here reads them); the decisions are the same either way.
    kt = OfflineKubetide(cluster, streams, actuator, codec=codec, profile=not fast, emit_profiles=codec)
    install_autoscale(kt.actuator)
    nodescale = install_nodescale(kt.actuator)
    series = Series()
    ev0 = cluster.counters["evictions"]
    series.observe(cluster)
    t0 = time.monotonic()
    with long_run_gc():
        kt.tick(step=False)  # the collector's first list and scrape, before the clock moves
        for i in range(ticks):
            kt.tick()
            series.observe(cluster)
            if progress:
                progress(i + 1)
    wall = time.monotonic() - t0
    dt = scenario.resolution_s
    latency = [float(dt)] * max(1, len(kt.decisions))
    res = score(series, dt, _node_cores(scenario), evictions=_evictions(kt.actuator.evictions),
                pdb_violations=kt.actuator.pdb_violations, latency=latency,
                evictions_total=cluster.counters["evictions"] - ev0,
                node_scale_evictions=cluster.counters.get("autoscaler_evictions", 0) + len(nodescale.evictions))
    if kt.interference:
        p_, r_, top1 = sc.interference_scores(episodes_from_truth(cluster), findings_from(kt.anomalies),
                                              slack_s=INTERFERENCE_SLACK_TICKS * dt)
        res.update(interference_precision=_round(p_), interference_recall=_round(r_), antagonist_top1=_round(top1))
    if kt.profiles:
        res.update(periodicity(scenario, kt, ticks * dt))
    decisions = [[*decision_key(d, t_start, dt), d.id] for d in kt.decisions]
    outcomes: dict[str, int] = {}
    for a in kt.actuator.outcomes:
        outcomes[a.summary] = outcomes.get(a.summary, 0) + 1
    return {"scores": res, "series": series, "wall_s": wall, "decisions": decisions, "outcomes": outcomes}


def periodicity(scenario: Any, kt: Any, run_s: float) -> dict[str, float | None]:
    """``periodic_daily_found`` / ``nonperiodic_no_period`` from the profiler's states at the end of the
    run against kubesim's ground truth (:attr:`kubesim.scenario.AppSpec.has_daily_period`); null when the
    run is shorter than the history a daily period needs (``period_min_cycles`` days)."""
    from streams.core.profile import state_key

    s = kt.settings.profiler
    if run_s < s.period_min_cycles * 86400.0:
        return {}
    kt.flush_profiles()
    truth, periods = {}, {}
    for app in scenario.apps:
        t = app.has_daily_period
        if t is None:
            continue
        key = state_key(app.namespace, app.name)
        truth[key] = t
        st = kt.profiles.get(key)
        if st is not None:
            st.refresh_periodicity(force=True)
            periods[key] = st.period_s
    daily, none = sc.periodicity_scores(truth, periods)
    return {"periodic_daily_found": _round(daily), "nonperiodic_no_period": _round(none)}


class EvictionTracker:
    """Wraps a Cluster's ``evict``: each applied eviction and the replacement pod its workload's
    controller created during it, for :func:`kubetide.scorecard.repeat_evictions`."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.records: list[dict[str, Any]] = []
        self.pdb_violations = 0
        self._unchecked: list[Any] = []
        self._added: list[Any] | None = None
        self._evict = cluster.evict
        cluster.evict = self.evict
        cluster.listeners.append(self._on_change)

    def _on_change(self, etype: str, resource: str, obj: Any) -> None:
        if self._added is not None and resource == "pods" and etype == "ADDED":
            self._added.append(obj)

    def evict(self, namespace: str, name: str, *, dry_run: bool = False) -> Any:
        pod = self.cluster.pods.get((namespace, name))
        node = pod.node_name if pod is not None else None
        self._added = []
        try:
            res = self._evict(namespace, name, dry_run=dry_run)
        finally:
            added, self._added = self._added, None
        if res.code == 201 and not dry_run and pod is not None and not pod.daemon:
            repl = next((p for p in added if p.owner_uid == pod.owner_uid), None)
            self.records.append({"t": self.cluster.t, "workload": f"{pod.namespace}/Deployment/{pod.app}",
                                 "pod": f"{namespace}/{name}", "from_node": node or "",
                                 "replacement_pod": f"{repl.namespace}/{repl.name}" if repl else None,
                                 "replacement_node": None})
            self._unchecked.append(pod)
        return res

    def end_of_tick(self) -> None:
        for r in self.records:
            if r["replacement_pod"] and r["replacement_node"] is None:
                ns, name = r["replacement_pod"].split("/", 1)
                p = self.cluster.pods.get((ns, name))
                if p is not None and p.node_name:
                    r["replacement_node"] = p.node_name
        for pod in self._unchecked:
            for pdb in self.cluster.pdbs.values():
                if pdb.matches(pod) and pdb.current_healthy < pdb.desired_healthy:
                    self.pdb_violations += 1
        self._unchecked = []

    def evictions(self) -> list[sc.Eviction]:
        return [sc.Eviction(r["t"], r["workload"], r["pod"], r["from_node"], r["replacement_pod"],
                            r["replacement_node"]) for r in self.records]


def run_online(scenario: Any, seed: int | None, ticks: int, progress: Progress | None = None, *,
               run_dir: Path, settle_s: float = 0.3, bootstrap: str | None = None,
               config_path: str | None = None) -> dict[str, Any]:
    """kubetide through the real pipeline (broker, collector, faust worker, actuator), clock in lockstep."""
    import asyncio
    import shutil

    from kubetide.broker import EmbeddedBroker

    run_dir = run_dir.resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    broker = None
    try:
        if not bootstrap:
            broker = EmbeddedBroker(log_file=str(run_dir / "broker.log"))
            broker.start()
            bootstrap = broker.bootstrap
        return asyncio.run(_online(scenario, seed, ticks, progress, run_dir, settle_s, bootstrap, config_path))
    finally:
        if broker is not None:
            broker.stop()


async def _online(scenario: Any, seed: int | None, ticks: int, progress: Progress | None, run_dir: Path,
                  settle_s: float, bootstrap: str, config_path: str | None) -> dict[str, Any]:
    import asyncio
    from collections import Counter

    import aiohttp
    from aiokafka import AIOKafkaConsumer

    from kubesim.model import Cluster
    from kubesim.server import KubeSim
    from kubetide import topics
    from kubetide.codec import DecodeError, decode
    from kubetide.kafka import ensure_topics, gapless_getmany
    from kubetide.offline import decision_key
    from kubetide.procs import ProcessGroup, add_actuator, add_collector, add_streams_worker

    await ensure_topics(bootstrap, topics.TOPICS)
    # as offline: kubetide autoscales the apps with an `hpa:` spec (kubesim's HPA off); the workers get the
    # derived streams.autoscale section through a config file written to the run directory
    from kubetide.offline_autoscale import with_scenario_autoscale

    derived, autoscaled = with_scenario_autoscale(load_config(config_path), scenario)
    loaded = derived
    derived = scheduler_config(scenario, derived)
    if autoscaled or derived is not loaded:
        import yaml

        config_path = str(run_dir / "kubetide-evaluate.yaml")
        await asyncio.to_thread(Path(config_path).write_text, yaml.safe_dump(derived))
    cluster = Cluster(scenario, seed=seed, hpa=False if autoscaled else None)
    t_start, dt = cluster.t, scenario.resolution_s
    tracker = EvictionTracker(cluster)
    sim = KubeSim(cluster, speed=0, kubeconfig_path=run_dir / "kubeconfig")
    await sim.start()
    group = ProcessGroup()
    consumer = AIOKafkaConsumer(topics.CLUSTER_METRICS, topics.DECISIONS_DESCHEDULE, topics.ACTIONS,
                                bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=10)
    series = Series()
    decisions: list[tuple[Any, float]] = []  # (decision, wall time received)
    outcomes: dict[str, int] = {}
    metrics_ts: dict[str, float] = {}
    answered: set[str] = set()
    step_wall: dict[int, float] = {}
    stats: Counter[str] = Counter()
    http: aiohttp.ClientSession | None = None
    try:
        extra = ["--config", config_path] if config_path else []
        env = {"KUBETIDE_LOG_LEVEL": "INFO"}
        streams, ready = add_streams_worker(group, bootstrap, run_dir, extra=extra, env=env)
        await asyncio.to_thread(streams.wait_for_file, ready, 120)
        add_actuator(group, bootstrap, run_dir, sim.kubeconfig_path, extra=extra, env=env)
        await consumer.start()
        add_collector(group, bootstrap, run_dir, sim.kubeconfig_path, extra=[*extra, "--resync-interval", "0"],
                      env=env, metrics_interval_s=0.03)

        async def pump(timeout_s: float) -> None:
            batch = await gapless_getmany(consumer, timeout_ms=int(timeout_s * 1000), max_records=5000)
            now = time.monotonic()
            for tp, recs in batch.items():
                for rec in recs:
                    try:
                        msg: Any = decode(tp.topic, rec.value)
                    except DecodeError:
                        continue
                    if tp.topic == topics.CLUSTER_METRICS:
                        metrics_ts[msg.node] = max(msg.ts, metrics_ts.get(msg.node, 0.0))
                    elif tp.topic == topics.DECISIONS_DESCHEDULE:
                        decisions.append((msg, now))
                    else:
                        outcomes[msg.summary] = outcomes.get(msg.summary, 0) + 1
                        answered.add(msg.decision_id)

        async def wait_metrics(deadline_s: float = 60.0) -> None:
            deadline = time.monotonic() + deadline_s
            while any(metrics_ts.get(n, -1.0) < cluster.t - 1e-6 for n in cluster.nodes):
                if dead := group.dead():
                    raise RuntimeError(f"{dead[0].name} died (code {dead[0].returncode()}):\n{dead[0].tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no metrics for tick at {cluster.t} after {deadline_s:.0f}s")
                await pump(0.02)

        web_port = orjson.loads(ready.read_bytes()).get("web_port")
        http = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{web_port}")

        async def worker_counts() -> tuple[float, float]:
            """(ticks planned, deschedule decisions emitted) from the stream worker's /metrics."""
            async with http.get("/metrics") as r:
                text = await r.text()
            ticks = dec = 0.0
            for line in text.splitlines():
                if line.startswith("kubetide_streams_ticks_planned_total "):
                    ticks = float(line.split()[-1])
                elif line.startswith('kubetide_decisions_total{') and 'type="deschedule"' in line:
                    dec += float(line.split()[-1])
            return ticks, dec

        async def settle(planned_before: float) -> float:
            """Wait until the planner has planned this tick (bounded), every decision it emitted has
            reached the topic and has an outcome, then ``settle_s`` more when something was applied, so
            that the collector forwards the eviction's effects before the clock moves again."""
            deadline = time.monotonic() + max(5.0, 20 * settle_s)
            planned, emitted = await worker_counts()
            while planned <= planned_before or len(decisions) < emitted or \
                    any(d.id not in answered for d, _ in decisions):
                if time.monotonic() > deadline:
                    stats["lockstep_timeouts"] += 1
                    break
                n_dec = len(decisions)
                await pump(0.01)
                planned, emitted = await worker_counts()
                if len(decisions) != n_dec:
                    stats["ticks_with_decisions"] += 1
            if len(answered) != stats["answered_seen"]:
                stats["answered_seen"] = len(answered)
                end = time.monotonic() + settle_s
                while time.monotonic() < end:
                    await pump(0.02)
            return planned

        series.observe(cluster)
        ev0 = cluster.counters["evictions"]
        t0 = time.monotonic()
        step_wall[0] = t0
        await wait_metrics(120.0)  # the collector's first list and scrape, before the clock moves
        planned = await settle(0.0)
        for i in range(ticks):
            step_wall[i + 1] = time.monotonic()
            await sim.advance(dt)
            await wait_metrics()
            planned = await settle(planned)
            tracker.end_of_tick()
            series.observe(cluster)
            if progress:
                progress(i + 1)
        wall = time.monotonic() - t0
    finally:
        if http is not None:
            await http.close()
        await asyncio.to_thread(group.stop)
        await consumer.stop()
        await sim.stop()
    latency = []
    for d, got in decisions:
        k = decision_key(d, t_start, dt)[1]
        if k in step_wall:
            latency.append(max(0.0, got - step_wall[k]))
    # node scaling is offline-only for now: online, the node-removal evictions are the cluster-autoscaler's
    res = score(series, dt, _node_cores(scenario), evictions=tracker.evictions(),
                pdb_violations=tracker.pdb_violations, latency=latency,
                evictions_total=cluster.counters["evictions"] - ev0,
                node_scale_evictions=cluster.counters.get("autoscaler_evictions", 0))
    return {"scores": res, "series": series, "wall_s": wall, "outcomes": outcomes, "lockstep": dict(stats),
            "decisions": [[*decision_key(d, t_start, dt), d.id] for d, _ in decisions]}


# ---------------------------------------------------------------------------- output


def table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"kubetide evaluate — scenario {report['scenario']!r}, seed {report['seed']}, "
                    f"{report['sim_hours']:g} virtual hours ({report['mode']})")
    t.add_column("measure")
    t.add_column("kubetide", justify="right")
    t.add_column("baseline", justify="right")
    t.add_column("kubetide / baseline", justify="right")

    def fmt(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    for k in KEYS:
        a, b = report["kubetide"].get(k), report["baseline"].get(k)
        r = sc.ratio(a, b)
        t.add_row(k, fmt(a), fmt(b), "—" if r is None else f"{r:.2f}")
    return t


def plot(path: str, scenario: str, runs: dict[str, Series], hours0: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2, figsize=(14, 14), sharex=True)
    for col, (name, s) in enumerate(runs.items()):
        x = (np.asarray(s.t) - s.t[0]) / 3600.0 + hours0
        names, mat = s.node_matrix()
        ax = axes[0][col]
        for j, n in enumerate(names):
            ax.plot(x, mat[:, j], lw=0.6, alpha=0.6, label=n if len(names) <= 12 else None)
        ax.set_title(f"{name}: node CPU usage (%)")
        ax.set_ylim(0, 105)
        if len(names) <= 12:
            ax.legend(fontsize=6, ncol=3)
        ax = axes[1][col]
        spread = [float(np.nanpercentile(r, 95) - np.nanpercentile(r, 5)) for r in mat]
        ax.plot(x, spread, color="tab:red")
        ax.set_title(f"{name}: node CPU spread p95 − p5 (points)")
        ax = axes[2][col]
        ax.plot(x, s.replicas, label="running replicas")
        ax.plot(x, s.needed, label="demand (pods of request)", ls="--")
        ax.set_title(f"{name}: replicas against demand")
        ax.legend(fontsize=7)
        ax = axes[3][col]
        ax.plot(x, s.nodes, label="nodes", color="tab:green")
        ax.set_ylabel("nodes")
        ax2 = ax.twinx()
        ev = np.asarray(s.evictions) - s.evictions[0]
        ax2.step(x, ev, where="post", color="tab:purple", label="evictions (cumulative)")
        ax2.set_ylabel("evictions")
        ax.set_title(f"{name}: node count and evictions")
        ax.set_xlabel("virtual hours")
    fig.suptitle(f"kubetide evaluate — {scenario}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate(args: argparse.Namespace, console: Any = None) -> dict[str, Any]:
    """Both runs; returns the report (and keeps the series under ``_series`` for the plot)."""
    if args.hours is not None and not (args.hours > 0 and math.isfinite(args.hours)):
        raise EvaluateError("--hours: must be a positive number")
    scenario = load(args.scenario, seed=args.seed, nodes=args.nodes)
    config = load_config(getattr(args, "config", None))
    seed = scenario.seed if args.seed is None else args.seed
    hours = scenario.duration_h if args.hours is None else args.hours
    ticks = max(1, round(hours * 3600.0 / scenario.resolution_s))
    runs: dict[str, dict[str, Any]] = {}
    # Offline, the baseline runs in a forked process beside the kubetide run (started before any
    # progress-bar thread exists); online, the kubetide run has the machine to itself.
    background = BackgroundBaseline(scenario, seed, ticks) if args.offline and not getattr(args, "serial", False) \
        else None
    show = console is not None and not getattr(args, "no_progress", False)
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False)
        prog.start()
    try:
        for name in ("kubetide", "baseline"):
            cb: Progress | None = None
            if show:
                task = prog.add_task(f"{name} ({'offline' if args.offline or name == 'baseline' else 'online'})",
                                     total=ticks)

                def cb(i: int, task: Any = task) -> None:
                    if i % 20 == 0 or i == ticks:
                        prog.update(task, completed=i)
            if name == "baseline":
                runs[name] = (background.result(cb) if background is not None
                              else run_baseline(scenario, seed, ticks, cb))
            elif args.offline:
                runs[name] = run_offline(scenario, seed, ticks, cb, config=config, fast=getattr(args, "fast", False),
                                         codec=getattr(args, "codec", False))
            else:
                runs[name] = run_online(scenario, seed, ticks, cb, run_dir=Path(args.run_dir), settle_s=args.settle,
                                        config_path=getattr(args, "config", None))
    finally:
        if background is not None:
            background.close()
        if show:
            prog.stop()
    report = {
        "scenario": scenario.name, "seed": seed, "sim_hours": round(ticks * scenario.resolution_s / 3600.0, 4),
        "tick_s": scenario.resolution_s, "nodes": len(scenario.nodes),
        "mode": "offline" if args.offline else "online",
        "kubetide": runs["kubetide"]["scores"], "baseline": runs["baseline"]["scores"],
        "wall_s": {k: round(v["wall_s"], 3) for k, v in runs.items()},
        "kubetide_outcomes": runs["kubetide"].get("outcomes", {}),
        "lockstep": runs["kubetide"].get("lockstep"),
        "decisions": runs["kubetide"]["decisions"],
        "_series": {k: v["series"] for k, v in runs.items()},
    }
    return report


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kubetide.log import setup_logging

    setup_logging(getattr(args, "log_level", "WARNING"))
    console = Console(width=None if sys.stdout.isatty() else 110)
    err = Console(stderr=True)
    try:
        report = evaluate(args, console)
    except EvaluateError as exc:
        err.print(f"[red]kubetide evaluate:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:
        err.print(f"[red]kubetide evaluate failed:[/red] {exc}")
        log.debug("evaluate failure", exc_info=True)
        return 1
    series = report.pop("_series")
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    console.print(table(report))
    console.print(f"wall time: kubetide {report['wall_s']['kubetide']:.1f} s, baseline "
                  f"{report['wall_s']['baseline']:.1f} s; report written to {args.report}")
    if args.plot:
        plot(args.plot, report["scenario"], series, 0.0)
        console.print(f"plot written to {args.plot}")
    return 0
