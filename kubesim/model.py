"""The kubesim cluster model: plain Python state + a step function on a virtual clock.

Nothing here knows about HTTP.  Every object change is reported to the
``listeners`` as ``(event_type, resource, obj)`` after the object's
``rv`` (resourceVersion) has been bumped from the cluster-wide counter; the
server layer turns those into watch events.  Controllers (ReplicaSet, PDB,
Deployment status) and the scheduler run synchronously after each mutation and
on every tick, so the model is always consistent between calls.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from .scenario import AppSpec, DaemonSetSpec, PDBSpec, Scenario, Taint, Toleration

ZONE_LABEL = "topology.kubernetes.io/zone"
NODE_GROUP_LABEL = "kubesim.io/node-group"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
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

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

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

    @property
    def selector(self) -> dict[str, str]:
        return {"app": self.name}


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
class Namespace:
    name: str
    uid: str
    created: float
    rv: int = 0


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

    def __init__(self, scenario: Scenario, *, seed: int | None = None, retry_after_s: int = 10):
        self.scenario = scenario
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
        self.counters = {"evictions": 0, "pdb_refusals": 0, "deletions": 0, "scheduled": 0, "created": 0}
        self.pdb_controller_paused = False
        self._names: set[str] = set()
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
        for pod, _app in pending:
            node = self._select_node(pod)
            if node is not None:
                self._bind(pod, node, at=t0, ready=True)
        for pod in list(self.pods.values()):
            self._emit("ADDED", "pods", pod)
        for app in sc.apps:
            for pspec in app.pdbs:
                self.add_pdb(app.namespace, pspec, {"app": app.name}, reconcile=False)
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
        h = hashlib.sha256(f"{app.namespace}/{app.name}/{app.image}".encode()).digest()
        phash = "".join(_ALNUM[b % len(_ALNUM)] for b in h[:10])
        rs = ReplicaSet(f"{app.name}-{phash}", app.namespace, self._uid(), phash, dep, created, app.replicas)
        dep.rs = rs
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
            labels={"app": app.name, **app.labels, "pod-template-hash": rs.hash},
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
        )
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
        for taint in node.taints:
            if taint.effect in ("NoSchedule", "NoExecute") and not any(
                t.tolerates(taint) for t in pod.tolerations
            ):
                return "node(s) had untolerated taint"
        for k, v in pod.node_selector.items():
            if node.labels.get(k) != v:
                return "node(s) didn't match Pod's node affinity/selector"
        cpu, mem = requested[node.name]
        if cpu + pod.cpu_request > node.cpu + 1e-9:
            return "Insufficient cpu"
        if mem + pod.mem_request > node.memory + 1e-9:
            return "Insufficient memory"
        return None

    def _select_node(self, pod: Pod) -> Node | None:
        """Default-scheduler-like: filter, then score least-allocated + zone/node spread of the app."""
        requested = self.requested_all()
        feasible, reasons = [], {}
        for node in self.nodes.values():
            why = self._feasible(pod, node, requested)
            if why is None:
                feasible.append(node)
            else:
                reasons[why] = reasons.get(why, 0) + 1
        if not feasible:
            detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            pod.unschedulable_reason = f"0/{len(self.nodes)} nodes are available: {detail}."
            return None
        same_app = [p for p in self.pods.values()
                    if p is not pod and p.app == pod.app and p.namespace == pod.namespace and p.node_name]
        zone_count: dict[str, int] = {n.zone: 0 for n in feasible}
        node_count: dict[str, int] = {n.name: 0 for n in feasible}
        for p in same_app:
            node = self.nodes.get(p.node_name or "")
            if node is None:
                continue
            if node.zone in zone_count:
                zone_count[node.zone] += 1
            if node.name in node_count:
                node_count[node.name] += 1
        zmax, nmax = max(zone_count.values()), max(node_count.values())

        def score(node: Node) -> float:
            cpu, mem = requested[node.name]
            free_cpu = (node.cpu - cpu - pod.cpu_request) / node.cpu
            free_mem = (node.memory - mem - pod.mem_request) / node.memory
            least_allocated = 100.0 * (free_cpu + free_mem) / 2.0
            zone_spread = 100.0 * (zmax - zone_count[node.zone]) / zmax if zmax else 100.0
            node_spread = 100.0 * (nmax - node_count[node.name]) / nmax if nmax else 100.0
            return least_allocated + 0.5 * zone_spread + 0.5 * node_spread

        best = max(feasible, key=lambda n: (score(n), [-ord(c) for c in n.name]))
        return best

    def _bind(self, pod: Pod, node: Node, *, at: float, ready: bool) -> None:
        pod.node_name = node.name
        pod.phase = "Running"
        pod.scheduled_at = at
        pod.unschedulable_reason = None
        if ready:
            pod.ready = True
            pod.ready_at = at
        self.counters["scheduled"] += 1

    def schedule_pending(self) -> int:
        placed = 0
        pending = [p for p in self.pods.values() if p.node_name is None and p.phase == "Pending"]
        for pod in sorted(pending, key=lambda p: (p.created, p.name)):
            if pod.node_name is None:
                node = self._select_node(pod)
                if node is not None:
                    self._bind(pod, node, at=self.t, ready=pod.startup_s <= 0)
                    self._emit("MODIFIED", "pods", pod)
                    placed += 1
        return placed

    # ------------------------------------------------------------------ controllers

    def _by_owner(self) -> dict[str, list[Pod]]:
        idx: dict[str, list[Pod]] = {}
        for p in self.pods.values():
            idx.setdefault(p.owner_uid, []).append(p)
        return idx

    @staticmethod
    def _victim_rank(p: Pod) -> tuple:
        """ReplicaSet's ActivePods ordering (simplified): earlier sorts first = deleted first."""
        phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(p.phase, 0)
        return (
            0 if p.node_name is None else 1,
            phase_rank,
            1 if p.ready else 0,
            p.deletion_cost(),
            -(p.ready_at or 0.0),
            -p.created,
            p.name,
        )

    def _reconcile_replicasets(self) -> None:
        by_owner = self._by_owner()
        for dep in self.deployments.values():
            rs = dep.rs
            assert rs is not None
            if rs.replicas != dep.replicas:
                rs.replicas = dep.replicas
                self._emit("MODIFIED", "replicasets", rs)
            pods = by_owner.get(rs.uid, [])
            if len(pods) < rs.replicas:
                for _ in range(rs.replicas - len(pods)):
                    pod = self._new_pod(dep, created=self.t)
                    self._emit("ADDED", "pods", pod)
            elif len(pods) > rs.replicas:
                for victim in sorted(pods, key=self._victim_rank)[: len(pods) - rs.replicas]:
                    self._remove_pod(victim)

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
                if rs is not None:
                    owners[rs.uid] = rs.deployment.replicas
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
        pods = by_owner.get(dep.rs.uid, [])
        ready = sum(1 for p in pods if p.ready)
        return (len(pods), ready, dep.generation)

    def reconcile(self) -> None:
        """Run the controllers and the scheduler until the model is consistent."""
        self._reconcile_replicasets()
        self.schedule_pending()
        if not self.pdb_controller_paused and self.pdbs:
            # index pods by (namespace, key, value) for the label keys PDB selectors use
            keys = {k for pdb in self.pdbs.values() for k in pdb.selector}
            by_label: dict[tuple[str, str, str], list[Pod]] = {}
            for p in self.pods.values():
                for k in keys:
                    v = p.labels.get(k)
                    if v is not None:
                        by_label.setdefault((p.namespace, k, v), []).append(p)
            for pdb in self.pdbs.values():
                self._recompute_pdb(pdb, by_label)
        by_owner = self._by_owner()
        for dep in self.deployments.values():
            assert dep.rs is not None
            st = self._deployment_status(dep, by_owner)
            if st != dep.rs.status:
                dep.rs.status = st
                self._emit("MODIFIED", "replicasets", dep.rs)
            if st != dep.status:
                dep.status = st
                self._emit("MODIFIED", "deployments", dep)

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
            dep.replicas = replicas
            dep.generation += 1
            self._emit("MODIFIED", "deployments", dep)
            self.reconcile()
        return dep

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
        if labels is not None:
            pod.labels = labels
        if annotations is not None:
            pod.annotations = annotations
        self._emit("MODIFIED", "pods", pod)
        self.reconcile()
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

    # ------------------------------------------------------------------ workload model

    def demand(self, app: AppSpec, t: float, noise: bool = True) -> float:
        d = app.demand
        hour = (t % 86400.0) / 3600.0
        r = d.tide_ratio
        level = d.cpu * (1.0 + (r - 1.0) / (r + 1.0) * math.cos(2 * math.pi * (hour - d.peak_hour) / 24.0))
        if d.spikes is not None:
            s = d.spikes
            minute = (t % (s.every_h * 3600.0)) / 60.0
            if s.at_min <= minute < s.at_min + s.duration_min:
                level *= s.factor
        if noise and d.noise > 0:
            level *= max(0.0, 1.0 + d.noise * float(self.rng.standard_normal()))
        return max(0.0, level)

    def _update_usage(self, noise: bool = True) -> None:
        sc = self.scenario
        by_app: dict[tuple[str, str], list[Pod]] = {}
        for p in self.pods.values():
            if p.app and not p.daemon:
                by_app.setdefault((p.namespace, p.app), []).append(p)
        for dep in self.deployments.values():
            key = (dep.namespace, dep.name)
            demand = self.demand(dep.spec, self.t, noise=noise)
            self.app_demand[key] = demand
            pods = by_app.get(key, [])
            ready = [p for p in pods if p.ready and p.node_name]
            # Ready pods share the app's demand in proportion to their weights (usage_multiplier,
            # default 1): the app's total is conserved, so an eviction moves load, never deletes it.
            weight_sum = sum(p.multiplier for p in ready)
            share = demand / weight_sum if weight_sum > 0 else 0.0
            for p in pods:
                if p.ready and p.node_name:
                    cpu = share * p.multiplier
                    if p.cpu_limit is not None:
                        cpu = min(cpu, p.cpu_limit)
                elif p.node_name:
                    cpu = 0.1 * p.cpu_request
                else:
                    cpu = 0.0
                mem = dep.spec.demand.memory if p.node_name else 0.0
                if noise and p.node_name:
                    mem *= 1.0 + 0.01 * float(self.rng.standard_normal())
                if p.mem_limit is not None:
                    mem = min(mem, p.mem_limit)
                p.usage_cpu, p.usage_memory = cpu, mem
        per_node: dict[str, list[Pod]] = {n: [] for n in self.nodes}
        for p in self.pods.values():
            if p.node_name in per_node:
                per_node[p.node_name].append(p)
        for name, node in self.nodes.items():
            pods = per_node[name]
            total = sum(p.usage_cpu for p in pods)
            room = max(0.0, node.cpu - sc.overhead_cpu)
            if total > room > 0:
                f = room / total
                for p in pods:
                    p.usage_cpu *= f
                total = room
            node.usage_cpu = total + sc.overhead_cpu
            node.usage_memory = sum(p.usage_memory for p in pods) + sc.overhead_memory

    def step(self, dt: float | None = None) -> None:
        """Advance the virtual clock by one tick (``dt`` defaults to the scenario resolution)."""
        dt = self.scenario.resolution_s if dt is None else dt
        self.t += dt
        self.tick += 1
        starting = [p for p in self.pods.values() if not p.ready]
        for pod in sorted(starting, key=lambda p: (p.created, p.name)):
            if (pod.phase == "Running" and not pod.ready and pod.scheduled_at is not None
                    and self.t >= pod.scheduled_at + pod.startup_s - 1e-9):
                pod.ready = True
                pod.ready_at = self.t
                self._emit("MODIFIED", "pods", pod)
        self.reconcile()
        self._update_usage()

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

    def status(self) -> dict:
        nodes = []
        for n in self.nodes.values():
            cpu_req, mem_req = self.requested(n)
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
                "pods": sum(1 for p in self.pods.values() if p.node_name == n.name),
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
        }

    def iter_pods(self, namespace: str | None = None) -> Iterable[Pod]:
        return (p for p in self.pods.values() if namespace is None or p.namespace == namespace)
