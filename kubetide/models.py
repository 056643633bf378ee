"""Python models of every topic's message (contract, version 1).

The JSON Schema files in ``schemas/`` are generated from these models
(``kubetide schemas export``) and a test proves the checked-in files and the models agree.
Change a contract only by adding a new model version beside the old one.

Conventions, the same in every message:
- ``schema``: ``{"name": <topic>, "version": <int>}``, checked before anything else.
- ``ts`` and every ``*_at``: **event time**, seconds since the Unix epoch (UTC), float.
- CPU in cores (float), memory in bytes (float). Names carry their units.
- Unknown fields are ignored (tolerant reader); known fields are type-checked strictly,
  NaN and infinities are refused.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

_CONFIG = ConfigDict(
    strict=True, extra="ignore", allow_inf_nan=False, populate_by_name=True, frozen=True,
    ser_json_inf_nan="null",
)

Scalar = float | int | str | bool | None


class Model(BaseModel):
    model_config = _CONFIG


class SchemaRef(Model):
    name: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)


class Message(Model):
    """Base of every topic message."""

    SCHEMA_NAME: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    schema_: SchemaRef = Field(alias="schema", description="message schema name and version")

    @model_validator(mode="before")
    @classmethod
    def _fill_schema(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schema" not in data and "schema_" not in data:
            data = {**data, "schema": {"name": cls.SCHEMA_NAME, "version": cls.SCHEMA_VERSION}}
        return data

    @model_validator(mode="after")
    def _check_schema(self) -> Message:
        if (self.schema_.name, self.schema_.version) != (self.SCHEMA_NAME, self.SCHEMA_VERSION):
            raise ValueError(
                f"schema is {self.schema_.name}/v{self.schema_.version}, "
                f"expected {self.SCHEMA_NAME}/v{self.SCHEMA_VERSION}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


# ---------------------------------------------------------------- shared parts

Timestamp = float


class Resources(Model):
    cpu_cores: float = Field(ge=0)
    mem_bytes: float = Field(ge=0)


class Taint(Model):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: str | None = None


class TopologySpread(Model):
    max_skew: int = Field(ge=1)
    topology_key: str
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = "DoNotSchedule"
    match_labels: dict[str, str] = Field(default_factory=dict)


class WorkloadRef(Model):
    """The controller that owns a pod, resolved through ReplicaSets to Deployments."""

    namespace: str
    kind: str = Field(description="Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, or Pod (bare)")
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodRef(Model):
    namespace: str
    name: str
    uid: str | None = None
    node: str | None = None
    app: str | None = None


# ---------------------------------------------------------------- cluster.events

class PodSnapshot(Model):
    node: str | None = None
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
    ready: bool = False
    app: str | None = Field(None, description="the app this pod belongs to (workload name)")
    workload: WorkloadRef | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(
        default_factory=dict, description="only kubetide.io/*, pod-deletion-cost and safe-to-evict")
    priority: int = 0
    priority_class: str | None = None
    requests: Resources
    limits: Resources | None = None
    local_storage: bool = Field(False, description="has emptyDir or hostPath volumes")
    mirror: bool = Field(False, description="static (mirror) pod")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    topology_spread: list[TopologySpread] = Field(default_factory=list)
    created_at: Timestamp | None = None


class NodeSnapshot(Model):
    zone: str | None = None
    node_group: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    allocatable: Resources
    capacity: Resources | None = None
    taints: list[Taint] = Field(default_factory=list)
    unschedulable: bool = False
    ready: bool = True


class PdbSnapshot(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    disruptions_allowed: int = 0
    current_healthy: int = 0
    desired_healthy: int = 0
    expected_pods: int = 0
    generation: int | None = None
    observed_generation: int | None = None


class DeploymentSnapshot(Model):
    replicas: int = Field(ge=0)
    ready_replicas: int = 0
    available_replicas: int = 0
    match_labels: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    pod_requests: Resources | None = None
    topology_spread: list[TopologySpread] = Field(default_factory=list)


class NamespaceSnapshot(Model):
    labels: dict[str, str] = Field(default_factory=dict)


EventKind = Literal["Pod", "Node", "PodDisruptionBudget", "Deployment", "Namespace"]
_SNAPSHOT_FIELD = {
    "Pod": "pod", "Node": "node", "PodDisruptionBudget": "pdb", "Deployment": "deployment",
    "Namespace": "namespace_obj",
}


class ClusterEvent(Message):
    """An object change seen by the collector's watch (key ``kind/namespace/name``).

    ``SYNC`` is a periodic or post-relist restatement of an unchanged object (like an
    informer resync) so that consumers that start late converge on the full state.
    """

    SCHEMA_NAME: ClassVar[str] = "cluster.events"

    ts: Timestamp = Field(ge=0)
    type: Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]
    kind: EventKind
    namespace: str = ""
    name: str = Field(min_length=1)
    uid: str | None = None
    resource_version: str | None = None
    pod: PodSnapshot | None = None
    node: NodeSnapshot | None = None
    pdb: PdbSnapshot | None = None
    deployment: DeploymentSnapshot | None = None
    namespace_obj: NamespaceSnapshot | None = None

    @model_validator(mode="after")
    def _snapshot_matches_kind(self) -> ClusterEvent:
        field = _SNAPSHOT_FIELD[self.kind]
        if getattr(self, field) is None:
            raise ValueError(f"a {self.kind} event needs its '{field}' snapshot")
        for other in _SNAPSHOT_FIELD.values():
            if other != field and getattr(self, other) is not None:
                raise ValueError(f"a {self.kind} event must not carry a '{other}' snapshot")
        return self

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


# ---------------------------------------------------------------- cluster.metrics

class PodSamples(Model):
    """Columnar per-pod samples of one node scrape: every list has one entry per pod."""

    namespace: list[str]
    name: list[str]
    app: list[str] = Field(description="app of each pod ('' when unknown)")
    cpu_cores: list[float]
    mem_bytes: list[float]
    cpi: list[float] | None = Field(None, description="cycles per instruction, where measured")
    latency_ms: list[float] | None = Field(None, description="request latency, where measured")

    @model_validator(mode="after")
    def _same_length(self) -> PodSamples:
        n = len(self.name)
        for f in ("namespace", "app", "cpu_cores", "mem_bytes", "cpi", "latency_ms"):
            v = getattr(self, f)
            if v is not None and len(v) != n:
                raise ValueError(f"pods.{f} has {len(v)} entries, pods.name has {n}")
        if any(x < 0 for x in self.cpu_cores) or any(x < 0 for x in self.mem_bytes):
            raise ValueError("pod usage must not be negative")
        return self

    def __len__(self) -> int:
        return len(self.name)


class ClusterMetrics(Message):
    """One node's scrape at event time ``ts`` (key ``node``): batch by node."""

    SCHEMA_NAME: ClassVar[str] = "cluster.metrics"

    ts: Timestamp = Field(ge=0)
    node: str = Field(min_length=1)
    zone: str | None = None
    window_s: float = Field(gt=0)
    node_usage: Resources
    node_allocatable: Resources
    pods: PodSamples


# ---------------------------------------------------------------- app.metrics

class AppMetric(Message):
    SCHEMA_NAME: ClassVar[str] = "app.metrics"

    ts: Timestamp = Field(ge=0)
    namespace: str
    app: str = Field(min_length=1)
    metric: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", description="e.g. qps, queue_length")
    value: float
    labels: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------- profiles

class Percentiles(Model):
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


class ProfileWindow(Model):
    window_s: float = Field(gt=0)
    samples: int = Field(ge=0)
    cpu_cores: Percentiles
    mem_bytes: Percentiles


class Profile(Message):
    """The current profile of an app (key ``app``; compacted topic)."""

    SCHEMA_NAME: ClassVar[str] = "profiles"

    ts: Timestamp = Field(ge=0)
    namespace: str
    app: str = Field(min_length=1)
    pods: int = Field(ge=0, description="pods seen in the last scrape")
    windows: list[ProfileWindow]
    requests: Resources | None = Field(None, description="per-pod requests")
    recommended: Resources | None = Field(None, description="recommended per-pod requests")
    type: Literal["cpu-bound", "memory-bound", "balanced", "bursty", "unknown"] = "unknown"
    period_s: float | None = None
    period_strength: float | None = None
    peak_hours: list[int] = Field(default_factory=list)
    interferes_with: list[str] = Field(default_factory=list)
    complements: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- anomalies

class Suspect(Model):
    namespace: str
    name: str
    app: str | None = None
    score: float


class Anomaly(Message):
    SCHEMA_NAME: ClassVar[str] = "anomalies"

    id: str
    ts: Timestamp = Field(ge=0)
    node: str
    state: Literal["open", "cleared"]
    victim: PodRef
    metric: str
    severity: float
    antagonists: list[Suspect] = Field(default_factory=list)
    window_start: Timestamp
    window_end: Timestamp
    evidence: dict[str, Scalar] = Field(default_factory=dict)


# ---------------------------------------------------------------- decisions

class Decision(Message):
    """Common part of every decision: deterministic id, event time, expiry, reason, evidence."""

    id: str = Field(min_length=8, description="deterministic hash of the decision's inputs")
    made_at: Timestamp = Field(ge=0, description="event time the decision was made at")
    expires_at: Timestamp = Field(ge=0, description="event time after which it must not be applied")
    strategy: str
    reason: str
    evidence: dict[str, Scalar] = Field(default_factory=dict)


class DescheduleDecision(Decision):
    SCHEMA_NAME: ClassVar[str] = "decisions.deschedule"

    action: Literal["evict"] = "evict"
    pod: PodRef
    workload: WorkloadRef
    from_node: str
    to_nodes: list[str] = Field(default_factory=list, description="nodes the pod fits on")


class AutoscaleDecision(Decision):
    SCHEMA_NAME: ClassVar[str] = "decisions.autoscale"

    action: Literal["scale"] = "scale"
    workload: WorkloadRef
    current_replicas: int = Field(ge=0)
    desired_replicas: int = Field(ge=0)
    trigger: str
    zones: dict[str, float] = Field(default_factory=dict, description="demand share per zone")


class NodescaleDecision(Decision):
    SCHEMA_NAME: ClassVar[str] = "decisions.nodescale"

    action: Literal["taint", "untaint", "annotate-pods", "size-placeholder", "drain", "scale"]
    node_group: str
    node: str | None = None
    replicas: int | None = None
    params: dict[str, Scalar] = Field(default_factory=dict)


# ---------------------------------------------------------------- actions

Outcome = Literal["applied", "dry-run", "skipped", "failed", "expired", "duplicate"]


class Action(Message):
    """What the actuator did with one decision (key = decision id)."""

    SCHEMA_NAME: ClassVar[str] = "actions"

    ts: Timestamp = Field(ge=0, description="cluster time the outcome was reached")
    decision_id: str
    decision_topic: str
    strategy: str
    action: str
    target: PodRef | WorkloadRef | None = None
    outcome: Outcome
    reason: str = Field(description="short code, e.g. evicted, pdb, protected-namespace, expired")
    message: str = ""
    http_status: int | None = None
    retry_after_s: float | None = None
    attempt: int = 1
    worker: str = ""

    @property
    def summary(self) -> str:
        return self.outcome if self.outcome in ("applied", "dry-run") else f"{self.outcome}: {self.reason}"


# ---------------------------------------------------------------- deadletter

DeadLetterReason = Literal["decode", "schema", "version", "too-large", "processing"]


class DeadLetter(Message):
    SCHEMA_NAME: ClassVar[str] = "deadletter"

    ts: Timestamp = Field(ge=0, description="wall time the message was dead-lettered")
    origin_topic: str
    origin_partition: int | None = None
    origin_offset: int | None = None
    origin_key_b64: str | None = None
    reason: DeadLetterReason
    error: str
    raw_b64: str = Field(description="the raw message bytes, base64 (truncated when very large)")
    raw_size: int = Field(ge=0)
    raw_sha256: str
    truncated: bool = False
    worker: str = ""


# ---------------------------------------------------------------- registry

MODELS: dict[str, dict[int, type[Message]]] = {}
for _m in (ClusterEvent, ClusterMetrics, AppMetric, Profile, Anomaly, DescheduleDecision,
           AutoscaleDecision, NodescaleDecision, Action, DeadLetter):
    MODELS.setdefault(_m.SCHEMA_NAME, {})[_m.SCHEMA_VERSION] = _m


def decision_id(*parts: Any) -> str:
    """A deterministic id from a decision's inputs (same inputs → same id, on replay too)."""
    raw = orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return hashlib.sha256(raw).hexdigest()[:24]
