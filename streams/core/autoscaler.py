"""The autoscaling tick planner: per-workload policies (:mod:`streams.core.autoscale`) on the planner's
:class:`~streams.core.state.ClusterState`, one round after every completed metric tick (pure, event time).

Config (``streams.autoscale``; present and not ``enabled: false`` = on)::

    streams:
      autoscale:
        interval_s: 60            # history sample interval (bucket length) of each workload's CPU series
        history_s: 604800         # history kept per workload (ring buffer; 7 days of 60 s buckets)
        sync_period_s: 15         # plan each workload at most this often (event time), like the HPA sync
        refit_s: 300              # refit the forecast at most this often (between refits it is shifted)
        default_policy: {...}     # a policy (see streams/core/autoscale.py) for the selected workloads
        select: [shop/web]        # workloads (namespace/name) that get default_policy …
        select_label: kubetide.io/autoscale   # … and every Deployment labelled <select_label>: "true"
        workloads:                # explicit policies, namespace/name → policy (win over default_policy)
          shop/checkout: {min_replicas: 2, max_replicas: 20, target_cpu_utilization: 60}

Only Deployments are autoscaled (the actuator writes their ``scale`` subresource). Per tick and
autoscaled workload the planner reads, from the state:

- the workload's pods (``PodSnapshot.workload``), Running ones on a node; per pod its CPU from the
  tick's sample of its node (``NaN`` when the node's summary is missing: never 0) and its readiness;
- the workload's **total CPU**: the sum over Running pods; when some pods have no sample, the present
  ones' mean stands in for them if at least half are present, else the tick's total is **missing**;
- its **per-zone CPU** (zone of the pod's node) → the decision's ``zones`` (demand share per zone);
- replicas: the Deployment's ``replicas`` (the scale the actuator would change).

The totals go to a per-workload :class:`History`: a numpy ring buffer of ``interval_s`` buckets
(bucket = mean of the tick totals in it; a bucket without any present tick is ``NaN``). The
predictive trigger is fitted on the completed buckets at most every ``refit_s`` (the fit is shifted
by the buckets that passed in between). App metrics (``app.metrics``, through :meth:`Autoscaler.apply_metric`)
feed the metric triggers: per (namespace, app = workload name, metric) the latest value of every label
set, summed (a queue length per partition adds up to the app's queue length).

**Zone-aware scale-in.** Kubernetes' ReplicaSet picks the pods to delete without looking at zones,
so a scale-in could leave a workload skewed across zones. For a scale-in of ``k`` replicas the planner
chooses the ``k`` pods to remove — repeatedly one from the zone holding most of the workload's
Running pods (among zones holding as many, the one whose nodes are busiest in the tick's samples, so
the spare replicas maxSkew allows stay where there is room; within the zone not-ready pods first, then
the newest) — and names them in the decision's evidence
(``scale_in_pods``, comma-separated ``name``). The actuator annotates those pods
``controller.kubernetes.io/pod-deletion-cost: "-1000"`` before writing the scale, so the
ReplicaSet controller deletes them first (not-ready / unscheduled pods still go before them, which
only helps). Each removal from the largest zone never raises the skew, so a workload within
``maxSkew`` stays within it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubetide.models import AppMetric, AutoscaleDecision, WorkloadRef
from streams.core import autoscale as asc
from streams.core import hpa
from streams.core.state import ClusterState, PerVersion

SELECT_LABEL = "kubetide.io/autoscale"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
SCALE_IN_COST = "-1000"


@dataclass(frozen=True)
class AutoscalerSettings:
    """``streams.autoscale``: which workloads are autoscaled with which policy, and the history."""

    workloads: dict[str, asc.AutoscalePolicy] = field(default_factory=dict)
    default_policy: asc.AutoscalePolicy | None = None
    select: tuple[str, ...] = ()
    select_label: str = SELECT_LABEL
    interval_s: float = 60.0
    history_s: float = 7 * 86400.0
    sync_period_s: float = 15.0
    refit_s: float = 300.0
    enabled: bool = True

    def validate(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s: must be > 0")
        if self.history_s < 16 * self.interval_s:
            raise ValueError("history_s: must hold at least 16 intervals")
        if self.history_s / self.interval_s > 1_000_000:
            raise ValueError("history_s: at most 1,000,000 intervals")
        if self.sync_period_s < 0 or self.refit_s < 0:
            raise ValueError("sync_period_s / refit_s: must be >= 0")
        for k in (*self.workloads, *self.select):
            if k.count("/") != 1 or not all(k.split("/")):
                raise ValueError(f"workloads: {k!r} is not namespace/name")

    def policy_for(self, key: str, labels: Mapping[str, str]) -> asc.AutoscalePolicy | None:
        if key in self.workloads:
            return self.workloads[key]
        if self.default_policy is not None and (key in self.select or labels.get(self.select_label) == "true"):
            return self.default_policy
        return None

    def planner(self) -> Autoscaler:
        return Autoscaler(self)


def settings_from(data: Mapping[str, Any] | None, where: str = "streams.autoscale") -> AutoscalerSettings:
    """The settings of ``streams.autoscale`` (errors name the field, e.g. ``streams.autoscale.workloads.x``)."""
    from kubetide.config import ConfigError, build

    data = dict(data or {})
    workloads = asc.load_policies(data.pop("workloads", None), f"{where}.workloads")
    default = data.pop("default_policy", None)
    default_policy = None if default is None else build(asc.AutoscalePolicy, default, f"{where}.default_policy")
    s = build(AutoscalerSettings, data, where)
    out = AutoscalerSettings(**{**s.__dict__, "workloads": workloads, "default_policy": default_policy})
    try:
        out.validate()
    except ValueError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    return out


class History:
    """A workload's CPU (cores) at a fixed interval: a ring buffer of bucket means, NaN = missing."""

    def __init__(self, interval_s: float, capacity: int) -> None:
        self.interval_s = float(interval_s)
        self.buf = np.full(max(16, capacity), np.nan)
        self.n = 0  # completed buckets stored (<= capacity)
        self.head = 0  # next write position
        self.bucket: int | None = None  # index (ts // interval) of the open bucket
        self._sum = 0.0
        self._cnt = 0

    def _push(self, v: float) -> None:
        self.buf[self.head] = v
        self.head = (self.head + 1) % len(self.buf)
        self.n = min(self.n + 1, len(self.buf))

    def add(self, ts: float, value: float) -> int:
        """Add a tick's total (NaN = missing); returns how many buckets were completed by it."""
        b = math.floor(ts / self.interval_s + 1e-9)
        done = 0
        if self.bucket is None:
            self.bucket = b
        elif b > self.bucket:
            self._push(self._sum / self._cnt if self._cnt else np.nan)
            done = 1
            gap = min(b - self.bucket - 1, len(self.buf))
            for _ in range(gap):
                self._push(np.nan)
                done += 1
            self.bucket, self._sum, self._cnt = b, 0.0, 0
        elif b < self.bucket:
            return 0  # late tick for a closed bucket: ignored
        if math.isfinite(value):
            self._sum += value
            self._cnt += 1
        return done

    def values(self) -> np.ndarray:
        """The completed buckets, oldest first."""
        if self.n < len(self.buf):
            return self.buf[: self.n].copy()
        return np.concatenate((self.buf[self.head:], self.buf[: self.head]))

    @property
    def end_ts(self) -> float | None:
        """Event time at the end of the last completed bucket (= start of the open one)."""
        return None if self.bucket is None else self.bucket * self.interval_s


@dataclass
class WorkloadState:
    history: History
    hpa: hpa.HpaState = field(default_factory=hpa.HpaState)
    last_sync: float = -math.inf
    fit: asc.PredictiveFit | None = None
    fit_end: float | None = None  # history end_ts the fit's first value follows
    fit_at: float = -math.inf


@dataclass
class Observed:
    """One workload's aggregates in the current tick."""

    replicas: int
    request_cores: float
    total_cores: float  # NaN = missing
    pod_cpu: np.ndarray
    pod_ready: np.ndarray
    zone_usage: dict[str, float]
    pods_by_zone: dict[str, list[tuple[int, float, str, int]]]  # zone -> (ready, created, name, deletion cost)
    max_skew: int


@dataclass
class _Prepared:
    """One workload's part of :class:`Observed` that reads only the state's objects (see ``Autoscaler._prepare``).
    ``rows``: per Running pod on a node, (key, node, ready, created_at or 0, zone, zone known from the events,
    pod-deletion-cost)."""

    replicas: int
    request_cores: float
    rows: list[tuple[tuple[str, str], str, bool, float, str | None, bool, int]]
    zones: list[str]
    max_skew: int
    # when every row's node is known from the events (its zone is fixed until the next event): the parts of
    # Observed that do not depend on the tick's samples, built once (see Autoscaler._measure)
    by_zone: dict[str, list[tuple[int, float, str, int]]] | None = None
    ready: np.ndarray | None = None
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if all(r[5] for r in self.rows):
            by_zone: dict[str, list[tuple[int, float, str, int]]] = {z: [] for z in self.zones}
            for key, _node, rdy, created, zone, _known, cost in self.rows:
                if zone is not None:
                    by_zone.setdefault(zone, []).append((1 if rdy else 0, created, key[1], cost))
            self.by_zone = by_zone
            self.ready = np.array([r[2] for r in self.rows], dtype=bool)
            self.nodes = tuple(dict.fromkeys(r[1] for r in self.rows))


def scale_in_pods(pods_by_zone: Mapping[str, list[tuple[Any, ...]]], n: int,
                  zone_cpu_pct: Mapping[str, float] | None = None) -> list[str]:
    """The ``n`` pods to remove first so the zone skew never grows: each time one from the zone with most
    pods — among zones with as many, the one whose nodes are busiest (``zone_cpu_pct``: mean CPU % of its
    nodes; a zone without a figure counts as idle), then by zone name —, within it not-ready before ready,
    then the lowest ``pod-deletion-cost`` already on the pod (the optional 4th item of ``(ready, created, name,
    cost)``: the node-scale planner's costs empty the newest elastic node first, and this keeps that order),
    then the newest, then by name. (The tie-break keeps the odd replicas that maxSkew allows in the zones
    with the most room: when zones differ in size, their nodes stay closer in load.)"""
    left = {z: sorted(v, key=lambda p: (p[0], p[3] if len(p) > 3 else 0, -p[1], p[2]))
            for z, v in pods_by_zone.items()}
    busy = zone_cpu_pct or {}
    out: list[str] = []
    for _ in range(max(0, n)):
        z = max(sorted(left), key=lambda k: (len(left[k]), busy.get(k, -math.inf)), default=None)
        if z is None or not left[z]:
            break
        out.append(left[z].pop(0)[2])
    return out


def _deletion_cost(annotations: Mapping[str, str]) -> int:
    """The pod's ``controller.kubernetes.io/pod-deletion-cost`` (0 when absent or not an integer, as Kubernetes)."""
    try:
        return int(annotations.get(DELETION_COST, "0"))
    except (TypeError, ValueError):
        return 0


def _zone_skew(counts: Mapping[str, int]) -> int:
    return max(counts.values()) - min(counts.values()) if counts else 0


class Autoscaler:
    """A :class:`~streams.core.planner.TickPlanner`: :class:`~kubetide.models.AutoscaleDecision` s per tick."""

    def __init__(self, settings: AutoscalerSettings) -> None:
        self.settings = settings
        self.workloads: dict[str, WorkloadState] = {}
        self.metrics: dict[tuple[str, str, str], dict[tuple[tuple[str, str], ...], tuple[float, float]]] = {}
        self.evidence: dict[str, dict[str, Any]] = {}  # the last round's evidence per workload (for tests, UIs)
        self._per_version = PerVersion()

    # ------------------------------------------------------------ inputs
    def apply_metric(self, m: AppMetric) -> None:
        """An ``app.metrics`` sample (latest per label set wins; older samples are ignored)."""
        per = self.metrics.setdefault((m.namespace, m.app, m.metric), {})
        lk = tuple(sorted(m.labels.items()))
        old = per.get(lk)
        if old is None or m.ts >= old[0]:
            per[lk] = (float(m.ts), float(m.value))

    def _metrics_for(self, namespace: str, name: str, policy: asc.AutoscalePolicy,
                     now: float) -> dict[str, tuple[float, float]]:
        out = {}
        for t in policy.metrics:
            per = self.metrics.get((namespace, name, t.metric))
            if not per:
                continue
            fresh = [(ts, v) for ts, v in per.values() if now - ts <= t.max_age_s and math.isfinite(v)]
            if fresh:
                out[t.metric] = (min(ts for ts, _ in fresh), sum(v for _, v in fresh))
            else:  # only stale samples: report the newest (the trigger says it is stale)
                out[t.metric] = max(per.values())
        return out

    # ------------------------------------------------------------ aggregation
    @staticmethod
    def observe(state: ClusterState, namespace: str, name: str,
                pods: list[tuple[tuple[str, str], Any]] | None = None) -> Observed | None:
        """The workload's aggregates this tick (``pods``: its pods when the caller indexed them already)."""
        prep = Autoscaler._prepare(state, namespace, name, pods, _zones(state))
        return None if prep is None else Autoscaler._measure(state, prep)

    @staticmethod
    def _prepare(state: ClusterState, namespace: str, name: str, pods: list[tuple[tuple[str, str], Any]] | None,
                 zones: list[str]) -> _Prepared | None:
        """What :meth:`observe` reads from the state's objects only (the same until the next event): the
        Deployment's replicas and request, its Running pods on a node, their readiness and zones."""
        dep = state.deployments.get((namespace, name))
        if dep is None:
            return None
        key = f"{namespace}/{name}"
        if pods is None:
            pods = list(state.pods.items())
        rows: list[tuple[tuple[str, str], str, bool, float, str | None, bool, int]] = []
        req = dep.pod_requests.cpu_cores if dep.pod_requests is not None else 0.0
        for (ns, pname), pod in pods:
            if ns != namespace or pod.workload is None or pod.workload.key != key:
                continue
            if pod.phase != "Running" or not pod.node:
                continue
            if req <= 0:
                req = pod.requests.cpu_cores
            # a node not (yet) known from the events takes the zone of its latest scrape: asked each tick
            known = pod.node in state.nodes
            rows.append(((ns, pname), pod.node, bool(pod.ready), pod.created_at or 0.0,
                         state.zone_of(pod.node) if known else None, known, _deletion_cost(pod.annotations)))
        skews = [c.max_skew for c in dep.topology_spread if c.topology_key in ("topology.kubernetes.io/zone",)]
        return _Prepared(dep.replicas, req, rows, zones, min(skews) if skews else 1)

    @staticmethod
    def _measure(state: ClusterState, prep: _Prepared) -> Observed:
        """The tick's usage of the prepared pods (from the tick's samples) → :class:`Observed`. When every pod's
        node is known from the events, only the CPU and the per-zone usage are read per tick (the rest was built
        with ``prep``); otherwise as :meth:`_measure_plain`, which gives the same in both cases."""
        if prep.by_zone is None or prep.ready is None:
            return Autoscaler._measure_plain(state, prep)
        usage: dict[str, dict[tuple[str, str], tuple[float, float]] | None] = {}
        for n in prep.nodes:
            smp = state.sample(n)
            usage[n] = smp.pods if smp is not None else None
        cpu: list[float] = []
        zone_usage: dict[str, float] = {}
        for key, node, _rdy, _created, zone, _known, _cost in prep.rows:
            pods = usage[node]
            use = pods.get(key) if pods is not None else None
            c = float(use[0]) if use is not None else math.nan
            cpu.append(c)
            if zone is not None and math.isfinite(c):
                zone_usage[zone] = zone_usage.get(zone, 0.0) + c
        arr = np.array(cpu, dtype=float)
        return Observed(prep.replicas, prep.request_cores, _total(arr), arr, prep.ready.copy(), zone_usage,
                        dict(prep.by_zone), prep.max_skew)

    @staticmethod
    def _measure_plain(state: ClusterState, prep: _Prepared) -> Observed:
        """:meth:`_measure` as first written: every pod's sample, readiness and zone read at each tick."""
        cpu: list[float] = []
        ready: list[bool] = []
        zone_usage: dict[str, float] = {}
        by_zone: dict[str, list[tuple[int, float, str, int]]] = {z: [] for z in prep.zones}
        for key, node, rdy, created, zone, known, cost in prep.rows:
            smp = state.sample(node)
            use = smp.pods.get(key) if smp is not None else None
            c = float(use[0]) if use is not None else math.nan
            cpu.append(c)
            ready.append(rdy)
            if not known:
                zone = state.zone_of(node)
            if zone is not None:
                by_zone.setdefault(zone, []).append((1 if rdy else 0, created, key[1], cost))
                if math.isfinite(c):
                    zone_usage[zone] = zone_usage.get(zone, 0.0) + c
        arr = np.array(cpu, dtype=float)
        return Observed(prep.replicas, prep.request_cores, _total(arr), arr, np.array(ready, dtype=bool), zone_usage,
                        by_zone, prep.max_skew)

    # ------------------------------------------------------------ one round
    def plan(self, state: ClusterState, ts: float) -> list[AutoscaleDecision]:
        s = self.settings
        out: list[AutoscaleDecision] = []
        cap = round(s.history_s / s.interval_s)
        # the workloads, their policies and what they read from the state's objects change only with an event
        chosen, prepared = self._per_version.get(state, "prepared", lambda: self._prepare_all(state))
        keep = {f"{ns}/{name}" for ns, name, _ in chosen}
        for gone in [k for k in self.workloads if k not in keep]:  # deleted or no longer selected: forget
            del self.workloads[gone]
            self.evidence.pop(gone, None)
        if not chosen:
            return out
        for (ns, name, policy), prep in zip(chosen, prepared, strict=True):
            key = f"{ns}/{name}"
            if prep is None:
                continue
            obs = self._measure(state, prep)
            ws = self.workloads.get(key)
            if ws is None:
                ws = self.workloads[key] = WorkloadState(History(s.interval_s, cap))
            ws.history.add(ts, obs.total_cores)
            if ts - ws.last_sync < s.sync_period_s - 1e-9:
                continue
            ws.last_sync = ts
            d = self._round(key, ws, policy, obs, ts, state)
            if d is not None:
                out.append(d)
        return out

    def _prepare_all(self, state: ClusterState) -> tuple[list[tuple[str, str, asc.AutoscalePolicy]],
                                                          list[_Prepared | None]]:
        s = self.settings
        chosen = [(ns, name, policy) for (ns, name), dep in sorted(state.deployments.items())
                  if (policy := s.policy_for(f"{ns}/{name}", dep.labels)) is not None]
        if not chosen:
            return chosen, []
        by_wl: dict[str, list[tuple[tuple[str, str], Any]]] = {}
        for k, pod in state.pods.items():
            if pod.workload is not None:
                by_wl.setdefault(pod.workload.key, []).append((k, pod))
        zones = _zones(state)
        return chosen, [self._prepare(state, ns, name, by_wl.get(f"{ns}/{name}", []), zones) for ns, name, _ in chosen]

    def _prediction(self, ws: WorkloadState, policy: asc.AutoscalePolicy, ts: float) -> asc.PredictiveFit | None:
        p = policy.predictive
        if not p.enabled:
            return None
        h = ws.history
        end = h.end_ts
        if end is None:
            return None
        if ws.fit is None or ts - ws.fit_at >= self.settings.refit_s - 1e-9:
            horizon = p.horizon_s + self.settings.refit_s + 2 * h.interval_s
            # what the old forecast expected up to now stays known to the new one (a short peak under way)
            before = ws.fit.shifted(round((end - ws.fit_end) / h.interval_s)).recent \
                if ws.fit is not None and ws.fit_end is not None else np.array([])
            ws.fit = asc.fit_predictive(p, h.values(), h.interval_s, horizon).with_recent(before)
            ws.fit_end, ws.fit_at = end, ts
        assert ws.fit_end is not None
        # the forecast's first value follows fit_end; drop the buckets that passed, and the open bucket
        # ``now`` is in (its value is already under way)
        return ws.fit.shifted(round((end - ws.fit_end) / h.interval_s))

    def _round(self, key: str, ws: WorkloadState, policy: asc.AutoscalePolicy, o: Observed, ts: float,
               state: ClusterState) -> AutoscaleDecision | None:
        ns, name = key.split("/", 1)
        pred = self._prediction(ws, policy, ts)
        hist_tail = np.array([o.total_cores])
        obs = asc.WorkloadObservation(
            workload=WorkloadRef(namespace=ns, kind="Deployment", name=name), now=ts,
            current_replicas=o.replicas, cpu_request_cores=o.request_cores, cpu_history=hist_tail,
            interval_s=self.settings.interval_s,
            pod_cpu_cores=o.pod_cpu if len(o.pod_cpu) else None,
            pod_ready=o.pod_ready if len(o.pod_ready) else None,
            metrics=self._metrics_for(ns, name, policy, ts), zone_usage=o.zone_usage,
            prediction=pred if pred is not None else asc.PredictiveFit("fallback: predictive trigger disabled"))
        ws.hpa, d, ev = asc.step(ws.hpa, policy, obs)
        self.evidence[key] = ev
        if d is None or d.desired_replicas >= o.replicas:
            return d
        victims = scale_in_pods(o.pods_by_zone, o.replicas - d.desired_replicas, zone_cpu_pct(state))
        counts = {z: len(v) for z, v in o.pods_by_zone.items()}
        for v in victims:
            z = next(z for z, pods in o.pods_by_zone.items() if any(p[2] == v for p in pods))
            counts[z] -= 1
        extra = {"scale_in_pods": ",".join(victims), "zone_skew_after": _zone_skew(counts),
                 "max_skew": o.max_skew}
        return d.model_copy(update={"evidence": {**d.evidence, **extra}})


def _total(arr: np.ndarray) -> float:
    """The workload's total CPU from its pods' (NaN = no sample): the sum, or the present ones' mean for every pod
    when at least half are present, else NaN (missing)."""
    present = ~np.isnan(arr)
    if len(arr) == 0:
        return math.nan
    if present.all():
        return float(arr.sum())
    if present.sum() * 2 >= len(arr):
        return float(arr[present].mean() * len(arr))
    return math.nan


def zone_cpu_pct(state: ClusterState) -> dict[str, float]:
    """Mean CPU usage % of each zone's ready nodes in the current tick's samples (nodes without a sample
    left out; a zone with none is absent)."""
    per: dict[str, list[float]] = {}
    for n in state.ready_nodes():
        smp = state.sample(n)
        z = state.zone_of(n)
        if smp is None or z is None or (pct := smp.cpu_pct) is None or not math.isfinite(pct):
            continue
        per.setdefault(z, []).append(pct)
    return {z: float(np.mean(v)) for z, v in per.items()}


def _zones(state: ClusterState) -> list[str]:
    return sorted({z for n in state.ready_nodes() if (z := state.zone_of(n)) is not None})
