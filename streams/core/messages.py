"""Messages of kubetide's internal repartition topics (not a contract; may change between releases).

- ``kubetide.internal.app-samples`` (partition = that of the app's key): :class:`AppSamplesBatch`
  (v2), the per-app slices of several node scrapes whose apps hash to one partition, sent with an
  explicit partition (:func:`slices_by_partition`); or :class:`AppSamples` (v1, key = app) with
  empty sample arrays: the per-pod requests of the app learned from a Pod event, so that the
  profiler, partitioned by app, knows requests without a cluster view.
- ``kubetide.internal.planner-input`` (one partition, key ``cluster``): :class:`PlannerInput`,
  a :class:`NodeSummary` of one node scrape (kind ``node``), a forwarded ``ClusterEvent`` (kind
  ``event``) or a forwarded interference ``Anomaly`` (kind ``anomaly``, for
  :meth:`streams.core.planner.Planner.apply_anomaly`).

Both are registered with :func:`kubetide.codec.register`, so agents decode them with the one codec.
The stream worker's hot path builds them as plain dicts (:func:`slice_dicts`,
:func:`node_input_dict`, the same JSON as the models) and reads them back with
:func:`kubetide.codec.decode_trusted` + ``model_construct`` (:func:`batch_samples`,
:func:`planner_input_trusted`): these topics carry only what the worker itself produced from
validated input, so they are not validated twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, model_validator

from kubetide import topics
from kubetide.codec import decode_obj, register
from kubetide.models import Anomaly, AppMetric, ClusterEvent, ClusterMetrics, Message, Model, Resources, Timestamp


@register
class AppSamples(Message):
    SCHEMA_NAME: ClassVar[str] = topics.APP_SAMPLES

    ts: Timestamp = Field(ge=0)
    namespace: str
    app: str = Field(min_length=1)
    node: str | None = None
    pod: list[str] = Field(default_factory=list, description="pod names, one per sample")
    cpu_cores: list[float] = Field(default_factory=list)
    mem_bytes: list[float] = Field(default_factory=list)
    requests: Resources | None = Field(None, description="per-pod requests, when known (from Pod events)")

    @model_validator(mode="after")
    def _same_length(self) -> AppSamples:
        if not (len(self.pod) == len(self.cpu_cores) == len(self.mem_bytes)):
            raise ValueError("pod, cpu_cores and mem_bytes must have the same length")
        return self


class AppSlice(Model):
    """One app's slice of one node scrape (an element of :class:`AppSamplesBatch`)."""

    ts: Timestamp = Field(ge=0)
    namespace: str
    app: str = Field(min_length=1)
    node: str | None = None
    pod: list[str] = Field(default_factory=list, description="pod names, one per sample")
    cpu_cores: list[float] = Field(default_factory=list)
    mem_bytes: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _same_length(self) -> AppSlice:
        if not (len(self.pod) == len(self.cpu_cores) == len(self.mem_bytes)):
            raise ValueError("pod, cpu_cores and mem_bytes must have the same length")
        return self


@register
class AppSamplesBatch(Message):
    """Per-app slices of one or more node scrapes, all of apps whose key hashes to one partition.

    Slices of one app keep their order (the order of the node scrapes they came from)."""

    SCHEMA_NAME: ClassVar[str] = topics.APP_SAMPLES
    SCHEMA_VERSION: ClassVar[int] = 2

    slices: list[AppSlice] = Field(default_factory=list)


class NodeSummary(Model):
    """One node's scrape, slimmed for the planner: node usage + columnar per-pod usage."""

    ts: Timestamp = Field(ge=0)
    node: str = Field(min_length=1)
    zone: str | None = None
    cpu_usage: float = Field(ge=0, description="cores")
    mem_usage: float = Field(ge=0, description="bytes")
    cpu_allocatable: float = Field(ge=0, description="cores")
    mem_allocatable: float = Field(ge=0, description="bytes")
    pod_namespace: list[str] = Field(default_factory=list)
    pod_name: list[str] = Field(default_factory=list)
    pod_cpu_cores: list[float] = Field(default_factory=list)
    pod_mem_bytes: list[float] = Field(default_factory=list)

    @property
    def cpu_pct(self) -> float | None:
        return None if self.cpu_allocatable <= 0 else 100.0 * self.cpu_usage / self.cpu_allocatable

    def pod_usage(self) -> dict[tuple[str, str], tuple[float, float]]:
        return {(ns, n): (c, m) for ns, n, c, m in zip(self.pod_namespace, self.pod_name,
                                                        self.pod_cpu_cores, self.pod_mem_bytes, strict=False)}


@register
class PlannerInput(Message):
    SCHEMA_NAME: ClassVar[str] = topics.PLANNER_INPUT

    ts: Timestamp = Field(ge=0)
    kind: Literal["node", "event", "anomaly", "app_metric"]
    node: NodeSummary | None = None
    event: ClusterEvent | None = None
    anomaly: Anomaly | None = None
    app_metric: AppMetric | None = None  # kind "app_metric": an app.metrics sample for the autoscaler

    @model_validator(mode="after")
    def _one_payload(self) -> PlannerInput:
        if ((self.kind == "node") != (self.node is not None) or (self.kind == "event") != (self.event is not None)
                or (self.kind == "anomaly") != (self.anomaly is not None)
                or (self.kind == "app_metric") != (self.app_metric is not None)):
            raise ValueError("kind 'node' carries exactly 'node', kind 'event' exactly 'event', "
                             "kind 'anomaly' exactly 'anomaly', kind 'app_metric' exactly 'app_metric'")
        return self


def node_summary(m: ClusterMetrics) -> NodeSummary:
    return NodeSummary(
        ts=m.ts, node=m.node, zone=m.zone,
        cpu_usage=m.node_usage.cpu_cores, mem_usage=m.node_usage.mem_bytes,
        cpu_allocatable=m.node_allocatable.cpu_cores, mem_allocatable=m.node_allocatable.mem_bytes,
        pod_namespace=list(m.pods.namespace), pod_name=list(m.pods.name),
        pod_cpu_cores=list(m.pods.cpu_cores), pod_mem_bytes=list(m.pods.mem_bytes),
    )


def split_metrics(m: ClusterMetrics) -> tuple[list[AppSamples], PlannerInput]:
    """One node scrape → one :class:`AppSamples` per (namespace, app) + the planner's node summary.

    Pods without an app ('' in the scrape) are not profiled. Output order is sorted by (app, namespace).
    """
    groups: dict[tuple[str, str], list[int]] = {}
    p = m.pods
    for i, app in enumerate(p.app):
        if app:
            groups.setdefault((app, p.namespace[i]), []).append(i)
    out = [
        AppSamples(ts=m.ts, namespace=ns, app=app, node=m.node, pod=[p.name[i] for i in idx],
                   cpu_cores=[p.cpu_cores[i] for i in idx], mem_bytes=[p.mem_bytes[i] for i in idx])
        for (app, ns), idx in sorted(groups.items())
    ]
    return out, PlannerInput(ts=m.ts, kind="node", node=node_summary(m))


def app_requests(ev: ClusterEvent) -> AppSamples | None:
    """The per-pod requests of a pod's app, from a Pod event (for the profiler), or None."""
    if ev.kind != "Pod" or ev.type == "DELETED" or ev.pod is None or not ev.pod.app:
        return None
    return AppSamples(ts=ev.ts, namespace=ev.namespace, app=ev.pod.app, requests=ev.pod.requests)


def forward_event(ev: ClusterEvent) -> PlannerInput:
    return PlannerInput(ts=ev.ts, kind="event", event=ev)


def forward_anomaly(a: Anomaly) -> PlannerInput:
    return PlannerInput(ts=a.ts, kind="anomaly", anomaly=a)


def forward_app_metric(m: AppMetric) -> PlannerInput:
    """An ``app.metrics`` sample → the planner (the autoscaler's custom-metric triggers)."""
    return PlannerInput(ts=m.ts, kind="app_metric", app_metric=m)


# ---------------------------------------------------------------- the hot path: plain dicts

_BATCH_SCHEMA = {"name": topics.APP_SAMPLES, "version": AppSamplesBatch.SCHEMA_VERSION}
_PLANNER_SCHEMA = {"name": topics.PLANNER_INPUT, "version": PlannerInput.SCHEMA_VERSION}


def slice_dicts(m: ClusterMetrics) -> list[dict[str, Any]]:
    """:func:`split_metrics`' per-app slices as :class:`AppSlice` dicts (same grouping and order)."""
    groups: dict[tuple[str, str], list[int]] = {}
    p = m.pods
    namespace = p.namespace
    for i, app in enumerate(p.app):
        if app:
            k = (app, namespace[i])
            g = groups.get(k)
            if g is None:
                groups[k] = [i]
            else:
                g.append(i)
    name, cpu, mem = p.name, p.cpu_cores, p.mem_bytes
    return [{"ts": m.ts, "namespace": ns, "app": app, "node": m.node, "pod": [name[i] for i in idx],
             "cpu_cores": [cpu[i] for i in idx], "mem_bytes": [mem[i] for i in idx]}
            for (app, ns), idx in sorted(groups.items())]


def slices_by_partition(slices: list[dict[str, Any]], partition_of: Callable[[str], int],
                        max_samples: int = 2000) -> list[tuple[int, bytes]]:
    """Group slices by the partition of their app's key (``partition_of(app)``, the producer's
    partitioner, so a slice lands where a message keyed by its app would): encoded
    :class:`AppSamplesBatch` messages as ``(partition, value)``, slices in their original order,
    a new message per partition once one holds ``max_samples`` samples (bounded message size)."""
    parts: dict[int, list[list[dict[str, Any]]]] = {}
    fill: dict[int, int] = {}
    for s in slices:
        p = partition_of(s["app"])
        n = len(s["pod"])
        chunks = parts.get(p)
        if chunks is None or (fill[p] + n > max_samples and fill[p] > 0):
            parts.setdefault(p, []).append([])
            chunks = parts[p]
            fill[p] = 0
        chunks[-1].append(s)
        fill[p] += n
    return [(p, orjson.dumps({"schema": _BATCH_SCHEMA, "slices": ss})) for p, chunks in parts.items()
            for ss in chunks]


def batch_samples(obj: dict[str, Any]) -> list[AppSamples]:
    """The slices of a trusted (worker-produced) :class:`AppSamplesBatch` JSON object, as
    :class:`AppSamples` built without validation."""
    return [AppSamples.model_construct(**s) for s in obj["slices"]]


def node_input_dict(m: ClusterMetrics) -> dict[str, Any]:
    """``split_metrics(m)[1].to_dict()`` (the planner's ``PlannerInput`` kind ``node``), built directly."""
    p = m.pods
    node: dict[str, Any] = {"ts": m.ts, "node": m.node}
    if m.zone is not None:
        node["zone"] = m.zone
    node.update(cpu_usage=m.node_usage.cpu_cores, mem_usage=m.node_usage.mem_bytes,
                cpu_allocatable=m.node_allocatable.cpu_cores, mem_allocatable=m.node_allocatable.mem_bytes,
                pod_namespace=list(p.namespace), pod_name=list(p.name), pod_cpu_cores=list(p.cpu_cores),
                pod_mem_bytes=list(p.mem_bytes))
    return {"schema": _PLANNER_SCHEMA, "ts": m.ts, "kind": "node", "node": node}


def planner_input_trusted(obj: dict[str, Any]) -> PlannerInput:
    """A trusted (worker-produced) planner-input JSON object as a :class:`PlannerInput`: kind
    ``node`` is built without validation (the hot path: one per node scrape), other kinds are
    validated (they are few)."""
    if obj.get("kind") == "node":
        return PlannerInput.model_construct(ts=obj["ts"], kind="node", node=NodeSummary.model_construct(**obj["node"]))
    msg = decode_obj(topics.PLANNER_INPUT, obj)
    assert isinstance(msg, PlannerInput)
    return msg
