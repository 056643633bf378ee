"""Raw Kubernetes objects (JSON dicts, camelCase, as the API server sends them) -> slim snapshots.

Pure functions, no I/O. Workload resolution (:func:`pod_workload`) follows the pod's
controller ownerReference; a ReplicaSet is resolved to its Deployment by **stripping the
``pod-template-hash`` suffix** (the Deployment controller names a ReplicaSet
``<deployment>-<pod-template-hash>`` and labels its pods with that hash), so no ReplicaSet
read — and no RBAC on replicasets — is needed. A ReplicaSet whose name does not end in the
pod's hash is reported as a bare ReplicaSet workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetide import models as m
from kubetide.quantity import quantity
from workers.kube import parse_timestamp

KEPT_ANNOTATIONS = ("controller.kubernetes.io/pod-deletion-cost",
                    "cluster-autoscaler.kubernetes.io/safe-to-evict")
KEPT_ANNOTATION_PREFIX = "kubetide.io/"
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
DEFAULT_NODE_GROUP_LABELS = (
    "kubesim.io/node-group", "eks.amazonaws.com/nodegroup", "cloud.google.com/gke-nodepool",
    "kubernetes.azure.com/agentpool", "agentpool", "karpenter.sh/nodepool", "kops.k8s.io/instancegroup",
    "node.kubernetes.io/instance-group",
)
_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _str_map(v: Any) -> dict[str, str]:
    return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else {}


def kept_annotations(annotations: dict | None) -> dict[str, str]:
    return {k: str(v) for k, v in (annotations or {}).items()
            if k.startswith(KEPT_ANNOTATION_PREFIX) or k in KEPT_ANNOTATIONS}


def _resources(res: dict | None, part: str) -> tuple[float, float, bool]:
    block = (res or {}).get(part) or {}
    return quantity(block.get("cpu")), quantity(block.get("memory")), bool(block)


def pod_requests(spec: dict) -> m.Resources:
    """Effective requests as the scheduler sees them: max(sum(containers), max(init)) + overhead."""
    cpu = mem = 0.0
    for c in spec.get("containers") or []:
        c_cpu, c_mem, _ = _resources(c.get("resources"), "requests")
        cpu += c_cpu
        mem += c_mem
    for c in spec.get("initContainers") or []:
        c_cpu, c_mem, _ = _resources(c.get("resources"), "requests")
        cpu, mem = max(cpu, c_cpu), max(mem, c_mem)
    overhead = spec.get("overhead") or {}
    cpu += quantity(overhead.get("cpu"))
    mem += quantity(overhead.get("memory"))
    return m.Resources(cpu_cores=cpu, mem_bytes=mem)


def pod_limits(spec: dict) -> m.Resources | None:
    cpu = mem = 0.0
    seen = False
    for c in spec.get("containers") or []:
        c_cpu, c_mem, has = _resources(c.get("resources"), "limits")
        cpu += c_cpu
        mem += c_mem
        seen = seen or has
    return m.Resources(cpu_cores=cpu, mem_bytes=mem) if seen else None


def tolerations(items: list | None) -> list[m.Toleration]:
    out = []
    for t in items or []:
        if not isinstance(t, dict):
            continue
        op = t.get("operator") or "Equal"
        out.append(m.Toleration(key=t.get("key") or None, operator=op if op in ("Exists", "Equal") else "Equal",
                                value=t.get("value"), effect=t.get("effect") or None))
    return out


def topology_spread(items: list | None) -> list[m.TopologySpread]:
    out = []
    for c in items or []:
        if not isinstance(c, dict) or not c.get("topologyKey"):
            continue
        wu = c.get("whenUnsatisfiable") or "DoNotSchedule"
        out.append(m.TopologySpread(
            max_skew=max(1, int(c.get("maxSkew") or 1)), topology_key=c["topologyKey"],
            when_unsatisfiable=wu if wu in ("DoNotSchedule", "ScheduleAnyway") else "DoNotSchedule",
            match_labels=_str_map((c.get("labelSelector") or {}).get("matchLabels"))))
    return out


def controller_ref(meta: dict) -> dict | None:
    refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
    for r in refs:
        if r.get("controller"):
            return r
    return refs[0] if refs else None


def pod_workload(obj: dict) -> m.WorkloadRef:
    meta = _meta(obj)
    ns, name = meta.get("namespace") or "", meta.get("name") or ""
    ref = controller_ref(meta)
    if ref is None or not ref.get("kind") or not ref.get("name"):
        return m.WorkloadRef(namespace=ns, kind="Pod", name=name)
    kind, owner = ref["kind"], ref["name"]
    if kind == "ReplicaSet":
        h = (meta.get("labels") or {}).get("pod-template-hash")
        if h and owner.endswith("-" + h) and len(owner) > len(h) + 1:
            return m.WorkloadRef(namespace=ns, kind="Deployment", name=owner[: -len(h) - 1])
    if kind == "Node":  # static pod's mirror
        return m.WorkloadRef(namespace=ns, kind="Pod", name=name)
    return m.WorkloadRef(namespace=ns, kind=kind, name=owner)


def pod_ready(status: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def pod_snapshot(obj: dict) -> m.PodSnapshot:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    wl = pod_workload(obj)
    annotations = meta.get("annotations") or {}
    phase = status.get("phase") or "Pending"
    volumes = spec.get("volumes") or []
    return m.PodSnapshot(
        node=spec.get("nodeName") or None,
        phase=phase if phase in _PHASES else "Unknown",
        ready=pod_ready(status),
        app=wl.name,
        workload=wl,
        labels=_str_map(meta.get("labels")),
        annotations=kept_annotations(annotations),
        priority=int(spec.get("priority") or 0),
        priority_class=spec.get("priorityClassName") or None,
        requests=pod_requests(spec),
        limits=pod_limits(spec),
        local_storage=any(isinstance(v, dict) and ("emptyDir" in v or "hostPath" in v) for v in volumes),
        mirror="kubernetes.io/config.mirror" in annotations,
        node_selector=_str_map(spec.get("nodeSelector")),
        tolerations=tolerations(spec.get("tolerations")),
        topology_spread=topology_spread(spec.get("topologySpreadConstraints")),
        created_at=parse_timestamp(meta.get("creationTimestamp")),
    )


def node_snapshot(obj: dict, group_labels: tuple[str, ...] = DEFAULT_NODE_GROUP_LABELS) -> m.NodeSnapshot:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = _str_map(meta.get("labels"))
    alloc, cap = status.get("allocatable") or {}, status.get("capacity") or {}
    taints = [m.Taint(key=t["key"], value=t.get("value") or "", effect=t["effect"])
              for t in spec.get("taints") or []
              if isinstance(t, dict) and t.get("key") and t.get("effect") in _EFFECTS]
    conds = status.get("conditions") or []
    ready_conds = [c for c in conds if c.get("type") == "Ready"]
    return m.NodeSnapshot(
        zone=next((labels[k] for k in ZONE_LABELS if labels.get(k)), None),
        node_group=next((labels[k] for k in group_labels if labels.get(k)), None),
        labels=labels,
        allocatable=m.Resources(cpu_cores=quantity(alloc.get("cpu")), mem_bytes=quantity(alloc.get("memory"))),
        capacity=m.Resources(cpu_cores=quantity(cap.get("cpu")), mem_bytes=quantity(cap.get("memory")))
        if cap else None,
        taints=taints,
        unschedulable=bool(spec.get("unschedulable")),
        ready=(ready_conds[0].get("status") == "True") if ready_conds else True,
    )


def _int_or_str(v: Any) -> int | str | None:
    if v is None or isinstance(v, bool):
        return None
    return v if isinstance(v, int | str) else str(v)


def pdb_snapshot(obj: dict) -> m.PdbSnapshot:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    return m.PdbSnapshot(
        match_labels=_str_map((spec.get("selector") or {}).get("matchLabels")),
        min_available=_int_or_str(spec.get("minAvailable")),
        max_unavailable=_int_or_str(spec.get("maxUnavailable")),
        disruptions_allowed=int(status.get("disruptionsAllowed") or 0),
        current_healthy=int(status.get("currentHealthy") or 0),
        desired_healthy=int(status.get("desiredHealthy") or 0),
        expected_pods=int(status.get("expectedPods") or 0),
        generation=meta.get("generation"),
        observed_generation=status.get("observedGeneration"),
    )


def deployment_snapshot(obj: dict) -> m.DeploymentSnapshot:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    template = spec.get("template") or {}
    tspec = template.get("spec") or {}
    replicas = spec.get("replicas")
    return m.DeploymentSnapshot(
        replicas=max(0, int(1 if replicas is None else replicas)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        match_labels=_str_map((spec.get("selector") or {}).get("matchLabels")),
        labels=_str_map(meta.get("labels")),
        pod_requests=pod_requests(tspec) if tspec.get("containers") else None,
        topology_spread=topology_spread(tspec.get("topologySpreadConstraints")),
    )


def namespace_snapshot(obj: dict) -> m.NamespaceSnapshot:
    return m.NamespaceSnapshot(labels=_str_map(_meta(obj).get("labels")))


def go_duration(value: Any, default: float) -> float:
    """A Go duration string ("10s", "1m0.5s", "250ms") -> seconds."""
    if not isinstance(value, str) or not value:
        return default
    import re
    total, pos = 0.0, 0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    for mt in re.finditer(r"([0-9]*\.?[0-9]+)(ms|us|µs|ns|h|m|s)", value):
        if mt.start() != pos:
            return default
        total += float(mt.group(1)) * units[mt.group(2)]
        pos = mt.end()
    return total if pos == len(value) and total > 0 else default


def container_usage(item: dict) -> tuple[float, float]:
    """Sum of a PodMetrics item's container usages: (cores, bytes)."""
    cpu = mem = 0.0
    for c in item.get("containers") or []:
        usage = c.get("usage") or {}
        cpu += quantity(usage.get("cpu"))
        mem += quantity(usage.get("memory"))
    return cpu, mem


PodRow = tuple[str, str, str, float, float]  # (namespace, name, app, cpu cores, memory bytes)


def join_pod_metrics(pod_items: list, pods: Any) -> tuple[dict[str, list[PodRow]], int]:
    """PodMetrics items + the watched pods (``(namespace, name)`` → ClusterEvent) → rows by node.

    Returns ``(rows by node, pods not joined)``: a pod is not joined when it is unknown, has no
    snapshot or no node. Used by the collector and by ``kubetide evaluate --offline`` alike.
    """
    by_node: dict[str, list[PodRow]] = {}
    unjoined = 0
    for item in pod_items:
        meta = item.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        ev = pods.get(key)
        if ev is None or ev.pod is None or not ev.pod.node:
            unjoined += 1
            continue
        cpu, mem = container_usage(item)
        by_node.setdefault(ev.pod.node, []).append((key[0], key[1], ev.pod.app or "", cpu, mem))
    return by_node, unjoined


CUSTOM_POD_METRICS = ("cpi", "latency_ms")  # the PodSamples columns filled from custom.metrics.k8s.io
CustomValues = Mapping[str, Mapping[tuple[str, str], float]]  # metric -> (namespace, pod) -> value


def custom_metric_values(items: list) -> dict[tuple[str, str], float]:
    """A custom.metrics.k8s.io ``MetricValueList``'s items → ``(namespace, pod)`` → value.

    Items that do not describe a Pod, or whose value is missing, unreadable, not finite or ≤ 0, are
    left out (a value ≤ 0 means "not measured" to the interference detector anyway)."""
    out: dict[tuple[str, str], float] = {}
    for it in items or []:
        if not isinstance(it, dict):
            continue
        obj = it.get("describedObject") or {}
        if (obj.get("kind") or "Pod") != "Pod" or not obj.get("name"):
            continue
        try:
            v = quantity(it.get("value"))
        except Exception:
            continue
        if v == v and v not in (float("inf"), float("-inf")) and v > 0:
            out[(obj.get("namespace") or "", obj["name"])] = float(v)
    return out


def custom_columns(rows: list[PodRow], custom: CustomValues | None) -> dict[str, list[float]]:
    """The ``cpi`` / ``latency_ms`` columns of one node's (sorted) rows.

    Column rule: a metric's column is present on a node when **at least one** of the node's pods has
    a value; pods without one get ``0.0``, which the model allows (NaN is not) and which
    :mod:`streams.core.interference` reads as "not measured" (its rule: a value ≤ 0 or missing). A node
    none of whose pods has a value has no column (``None``)."""
    cols: dict[str, list[float]] = {}
    for metric, values in (custom or {}).items():
        if metric not in CUSTOM_POD_METRICS or not values:
            continue
        col = [float(values.get((r[0], r[1]), 0.0)) for r in rows]
        if any(v > 0 for v in col):
            cols[metric] = col
    return cols


def node_metrics_message(item: dict, node: m.NodeSnapshot, rows: list[PodRow], ts: float,
                         default_window_s: float, custom: CustomValues | None = None) -> m.ClusterMetrics:
    """One NodeMetrics item + its node's snapshot + its pods' rows → one ``cluster.metrics`` message.

    ``custom`` (optional): custom pod metrics by name (``cpi``, ``latency_ms``) → ``(namespace, pod)``
    → value; they fill the ``pods.cpi`` / ``pods.latency_ms`` columns by :func:`custom_columns`' rule."""
    usage = item.get("usage") or {}
    rows = sorted(rows)
    return m.ClusterMetrics(
        ts=ts, node=(item.get("metadata") or {}).get("name"), zone=node.zone,
        window_s=go_duration(item.get("window"), default_window_s),
        node_usage=m.Resources(cpu_cores=quantity(usage.get("cpu")), mem_bytes=quantity(usage.get("memory"))),
        node_allocatable=node.allocatable,
        pods=m.PodSamples(namespace=[r[0] for r in rows], name=[r[1] for r in rows],
                          app=[r[2] for r in rows], cpu_cores=[r[3] for r in rows],
                          mem_bytes=[r[4] for r in rows], **custom_columns(rows, custom)))
