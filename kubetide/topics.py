"""kubetide's Kafka topics (contract): names, keys, partitioning and retention.

Every topic is created explicitly before any worker starts (faust does not create source
topics, and the embedded broker would auto-create a missing one with 4 partitions and no
configs). The key of each topic is part of the contract: consumers rely on per-key order.

Internal topics (prefix ``kubetide.internal.``) are repartition streams between kubetide's
own processors; they are not a contract and may change between releases.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    description: str = ""
    internal: bool = False


CLUSTER_EVENTS = "cluster.events"
CLUSTER_METRICS = "cluster.metrics"
APP_METRICS = "app.metrics"
PROFILES = "profiles"
ANOMALIES = "anomalies"
DECISIONS_DESCHEDULE = "decisions.deschedule"
DECISIONS_AUTOSCALE = "decisions.autoscale"
DECISIONS_NODESCALE = "decisions.nodescale"
ACTIONS = "actions"
DEADLETTER = "deadletter"

# Internal repartition topics.
APP_SAMPLES = "kubetide.internal.app-samples"
PLANNER_INPUT = "kubetide.internal.planner-input"

_COMPACT = {"cleanup.policy": "compact"}
_WEEK = {"retention.ms": str(7 * 24 * 3600 * 1000)}

TOPICS: list[TopicSpec] = [
    TopicSpec(CLUSTER_EVENTS, "kind/namespace/name", 8, dict(_WEEK),
              "object changes from the Kubernetes watch: ADDED/MODIFIED/DELETED + slim snapshot"),
    TopicSpec(CLUSTER_METRICS, "node", 8, dict(_WEEK),
              "one node scrape at event time ts: node usage + columnar per-pod samples"),
    TopicSpec(APP_METRICS, "app", 4, dict(_WEEK), "custom metric samples (qps, queue length, latency)"),
    TopicSpec(PROFILES, "app", 4, dict(_COMPACT), "current service profile of each app (compacted)"),
    TopicSpec(ANOMALIES, "node", 4, dict(_WEEK), "interference findings: victim, antagonists, scores"),
    TopicSpec(DECISIONS_DESCHEDULE, "namespace/workload", 4, dict(_WEEK), "descheduling decisions"),
    TopicSpec(DECISIONS_AUTOSCALE, "namespace/workload", 4, dict(_WEEK), "autoscaling decisions"),
    TopicSpec(DECISIONS_NODESCALE, "node group", 4, dict(_WEEK), "node-scaling decisions"),
    TopicSpec(ACTIONS, "decision id", 4, dict(_WEEK), "what the actuator did with each decision, and why"),
    TopicSpec(DEADLETTER, "origin topic", 1, dict(_WEEK),
              "unreadable messages: raw bytes (base64), reason, origin topic/partition/offset"),
    TopicSpec(APP_SAMPLES, "app", 8, {}, "per-app slices of node scrapes, repartitioned by app", internal=True),
    TopicSpec(PLANNER_INPUT, "cluster", 1, {},
              "node summaries + object changes for the cluster-wide planners (one partition: "
              "the consumer group elects the single planner)", internal=True),
]

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}
PUBLIC_TOPICS = [t.name for t in TOPICS if not t.internal]


def spec(name: str) -> TopicSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown kubetide topic {name!r}; known: {', '.join(BY_NAME)}") from None
