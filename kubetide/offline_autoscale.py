"""Offline application of ``decisions.autoscale`` on a kubesim :class:`~kubesim.model.Cluster` (virtual time).

:class:`OfflineScaleHandler` is what the actuator's ``ScaleHandler`` does, on the Cluster's API:
idempotent on the decision id (``duplicate``), protected namespaces, expiry against the cluster's
time, Deployments only, ``skipped: gone`` / ``no-change``; a scale-in first annotates the pods the
planner chose (evidence ``scale_in_pods``) with ``controller.kubernetes.io/pod-deletion-cost: -1000``
so the ReplicaSet controller removes them first (zone-aware scale-in, see
:mod:`streams.core.autoscaler`), then :meth:`Cluster.set_replicas`. Every outcome is an ``m.Action``.

:func:`install` registers it in an :class:`~kubetide.offline.OfflineActuator`'s ``handlers``.
:func:`policies_from_scenario` derives kubetide's policies from a scenario's ``hpa:`` specs (same
min / max / target, the predictive trigger on) for ``kubetide evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetide import models as m
from kubetide import topics
from streams.core.autoscaler import DELETION_COST, SCALE_IN_COST


@dataclass
class OfflineScaleHandler:
    cluster: Any
    settings: Any  # workers.actuator.ActuatorSettings
    outcomes: list[m.Action] = field(default_factory=list)
    applied: set[str] = field(default_factory=set)
    scale_events: int = 0

    def _record(self, d: m.AutoscaleDecision, outcome: str, reason: str, message: str = "",
                http_status: int | None = None) -> m.Action:
        a = m.Action(ts=self.cluster.t, decision_id=d.id, decision_topic=topics.DECISIONS_AUTOSCALE,
                     strategy=d.strategy, action="scale", target=d.workload, outcome=outcome, reason=reason,
                     message=message, http_status=http_status, worker="offline")
        self.outcomes.append(a)
        if outcome in ("applied", "dry-run"):
            self.applied.add(d.id)
        return a

    def __call__(self, d: m.AutoscaleDecision) -> m.Action:
        c = self.cluster
        w = d.workload
        ref = f"{w.namespace}/{w.name}"
        if d.id in self.applied:
            return self._record(d, "duplicate", "already-applied", "decision already applied")
        if w.namespace in self.settings.protected_namespaces:
            return self._record(d, "skipped", "protected-namespace", f"namespace {w.namespace} is protected")
        if w.kind != "Deployment":
            return self._record(d, "failed", "unsupported", f"cannot scale a {w.kind} ({ref}): only Deployments")
        if d.expires_at < c.t:
            return self._record(d, "expired", "expired", f"decision expired at {d.expires_at:.0f}")
        dep = c.deployments.get((w.namespace, w.name))
        if dep is None:
            return self._record(d, "skipped", "gone", f"deployment {ref} does not exist", 404)
        if dep.replicas == d.desired_replicas:
            return self._record(d, "skipped", "no-change", f"{ref} already has {dep.replicas} replicas")
        if self.settings.dry_run:
            return self._record(d, "dry-run", "dry-run", f"would scale {ref} to {d.desired_replicas}")
        current = dep.replicas
        if d.desired_replicas < current:
            names = str(d.evidence.get("scale_in_pods") or "")
            for name in [n for n in names.split(",") if n]:
                pod = c.pods.get((w.namespace, name))
                if pod is not None:
                    c.update_pod_meta(w.namespace, name, annotations={**pod.annotations, DELETION_COST: SCALE_IN_COST})
        c.set_replicas(w.namespace, w.name, d.desired_replicas)
        self.scale_events += 1
        return self._record(d, "applied", "scaled", f"{ref}: {current} → {d.desired_replicas}", 200)


def install(actuator: Any) -> OfflineScaleHandler:
    """Register an :class:`OfflineScaleHandler` for ``AutoscaleDecision`` on an ``OfflineActuator``."""
    h = OfflineScaleHandler(actuator.cluster, actuator.settings, outcomes=actuator.outcomes)
    actuator.handlers[m.AutoscaleDecision] = h
    return h


def policies_from_scenario(scenario: Any, overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{"namespace/name": policy mapping}`` for every Deployment of the scenario with an ``hpa:`` spec:
    the HPA's min / max / target utilisation / tolerance over ``overrides`` (a policy mapping, e.g. the
    section's ``default_policy``), kubetide's defaults for the rest (the predictive trigger on)."""
    out: dict[str, dict[str, Any]] = {}
    for app in scenario.apps:
        h = getattr(app, "hpa", None)
        if h is None:
            continue
        pol: dict[str, Any] = {**(overrides or {}), "min_replicas": h.min_replicas, "max_replicas": h.max_replicas,
                               "target_cpu_utilization": h.target_cpu_utilization, "tolerance": h.tolerance}
        out[f"{app.namespace}/{app.name}"] = pol
    return out


# kubetide's policy defaults on top of a scenario's HPA spec (``kubetide evaluate``): a prediction window that
# covers a slow pod start-up (kubesim's scenarios: up to 240 s) plus one sync and one history interval, rather
# than 30 min (which would keep the spike's replicas for half an hour), and a scale-up that may reach the
# forecast peak in one step (400 % per 15 s instead of Kubernetes' 100 % or 4 pods per 15 s: fewer scale
# events, no staircase before a spike).
EVALUATE_POLICY: dict[str, Any] = {
    "predictive": {"prediction_window_s": 300.0},
    "behavior": {"scale_up": {"policies": [{"type": "Percent", "value": 400, "period_seconds": 15}]}},
}


def with_scenario_autoscale(config: dict[str, Any] | None, scenario: Any) -> tuple[dict[str, Any], set[str]]:
    """The kubetide config for ``kubetide evaluate`` on ``scenario``, and the workloads kubetide autoscales.

    Unless the config has ``streams.autoscale`` with ``enabled: false``, every app with an ``hpa:`` spec
    gets a kubetide policy derived from it (:func:`policies_from_scenario`, on top of the section's
    ``default_policy`` if any); policies the section names under ``workloads`` win. Those workloads are
    the ones whose kubesim HPA must be off in the kubetide run."""
    cfg = dict(config or {})
    streams = dict(cfg.get("streams") or {})
    sec = dict(streams.get("autoscale") or {})
    if sec.get("enabled", True) is False:
        return cfg, set()
    derived = policies_from_scenario(scenario, {**EVALUATE_POLICY, **dict(sec.get("default_policy") or {})})
    workloads = {**derived, **dict(sec.get("workloads") or {})}
    if not workloads:
        return cfg, set()
    sec["workloads"] = workloads
    streams["autoscale"] = sec
    cfg["streams"] = streams
    return cfg, set(workloads)
