"""The kubesim cluster model: plain Python state + a step function on a virtual clock.

Nothing here knows about HTTP.  Every object change is reported to the
``listeners`` as ``(event_type, resource, obj)`` after the object's
``rv`` (resourceVersion) has been bumped from the cluster-wide counter; the
server layer turns those into watch events.  Controllers (ReplicaSet, PDB,
Deployment status) and the scheduler run synchronously after each mutation and
on every tick, so the model is always consistent between calls.

Public API (backward compatible; additions marked *new*):

- ``Cluster(scenario, seed=None, retry_after_s=10, hpa=None, autoscaler=None)`` — *new* ``hpa`` /
  ``autoscaler`` switch the baseline controllers off (``False``) or on (default: HPA on for apps with
  ``hpa:``, the cluster-autoscaler model as the scenario's ``cluster_autoscaler.enabled``).
- ``step(dt=None)``, ``advance(seconds)``, ``evict``, ``delete_pod``, ``set_replicas``, ``update_node``,
  ``update_pod_meta``, ``update_deployment_meta``, ``add_node``, ``add_pdb``, *new* ``remove_node``.
- state: ``pods``, ``nodes``, ``deployments``, ``replicasets``, ``pdbs``, ``namespaces`` dicts, ``counters``
  (*new* keys: preemptions, hpa_scalings, scale_ups, nodes_added, nodes_removed, scale_down_blocked,
  autoscaler_evictions — pods the cluster-autoscaler model evicted to remove a node, placeholders apart in
  autoscaler_placeholder_evictions),
  ``listeners``, ``app_demand``.
- *new* per pod (last tick): ``Pod.cpi``, ``Pod.latency_ms``, ``Pod.unserved_cpu``, ``Pod.priority``.
- *new* ``sla`` — this tick's ``underprovisioned_pods``, ``unserved_cpu_cores`` and the running
  ``underprovisioned_pod_minutes``; ``accounting()`` — node-hours (total / per group), cost, ideal
  node-hours (the fewest nodes that fit all requests but placeholders', every tick: see ``_ideal_nodes_for``)
  and the SLA figures;
  ``status()`` carries both plus per-group node counts and the HPAs.
- *new* ``truth`` — interference ground truth: ``episodes`` (antagonist pod, node, start/end, intensity,
  victims with first/last seen) and ``pairs`` (victim, antagonist, node, episode, start, end).  Never
  rendered through the Kubernetes API.
- *new* ``hpa_status`` (per app: desired, reason, utilisation), ``upcoming`` (ordered nodes not yet joined),
  ``unneeded_since`` (autoscaler scale-down candidates).
- *new* ``update_deployment_template(ns, name, labels=, annotations=, affinity=)``: a changed pod template
  makes a new ReplicaSet and a rolling update (maxSurge / maxUnavailable 25 %); pods carry their
  ReplicaSet's template labels, annotations and ``affinity``. ``update_namespace_meta`` (namespace labels).
- *new* the scheduler scores preferred pod anti-affinity (``podAntiAffinity.preferredDuringScheduling...``,
  both the incoming pod's terms and matching existing pods' terms) like the default InterPodAffinity
  plugin (weight 2, normalised over the feasible nodes). Required (anti-)affinity is not modelled.

Performance: the per-tick usage model runs on numpy arrays rebuilt only after structural changes;
controllers reconcile only when something changed; listeners are called only if registered.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from kubetide.labels import selector_matches

from .scenario import AppSpec, DaemonSetSpec, HpaSpec, PDBSpec, Scenario, SpreadConstraint, Taint, Toleration

ZONE_LABEL = "topology.kubernetes.io/zone"
NODE_GROUP_LABEL = "kubesim.io/node-group"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
_ALNUM = "bcdfghjklmnpqrstvwxz2456789"

Listener = Callable[[str, str, object], None]


@dataclass(eq=False)
class Node:
    name: str
    uid: str
    zone: str
    group: str
    cpu: float  # allocatable cores
    memory: float  # allocatable bytes
    labels: dict[str, str]
    annotations: dict[str, str]
    taints: list[Taint]
    unschedulable: bool
    created: float
    rv: int = 0
    cpu_capacity: float = 0.0
    memory_capacity: float = 0.0
    usage_cpu: float = 0.0
    usage_memory: float = 0.0


# cpu.shares of a container without a CPU request (2 of 1024 per core), as a weight in cores
MIN_CPU_SHARE_CORES = 2 / 1024


def cfs_share(want: np.ndarray, request: np.ndarray, node: np.ndarray, room: np.ndarray, nnodes: int) -> np.ndarray:
    """The CPU each pod gets when its node's ``room`` (cores, per node index) is less than what its pods ``want``:
    the Linux CFS scheduler shares a contended CPU by cgroup weight (kubelet sets ``cpu.shares`` from the CPU
    request, :data:`MIN_CPU_SHARE_CORES` without one) — weighted max-min fairness: a pod wanting less than its
    weight's share of the room gets what it wants, and what it leaves is split over the others by weight
    (water-filling). So a pod within its request is not slowed by a neighbour bursting past its own (requests
    never exceed allocatable). ``want``, ``request``, ``node``: per pod, all on overcommitted nodes."""
    weight = np.maximum(request, MIN_CPU_SHARE_CORES)
    got = np.zeros(len(want))
    left = room.astype(float)  # a copy
    active = np.ones(len(want), dtype=bool)
    while active.any():
        wsum = np.bincount(node[active], weights=weight[active], minlength=nnodes)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.where(wsum > 0, np.maximum(left, 0.0) / wsum, 0.0)
        fair = level[node] * weight
        done = active & (want <= fair)
        if not done.any():
            got[active] = fair[active]
            break
        got[done] = want[done]
        left -= np.bincount(node[done], weights=want[done], minlength=nnodes)
        active &= ~done
    return got


@dataclass(eq=False)
class Pod:
    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    owner_kind: str
    owner_name: str
    owner_uid: str
    app: str | None  # app (Deployment) name or daemonset name
    cpu_request: float
    mem_request: float
    cpu_limit: float | None
    mem_limit: float | None
    tolerations: tuple[Toleration, ...]
    node_selector: dict[str, str]
    image: str
    created: float
    startup_s: float
    multiplier: float = 1.0
    node_name: str | None = None
    phase: str = "Pending"
    ready: bool = False
    scheduled_at: float | None = None
    ready_at: float | None = None  # when it became ready
    unschedulable_reason: str | None = None
    usage_cpu: float = 0.0
    usage_memory: float = 0.0
    rv: int = 0
    daemon: bool = False
    priority: int = 0
    spread: tuple[SpreadConstraint, ...] = ()
    affinity: dict | None = None  # the pod template's spec.affinity (JSON), from its ReplicaSet

    @property
    def anti_terms(self) -> tuple[AntiTerm, ...]:
        """Its preferred pod anti-affinity terms (parsed once; the affinity is fixed at creation)."""
        cached = self.__dict__.get("_anti_terms")
        if cached is None:
            cached = self.__dict__["_anti_terms"] = preferred_anti_terms(self.affinity, self.namespace)
        return cached

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def _tick_value(self, attr: str, default: float) -> float:
        c = self.__dict__.get("_cluster")
        slot = self.__dict__.get("_slot")
        if c is None or slot is None:
            return default
        arr = getattr(c, attr, None)
        if arr is None or slot >= len(arr) or slot >= len(c._P) or c._P[slot] is not self:
            return default
        return float(arr[slot])

    @property
    def cpi(self) -> float:
        """Cycles per instruction in the last tick (raised by co-located antagonists)."""
        return self._tick_value("_p_cpi", 1.0)

    @property
    def latency_ms(self) -> float:
        """Request latency in the last tick (0 while not Ready)."""
        return self._tick_value("_p_lat", 0.0)

    @property
    def unserved_cpu(self) -> float:
        """Demand (cores) this pod could not serve in the last tick."""
        return self._tick_value("_p_unserved", 0.0)

    def deletion_cost(self) -> int:
        try:
            return int(self.annotations.get(DELETION_COST, "0"))
        except ValueError:
            return 0


@dataclass(eq=False)
class ReplicaSet:
    name: str
    namespace: str
    uid: str
    hash: str
    deployment: Deployment
    created: float
    replicas: int
    rv: int = 0
    status: tuple = ()
    # its pod template (what its pods are created with): labels (without pod-template-hash), annotations,
    # spec.affinity; the containers, requests, tolerations ... come from the app spec
    template_labels: dict[str, str] = field(default_factory=dict)
    template_annotations: dict[str, str] = field(default_factory=dict)
    affinity: dict | None = None
    revision: int = 1


@dataclass(eq=False)
class Deployment:
    spec: AppSpec
    name: str
    namespace: str
    uid: str
    replicas: int
    created: float
    generation: int = 1
    rv: int = 0
    rs: ReplicaSet | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    status: tuple = ()
    old_rs: list[ReplicaSet] = field(default_factory=list)  # older ReplicaSets still being scaled down
    history: list[ReplicaSet] = field(default_factory=list)  # every ReplicaSet it ever had (rollback reuses)

    @property
    def selector(self) -> dict[str, str]:
        return {"app": self.name}

    @property
    def all_rs(self) -> list[ReplicaSet]:
        return [self.rs, *self.old_rs] if self.rs is not None else list(self.old_rs)


@dataclass(eq=False)
class PDB:
    name: str
    namespace: str
    uid: str
    selector: dict[str, str]
    min_available: int | str | None
    max_unavailable: int | str | None
    created: float
    generation: int = 1
    observed_generation: int = 0
    current_healthy: int = 0
    desired_healthy: int = 0
    disruptions_allowed: int = 0
    expected_pods: int = 0
    disrupted_pods: dict[str, float] = field(default_factory=dict)
    transition_time: float = 0.0
    rv: int = 0

    def matches(self, pod: Pod) -> bool:
        if pod.namespace != self.namespace or not self.selector:
            return False
        return all(pod.labels.get(k) == v for k, v in self.selector.items())


@dataclass(eq=False)
class HPA:
    """A HorizontalPodAutoscaler (autoscaling/v2, CPU utilisation) run by the baseline HPA controller."""

    name: str
    namespace: str
    uid: str
    spec: HpaSpec
    target: str  # Deployment name
    created: float
    rv: int = 0
    current_replicas: int = 0
    desired_replicas: int = 0
    current_utilization: int | None = None  # percent of requests
    current_average_cores: float | None = None
    last_scale_time: float | None = None
    reason: str = ""
    message: str = ""


@dataclass(eq=False)
class Namespace:
    name: str
    uid: str
    created: float
    rv: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # besides kubernetes.io/metadata.name
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AntiTerm:
    """One ``podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution`` term."""

    weight: int
    selector: str  # the labelSelector as canonical JSON (a cache key)
    topology_key: str
    namespaces: tuple[str, ...]


def preferred_anti_terms(affinity: dict | None, namespace: str) -> tuple[AntiTerm, ...]:
    """The preferred pod anti-affinity terms of a pod spec's ``affinity`` (its own namespace when the term
    names none; ``namespaceSelector`` is not modelled)."""
    if not affinity:
        return ()
    out = []
    anti = (affinity.get("podAntiAffinity") or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or []
    for t in anti:
        term = t.get("podAffinityTerm") or {}
        if not term.get("topologyKey") or term.get("labelSelector") is None:
            continue
        out.append(AntiTerm(int(t.get("weight") or 0), json.dumps(term["labelSelector"], sort_keys=True),
                            term["topologyKey"], tuple(term.get("namespaces") or (namespace,))))
    return tuple(out)


ROLLING_SURGE, ROLLING_UNAVAILABLE = 0.25, 0.25  # the Deployment default RollingUpdate (25 % / 25 %)


@dataclass(frozen=True)
class EvictionResult:
    """Outcome of an eviction, in apiserver terms (the server renders it as a Status)."""

    code: int  # 201, 404, 429, 500, 400
    reason: str = ""
    message: str = ""
    causes: tuple[dict, ...] = ()
    retry_after_s: int | None = None
    pod: Pod | None = None


def _scaled(value: int | str, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    pct = int(value.rstrip("%"))
    x = pct * total / 100.0
    return math.ceil(x) if round_up else math.floor(x)


class Cluster:
    """The simulated cluster. Build from a :class:`Scenario`; drive with :meth:`advance`."""

    def __init__(self, scenario: Scenario, *, seed: int | None = None, retry_after_s: int = 10,
                 hpa: bool | None = None, autoscaler: bool | None = None,
                 load_aware_weight: float | None = None):
        self.scenario = scenario
        # > 0: the scheduler also scores nodes by their measured CPU usage, like the Trimaran plugins
        # (LoadVariationRiskBalancing / TargetLoadPacking) fed by a load-watcher, e.g. kubetide's
        # (``kubetide collector --load-watcher-port``); 0 = the default scheduler (requests only).
        self.load_aware_weight = float(scenario.load_aware_weight if load_aware_weight is None
                                       else load_aware_weight)
        self.seed = scenario.seed if seed is None else seed
        self.rng = np.random.default_rng(self.seed)
        self.t = scenario.start.timestamp()
        self.tick = 0
        self.rv = 0
        self.retry_after_s = retry_after_s
        self.listeners: list[Listener] = []
        self.namespaces: dict[str, Namespace] = {}
        self.nodes: dict[str, Node] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.replicasets: dict[tuple[str, str], ReplicaSet] = {}
        self.pdbs: dict[tuple[str, str], PDB] = {}
        self.daemonsets: list[tuple[DaemonSetSpec, str]] = []
        self.app_demand: dict[tuple[str, str], float] = {}
        self.counters = {"evictions": 0, "pdb_refusals": 0, "deletions": 0, "scheduled": 0, "created": 0,
                         "preemptions": 0, "hpa_scalings": 0, "scale_ups": 0, "nodes_added": 0, "nodes_removed": 0,
                         "scale_down_blocked": 0, "autoscaler_evictions": 0, "autoscaler_placeholder_evictions": 0}
        self.pdb_controller_paused = False
        self._names: set[str] = set()
        # baseline controllers: HPA (apps with `hpa:`) and the cluster-autoscaler model (elastic groups)
        self.hpa_enabled = True if hpa is None else hpa
        self.autoscaler_enabled = scenario.autoscaler.enabled if autoscaler is None else autoscaler
        self.groups = {g.name: g for g in scenario.node_groups}
        self.hpa_status: dict[tuple[str, str], dict] = {}
        self.hpas: dict[tuple[str, str], HPA] = {}
        self.upcoming: list[dict] = []  # nodes ordered by the autoscaler, not yet joined
        self.unneeded_since: dict[str, float] = {}
        self._ca_last_scan = -math.inf
        self._ca_last_add = -math.inf
        self._node_seq = 0
        self._drain_retry: dict[str, float] = {}
        # accounting and ground truth
        self.sla = {"underprovisioned_pods": 0, "unserved_cpu_cores": 0.0, "underprovisioned_pod_minutes": 0.0}
        self.node_seconds: dict[str, float] = {}
        self.ideal_node_seconds = 0.0
        self._ideal_nodes = 0
        self._episodes: list[dict] = []
        self._open_eps: dict[str, dict] = {}
        self._struct_dirty = True
        self._needs_reconcile = False
        self._reconciling = False
        self._preempted = False
        # rv at the end of the last reconcile whose ReplicaSet controller and scheduler changed nothing: see
        # update_pod_meta (None: that reconcile changed something, or none ran yet)
        self._settled: int | None = None
        self._n_not_ready = 0
        self._n_pending = 0
        self._dirty_apps: set | None = None  # apps whose pods changed since the PDBs were recomputed
        self._status_dirty: set = set()  # apps whose pods changed since the Deployment status
        self._build()

    # ------------------------------------------------------------------ basics

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def _uid(self) -> str:
        return str(uuid.UUID(bytes=self.rng.bytes(16), version=4))

    def _suffix(self, n: int = 5) -> str:
        idx = self.rng.integers(0, len(_ALNUM), size=n)
        return "".join(_ALNUM[i] for i in idx)

    def _emit(self, etype: str, resource: str, obj) -> None:
        if resource in ("pods", "nodes"):
            self._struct_dirty = True
            if resource == "pods":
                self._status_dirty.add((obj.namespace, obj.app))
                if self._dirty_apps is not None:
                    self._dirty_apps.add((obj.namespace, obj.app))
            if not self._reconciling:
                self._needs_reconcile = True
        self.rv += 1
        obj.rv = self.rv
        for listener in self.listeners:
            listener(etype, resource, obj)

    # ------------------------------------------------------------------ construction

    def _build(self) -> None:
        sc = self.scenario
        t0 = self.t - 3600.0
        for ns in sc.namespaces:
            self.namespaces[ns] = Namespace(ns, self._uid(), t0 - 86400)
            self._emit("ADDED", "namespaces", self.namespaces[ns])
        for spec in sc.nodes:
            self.add_node(spec.name, spec.zone, spec.group, spec.cpu, spec.memory, spec.labels,
                          list(spec.taints), spec.unschedulable, created=t0 - 86400, reconcile=False)
        for ds in sc.daemonsets:
            self.daemonsets.append((ds, self._uid()))
        for node in self.nodes.values():
            self._ensure_daemon_pods(node, ready=True)
        # deployments and their pods: pinned pods first (so the scheduler sees them), then the rest
        pending: list[tuple[Pod, AppSpec]] = []
        for app in sc.apps:
            dep = self._create_deployment(app, t0)
            for i in range(app.replicas):
                ov = app.override(i)
                pod = self._new_pod(dep, created=t0 + i, multiplier=ov.usage_multiplier if ov else 1.0)
                if ov and ov.deletion_cost is not None:
                    pod.annotations[DELETION_COST] = str(ov.deletion_cost)
                if ov and ov.node:
                    self._bind(pod, self.nodes[ov.node], at=t0, ready=True)
                else:
                    pending.append((pod, app))
        ctx = self._sched_ctx()
        for pod, _app in sorted(pending, key=lambda x: -x[0].priority):
            i = ctx.select(pod)
            if i is not None:
                self._bind(pod, ctx.nodes[i], at=t0, ready=True)
                ctx.bind(pod, i)
        for pod in list(self.pods.values()):
            self._emit("ADDED", "pods", pod)
        for app in sc.apps:
            for pspec in app.pdbs:
                self.add_pdb(app.namespace, pspec, {"app": app.name}, reconcile=False)
            if app.hpa is not None and self.hpa_enabled:
                h = HPA(app.name, app.namespace, self._uid(), app.hpa, app.name, t0,
                        current_replicas=app.replicas, desired_replicas=app.replicas)
                self.hpas[(app.namespace, app.name)] = h
                self._emit("ADDED", "horizontalpodautoscalers", h)
        self.reconcile()
        self._update_usage(noise=False)

    def add_node(self, name: str, zone: str, group: str, cpu: float, memory: float,
                 labels: dict[str, str] | None = None, taints: list[Taint] | None = None,
                 unschedulable: bool = False, *, created: float | None = None,
                 reconcile: bool = True) -> Node:
        all_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            ZONE_LABEL: zone,
            "topology.kubernetes.io/region": "kubesim",
            NODE_GROUP_LABEL: group,
            "node.kubernetes.io/instance-type": f"sim-{int(cpu)}cpu",
            **(labels or {}),
        }
        node = Node(name, self._uid(), zone, group, cpu, memory, all_labels, {}, list(taints or []),
                    unschedulable, self.t if created is None else created,
                    cpu_capacity=cpu, memory_capacity=memory + 2**30)
        self.nodes[name] = node
        self._emit("ADDED", "nodes", node)
        if reconcile:
            self._ensure_daemon_pods(node, ready=False)
            self.reconcile()
        return node

    def _create_deployment(self, app: AppSpec, created: float) -> Deployment:
        dep = Deployment(app, app.name, app.namespace, self._uid(), app.replicas, created,
                         labels={"app": app.name, **app.labels})
        phash = _template_hash(f"{app.namespace}/{app.name}/{app.image}")
        rs = ReplicaSet(f"{app.name}-{phash}", app.namespace, self._uid(), phash, dep, created, app.replicas,
                        template_labels={"app": app.name, **app.labels}, template_annotations=dict(app.annotations))
        dep.rs = rs
        dep.history.append(rs)
        self.deployments[(app.namespace, app.name)] = dep
        self.replicasets[(rs.namespace, rs.name)] = rs
        self._emit("ADDED", "deployments", dep)
        self._emit("ADDED", "replicasets", rs)
        return dep

    def _unique_name(self, prefix: str) -> str:
        while True:
            name = f"{prefix}-{self._suffix()}"
            if name not in self._names:
                self._names.add(name)
                return name

    def _new_pod(self, dep: Deployment, *, created: float, multiplier: float = 1.0) -> Pod:
        app, rs = dep.spec, dep.rs
        assert rs is not None
        pod = Pod(
            name=self._unique_name(rs.name),
            namespace=app.namespace,
            uid=self._uid(),
            labels={**rs.template_labels, "pod-template-hash": rs.hash},
            annotations={},
            owner_kind="ReplicaSet",
            owner_name=rs.name,
            owner_uid=rs.uid,
            app=app.name,
            cpu_request=app.cpu_request,
            mem_request=app.mem_request,
            cpu_limit=app.cpu_limit,
            mem_limit=app.mem_limit,
            tolerations=app.tolerations,
            node_selector=dict(app.node_selector),
            image=app.image,
            created=created,
            startup_s=app.startup_s,
            multiplier=multiplier,
            priority=app.priority,
            spread=app.topology_spread,
            affinity=rs.affinity,
        )
        pod.annotations.update(rs.template_annotations)
        self.pods[pod.key] = pod
        self.counters["created"] += 1
        return pod

    def _ensure_daemon_pods(self, node: Node, *, ready: bool) -> None:
        for ds, ds_uid in self.daemonsets:
            if any(p.daemon and p.app == ds.name and p.node_name == node.name for p in self.pods.values()):
                continue
            pod = Pod(
                name=self._unique_name(ds.name),
                namespace=ds.namespace,
                uid=self._uid(),
                labels={"k8s-app": ds.name, "controller-revision-hash": "1"},
                annotations={},
                owner_kind="DaemonSet",
                owner_name=ds.name,
                owner_uid=ds_uid,
                app=ds.name,
                cpu_request=ds.cpu_request,
                mem_request=ds.mem_request,
                cpu_limit=None,
                mem_limit=None,
                tolerations=(Toleration(operator="Exists"),),
                node_selector={},
                image=f"registry.k8s.io/{ds.name}:v1.30.0",
                created=node.created if ready else self.t,
                startup_s=0.0 if ready else 5.0,
                daemon=True,
            )
            pod.usage_cpu, pod.usage_memory = ds.usage_cpu, ds.usage_memory
            self.pods[pod.key] = pod
            self._bind(pod, node, at=pod.created, ready=ready)
            if not ready:
                self._emit("ADDED", "pods", pod)

    # ------------------------------------------------------------------ scheduler

    def requested(self, node: Node) -> tuple[float, float]:
        cpu = mem = 0.0
        for p in self.pods.values():
            if p.node_name == node.name and p.phase in ("Pending", "Running"):
                cpu += p.cpu_request
                mem += p.mem_request
        return cpu, mem

    def requested_all(self) -> dict[str, tuple[float, float]]:
        acc = {n: [0.0, 0.0] for n in self.nodes}
        for p in self.pods.values():
            if p.node_name in acc and p.phase in ("Pending", "Running"):
                a = acc[p.node_name]
                a[0] += p.cpu_request
                a[1] += p.mem_request
        return {n: (a[0], a[1]) for n, a in acc.items()}

    def pods_on(self, node_name: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.node_name == node_name]

    def _feasible(self, pod: Pod, node: Node, requested: dict[str, tuple[float, float]]) -> str | None:
        if node.unschedulable:
            return "node(s) were unschedulable"
        why = _static_reason(pod, node)
        if why is not None:
            return why
        cpu, mem = requested[node.name]
        if cpu + pod.cpu_request > node.cpu + 1e-9:
            return "Insufficient cpu"
        if mem + pod.mem_request > node.memory + 1e-9:
            return "Insufficient memory"
        return None

    def _sched_ctx(self, exclude: Iterable[str] = ()) -> _SchedCtx:
        return _SchedCtx(self, set(exclude))

    def _select_node(self, pod: Pod, ctx: _SchedCtx | None = None) -> Node | None:
        """Default-scheduler-like: filter (unschedulable, taints, node selector, requests, topology spread
        DoNotSchedule), then score least-allocated + spread + PreferNoSchedule taint penalty; ties go to the
        lexicographically first node name. Spread: a pod with topology spread constraints is scored by its
        ScheduleAnyway ones only, like PodTopologySpread (:func:`_soft_spread_score`, weight 2); a pod without
        any by a default zone/node spread of its app."""
        ctx = ctx or self._sched_ctx()
        idx = ctx.select(pod)
        return None if idx is None else ctx.nodes[idx]

    def _bind(self, pod: Pod, node: Node, *, at: float, ready: bool) -> None:
        pod.node_name = node.name
        pod.phase = "Running"
        pod.scheduled_at = at
        pod.unschedulable_reason = None
        if ready:
            pod.ready = True
            pod.ready_at = at
        self.counters["scheduled"] += 1

    def _preempt_for(self, pod: Pod, ctx: _SchedCtx) -> Node | None:
        """Default preemption (simplified): on a node passing the non-resource filters, remove the fewest
        lower-priority pods (lowest priority first) so the pod fits; prefer the node whose most important
        victim has the lowest priority, then the fewest victims."""
        lower = [p for p in self.pods.values() if p.node_name and p.priority < pod.priority and not p.daemon]
        if not lower:
            return None
        by_node: dict[str, list[Pod]] = {}
        for p in lower:
            by_node.setdefault(p.node_name or "", []).append(p)
        mask = ctx.static_mask(pod) & ~ctx.unsched
        best = None
        for name, cands in by_node.items():
            i = ctx.index.get(name)
            if i is None or not mask[i]:
                continue
            free_cpu = ctx.alloc_cpu[i] - ctx.req_cpu[i]
            free_mem = ctx.alloc_mem[i] - ctx.req_mem[i]
            victims = []
            for v in sorted(cands, key=lambda p: (p.priority, -p.created, p.name)):
                if free_cpu >= pod.cpu_request - 1e-9 and free_mem >= pod.mem_request - 1e-9:
                    break
                victims.append(v)
                free_cpu += v.cpu_request
                free_mem += v.mem_request
            if free_cpu < pod.cpu_request - 1e-9 or free_mem < pod.mem_request - 1e-9:
                continue
            key = (max((v.priority for v in victims), default=-(2**31)), len(victims), name)
            if best is None or key < best[0]:
                best = (key, i, victims)
        if best is None:
            return None
        _, i, victims = best
        for v in victims:
            ctx.unbind(v)
            self._remove_pod(v)
            self.counters["preemptions"] += 1
        self._preempted = True
        return ctx.nodes[i]

    def schedule_pending(self) -> int:
        placed = 0
        pending = [p for p in self.pods.values() if p.node_name is None and p.phase == "Pending"]
        if not pending:
            return 0
        ctx = self._sched_ctx()
        lowest: int | None = None
        failed: set[tuple] = set()  # preemption shapes that found no victims in this batch
        for pod in sorted(pending, key=lambda p: (-p.priority, p.created, p.name)):
            if pod.node_name is None and pod.key in self.pods:
                i = ctx.select(pod)
                node = ctx.nodes[i] if i is not None else None
                if node is None:
                    if lowest is None:
                        lowest = self._min_priority()
                    shape = (pod.priority, pod.cpu_request, pod.mem_request, pod.tolerations,
                             tuple(pod.node_selector.items()))
                    if pod.priority > lowest and shape not in failed:
                        node = self._preempt_for(pod, ctx)
                        if node is None:
                            failed.add(shape)
                if node is not None:
                    self._bind(pod, node, at=self.t, ready=pod.startup_s <= 0)
                    ctx.bind(pod, ctx.index[node.name])
                    self._emit("MODIFIED", "pods", pod)
                    placed += 1
        return placed

    def _min_priority(self) -> int:
        return min((p.priority for p in self.pods.values() if p.node_name), default=0)

    # ------------------------------------------------------------------ controllers

    def _by_owner(self) -> dict[str, list[Pod]]:
        idx: dict[str, list[Pod]] = {}
        for p in self.pods.values():
            idx.setdefault(p.owner_uid, []).append(p)
        return idx

    @staticmethod
    def _victim_rank(p: Pod, colocated: int = 0) -> tuple:
        """ReplicaSet's ActivePodsWithRanks ordering (simplified): earlier sorts first = deleted first —
        unassigned, Pending, not ready, lower pod-deletion-cost, more sibling pods on the same node
        (doubled-up), ready for less time, newer."""
        phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(p.phase, 0)
        return (
            0 if p.node_name is None else 1,
            phase_rank,
            1 if p.ready else 0,
            p.deletion_cost(),
            -colocated,
            -(p.ready_at or 0.0),
            -p.created,
            p.name,
        )

    def _reconcile_replicasets(self) -> dict[str, list[Pod]] | None:
        """Create/delete pods to match each ReplicaSet; returns the owner index if nothing changed."""
        by_owner = self._by_owner()
        changed = False
        for dep in self.deployments.values():
            rs = dep.rs
            assert rs is not None
            if dep.old_rs:
                changed |= self._roll(dep, by_owner)
                continue
            if rs.replicas != dep.replicas:
                rs.replicas = dep.replicas
                self._emit("MODIFIED", "replicasets", rs)
            pods = by_owner.get(rs.uid, [])
            if len(pods) < rs.replicas:
                changed = True
                for _ in range(rs.replicas - len(pods)):
                    pod = self._new_pod(dep, created=self.t)
                    self._emit("ADDED", "pods", pod)
            elif len(pods) > rs.replicas:
                changed = True
                on_node: dict[str | None, int] = {}
                for p in pods:
                    on_node[p.node_name] = on_node.get(p.node_name, 0) + 1
                ranked = sorted(pods, key=lambda p: self._victim_rank(p, on_node[p.node_name] if p.node_name else 0))
                for victim in ranked[: len(pods) - rs.replicas]:
                    self._remove_pod(victim)
        return None if changed else by_owner

    def _roll(self, dep: Deployment, by_owner: dict[str, list[Pod]]) -> bool:
        """One step of a RollingUpdate (maxSurge / maxUnavailable 25 %, as the Deployment controller's
        defaults): create new-template pods while the total stays within replicas + maxSurge, remove old
        ones (not-ready first) while at least replicas - maxUnavailable pods stay ready. The step runs
        again whenever a pod changes (a new pod becoming Ready lets the next old one go)."""
        rs = dep.rs
        assert rs is not None
        want = dep.replicas
        surge = math.ceil(want * ROLLING_SURGE)
        unavailable = math.floor(want * ROLLING_UNAVAILABLE)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        new = list(by_owner.get(rs.uid, []))
        old = [p for o in dep.old_rs for p in by_owner.get(o.uid, [])]
        changed = False
        if len(new) > want:  # scaled down during the rollout
            for victim in sorted(new, key=self._victim_rank)[: len(new) - want]:
                self._remove_pod(victim)
                new.remove(victim)
            changed = True
        min_ready = want - unavailable
        while True:
            progress = False
            target = min(want, len(new) + max(0, want + surge - len(new) - len(old)))
            for _ in range(target - len(new)):
                pod = self._new_pod(dep, created=self.t)
                self._emit("ADDED", "pods", pod)
                new.append(pod)
                progress = True
            new_unready = sum(1 for p in new if not p.ready)
            may_remove = max(0, len(new) + len(old) - min_ready - new_unready)
            ready = sum(1 for p in new + old if p.ready)
            for victim in sorted(old, key=self._victim_rank):  # unassigned / not ready first
                if may_remove <= 0:
                    break
                if victim.ready:
                    if ready - 1 < min_ready:
                        break
                    ready -= 1
                self._remove_pod(victim)
                old.remove(victim)
                may_remove -= 1
                progress = True
            changed |= progress
            if not progress:
                break
        if rs.replicas != len(new):
            rs.replicas = len(new)
            self._emit("MODIFIED", "replicasets", rs)
        left = {o.uid: 0 for o in dep.old_rs}
        for p in old:
            left[p.owner_uid] += 1
        for o in list(dep.old_rs):
            if o.replicas != left[o.uid]:
                o.replicas = left[o.uid]
                o.status = (left[o.uid], sum(1 for p in old if p.owner_uid == o.uid and p.ready), dep.generation)
                self._emit("MODIFIED", "replicasets", o)
            if left[o.uid] == 0:
                dep.old_rs.remove(o)
        if not dep.old_rs:
            self._status_dirty.add((dep.namespace, dep.name))
        return changed

    def _recompute_pdb(self, pdb: PDB, by_label: dict[tuple[str, str, str], list[Pod]] | None = None) -> None:
        if by_label is not None and pdb.selector:
            k, v = next(iter(pdb.selector.items()))
            candidates: Iterable[Pod] = by_label.get((pdb.namespace, k, v), [])
        else:
            candidates = self.pods.values()
        pods = [p for p in candidates if pdb.matches(p)]
        for name in list(pdb.disrupted_pods):
            if (pdb.namespace, name) not in self.pods or self.t - pdb.disrupted_pods[name] > 120:
                del pdb.disrupted_pods[name]
        healthy = sum(1 for p in pods if p.ready and p.name not in pdb.disrupted_pods)
        owners = {}
        for p in pods:
            if p.owner_kind == "ReplicaSet":
                rs = self.replicasets.get((p.namespace, p.owner_name))
                if rs is not None:  # the scale of the top controller (old and new ReplicaSets alike)
                    owners[rs.deployment.uid] = rs.deployment.replicas
        controllers_scale = sum(owners.values())
        if pdb.max_unavailable is not None:
            expected = controllers_scale
            desired = max(0, expected - _scaled(pdb.max_unavailable, expected, True))
        elif isinstance(pdb.min_available, int):
            expected = len(pods)
            desired = pdb.min_available
        else:
            expected = controllers_scale
            desired = _scaled(pdb.min_available or 0, expected, True)
        allowed = max(0, healthy - desired)
        if expected <= 0:
            allowed = 0
        new = (healthy, desired, allowed, expected, pdb.generation)
        old = (pdb.current_healthy, pdb.desired_healthy, pdb.disruptions_allowed, pdb.expected_pods,
               pdb.observed_generation)
        if new != old:
            if (allowed > 0) != (pdb.disruptions_allowed > 0) or pdb.observed_generation == 0:
                pdb.transition_time = self.t
            (pdb.current_healthy, pdb.desired_healthy, pdb.disruptions_allowed, pdb.expected_pods,
             pdb.observed_generation) = new
            self._emit("MODIFIED", "poddisruptionbudgets", pdb)

    def _deployment_status(self, dep: Deployment, by_owner: dict[str, list[Pod]]) -> tuple:
        assert dep.rs is not None
        pods = [p for rs in dep.all_rs for p in by_owner.get(rs.uid, [])]
        ready = sum(1 for p in pods if p.ready)
        updated = len(by_owner.get(dep.rs.uid, []))
        return (len(pods), ready, dep.generation, updated)

    def reconcile(self, *, settled: bool = False) -> None:
        """Run the controllers and the scheduler until the model is consistent.

        ``settled``: the ReplicaSet controller and the scheduler are known to have nothing to do (see
        :meth:`update_pod_meta`); only the PDB and status controllers run."""
        self._reconciling = True
        try:
            self._reconcile(settled)
        finally:
            self._reconciling = False
            self._needs_reconcile = self._preempted
            self._preempted = False

    def _reconcile(self, settled: bool = False) -> None:
        rv0 = self.rv
        by_owner = None
        if not settled:
            by_owner = self._reconcile_replicasets()
            self.schedule_pending()  # binds pods (no owner changes) or preempts (then the next reconcile sees it)
        # every change the ReplicaSet controller or the scheduler makes is emitted (pods added, bound, removed,
        # ReplicaSets scaled): none means that, until another change, running them again changes nothing
        settled = self.rv == rv0 and not self._preempted
        if not self.pdb_controller_paused and self.pdbs:
            dirty = self._dirty_apps
            todo = [pdb for pdb in self.pdbs.values()
                    if not (dirty is not None and not pdb.disrupted_pods and pdb.observed_generation == pdb.generation
                            and len(pdb.selector) == 1 and (pdb.namespace, pdb.selector.get("app")) not in dirty)]
            if todo:
                # index pods by (namespace, key, value) for the label keys PDB selectors use
                keys = {k for pdb in todo for k in pdb.selector}
                by_label: dict[tuple[str, str, str], list[Pod]] = {}
                for p in self.pods.values():
                    for k in keys:
                        v = p.labels.get(k)
                        if v is not None:
                            by_label.setdefault((p.namespace, k, v), []).append(p)
                for pdb in todo:
                    self._recompute_pdb(pdb, by_label)
            self._dirty_apps = set()
        if self._preempted:
            by_owner = None
        changed_apps, self._status_dirty = self._status_dirty, set()
        for dep in self.deployments.values():
            assert dep.rs is not None
            if ((dep.namespace, dep.name) not in changed_apps
                    and dep.status and dep.rs.status and dep.status[2] == dep.generation):
                continue  # none of its pods changed since the last status
            if by_owner is None:
                by_owner = self._by_owner()
            st = self._deployment_status(dep, by_owner)
            rs_st = (st[3], sum(1 for p in by_owner.get(dep.rs.uid, []) if p.ready), dep.generation)
            if rs_st != dep.rs.status:
                dep.rs.status = rs_st
                self._emit("MODIFIED", "replicasets", dep.rs)
            if st != dep.status:
                dep.status = st
                self._emit("MODIFIED", "deployments", dep)
        self._settled = self.rv if settled else None

    # ------------------------------------------------------------------ mutations (API verbs)

    def add_pdb(self, namespace: str, spec: PDBSpec, selector: dict[str, str], *,
                reconcile: bool = True) -> PDB:
        pdb = PDB(spec.name, namespace, self._uid(), dict(selector), spec.min_available,
                  spec.max_unavailable, created=self.t - 3600.0 if self.tick == 0 else self.t)
        self.pdbs[(namespace, spec.name)] = pdb
        self._emit("ADDED", "poddisruptionbudgets", pdb)
        if reconcile:
            self.reconcile()
        return pdb

    def _remove_pod(self, pod: Pod) -> None:
        self.pods.pop(pod.key, None)
        self.counters["deletions"] += 1
        self._emit("DELETED", "pods", pod)

    def delete_pod(self, namespace: str, name: str) -> Pod | None:
        pod = self.pods.get((namespace, name))
        if pod is None:
            return None
        self._remove_pod(pod)
        self.reconcile()
        return pod

    def evict(self, namespace: str, name: str, *, dry_run: bool = False) -> EvictionResult:
        """The Eviction subresource, following kube-apiserver's eviction.go."""
        return self._evict_impl(namespace, name, dry_run=dry_run)

    def _evict_impl(self, namespace: str, name: str, *, dry_run: bool = False) -> EvictionResult:
        # the cluster-autoscaler model drains through here, so wrappers of ``evict`` see only API callers
        pod = self.pods.get((namespace, name))
        if pod is None:
            return EvictionResult(404, "NotFound", f'pods "{name}" not found')
        if pod.phase in ("Pending", "Succeeded", "Failed"):
            if not dry_run:
                self._remove_pod(pod)
                self.counters["evictions"] += 1
                self.reconcile()
            return EvictionResult(201, pod=pod)
        pdbs = [p for p in self.pdbs.values() if p.matches(pod)]
        if len(pdbs) > 1:
            return EvictionResult(
                500, "", "This pod has more than one PodDisruptionBudget, which the eviction subresource "
                "does not support.")
        if pdbs:
            pdb = pdbs[0]
            skip_decrement = (not pod.ready and pdb.current_healthy >= pdb.desired_healthy
                              and pdb.desired_healthy > 0)
            if not skip_decrement:
                if pdb.observed_generation < pdb.generation:
                    self.counters["pdb_refusals"] += 1
                    return EvictionResult(
                        429, "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        ({"reason": "DisruptionBudget",
                          "message": f"The disruption budget {pdb.name} is still being processed by the server."},),
                        retry_after_s=10)
                if pdb.disruptions_allowed <= 0:
                    self.counters["pdb_refusals"] += 1
                    return EvictionResult(
                        429, "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        ({"reason": "DisruptionBudget",
                          "message": f"The disruption budget {pdb.name} needs {pdb.desired_healthy} healthy "
                                     f"pods and has {pdb.current_healthy} currently"},),
                        retry_after_s=self.retry_after_s)
                if dry_run:
                    return EvictionResult(201, pod=pod)
                pdb.disruptions_allowed -= 1
                pdb.disrupted_pods[pod.name] = self.t
                self._emit("MODIFIED", "poddisruptionbudgets", pdb)
        if dry_run:
            return EvictionResult(201, pod=pod)
        self._remove_pod(pod)
        self.counters["evictions"] += 1
        self.reconcile()
        return EvictionResult(201, pod=pod)

    def set_replicas(self, namespace: str, name: str, replicas: int) -> Deployment | None:
        dep = self.deployments.get((namespace, name))
        if dep is None:
            return None
        if replicas != dep.replicas:
            self._set_replicas(dep, replicas)
            self.reconcile()
        return dep

    def _set_replicas(self, dep: Deployment, replicas: int) -> None:
        dep.replicas = replicas
        dep.generation += 1
        if self._dirty_apps is not None:
            self._dirty_apps.add((dep.namespace, dep.name))
        self._status_dirty.add((dep.namespace, dep.name))
        self._needs_reconcile = True
        self._emit("MODIFIED", "deployments", dep)

    def update_node(self, name: str, *, labels: dict | None = None, annotations: dict | None = None,
                    taints: list[Taint] | None = None, unschedulable: bool | None = None) -> Node | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        if labels is not None:
            node.labels = labels
        if annotations is not None:
            node.annotations = annotations
        if taints is not None:
            node.taints = taints
        if unschedulable is not None:
            node.unschedulable = unschedulable
        self._emit("MODIFIED", "nodes", node)
        self.reconcile()
        return node

    def update_pod_meta(self, namespace: str, name: str, *, labels: dict | None = None,
                        annotations: dict | None = None) -> Pod | None:
        pod = self.pods.get((namespace, name))
        if pod is None:
            return None
        # Annotations are read by no controller here but the ReplicaSet's scale-in ranking (pod-deletion-cost),
        # which only runs on a ReplicaSet with more pods than replicas. So when the last reconcile found nothing
        # for the ReplicaSet controller and the scheduler to do and nothing changed since (no event: every change
        # to what they read — pods, nodes, replicas — is one; the clock and the measured usage only move the
        # scores of nodes a pod could go to, and none could), an annotation alone leaves them nothing to do
        # either: the reconcile runs the PDB and status controllers only (the same events). Each pod of an
        # ``annotate-pods`` decision or of a scale-in costs one full reconcile otherwise.
        settled = (labels is None and not self._reconciling and not self._preempted
                   and self._settled == self.rv)
        if labels is not None:
            pod.labels = labels
            self._dirty_apps = None
        if annotations is not None:
            pod.annotations = annotations
        struct_dirty = self._struct_dirty
        self._emit("MODIFIED", "pods", pod)
        if labels is None:
            # the per-pod usage arrays (and what reads them while they are current) use no annotation: an
            # annotation alone does not make them stale (each one cost a rebuild at the next step)
            self._struct_dirty = struct_dirty
        self.reconcile(settled=settled)
        return pod

    def update_deployment_meta(self, namespace: str, name: str, *, labels: dict | None = None,
                               annotations: dict | None = None) -> Deployment | None:
        dep = self.deployments.get((namespace, name))
        if dep is None:
            return None
        if labels is not None:
            dep.labels = labels
        if annotations is not None:
            dep.annotations = annotations
        self._emit("MODIFIED", "deployments", dep)
        return dep

    def update_namespace_meta(self, name: str, *, labels: dict | None = None,
                              annotations: dict | None = None) -> Namespace | None:
        ns = self.namespaces.get(name)
        if ns is None:
            return None
        if labels is not None:
            ns.labels = {k: v for k, v in labels.items() if k != "kubernetes.io/metadata.name"}
        if annotations is not None:
            ns.annotations = annotations
        self._emit("MODIFIED", "namespaces", ns)
        return ns

    def update_deployment_template(self, namespace: str, name: str, *, labels: dict[str, str],
                                   annotations: dict[str, str], affinity: dict | None) -> Deployment | None:
        """A changed pod template (labels, annotations, spec.affinity): like the Deployment controller, a new
        ReplicaSet (pod-template-hash from the template; an older ReplicaSet with the same template is reused,
        as in a rollback) and a rolling update from the old pods to new ones. An unchanged template does
        nothing (no new generation, no rollout)."""
        dep = self.deployments.get((namespace, name))
        if dep is None:
            return None
        rs = dep.rs
        assert rs is not None
        labels = {k: v for k, v in labels.items() if k != "pod-template-hash"}
        affinity = affinity or None
        if (labels, annotations, affinity) == (rs.template_labels, rs.template_annotations, rs.affinity):
            return dep
        app = dep.spec
        raw = json.dumps([namespace, name, app.image, labels, annotations, affinity], sort_keys=True)
        phash = _template_hash(raw)
        revision = max(r.revision for r in dep.history) + 1
        new = next((r for r in dep.history if r.hash == phash), None)
        if new is None:
            new = ReplicaSet(f"{name}-{phash}", namespace, self._uid(), phash, dep, self.t, 0,
                             template_labels=dict(labels), template_annotations=dict(annotations),
                             affinity=affinity, revision=revision)
            dep.history.append(new)
            self.replicasets[(namespace, new.name)] = new
            self._emit("ADDED", "replicasets", new)
        else:
            new.revision = revision
            if new in dep.old_rs:
                dep.old_rs.remove(new)
        dep.old_rs.insert(0, rs)
        dep.rs = new
        dep.generation += 1
        self._status_dirty.add((namespace, name))
        if self._dirty_apps is not None:
            self._dirty_apps.add((namespace, name))
        self._needs_reconcile = True
        self._emit("MODIFIED", "deployments", dep)
        self.reconcile()
        return dep

    # ------------------------------------------------------------------ workload model

    def demand(self, app: AppSpec, t: float, noise: bool = True) -> float:
        """The app's total CPU demand (cores) at ``t`` from its periodic shape (tide, spikes, weekly);
        random-walk and burst state are applied on top by the tick (see :meth:`_demands`)."""
        d = app.demand
        hour = (t % 86400.0) / 3600.0
        r = d.tide_ratio
        level = d.cpu * (1.0 + (r - 1.0) / (r + 1.0) * math.cos(2 * math.pi * (hour - d.peak_hour) / 24.0))
        for s in d.all_spikes:
            minute = (t % (s.every_h * 3600.0)) / 60.0
            if s.at_min <= minute < s.at_min + s.duration_min:
                level *= s.factor
        if d.weekend_factor != 1.0 and datetime.fromtimestamp(t, UTC).weekday() >= 5:
            level *= d.weekend_factor
        if noise and d.noise > 0:
            level *= max(0.0, 1.0 + d.noise * float(self.rng.standard_normal()))
        return max(0.0, level)

    def _app_arrays(self) -> None:
        """Per-app parameter arrays (rebuilt when the set of deployments changes)."""
        deps = list(self.deployments.values())
        self._deps = deps
        self._dep_index = {(d.namespace, d.name): i for i, d in enumerate(deps)}
        self._dep_keys = [(d.namespace, d.name) for d in deps]
        specs = [d.spec for d in deps]
        dm = [s.demand for s in specs]
        self._a_cpu = np.array([x.cpu for x in dm], dtype=float)
        r = np.array([x.tide_ratio for x in dm], dtype=float)
        self._a_amp = (r - 1.0) / (r + 1.0)
        self._a_peak = np.array([x.peak_hour for x in dm], dtype=float)
        self._a_noise = np.array([x.noise for x in dm], dtype=float)
        self._a_weekend = np.array([x.weekend_factor for x in dm], dtype=float)
        self._a_spikes = [(i, s) for i, x in enumerate(dm) for s in x.all_spikes]
        self._a_rw = np.array([x.pattern == "random_walk" for x in dm], dtype=bool)
        self._a_antag = np.array([s.antagonist is not None for s in specs], dtype=bool)
        self._a_vol = np.array([x.volatility for x in dm], dtype=float)
        self._a_burst = [(i, x.bursts) for i, x in enumerate(dm) if x.bursts is not None and x.bursts.rate_per_h > 0]
        if not hasattr(self, "_rw_state") or len(self._rw_state) != len(deps):
            self._rw_state = np.zeros(len(deps))
            self._burst_until = np.zeros(len(deps))
        self._apps_n = len(deps)

    def _demands(self, t: float, dt: float, noise: bool = True) -> np.ndarray:
        """All apps' demand at ``t`` as one vector (same shape as :meth:`demand`, plus random walk/bursts)."""
        hour = (t % 86400.0) / 3600.0
        level = self._a_cpu * (1.0 + self._a_amp * np.cos(2 * np.pi * (hour - self._a_peak) / 24.0))
        for i, s in self._a_spikes:
            minute = (t % (s.every_h * 3600.0)) / 60.0
            if s.at_min <= minute < s.at_min + s.duration_min:
                level[i] *= s.factor
        if datetime.fromtimestamp(t, UTC).weekday() >= 5:
            level *= self._a_weekend
        if noise:
            if self._a_rw.any():
                # mean-reverting random walk of log-demand (time constant 6 h)
                step = self.rng.standard_normal(self._apps_n) * self._a_vol * math.sqrt(dt / 3600.0)
                self._rw_state = np.where(self._a_rw, self._rw_state * (1.0 - dt / 21600.0) + step, 0.0)
            for i, b in self._a_burst:
                if t >= self._burst_until[i] and self.rng.random() < b.rate_per_h * dt / 3600.0:
                    self._burst_until[i] = t + b.duration_min * 60.0
            if self._a_noise.any():
                level *= np.maximum(0.0, 1.0 + self._a_noise * self.rng.standard_normal(self._apps_n))
        level = level * np.exp(self._rw_state)
        for i, b in self._a_burst:
            if t < self._burst_until[i]:
                level[i] *= b.factor
        return np.maximum(0.0, level)

    def _pod_row(self, p: Pod) -> tuple:
        """A pod's static parameters for the usage arrays (cached on the pod; they never change)."""
        inf = math.inf
        if p.daemon:
            return (-1, 1.0, inf, p.cpu_request, p.mem_request, 0.0, inf, p.created, p.usage_cpu, p.usage_memory,
                    0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        ai = self._dep_index.get((p.namespace, p.app))
        if ai is None:
            return (-1, 1.0, inf, p.cpu_request, p.mem_request, 0.0, inf, p.created, 0.0, 0.0,
                    0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
        spec = self._deps[ai].spec
        c = spec.max_cpu_per_pod if spec.max_cpu_per_pod is not None else spec.cpu_limit
        return (ai, p.multiplier, inf if c is None else c, p.cpu_request, p.mem_request, spec.demand.memory,
                inf if p.mem_limit is None else p.mem_limit, p.created, 0.0, 0.0, spec.sensitivity, spec.base_cpi,
                spec.base_latency_ms, spec.demand.memory_per_core if spec.character == "memory" else 0.0,
                spec.demand.memory_growth_per_h, 0.0)

    def _ideal_nodes_for(self, cpu: float, mem: float) -> int:
        """The fewest nodes that hold ``cpu`` / ``mem`` of requests (besides the DaemonSets') with this fleet's node
        groups. Without an elastic group: nodes of the largest type (how far the fleet could shrink). With one:
        every node of the other groups stays (no autoscaler removes them), and the rest goes onto the fewest
        nodes of the largest elastic group, at least the elastic groups' ``min_nodes`` — what a perfect packer
        with an instant autoscaler would run."""
        ds_cpu = sum(ds.cpu_request for ds, _ in self.daemonsets)
        ds_mem = sum(ds.mem_request for ds, _ in self.daemonsets)
        groups = self.scenario.node_groups
        elastic = [g for g in groups if g.elastic]
        if not elastic:
            big = max(groups, key=lambda g: (g.cpu, g.memory))
            need = max(cpu / max(big.cpu - ds_cpu, 1e-9), mem / max(big.memory - ds_mem, 1e-9))
            return max(1, math.ceil(need - 1e-9))
        fixed = [n for n in self.nodes.values() if not (n.group in self.groups and self.groups[n.group].elastic)]
        rest_cpu = cpu - sum(max(0.0, n.cpu - ds_cpu) for n in fixed)
        rest_mem = mem - sum(max(0.0, n.memory - ds_mem) for n in fixed)
        big = max(elastic, key=lambda g: (g.cpu, g.memory))
        need = max(0.0, rest_cpu / max(big.cpu - ds_cpu, 1e-9), rest_mem / max(big.memory - ds_mem, 1e-9))
        return max(1, len(fixed) + max(sum(g.min_nodes for g in elastic), math.ceil(need - 1e-9)))

    def _rebuild(self) -> None:
        """Pod/node arrays for the vectorised usage model; rebuilt only after structural changes."""
        if getattr(self, "_apps_n", -1) != len(self.deployments):
            self._app_arrays()
        pods = list(self.pods.values())
        nodes = list(self.nodes.values())
        nidx = {n.name: i for i, n in enumerate(nodes)}
        self._P, self._N = pods, nodes
        np_ = len(pods)
        rows = []
        node_l = []
        ready_l = []
        prev_l = []
        old_pods = getattr(self, "_P_prev", [])
        n_old = len(old_pods)
        get = nidx.get
        for k, p in enumerate(pods):
            d = p.__dict__
            o = d.get("_slot")
            prev_l.append(o if o is not None and o < n_old and old_pods[o] is p else -1)
            d["_slot"] = k
            d["_cluster"] = self
            row = d.get("_row")
            if row is None:
                row = d["_row"] = self._pod_row(p)
            rows.append(row)
            node_l.append(get(p.node_name, -1) if p.node_name else -1)
            ready_l.append(p.ready)
        cols = np.fromiter(itertools.chain.from_iterable(rows), dtype=float, count=np_ * 16).reshape(np_, 16).T
        app_idx = cols[0].astype(np.int64)
        node_idx = np.array(node_l, dtype=np.int64)
        ready = np.array(ready_l, dtype=bool)
        (mult, cap, req, mreq, mem_base, mem_lim, born, fixed_cpu, fixed_mem, sens, base_cpi, base_lat, mem_core,
         growth) = cols[1:15]
        daemon = cols[15] > 0.5
        antag = np.flatnonzero((app_idx >= 0) & self._a_antag[np.maximum(app_idx, 0)]) if np_ and self._apps_n \
            else np.zeros(0, dtype=np.int64)
        self._p_app, self._p_node, self._p_ready, self._p_mult = app_idx, node_idx, ready, mult
        self._p_cap, self._p_req, self._p_mreq, self._p_membase, self._p_memlim = cap, req, mreq, mem_base, mem_lim
        self._p_born, self._p_daemon, self._p_fixcpu, self._p_fixmem = born, daemon, fixed_cpu, fixed_mem
        self._p_sens, self._p_cpi0, self._p_lat0, self._p_memcore, self._p_growth = sens, base_cpi, base_lat, \
            mem_core, growth
        self._p_antag = antag.astype(np.int64)
        self._n_cpu = np.array([n.cpu for n in nodes], dtype=float)
        bound = node_idx >= 0
        self._n_req_cpu = np.bincount(node_idx[bound], weights=req[bound], minlength=len(nodes))
        self._n_req_mem = np.bincount(node_idx[bound], weights=mreq[bound], minlength=len(nodes))
        # victims per node (for the interference ground truth), only on nodes hosting an antagonist
        self._victims_on: dict[int, list[int]] = {}
        if antag.size:
            vmask = bound & ~daemon & (sens > 0)
            for n in set(node_idx[antag].tolist()):
                if n >= 0:
                    self._victims_on[n] = np.flatnonzero(vmask & (node_idx == n)).tolist()
        with np.errstate(divide="ignore", invalid="ignore"):
            self._p_capeff = np.where(np.isfinite(cap), cap, np.maximum(2.0 * req, 0.1))
        self._p_bound = bound
        self._p_isapp = app_idx >= 0
        # ideal nodes (placeholders, i.e. negative-priority pods, are headroom, not need): see _ideal_nodes_for
        need = ~daemon & np.array([p.priority >= 0 for p in pods], dtype=bool)
        self._ideal_nodes = self._ideal_nodes_for(float(req[need].sum()), float(mreq[need].sum())) if np_ else 0
        order = np.argsort(app_idx, kind="stable")
        edges = np.searchsorted(app_idx[order], np.arange(self._apps_n + 1))
        self._app_pods = [order[edges[i]:edges[i + 1]] for i in range(self._apps_n)]
        self._n_not_ready = int((~ready).sum())
        self._n_pending = int(((node_idx < 0) & ~daemon).sum())
        # carry the last tick's per-pod figures over to the new slots
        prev = np.array(prev_l, dtype=np.int64)
        has = prev >= 0
        src = np.maximum(prev, 0)
        for attr, default in (("_p_cpi", 1.0), ("_p_lat", 0.0), ("_p_unserved", 0.0)):
            old = getattr(self, attr, None)
            if old is not None and len(old) == n_old and n_old:
                setattr(self, attr, np.where(has, old[src], default))
            else:
                setattr(self, attr, np.full(np_, default))
        self._p_cpu = np.array([p.usage_cpu for p in pods], dtype=float)
        self._P_prev = pods
        self._struct_dirty = False

    @property
    def truth(self) -> dict:
        """Interference ground truth (Python and ``GET /kubesim/v1/truth`` only, never the Kubernetes API)."""
        return self.truth_view()

    def _antagonists_on(self, ready: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Per pod: the intensity of an antagonist that is bound, ready and in an active stretch; else 0."""
        activity = np.zeros(len(ready))
        if self._p_antag.size:
            t_min = (self.t - self.scenario.start.timestamp()) / 60.0
            for k in self._p_antag:
                spec = self._deps[self._p_app[k]].spec.antagonist
                if node[k] < 0 or not self._p_ready[k]:
                    continue
                period = spec.on_min + spec.off_min
                if spec.off_min <= 0 or ((t_min + spec.phase_min) % period) < spec.on_min:
                    activity[k] = spec.intensity
        return activity

    def _update_usage(self, noise: bool = True, dt: float | None = None) -> None:
        sc = self.scenario
        dt = sc.resolution_s if dt is None else dt
        if self._struct_dirty:
            self._rebuild()
        P, N = self._P, self._N
        npods, nnodes = len(P), len(N)
        demand = self._demands(self.t, dt, noise) if self._apps_n else np.zeros(0)
        self.app_demand.update(zip(self._dep_keys, demand.tolist(), strict=True))
        app, node = self._p_app, self._p_node
        bound = self._p_bound
        is_app = self._p_isapp
        ready = self._p_ready & bound & is_app
        napps = self._apps_n
        wsum = np.bincount(app[ready], weights=self._p_mult[ready], minlength=napps) if napps else np.zeros(0)
        share = np.zeros(npods)
        if napps:
            with np.errstate(divide="ignore", invalid="ignore"):
                per_w = np.where(wsum > 0, demand / np.where(wsum > 0, wsum, 1.0), 0.0)
            share[is_app] = per_w[app[is_app]]
        want = np.where(ready, share * self._p_mult, 0.0)
        # An antagonist works (and burns CPU) while active and idles at 15 % of its share
        # otherwise, so its CPU activity is what explains its victims' CPI.
        antag_on = self._antagonists_on(ready, node)
        if self._p_antag.size:
            idle = np.zeros(npods, dtype=bool)
            idle[self._p_antag] = True
            want = np.where(idle & (antag_on == 0), 0.15 * want, want)
        cpu = np.minimum(want, self._p_cap)
        starting = bound & is_app & ~self._p_ready
        cpu = np.where(starting, 0.1 * self._p_req, cpu)
        cpu = np.where(self._p_daemon, self._p_fixcpu, cpu)
        cpu = np.where(bound, cpu, 0.0)
        # nodes: on an overcommitted node the CPU is shared like the kernel's CFS with cpu.shares from the
        # requests: every pod gets what it wants up to its weighted fair share, the rest goes to the others
        total = np.bincount(node[bound], weights=cpu[bound], minlength=nnodes)
        room = np.maximum(0.0, self._n_cpu - sc.overhead_cpu)
        over = (total > room) & (room > 0)
        if over.any():
            on = bound & over[np.maximum(node, 0)]
            idx = np.flatnonzero(on)
            cpu[idx] = cfs_share(cpu[idx], self._p_req[idx], node[idx], room, nnodes)
            total = np.where(over, room, total)
        # memory: flat per pod + slow growth with age (+ load for memory-bound apps) + 1 % noise
        age_h = np.maximum(0.0, self.t - self._p_born) / 3600.0
        mem = self._p_membase * (1.0 + self._p_growth * age_h) + self._p_memcore * cpu
        if noise and npods:
            mem = mem * (1.0 + 0.01 * self.rng.standard_normal(npods))
        mem = np.minimum(mem, self._p_memlim)
        mem = np.where(self._p_daemon, self._p_fixmem, np.where(bound & is_app, mem, 0.0))
        # under-provisioning: demand a ready pod could not serve (per-pod cap, node throttling)
        unserved = np.where(ready, np.maximum(0.0, want - cpu), 0.0)
        under = ready & (unserved > 0.01 * want + 1e-6)
        n_under = int(under.sum())
        unserved_total = float(unserved.sum())
        if napps:
            has_ready = wsum > 0
            dark = (~has_ready) & (demand > 1e-9)  # no ready pod at all: every replica is short
            if dark.any():
                n_app_pods = np.bincount(app[is_app], minlength=napps)
                n_under += int(np.maximum(n_app_pods[dark], 1).sum())
                unserved_total += float(demand[dark].sum())
        # interference: antagonists' activity raises co-located victims' CPI
        activity = antag_on
        if self._p_antag.size:
            pressure = np.bincount(node[bound], weights=activity[bound], minlength=nnodes)
            extra = np.where(bound, self._p_sens * (pressure[np.maximum(node, 0)] - activity), 0.0)
            self._track_truth(activity)
        else:
            extra = np.zeros(npods)
        cpi = self._p_cpi0 * (1.0 + extra)
        with np.errstate(divide="ignore", invalid="ignore"):
            cap_eff = self._p_capeff
            rho = np.minimum(np.where(ready, cpu / cap_eff, 0.0), 0.9)
            short = np.where(want > 0, unserved / np.where(want > 0, want, 1.0), 0.0)
        lat = np.where(ready, self._p_lat0 * (1.0 + extra) / (1.0 - rho) * (1.0 + 20.0 * short), 0.0)
        self._p_cpu, self._p_mem, self._p_cpi, self._p_lat = cpu, mem, cpi, lat
        self._p_unserved, self._p_under = unserved, under
        for p, c, m in zip(P, cpu.tolist(), mem.tolist(), strict=True):
            p.usage_cpu = c
            p.usage_memory = m
        node_mem = np.bincount(node[bound], weights=mem[bound], minlength=nnodes)
        for n, c, m in zip(N, total.tolist(), node_mem.tolist(), strict=True):
            n.usage_cpu = c + sc.overhead_cpu
            n.usage_memory = m + sc.overhead_memory
        self.sla = {"underprovisioned_pods": n_under, "unserved_cpu_cores": round(unserved_total, 6),
                    "underprovisioned_pod_minutes": self.sla.get("underprovisioned_pod_minutes", 0.0)}

    def _track_truth(self, activity: np.ndarray) -> None:
        """Interference ground truth: one episode per (antagonist pod, node, active stretch) with the victims
        it overlapped and when (first/last seen)."""
        P, t = self._P, self.t
        active_now = set()
        for k in self._p_antag:
            p = P[k]
            if activity[k] <= 0:
                continue
            victims = self._victims_on.get(int(self._p_node[k]), [])
            ep = self._open_eps.get(p.uid)
            if ep is not None and ep["node"] != p.node_name:
                self._close_episode(p.uid)
                ep = None
            if ep is None:
                ep = {"id": len(self._episodes) + 1, "antagonist": f"{p.namespace}/{p.name}",
                      "antagonist_app": p.app, "node": p.node_name, "start": t, "end": None,
                      "intensity": float(activity[k]), "victims": {}}
                self._episodes.append(ep)
                self._open_eps[p.uid] = ep
            active_now.add(p.uid)
            vs = ep["victims"]
            for v in victims:
                q = P[v]
                key = f"{q.namespace}/{q.name}"
                seen = vs.get(key)
                if seen is None:
                    vs[key] = [t, t]
                else:
                    seen[1] = t
        for uid in list(self._open_eps):
            if uid not in active_now:
                self._close_episode(uid)

    def _close_episode(self, uid: str) -> None:
        ep = self._open_eps.pop(uid, None)
        if ep is not None:
            ep["end"] = self.t

    def truth_view(self) -> dict:
        """JSON-ready ground truth: episodes (victims with first/last seen) and the (victim, antagonist) pairs."""
        def ts(x):
            return None if x is None else datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        eps, pairs = [], []
        for ep in self._episodes:
            victims = [{"pod": v, "first_seen": ts(a), "last_seen": ts(b)}
                       for v, (a, b) in sorted(ep["victims"].items())]
            eps.append({**{k: ep[k] for k in ("id", "antagonist", "antagonist_app", "node", "intensity")},
                        "start": ts(ep["start"]), "end": ts(ep["end"]), "start_ts": ep["start"], "end_ts": ep["end"],
                        "victims": victims})
            for v in victims:
                pairs.append({"victim": v["pod"], "antagonist": ep["antagonist"], "node": ep["node"],
                              "episode": ep["id"], "start": v["first_seen"], "end": v["last_seen"]})
        return {"scenario": self.scenario.name, "seed": self.seed, "episodes": eps, "pairs": pairs}

    # ------------------------------------------------------------------ HPA controller (baseline)

    def _run_hpas(self) -> None:
        if not self.hpa_enabled:
            return
        from streams.core.hpa import (
            HpaBehavior,
            HpaScalingRules,
            HpaSettings,
            HpaState,
            default_scale_down,
            reactive_cpu_step,
        )
        for dep in list(self.deployments.values()):
            h = dep.spec.hpa
            if h is None:
                continue
            key = (dep.namespace, dep.name)
            st = self.hpa_status.get(key)
            if st is None:
                sd = default_scale_down()
                settings = HpaSettings(h.min_replicas, h.max_replicas, h.tolerance, HpaBehavior(
                    scale_down=HpaScalingRules(int(h.scale_down_stabilization_s), sd.select_policy, sd.policies)))
                st = self.hpa_status[key] = {"state": HpaState(), "settings": settings, "last_sync": -math.inf,
                                             "desired": dep.replicas, "reason": "", "utilization": None}
            if self.t - st["last_sync"] < h.sync_period_s - 1e-9:
                continue
            st["last_sync"] = self.t
            ai = self._dep_index.get(key)
            if ai is None or ai >= len(self._app_pods):
                continue
            idx = self._app_pods[ai]
            idx = idx[self._p_node[idx] >= 0]
            usage = self._p_cpu[idx] if len(self._p_cpu) == len(self._P) else np.zeros(len(idx))
            reqs = self._p_req[idx]
            readies = self._p_ready[idx]
            if reqs.sum() > 0 and readies.any():
                st["utilization"] = round(100.0 * usage[readies].sum() / reqs[readies].sum(), 1)
            state, res = reactive_cpu_step(st["state"], self.t, dep.replicas, usage, reqs, h.target_cpu_utilization,
                                           st["settings"], ready=readies)
            st["state"], st["desired"], st["reason"] = state, res.desired, res.reason
            obj = self.hpas.get(key)
            current = dep.replicas
            if res.desired != dep.replicas:
                self.counters["hpa_scalings"] += 1
                self._set_replicas(dep, res.desired)
            if obj is not None:
                u = st["utilization"]
                avg = float(usage[readies].mean()) if readies.any() else None
                new = (current, res.desired, None if u is None else int(u), res.reason)
                old = (obj.current_replicas, obj.desired_replicas, obj.current_utilization, obj.reason)
                if res.desired != current:
                    obj.last_scale_time = self.t
                if new != old or res.desired != current:
                    (obj.current_replicas, obj.desired_replicas, obj.current_utilization, obj.reason) = new
                    obj.current_average_cores = avg
                    obj.message = res.message
                    self._emit("MODIFIED", "horizontalpodautoscalers", obj)

    # ------------------------------------------------------------------ cluster-autoscaler model (baseline)

    def _group_nodes(self, group: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.group == group]

    def _autoscale(self) -> None:
        # provisioned nodes join when their delay has passed
        for up in [u for u in self.upcoming if u["ready_at"] <= self.t + 1e-9]:
            self.upcoming.remove(up)
            g = self.groups[up["group"]]
            self.add_node(up["name"], up["zone"], g.name, g.cpu, g.memory, dict(g.labels), list(g.taints),
                          reconcile=False)
            self.counters["nodes_added"] += 1
            self._needs_reconcile = True
        if not self.autoscaler_enabled:
            return
        ca = self.scenario.autoscaler
        if self.t - self._ca_last_scan < ca.scan_interval_s - 1e-9:
            return
        self._ca_last_scan = self.t
        if self._needs_reconcile:
            self.reconcile()
        if not self._scale_up():
            self._scale_down()

    def _template_fits(self, pod: Pod, g, zone: str) -> bool:
        labels = {**g.labels, ZONE_LABEL: zone, NODE_GROUP_LABEL: g.name}
        for taint in g.taints:
            if taint.effect in ("NoSchedule", "NoExecute") and not any(t.tolerates(taint) for t in pod.tolerations):
                return False
        if any(labels.get(k) != v for k, v in pod.node_selector.items()):
            return False
        ds_cpu = sum(ds.cpu_request for ds, _ in self.daemonsets)
        ds_mem = sum(ds.mem_request for ds, _ in self.daemonsets)
        return pod.cpu_request <= g.cpu - ds_cpu + 1e-9 and pod.mem_request <= g.memory - ds_mem + 1e-9

    def _scale_up(self) -> bool:
        """Scale up elastic groups for pods the scheduler could not place: pack them onto template nodes
        (upcoming nodes count as already there), then order the nodes; they join after the group's delay."""
        if not self._n_pending and not self._struct_dirty:
            return False
        pending = [p for p in self.pods.values() if p.node_name is None and p.phase == "Pending"
                   and p.unschedulable_reason]
        if not pending:
            return False
        elastic = [g for g in self.scenario.node_groups if g.elastic]
        if not elastic:
            return False
        ds_cpu = sum(ds.cpu_request for ds, _ in self.daemonsets)
        ds_mem = sum(ds.mem_request for ds, _ in self.daemonsets)
        bins = [[u["group"], u["zone"], self.groups[u["group"]].cpu - ds_cpu, self.groups[u["group"]].memory - ds_mem]
                for u in self.upcoming]
        count = {g.name: len(self._group_nodes(g.name)) + sum(1 for u in self.upcoming if u["group"] == g.name)
                 for g in elastic}
        new: list[list] = []
        for pod in sorted(pending, key=lambda p: (-p.priority, -p.cpu_request, p.created, p.name)):
            placed = False
            for b in bins + new:
                g = self.groups[b[0]]
                fits = b[2] >= pod.cpu_request - 1e-9 and b[3] >= pod.mem_request - 1e-9
                if fits and self._template_fits(pod, g, b[1]):
                    b[2] -= pod.cpu_request
                    b[3] -= pod.mem_request
                    placed = True
                    break
            if placed:
                continue
            for g in elastic:
                if count[g.name] >= g.max_nodes:
                    continue
                zones = [z for z in self.scenario.zones if self._template_fits(pod, g, z)]
                if not zones:
                    continue
                per_zone = {z: 0 for z in zones}
                for n in self._group_nodes(g.name):
                    if n.zone in per_zone:
                        per_zone[n.zone] += 1
                for u in self.upcoming:
                    if u["group"] == g.name and u["zone"] in per_zone:
                        per_zone[u["zone"]] += 1
                for b in new:
                    if b[0] == g.name and b[1] in per_zone:
                        per_zone[b[1]] += 1
                zone = min(zones, key=lambda z: (per_zone[z], z))
                new.append([g.name, zone, g.cpu - ds_cpu - pod.cpu_request, g.memory - ds_mem - pod.mem_request])
                count[g.name] += 1
                break
        for gname, zone, _, _ in new:
            g = self.groups[gname]
            self._node_seq += 1
            name = f"{gname}-{zone}-x{self._node_seq}"
            self.upcoming.append({"group": gname, "zone": zone, "name": name, "requested_at": self.t,
                                  "ready_at": self.t + g.provisioning_delay_s})
            self.counters["scale_ups"] += 1
        if new:
            self._ca_last_add = self.t
        return bool(new)

    def _scale_down(self) -> None:
        """Remove elastic nodes whose requests stayed under the threshold for the unneeded time and whose pods
        can all move (PDBs allow it, no safe-to-evict=false, they fit elsewhere); empty nodes go in bulk."""
        ca = self.scenario.autoscaler
        if self.t - self._ca_last_add < ca.scale_down_delay_after_add_s - 1e-9:
            self.unneeded_since.clear()
            return
        if not any(g.elastic for g in self.scenario.node_groups):
            return
        if self._struct_dirty:
            self._rebuild()
        req = {n.name: (c, m) for n, c, m in zip(self._N, self._n_req_cpu.tolist(), self._n_req_mem.tolist(),
                                                    strict=True)}
        groups_left = {g.name: len(self._group_nodes(g.name)) for g in self.scenario.node_groups if g.elastic}
        ready_nodes = []
        for n in list(self.nodes.values()):
            g = self.groups.get(n.group)
            # A cordoned node is a candidate only once it holds DaemonSet pods alone (drained, e.g. by
            # kubetide's node-scale drain): CA removes empty nodes whatever their schedulability.
            cordoned_busy = n.unschedulable and any(p.node_name == n.name and not p.daemon for p in self.pods.values())
            if g is None or not g.elastic or cordoned_busy or n.name not in req:
                self.unneeded_since.pop(n.name, None)
                continue
            cpu, mem = req[n.name]
            util = max(cpu / n.cpu, mem / n.memory)
            if util >= ca.scale_down_utilization_threshold:
                self.unneeded_since.pop(n.name, None)
                continue
            since = self.unneeded_since.setdefault(n.name, self.t)
            if (self.t - since >= ca.scale_down_unneeded_s - 1e-9 and groups_left[n.group] > g.min_nodes
                    and self._drain_retry.get(n.name, -math.inf) <= self.t):
                ready_nodes.append(n)
        if not ready_nodes:
            return
        pods_by_node: dict[str, list[Pod]] = {}
        for p in self.pods.values():
            if p.node_name:
                pods_by_node.setdefault(p.node_name, []).append(p)
        removed: list[str] = []
        empties = [n for n in ready_nodes if all(p.daemon for p in pods_by_node.get(n.name, []))]
        for n in empties[: ca.max_empty_bulk_delete]:
            if groups_left[n.group] <= self.groups[n.group].min_nodes:
                continue
            groups_left[n.group] -= 1
            self.remove_node(n.name, reconcile=False)
            removed.append(n.name)
        if removed:
            self._needs_reconcile = True
            return
        for n in sorted(ready_nodes, key=lambda n: (req[n.name][0] / n.cpu, n.name)):
            if groups_left[n.group] <= self.groups[n.group].min_nodes:
                continue
            movable = [p for p in pods_by_node.get(n.name, []) if not p.daemon]
            if not self._drainable(movable, n.name):
                self._drain_retry[n.name] = self.t + 60.0  # re-check a blocked node once a minute
                return  # one drain simulation per scan
            else:
                for p in movable:
                    res = self._evict_impl(p.namespace, p.name)
                    # a placeholder (negative priority) is headroom, not a workload: counted apart
                    kind = "autoscaler_evictions" if p.priority >= 0 else "autoscaler_placeholder_evictions"
                    self.counters[kind] += 1
                    if res.code != 201:
                        self.counters["scale_down_blocked"] += 1
                        return
                self.remove_node(n.name)
                return
        return

    def _drainable(self, pods: list[Pod], node_name: str) -> bool:
        need: dict[tuple[str, str], int] = {}
        for p in pods:
            if p.annotations.get(SAFE_TO_EVICT, "").lower() == "false":
                return False
            if p.owner_kind not in ("ReplicaSet", "DaemonSet"):
                return False
            for pdb in self.pdbs.values():
                if pdb.matches(p):
                    k = (pdb.namespace, pdb.name)
                    need[k] = need.get(k, 0) + 1
                    if need[k] > pdb.disruptions_allowed:
                        return False
        ctx = self._sched_ctx(exclude=[node_name])
        for p in sorted(pods, key=lambda p: -p.cpu_request):
            mask = ctx.static_mask(p) & ~ctx.unsched
            fits = mask & (ctx.req_cpu + p.cpu_request <= ctx.alloc_cpu + 1e-9) & (
                ctx.req_mem + p.mem_request <= ctx.alloc_mem + 1e-9)
            if not fits.any():
                return False
            idx = np.flatnonzero(fits)
            i = int(idx[np.argmax(ctx.alloc_cpu[idx] - ctx.req_cpu[idx])])
            ctx.bind(p, i)
        return True

    def remove_node(self, name: str, *, reconcile: bool = True) -> Node | None:
        """Delete a node: its pods are deleted (controllers recreate them elsewhere)."""
        node = self.nodes.pop(name, None)
        if node is None:
            return None
        for p in [p for p in self.pods.values() if p.node_name == name]:
            self._remove_pod(p)
        self.unneeded_since.pop(name, None)
        self.counters["nodes_removed"] += 1
        self._emit("DELETED", "nodes", node)
        if reconcile:
            self.reconcile()
        return node

    # ------------------------------------------------------------------ clock

    def step(self, dt: float | None = None) -> None:
        """Advance the virtual clock by one tick (``dt`` defaults to the scenario resolution)."""
        dt = self.scenario.resolution_s if dt is None else dt
        self.t += dt
        self.tick += 1
        if self._n_not_ready or self._struct_dirty:
            starting = [p for p in self.pods.values() if not p.ready]
            for pod in sorted(starting, key=lambda p: (p.created, p.name)):
                if (pod.phase == "Running" and not pod.ready and pod.scheduled_at is not None
                        and self.t >= pod.scheduled_at + pod.startup_s - 1e-9):
                    pod.ready = True
                    pod.ready_at = self.t
                    was_dirty = self._struct_dirty
                    self._emit("MODIFIED", "pods", pod)
                    slot = getattr(pod, "_slot", None)
                    if not was_dirty and slot is not None and slot < len(self._P) and self._P[slot] is pod:
                        # readiness only: patch the arrays instead of rebuilding them
                        self._struct_dirty = False
                        self._p_ready[slot] = True
                        self._n_not_ready -= 1
        self._autoscale()
        self._run_hpas()
        if self._needs_reconcile or any(p.disrupted_pods for p in self.pdbs.values()):
            self.reconcile()
        self._update_usage(dt=dt)
        self._account(dt)

    def _account(self, dt: float) -> None:
        for n in self.nodes.values():
            self.node_seconds[n.group] = self.node_seconds.get(n.group, 0.0) + dt
        self.ideal_node_seconds += self._ideal_nodes * dt
        self.sla["underprovisioned_pod_minutes"] = (self.sla.get("underprovisioned_pod_minutes", 0.0)
                                                    + self.sla["underprovisioned_pods"] * dt / 60.0)

    def advance(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` in ticks of at most ``resolution_s``."""
        remaining = float(seconds)
        res = self.scenario.resolution_s
        while remaining > 1e-9:
            dt = min(res, remaining)
            self.step(dt)
            remaining -= dt

    # ------------------------------------------------------------------ summaries

    def node_cpu_percent(self) -> dict[str, float]:
        return {n.name: 100.0 * n.usage_cpu / n.cpu for n in self.nodes.values()}

    def accounting(self) -> dict:
        """Node-hours (per group and total), their cost, ideal node-hours and the SLA figures."""
        hours = {g: s / 3600.0 for g, s in self.node_seconds.items()}
        cost = sum(h * self.groups[g].cost_per_hour for g, h in hours.items() if g in self.groups)
        return {
            "node_hours": round(sum(hours.values()), 4),
            "node_hours_by_group": {g: round(h, 4) for g, h in sorted(hours.items())},
            "ideal_node_hours": round(self.ideal_node_seconds / 3600.0, 4),
            "ideal_nodes_now": self._ideal_nodes,
            "cost": round(cost, 4),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.sla.items()},
        }

    def status(self) -> dict:
        req = self.requested_all()
        per_node: dict[str, int] = {}
        for p in self.pods.values():
            if p.node_name:
                per_node[p.node_name] = per_node.get(p.node_name, 0) + 1
        nodes = []
        for n in self.nodes.values():
            cpu_req, mem_req = req[n.name]
            nodes.append({
                "name": n.name,
                "zone": n.zone,
                "node_group": n.group,
                "unschedulable": n.unschedulable,
                "cpu_usage_cores": round(n.usage_cpu, 4),
                "cpu_allocatable": n.cpu,
                "cpu_requested": round(cpu_req, 4),
                "cpu_usage_pct": round(100.0 * n.usage_cpu / n.cpu, 2),
                "cpu_requested_pct": round(100.0 * cpu_req / n.cpu, 2),
                "mem_usage_bytes": round(n.usage_memory),
                "mem_allocatable": round(n.memory),
                "mem_requested": round(mem_req),
                "pods": per_node.get(n.name, 0),
            })
        pct = np.array([x["cpu_usage_pct"] for x in nodes]) if nodes else np.zeros(1)
        phases: dict[str, int] = {}
        for p in self.pods.values():
            phases[p.phase] = phases.get(p.phase, 0) + 1
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "virtual_time": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "virtual_ts": self.t,
            "tick": self.tick,
            "resource_version": self.rv,
            "nodes": nodes,
            "cpu_usage_pct_spread": {
                "p95_minus_p5": round(float(np.percentile(pct, 95) - np.percentile(pct, 5)), 2),
                "max_minus_min": round(float(pct.max() - pct.min()), 2),
                "mean": round(float(pct.mean()), 2),
            },
            "counts": {
                "pods": len(self.pods),
                "pods_running": phases.get("Running", 0),
                "pods_pending": phases.get("Pending", 0),
                "pods_ready": sum(1 for p in self.pods.values() if p.ready),
                **self.counters,
            },
            "system_overhead": {"cpu_cores": self.scenario.overhead_cpu,
                                "memory_bytes": self.scenario.overhead_memory},
            "sla": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.sla.items()},
            "accounting": self.accounting(),
            "node_groups": {g.name: {"nodes": sum(1 for n in self.nodes.values() if n.group == g.name),
                                     "upcoming": sum(1 for u in self.upcoming if u["group"] == g.name),
                                     "elastic": g.elastic, "min_nodes": g.min_nodes, "max_nodes": g.max_nodes,
                                     "cost_per_hour": g.cost_per_hour}
                            for g in self.scenario.node_groups},
            "hpa": {f"{ns}/{name}": {"desired": st["desired"], "reason": st["reason"],
                                     "cpu_utilization_pct": st["utilization"]}
                    for (ns, name), st in sorted(self.hpa_status.items())},
        }

    def iter_pods(self, namespace: str | None = None) -> Iterable[Pod]:
        return (p for p in self.pods.values() if namespace is None or p.namespace == namespace)


def _template_hash(raw: str) -> str:
    """A ``pod-template-hash`` (10 characters of :data:`_ALNUM`) derived from ``raw``, the template's identity."""
    return "".join(_ALNUM[b % len(_ALNUM)] for b in hashlib.sha256(raw.encode()).digest()[:10])


@functools.lru_cache(maxsize=1024)
def _parsed_selector(selector: str) -> dict:
    return json.loads(selector)


def _static_reason(pod: Pod, node: Node) -> str | None:
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not any(t.tolerates(taint) for t in pod.tolerations):
            return "node(s) had untolerated taint"
    for k, v in pod.node_selector.items():
        if node.labels.get(k) != v:
            return "node(s) didn't match Pod's node affinity/selector"
    return None


# kube-scheduler's default plugin weight of PodTopologySpread (NodeResourcesFit: 1)
SPREAD_SCORE_WEIGHT = 2.0


def _soft_spread_score(spread: Iterable[SpreadConstraint], zone_counts: np.ndarray, node_counts: np.ndarray,
                       zones: int) -> np.ndarray | float:
    """PodTopologySpread's score of the feasible nodes for a pod's explicit constraints, × its weight 2.

    Like kube-scheduler (``podtopologyspread/scoring.go``): only ``ScheduleAnyway`` constraints count; a
    node's raw score is the sum over them of ``log(domains + 2) × matching pods in the node's domain +
    (maxSkew − 1)`` (domains: the zones of the feasible nodes, or the feasible nodes for the hostname key),
    normalised over the feasible nodes to ``100 × (max + min − raw) / max`` (100 everywhere when max is 0).
    ``zone_counts`` / ``node_counts``: the pod's app's pods in each feasible node's zone / on the node."""
    raw: np.ndarray | None = None
    for sc in spread:
        if sc.when_unsatisfiable != "ScheduleAnyway":
            continue
        if sc.topology_key == ZONE_LABEL:
            c, size = zone_counts, zones
        else:
            c, size = node_counts, node_counts.size
        term = math.log(size + 2) * c + (sc.max_skew - 1)
        raw = term if raw is None else raw + term
    if raw is None:
        return 0.0
    hi, lo = float(raw.max()), float(raw.min())
    if hi <= 0:
        return SPREAD_SCORE_WEIGHT * 100.0
    return SPREAD_SCORE_WEIGHT * 100.0 * (hi + lo - raw) / hi


class _SchedCtx:
    """Node arrays for one scheduling batch (built once, updated on every bind): the filter and score
    run as numpy expressions over all nodes instead of a Python loop per (pod, node)."""

    def __init__(self, c: Cluster, exclude: set[str]):
        self.c = c
        self.nodes = [n for n in c.nodes.values() if n.name not in exclude]
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        n = len(self.nodes)
        self.alloc_cpu = np.array([x.cpu for x in self.nodes], dtype=float)
        self.alloc_mem = np.array([x.memory for x in self.nodes], dtype=float)
        self.req_cpu = np.zeros(n)
        self.req_mem = np.zeros(n)
        self.load_w = c.load_aware_weight
        self.use_cpu = np.zeros(n)  # measured CPU usage (cores) + requests of pods bound in this batch
        self.zones = sorted({x.zone for x in self.nodes})
        zi = {z: i for i, z in enumerate(self.zones)}
        self.zone = np.array([zi[x.zone] for x in self.nodes], dtype=np.int64)
        self.unsched = np.array([x.unschedulable for x in self.nodes], dtype=bool)
        self.name_rank = np.argsort(np.argsort(np.array([x.name for x in self.nodes], dtype=object)))
        self.app_nodes: dict[tuple[str, str | None], np.ndarray] = {}
        self._by_app: dict[tuple[str, str | None], list[int]] = {}
        self._masks: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # InterPodAffinity (preferred anti-affinity): bound pods that carry terms, per-selector pod counts per
        # node (built on first use, kept current by bind/unbind), node -> topology domain per topology key
        self._anti_placed: list[tuple[Pod, int]] = []
        self._sel_counts: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        self._domains: dict[str, np.ndarray] = {}
        get = self.index.get
        ii, cc, mm, uu = [], [], [], []
        by_app = self._by_app
        for p in c.pods.values():
            if p.node_name is None:
                continue
            i = get(p.node_name)
            if i is None or p.phase not in ("Pending", "Running"):
                continue
            if p.affinity is not None and p.anti_terms:
                self._anti_placed.append((p, i))
            ii.append(i)
            cc.append(p.cpu_request)
            mm.append(p.mem_request)
            uu.append(p.usage_cpu)
            if not p.daemon:
                key = (p.namespace, p.app)
                lst = by_app.get(key)
                if lst is None:
                    by_app[key] = [i]
                else:
                    lst.append(i)
        if ii:
            self.req_cpu = np.bincount(ii, weights=cc, minlength=n).astype(float)
            self.req_mem = np.bincount(ii, weights=mm, minlength=n).astype(float)
            if self.load_w > 0:
                self.use_cpu = np.bincount(ii, weights=uu, minlength=n).astype(float)

    def counts(self, pod: Pod) -> np.ndarray:
        key = (pod.namespace, pod.app)
        arr = self.app_nodes.get(key)
        if arr is None:
            arr = np.bincount(np.array(self._by_app.get(key, []), dtype=np.int64), minlength=len(self.nodes))
            arr = arr.astype(float)
            self.app_nodes[key] = arr
        return arr

    def _selector_counts(self, selector: str, namespaces: tuple[str, ...]) -> np.ndarray:
        """Bound pods per node in ``namespaces`` whose labels match ``selector`` (canonical JSON)."""
        key = (selector, namespaces)
        arr = self._sel_counts.get(key)
        if arr is None:
            sel = _parsed_selector(selector)
            hits = [self.index[p.node_name] for p in self.c.pods.values()
                    if p.node_name in self.index and p.phase in ("Pending", "Running")
                    and p.namespace in namespaces and selector_matches(sel, p.labels)]
            arr = self._sel_counts[key] = np.bincount(np.array(hits, dtype=np.int64),
                                                      minlength=len(self.nodes)).astype(float)
        return arr

    def _domain(self, topology_key: str) -> np.ndarray:
        """Per node the index of its value of ``topology_key`` (-1: the node has no such label)."""
        dom = self._domains.get(topology_key)
        if dom is None:
            ids: dict[str, int] = {}
            dom = self._domains[topology_key] = np.array(
                [ids.setdefault(n.labels[topology_key], len(ids)) if topology_key in n.labels else -1
                 for n in self.nodes], dtype=np.int64)
        return dom

    def inter_pod_anti(self, pod: Pod) -> np.ndarray | None:
        """The InterPodAffinity plugin's raw score per node for preferred pod anti-affinity (before
        normalisation): minus the weight of each of the pod's terms for every matching pod in the node's
        topology domain, and minus the weight of each existing pod's term that matches this pod, in that pod's
        domain (the symmetric part). None when no term is involved."""
        n = len(self.nodes)
        raw: np.ndarray | None = None
        for t in pod.anti_terms:
            counts = self._selector_counts(t.selector, t.namespaces)
            dom = self._domain(t.topology_key)
            has = dom >= 0
            if not has.any():
                continue
            per = np.bincount(dom[has], weights=counts[has], minlength=int(dom.max()) + 1)
            raw = np.zeros(n) if raw is None else raw
            raw[has] -= t.weight * per[dom[has]]
        for other, i in self._anti_placed:
            for t in other.anti_terms:
                if pod.namespace not in t.namespaces or not selector_matches(_parsed_selector(t.selector),
                                                                             pod.labels):
                    continue
                dom = self._domain(t.topology_key)
                if dom[i] < 0:
                    continue
                raw = np.zeros(n) if raw is None else raw
                raw[dom == dom[i]] -= t.weight
        return raw

    def _count_selectors(self, pod: Pod, i: int, delta: float) -> None:
        for (selector, namespaces), arr in self._sel_counts.items():
            if pod.namespace in namespaces and selector_matches(_parsed_selector(selector), pod.labels):
                arr[i] += delta

    def bind(self, pod: Pod, i: int) -> None:
        if self._sel_counts:
            self._count_selectors(pod, i, 1.0)
        if pod.affinity is not None and pod.anti_terms:
            self._anti_placed.append((pod, i))
        self.req_cpu[i] += pod.cpu_request
        self.use_cpu[i] += pod.cpu_request  # a new pod's usage is not measured yet: its request stands in
        self.req_mem[i] += pod.mem_request
        if not pod.daemon:
            key = (pod.namespace, pod.app)
            if key in self.app_nodes:
                self.app_nodes[key][i] += 1
            else:
                self._by_app.setdefault(key, []).append(i)

    def unbind(self, pod: Pod) -> None:
        i = self.index.get(pod.node_name or "")
        if i is None:
            return
        if self._sel_counts:
            self._count_selectors(pod, i, -1.0)
        self._anti_placed = [(p, j) for p, j in self._anti_placed if p is not pod]
        self.req_cpu[i] -= pod.cpu_request
        self.req_mem[i] -= pod.mem_request
        key = (pod.namespace, pod.app)
        if key in self.app_nodes:
            self.app_nodes[key][i] -= 1
        elif key in self._by_app and i in self._by_app[key]:
            self._by_app[key].remove(i)

    def _static(self, pod: Pod) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(taints ok, selector ok, # untolerated PreferNoSchedule taints) per node, cached per pod shape."""
        key = (pod.tolerations, tuple(sorted(pod.node_selector.items())))
        hit = self._masks.get(key)
        if hit is None:
            taint_ok = np.ones(len(self.nodes), dtype=bool)
            sel_ok = np.ones(len(self.nodes), dtype=bool)
            prefer = np.zeros(len(self.nodes))
            for i, node in enumerate(self.nodes):
                for taint in node.taints:
                    if not any(t.tolerates(taint) for t in pod.tolerations):
                        if taint.effect in ("NoSchedule", "NoExecute"):
                            taint_ok[i] = False
                        elif taint.effect == "PreferNoSchedule":
                            prefer[i] += 1
                for k, v in pod.node_selector.items():
                    if node.labels.get(k) != v:
                        sel_ok[i] = False
            hit = self._masks[key] = (taint_ok, sel_ok, prefer)
        return hit

    def static_mask(self, pod: Pod) -> np.ndarray:
        taint_ok, sel_ok, _ = self._static(pod)
        return taint_ok & sel_ok

    def select(self, pod: Pod) -> int | None:
        n = len(self.nodes)
        if n == 0:
            pod.unschedulable_reason = "0/0 nodes are available: no nodes."
            return None
        taint_ok, sel_ok, prefer = self._static(pod)
        cpu_ok = self.req_cpu + pod.cpu_request <= self.alloc_cpu + 1e-9
        mem_ok = self.req_mem + pod.mem_request <= self.alloc_mem + 1e-9
        spread = pod.spread if not pod.daemon else ()
        counts = self.counts(pod) if not pod.daemon else None
        topo_ok = np.ones(n, dtype=bool)
        for sc in spread:
            if sc.when_unsatisfiable != "DoNotSchedule":
                continue
            assert counts is not None
            # domains: nodes passing the pod's node selector (nodeAffinityPolicy Honor, nodeTaintsPolicy Ignore)
            if sc.topology_key == ZONE_LABEL:
                per = np.bincount(self.zone, weights=counts, minlength=len(self.zones))
                eligible = np.unique(self.zone[sel_ok])
                if eligible.size == 0:
                    continue
                mn = per[eligible].min()
                topo_ok &= per[self.zone] + 1 - mn <= sc.max_skew
            else:
                if not sel_ok.any():
                    continue
                mn = counts[sel_ok].min()
                topo_ok &= counts + 1 - mn <= sc.max_skew
        feasible = ~self.unsched & taint_ok & sel_ok & cpu_ok & mem_ok & topo_ok
        if not feasible.any():
            reasons = {}
            order = [(self.unsched, "node(s) were unschedulable"), (~taint_ok, "node(s) had untolerated taint"),
                     (~sel_ok, "node(s) didn't match Pod's node affinity/selector"), (~cpu_ok, "Insufficient cpu"),
                     (~mem_ok, "Insufficient memory"),
                     (~topo_ok, "node(s) didn't match pod topology spread constraints")]
            left = np.ones(n, dtype=bool)
            for bad, why in order:
                hit = int((left & bad).sum())
                if hit:
                    reasons[why] = hit
                left &= ~bad
            detail = ", ".join(f"{k} {r}" for r, k in sorted(reasons.items()))
            pod.unschedulable_reason = f"0/{len(self.c.nodes)} nodes are available: {detail}."
            return None
        idx = np.flatnonzero(feasible)
        free_cpu = (self.alloc_cpu[idx] - self.req_cpu[idx] - pod.cpu_request) / self.alloc_cpu[idx]
        free_mem = (self.alloc_mem[idx] - self.req_mem[idx] - pod.mem_request) / self.alloc_mem[idx]
        score = 100.0 * (free_cpu + free_mem) / 2.0
        if counts is not None:
            zone_per = np.bincount(self.zone, weights=counts, minlength=len(self.zones))
            zc = zone_per[self.zone[idx]]
            nc = counts[idx]
            if spread:
                # the pod's own constraints replace the default spreading (PodTopologySpread scores only
                # its ScheduleAnyway ones; none: no spread score at all)
                score = score + _soft_spread_score(spread, zc, nc, int(np.unique(self.zone[idx]).size))
            else:
                zmax, nmax = zc.max(), nc.max()
                score = score + 0.5 * (100.0 * (zmax - zc) / zmax if zmax else 100.0)
                score = score + 0.5 * (100.0 * (nmax - nc) / nmax if nmax else 100.0)
        if self.load_w > 0:
            util = np.minimum(1.0, (self.use_cpu[idx] + pod.cpu_request) / self.alloc_cpu[idx])
            score = score + self.load_w * 100.0 * (1.0 - util)
        pf = prefer[idx]
        pmax = pf.max()
        if pmax > 0:
            score = score + 3.0 * 100.0 * (pmax - pf) / pmax
        if not pod.daemon and (self._anti_placed or (pod.affinity is not None and pod.anti_terms)):
            raw = self.inter_pod_anti(pod)
            if raw is not None:
                # InterPodAffinity (default weight 2), normalised over the feasible nodes to [0, 100]
                s = raw[idx]
                lo, hi = s.min(), s.max()
                if hi > lo:
                    score = score + 2.0 * 100.0 * (s - lo) / (hi - lo)
        best = score.max()
        ties = idx[score == best]
        return int(ties[np.argmin(self.name_rank[ties])])
