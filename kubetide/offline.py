"""kubetide's whole decision path in one process, on a kubesim :class:`~kubesim.model.Cluster` (offline).

:class:`OfflineKubetide` mirrors the embedded deployment message by message, calling the very
functions the workers and the faust agents call, in the order they call them:

- **collector**, watch side: every object change the Cluster reports to its ``listeners`` is
  rendered to Kubernetes JSON at once (:mod:`kubesim.render`, what the HTTP API would send) and
  turned into a ``ClusterEvent`` with the collector's snapshot functions (:mod:`workers.snapshots`);
  ReplicaSets are not watched (as in the collector). The start is a ``SYNC`` of every object, in
  the collector's kind order (Pod, Node, PodDisruptionBudget, Deployment, Namespace).
  ``ts`` of an event is the cluster's time.
- **collector**, metrics side: after each tick, metrics.k8s.io JSON of every node and pod
  (:func:`kubesim.render.node_metrics` / ``pod_metrics``) → :func:`workers.snapshots.join_pod_metrics`
  + :func:`workers.snapshots.node_metrics_message` → one ``ClusterMetrics`` per node, nodes in the
  Cluster's order, skipped when its timestamp did not advance (the collector's rule). Where the
  cluster measures CPI / latency (kubesim), the values the custom metrics API would serve (placed,
  running, non-daemon pods, rounded to milli-units) fill ``pods.cpi`` / ``pods.latency_ms`` through
  the same ``node_metrics_message(..., custom)`` and column rule as the collector.
- **stream worker**: each event → :func:`streams.core.messages.forward_event` → ``Planner.handle``
  (and :func:`~streams.core.messages.app_requests` → the app's profile state); each metrics
  message → :func:`~streams.core.messages.split_metrics` → samples to the per-app
  :class:`~streams.core.profile.AppProfileState` (``should_emit`` / ``profile_message`` as the
  ``profiler`` agent), the node summary → ``Planner.handle``; with interference on, each metrics
  message first goes through :func:`streams.core.interference.update` (the ``interference``
  agent) and each anomaly → :func:`~streams.core.messages.forward_anomaly` → ``Planner.apply_anomaly``.
  The planner is built with ``streams.agents._new_planner`` from the same
  :class:`~streams.core.settings.StreamsSettings`. Every message goes through the codec (``encode``
  then ``decode``), as on Kafka, unless ``codec=False``.
- **without the codec** (``codec=False``, what ``kubetide evaluate --offline`` runs unless ``--codec``),
  three shortcuts, none of which changes a decision (``tests/test_offline_fast.py`` proves each against
  the path above): the metrics messages are built straight from the Cluster (:meth:`OfflineKubetide.fast_metrics`:
  the same rows, quantities and custom columns as the rendered JSON read back, message for message);
  each message goes on without ``split_metrics``' per-app messages — the planner gets the same
  ``PlannerInput`` (:func:`~streams.core.messages.node_summary`, built by :func:`node_input` without validating
  it again) and the profiler is fed a whole tick at
  a time through :class:`~streams.core.profile.NodeBatcher` (the same profile states); profiles are
  computed only with ``emit_profiles`` (nothing in the evaluation reads them). The watch side, the
  interference detector, the planner and the actuator run exactly as above.
- **actuator** (:class:`OfflineActuator`): the actuator's rules on the Cluster's API: protected
  namespace; the live pod read (rendered JSON) and ``EvictHandler._check`` itself (expiry
  against the cluster's time, gone / terminating, uid and node re-check, opt-out annotation,
  mirror and DaemonSet pods); idempotency on the decision id; the global token bucket
  (``evictions_per_minute``, ``rate_burst``) **in virtual time**; the eviction through
  :meth:`Cluster.evict` (its 201 / 404 / 429 / 500 mirror the Eviction API); a 429 is retried
  after ``retry_after_s`` **virtual** seconds up to ``pdb_max_attempts`` attempts, never past expiry.

Order within one tick ``T`` (the "lockstep" order the online mode reproduces): the Cluster
steps to ``T`` → its object changes are forwarded → the metrics of ``T`` are forwarded; the
decisions that complete tick ``T`` go to the actuator at once; the object changes its evictions
cause are forwarded before tick ``T + 1``. Decision latency is therefore 0 in processing plus
the observation quantum: a change is seen at the next tick, at most ``resolution_s`` later.

Everything is deterministic: no wall clock, no threads; the same scenario and seed give the same
decisions.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubesim import render
from kubesim.model import Cluster
from kubetide import models as m
from kubetide import topics
from kubetide.codec import decode, encode
from streams.core.messages import (
    AppSamples,
    NodeSummary,
    PlannerInput,
    app_requests,
    forward_anomaly,
    forward_event,
    split_metrics,
)
from streams.core.planner import Decision, Planner, decision_topic
from streams.core.profile import AppProfileState, NodeBatcher, profile_message, should_emit, state_key
from streams.core.settings import StreamsSettings
from workers import snapshots as snap
from workers.actuator import ActuatorSettings, EvictHandler

# kubesim resource → (collector kind, ClusterEvent field, snapshot function); the collector's order.
KINDS: dict[str, tuple[str, str, Callable[[dict], Any]]] = {
    "pods": ("Pod", "pod", snap.pod_snapshot),
    "nodes": ("Node", "node", snap.node_snapshot),
    "poddisruptionbudgets": ("PodDisruptionBudget", "pdb", snap.pdb_snapshot),
    "deployments": ("Deployment", "deployment", snap.deployment_snapshot),
    "namespaces": ("Namespace", "namespace_obj", snap.namespace_snapshot),
}


@dataclass
class EvictionRecord:
    """One applied eviction and where the workload's replacement pod went (filled in later)."""

    t: float
    decision_id: str
    strategy: str
    workload: str  # namespace/kind/name
    pod: str  # namespace/name
    from_node: str
    replacement_pod: str | None = None
    replacement_node: str | None = None


@dataclass
class OfflineActuator:
    """The actuator's safety rules and outcomes, applied to a Cluster in virtual time."""

    cluster: Cluster
    settings: ActuatorSettings = field(default_factory=ActuatorSettings)
    applied: set[str] = field(default_factory=set)
    outcomes: list[m.Action] = field(default_factory=list)
    evictions: list[EvictionRecord] = field(default_factory=list)
    pdb_violations: int = 0
    _tokens: float = -1.0
    _last_refill: float | None = None
    _retries: list[tuple[float, int, m.DescheduleDecision]] = field(default_factory=list)
    # decision type → handler, for the decisions other than evictions (autoscale, node scale)
    handlers: dict[type, Callable[[Any], m.Action]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tokens = float(self.settings.rate_burst)
        # EvictHandler._check reads only ``self.settings``: the actuator's own checks, unchanged.
        self._checker = types.SimpleNamespace(settings=self.settings)

    def _take_token(self, now: float) -> bool:
        rate = self.settings.evictions_per_minute / 60.0
        if self._last_refill is not None:
            self._tokens = min(float(self.settings.rate_burst), self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _record(self, d: m.DescheduleDecision, outcome: str, reason: str, message: str = "",
                http_status: int | None = None, retry_after_s: float | None = None, attempt: int = 1) -> m.Action:
        a = m.Action(ts=self.cluster.t, decision_id=d.id, decision_topic=topics.DECISIONS_DESCHEDULE,
                     strategy=d.strategy, action="evict", target=d.pod, outcome=outcome, reason=reason,
                     message=message, http_status=http_status, retry_after_s=retry_after_s, attempt=attempt,
                     worker="offline")
        self.outcomes.append(a)
        if outcome in ("applied", "dry-run"):
            self.applied.add(d.id)
        return a

    def handle(self, d: m.DescheduleDecision, attempt: int = 1) -> m.Action:
        now = self.cluster.t
        ns, name = d.pod.namespace, d.pod.name
        if d.id in self.applied:
            return self._record(d, "duplicate", "already-applied", "decision already applied", attempt=attempt)
        if ns in self.settings.protected_namespaces:
            return self._record(d, "skipped", "protected-namespace", f"namespace {ns} is protected", attempt=attempt)
        pod = self.cluster.pods.get((ns, name))
        verdict = EvictHandler._check(self._checker, d, render.pod(pod, self.cluster) if pod else None, now)
        if verdict is not None:
            return self._record(d, verdict.outcome, verdict.reason, verdict.message, verdict.http_status,
                                attempt=attempt)
        if self.settings.dry_run:
            return self._record(d, "dry-run", "dry-run", attempt=attempt)
        if not self._take_token(now):
            # The online actuator waits for a token; offline the wait is one tick (virtual time).
            self._retries.append((now + self.cluster.scenario.resolution_s, attempt, d))
            return self._record(d, "skipped", "rate-limited", "waiting for a rate-limit token", attempt=attempt)
        assert pod is not None
        workload = f"{d.workload.namespace}/{d.workload.kind}/{d.workload.name}"
        res = self.cluster.evict(ns, name)
        if res.code == 201:
            self.evictions.append(EvictionRecord(now, d.id, d.strategy, workload, f"{ns}/{name}", pod.node_name or ""))
            for pdb in self.cluster.pdbs.values():
                if pdb.matches(pod) and pdb.current_healthy < pdb.desired_healthy:
                    self.pdb_violations += 1
            return self._record(d, "applied", "evicted", res.message, 201, attempt=attempt)
        if res.code == 429:
            retry = float(res.retry_after_s or self.settings.default_retry_after_s)
            msg = res.message
            if attempt < self.settings.pdb_max_attempts and now + retry <= d.expires_at:
                self._retries.append((now + retry, attempt + 1, d))
            else:
                msg += " (no retry)"
            return self._record(d, "skipped", "pdb", msg, 429, retry, attempt=attempt)
        if res.code == 404:
            return self._record(d, "skipped", "gone", res.message, 404, attempt=attempt)
        return self._record(d, "failed", "api-error", res.message, res.code, attempt=attempt)

    def due_retries(self) -> list[tuple[int, m.DescheduleDecision]]:
        now = self.cluster.t
        due = [(a, d) for t, a, d in self._retries if t <= now + 1e-9]
        self._retries = [r for r in self._retries if r[0] > now + 1e-9]
        return due


class OfflineKubetide:
    """Collector + stream worker + actuator over one Cluster, in-process (see the module doc)."""

    def __init__(self, cluster: Cluster, settings: StreamsSettings | None = None,
                 actuator: ActuatorSettings | None = None, *, codec: bool = True, profile: bool = True,
                 interference: bool | None = None, emit_profiles: bool = True) -> None:
        from streams.agents import _new_planner

        self.cluster = cluster
        self.settings = settings or StreamsSettings.from_config({})
        self.planner: Planner = _new_planner(self.settings)
        self.actuator = OfflineActuator(cluster, actuator or ActuatorSettings())
        self.codec = codec
        self.profile = profile
        self.profiles: dict[str, AppProfileState] = {}  # by state_key(namespace, app), as the profiler's table
        self.profiles_emitted = 0
        self.emit_profiles = emit_profiles
        self._batcher: NodeBatcher | None = None
        self._emit_slot: float | None = None
        self.decisions: list[m.DescheduleDecision] = []
        self.other_decisions: list[Decision] = []  # autoscale and node-scale, in order
        self.objects: dict[str, dict[tuple[str, str], m.ClusterEvent]] = {k[0]: {} for k in KINDS.values()}
        self._buffer: list[tuple[str, str, dict]] = []
        self._last_metrics_ts: dict[str, float] = {}
        self._started = False
        self._pending_replacement: list[EvictionRecord] = []
        # Interference: only where the cluster measures CPI / latency per pod (kubesim's Pod.cpi).
        self.interference = (hasattr(cluster, "truth_view") if interference is None else interference)
        self.anomalies: list[m.Anomaly] = []
        self._istate: dict[str, Any] = {}
        # fast metrics side (codec off): the rows of each node's message, rebuilt after a pod/node change
        self._version = 0
        self._pod_rows: dict[tuple[str, str], tuple[str | None, str]] = {
            (p.namespace, p.name): (p.node_name, p.phase) for p in cluster.pods.values()}
        self._layout: _Layout | None = None
        self._ts_of: tuple[float, float | None] = (math.nan, None)
        cluster.listeners.append(self._on_change)

    # ------------------------------------------------------------------ collector, watch side

    def _on_change(self, etype: str, resource: str, obj: Any) -> None:
        if resource == "nodes":
            self._version += 1
        elif resource == "pods":
            # the rows of the metrics messages change with a pod's presence, node or phase (not readiness)
            key = (obj.namespace, obj.name)
            row = None if etype == "DELETED" else (obj.node_name, obj.phase)
            if etype != "MODIFIED" or self._pod_rows.get(key) != row:
                self._version += 1
            if row is None:
                self._pod_rows.pop(key, None)
            else:
                self._pod_rows[key] = row
        if resource in KINDS and self._started:
            self._buffer.append((etype, resource, render.render(resource, obj, self.cluster)))

    def _event(self, etype: str, resource: str, raw: dict) -> m.ClusterEvent:
        kind, fld, fn = KINDS[resource]
        meta = raw.get("metadata") or {}
        return m.ClusterEvent(ts=self.cluster.t, type=etype, kind=kind, namespace=meta.get("namespace") or "",
                              name=meta["name"], uid=meta.get("uid"), resource_version=meta.get("resourceVersion"),
                              **{fld: fn(raw)})

    def _roundtrip(self, topic: str, msg: Any) -> Any:
        return decode(topic, encode(msg)) if self.codec else msg

    def start(self) -> list[m.DescheduleDecision]:
        """The collector's initial list: SYNC of every object."""
        c = self.cluster
        objs: dict[str, list] = {"pods": list(c.pods.values()), "nodes": list(c.nodes.values()),
                                 "poddisruptionbudgets": list(c.pdbs.values()),
                                 "deployments": list(c.deployments.values()),
                                 "namespaces": list(c.namespaces.values())}
        self._started = True
        out: list[m.DescheduleDecision] = []
        for resource, items in objs.items():
            for o in items:
                out += self._forward_event(self._event("SYNC", resource, render.render(resource, o, c)))
        return out

    def _forward_event(self, ev: m.ClusterEvent) -> list[m.DescheduleDecision]:
        ev = self._roundtrip(topics.CLUSTER_EVENTS, ev)
        store = self.objects[ev.kind]
        key = (ev.namespace, ev.name)
        if ev.type == "DELETED":
            old = store.pop(key, None)
        else:
            old = store.get(key)
            store[key] = ev
        if ev.kind == "Pod" and (ev.type == "DELETED" or old is None or old.pod is None or ev.pod is None
                                 or (old.pod.node, old.pod.app) != (ev.pod.node, ev.pod.app)):
            self._version += 1  # the joined view of the metrics side changed
        if ev.kind == "Pod" and ev.type == "ADDED" and ev.pod is not None:
            self._note_new_pod(ev)
        out = self._plan(forward_event(ev))
        if self.profile:
            req = app_requests(ev)
            if req is not None:
                self._profile(self._roundtrip(topics.APP_SAMPLES, req))
        return out

    def _note_new_pod(self, ev: m.ClusterEvent) -> None:
        assert ev.pod is not None
        wl = ev.pod.workload
        key = f"{wl.namespace}/{wl.kind}/{wl.name}"
        for rec in self._pending_replacement:
            if rec.workload == key:
                rec.replacement_pod = f"{ev.namespace}/{ev.name}"
                self._pending_replacement.remove(rec)
                return

    def flush_events(self) -> list[m.DescheduleDecision]:
        out: list[m.DescheduleDecision] = []
        while self._buffer:
            batch, self._buffer = self._buffer, []
            for etype, resource, raw in batch:
                out += self._forward_event(self._event(etype, resource, raw))
        self._update_replacement_nodes()
        return out

    def _update_replacement_nodes(self) -> None:
        for rec in self.actuator.evictions[-50:]:
            if rec.replacement_pod and rec.replacement_node is None:
                ns, name = rec.replacement_pod.split("/", 1)
                p = self.cluster.pods.get((ns, name))
                if p is not None and p.node_name:
                    rec.replacement_node = p.node_name

    # ------------------------------------------------------------------ collector, metrics side

    def metrics(self) -> list[m.ClusterMetrics]:
        """One ``ClusterMetrics`` per node scrape of this tick. With the codec, through the rendered
        metrics.k8s.io JSON and the collector's functions; without it, the same messages built
        directly from the Cluster (:meth:`fast_metrics`, proven equal in ``tests/test_offline_fast.py``)."""
        out = self.slow_metrics() if self.codec else self.fast_metrics()
        for cm in out:
            self._last_metrics_ts[cm.node] = cm.ts
        return out

    def slow_metrics(self) -> list[m.ClusterMetrics]:
        """The collector's path: render every node and pod to metrics.k8s.io JSON, join, build (nodes whose
        scrape did not advance since the last :meth:`metrics` are left out)."""
        c = self.cluster
        pod_items = [render.pod_metrics(p, c) for p in sorted(c.pods.values(), key=lambda p: p.key)
                     if p.node_name and p.phase == "Running"]
        node_items = [render.node_metrics(n, c) for n in sorted(c.nodes.values(), key=lambda n: n.name)]
        by_node, _ = snap.join_pod_metrics(pod_items, self.objects["Pod"])
        custom = self._custom_values() if self.interference else None
        out = []
        for item in node_items:
            name = item["metadata"]["name"]
            node_ev = self.objects["Node"].get(("", name))
            if node_ev is None or node_ev.node is None:
                continue
            ts = snap.parse_timestamp(item.get("timestamp"))
            last = self._last_metrics_ts.get(name)
            if ts is None or (last is not None and ts <= last):
                continue
            msg = snap.node_metrics_message(item, node_ev.node, by_node.get(name, []), ts, 10.0, custom)
            out.append(msg)
        return out

    def _tick_ts(self) -> float | None:
        """The scrape timestamp of this tick as the collector reads it (RFC 3339 seconds, parsed)."""
        t = self.cluster.t
        if self._ts_of[0] != t:
            self._ts_of = (t, snap.parse_timestamp(render.ts(t)))
        return self._ts_of[1]

    def _metrics_layout(self) -> _Layout:
        """Rows of every node's message (the join of running, placed pods with the watched pods, each
        node's rows sorted as by the collector), cached until the next pod or node change."""
        lay = self._layout
        if lay is not None and lay.version == self._version:
            return lay
        c = self.cluster
        seen = self.objects["Pod"]
        by_node: dict[str, list[tuple[str, str, str, Any]]] = {}
        for p in c.pods.values():
            if p.node_name and p.phase == "Running":
                ev = seen.get((p.namespace, p.name))
                if ev is None or ev.pod is None or not ev.pod.node:
                    continue
                by_node.setdefault(ev.pod.node, []).append((p.namespace, p.name, ev.pod.app or "", p))
        lay = _Layout(self._version)
        for name in sorted(c.nodes):
            rows = sorted(by_node.get(name, []), key=lambda r: (r[0], r[1]))
            a = len(lay.pods)
            lay.nodes.append((name, a, a + len(rows)))
            for ns, pname, app, p in rows:
                lay.namespace.append(ns)
                lay.name.append(pname)
                lay.app.append(app)
                lay.pods.append(p)
        lay.daemon = np.array([bool(getattr(p, "daemon", False)) for p in lay.pods], dtype=bool)
        self._layout = lay
        return lay

    def _slots(self, lay: _Layout) -> bool:
        """Point ``lay.slots`` at the rows' places in the Cluster's per-pod tick arrays, if they are current:
        no pod or node changed since its last usage update (kubesim marks that ``_struct_dirty``)."""
        c = self.cluster
        if getattr(c, "_struct_dirty", True) or getattr(c, "_P", None) is None:
            return False
        if lay.slots_for is not c._P:
            lay.slots = np.array([p.__dict__["_slot"] for p in lay.pods], dtype=np.int64)
            lay.slots_for = c._P
        return True

    def _custom_columns_fast(self, lay: _Layout) -> dict[str, list[float]]:
        """Per row: the ``cpi`` / ``latency_ms`` values the custom metrics API serves (0.0 where it serves
        none: DaemonSet pods, values that round to ≤ 0), rounded to milli-units like :meth:`_custom_values`."""
        c = self.cluster
        pods = lay.pods
        arrays = {"cpi": c._p_cpi, "latency_ms": c._p_lat} if self._slots(lay) else None
        out: dict[str, list[float]] = {}
        for metric in snap.CUSTOM_POD_METRICS:
            if arrays is not None:
                x = np.asarray(arrays[metric], dtype=np.float64)[lay.slots]
            else:
                x = np.array([float(getattr(p, metric, 0.0) or 0.0) for p in pods], dtype=np.float64)
            v = np.where(lay.daemon, 0.0, _round3(x))
            v = np.where(v > 0, v, 0.0)
            out[metric] = v.tolist()
            out[metric + "/n"] = np.concatenate([[0], np.cumsum(v > 0)]).tolist()  # values > 0 before each row
        return out

    def fast_metrics(self) -> list[m.ClusterMetrics]:
        """:meth:`slow_metrics`' messages without the JSON: the same rows, the same quantities (usage
        rounded to nanocores and KiB as metrics-server reports it), the same custom columns, built with
        ``model_construct`` (the fields are what the validated path would hold)."""
        c = self.cluster
        lay = self._metrics_layout()
        ts = self._tick_ts()
        pods = lay.pods
        if self._slots(lay):
            # nothing changed since the Cluster's last usage update: read its arrays (pod.usage_* hold the same)
            cpu_raw, mem_raw = c._p_cpu[lay.slots], c._p_mem[lay.slots]
        else:
            cpu_raw = np.array([p.usage_cpu for p in pods], dtype=np.float64)
            mem_raw = np.array([p.usage_memory for p in pods], dtype=np.float64)
        cpu = _nanocores(cpu_raw).tolist()
        mem = _kibibytes(mem_raw).tolist()
        custom = self._custom_columns_fast(lay) if self.interference else {}
        metrics = snap.CUSTOM_POD_METRICS if self.interference else ()
        nodes_seen = self.objects["Node"]
        out = []
        for name, a, b in lay.nodes:
            node_ev = nodes_seen.get(("", name))
            if node_ev is None or node_ev.node is None:
                continue
            last = self._last_metrics_ts.get(name)
            if ts is None or (last is not None and ts <= last):
                continue
            n = c.nodes[name]
            cols = {k: custom[k][a:b] if custom[k + "/n"][b] > custom[k + "/n"][a] else None for k in metrics}
            samples = _construct(m.PodSamples, {
                "namespace": lay.namespace[a:b], "name": lay.name[a:b], "app": lay.app[a:b], "cpu_cores": cpu[a:b],
                "mem_bytes": mem[a:b], **cols}, {*_PODS_FIELDS, *(k for k, v in cols.items() if v is not None)})
            usage = _construct(m.Resources, {"cpu_cores": _nanocores1(n.usage_cpu),
                                             "mem_bytes": _kibibytes1(n.usage_memory)}, _RESOURCES_FIELDS)
            out.append(_construct(m.ClusterMetrics, {
                "schema_": _METRICS_SCHEMA, "ts": ts, "node": name, "zone": node_ev.node.zone, "window_s": _WINDOW_S,
                "node_usage": usage, "node_allocatable": node_ev.node.allocatable, "pods": samples}, _METRICS_FIELDS))
        return out

    def _custom_values(self) -> dict[str, dict[tuple[str, str], float]]:
        """What the collector reads from the custom metrics API (kubesim serves it for running,
        placed, non-daemon pods), through the same column rule (:func:`workers.snapshots.custom_columns`)."""
        pods = [p for p in self.cluster.pods.values() if p.node_name and p.phase == "Running"
                and not getattr(p, "daemon", False)]
        out: dict[str, dict[tuple[str, str], float]] = {}
        for metric in snap.CUSTOM_POD_METRICS:
            vals = {(p.namespace, p.name): round(float(getattr(p, metric, 0.0) or 0.0), 3) for p in pods}
            out[metric] = {k: v for k, v in vals.items() if v > 0}
        return out

    # ------------------------------------------------------------------ stream worker

    def _plan(self, msg: PlannerInput) -> list[Decision]:
        out = self.planner.handle(self._roundtrip(topics.PLANNER_INPUT, msg))
        return [self._roundtrip(decision_topic(d), d) for d in out]

    def _profile(self, msg: AppSamples) -> None:
        key = state_key(msg.namespace, msg.app)
        st = self.profiles.get(key)
        if st is None:
            st = self.profiles[key] = AppProfileState(self.settings.profiler, namespace=msg.namespace, app=msg.app)
        if self._batcher is not None and msg.cpu_cores:
            self._batcher.flush()
        st.update(msg)
        if msg.cpu_cores and self.emit_profiles and should_emit(st, msg.ts):
            self._roundtrip(topics.PROFILES, profile_message(st, msg.ts))
            st.last_emit_ts = msg.ts
            self.profiles_emitted += 1

    def forward_metrics(self, msgs: list[m.ClusterMetrics]) -> list[m.DescheduleDecision]:
        out: list[m.DescheduleDecision] = []
        if not self.codec:
            # as below, minus the per-app messages: the profiler gets one update per app per tick
            for cm in msgs:
                if self.interference:
                    self._detect(cm)
                out += self._plan(node_input(cm))
            if self.profile:
                self._profile_tick(msgs)
            return out
        for cm in msgs:
            cm = self._roundtrip(topics.CLUSTER_METRICS, cm)
            samples, summary = split_metrics(cm)
            if self.interference:
                self._detect(cm)
            if self.profile:
                for s in samples:
                    self._profile(self._roundtrip(topics.APP_SAMPLES, s))
            out += self._plan(summary)
        return out

    def _profile_tick(self, msgs: list[m.ClusterMetrics]) -> None:
        """The profiler, fed a whole tick at a time: the tick's scrapes of every node, concatenated in node
        order, go to a :class:`~streams.core.profile.NodeBatcher`, which hands each app its samples (in
        the order the per-node messages would bring them) in one ``add_samples`` per 6 ticks — the same
        state as per-message updates (see ``tests/test_core_profile.py``). With ``emit_profiles``, each
        app's profile is computed as by the ``profiler`` agent (``should_emit`` at the tick's event time),
        after a flush."""
        if not msgs:
            return
        if self._batcher is None:
            self._batcher = NodeBatcher(self.settings.profiler, self.profiles)
        chain = itertools.chain.from_iterable
        ts = msgs[0].ts
        names = list(chain(cm.pods.name for cm in msgs))
        if names != self._batcher._names:
            namespaces, apps = list(chain(cm.pods.namespace for cm in msgs)), list(chain(cm.pods.app for cm in msgs))
        else:
            namespaces = apps = []  # unused: the batcher keeps its layout
        self._batcher.add(ts, namespaces, names, apps,
                          np.fromiter(chain(cm.pods.cpu_cores for cm in msgs), dtype=np.float64, count=len(names)),
                          np.fromiter(chain(cm.pods.mem_bytes for cm in msgs), dtype=np.float64, count=len(names)))
        if not self.emit_profiles:
            return
        iv = self.settings.profiler.emit_interval_s
        slot = math.floor(ts / iv) if iv > 0 else ts
        if slot == self._emit_slot:
            return  # no app can emit within the interval it last emitted in
        self._emit_slot = slot
        self._batcher.flush()
        for st, _a, _b, _names in self._batcher._parts:
            if st.last_ts == ts and should_emit(st, ts):
                profile_message(st, ts)
                st.last_emit_ts = ts
                self.profiles_emitted += 1

    def flush_profiles(self) -> None:
        """Apply the node-batched samples still staged, so :attr:`profiles` is up to the latest scrape."""
        if self._batcher is not None:
            self._batcher.flush()

    def _detect(self, cm: m.ClusterMetrics) -> None:
        from streams.core import interference

        st = self._istate.get(cm.node)
        if st is None:
            st = self._istate[cm.node] = interference.NodeState(
                getattr(self.settings, "interference", None) or interference.InterferenceSettings(), node=cm.node)
        for a in interference.update(st, cm):
            a = self._roundtrip(topics.ANOMALIES, a) if self.codec else a
            self.anomalies.append(a)
            # as the interference agent: also to the planner (PlannerInput kind "anomaly")
            msg = self._roundtrip(topics.PLANNER_INPUT, forward_anomaly(a))
            self.planner.apply_anomaly(msg.anomaly)

    # ------------------------------------------------------------------ one tick

    def act(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if not isinstance(d, m.DescheduleDecision):
                # autoscale / node-scale decisions: the actuator's handler for that decision type
                self.other_decisions.append(d)
                self.actuator.handlers[type(d)](d)
                continue
            self.decisions.append(d)
            before = len(self.actuator.evictions)
            self.actuator.handle(d)
            self._pending_replacement += self.actuator.evictions[before:]

    def tick(self, step: bool = True) -> list[m.DescheduleDecision]:
        """Step the cluster one tick (unless ``step`` is false) and run the pipeline on it."""
        if not self._started:
            self.act(self.start())
        if step:
            self.cluster.step()
        made = self.flush_events()
        self.act(made)
        for attempt, d in self.actuator.due_retries():
            before = len(self.actuator.evictions)
            self.actuator.handle(d, attempt)
            self._pending_replacement += self.actuator.evictions[before:]
        made2 = self.forward_metrics(self.metrics())
        self.act(made2)
        made3 = self.flush_events()  # the changes the evictions caused, before the next tick
        self.act(made3)
        return made + made2 + made3


@dataclass
class _Layout:
    """The rows of every node's ``ClusterMetrics`` at one pod/node version (see ``_metrics_layout``)."""

    version: int
    nodes: list[tuple[str, int, int]] = field(default_factory=list)  # node name, rows [a, b), name order
    namespace: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    app: list[str] = field(default_factory=list)
    pods: list[Any] = field(default_factory=list)
    daemon: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    slots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    slots_for: Any = None  # the Cluster's pod array list the slots index


_METRICS_SCHEMA = m.SchemaRef(name=m.ClusterMetrics.SCHEMA_NAME, version=m.ClusterMetrics.SCHEMA_VERSION)
_WINDOW_S = snap.go_duration(render.METRICS_WINDOW, 10.0)


_PODS_FIELDS = frozenset(("namespace", "name", "app", "cpu_cores", "mem_bytes"))
_RESOURCES_FIELDS = frozenset(("cpu_cores", "mem_bytes"))
_METRICS_FIELDS = frozenset(("schema_", "ts", "node", "zone", "window_s", "node_usage", "node_allocatable", "pods"))
_new, _setattr = object.__new__, object.__setattr__


_DEFAULTS: dict[type, tuple[tuple[str, Any, Any], ...]] = {}  # model -> (field, default, default factory)


def _construct(cls: type, values: dict[str, Any], fields_set: frozenset[str] | set[str]) -> Any:
    """``cls.model_construct(**values)`` without its per-call overhead (fields not in ``values`` take their
    defaults; the messages are compared with validated ones in ``tests/test_offline_fast.py``)."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        defaults = _DEFAULTS[cls] = tuple((k, f.default, f.default_factory)
                                          for k, f in cls.model_fields.items())  # type: ignore[attr-defined]
    obj = _new(cls)
    _setattr(obj, "__dict__", {k: values[k] if k in values else (factory() if factory else d)
                               for k, d, factory in defaults})
    _setattr(obj, "__pydantic_fields_set__", set(fields_set))
    _setattr(obj, "__pydantic_extra__", None)
    _setattr(obj, "__pydantic_private__", None)
    return obj


_SUMMARY_FIELDS = frozenset(("ts", "node", "zone", "cpu_usage", "mem_usage", "cpu_allocatable", "mem_allocatable",
                             "pod_namespace", "pod_name", "pod_cpu_cores", "pod_mem_bytes"))
_INPUT_FIELDS = frozenset(("schema_", "ts", "kind", "node"))
_INPUT_SCHEMA = m.SchemaRef(name=PlannerInput.SCHEMA_NAME, version=PlannerInput.SCHEMA_VERSION)


def node_input(cm: m.ClusterMetrics) -> PlannerInput:
    """``PlannerInput(ts=cm.ts, kind="node", node=node_summary(cm))`` without validating again what the metrics
    message already holds (validated, or built by :meth:`OfflineKubetide.fast_metrics` with the validated
    types): the same fields, values and fields set (``tests/test_offline_fast.py``)."""
    p = cm.pods
    summary = _construct(NodeSummary, {
        "ts": float(cm.ts), "node": cm.node, "zone": cm.zone,
        "cpu_usage": float(cm.node_usage.cpu_cores), "mem_usage": float(cm.node_usage.mem_bytes),
        "cpu_allocatable": float(cm.node_allocatable.cpu_cores),
        "mem_allocatable": float(cm.node_allocatable.mem_bytes),
        "pod_namespace": list(p.namespace), "pod_name": list(p.name), "pod_cpu_cores": list(p.cpu_cores),
        "pod_mem_bytes": list(p.mem_bytes)}, _SUMMARY_FIELDS)
    return _construct(PlannerInput, {"schema_": _INPUT_SCHEMA, "ts": float(cm.ts), "kind": "node", "node": summary},
                      _INPUT_FIELDS)


def _nanocores(x: np.ndarray) -> np.ndarray:
    """``quantity(format_nanocores(x))`` elementwise (round half even to 1e-9, exact: n / 1e9 is n·1e-9 rounded)."""
    return np.maximum(np.rint(x * 1e9), 0.0) / 1e9 + 0.0


def _kibibytes(x: np.ndarray) -> np.ndarray:
    """``quantity(format_kibibytes(x))`` elementwise."""
    return np.maximum(np.rint(x / 1024), 0.0) * 1024 + 0.0


def _nanocores1(x: float) -> float:
    return max(0, round(x * 1e9)) / 1e9


def _kibibytes1(x: float) -> float:
    return float(max(0, round(x / 1024)) * 1024)


def _round3(x: np.ndarray) -> np.ndarray:
    """Python's ``round(v, 3)`` elementwise: ``rint(v·1000) / 1000`` except within 1e-6 of a half, where the
    product may have rounded across it (those few go through ``round`` itself)."""
    y = x * 1000.0
    out = np.rint(y) / 1000.0
    frac = y - np.floor(y)
    near = np.flatnonzero(np.abs(frac - 0.5) < 1e-6)
    for i in near.tolist():
        out[i] = round(float(x[i]), 3)
    return out


def decision_key(d: m.DescheduleDecision, t0: float, resolution_s: float) -> tuple[str, int, str, str]:
    """(strategy, tick number, namespace/pod, from_node): what the online/offline comparison compares."""
    return (d.strategy, math.floor((d.made_at - t0) / resolution_s + 1e-6), f"{d.pod.namespace}/{d.pod.name}",
            d.from_node)


def replace_settings(s: ActuatorSettings, **kw: Any) -> ActuatorSettings:
    return dataclasses.replace(s, **kw)
