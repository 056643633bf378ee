"""The faust agents: thin shells that decode, call ``streams.core`` and send the results.

Every consumed message goes through :func:`kubetide.codec.decode`; any error while handling it
becomes a ``deadletter`` message (key = origin topic) and the agent goes on with the next one.

- ``split_metrics`` on ``cluster.metrics``: per-app slices → app-samples (key app), the node
  summary → planner-input (key ``cluster``).
- ``forward_events`` on ``cluster.events``: → planner-input; a Pod's requests → app-samples.
- ``profiler`` on app-samples: per-app :class:`~streams.core.profile.AppProfileState`, cached in
  memory and written to a changelog-backed table each time a profile is emitted (at most once
  per app per ``emit_interval_s`` of event time). After a crash or a partition move, an app's
  profile resumes from its last emitted state (samples since then are lost: ≤ one interval).
  The table and cache key is ``namespace/app`` (:func:`~streams.core.profile.state_key`): two
  namespaces with the same app name are profiled separately, though their ``profiles`` messages
  share the topic key ``app`` (the contract). ``interferes_with`` / ``complements`` come from this
  worker's :class:`~streams.core.interference.Advisor` (anomalies this worker detected, hourly CPU
  of the apps it profiles): with several workers each sees only its own partitions' share.
- ``interference`` on ``cluster.metrics`` (key node): per-node
  :class:`~streams.core.interference.NodeState` **in memory** (bounded ring buffers), each scrape
  through :func:`~streams.core.interference.update`, the anomalies → ``anomalies`` (key node) and,
  as ``PlannerInput`` kind ``anomaly``, → planner-input (key ``cluster``). A
  partition move moves a node with it; the new owner re-learns the node's normals within
  ``warmup`` scrapes. Undecodable input is dead-lettered once, by ``split-metrics``; this agent
  skips it (and dead-letters only its own processing errors).
- ``planner`` on planner-input (one partition → one active planner): in-memory
  :class:`~streams.core.planner.Planner`; kind ``anomaly`` goes to ``Planner.apply_anomaly`` (the
  Interference strategy acts on it at the next tick), the other kinds to ``Planner.handle``. It
  is rebuilt, not restored, after a restart or when
  the partition comes back to this worker: the collector's periodic ``SYNC`` events restate every
  object and ``consecutive`` fresh ticks are needed before a node is a source again.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from prometheus_client import generate_latest

from kubetide import metrics as catalogue
from kubetide import topics
from kubetide.codec import DecodeError, dead_letter_for, decode, encode
from streams import metrics
from streams.core.interference import Advisor, InterferenceSettings, NodeState
from streams.core.interference import update as interference_update
from streams.core.messages import (
    AppSamples,
    PlannerInput,
    app_requests,
    forward_anomaly,
    forward_event,
    split_metrics,
)
from streams.core.planner import DECISION_TOPICS, Planner, decision_kafka_key, decision_topic
from streams.core.profile import AppProfileState, profile_message, should_emit, state_key
from streams.core.settings import StreamsSettings

log = logging.getLogger("kubetide.streams")

PROFILE_TABLE = "profile-state"
CLUSTER_KEY = b"cluster"


def _topic(app: faust.App, name: str) -> Any:
    return app.topic(name, partitions=topics.spec(name).partitions, key_serializer="raw", value_serializer="raw",
                     internal=False)


def install(app: faust.App, settings: StreamsSettings, *, worker_id: str) -> dict[str, Any]:
    """Declare topics, the profile table and the agents on ``app``; return them by name."""
    t_metrics = _topic(app, topics.CLUSTER_METRICS)
    t_events = _topic(app, topics.CLUSTER_EVENTS)
    t_samples = _topic(app, topics.APP_SAMPLES)
    t_planner = _topic(app, topics.PLANNER_INPUT)
    t_profiles = _topic(app, topics.PROFILES)
    t_anomalies = _topic(app, topics.ANOMALIES)
    t_decisions = _topic(app, topics.DECISIONS_DESCHEDULE)
    decision_topics = {name: _topic(app, name) for name in DECISION_TOPICS.values()}
    decision_topics[topics.DECISIONS_DESCHEDULE] = t_decisions
    t_dead = _topic(app, topics.DEADLETTER)
    table = app.Table(PROFILE_TABLE, default=None, partitions=topics.spec(topics.APP_SAMPLES).partitions,
                      key_type=bytes, value_type=bytes)

    async def dead(exc: BaseException, event: Any) -> None:
        msg = event.message
        dl = dead_letter_for(exc, event.value, origin_topic=msg.topic, origin_partition=msg.partition,
                             origin_offset=msg.offset, origin_key=msg.key, worker=worker_id)
        metrics.DEADLETTERS.labels(msg.topic, dl.reason).inc()
        if isinstance(exc, DecodeError):
            log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
        else:
            log.exception("processing %s[%s]@%s failed; dead-lettered", msg.topic, msg.partition, msg.offset,
                          exc_info=exc)
        await t_dead.send(key=msg.topic.encode(), value=encode(dl))

    @app.agent(t_metrics, name="split-metrics")
    async def split(stream: Any) -> None:
        async for event in stream.events():
            metrics.MESSAGES.labels(topics.CLUSTER_METRICS).inc()
            try:
                samples, summary = split_metrics(decode(topics.CLUSTER_METRICS, event.value))
                for s in samples:
                    await t_samples.send(key=s.app.encode(), value=encode(s))
                await t_planner.send(key=CLUSTER_KEY, value=encode(summary))
            except Exception as exc:
                await dead(exc, event)

    @app.agent(t_events, name="forward-events")
    async def forward(stream: Any) -> None:
        async for event in stream.events():
            metrics.MESSAGES.labels(topics.CLUSTER_EVENTS).inc()
            try:
                ev = decode(topics.CLUSTER_EVENTS, event.value)
                await t_planner.send(key=CLUSTER_KEY, value=encode(forward_event(ev)))
                req = app_requests(ev)
                if req is not None:
                    await t_samples.send(key=req.app.encode(), value=encode(req))
            except Exception as exc:
                await dead(exc, event)

    # Profile states this worker owns, by partition (dropped when a partition is not kept).
    cache: dict[int, dict[bytes, AppProfileState]] = {}
    advisor = Advisor()

    @app.agent(t_samples, name="profiler")
    async def profiler(stream: Any) -> None:
        async for event in stream.events():
            metrics.MESSAGES.labels(topics.APP_SAMPLES).inc()
            try:
                msg = decode(topics.APP_SAMPLES, event.value)
                assert isinstance(msg, AppSamples)
                key = state_key(msg.namespace, msg.app).encode()
                part = cache.setdefault(event.message.partition, {})
                st = part.get(key)
                if st is None:
                    raw = table.get(key)
                    st = AppProfileState.from_bytes(raw, settings.profiler) if raw else AppProfileState(
                        settings.profiler)
                    part[key] = st
                    metrics.PROFILED_APPS.set(sum(len(p) for p in cache.values()))
                st.update(msg)
                if msg.cpu_cores and should_emit(st, msg.ts):
                    advisor.add_hourly(msg.app, st.hourly())
                    iw, co = advisor.advice(msg.app, msg.ts)
                    prof = profile_message(st, msg.ts, interferes_with=iw, complements=co)
                    st.last_emit_ts = msg.ts
                    table[key] = st.to_bytes()
                    await t_profiles.send(key=msg.app.encode(), value=encode(prof))
                    metrics.PROFILES.inc()
            except Exception as exc:
                await dead(exc, event)

    isettings: InterferenceSettings = getattr(settings, "interference", None) or InterferenceSettings()
    nodes: dict[str, NodeState] = {}
    node_part: dict[str, int] = {}

    @app.agent(t_metrics, name="interference")
    async def interference(stream: Any) -> None:
        async for event in stream.events():
            try:
                msg = decode(topics.CLUSTER_METRICS, event.value)
            except DecodeError:
                continue  # split-metrics dead-letters the same bytes
            try:
                st = nodes.get(msg.node)
                if st is None:
                    st = nodes[msg.node] = NodeState(isettings)
                    node_part[msg.node] = event.message.partition
                for a in interference_update(st, msg):
                    advisor.add_anomaly(a)
                    catalogue.observe_anomaly(a)
                    await t_anomalies.send(key=a.node.encode(), value=encode(a))
                    await t_planner.send(key=CLUSTER_KEY, value=encode(forward_anomaly(a)))
                    log.info("anomaly %s %s: %s/%s %s on %s", a.id, a.state, a.victim.namespace, a.victim.name,
                             a.metric, a.node)
            except Exception as exc:
                await dead(exc, event)

    holder: dict[str, Any] = {"planner": _new_planner(settings), "owned": set()}

    @app.agent(t_planner, name="planner")
    async def planner(stream: Any) -> None:
        async for event in stream.events():
            metrics.MESSAGES.labels(topics.PLANNER_INPUT).inc()
            try:
                msg = decode(topics.PLANNER_INPUT, event.value)
                assert isinstance(msg, PlannerInput)
                pl: Planner = holder["planner"]
                if msg.kind == "anomaly":
                    assert msg.anomaly is not None
                    pl.apply_anomaly(msg.anomaly)
                    continue
                before = pl.ticks_planned
                for d in pl.handle(msg):
                    await decision_topics[decision_topic(d)].send(key=decision_kafka_key(d), value=encode(d))
                    metrics.DECISIONS.labels(d.strategy).inc()
                    log.info("decision %s: %s", d.id, d.reason)
                metrics.TICKS.inc(pl.ticks_planned - before)
                metrics.LATE_SUMMARIES.set(pl.ticks.late)
            except Exception as exc:
                await dead(exc, event)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        previous: set[Any] = holder["owned"]
        kept = previous & set(assigned)
        for p in list(cache):
            if not any(tp.topic == topics.APP_SAMPLES and tp.partition == p for tp in kept):
                del cache[p]
        metrics.PROFILED_APPS.set(sum(len(p) for p in cache.values()))
        metrics_parts = {tp.partition for tp in assigned if tp.topic == topics.CLUSTER_METRICS}
        for n in [n for n, p in node_part.items() if p not in metrics_parts]:
            nodes.pop(n, None)
            node_part.pop(n, None)
        planner_tps = {tp for tp in assigned if tp.topic == topics.PLANNER_INPUT}
        if planner_tps and not (planner_tps & previous):
            holder["planner"] = _new_planner(settings)
            log.info("planner partition assigned: starting with an empty cluster state "
                     "(rebuilt from SYNC events and new ticks)")
        holder["owned"] = set(assigned)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type="text/plain")

    return {"split": split, "forward": forward, "profiler": profiler, "planner": planner, "table": table,
            "holder": holder, "interference": interference, "nodes": nodes, "advisor": advisor}


def _new_planner(settings: StreamsSettings) -> Planner:
    return Planner.from_settings(settings)
