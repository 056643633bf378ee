"""Model objects -> Kubernetes JSON (dicts shaped like the apiserver's, camelCase, omitempty)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from functools import lru_cache

from kubetide.quantity import format_cpu, format_kibibytes, format_memory, format_nanocores

from .model import HPA, PDB, Cluster, Deployment, Namespace, Node, Pod, ReplicaSet

DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
]


METRICS_WINDOW = "10s"  # the ``window`` of NodeMetrics / PodMetrics


@lru_cache(maxsize=65536)
def ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resources(cpu_req: float, mem_req: float, cpu_lim: float | None, mem_lim: float | None) -> dict:
    res: dict = {}
    req = {}
    if cpu_req:
        req["cpu"] = format_cpu(cpu_req)
    if mem_req:
        req["memory"] = format_memory(mem_req)
    if req:
        res["requests"] = req
    lim = {}
    if cpu_lim is not None:
        lim["cpu"] = format_cpu(cpu_lim)
    if mem_lim is not None:
        lim["memory"] = format_memory(mem_lim)
    if lim:
        res["limits"] = lim
    return res


def _qos(cpu_req, mem_req, cpu_lim, mem_lim) -> str:
    if cpu_lim is not None and mem_lim is not None and cpu_lim == cpu_req and mem_lim == mem_req:
        return "Guaranteed"
    if cpu_req or mem_req or cpu_lim is not None or mem_lim is not None:
        return "Burstable"
    return "BestEffort"


def _ip(seed: str, prefix: str) -> str:
    h = sum(ord(c) * (i + 1) for i, c in enumerate(seed))
    return f"{prefix}.{(h >> 8) % 250 + 1}.{h % 250 + 1}"


def namespace(ns: Namespace) -> dict:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": ns.name,
            "uid": ns.uid,
            "resourceVersion": str(ns.rv),
            "creationTimestamp": ts(ns.created),
            "labels": {**ns.labels, "kubernetes.io/metadata.name": ns.name},
            **({"annotations": dict(ns.annotations)} if ns.annotations else {}),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def node(n: Node, cluster: Cluster) -> dict:
    spec: dict = {"podCIDR": _ip(n.name, "10.244") + ".0/24", "providerID": f"kubesim://{n.name}"}
    if n.taints:
        spec["taints"] = [t.to_dict() for t in n.taints]
    if n.unschedulable:
        spec["unschedulable"] = True
    created = ts(n.created)
    now = ts(cluster.t)
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": n.name,
            "uid": n.uid,
            "resourceVersion": str(n.rv),
            "creationTimestamp": created,
            "labels": dict(n.labels),
            "annotations": dict(n.annotations),
        },
        "spec": spec,
        "status": {
            "capacity": {"cpu": format_cpu(n.cpu_capacity), "memory": format_memory(n.memory_capacity),
                         "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": format_cpu(n.cpu), "memory": format_memory(n.memory), "pods": "110",
                            "ephemeral-storage": "95Gi"},
            "conditions": [
                {"type": t, "status": "False", "reason": r, "message": "", "lastHeartbeatTime": now,
                 "lastTransitionTime": created}
                for t, r in (("MemoryPressure", "KubeletHasSufficientMemory"),
                             ("DiskPressure", "KubeletHasNoDiskPressure"),
                             ("PIDPressure", "KubeletHasSufficientPID"))
            ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                  "lastTransitionTime": created}],
            "addresses": [{"type": "InternalIP", "address": _ip(n.name, "10.0")},
                          {"type": "Hostname", "address": n.name}],
            "nodeInfo": {"kubeletVersion": "v1.30.0", "kubeProxyVersion": "v1.30.0",
                         "containerRuntimeVersion": "containerd://1.7.0", "operatingSystem": "linux",
                         "architecture": "amd64", "osImage": "kubesim", "kernelVersion": "6.1.0",
                         "machineID": n.uid.replace("-", ""), "systemUUID": n.uid, "bootID": n.uid},
        },
    }


def _spread(constraints: tuple, app: str) -> list[dict]:
    """``topologySpreadConstraints`` over the app's own pods (the ``app`` label kubesim's scheduler counts by)."""
    return [{"maxSkew": c.max_skew, "topologyKey": c.topology_key, "whenUnsatisfiable": c.when_unsatisfiable,
             "labelSelector": {"matchLabels": {"app": app}}} for c in constraints]


def pod(p: Pod, cluster: Cluster) -> dict:
    owner_api = "apps/v1"
    container_name = p.app or p.name
    spec: dict = {
        "containers": [{
            "name": container_name,
            "image": p.image,
            "resources": _resources(p.cpu_request, p.mem_request, p.cpu_limit, p.mem_limit),
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "schedulerName": "default-scheduler",
        "priority": 2000001000 if p.daemon else p.priority,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "tolerations": [t.to_dict() for t in p.tolerations] + ([] if p.daemon else DEFAULT_TOLERATIONS),
    }
    if p.daemon:
        spec["priorityClassName"] = "system-node-critical"
    if p.node_selector:
        spec["nodeSelector"] = dict(p.node_selector)
    if p.spread and p.app and not p.daemon:
        spec["topologySpreadConstraints"] = _spread(p.spread, p.app)
    if p.affinity:
        spec["affinity"] = copy.deepcopy(p.affinity)
    if p.node_name:
        spec["nodeName"] = p.node_name
    created = ts(p.created)
    status: dict = {"phase": p.phase, "qosClass": _qos(p.cpu_request, p.mem_request, p.cpu_limit, p.mem_limit)}
    if p.node_name is None:
        status["conditions"] = [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": p.unschedulable_reason or "", "lastProbeTime": None, "lastTransitionTime": created,
        }]
    else:
        sched = ts(p.scheduled_at or p.created)
        ready_ts = ts(p.ready_at) if p.ready and p.ready_at is not None else sched
        rstatus = "True" if p.ready else "False"
        cond = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": sched},
            {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": sched},
            {"type": "Ready", "status": rstatus, "lastProbeTime": None, "lastTransitionTime": ready_ts},
            {"type": "ContainersReady", "status": rstatus, "lastProbeTime": None,
             "lastTransitionTime": ready_ts},
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": sched},
        ]
        if not p.ready:
            for c in cond[2:4]:
                c["reason"] = "ContainersNotReady"
                c["message"] = f"containers with unready status: [{container_name}]"
        node_obj = cluster.nodes.get(p.node_name)
        status.update({
            "conditions": cond,
            "hostIP": _ip(p.node_name, "10.0"),
            "hostIPs": [{"ip": _ip(p.node_name, "10.0")}],
            "podIP": _ip(p.uid, "10.244"),
            "podIPs": [{"ip": _ip(p.uid, "10.244")}],
            "startTime": sched,
            "containerStatuses": [{
                "name": container_name,
                "ready": p.ready,
                "started": True,
                "restartCount": 0,
                "image": p.image,
                "imageID": f"{p.image}@sha256:{p.uid.replace('-', '')}",
                "containerID": f"containerd://{p.uid.replace('-', '')}",
                "state": {"running": {"startedAt": sched}},
                "lastState": {},
            }],
        })
        if node_obj is None:
            status.pop("hostIP")
    meta: dict = {
        "name": p.name,
        "namespace": p.namespace,
        "uid": p.uid,
        "resourceVersion": str(p.rv),
        "creationTimestamp": created,
        "labels": dict(p.labels),
        "ownerReferences": [{"apiVersion": owner_api, "kind": p.owner_kind, "name": p.owner_name,
                             "uid": p.owner_uid, "controller": True, "blockOwnerDeletion": True}],
    }
    if p.owner_kind == "ReplicaSet":
        meta["generateName"] = p.owner_name + "-"
    if p.annotations:
        meta["annotations"] = dict(p.annotations)
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}


def _template(d: Deployment, extra_labels: dict | None = None, rs: ReplicaSet | None = None) -> dict:
    """The pod template of ``rs`` (default: the Deployment's current ReplicaSet, i.e. its spec.template)."""
    app = d.spec
    rs = rs or d.rs
    base = dict(rs.template_labels) if rs is not None else {"app": d.name, **app.labels}
    labels = {**base, **(extra_labels or {})}
    spec: dict = {
        "containers": [{
            "name": d.name,
            "image": app.image,
            "resources": _resources(app.cpu_request, app.mem_request, app.cpu_limit, app.mem_limit),
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "schedulerName": "default-scheduler",
    }
    if app.node_selector:
        spec["nodeSelector"] = dict(app.node_selector)
    if app.tolerations:
        spec["tolerations"] = [t.to_dict() for t in app.tolerations]
    if app.topology_spread:
        spec["topologySpreadConstraints"] = _spread(app.topology_spread, d.name)
    if rs is not None and rs.affinity:
        spec["affinity"] = copy.deepcopy(rs.affinity)
    meta: dict = {"labels": labels}
    if rs is not None and rs.template_annotations:
        meta["annotations"] = dict(rs.template_annotations)
    return {"metadata": meta, "spec": spec}


def _omit_zero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v not in (0, None)}


def deployment(d: Deployment, cluster: Cluster) -> dict:
    replicas, ready, _gen, updated = d.status or (0, 0, 0, 0)
    created = ts(d.created)
    available = ready >= max(0, d.replicas - max(1, d.replicas // 4)) if d.replicas else True
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": d.name,
            "namespace": d.namespace,
            "uid": d.uid,
            "resourceVersion": str(d.rv),
            "generation": d.generation,
            "creationTimestamp": created,
            "labels": dict(d.labels),
            "annotations": {**d.annotations,
                            "deployment.kubernetes.io/revision": str(d.rs.revision if d.rs else 1)},
        },
        "spec": {
            "replicas": d.replicas,
            "selector": {"matchLabels": dict(d.selector)},
            "template": _template(d),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": d.generation,
            **_omit_zero({"replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
                          "availableReplicas": ready, "unavailableReplicas": max(0, d.replicas - ready)}),
            "conditions": [
                {"type": "Available", "status": "True" if available else "False",
                 "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                 "message": "Deployment has minimum availability." if available
                 else "Deployment does not have minimum availability.",
                 "lastUpdateTime": created, "lastTransitionTime": created},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": f'ReplicaSet "{d.rs.name if d.rs else d.name}" has successfully progressed.',
                 "lastUpdateTime": created, "lastTransitionTime": created},
            ],
        },
    }


def replicaset(rs: ReplicaSet, cluster: Cluster) -> dict:
    d = rs.deployment
    replicas, ready, _gen = rs.status or (0, 0, 0)
    labels = {**rs.template_labels, "pod-template-hash": rs.hash}
    return {
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": rs.name,
            "namespace": rs.namespace,
            "uid": rs.uid,
            "resourceVersion": str(rs.rv),
            "generation": d.generation,
            "creationTimestamp": ts(rs.created),
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/desired-replicas": str(d.replicas),
                            "deployment.kubernetes.io/max-replicas": str(d.replicas + (d.replicas + 3) // 4),
                            "deployment.kubernetes.io/revision": str(rs.revision)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": d.name, "uid": d.uid,
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "replicas": rs.replicas,
            "selector": {"matchLabels": {"app": d.name, "pod-template-hash": rs.hash}},
            "template": _template(d, {"pod-template-hash": rs.hash}, rs),
        },
        "status": {
            "replicas": replicas,
            "observedGeneration": d.generation,
            **_omit_zero({"fullyLabeledReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready}),
        },
    }


def pdb(b: PDB, cluster: Cluster) -> dict:
    spec: dict = {"selector": {"matchLabels": dict(b.selector)}}
    if b.min_available is not None:
        spec["minAvailable"] = b.min_available
    if b.max_unavailable is not None:
        spec["maxUnavailable"] = b.max_unavailable
    allowed = b.disruptions_allowed > 0
    status: dict = {
        "observedGeneration": b.observed_generation,
        "disruptionsAllowed": b.disruptions_allowed,
        "currentHealthy": b.current_healthy,
        "desiredHealthy": b.desired_healthy,
        "expectedPods": b.expected_pods,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": "True" if allowed else "False",
            "reason": "SufficientPods" if allowed else "InsufficientPods",
            "message": "",
            "observedGeneration": b.observed_generation,
            "lastTransitionTime": ts(b.transition_time or b.created),
        }],
    }
    if b.disrupted_pods:
        status["disruptedPods"] = {k: ts(v) for k, v in b.disrupted_pods.items()}
    return {
        "kind": "PodDisruptionBudget",
        "apiVersion": "policy/v1",
        "metadata": {
            "name": b.name,
            "namespace": b.namespace,
            "uid": b.uid,
            "resourceVersion": str(b.rv),
            "generation": b.generation,
            "creationTimestamp": ts(b.created),
        },
        "spec": spec,
        "status": status,
    }


def scale(d: Deployment) -> dict:
    replicas = d.status[0] if d.status else 0
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": d.name, "namespace": d.namespace, "uid": d.uid, "resourceVersion": str(d.rv),
                     "creationTimestamp": ts(d.created)},
        "spec": _omit_zero({"replicas": d.replicas}),
        "status": {"replicas": replicas, "selector": ",".join(f"{k}={v}" for k, v in d.selector.items())},
    }


def node_metrics(n: Node, cluster: Cluster) -> dict:
    now = ts(cluster.t)
    return {
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": n.name, "creationTimestamp": now, "labels": dict(n.labels)},
        "timestamp": now,
        "window": METRICS_WINDOW,
        "usage": {"cpu": format_nanocores(n.usage_cpu), "memory": format_kibibytes(n.usage_memory)},
    }


def pod_metrics(p: Pod, cluster: Cluster) -> dict:
    now = ts(cluster.t)
    return {
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": p.name, "namespace": p.namespace, "creationTimestamp": now, "labels": dict(p.labels)},
        "timestamp": now,
        "window": METRICS_WINDOW,
        "containers": [{"name": p.app or p.name,
                        "usage": {"cpu": format_nanocores(p.usage_cpu), "memory": format_kibibytes(p.usage_memory)}}],
    }


def hpa(h: HPA, cluster: Cluster) -> dict:
    s = h.spec
    status: dict = {"currentReplicas": h.current_replicas, "desiredReplicas": h.desired_replicas}
    if h.last_scale_time is not None:
        status["lastScaleTime"] = ts(h.last_scale_time)
    if h.current_utilization is not None:
        cur: dict = {"averageUtilization": h.current_utilization}
        if h.current_average_cores is not None:
            cur["averageValue"] = format_cpu(round(h.current_average_cores, 3))
        status["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": cur}}]
    limited = h.reason in ("ScaleUpLimit", "ScaleDownLimit", "TooFewReplicas", "TooManyReplicas")
    status["conditions"] = [
        {"type": "AbleToScale", "status": "True", "lastTransitionTime": ts(h.created),
         "reason": "ScaleDownStabilized" if h.reason == "ScaleDownStabilized" else "ReadyForNewScale",
         "message": h.message or "recommended size matches current size"},
        {"type": "ScalingActive", "status": "True" if h.current_utilization is not None else "False",
         "lastTransitionTime": ts(h.created),
         "reason": "ValidMetricFound" if h.current_utilization is not None else "FailedGetResourceMetric",
         "message": "the HPA was able to successfully calculate a replica count from cpu resource utilization"},
        {"type": "ScalingLimited", "status": "True" if limited else "False", "lastTransitionTime": ts(h.created),
         "reason": h.reason if limited else "DesiredWithinRange",
         "message": "the desired count is within the acceptable range"},
    ]
    return {
        "kind": "HorizontalPodAutoscaler",
        "apiVersion": "autoscaling/v2",
        "metadata": {"name": h.name, "namespace": h.namespace, "uid": h.uid, "resourceVersion": str(h.rv),
                     "creationTimestamp": ts(h.created), "labels": {"app": h.target}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": h.target},
            "minReplicas": s.min_replicas,
            "maxReplicas": s.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": round(s.target_cpu_utilization)}}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                         {"type": "Percent", "value": 100, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": round(s.scale_down_stabilization_s),
                              "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
            },
        },
        "status": status,
    }


def render(resource: str, obj, cluster: Cluster) -> dict:
    if resource == "horizontalpodautoscalers":
        return hpa(obj, cluster)
    if resource == "pods":
        return pod(obj, cluster)
    if resource == "nodes":
        return node(obj, cluster)
    if resource == "namespaces":
        return namespace(obj)
    if resource == "deployments":
        return deployment(obj, cluster)
    if resource == "replicasets":
        return replicaset(obj, cluster)
    if resource == "poddisruptionbudgets":
        return pdb(obj, cluster)
    raise KeyError(resource)
