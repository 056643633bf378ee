"""Messages of kubetide's internal repartition topics (not a contract; may change between releases).

- ``kubetide.internal.app-samples`` (key = app): :class:`AppSamples`, one app's slice of one
  node scrape, or (with empty sample arrays) the per-pod requests of the app learned from a
  Pod event, so that the profiler, partitioned by app, knows requests without a cluster view.
- ``kubetide.internal.planner-input`` (one partition, key ``cluster``): :class:`PlannerInput`,
  a :class:`NodeSummary` of one node scrape (kind ``node``), a forwarded ``ClusterEvent`` (kind
  ``event``) or a forwarded interference ``Anomaly`` (kind ``anomaly``, for
  :meth:`streams.core.planner.Planner.apply_anomaly`).

Both are registered with :func:`kubetide.codec.register`, so agents decode them with the one codec.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kubetide import topics
from kubetide.codec import register
from kubetide.models import Anomaly, ClusterEvent, ClusterMetrics, Message, Model, Resources, Timestamp


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
    kind: Literal["node", "event", "anomaly"]
    node: NodeSummary | None = None
    event: ClusterEvent | None = None
    anomaly: Anomaly | None = None

    @model_validator(mode="after")
    def _one_payload(self) -> PlannerInput:
        if ((self.kind == "node") != (self.node is not None) or (self.kind == "event") != (self.event is not None)
                or (self.kind == "anomaly") != (self.anomaly is not None)):
            raise ValueError("kind 'node' carries exactly 'node', kind 'event' exactly 'event', "
                             "kind 'anomaly' exactly 'anomaly'")
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
