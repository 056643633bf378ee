"""The planner's view of the cluster, and the pod-choice filters that read it (pure, no clock).

:class:`ClusterState` is built from ``ClusterEvent``s (ADDED/MODIFIED/SYNC store the snapshot,
DELETED removes it) and from completed metric ticks (:meth:`ClusterState.apply_tick`), which keep
per-node usage for the last ``history`` ticks in event time. A node with no summary in a tick
gets an explicit *missing* entry: missing is never read as zero.

The filters live here once, for every strategy (like descheduler's shared evictor):
:func:`evictable` (may this pod be chosen at all) and :func:`node_fit` (could it run there).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from kubetide.config import DEFAULT_PROTECTED_NAMESPACES
from kubetide.models import (
    ClusterEvent,
    DeploymentSnapshot,
    NamespaceSnapshot,
    NodeSnapshot,
    PdbSnapshot,
    PodSnapshot,
    Taint,
    Toleration,
)
from streams.core.messages import NodeSummary

Key = tuple[str, str]  # (namespace, name)

SYSTEM_CRITICAL_PRIORITY = 2_000_000_000
SYSTEM_PRIORITY_CLASSES = ("system-cluster-critical", "system-node-critical")
EVICT_ANNOTATION = "kubetide.io/evict"
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"


@dataclass(frozen=True)
class EvictorSettings:
    """Which pods any strategy may choose (``streams.evictor`` in the config)."""

    protected_namespaces: tuple[str, ...] = DEFAULT_PROTECTED_NAMESPACES
    evict_local_storage_pods: bool = False
    priority_threshold: int = SYSTEM_CRITICAL_PRIORITY
    respect_pdb: bool = True

    def validate(self) -> None:
        if self.priority_threshold < 0:
            raise ValueError("priority_threshold: must be >= 0")
        if any(not ns for ns in self.protected_namespaces):
            raise ValueError("protected_namespaces: empty namespace name")


@dataclass(frozen=True)
class NodeSample:
    ts: float
    cpu_usage: float
    mem_usage: float
    cpu_allocatable: float
    mem_allocatable: float
    pods: dict[Key, tuple[float, float]]  # (namespace, name) -> (cpu cores, mem bytes)

    @property
    def cpu_pct(self) -> float | None:
        return None if self.cpu_allocatable <= 0 else 100.0 * self.cpu_usage / self.cpu_allocatable

    @classmethod
    def of(cls, s: NodeSummary, node: NodeSnapshot | None = None) -> NodeSample:
        cpu_alloc = s.cpu_allocatable or (node.allocatable.cpu_cores if node else 0.0)
        mem_alloc = s.mem_allocatable or (node.allocatable.mem_bytes if node else 0.0)
        return cls(s.ts, s.cpu_usage, s.mem_usage, cpu_alloc, mem_alloc, s.pod_usage())


@dataclass
class ClusterState:
    history: int = 10
    evictor: EvictorSettings = field(default_factory=lambda: EvictorSettings())
    pods: dict[Key, PodSnapshot] = field(default_factory=dict)
    pod_uids: dict[Key, str | None] = field(default_factory=dict)
    pods_by_node: dict[str, set[Key]] = field(default_factory=dict)
    nodes: dict[str, NodeSnapshot] = field(default_factory=dict)
    pdbs: dict[Key, PdbSnapshot] = field(default_factory=dict)
    deployments: dict[Key, DeploymentSnapshot] = field(default_factory=dict)
    namespaces: dict[str, NamespaceSnapshot] = field(default_factory=dict)
    # Metric ticks: the last `history` planned tick timestamps, and per node its sample per tick
    # (None = the node's summary was missing for that tick).
    ticks: deque[float] = field(default_factory=deque)
    node_samples: dict[str, dict[float, NodeSample | None]] = field(default_factory=dict)
    # Decisions already made (event time), for cooldowns: key -> last made_at.
    last_decision_node: dict[tuple[str, str], float] = field(default_factory=dict)
    last_decision_pod: dict[tuple[str, Key], float] = field(default_factory=dict)

    # ------------------------------------------------------------ events
    def apply_event(self, ev: ClusterEvent) -> None:
        key = (ev.namespace, ev.name)
        deleted = ev.type == "DELETED"
        if ev.kind == "Pod":
            old = self.pods.pop(key, None)
            if old is not None and old.node:
                on_node = self.pods_by_node.get(old.node)
                if on_node is not None:
                    on_node.discard(key)
                    if not on_node:
                        del self.pods_by_node[old.node]
            if deleted:
                self.pod_uids.pop(key, None)
            else:
                assert ev.pod is not None
                self.pods[key] = ev.pod
                self.pod_uids[key] = ev.uid
                if ev.pod.node:
                    self.pods_by_node.setdefault(ev.pod.node, set()).add(key)
        elif ev.kind == "Node":
            if deleted:
                self.nodes.pop(ev.name, None)
                self.node_samples.pop(ev.name, None)
            else:
                assert ev.node is not None
                self.nodes[ev.name] = ev.node
        elif ev.kind == "PodDisruptionBudget":
            if deleted:
                self.pdbs.pop(key, None)
            else:
                assert ev.pdb is not None
                self.pdbs[key] = ev.pdb
        elif ev.kind == "Deployment":
            if deleted:
                self.deployments.pop(key, None)
            else:
                assert ev.deployment is not None
                self.deployments[key] = ev.deployment
        elif ev.kind == "Namespace":
            if deleted:
                self.namespaces.pop(ev.name, None)
            else:
                assert ev.namespace_obj is not None
                self.namespaces[ev.name] = ev.namespace_obj

    # ------------------------------------------------------------ metric ticks
    def apply_tick(self, ts: float, summaries: dict[str, NodeSummary]) -> None:
        """Record a completed tick: a sample for every node that reported, *missing* for the rest."""
        self.ticks.append(ts)
        while len(self.ticks) > self.history:
            old = self.ticks.popleft()
            for per_node in self.node_samples.values():
                per_node.pop(old, None)
        for name in sorted(set(self.nodes) | set(summaries)):
            s = summaries.get(name)
            per_node = self.node_samples.setdefault(name, {})
            per_node[ts] = None if s is None else NodeSample.of(s, self.nodes.get(name))

    @property
    def tick_ts(self) -> float | None:
        return self.ticks[-1] if self.ticks else None

    def sample(self, node: str, ts: float | None = None) -> NodeSample | None:
        ts = self.tick_ts if ts is None else ts
        if ts is None:
            return None
        return self.node_samples.get(node, {}).get(ts)

    def recent_samples(self, node: str, n: int) -> list[NodeSample | None]:
        """The node's samples for the last ``n`` ticks, oldest first (None where missing)."""
        per_node = self.node_samples.get(node, {})
        return [per_node.get(t) for t in list(self.ticks)[-n:]]

    # ------------------------------------------------------------ queries
    def ready_nodes(self) -> list[str]:
        return sorted(n for n, s in self.nodes.items() if s.ready)

    def pods_on(self, node: str) -> list[tuple[Key, PodSnapshot]]:
        out = []
        for k in sorted(self.pods_by_node.get(node, ())):
            p = self.pods[k]
            if p.phase in ("Running", "Pending"):
                out.append((k, p))
        return out

    def requested_on(self, node: str) -> tuple[float, float]:
        cpu = mem = 0.0
        for _, p in self.pods_on(node):
            cpu += p.requests.cpu_cores
            mem += p.requests.mem_bytes
        return cpu, mem

    def pdbs_for(self, namespace: str, pod: PodSnapshot) -> list[tuple[Key, PdbSnapshot]]:
        return [(k, b) for k, b in sorted(self.pdbs.items())
                if k[0] == namespace and b.match_labels
                and all(pod.labels.get(lk) == lv for lk, lv in b.match_labels.items())]

    # ------------------------------------------------------------ cooldown bookkeeping
    def record_decision(self, strategy: str, node: str, pod: Key, made_at: float) -> None:
        self.last_decision_node[(strategy, node)] = max(made_at, self.last_decision_node.get((strategy, node), made_at))
        self.last_decision_pod[(strategy, pod)] = max(made_at, self.last_decision_pod.get((strategy, pod), made_at))

    def prune_decisions(self, now: float, keep_s: float) -> None:
        """Forget decisions older than ``keep_s`` (bounded memory; call with the longest cooldown)."""
        self.last_decision_node = {k: t for k, t in self.last_decision_node.items() if now - t < keep_s}
        self.last_decision_pod = {k: t for k, t in self.last_decision_pod.items() if now - t < keep_s}


# ---------------------------------------------------------------- pod-choice filters

def evictable(key: Key, pod: PodSnapshot, state: ClusterState,
              settings: EvictorSettings | None = None) -> tuple[bool, str]:
    """May any strategy choose this pod? ``(True, "ok")`` or ``(False, reason)``.

    ``settings`` defaults to ``state.evictor``. The PDB check is a pre-filter only: the
    actuator's Eviction API call is the real guard.
    """
    settings = settings or state.evictor
    namespace = key[0]
    if pod.phase != "Running":
        return False, f"phase-{pod.phase.lower()}"
    if pod.workload is None or pod.workload.kind == "Pod":
        return False, "bare-pod"
    if pod.workload.kind == "DaemonSet":
        return False, "daemonset"
    if pod.mirror:
        return False, "mirror-pod"
    if namespace in settings.protected_namespaces:
        return False, "protected-namespace"
    if pod.annotations.get(EVICT_ANNOTATION) == "never":
        return False, "annotation-never"
    safe = pod.annotations.get(SAFE_TO_EVICT_ANNOTATION)
    if safe == "false":
        return False, "safe-to-evict-false"
    if pod.priority >= settings.priority_threshold or pod.priority_class in SYSTEM_PRIORITY_CLASSES:
        return False, "system-critical"
    if pod.local_storage and not settings.evict_local_storage_pods and safe != "true":
        return False, "local-storage"
    if settings.respect_pdb:
        for (_, pdb_name), pdb in state.pdbs_for(namespace, pod):
            if pdb.disruptions_allowed <= 0:
                return False, f"pdb-{pdb_name}"
    return True, "ok"


def tolerates(tolerations: list[Toleration], taint: Taint) -> bool:
    for t in tolerations:
        if t.effect and t.effect != taint.effect:
            continue
        if t.key is None:
            if t.operator == "Exists":
                return True
            continue
        if t.key != taint.key:
            continue
        if t.operator == "Exists" or (t.value or "") == taint.value:
            return True
    return False


def node_fit(pod: PodSnapshot, node_name: str, state: ClusterState,
             extra_requests: tuple[float, float] = (0.0, 0.0)) -> tuple[bool, str]:
    """Could ``pod`` be scheduled on ``node_name`` (ready, schedulable, taints, selector, requests)?

    ``extra_requests`` is (cpu, mem) already planned onto the node in this tick.
    """
    node = state.nodes.get(node_name)
    if node is None:
        return False, "unknown-node"
    if not node.ready:
        return False, "not-ready"
    if node.unschedulable:
        return False, "unschedulable"
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not tolerates(pod.tolerations, taint):
            return False, f"taint-{taint.key}"
    for k, v in pod.node_selector.items():
        if node.labels.get(k) != v:
            return False, f"node-selector-{k}"
    cpu, mem = state.requested_on(node_name)
    if cpu + extra_requests[0] + pod.requests.cpu_cores > node.allocatable.cpu_cores + 1e-9:
        return False, "insufficient-cpu"
    if mem + extra_requests[1] + pod.requests.mem_bytes > node.allocatable.mem_bytes + 1e-9:
        return False, "insufficient-memory"
    return True, "ok"
