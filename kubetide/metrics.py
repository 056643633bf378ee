"""kubetide's Prometheus metrics: the one catalogue, declared once, plus the helpers workers call.

Every worker exposes the process-wide default registry at ``/metrics``
(:func:`start_metrics_server`, or the aiohttp :func:`metrics_handler` inside an existing web
app). Conventions: snake_case names prefixed ``kubetide_``, the unit in the name, ``_total``
on counters only, and bounded label values: topics are kubetide's own (anything else is
``other``), reasons and outcomes are short codes (anything else is ``other``), workloads
and node groups are bounded by the fleet's deployments and groups, and ``node`` appears only
on per-node gauges (bounded by the fleet size). Never a pod name.

The label ``worker`` is the component (collector, streams, actuator, ...), not a process id:
Prometheus adds ``instance`` and ``job``.

========================================  =========  =======================  ==========================================
metric                                    type       labels                   meaning
========================================  =========  =======================  ==========================================
kubetide_worker_info                      gauge      worker, version          always 1; the worker's version
kubetide_worker_up                        gauge      worker                   1 while the worker runs, 0 once it stops
kubetide_messages_consumed_total          counter    topic, worker            messages read from a topic
kubetide_messages_produced_total          counter    topic, worker            messages written to a topic
kubetide_deadletters_total                counter    origin, reason, worker   dead-lettered messages
kubetide_consumer_lag_messages            gauge      group, topic, partition  end offset − committed offset of a group
kubetide_consumer_rebalances_total        counter    group, worker            partition assignments received
kubetide_processing_latency_seconds       histogram  topic, worker            a message's event time → processed
kubetide_decisions_total                  counter    type, strategy           decisions (deschedule/autoscale/nodescale)
kubetide_actions_total                    counter    outcome, reason          actuator outcomes (applied, dry-run, ...)
kubetide_evictions_refused_by_pdb_total   counter    namespace                evictions refused (429) for a PDB
kubetide_node_cpu_usage_ratio             gauge      node                     node CPU usage / allocatable CPU
kubetide_node_info                        gauge      node, zone, node_group   always 1; a node's zone and node group
kubetide_cluster_cpu_usage_spread_ratio   gauge      measure                  node usage spread: p95_p5 or max_min
kubetide_workload_demand_cpu_cores        gauge      namespace, workload      observed CPU demand of a workload
kubetide_workload_forecast_cpu_cores      gauge      namespace, workload      forecast demand at the scaling horizon
kubetide_workload_replicas_predicted      gauge      namespace, workload      replicas the forecast calls for
kubetide_workload_replicas_actual         gauge      namespace, workload      replicas the workload runs
kubetide_forecast_error_ratio             gauge      namespace, workload      mean abs. percentage error of the forecast
kubetide_nodegroup_nodes                  gauge      node_group               ready nodes in a node group
kubetide_nodegroup_demand_cpu_cores       gauge      node_group               CPU requested by its pods (and pending)
kubetide_nodegroup_allocatable_cpu_cores  gauge      node_group               allocatable CPU of its nodes
kubetide_pending_pods                     gauge      (none)                   pods in phase Pending
kubetide_anomalies_open                   gauge      node                     open interference findings on a node
kubetide_anomalies_total                  counter    metric                   interference findings opened
kubetide_antagonist_score                 gauge      app, node                an app's top score as antagonist (open)
kubetide_broker_restarts_total            counter    worker                   broker lost its state (restart) detected
kubetide_broker_records_lost_total        counter    topic, worker            records the broker held when it lost them
========================================  =========  =======================  ==========================================

Who exports what (so that no series is exported twice under different ``job`` labels):
the **collector** sets the cluster facts it reads from the Kubernetes API (node CPU usage and
spread, ``kubetide_node_info``, node-group nodes / demand / allocatable, pending pods,
``kubetide_workload_replicas_actual`` and ``kubetide_workload_demand_cpu_cores``, through
:class:`kubetide.loadwatcher.ClusterView`) and the consumer lag of the kubetide groups
(:class:`LagMonitor`); the **stream workers** set decisions, anomalies and, from the autoscaling
planner, ``kubetide_workload_forecast_cpu_cores`` / ``_replicas_predicted`` /
``kubetide_forecast_error_ratio``; the **actuator** sets actions, PDB refusals and the latency of
decisions; every worker counts what it consumes, produces and dead-letters, and its rebalances.
``kubetide_pending_pods`` has no labels, so every process exposes it (0 where unset): dashboards
read ``max(kubetide_pending_pods)``.

``python -m kubetide.metrics --synthetic --port 9470`` serves every metric with made-up,
moving values: handy to preview the Grafana dashboards without a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from kubetide import __version__
from kubetide import topics as _topics
from kubetide.topics import BY_NAME as _TOPICS

# The `_created` series double every counter and histogram for no use here.
prometheus_client.disable_created_metrics()

#: Buckets of event time → processed, in seconds: from a healthy pipeline (tens of ms)
#: to a stalled one (minutes).
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Default ports of each worker's /metrics (the same in compose/ and deploy/).
METRICS_PORTS = {"collector": 9471, "streams": 9472, "actuator": 9473}

# ---------------------------------------------------------------- the catalogue

WORKER_INFO = Gauge("kubetide_worker_info", "kubetide worker and version (always 1)", ["worker", "version"])
WORKER_UP = Gauge("kubetide_worker_up", "1 while the worker runs, 0 once it stops", ["worker"])

MESSAGES_CONSUMED = Counter("kubetide_messages_consumed_total", "messages read from a topic", ["topic", "worker"])
MESSAGES_PRODUCED = Counter("kubetide_messages_produced_total", "messages written to a topic", ["topic", "worker"])
DEADLETTERS = Counter("kubetide_deadletters_total", "messages sent to the deadletter topic, by origin topic and reason",
                      ["origin", "reason", "worker"])
CONSUMER_LAG = Gauge("kubetide_consumer_lag_messages",
                     "messages between a consumer group's committed offset and the partition's end",
                     ["group", "topic", "partition"])
REBALANCES = Counter("kubetide_consumer_rebalances_total", "partition assignments received by a consumer group member",
                     ["group", "worker"])
PROCESSING_LATENCY = Histogram("kubetide_processing_latency_seconds",
                               "from a message's event time to the end of its processing",
                               ["topic", "worker"], buckets=LATENCY_BUCKETS_S)

DECISIONS = Counter("kubetide_decisions_total", "decisions emitted, by type and strategy", ["type", "strategy"])
ACTIONS = Counter("kubetide_actions_total", "actuator outcomes, by outcome and reason", ["outcome", "reason"])
EVICTIONS_REFUSED_PDB = Counter("kubetide_evictions_refused_by_pdb_total",
                                "evictions refused by the Eviction API because of a PodDisruptionBudget",
                                ["namespace"])

NODE_CPU_USAGE = Gauge("kubetide_node_cpu_usage_ratio", "node CPU usage divided by allocatable CPU", ["node"])
NODE_INFO = Gauge("kubetide_node_info", "a node's zone and node group (always 1)", ["node", "zone", "node_group"])
CPU_SPREAD = Gauge("kubetide_cluster_cpu_usage_spread_ratio",
                   "spread of node CPU usage ratios: p95_p5 (95th − 5th percentile) or max_min", ["measure"])

WORKLOAD_DEMAND = Gauge("kubetide_workload_demand_cpu_cores", "observed CPU demand of a workload",
                        ["namespace", "workload"])
WORKLOAD_FORECAST = Gauge("kubetide_workload_forecast_cpu_cores", "forecast CPU demand at the autoscaling horizon",
                          ["namespace", "workload"])
REPLICAS_PREDICTED = Gauge("kubetide_workload_replicas_predicted", "replicas the forecast calls for",
                           ["namespace", "workload"])
REPLICAS_ACTUAL = Gauge("kubetide_workload_replicas_actual", "replicas the workload runs", ["namespace", "workload"])
FORECAST_ERROR = Gauge("kubetide_forecast_error_ratio",
                       "mean absolute percentage error of the demand forecast over its last window",
                       ["namespace", "workload"])

NODEGROUP_NODES = Gauge("kubetide_nodegroup_nodes", "ready nodes in a node group", ["node_group"])
NODEGROUP_DEMAND = Gauge("kubetide_nodegroup_demand_cpu_cores",
                         "CPU requested by the pods on, or pending for, a node group", ["node_group"])
NODEGROUP_ALLOCATABLE = Gauge("kubetide_nodegroup_allocatable_cpu_cores", "allocatable CPU of a node group's nodes",
                              ["node_group"])
PENDING_PODS = Gauge("kubetide_pending_pods", "pods in phase Pending")

ANOMALIES_OPEN = Gauge("kubetide_anomalies_open", "open interference findings on a node", ["node"])
ANOMALIES = Counter("kubetide_anomalies_total", "interference findings opened, by victim metric", ["metric"])
ANTAGONIST_SCORE = Gauge("kubetide_antagonist_score",
                         "highest score of an app as the antagonist of an open interference finding, per node",
                         ["app", "node"])
BROKER_RESTARTS = Counter("kubetide_broker_restarts_total", "times the broker was found to have lost its state",
                          ["worker"])
BROKER_RECORDS_LOST = Counter("kubetide_broker_records_lost_total",
                              "records the broker held at the last check before it lost its state", ["topic", "worker"])


@dataclass(frozen=True)
class MetricSpec:
    metric: MetricWrapperBase
    unit: str  # "" for unitless counts and info

    @property
    def name(self) -> str:
        """The family name (a counter's without ``_total``)."""
        return self.metric.describe()[0].name

    @property
    def type(self) -> str:
        return self.metric.describe()[0].type

    @property
    def exposed_name(self) -> str:
        return self.name + "_total" if self.type == "counter" else self.name

    def series_names(self) -> tuple[str, ...]:
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.exposed_name,)


#: Every kubetide metric with its unit (the docstring table above, as data).
CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec(WORKER_INFO, ""), MetricSpec(WORKER_UP, ""),
    MetricSpec(MESSAGES_CONSUMED, ""), MetricSpec(MESSAGES_PRODUCED, ""), MetricSpec(DEADLETTERS, ""),
    MetricSpec(CONSUMER_LAG, "messages"), MetricSpec(REBALANCES, ""), MetricSpec(PROCESSING_LATENCY, "seconds"),
    MetricSpec(DECISIONS, ""), MetricSpec(ACTIONS, ""), MetricSpec(EVICTIONS_REFUSED_PDB, ""),
    MetricSpec(NODE_CPU_USAGE, "ratio"), MetricSpec(NODE_INFO, ""), MetricSpec(CPU_SPREAD, "ratio"),
    MetricSpec(WORKLOAD_DEMAND, "cpu_cores"), MetricSpec(WORKLOAD_FORECAST, "cpu_cores"),
    MetricSpec(REPLICAS_PREDICTED, ""), MetricSpec(REPLICAS_ACTUAL, ""), MetricSpec(FORECAST_ERROR, "ratio"),
    MetricSpec(NODEGROUP_NODES, ""), MetricSpec(NODEGROUP_DEMAND, "cpu_cores"),
    MetricSpec(NODEGROUP_ALLOCATABLE, "cpu_cores"), MetricSpec(PENDING_PODS, ""),
    MetricSpec(ANOMALIES_OPEN, ""), MetricSpec(ANOMALIES, ""), MetricSpec(ANTAGONIST_SCORE, ""),
    MetricSpec(BROKER_RESTARTS, ""), MetricSpec(BROKER_RECORDS_LOST, ""),
)


def series_names() -> frozenset[str]:
    """Every sample name kubetide exposes (``_bucket``/``_sum``/``_count`` for histograms)."""
    return frozenset(n for spec in CATALOGUE for n in spec.series_names())


# ---------------------------------------------------------------- bounded label values

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DECISION_TYPES = ("deschedule", "autoscale", "nodescale")
_worker = "unknown"


def _code(value: Any) -> str:
    """A short code, or ``other``: keeps free text (error messages) out of labels."""
    s = str(value or "").strip()
    return s if _CODE.match(s) else "other"


def _topic(topic: str) -> str:
    return topic if topic in _TOPICS else "other"


# ---------------------------------------------------------------- helpers workers call

def set_worker(name: str, version: str = __version__) -> None:
    """Name this process's worker (the ``worker`` label of its metrics) and mark it up."""
    global _worker
    _worker = _code(name)
    WORKER_INFO.labels(_worker, version).set(1)
    WORKER_UP.labels(_worker).set(1)


def set_worker_down() -> None:
    WORKER_UP.labels(_worker).set(0)


def observe_consumed(topic: str, n: int = 1) -> None:
    MESSAGES_CONSUMED.labels(_topic(topic), _worker).inc(n)


def observe_produced(topic: str, n: int = 1) -> None:
    MESSAGES_PRODUCED.labels(_topic(topic), _worker).inc(n)


def observe_deadletter(origin: str, reason: str) -> None:
    """One message dead-lettered; ``reason`` is a DeadLetterReason (decode, schema, ...)."""
    DEADLETTERS.labels(_topic(origin), _code(reason), _worker).inc()


def observe_latency(topic: str, event_ts: float, now: float | None = None) -> None:
    """Event time → processed: ``now`` (default wall clock) minus the message's ``ts``."""
    now = time.time() if now is None else now
    PROCESSING_LATENCY.labels(_topic(topic), _worker).observe(max(0.0, now - event_ts))


def set_consumer_lag(group: str, lag: Mapping[tuple[str, int], int]) -> None:
    """Lag of ``group`` per (topic, partition): replaces the group's previous values."""
    group = _code(group)
    _replace(CONSUMER_LAG, {(group, _topic(t), str(int(p))): max(0, v) for (t, p), v in lag.items()},
             keep=lambda labels: labels[0] != group)


def observe_broker_restart(lost: Mapping[str, int]) -> None:
    """The broker lost its state (a restart of the in-memory embedded broker): count it and the records
    per topic it held at the last check before (a lower bound of what was lost)."""
    BROKER_RESTARTS.labels(_worker).inc()
    for topic, n in lost.items():
        if n > 0:
            BROKER_RECORDS_LOST.labels(_topic(topic), _worker).inc(n)


def observe_rebalance(group: str) -> None:
    REBALANCES.labels(_code(group), _worker).inc()


def observe_decision(decision_type: str, strategy: str, n: int = 1) -> None:
    """``decision_type``: deschedule/autoscale/nodescale, or the decision topic's name."""
    t = decision_type.removeprefix("decisions.")
    DECISIONS.labels(t if t in _DECISION_TYPES else "other", _code(strategy)).inc(n)


def observe_action(outcome: str, reason: str, namespace: str | None = None) -> None:
    """One actuator outcome. A refusal for a PDB (reason ``pdb``) also counts in
    ``kubetide_evictions_refused_by_pdb_total`` under the pod's namespace."""
    ACTIONS.labels(_code(outcome), _code(reason)).inc()
    if _code(reason) == "pdb":
        EVICTIONS_REFUSED_PDB.labels(namespace or "unknown").inc()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def set_node_usage(usage: Mapping[str, float],
                   info: Mapping[str, tuple[str | None, str | None]] | None = None) -> dict[str, float]:
    """Set every node's CPU usage ratio (nodes missing from ``usage`` are dropped) and the
    cluster spread; ``info`` maps node → (zone, node group). Returns the spread."""
    _replace(NODE_CPU_USAGE, {(node,): ratio for node, ratio in usage.items()})
    if info is not None:
        _replace(NODE_INFO, {(node, zone or "", group or ""): 1 for node, (zone, group) in info.items()})
    values = [float(v) for v in usage.values()]
    spread = {"p95_p5": 0.0, "max_min": 0.0}
    if values:
        spread = {"p95_p5": percentile(values, 95) - percentile(values, 5), "max_min": max(values) - min(values)}
    for measure, value in spread.items():
        CPU_SPREAD.labels(measure).set(value)
    return spread


def set_workload(namespace: str, workload: str, *, demand_cpu_cores: float | None = None,
                 forecast_cpu_cores: float | None = None, replicas_predicted: int | None = None,
                 replicas_actual: int | None = None, forecast_error_ratio: float | None = None) -> None:
    """Autoscaling view of one workload; only the values given are set."""
    for gauge, value in ((WORKLOAD_DEMAND, demand_cpu_cores), (WORKLOAD_FORECAST, forecast_cpu_cores),
                         (REPLICAS_PREDICTED, replicas_predicted), (REPLICAS_ACTUAL, replicas_actual),
                         (FORECAST_ERROR, forecast_error_ratio)):
        if value is not None:
            gauge.labels(namespace, workload).set(value)


def forget_workload(namespace: str, workload: str, *, forecast_only: bool = False) -> None:
    """Drop a workload's autoscaling series (``forecast_only``: the autoscaler's forecast, predicted
    replicas and forecast error, which the stream worker owning the planner publishes)."""
    gauges = (WORKLOAD_FORECAST, REPLICAS_PREDICTED, FORECAST_ERROR)
    if not forecast_only:
        gauges += (WORKLOAD_DEMAND, REPLICAS_ACTUAL)
    for gauge in gauges:
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, workload)


def set_nodegroup(node_group: str, *, nodes: int, demand_cpu_cores: float | None = None,
                  allocatable_cpu_cores: float | None = None) -> None:
    NODEGROUP_NODES.labels(node_group).set(nodes)
    if demand_cpu_cores is not None:
        NODEGROUP_DEMAND.labels(node_group).set(demand_cpu_cores)
    if allocatable_cpu_cores is not None:
        NODEGROUP_ALLOCATABLE.labels(node_group).set(allocatable_cpu_cores)


def forget_nodegroup(node_group: str) -> None:
    for gauge in (NODEGROUP_NODES, NODEGROUP_DEMAND, NODEGROUP_ALLOCATABLE):
        with contextlib.suppress(KeyError):
            gauge.remove(node_group)


def set_pending_pods(n: int) -> None:
    PENDING_PODS.set(n)


class AnomalyTracker:
    """Keeps ``kubetide_anomalies_open`` and ``kubetide_antagonist_score`` equal to the open
    findings seen on the ``anomalies`` topic: feed it every message (model or dict)."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[str, list[tuple[str, float]]]] = {}
        self._lock = threading.Lock()

    def observe(self, anomaly: Any) -> None:
        get = anomaly.get if isinstance(anomaly, Mapping) else lambda k, d=None: getattr(anomaly, k, d)
        aid, node, state = str(get("id")), str(get("node")), get("state")
        if state == "open":
            suspects = []
            for s in get("antagonists", None) or []:
                sg = s.get if isinstance(s, Mapping) else lambda k, d=None, s=s: getattr(s, k, d)
                suspects.append((sg("app") or sg("name") or "unknown", float(sg("score") or 0.0)))
            with self._lock:
                if aid not in self._open:
                    ANOMALIES.labels(_code(get("metric"))).inc()
                self._open[aid] = (node, suspects)
        else:
            with self._lock:
                self._open.pop(aid, None)
        self._publish()

    def _publish(self) -> None:
        with self._lock:
            per_node: dict[str, int] = {}
            scores: dict[tuple[str, str], float] = {}
            for node, suspects in self._open.values():
                per_node[node] = per_node.get(node, 0) + 1
                for app, score in suspects:
                    scores[(app, node)] = max(score, scores.get((app, node), -math.inf))
            _replace(ANOMALIES_OPEN, {(node,): n for node, n in per_node.items()})
            _replace(ANTAGONIST_SCORE, scores)


ANOMALY_TRACKER = AnomalyTracker()


def observe_anomaly(anomaly: Any) -> None:
    """Track one ``anomalies`` message (open or cleared) in the anomaly gauges."""
    ANOMALY_TRACKER.observe(anomaly)


_series: dict[str, set[tuple[str, ...]]] = {}
_series_lock = threading.Lock()


def _replace(gauge: Gauge, values: Mapping[tuple[str, ...], float],
             keep: Callable[[tuple[str, ...]], bool] = lambda labels: False) -> None:
    """Set ``gauge`` to exactly ``values``: series not given are removed unless ``keep``."""
    key = gauge.describe()[0].name
    with _series_lock:
        old = _series.setdefault(key, set())
        for labels in old - set(values):
            if not keep(labels):
                gauge.remove(*labels)
                old.discard(labels)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
            old.add(labels)


# ---------------------------------------------------------------- consumer lag

#: Consumer groups whose lag the collector reports by default, with the topics they consume:
#: the stream workers' faust app and the actuator (their default group ids).
DEFAULT_LAG_GROUPS: dict[str, tuple[str, ...]] = {
    "kubetide-streams": (_topics.CLUSTER_METRICS, _topics.CLUSTER_EVENTS, _topics.APP_SAMPLES,
                         _topics.PLANNER_INPUT),
    "kubetide-actuator": (_topics.DECISIONS_DESCHEDULE, _topics.DECISIONS_AUTOSCALE, _topics.DECISIONS_NODESCALE),
}


class LagMonitor:
    """Polls the committed offsets of consumer groups and the end offsets of their topics' partitions
    and keeps ``kubetide_consumer_lag_messages`` equal to end − committed (never negative; partitions
    the group never committed are left out).

    One worker runs it for the whole pipeline (the collector), so the lag of a group is reported
    once, also when none of its members is alive (that is when it matters). Committed offsets are
    read with a consumer carrying the group's id that never subscribes (so it never joins the group):
    aiokafka's admin ``list_consumer_group_offsets`` fails against the embedded broker. ``client_kwargs``
    are extra aiokafka settings (TLS/SASL, :meth:`kubetide.kafka.KafkaSettings.client_kwargs`). On the
    embedded broker an end offset can read low (ListOffsets answers the last batch's base + 1), so
    lag there is a lower bound.
    """

    def __init__(self, bootstrap: str, groups: Mapping[str, tuple[str, ...]] | None = None, *,
                 interval_s: float = 15.0, client_kwargs: Mapping[str, Any] | None = None) -> None:
        self.bootstrap, self.interval_s = bootstrap, interval_s
        self.groups = dict(DEFAULT_LAG_GROUPS if groups is None else groups)
        self.client_kwargs = dict(client_kwargs or {})
        self._consumers: dict[str | None, Any] = {}

    async def _consumer(self, group: str | None) -> Any:
        from aiokafka import AIOKafkaConsumer

        c = self._consumers.get(group)
        if c is None:
            c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
                                 client_id=f"kubetide-lag-{group or 'ends'}", **self.client_kwargs)
            await c.start()
            self._consumers[group] = c
        return c

    async def poll_once(self) -> dict[str, dict[tuple[str, int], int]]:
        """Lag of every group per (topic, partition) it has committed; sets the gauge."""
        from aiokafka import TopicPartition

        ends_reader = await self._consumer(None)
        await ends_reader.topics()
        out: dict[str, dict[tuple[str, int], int]] = {}
        for group, group_topics in self.groups.items():
            tps = [TopicPartition(t, p) for t in group_topics for p in sorted(ends_reader.partitions_for_topic(t)
                                                                               or ())]
            reader = await self._consumer(group)
            committed = {tp: await reader.committed(tp) for tp in tps}
            tps = [tp for tp, off in committed.items() if off is not None and off >= 0]
            ends = await ends_reader.end_offsets(tps) if tps else {}
            lag = {(tp.topic, tp.partition): max(0, int(ends.get(tp, 0)) - int(committed[tp] or 0)) for tp in tps}
            set_consumer_lag(group, lag)
            out[group] = lag
        return out

    async def run(self, stop: Any) -> None:
        """Poll every ``interval_s`` until ``stop`` (an asyncio.Event) is set; errors are logged, never fatal."""
        import asyncio

        log = logging.getLogger("kubetide.metrics")
        failures = 0
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if failures in (1, 10) or failures % 100 == 0:
                        log.warning("consumer lag poll failed (%d in a row): %s", failures, exc)
                    await self.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        consumers, self._consumers = self._consumers, {}
        for c in consumers.values():
            with contextlib.suppress(Exception):
                await c.stop()


# ---------------------------------------------------------------- serving /metrics

_servers: dict[int, Any] = {}


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` of the default registry from a daemon thread (never blocks an event
    loop). ``port`` 0 picks a free port. Returns the bound port."""
    result = prometheus_client.start_http_server(port, addr=host)
    server = result[0] if isinstance(result, tuple) else result
    bound = int(server.server_address[1])
    _servers[bound] = server
    return bound


def stop_metrics_server(port: int) -> None:
    server = _servers.pop(port, None)
    if server is not None:
        server.shutdown()
        server.server_close()


async def metrics_handler(request: Any) -> Any:
    """aiohttp handler for ``/metrics``, for a worker that already runs an aiohttp app."""
    from aiohttp import web

    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------- synthetic values (dashboard preview, tests)

def synthetic_step(t: float, rng: random.Random, nodes: int = 9) -> None:
    """Move every metric once with plausible values at time ``t`` (seconds)."""
    zones = ("zone-a", "zone-b", "zone-c")
    tide = 0.5 + 0.35 * math.sin(2 * math.pi * t / 600.0)
    usage = {f"node-{i}": min(1.0, max(0.0, tide + (0.35 if i == 0 else 0.0) + rng.gauss(0, 0.05)))
             for i in range(nodes)}
    set_node_usage(usage, {n: (zones[i % 3], "elastic" if i >= 6 else "fixed") for i, n in enumerate(usage)})
    for topic in ("cluster.events", "cluster.metrics", "decisions.deschedule", "actions"):
        observe_consumed(topic, rng.randint(1, 20))
        observe_produced(topic, rng.randint(1, 20))
        observe_latency(topic, t - rng.expovariate(4.0), now=t)
    observe_deadletter("cluster.metrics", rng.choice(["decode", "schema"]))
    set_consumer_lag("kubetide-streams", {("cluster.metrics", p): rng.randint(0, 50) for p in range(8)})
    set_consumer_lag("kubetide-actuator", {("decisions.deschedule", p): rng.randint(0, 5) for p in range(4)})
    observe_rebalance("kubetide-streams")
    if rng.random() < 0.02 or BROKER_RESTARTS.labels(_worker)._value.get() == 0:
        observe_broker_restart({"cluster.metrics": rng.randint(1, 500)})
    observe_decision("deschedule", "LowNodeLoad", rng.randint(1, 3))
    observe_decision("autoscale", "forecast")
    observe_decision("nodescale", "nightly-consolidation")
    observe_action("applied", "evicted")
    observe_action("skipped", "pdb", namespace="shop")
    observe_action("dry-run", "dry-run")
    for ns, wl, base in (("shop", "checkout", 4.0), ("shop", "catalog", 2.0), ("search", "indexer", 6.0)):
        demand = base * (1 + tide)
        forecast = demand * (1 + rng.gauss(0, 0.05))
        set_workload(ns, wl, demand_cpu_cores=demand, forecast_cpu_cores=forecast,
                     replicas_predicted=math.ceil(forecast / 0.5), replicas_actual=math.ceil(demand / 0.5),
                     forecast_error_ratio=abs(forecast - demand) / demand)
    set_nodegroup("fixed", nodes=6, demand_cpu_cores=20 + 10 * tide, allocatable_cpu_cores=48)
    set_nodegroup("elastic", nodes=2 + round(3 * tide), demand_cpu_cores=8 + 12 * tide,
                  allocatable_cpu_cores=8.0 * (2 + round(3 * tide)))
    set_pending_pods(rng.randint(0, 4))
    observe_anomaly({"id": "a1", "node": "node-0", "state": "open", "metric": "latency_ms",
                     "antagonists": [{"app": "batch-etl", "score": 0.9}, {"app": "log-shipper", "score": 0.3}]})
    observe_anomaly({"id": f"b{int(t) % 3}", "node": "node-4", "state": "open", "metric": "cpi",
                     "antagonists": [{"app": "ml-train", "score": 0.6}]})
    observe_anomaly({"id": f"b{(int(t) + 1) % 3}", "node": "node-4", "state": "cleared"})


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubetide.metrics", description=__doc__.split("\n")[0])
    p.add_argument("--synthetic", action="store_true", help="serve made-up, moving values of every metric")
    p.add_argument("--port", type=int, default=0, help="port of /metrics (default 0: a free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between synthetic updates")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: never)")
    args = p.parse_args(argv)
    set_worker("synthetic" if args.synthetic else "metrics")
    rng = random.Random(7)
    if args.synthetic:
        synthetic_step(time.time(), rng)
    port = start_metrics_server(args.port, args.host)
    print(f"serving /metrics on http://{args.host}:{port}/metrics", flush=True)
    end = time.monotonic() + args.duration if args.duration > 0 else math.inf
    try:
        while time.monotonic() < end:
            time.sleep(args.interval)
            if args.synthetic:
                synthetic_step(time.time(), rng)
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------- worker wiring


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get("KUBETIDE_METRICS_PORT")
    parser.add_argument("--metrics-port", type=int, default=int(env) if env else None,
                        help="serve Prometheus /metrics on this port (default: $KUBETIDE_METRICS_PORT, else "
                             "collector 9471, streams 9472, actuator 9473; 0 = any free port; -1 = off)")


def start_worker_metrics(name: str, port: int | None) -> int | None:
    """Label this process's metrics as worker ``name`` and serve /metrics; returns the bound port."""
    set_worker(name)
    port = METRICS_PORTS.get(name, 0) if port is None else port
    if port < 0:
        return None
    bound = start_metrics_server(port)
    logging.getLogger("kubetide.metrics").info("%s: Prometheus metrics at http://0.0.0.0:%d/metrics", name, bound)
    return bound


if __name__ == "__main__":
    sys.exit(_main())
