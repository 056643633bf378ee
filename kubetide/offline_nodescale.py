"""The actuator's node-scale handler, offline: ``decisions.nodescale`` applied to a kubesim Cluster in
virtual time (registered in :attr:`kubetide.offline.OfflineActuator.handlers` by :func:`install`).

The same rules as :class:`workers.actuator.NodescaleHandler`: idempotent on the decision id
(``duplicate``), ``expired`` against the cluster's clock, protected namespaces untouched, dry run →
``dry-run``; ``taint`` / ``untaint`` patch the node's taints; ``annotate-pods`` sets or removes
``controller.kubernetes.io/pod-deletion-cost`` on the listed pods still on the decision's node;
``size-placeholder`` sets the placeholder Deployment's replicas (its scale); ``drain`` cordons the
node and evicts its remaining non-DaemonSet pods through :meth:`Cluster.evict` (the Eviction API:
429 → ``skipped: pdb``, the planner asks again), each eviction taking a token of the actuator's
global bucket (``evictions_per_minute``, in virtual time; none left → ``skipped: rate-limited``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubesim.model import Cluster
from kubesim.scenario import Taint
from kubetide import models as m
from kubetide import topics
from kubetide.offline import EvictionRecord, OfflineActuator

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass
class OfflineNodescale:
    actuator: OfflineActuator
    applied: set[str] = field(default_factory=set)
    evictions: list[EvictionRecord] = field(default_factory=list)  # of workload pods (placeholders apart)
    placeholder_evictions: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def cluster(self) -> Cluster:
        return self.actuator.cluster

    def _record(self, d: m.NodescaleDecision, outcome: str, reason: str, message: str = "",
                http_status: int | None = None) -> m.Action:
        a = m.Action(ts=self.cluster.t, decision_id=d.id, decision_topic=topics.DECISIONS_NODESCALE,
                     strategy=d.strategy, action=d.action, target=None, outcome=outcome, reason=reason,
                     message=message, http_status=http_status, worker="offline")
        self.actuator.outcomes.append(a)
        if outcome in ("applied", "dry-run"):
            self.applied.add(d.id)
        self.counts[f"{d.action}:{a.summary}"] = self.counts.get(f"{d.action}:{a.summary}", 0) + 1
        return a

    def __call__(self, d: m.NodescaleDecision) -> m.Action:
        c, st = self.cluster, self.actuator.settings
        if d.id in self.applied:
            return self._record(d, "duplicate", "already-applied", "decision already applied")
        if d.expires_at < c.t:
            return self._record(d, "expired", "expired", f"decision expired at {d.expires_at:.0f}")
        if st.dry_run:
            return self._record(d, "dry-run", "dry-run", f"would {d.action} ({d.reason})")
        fn = getattr(self, "_" + d.action.replace("-", "_"), None)
        if fn is None:
            return self._record(d, "failed", "unsupported", f"action {d.action} is not applied offline")
        return fn(d)

    # ------------------------------------------------------------------ actions
    def _taint(self, d: m.NodescaleDecision) -> m.Action:
        node = self.cluster.nodes.get(d.node or "")
        if node is None:
            return self._record(d, "skipped", "gone", f"node {d.node} does not exist", 404)
        key = str(d.params.get("key"))
        effect = str(d.params.get("effect") or "PreferNoSchedule")
        if any(t.key == key and t.effect == effect for t in node.taints):
            return self._record(d, "skipped", "no-change", f"node {d.node} already has {key}:{effect}")
        taints = [t for t in node.taints if t.key != key] + [Taint(key, str(d.params.get("value") or ""), effect)]
        self.cluster.update_node(node.name, taints=taints)
        return self._record(d, "applied", "tainted", f"{d.node}: {key}:{effect}", 200)

    def _untaint(self, d: m.NodescaleDecision) -> m.Action:
        node = self.cluster.nodes.get(d.node or "")
        if node is None:
            return self._record(d, "skipped", "gone", f"node {d.node} does not exist", 404)
        key = str(d.params.get("key"))
        if not any(t.key == key for t in node.taints):
            return self._record(d, "skipped", "no-change", f"node {d.node} has no taint {key}")
        self.cluster.update_node(node.name, taints=[t for t in node.taints if t.key != key])
        return self._record(d, "applied", "untainted", f"{d.node}: {key} removed", 200)

    def _annotate_pods(self, d: m.NodescaleDecision) -> m.Action:
        cost = d.params.get("cost")
        done = 0
        for ref in str(d.params.get("pods") or "").split(","):
            if "/" not in ref:
                continue
            ns, name = ref.split("/", 1)
            if ns in self.actuator.settings.protected_namespaces:
                continue
            pod = self.cluster.pods.get((ns, name))
            if pod is None or pod.node_name != d.node:
                continue
            ann = dict(pod.annotations)
            if cost is None:
                if DELETION_COST not in ann:
                    continue
                ann.pop(DELETION_COST)
            else:
                if ann.get(DELETION_COST) == str(cost):
                    continue
                ann[DELETION_COST] = str(cost)
            self.cluster.update_pod_meta(ns, name, annotations=ann)
            done += 1
        if not done:
            return self._record(d, "skipped", "no-change", "no listed pod needed the annotation")
        return self._record(d, "applied", "annotated", f"{done} pod(s) on {d.node}: pod-deletion-cost={cost}", 200)

    def _size_placeholder(self, d: m.NodescaleDecision) -> m.Action:
        ns, name = str(d.params.get("namespace")), str(d.params.get("name"))
        if ns in self.actuator.settings.protected_namespaces:
            return self._record(d, "skipped", "protected-namespace", f"namespace {ns} is protected")
        dep = self.cluster.deployments.get((ns, name))
        if dep is None:
            return self._record(d, "skipped", "gone", f"deployment {ns}/{name} does not exist", 404)
        if d.replicas is None or dep.replicas == d.replicas:
            return self._record(d, "skipped", "no-change", f"{ns}/{name} already has {dep.replicas} replicas")
        before = dep.replicas
        self.cluster.set_replicas(ns, name, int(d.replicas))
        return self._record(d, "applied", "scaled", f"scaled {ns}/{name} from {before} to {d.replicas}", 200)

    def _drain(self, d: m.NodescaleDecision) -> m.Action:
        c = self.cluster
        node = c.nodes.get(d.node or "")
        if node is None:
            return self._record(d, "skipped", "gone", f"node {d.node} does not exist", 404)
        if not node.unschedulable:
            c.update_node(node.name, unschedulable=True)
        pods = sorted((p for p in c.pods.values() if p.node_name == node.name and not p.daemon),
                      key=lambda p: (p.namespace, p.name))
        evicted = refused = 0
        for p in pods:
            if p.namespace in self.actuator.settings.protected_namespaces:
                continue
            if not self.actuator._take_token(c.t):
                return self._record(d, "skipped", "rate-limited",
                                    f"cordoned {node.name}; evicted {evicted}, waiting for a rate-limit token")
            res = c.evict(p.namespace, p.name)
            if res.code == 201:
                evicted += 1
                if p.priority < 0:  # a placeholder: headroom, no workload is disrupted
                    self.placeholder_evictions += 1
                    continue
                self.evictions.append(EvictionRecord(c.t, d.id, d.strategy, f"{p.namespace}/ReplicaSet/{p.app}",
                                                     f"{p.namespace}/{p.name}", node.name))
                for pdb in c.pdbs.values():
                    if pdb.matches(p) and pdb.current_healthy < pdb.desired_healthy:
                        self.actuator.pdb_violations += 1
            elif res.code == 429:
                refused += 1
        if refused:
            return self._record(d, "skipped", "pdb", f"cordoned {node.name}; evicted {evicted}, {refused} refused "
                                "by a PodDisruptionBudget (asked again later)", 429)
        return self._record(d, "applied", "drained", f"cordoned {node.name}; evicted {evicted} pod(s)", 201)


def install(actuator: OfflineActuator) -> OfflineNodescale:
    """Register the node-scale handler on an :class:`OfflineActuator` and return it."""
    h = OfflineNodescale(actuator)
    actuator.handlers[m.NodescaleDecision] = h
    return h


def elastic_config(scenario: Any, config: dict[str, Any] | None) -> dict[str, Any] | None:
    """``config`` with a ``streams.nodescale`` section for the scenario's elastic groups, when it has any and
    the config has no such section (kubetide's run in ``kubetide evaluate``); else ``config`` unchanged."""
    groups = [g for g in getattr(scenario, "node_groups", ()) if getattr(g, "elastic", False)]
    streams = dict((config or {}).get("streams") or {})
    if not groups or "nodescale" in streams:
        return config
    section: dict[str, Any] = {"elastic_groups": [g.name for g in groups]}
    prefer = [t for t in groups[0].taints if t.effect == "PreferNoSchedule"]
    if prefer:  # the group's own PreferNoSchedule taint: kubetide keeps that one rather than adding a second
        section.update(taint_key=prefer[0].key, taint_value=prefer[0].value)
    return {**(config or {}), "streams": {**streams, "nodescale": section}}
