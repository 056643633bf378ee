"""The planner's view of the cluster, and the pod-choice filters that read it (pure, no clock).

:class:`ClusterState` is built from ``ClusterEvent``s (ADDED/MODIFIED/SYNC store the snapshot,
DELETED removes it) and from completed metric ticks (:meth:`ClusterState.apply_tick`), which keep
per-node usage for the last ``history`` ticks in event time. A node with no summary in a tick
gets an explicit *missing* entry: missing is never read as zero.

The filters live here once, for every strategy (like descheduler's shared evictor):
:func:`evictable` (may this pod be chosen at all), :func:`node_fit` (could it run there),
:func:`spread_move_ok` (would the move create a topology-spread violation) and :class:`Choice`,
the shared pod-choice layer every strategy plans through (anti-thrash guard, see
:class:`GuardSettings`: cooldowns per pod and per workload, growing backoff per workload when a
replacement lands back on a hot node, limits per node / namespace / workload / in total per
event-time window, hold while metrics are missing, nowhere-to-go means no decision, keep
interfering workloads apart).

The state also follows what happened after each decision (:meth:`ClusterState.record`): the
evicted pod's workload gets a new pod, and the node that pod is bound to (from the Pod events)
is its *landing*. A landing back on the source or on a hot node raises the workload's backoff.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from kubetide.config import DEFAULT_PROTECTED_NAMESPACES
from kubetide.models import (
    Anomaly,
    ClusterEvent,
    DeploymentSnapshot,
    DescheduleDecision,
    NamespaceSnapshot,
    NodeSnapshot,
    PdbSnapshot,
    PodRef,
    PodSnapshot,
    Taint,
    Toleration,
    TopologySpread,
    decision_id,
)
from streams.core.messages import NodeSummary

Key = tuple[str, str]  # (namespace, name)

SYSTEM_CRITICAL_PRIORITY = 2_000_000_000
SYSTEM_PRIORITY_CLASSES = ("system-cluster-critical", "system-node-critical")
EVICT_ANNOTATION = "kubetide.io/evict"
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"
POD_LOG_MAX = 100_000  # see ClusterState._pod_log
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class EvictorSettings:
    """Which pods any strategy may choose (``streams.evictor`` in the config)."""

    protected_namespaces: tuple[str, ...] = DEFAULT_PROTECTED_NAMESPACES
    evict_local_storage_pods: bool = False
    priority_threshold: int = SYSTEM_CRITICAL_PRIORITY
    respect_pdb: bool = True
    # Pods younger than this (event time since creation) are never chosen, like the descheduler's
    # DefaultEvictor ``minPodAge``: a pod that just replaced an evicted one is not moved again at once.
    min_pod_age_s: float = 1800.0

    def validate(self) -> None:
        if self.priority_threshold < 0:
            raise ValueError("priority_threshold: must be >= 0")
        if self.min_pod_age_s < 0:
            raise ValueError("min_pod_age_s: must be >= 0")
        if any(not ns for ns in self.protected_namespaces):
            raise ValueError("protected_namespaces: empty namespace name")


@dataclass(frozen=True)
class GuardSettings:
    """Anti-thrash rules shared by every strategy (``streams.guard`` in the config; event time)."""

    window_s: float = 3600.0
    max_per_node: int = 3
    max_per_namespace: int = 10
    max_per_workload: int = 3
    max_total: int = 30
    pod_cooldown_s: float = 1800.0
    workload_cooldown_s: float = 120.0
    backoff_base_s: float = 600.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 21600.0
    replacement_window_s: float = 900.0
    hot_cpu_pct: float = 80.0
    keep_apart_s: float = 86400.0
    # No pod of a workload leaves a node where one of its replacements landed this recently
    # (that would undo the earlier move: ping-pong between nodes).
    landing_hold_s: float = 1800.0
    # A node with a PreferNoSchedule taint the pod does not tolerate is no target: the scheduler places
    # the replacement elsewhere whenever it can (e.g. elastic nodes tainted so pods fill fixed ones first).
    avoid_prefer_no_schedule: bool = True
    # The cluster scheduler's load-aware score weight (0: kube-scheduler's defaults, requests only), for
    # predicting where an evicted pod's replacement lands (predicted_landing)
    scheduler_load_weight: float = 0.0

    def validate(self) -> None:
        if self.landing_hold_s < 0:
            raise ValueError("landing_hold_s: must be >= 0")
        for f in ("window_s", "replacement_window_s"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f}: must be > 0")
        for f in ("max_per_node", "max_per_namespace", "max_per_workload", "max_total"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f}: must be >= 1 (disable strategies to stop decisions)")
        for f in ("pod_cooldown_s", "workload_cooldown_s", "backoff_base_s", "backoff_max_s", "keep_apart_s",
                  "scheduler_load_weight"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f}: must be >= 0")
        if self.backoff_factor < 1:
            raise ValueError("backoff_factor: must be >= 1")
        if not 0 < self.hot_cpu_pct <= 100:
            raise ValueError("hot_cpu_pct: must be in (0, 100]")


@dataclass(frozen=True)
class Move:
    """One recorded decision, followed until its replacement lands (or ``replacement_window_s`` passes)."""

    made_at: float
    strategy: str
    pod: Key
    workload: str
    from_node: str
    to_node: str | None
    requests: tuple[float, float] = (0.0, 0.0)
    usage: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Landing:
    ts: float
    workload: str
    evicted: Key
    replacement: Key
    from_node: str
    node: str
    hot: bool


@dataclass(frozen=True)
class NodeSample:
    ts: float
    cpu_usage: float
    mem_usage: float
    cpu_allocatable: float
    mem_allocatable: float
    pods_given: dict[Key, tuple[float, float]] | None = None
    summary: NodeSummary | None = field(default=None, repr=False, compare=False)

    @cached_property
    def pods(self) -> dict[Key, tuple[float, float]]:
        """(namespace, name) -> (cpu cores, mem bytes); built from the summary on first use (most
        samples are only ever read for node totals)."""
        if self.pods_given is not None:
            return self.pods_given
        return self.summary.pod_usage() if self.summary is not None else {}

    @property
    def cpu_pct(self) -> float | None:
        return None if self.cpu_allocatable <= 0 else 100.0 * self.cpu_usage / self.cpu_allocatable

    @classmethod
    def of(cls, s: NodeSummary, node: NodeSnapshot | None = None) -> NodeSample:
        cpu_alloc = s.cpu_allocatable or (node.allocatable.cpu_cores if node else 0.0)
        mem_alloc = s.mem_allocatable or (node.allocatable.mem_bytes if node else 0.0)
        return cls(s.ts, s.cpu_usage, s.mem_usage, cpu_alloc, mem_alloc, summary=s)


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
    # Anti-thrash guard (any strategy): see GuardSettings and record().
    guard: GuardSettings = field(default_factory=lambda: GuardSettings())
    moves: deque[Move] = field(default_factory=deque)  # every recorded decision in the window, oldest first
    pending: dict[str, list[Move]] = field(default_factory=dict)  # workload -> moves awaiting a replacement
    landings: list[Landing] = field(default_factory=list)  # the last 1000 replacements seen
    last_move_pod: dict[Key, float] = field(default_factory=dict)
    last_move_workload: dict[str, float] = field(default_factory=dict)
    backoff_level: dict[str, int] = field(default_factory=dict)
    backoff_until: dict[str, float] = field(default_factory=dict)
    planned: dict[Key, Move] = field(default_factory=dict)  # decisions of the current tick (all strategies)
    # Interference: open anomalies by id, and pairs of workloads to keep apart -> last confirmed at.
    anomalies: dict[str, Anomaly] = field(default_factory=dict)
    acted: set[str] = field(default_factory=set)
    apart: dict[tuple[str, str], float] = field(default_factory=dict)

    # Bumped by every applied event: derived indexes (``cached``) are rebuilt only after a change.
    version: int = 0
    _cache: dict[str, tuple[int, Any]] = field(default_factory=dict, repr=False)
    # (landings signature, (workload, node) -> latest landing ts): see last_landing()
    _landing_index: tuple[tuple[int, int, int], dict[tuple[str, str], float]] | None = \
        field(default=None, repr=False, compare=False)
    # (the pairs of `apart`, in order; the index built from them): see apart_index()
    _apart_index: tuple[tuple[tuple[str, str], ...], dict[str, set[str]]] | None = \
        field(default=None, repr=False, compare=False)
    # Bumped when a PDB appears, goes or changes its selector (not its status): which PDBs select which labels
    # (see pdbs_for) is kept across the frequent status-only PDB events and every other event.
    pdb_selectors_version: int = field(default=0, repr=False, compare=False)
    _pdb_match: tuple[int, dict[tuple[str, tuple[tuple[str, str], ...]], list[Key]]] = \
        field(default_factory=lambda: (-1, {}), repr=False, compare=False)
    # The key of every applied Pod event, in order (``_pod_log[0]`` is pod event number ``_pod_log_start``):
    # indexes over the pods (see ``incremental``) catch up on the pods changed since they were built instead of
    # being rebuilt. Bounded: past POD_LOG_MAX entries the oldest half goes (an index that far behind rebuilds).
    _pod_log: list[Key] = field(default_factory=list, repr=False, compare=False)
    _pod_log_start: int = field(default=0, repr=False, compare=False)
    _incr: dict[Any, tuple[int, int, Any]] = field(default_factory=dict, repr=False, compare=False)
    # memo name -> node -> a value that reads only the pods on that node (``_node_memo``): a pod event drops the
    # entries of the node the pod was on and of the node it is on now, every other node's value is kept
    _node_memos: dict[Any, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def cached(self, name: str, build: Callable[[], Any]) -> Any:
        """``build()``'s value, recomputed only when an event was applied since it was last built."""
        hit = self._cache.get(name)
        if hit is None or hit[0] != self.version:
            hit = self._cache[name] = (self.version, build())
        return hit[1]

    def incremental(self, name: Any, build: Callable[[], Any], catch_up: Callable[[Any, list[Key]], Any]) -> Any:
        """Like :meth:`cached`, for a value derived from the pods alone: after events it is brought up to date by
        ``catch_up(value, keys)`` from the keys of the pod events applied since (added, modified or deleted pods,
        in event order) instead of rebuilt. ``catch_up`` must return what ``build()`` would return now, without
        changing ``value`` (callers may still hold it). ``build()`` when there is no value yet or the pod log no
        longer reaches back to it."""
        hit = self._incr.get(name)
        if hit is not None and hit[0] == self.version:
            return hit[2]
        if hit is None or hit[1] < self._pod_log_start:
            value = build()
        else:
            value = catch_up(hit[2], self._pod_log[hit[1] - self._pod_log_start:])
        self._incr[name] = (self.version, self._pod_log_start + len(self._pod_log), value)
        return value

    # ------------------------------------------------------------ events
    def apply_event(self, ev: ClusterEvent) -> None:
        key = (ev.namespace, ev.name)
        deleted = ev.type == "DELETED"
        self.version += 1
        if ev.kind == "Pod":
            self._pod_log.append(key)
            if len(self._pod_log) > POD_LOG_MAX:
                half = len(self._pod_log) // 2
                del self._pod_log[:half]
                self._pod_log_start += half
            old = self.pods.pop(key, None)
            for memo in self._node_memos.values():
                if old is not None and old.node:
                    memo.pop(old.node, None)
                if not deleted and ev.pod is not None and ev.pod.node:
                    memo.pop(ev.pod.node, None)
            if not deleted and ev.pod is not None and ev.pod.node and (old is None or not old.node):
                self._landed(key, ev.pod, ev.ts)
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
            old_pdb = self.pdbs.get(key)
            if deleted:
                self.pdbs.pop(key, None)
                if old_pdb is not None:
                    self.pdb_selectors_version += 1
            else:
                assert ev.pdb is not None
                self.pdbs[key] = ev.pdb
                if old_pdb is None or old_pdb.match_labels != ev.pdb.match_labels:
                    self.pdb_selectors_version += 1
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

    def _landed(self, key: Key, pod: PodSnapshot, ts: float) -> None:
        """A pod was just bound to a node: if its workload has a pending move, this is the replacement."""
        if pod.workload is None or pod.node is None:
            return
        wl = pod.workload.key
        waiting = [mv for mv in self.pending.get(wl, []) if 0 <= ts - mv.made_at <= self.guard.replacement_window_s
                   and (mv.pod != key or ts > mv.made_at)]
        if not waiting:
            self.pending.pop(wl, None)
            return
        mv = waiting.pop(0)
        self.pending[wl] = waiting
        smp = self.sample(pod.node)
        hot = pod.node == mv.from_node or (smp is not None and smp.cpu_pct is not None
                                             and smp.cpu_pct >= self.guard.hot_cpu_pct)
        self.landings.append(Landing(ts, wl, mv.pod, key, mv.from_node, pod.node, hot))
        del self.landings[:-1000]
        g = self.guard
        level = self.backoff_level.get(wl, 0)
        if hot:
            level += 1
            self.backoff_until[wl] = ts + min(g.backoff_max_s, g.backoff_base_s * g.backoff_factor ** (level - 1))
        else:
            level = max(0, level - 1)
        if level:
            self.backoff_level[wl] = level
        else:
            self.backoff_level.pop(wl, None)

    # ------------------------------------------------------------ anomalies
    def apply_anomaly(self, a: Anomaly) -> None:
        """An interference finding: ``open`` keeps it (until ``cleared``) and records the victim's and
        each antagonist's workloads as a pair to keep apart (for ``guard.keep_apart_s`` after ``a.ts``)."""
        if a.state == "cleared":
            self.anomalies.pop(a.id, None)
            return
        self.anomalies[a.id] = a
        victim = self.workload_of(a.victim.namespace, a.victim.name, a.victim.app)
        for s in a.antagonists:
            other = self.workload_of(s.namespace, s.name, s.app)
            if victim and other and other != victim:
                pair = (min(victim, other), max(victim, other))
                self.apart[pair] = max(a.ts, self.apart.get(pair, a.ts))

    def workload_of(self, namespace: str, name: str, app: str | None = None) -> str | None:
        """The workload key (``namespace/name``) of a pod, from the state, else from its app."""
        pod = self.pods.get((namespace, name))
        if pod is not None and pod.workload is not None:
            return pod.workload.key
        if pod is not None and pod.app:
            return f"{namespace}/{pod.app}"
        return f"{namespace}/{app}" if app else None

    def last_landing(self, workload: str, node: str) -> float | None:
        """The latest ``ts`` of a landing of ``workload`` on ``node`` among :attr:`landings` (None: none). An
        index rebuilt only when the list changed (a landing is rare; this is asked for every candidate pod)."""
        lds = self.landings
        sig = (len(lds), id(lds[0]) if lds else 0, id(lds[-1]) if lds else 0)
        if self._landing_index is None or self._landing_index[0] != sig:
            index: dict[tuple[str, str], float] = {}
            for ld in lds:
                k = (ld.workload, ld.node)
                if k not in index or ld.ts > index[k]:
                    index[k] = ld.ts
            self._landing_index = (sig, index)
        return self._landing_index[1].get((workload, node))

    def kept_apart_from(self, workload: str) -> set[str]:
        return set(self.apart_index().get(workload, ()))

    def apart_index(self) -> dict[str, set[str]]:
        """workload -> the workloads kept apart from it (both directions of every pair in :attr:`apart`). Shared:
        callers must not change it. Rebuilt only when the pairs (the keys of :attr:`apart`, in order) changed: an
        anomaly confirming a known pair moves only its time, and every strategy's choice of every tick asks."""
        pairs = tuple(self.apart)
        hit = self._apart_index
        if hit is not None and hit[0] == pairs:
            return hit[1]
        index = self._build_apart_index()
        self._apart_index = (pairs, index)
        return index

    def _build_apart_index(self) -> dict[str, set[str]]:
        index: dict[str, set[str]] = {}
        for a, b in self.apart:
            index.setdefault(a, set()).add(b)
            index.setdefault(b, set()).add(a)
        return index

    # ------------------------------------------------------------ metric ticks
    def apply_tick(self, ts: float, summaries: dict[str, NodeSummary]) -> None:
        """Record a completed tick: a sample for every node that reported, *missing* for the rest."""
        if self.tick_ts != ts:
            self.planned = {}
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

    def pod_usage_history(self, key: Key, n: int) -> list[tuple[float, float]]:
        """The pod's (cpu, mem) usage in the last ``n`` ticks on its current node (ticks without it skipped)."""
        pod = self.pods.get(key)
        if pod is None or not pod.node:
            return []
        out = []
        for smp in self.recent_samples(pod.node, n):
            if smp is not None and key in smp.pods:
                out.append(smp.pods[key])
        return out

    # ------------------------------------------------------------ queries
    def zone_of(self, node: str, topology_key: str = ZONE_LABEL) -> str | None:
        """The node's value of ``topology_key`` (its zone by default). A node not (yet) known from
        ``cluster.events`` — events and metrics travel on different partitions — takes the zone its
        latest scrape reported."""
        snap = self.nodes.get(node)
        if snap is None:
            if topology_key != ZONE_LABEL:
                return None
            samples = self.node_samples.get(node)
            if not samples:
                return None
            for ts in sorted(samples, reverse=True):
                smp = samples[ts]
                if smp is not None and smp.summary is not None and smp.summary.zone:
                    return smp.summary.zone
            return None
        if topology_key == ZONE_LABEL and snap.zone:
            return snap.zone
        return snap.labels.get(topology_key)

    def _memo(self, name: str, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` for ``key`` in the memo ``name``, kept until the next event (as :meth:`cached`)."""
        memo: dict[Any, Any] = self.cached(name, dict)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = build()
        return hit

    def ready_nodes(self) -> list[str]:
        # a fresh list each call (callers may keep or change it); the sort is redone only after an event
        return list(self.cached("ready_nodes", lambda: sorted(n for n, s in self.nodes.items() if s.ready)))

    def _node_memo(self, name: Any, node: str, build: Callable[[], Any]) -> Any:
        """``build()`` for ``node`` in the memo ``name`` (hashable; planners name theirs with their settings), for
        values that read only the pods on the node (their keys and snapshots): kept until a pod event on that node
        (see ``_node_memos``). Never None."""
        memo = self._node_memos.get(name)
        if memo is None:
            memo = self._node_memos[name] = {}
        hit = memo.get(node)
        if hit is None:
            hit = memo[node] = build()
        return hit

    def pods_on(self, node: str) -> list[tuple[Key, PodSnapshot]]:
        # a fresh list each call; the node's sorted pods are memoised until a pod event on the node
        return list(self._node_memo("pods_on", node, lambda: [
            (k, p) for k in sorted(self.pods_by_node.get(node, ()))
            if (p := self.pods[k]).phase in ("Running", "Pending")]))

    def workloads_on(self, node: str) -> frozenset[str]:
        """The workload keys of the node's Running / Pending pods (:meth:`pods_on`), memoised until a pod event on
        the node."""
        return self._node_memo("workloads_on", node, lambda: frozenset(
            p.workload.key for _, p in self.pods_on(node) if p.workload is not None))

    def requested_on(self, node: str) -> tuple[float, float]:
        def build() -> tuple[float, float]:
            cpu = mem = 0.0
            for _, p in self.pods_on(node):
                cpu += p.requests.cpu_cores
                mem += p.requests.mem_bytes
            return cpu, mem

        return self._node_memo("requested_on", node, build)  # until a pod event on the node

    def pdbs_for(self, namespace: str, pod: PodSnapshot) -> list[tuple[Key, PdbSnapshot]]:
        """The namespace's PDBs whose selector matches the pod, by key, with their current snapshots. Which
        ones match is memoised per (namespace, pod labels) until a PDB appears, goes or changes its selector
        (``pdb_selectors_version``): most pods share their workload's labels, and most PDB events only move
        their status (disruptions allowed), which is read from :attr:`pdbs` at each call."""
        version, memo = self._pdb_match
        if version != self.pdb_selectors_version:
            self._pdb_match = (self.pdb_selectors_version, memo := {})
        mk = (namespace, tuple(pod.labels.items()))
        keys = memo.get(mk)
        if keys is None:
            if len(memo) > 2 * len(self.pods) + 256:  # bounded (pods with labels of their own come and go)
                memo.clear()
            keys = memo[mk] = [
                k for k, b in self.cached("pdbs_by_namespace", self._pdbs_by_namespace).get(namespace, ())
                if all(pod.labels.get(lk) == lv for lk, lv in b.match_labels.items())]
        pdbs = self.pdbs
        return [(k, pdbs[k]) for k in keys]

    def _pdbs_by_namespace(self) -> dict[str, list[tuple[Key, PdbSnapshot]]]:
        out: dict[str, list[tuple[Key, PdbSnapshot]]] = {}
        for k, b in sorted(self.pdbs.items()):
            if b.match_labels:
                out.setdefault(k[0], []).append((k, b))
        return out

    def _pods_by_label(self) -> dict[tuple[str, str, str], list[tuple[Key, PodSnapshot]]]:
        """(namespace, label, value) -> the pods carrying it, in :attr:`pods` order (the plain rule)."""
        index: dict[tuple[str, str, str], list[tuple[Key, PodSnapshot]]] = {}
        for k, p in self.pods.items():
            for lk, lv in p.labels.items():
                index.setdefault((k[0], lk, lv), []).append((k, p))
        return index

    def pods_by_label(self) -> dict[tuple[str, str, str], list[tuple[Key, PodSnapshot]]]:
        """:meth:`_pods_by_label`, caught up from the pod events rather than rebuilt (don't change it)."""
        return self.incremental("pods_by_label", self._label_index, self._label_index_catch_up)[0]

    def _label_index(self) -> tuple[dict[tuple[str, str, str], list[tuple[Key, PodSnapshot]]],
                                    dict[Key, tuple[tuple[str, str, str], ...]]]:
        return self._pods_by_label(), {k: tuple((k[0], lk, lv) for lk, lv in p.labels.items())
                                       for k, p in self.pods.items()}

    def _label_index_catch_up(self, old: tuple[dict[tuple[str, str, str], list[tuple[Key, PodSnapshot]]],
                                                dict[Key, tuple[tuple[str, str, str], ...]]],
                              keys: list[Key]) -> tuple[dict[tuple[str, str, str], list[tuple[Key, PodSnapshot]]],
                                                        dict[Key, tuple[tuple[str, str, str], ...]]]:
        """Each event moves its pod to the end of :attr:`pods` (or out of it): the lists keep their pods that did
        not change, in order, followed by the changed pods still present, in the order of their last event."""
        index, where = dict(old[0]), dict(old[1])
        last = list(dict.fromkeys(reversed(keys)))[::-1]  # each changed key once, by its last event
        changed = set(last)
        lists = {t: [e for e in index[t] if e[0] not in changed] for k in last for t in where.get(k, ())}
        for k in last:
            p = self.pods.get(k)
            if p is None:
                where.pop(k, None)
                continue
            triples = where[k] = tuple((k[0], lk, lv) for lk, lv in p.labels.items())
            for t in triples:
                lst = lists.get(t)
                if lst is None:
                    lst = lists[t] = list(index.get(t, ()))
                lst.append((k, p))
        for t, lst in lists.items():  # new lists: the old ones are left as they were
            if lst:
                index[t] = lst
            else:
                del index[t]
        return index, where

    def pods_by_workload(self) -> dict[str, list[tuple[Key, PodSnapshot]]]:
        """Pods grouped by workload key (each list sorted by pod key), caught up from the pod events rather than
        rebuilt (don't change it; the workloads' order is not :meth:`_pods_by_workload`'s)."""
        return self.incremental("pods_by_workload", self._workload_index, self._workload_index_catch_up)[0]

    def _pods_by_workload(self) -> dict[str, list[tuple[Key, PodSnapshot]]]:
        """:meth:`pods_by_workload`, built from every pod."""
        out: dict[str, list[tuple[Key, PodSnapshot]]] = {}
        for k, p in sorted(self.pods.items()):
            if p.workload is not None:
                out.setdefault(p.workload.key, []).append((k, p))
        return out

    def _workload_index(self) -> tuple[dict[str, list[tuple[Key, PodSnapshot]]], dict[Key, str]]:
        return self._pods_by_workload(), {k: p.workload.key for k, p in self.pods.items() if p.workload is not None}

    def _workload_index_catch_up(self, old: tuple[dict[str, list[tuple[Key, PodSnapshot]]], dict[Key, str]],
                                 keys: list[Key]) -> tuple[dict[str, list[tuple[Key, PodSnapshot]]], dict[Key, str]]:
        """Each changed pod leaves the list of the workload it was in and enters, in key order, the list of the one
        it is in now (new lists: the old ones are left as they were)."""
        index, where = dict(old[0]), dict(old[1])
        changed = list(dict.fromkeys(keys))
        lists: dict[str, list[tuple[Key, PodSnapshot]]] = {}

        def edit(wl: str) -> list[tuple[Key, PodSnapshot]]:
            lst = lists.get(wl)
            if lst is None:
                lst = lists[wl] = list(index.get(wl, ()))
            return lst

        for k in changed:
            wl = where.pop(k, None)
            if wl is not None:
                lst = edit(wl)
                del lst[bisect.bisect_left(lst, k, key=_entry_key)]
        for k in changed:
            p = self.pods.get(k)
            if p is not None and p.workload is not None:
                where[k] = p.workload.key
                bisect.insort(edit(p.workload.key), (k, p), key=_entry_key)
        for wl, lst in lists.items():
            if lst:
                index[wl] = lst
            else:
                index.pop(wl, None)
        return index, where

    # ------------------------------------------------------------ cooldown bookkeeping
    def record_decision(self, strategy: str, node: str, pod: Key, made_at: float) -> None:
        self.last_decision_node[(strategy, node)] = max(made_at, self.last_decision_node.get((strategy, node), made_at))
        self.last_decision_pod[(strategy, pod)] = max(made_at, self.last_decision_pod.get((strategy, pod), made_at))

    def record(self, d: DescheduleDecision) -> None:
        """Record a decision made (by the planner, after each strategy): strategy cooldowns, the guard's
        window, cooldowns, in-tick bookkeeping, and a pending move whose replacement will be followed."""
        key = (d.pod.namespace, d.pod.name)
        self.record_decision(d.strategy, d.from_node, key, d.made_at)
        pod = self.pods.get(key)
        to = d.evidence.get("best_target")
        req = (pod.requests.cpu_cores, pod.requests.mem_bytes) if pod is not None else (0.0, 0.0)
        smp = self.sample(d.from_node)
        usage = smp.pods.get(key, (0.0, 0.0)) if smp is not None else (0.0, 0.0)
        mv = Move(d.made_at, d.strategy, key, d.workload.key, d.from_node, to if isinstance(to, str) else None,
                  req, usage)
        self.moves.append(mv)
        self.pending.setdefault(mv.workload, []).append(mv)
        self.last_move_pod[key] = max(d.made_at, self.last_move_pod.get(key, d.made_at))
        self.last_move_workload[mv.workload] = max(d.made_at, self.last_move_workload.get(mv.workload, d.made_at))
        if d.made_at == self.tick_ts:
            self.planned[key] = mv
        aid = d.evidence.get("anomaly_id")
        if isinstance(aid, str):
            self.acted.add(aid)

    def prune_decisions(self, now: float, keep_s: float) -> None:
        """Forget decisions older than ``keep_s`` (bounded memory; call with the longest cooldown),
        and guard entries that no rule reads any more."""
        self.last_decision_node = _recent(self.last_decision_node, now, keep_s)
        self.last_decision_pod = _recent(self.last_decision_pod, now, keep_s)
        g = self.guard
        while self.moves and now - self.moves[0].made_at >= g.window_s:
            self.moves.popleft()
        self.last_move_pod = _recent(self.last_move_pod, now, g.pod_cooldown_s)
        self.last_move_workload = _recent(self.last_move_workload, now, max(g.workload_cooldown_s, g.window_s))
        self.pending = {w: kept for w, mvs in self.pending.items()
                        if (kept := [mv for mv in mvs if now - mv.made_at <= g.replacement_window_s])}
        # A workload's backoff level is forgiven once it has stayed out of backoff for backoff_max_s.
        for w in [w for w, t in self.backoff_until.items() if now >= t + g.backoff_max_s]:
            del self.backoff_until[w]
            self.backoff_level.pop(w, None)
        # (called every tick; the pairs and anomalies are kept for a day: rebuilt only when one expires)
        self.apart = _recent(self.apart, now, g.keep_apart_s)
        if self.anomalies and now - min(a.ts for a in self.anomalies.values()) >= g.keep_apart_s:
            self.anomalies = {i: a for i, a in self.anomalies.items() if now - a.ts < g.keep_apart_s}
        if any(i not in self.anomalies for i in self.acted):
            self.acted &= set(self.anomalies)


def _recent(d: dict[Any, float], now: float, keep_s: float) -> dict[Any, float]:
    """``{k: t for k, t in d.items() if now - t < keep_s}``: ``d`` itself when no entry is that old."""
    if d and now - min(d.values()) >= keep_s:
        return {k: t for k, t in d.items() if now - t < keep_s}
    return d


class PerVersion:
    """Values a planner derives from a :class:`ClusterState`'s objects, rebuilt only after an event was applied
    to it (``state.version`` moved), when asked about another state, or when the caller's own ``key`` (inputs
    that are not in the state, e.g. the planner's bookkeeping) differs from the one it was built with. Unlike
    :meth:`ClusterState.cached` the values live with the planner (they may depend on its settings); each holds
    the state it was built from and is compared by identity, so a different state never reads another one's
    value. One value per ``name``."""

    def __init__(self) -> None:
        self._hits: dict[str, tuple[ClusterState, int, Any, Any]] = {}

    def get(self, state: ClusterState, name: str, build: Callable[[], Any], *, key: Any = None) -> Any:
        hit = self._hits.get(name)
        if hit is None or hit[0] is not state or hit[1] != state.version or hit[2] != key:
            hit = self._hits[name] = (state, state.version, key, build())
        return hit[3]


# ---------------------------------------------------------------- pod-choice filters

def evictable(key: Key, pod: PodSnapshot, state: ClusterState,
              settings: EvictorSettings | None = None) -> tuple[bool, str]:
    """May any strategy choose this pod? ``(True, "ok")`` or ``(False, reason)``.

    ``settings`` defaults to ``state.evictor``. The PDB check is a pre-filter only: the
    actuator's Eviction API call is the real guard.
    """
    settings = settings or state.evictor
    # memoised per pod until the next event: the answer reads only the pod, the settings, the tick and the
    # PDBs (several strategies, and LowNodeLoad twice per candidate, ask about the same pods in a tick)
    memo: dict[Key, tuple[PodSnapshot, EvictorSettings, float | None, tuple[bool, str]]] = \
        state.cached("evictable", dict)
    now = state.tick_ts
    hit = memo.get(key)
    if hit is not None and hit[0] is pod and hit[1] is settings and hit[2] == now:
        return hit[3]
    out = _evictable(key, pod, state, settings, now)
    memo[key] = (pod, settings, now, out)
    return out


def _evictable(key: Key, pod: PodSnapshot, state: ClusterState, settings: EvictorSettings,
               now: float | None) -> tuple[bool, str]:
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
    if settings.min_pod_age_s > 0 and pod.created_at is not None and now is not None \
            and now - pod.created_at <= settings.min_pod_age_s:
        return False, "too-young"
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


def untolerated_prefer_no_schedule(pod: PodSnapshot, node: NodeSnapshot) -> int:
    """How many of ``node``'s PreferNoSchedule taints ``pod`` does not tolerate."""
    if not node.taints:  # most nodes: nothing to count
        return 0
    return sum(1 for t in node.taints if t.effect == "PreferNoSchedule" and not tolerates(pod.tolerations, t))


def prefer_no_schedule_ok(pod: PodSnapshot, node: NodeSnapshot | None) -> bool:
    """False when ``node`` has a PreferNoSchedule taint that ``pod`` does not tolerate."""
    return node is None or untolerated_prefer_no_schedule(pod, node) == 0


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


# ---------------------------------------------------------------- topology spread

def spread_counts(state: ClusterState, namespace: str, pod: PodSnapshot, c: TopologySpread,
                  moved: dict[Key, str] | None = None, cache: dict | None = None) -> dict[str, int]:
    """Matching pods per domain of ``c.topology_key``, counted like the scheduler: Running and ready
    pods of the namespace matching ``c.match_labels``, over the domains of ready nodes that pass the
    pod's node selector. ``moved`` maps pods already planned to move this tick to their target node.
    ``cache`` (a dict owned by the caller, cleared whenever ``moved`` changes) memoises the counts.

    The domains (:func:`spread_domains`) and the counted pods (:func:`spread_members`) are memoised on
    the state until its next event, so a call costs one zone lookup per counted pod."""
    selector = tuple(sorted(pod.node_selector.items()))
    labels = tuple(sorted(c.match_labels.items()))
    ck = (namespace, c.topology_key, labels, selector)
    if cache is not None and ck in cache:
        return dict(cache[ck])
    counts = dict(spread_domains(state, c.topology_key, selector))
    if not labels:
        return counts
    moved = moved or {}
    zone_of = state.zone_of
    for k, node in spread_members(state, namespace, labels):
        d = zone_of(moved.get(k, node), c.topology_key)
        if d is not None and d in counts:
            counts[d] += 1
    if cache is not None:
        cache[ck] = dict(counts)
    return counts


def spread_domains(state: ClusterState, topology_key: str, selector: tuple[tuple[str, str], ...]) -> dict[str, int]:
    """Every domain of ``topology_key`` among the ready nodes whose labels pass ``selector`` (sorted
    ``(label, value)`` pairs) -> 0, in ready-node order; memoised until the next event (don't change it)."""
    def build() -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in state.ready_nodes():
            node = state.nodes[n]
            if all(node.labels.get(k) == v for k, v in selector):
                d = state.zone_of(n, topology_key)
                if d is not None:
                    counts.setdefault(d, 0)
        return counts

    return state._memo("spread_domains", (topology_key, selector), build)


def spread_members(state: ClusterState, namespace: str,
                   labels: tuple[tuple[str, str], ...]) -> list[tuple[Key, str]]:
    """(pod key, node) of the namespace's Running, ready, placed pods whose labels match ``labels`` (sorted
    ``(label, value)`` pairs, at least one), in :attr:`ClusterState.pods` order; memoised until the next event."""
    def build() -> list[tuple[Key, str]]:
        index = state.pods_by_label()
        pods = min((index.get((namespace, lk, lv), []) for lk, lv in labels), key=len)
        return [(k, p.node) for k, p in pods
                if p.phase == "Running" and p.ready and p.node
                and all(p.labels.get(lk) == lv for lk, lv in labels)]

    return state._memo("spread_members", (namespace, labels), build)


def skew(counts: dict[str, int]) -> int:
    return max(counts.values()) - min(counts.values()) if counts else 0


def spread_move_ok(state: ClusterState, key: Key, pod: PodSnapshot, from_node: str, to_node: str,
                   moved: dict[Key, str] | None = None, cache: dict | None = None) -> tuple[bool, str]:
    """Would moving ``pod`` from ``from_node`` to ``to_node`` create a topology-spread violation?

    For each of the pod's constraints (both DoNotSchedule and ScheduleAnyway) the move is allowed
    when the skew after it is within ``max_skew`` or lower than before (never a new violation)."""
    for c in pod.topology_spread:
        a, b = state.zone_of(from_node, c.topology_key), state.zone_of(to_node, c.topology_key)
        if a == b:
            continue
        counts = spread_counts(state, key[0], pod, c, moved, cache)
        if b is None or b not in counts:
            return False, f"spread-unknown-domain-{c.topology_key}"
        before = skew(counts)
        counted = pod.phase == "Running" and pod.ready and a in counts and counts[a] > 0 and all(
            pod.labels.get(k) == v for k, v in c.match_labels.items())
        if counted:
            counts[a] -= 1
        counts[b] += 1
        after = skew(counts)
        if after > c.max_skew and after >= before:
            return False, f"spread-{c.topology_key}"
    return True, "ok"


# ---------------------------------------------------------------- where the scheduler puts a replacement

SPREAD_SCORE_WEIGHT = 2.0  # PodTopologySpread's default score weight


def _entry_key(e: tuple[Key, PodSnapshot]) -> Key:
    return e[0]


def _landing_nodes(state: ClusterState) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 list[int]]:
    """The nodes a replacement could be bound to at all (ready, schedulable, allocatable > 0), by name, with
    their allocatable and requested CPU / memory, and the indices of those with taints."""
    cand = [n for n in state.ready_nodes() if not state.nodes[n].unschedulable
            and state.nodes[n].allocatable.cpu_cores > 0 and state.nodes[n].allocatable.mem_bytes > 0]
    req = [state.requested_on(n) for n in cand]
    return (cand, np.array([state.nodes[n].allocatable.cpu_cores for n in cand], dtype=float),
            np.array([state.nodes[n].allocatable.mem_bytes for n in cand], dtype=float),
            np.array([r[0] for r in req], dtype=float), np.array([r[1] for r in req], dtype=float),
            [i for i, n in enumerate(cand) if state.nodes[n].taints])


def _index_of(names: list[str], name: str) -> int | None:
    i = bisect.bisect_left(names, name)  # the candidates are sorted (ready_nodes)
    return i if i < len(names) and names[i] == name else None


def predicted_landing(state: ClusterState, key: Key, pod: PodSnapshot, from_node: str, *,
                      moved: dict[Key, str] | None = None,
                      extra_requests: dict[str, tuple[float, float]] | None = None,
                      load_weight: float = 0.0, extra_usage: dict[str, tuple[float, float]] | None = None,
                      ) -> str | None:
    """The node a default-like scheduler would bind the evicted pod's replacement to (None: none fits).

    An eviction only frees the pod's slot: its controller creates a replacement and the *scheduler*
    places it, by requests, not by measured load — so a move is worth making only if that placement is
    somewhere better. This models kube-scheduler's defaults on the planner's view: filter (ready,
    schedulable, NoSchedule taints, node selector, requests — the evicted pod's own no longer counted on
    ``from_node`` — and DoNotSchedule topology spread), then score NodeResourcesFit *LeastAllocated* (the
    mean over CPU and memory of the free fraction after binding, × 100), plus the spread score (the pod's
    ScheduleAnyway constraints like PodTopologySpread, else the default spreading of the workload's pods
    over zones and nodes, half each), plus 300 × fewer untolerated PreferNoSchedule taints; ties go to the
    first node name. ``moved``: pods planned to move this tick → their target (gone from their source);
    ``extra_requests``: requests already booked onto nodes this tick (CPU cores, memory bytes).
    ``load_weight`` > 0 models a load-aware scheduler (Trimaran-like, ``guard.scheduler_load_weight``): it
    adds ``load_weight`` × 100 × (1 − the node's measured CPU utilisation with the replacement's request
    added), from the tick's samples less the usage of pods moving away (``extra_usage``: usage booked
    onto nodes this tick); a node without a sample this tick is judged by its requests.
    A model, not the scheduler: plugins it leaves out (image locality, inter-pod affinity, balanced
    allocation) can place the replacement elsewhere."""
    if not moved and not extra_requests and load_weight <= 0 and state.pods.get(key) is pod:
        # Alone on the state's objects (no move booked yet, a request-based scheduler) the answer reads only what
        # changes with an event: memoised until the next one (strategies ask again at every tick about the
        # anomalies and hot nodes they could not act on, and several strategies about the same pods). Not when a
        # sibling runs on a node not known from the events: its zone comes from the latest scrape.
        memo: dict[tuple[Key, str], str | None] = state.cached("predicted_landing", dict)
        mk = (key, from_node)
        if mk in memo:
            return memo[mk]
        node, stable = _landing(state, key, pod, from_node, moved, extra_requests, load_weight, extra_usage)
        if stable:
            memo[mk] = node
        return node
    return _landing(state, key, pod, from_node, moved, extra_requests, load_weight, extra_usage)[0]


def _landing(state: ClusterState, key: Key, pod: PodSnapshot, from_node: str, moved: dict[Key, str] | None,
             extra_requests: dict[str, tuple[float, float]] | None, load_weight: float,
             extra_usage: dict[str, tuple[float, float]] | None) -> tuple[str | None, bool]:
    """:func:`predicted_landing`, computed; and whether it read only the state's objects (every sibling of the
    pod on a node known from the events, so that its zone does not come from a scrape)."""
    moved = moved or {}
    extra = extra_requests or {}
    wl = pod.workload.key if pod.workload is not None else None
    # requests freed this tick: the pod itself and the other pods already planned to move
    freed: dict[str, tuple[float, float]] = {from_node: (pod.requests.cpu_cores, pod.requests.mem_bytes)}
    for k in moved:
        p = state.pods.get(k)
        if k != key and p is not None and p.node:
            f = freed.get(p.node, (0.0, 0.0))
            freed[p.node] = (f[0] + p.requests.cpu_cores, f[1] + p.requests.mem_bytes)
    # the workload's placed pods per node (the replacement's siblings), for the spread scores
    siblings: Counter[str] = Counter()
    if wl is not None:
        for k, p in state.pods_by_workload().get(wl, []):
            if k == key or p.phase not in ("Running", "Pending"):
                continue
            n = moved.get(k, p.node)
            if n:
                siblings[n] += 1
    stable = all(n in state.nodes for n in siblings)  # else a sibling's zone is read from the scrapes
    freed_use: dict[str, float] = {}
    if load_weight > 0:
        for k in {key, *moved}:  # the usage leaving with the pod and with the other moves of this tick
            p = state.pods.get(k)
            smp = state.sample(p.node) if p is not None and p.node else None
            if p is not None and p.node and smp is not None:
                freed_use[p.node] = freed_use.get(p.node, 0.0) + smp.pods.get(k, (0.0, 0.0))[0]
    # the candidate nodes as arrays (memoised until the next event); the filters and the free fractions
    # below are the same per-node arithmetic as a loop over them, in numpy
    cand, a_cpu, a_mem, r_cpu, r_mem, tainted = state.cached("landing_nodes", lambda: _landing_nodes(state))
    keep = np.ones(len(cand), dtype=bool)
    prefer_all = np.zeros(len(cand))
    for i in tainted:
        node = state.nodes[cand[i]]
        if any(t.effect in ("NoSchedule", "NoExecute") and not tolerates(pod.tolerations, t) for t in node.taints):
            keep[i] = False
        prefer_all[i] = untolerated_prefer_no_schedule(pod, node)
    if pod.node_selector:
        for i, n in enumerate(cand):
            labels = state.nodes[n].labels
            if any(labels.get(k) != v for k, v in pod.node_selector.items()):
                keep[i] = False
    cpu_after, mem_after = r_cpu.copy(), r_mem.copy()
    for n, (c, m_) in extra.items():
        i = _index_of(cand, n)
        if i is not None:
            cpu_after[i] += c
            mem_after[i] += m_
    for n, (c, m_) in freed.items():
        i = _index_of(cand, n)
        if i is not None:
            cpu_after[i] -= c
            mem_after[i] -= m_
    cpu_after += pod.requests.cpu_cores
    mem_after += pod.requests.mem_bytes
    keep &= (cpu_after <= a_cpu + 1e-9) & (mem_after <= a_mem + 1e-9)
    idx = np.flatnonzero(keep)
    if not len(idx):
        return None, stable
    names = [cand[i] for i in idx]
    free = ((a_cpu[idx] - cpu_after[idx]) / a_cpu[idx] + (a_mem[idx] - mem_after[idx]) / a_mem[idx]) / 2.0
    prefer = prefer_all[idx]
    util = []
    if load_weight > 0:
        for i, n in zip(idx.tolist(), names, strict=True):
            smp = state.sample(n)
            used = (smp.cpu_usage - freed_use.get(n, 0.0) + (extra_usage or {}).get(n, (0.0, 0.0))[0]
                    if smp is not None else float(cpu_after[i]) - pod.requests.cpu_cores)
            util.append(min(1.0, max(0.0, used + pod.requests.cpu_cores) / float(a_cpu[i])))
    zones = [state.zone_of(n) for n in names]
    zone_count: Counter[str | None] = Counter()
    for n, c in siblings.items():
        zone_count[state.zone_of(n)] += c
    zc = np.array([zone_count[z] if z is not None else 0 for z in zones], dtype=float)
    nc = np.array([siblings[n] for n in names], dtype=float)
    ok = np.ones(len(names), dtype=bool)
    for c in pod.topology_spread:
        if c.when_unsatisfiable == "DoNotSchedule":
            cnt = zc if c.topology_key == ZONE_LABEL else nc
            ok &= cnt + 1 - cnt.min() <= c.max_skew
    if not ok.any():
        return None, stable
    score = 100.0 * np.array(free)
    soft = [c for c in pod.topology_spread if c.when_unsatisfiable == "ScheduleAnyway"]
    if soft:
        raw = np.zeros(len(names))
        for c in soft:
            cnt, size = (zc, len(set(zones))) if c.topology_key == ZONE_LABEL else (nc, len(names))
            raw += np.log(size + 2) * cnt + (c.max_skew - 1)
        hi, lo = float(raw.max()), float(raw.min())
        score += SPREAD_SCORE_WEIGHT * 100.0 * ((hi + lo - raw) / hi if hi > 0 else 1.0)
    elif not pod.topology_spread:
        zmax, nmax = zc.max(), nc.max()
        score += 0.5 * (100.0 * (zmax - zc) / zmax if zmax else 100.0)
        score += 0.5 * (100.0 * (nmax - nc) / nmax if nmax else 100.0)
    if load_weight > 0:
        score += load_weight * 100.0 * (1.0 - np.array(util))
    pf = np.array(prefer, dtype=float)
    if pf.max() > 0:
        score += 300.0 * (pf.max() - pf) / pf.max()
    best = score[ok].max()
    return (min(n for n, s, good in zip(names, score, ok, strict=True) if good and s >= best - 1e-9),
            stable)


# ---------------------------------------------------------------- the shared pod-choice layer

@dataclass
class Target:
    node: str
    cpu_pct_after: float
    mem_pct_after: float


_NONE: frozenset[str] = frozenset()


def _healthy_by_node(pods: list[tuple[Key, PodSnapshot]]) -> tuple[int, Counter[str], dict[Key, str]]:
    """Of a workload's pods, the Running and ready ones on a node: how many, how many per node, and each one's
    node (see :meth:`Choice.healthy_elsewhere`)."""
    per_node: Counter[str] = Counter()
    node_of: dict[Key, str] = {}
    for k, p in pods:
        if p.phase == "Running" and p.ready and p.node:
            per_node[p.node] += 1
            node_of[k] = p.node
    return len(node_of), per_node, node_of


class Choice:
    """One strategy's pod choices in the current tick, through every shared rule (reads the state,
    never writes it; the planner records the decisions afterwards with :meth:`ClusterState.record`).

    - :meth:`blocked`: evictable, metrics of the source present, not already moving this tick, pod
      and workload cooldowns, the workload's backoff, and the window limits per node / namespace /
      workload / total (decisions recorded in the window + those taken by this choice);
    - :meth:`targets`: where it could go: node fit (requests incl. this tick's moves, taints,
      selectors), metrics present, real usage after the move under the given bounds, no workload
      kept apart from it there, and no new topology-spread violation;
    - :meth:`prefer`: lower priority first, then workloads with healthy replicas on other nodes, then
      pods (and workloads) not moved recently;
    - :meth:`take`: book a move (requests and usage onto the target, counters).
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.g = state.guard
        self.now = state.tick_ts if state.tick_ts is not None else 0.0
        self.moved: dict[Key, str] = {}
        self.req: dict[str, tuple[float, float]] = {}
        self.use: dict[str, tuple[float, float]] = {}
        self.node_n: Counter[str] = Counter()
        self.ns_n: Counter[str] = Counter()
        self.wl_n: Counter[str] = Counter()
        self.total = 0
        for mv in state.moves:
            if self.now - mv.made_at < self.g.window_s:
                self.node_n[mv.from_node] += 1
                self.ns_n[mv.pod[0]] += 1
                self.wl_n[mv.workload] += 1
                self.total += 1
        for k, mv in state.planned.items():
            self.moved[k] = mv.to_node or mv.from_node
            if mv.to_node:
                self._add(mv.to_node, mv.requests, mv.usage)
        self.spread_cache: dict = {}  # spread counts for the current `moved` (cleared by take)
        self._apart: dict[str, set[str]] | None = None  # workload -> workloads kept apart from it (lazily)

    def _add(self, node: str, req: tuple[float, float], use: tuple[float, float]) -> None:
        r, u = self.req.get(node, (0.0, 0.0)), self.use.get(node, (0.0, 0.0))
        self.req[node] = (r[0] + req[0], r[1] + req[1])
        self.use[node] = (u[0] + use[0], u[1] + use[1])

    def blocked(self, key: Key, pod: PodSnapshot, node: str) -> str | None:
        """Why this pod may not be chosen now, or None."""
        ok, why = evictable(key, pod, self.state)
        if not ok:
            return why
        assert pod.workload is not None
        wl, g, now = pod.workload.key, self.g, self.now
        if key in self.moved:
            return "already-moving"
        if self.state.sample(node) is None:
            return "metrics-missing"
        t = self.state.last_move_pod.get(key)
        if t is not None and now - t < g.pod_cooldown_s:
            return "pod-cooldown"
        t = self.state.last_move_workload.get(wl)
        if t is not None and now - t < g.workload_cooldown_s:
            return "workload-cooldown"
        if now < self.state.backoff_until.get(wl, -1.0):
            return "workload-backoff"
        if g.landing_hold_s > 0:
            last = self.state.last_landing(wl, node)
            if last is not None and now - last <= g.landing_hold_s:
                return "recent-landing"
        if self.total >= g.max_total:
            return "limit-total"
        if self.node_n[node] >= g.max_per_node:
            return "limit-node"
        if self.ns_n[key[0]] >= g.max_per_namespace:
            return "limit-namespace"
        if self.wl_n[wl] >= g.max_per_workload:
            return "limit-workload"
        return None

    def targets(self, key: Key, pod: PodSnapshot, from_node: str, usage: tuple[float, float],
                *, max_cpu_pct: float | None = None, max_mem_pct: float | None = None,
                nodes: list[str] | None = None) -> list[Target]:
        """Nodes the pod could move to, best (lowest CPU after) first; empty = nowhere to go."""
        st = self.state
        apart = self._apart_of(pod.workload.key) if pod.workload is not None else _NONE
        max_cpu = self.g.hot_cpu_pct if max_cpu_pct is None else max_cpu_pct
        out = []
        for n in (st.ready_nodes() if nodes is None else nodes):
            if n == from_node:
                continue
            smp = st.sample(n)
            if smp is None or smp.cpu_allocatable <= 0 or smp.mem_allocatable <= 0:
                continue  # hold: no fresh metrics for the target
            u = self.use.get(n, (0.0, 0.0))
            cpu_after = 100 * (smp.cpu_usage + u[0] + usage[0]) / smp.cpu_allocatable
            mem_after = 100 * (smp.mem_usage + u[1] + usage[1]) / smp.mem_allocatable
            if cpu_after >= max_cpu or (max_mem_pct is not None and mem_after > max_mem_pct):
                continue
            if not node_fit(pod, n, st, self.req.get(n, (0.0, 0.0)))[0]:
                continue
            if self.g.avoid_prefer_no_schedule and not prefer_no_schedule_ok(pod, st.nodes.get(n)):
                continue
            if apart and self._hosts(n, apart):
                continue
            if not spread_move_ok(st, key, pod, from_node, n, self.moved, self.spread_cache)[0]:
                continue
            out.append(Target(n, cpu_after, mem_after))
        out.sort(key=lambda t: (t.cpu_pct_after, t.node))
        return out

    def landing(self, key: Key, pod: PodSnapshot, from_node: str) -> str | None:
        """:func:`predicted_landing` of the pod's replacement, given the moves already taken this tick."""
        return predicted_landing(self.state, key, pod, from_node, moved=self.moved, extra_requests=self.req,
                                 load_weight=self.g.scheduler_load_weight, extra_usage=self.use)

    def kept_apart_from(self, workload: str) -> set[str]:
        """:meth:`ClusterState.kept_apart_from`, from an index of the state's pairs built once per choice (the
        pairs change only with anomalies and pruning, never while a strategy plans)."""
        if self._apart is None:
            self._apart = self.state.apart_index()
        return set(self._apart.get(workload, ()))

    def _apart_of(self, workload: str) -> set[str] | frozenset[str]:
        """:meth:`kept_apart_from` without the copy (read only: the choice's shared index)."""
        if self._apart is None:
            self._apart = self.state.apart_index()
        return self._apart.get(workload, _NONE)

    def _hosts(self, node: str, workloads: set[str] | frozenset[str]) -> bool:
        if not workloads.isdisjoint(self.state.workloads_on(node)):
            for k, p in self.state.pods_on(node):
                if p.workload is not None and p.workload.key in workloads and self.moved.get(k, node) == node:
                    return True
        for k, to in self.moved.items():
            p = self.state.pods.get(k)
            if to == node and p is not None and p.workload is not None and p.workload.key in workloads:
                return True
        return False

    def healthy_elsewhere(self, key: Key, pod: PodSnapshot) -> int:
        """Running, ready pods of the same workload on other nodes (the pod itself not counted): from the
        workload's count of such pods per node, kept until the next event (every candidate of every hot node
        asks, at every tick)."""
        if pod.workload is None:
            return 0
        wl = pod.workload.key
        total, per_node, node_of = self.state._memo(
            "healthy-by-node", wl, lambda: _healthy_by_node(self.state.pods_by_workload().get(wl, [])))
        n = total - per_node.get(pod.node, 0)  # a pod without a node: every healthy pod is on another node
        own = node_of.get(key)
        if own is not None and own != pod.node:
            n -= 1
        return n

    def prefer(self, key: Key, pod: PodSnapshot) -> tuple[int, int, int]:
        wl = pod.workload.key if pod.workload is not None else ""
        recent = int(key in self.state.last_move_pod or wl in self.state.last_move_workload)
        return (pod.priority, 0 if self.healthy_elsewhere(key, pod) else 1, recent)

    def take(self, key: Key, pod: PodSnapshot, from_node: str, target: str, usage: tuple[float, float]) -> None:
        self.moved[key] = target
        self.spread_cache = {}
        self._add(target, (pod.requests.cpu_cores, pod.requests.mem_bytes), usage)
        self.node_n[from_node] += 1
        self.ns_n[key[0]] += 1
        if pod.workload is not None:
            self.wl_n[pod.workload.key] += 1
        self.total += 1

    def decide(self, strategy: str, now: float, ttl_s: float, key: Key, pod: PodSnapshot, from_node: str, *,
               id_part: str, reason: str, evidence: dict[str, float | int | str | bool | None],
               to_nodes: list[str], target: str, usage: tuple[float, float]) -> DescheduleDecision:
        """The decision to move ``key`` off ``from_node`` (deterministic id from the strategy, tick, ``id_part``
        and the pod), recorded as taken so later choices in this tick see it."""
        uid = self.state.pod_uids.get(key)
        decision = DescheduleDecision(
            id=decision_id(strategy, now, id_part, key[0], key[1], uid), made_at=now, expires_at=now + ttl_s,
            strategy=strategy, reason=reason, evidence=evidence,
            pod=PodRef(namespace=key[0], name=key[1], uid=uid, node=from_node, app=pod.app),
            workload=pod.workload, from_node=from_node, to_nodes=to_nodes)
        self.take(key, pod, from_node, target, usage)
        return decision

    def evidence(self, key: Key, pod: PodSnapshot, from_node: str) -> dict[str, float | int | str | bool | None]:
        wl = pod.workload.key if pod.workload is not None else ""
        return {"window_s": self.g.window_s, "window_moves_node": self.node_n[from_node],
                "window_moves_workload": self.wl_n[wl], "window_moves_total": self.total,
                "backoff_level": self.state.backoff_level.get(wl, 0),
                "healthy_elsewhere": self.healthy_elsewhere(key, pod), "priority": pod.priority}
