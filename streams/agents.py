"""The faust agents: thin shells that decode, call ``streams.core`` and send the results.

Every consumed message goes through :func:`kubetide.codec.decode`; any error while handling it
becomes a ``deadletter`` message (key = origin topic) and the agent goes on with the next one.

- ``split-metrics`` on ``cluster.metrics`` takes the messages in batches (``stream.take_events``:
  up to ``SPLIT_BATCH`` messages or ``SPLIT_WITHIN_S`` seconds; acked after the batch) and decodes
  each **once** (validated; bad input dead-lettered) for three uses: its node summary →
  planner-input (key ``cluster``, one message per node scrape, as before); the interference
  update of its node (below); its per-app slices, which are gathered over the whole batch and
  sent as **one** :class:`~streams.core.messages.AppSamplesBatch` per app-samples partition, with
  an explicit partition = the producer partitioner's partition of the app key (so every slice of
  an app still lands where a message keyed by the app would: co-partitioned with the profile
  table and with ``forward-events``' requests).
- ``forward_events`` on ``cluster.events``: → planner-input; a Pod's requests → app-samples.
- ``profiler`` on app-samples (batches read with :func:`~kubetide.codec.decode_trusted`, no
  second validation; each slice in order, exactly as one message per slice would be): per-app
  :class:`~streams.core.profile.AppProfileState`, cached in
  memory. The table keeps, per app, the full state (written when a profile is emitted: at most
  once per app per ``emit_interval_s`` of event time) and a small *tail*: the slices applied
  since that full state, written for every app touched since the last offset commit right before
  the next commit (``_CommitCheckpoint``, a faust sensor's ``on_commit_initiated``; the commit
  flushes the producer first). A committed app-samples offset therefore never covers samples
  missing from the changelog: after a kill -9 or a partition move an app's state is its full
  state with the tail replayed, and the records after the commit are read again. Nothing is
  lost; samples read twice (at-least-once: what the killed worker processed after its last
  commit, and the scrapes ``split-metrics`` re-processed) are counted twice — the sketches
  cannot tell a duplicate from a new sample.
  Table values are zstd-compressed :meth:`~streams.core.profile.AppProfileState.to_bytes`
  (:func:`pack_state`; the changelog is most of what the worker writes).
  The table and cache key is ``namespace/app`` (:func:`~streams.core.profile.state_key`): two
  namespaces with the same app name are profiled separately, though their ``profiles`` messages
  share the topic key ``app`` (the contract). ``interferes_with`` / ``complements`` come from this
  worker's :class:`~streams.core.interference.Advisor` (anomalies this worker detected, hourly CPU
  of the apps it profiles, refreshed at most once per ``history_slot_s`` of event time per app):
  with several workers each sees only its own partitions' share.
- interference, inside ``split-metrics`` (``cluster.metrics`` is keyed by node): per-node
  :class:`~streams.core.interference.NodeState` **in memory** (bounded ring buffers), each scrape
  through :func:`~streams.core.interference.update`, the anomalies → ``anomalies`` (key node) and,
  as ``PlannerInput`` kind ``anomaly``, → planner-input (key ``cluster``). A
  partition move moves a node with it; the new owner re-learns the node's normals within
  ``warmup`` scrapes. Its processing errors are dead-lettered on their own.
- ``planner`` on planner-input (one partition → one active planner; node summaries read without a
  second validation, see :func:`~streams.core.messages.planner_input_trusted`): in-memory
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
import orjson
import zstandard
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import generate_latest

from kubetide import metrics as catalogue
from kubetide import topics
from kubetide.codec import DecodeError, dead_letter_for, decode, decode_obj, decode_trusted, encode
from kubetide.models import Resources
from streams import metrics
from streams.core.interference import Advisor, InterferenceSettings, NodeState
from streams.core.interference import update as interference_update
from streams.core.messages import (
    AppSamples,
    AppSamplesBatch,
    app_requests,
    batch_samples,
    forward_anomaly,
    forward_app_metric,
    forward_event,
    node_input_dict,
    planner_input_trusted,
    slice_dicts,
    slices_by_partition,
)
from streams.core.planner import DECISION_TOPICS, Planner, decision_kafka_key, decision_topic
from streams.core.profile import AppProfileState, profile_message, should_emit, state_key
from streams.core.settings import StreamsSettings

log = logging.getLogger("kubetide.streams")

PROFILE_TABLE = "profile-state"
CLUSTER_KEY = b"cluster"
# split-metrics takes up to this many messages at a time, waiting at most this long for them
SPLIT_BATCH = 200
SPLIT_WITHIN_S = 0.02


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

    n_samples_parts = topics.spec(topics.APP_SAMPLES).partitions
    partitioner = app.conf.producer_partitioner or DefaultPartitioner()
    all_parts = list(range(n_samples_parts))
    part_of: dict[str, int] = {}

    def partition_of(app_name: str) -> int:
        """The app-samples partition a message keyed by ``app_name`` goes to (the producer's partitioner)."""
        p = part_of.get(app_name)
        if p is None:
            if len(part_of) > 200_000:
                part_of.clear()
            p = part_of[app_name] = partitioner(app_name.encode(), all_parts, all_parts)
        return p

    isettings: InterferenceSettings = getattr(settings, "interference", None) or InterferenceSettings()
    nodes: dict[str, NodeState] = {}
    node_part: dict[str, int] = {}

    async def interfere(msg: Any, event: Any) -> None:
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

    @app.agent(t_metrics, name="split-metrics")
    async def split(stream: Any) -> None:
        async for events in stream.take_events(SPLIT_BATCH, within=SPLIT_WITHIN_S):
            slices: list[dict[str, Any]] = []
            done: list[Any] = []
            for event in events:
                try:
                    msg = decode(topics.CLUSTER_METRICS, event.value)
                    mine = slice_dicts(msg)
                except Exception as exc:
                    await dead(exc, event)
                    continue
                # Interference first: the anomalies a scrape opens reach the planner before the scrape's own
                # node summary, as in `kubetide evaluate --offline` (same decisions, same ticks).
                await interfere(msg, event)
                try:
                    await t_planner.send(key=CLUSTER_KEY, value=orjson.dumps(node_input_dict(msg)))
                except Exception as exc:
                    await dead(exc, event)
                    continue
                slices.extend(mine)
                done.append(event)
            metrics.MESSAGES.labels(topics.CLUSTER_METRICS).inc(len(events))
            try:
                for p, value in slices_by_partition(slices, partition_of):
                    await t_samples.send(value=value, partition=p)
            except Exception as exc:
                for event in done:
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

    if getattr(settings, "autoscale", None) is not None:
        # app.metrics → planner-input (kind app_metric) for the autoscaler's custom-metric triggers
        t_app_metrics = _topic(app, topics.APP_METRICS)

        @app.agent(t_app_metrics, name="forward-app-metrics")
        async def forward_app_metrics(stream: Any) -> None:
            async for event in stream.events():
                metrics.MESSAGES.labels(topics.APP_METRICS).inc()
                try:
                    am = decode(topics.APP_METRICS, event.value)
                    await t_planner.send(key=CLUSTER_KEY, value=encode(forward_app_metric(am)))
                except Exception as exc:
                    await dead(exc, event)

    # Profile states this worker owns, by partition (dropped when a partition is not kept).
    cache: dict[int, dict[bytes, AppProfileState]] = {}
    advisor = Advisor()

    hourly_every = settings.profiler.history_slot_s
    hourly_at: dict[int, dict[bytes, float]] = {}  # by partition: state key -> event time of its last hourly

    # Durability of profile state under at-least-once. The table holds, per app, the full state (written
    # when a profile is emitted: at most once per emit interval of event time) and, under ``key + TAIL``, the
    # slices applied since then ({"base": the full state's last_emit_ts, "slices": [...]}, small). Every tail
    # touched since the last offset commit is written right before the next commit (``_CommitCheckpoint``),
    # so a committed app-samples offset never covers samples missing from the changelog; a recovered state
    # is the full state with its tail replayed (a tail whose base is not that full state's is ignored).
    tails: dict[int, dict[bytes, list[dict[str, Any]]]] = {}  # by partition: slices since the full state
    dirty: dict[int, dict[bytes, AppProfileState]] = {}  # by partition: states whose tail changed
    checkpoints = {"tails": 0, "full": 0}  # changelog writes (for tests and benchmarks)

    def checkpoint() -> int:
        n = 0
        for p, states in dirty.items():
            pt = tails.get(p, {})
            for key, st in states.items():
                _table_put(table, p, key + TAIL, orjson.dumps({"base": st.last_emit_ts, "slices": pt.get(key, [])},
                                                              option=orjson.OPT_SERIALIZE_NUMPY))
                n += 1
        dirty.clear()
        checkpoints["tails"] += n
        return n

    app.sensors.add(_CommitCheckpoint(checkpoint))

    def load_state(key: bytes) -> AppProfileState:
        raw = table.get(key)
        st = AppProfileState.from_bytes(unpack_state(raw), settings.profiler) if raw else AppProfileState(
            settings.profiler)
        tail = table.get(key + TAIL)
        t = orjson.loads(tail) if tail else {"base": None, "slices": []}
        replay = t.get("base") == st.last_emit_ts
        if replay:
            for d in t["slices"]:
                st.update(_slice_from_tail(d))
        log.debug("profile state %s loaded: full state of %s, tail of %d slices (base %s) %s; %d samples",
                  key.decode(errors="replace"), st.last_emit_ts, len(t["slices"]), t.get("base"),
                  "replayed" if replay else "ignored", st.n_total())
        return st

    async def profile_one(p: int, msg: AppSamples) -> None:
        key = state_key(msg.namespace, msg.app).encode()
        part = cache.setdefault(p, {})
        st = part.get(key)
        if st is None:
            st = part[key] = load_state(key)
            metrics.PROFILED_APPS.set(sum(len(x) for x in cache.values()))
        st.update(msg)
        tail = tails.setdefault(p, {}).setdefault(key, [])
        tail.append(_tail_slice(msg))
        dirty.setdefault(p, {})[key] = st
        if msg.cpu_cores and should_emit(st, msg.ts):
            seen = hourly_at.setdefault(p, {})
            last = seen.get(key)
            if last is None or not 0 <= msg.ts - last < hourly_every:
                advisor.add_hourly(msg.app, st.hourly())
                seen[key] = msg.ts
            iw, co = advisor.advice(msg.app, msg.ts)
            prof = profile_message(st, msg.ts, interferes_with=iw, complements=co)
            st.last_emit_ts = msg.ts
            _table_put(table, p, key, pack_state(st.to_bytes()))  # a new full state: the tail starts again
            tail.clear()
            checkpoints["full"] += 1
            await t_profiles.send(key=msg.app.encode(), value=encode(prof))
            metrics.PROFILES.inc()

    @app.agent(t_samples, name="profiler")
    async def profiler(stream: Any) -> None:
        async for event in stream.events():
            metrics.MESSAGES.labels(topics.APP_SAMPLES).inc()
            try:
                version, obj = decode_trusted(topics.APP_SAMPLES, event.value)
                if version == AppSamplesBatch.SCHEMA_VERSION:
                    batch = batch_samples(obj)
                else:  # v1: one app's requests from a Pod event (few): validated
                    one = decode_obj(topics.APP_SAMPLES, obj)
                    assert isinstance(one, AppSamples)
                    batch = [one]
                p = event.message.partition
                for msg in batch:
                    await profile_one(p, msg)
                metrics.SLICES.inc(sum(1 for msg in batch if msg.cpu_cores))
            except Exception as exc:
                await dead(exc, event)

    holder: dict[str, Any] = {"planner": _new_planner(settings), "owned": set(), "forecasts": set()}

    @app.agent(t_planner, name="planner")
    async def planner(stream: Any) -> None:
        async for event in stream.events():
            metrics.MESSAGES.labels(topics.PLANNER_INPUT).inc()
            try:
                msg = planner_input_trusted(decode_trusted(topics.PLANNER_INPUT, event.value)[1])
                pl: Planner = holder["planner"]
                if msg.kind == "anomaly":
                    assert msg.anomaly is not None
                    pl.apply_anomaly(msg.anomaly)
                    continue
                if msg.kind == "app_metric":  # for the tick planners that read app metrics (autoscaler)
                    for tp in pl.tick_planners:
                        if hasattr(tp, "apply_metric"):
                            tp.apply_metric(msg.app_metric)
                    continue
                before = pl.ticks_planned
                for d in pl.handle(msg):
                    await decision_topics[decision_topic(d)].send(key=decision_kafka_key(d), value=encode(d))
                    metrics.observe_decision(d)
                    log.info("decision %s: %s", d.id, d.reason)
                if pl.ticks_planned > before:
                    holder["forecasts"] = _publish_forecasts(pl, holder["forecasts"])
                metrics.TICKS.inc(pl.ticks_planned - before)
                metrics.LATE_SUMMARIES.set(pl.ticks.late)
            except Exception as exc:
                await dead(exc, event)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        catalogue.observe_rebalance(app.conf.id)
        previous: set[Any] = holder["owned"]
        kept = previous & set(assigned)
        for p in list(cache):
            if not any(tp.topic == topics.APP_SAMPLES and tp.partition == p for tp in kept):
                del cache[p]
                hourly_at.pop(p, None)
                dirty.pop(p, None)
                tails.pop(p, None)
        metrics.PROFILED_APPS.set(sum(len(p) for p in cache.values()))
        metrics_parts = {tp.partition for tp in assigned if tp.topic == topics.CLUSTER_METRICS}
        for n in [n for n, p in node_part.items() if p not in metrics_parts]:
            nodes.pop(n, None)
            node_part.pop(n, None)
        planner_tps = {tp for tp in assigned if tp.topic == topics.PLANNER_INPUT}
        if not planner_tps:  # the planner moved to another worker: its forecasts are not ours to export now
            holder["forecasts"] = _publish_forecasts(None, holder["forecasts"])
        if planner_tps and not (planner_tps & previous):
            holder["planner"] = _new_planner(settings)
            log.info("planner partition assigned: starting with an empty cluster state "
                     "(rebuilt from SYNC events and new ticks)")
        holder["owned"] = set(assigned)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type="text/plain")

    return {"split": split, "forward": forward, "profiler": profiler, "planner": planner, "table": table,
            "holder": holder, "interference": split, "nodes": nodes, "advisor": advisor,
            "checkpoint": checkpoint, "checkpoints": checkpoints}


class _CommitCheckpoint(faust.Sensor):
    """Calls ``checkpoint()`` when faust is about to commit offsets: faust's ``force_commit`` calls
    ``on_commit_initiated`` and then, without yielding to the event loop, takes the acked offsets to
    commit; the commit itself flushes the producer (so these changelog records) first. Every sample
    of an acked app-samples record is therefore in the changelog before its offset is committed."""

    def __init__(self, checkpoint: Any) -> None:
        super().__init__()
        self._checkpoint = checkpoint

    def on_commit_initiated(self, consumer: Any) -> Any:
        try:
            return self._checkpoint()
        except Exception:  # never break faust's commit: the next commit retries the same dirty states
            log.exception("profile checkpoint failed")
            return None


TAIL = b"\x00tail"  # table key suffix of an app's slices since its full state (app names hold no NUL)


def _tail_slice(msg: AppSamples) -> dict[str, Any]:
    d: dict[str, Any] = {"ts": msg.ts, "namespace": msg.namespace, "app": msg.app}
    if msg.cpu_cores:
        d.update(pod=list(msg.pod), cpu=list(msg.cpu_cores), mem=list(msg.mem_bytes))
    r = msg.requests
    if r is not None:
        d["req"] = [r["cpu_cores"], r["mem_bytes"]] if isinstance(r, dict) else [r.cpu_cores, r.mem_bytes]
    return d


def _slice_from_tail(d: dict[str, Any]) -> AppSamples:
    req = d.get("req")
    return AppSamples.model_construct(ts=d["ts"], namespace=d["namespace"], app=d["app"], pod=d.get("pod", []),
                                      cpu_cores=d.get("cpu", []), mem_bytes=d.get("mem", []),
                                      requests=None if req is None else Resources(cpu_cores=req[0], mem_bytes=req[1]))


def _table_put(table: Any, partition: int, key: bytes, value: bytes) -> None:
    """``table[key] = value`` outside stream iteration: the changelog record goes to ``partition``
    (the app-samples partition the state belongs to; faust would take it from the current event)."""
    table.send_changelog(partition, key, value)
    table.data[key] = value


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_zc = zstandard.ZstdCompressor(level=1)
_zd = zstandard.ZstdDecompressor()


def pack_state(raw: bytes) -> bytes:
    """A profile state for the table: zstd-compressed (~9x smaller changelog records; the
    history ring and hex sketches of ``to_bytes`` compress well)."""
    return _zc.compress(raw)


def unpack_state(raw: bytes) -> bytes:
    """Inverse of :func:`pack_state`; also accepts an uncompressed state (older changelog records)."""
    return _zd.decompress(raw) if raw[:4] == _ZSTD_MAGIC else raw


def _publish_forecasts(pl: Planner | None, published: set[str]) -> set[str]:
    """The autoscaler's latest per-workload forecast, predicted replicas and forecast error as gauges;
    the series of workloads in ``published`` it no longer plans (or all, without a planner) are removed,
    so a worker that lost the planner to another does not keep exporting stale forecasts. Returns the
    keys published now."""
    now: set[str] = set()
    for tp in pl.tick_planners if pl is not None else ():
        for key, ev in (getattr(tp, "evidence", None) or {}).items():
            ns, _, name = key.partition("/")
            catalogue.set_workload(ns, name, forecast_cpu_cores=ev.get("forecast_peak_cores"),
                                   replicas_predicted=ev.get("replicas.predictive"),
                                   forecast_error_ratio=ev.get("forecast_error"))
            now.add(key)
    for key in published - now:
        ns, _, name = key.partition("/")
        catalogue.forget_workload(ns, name, forecast_only=True)
    return now


def _new_planner(settings: StreamsSettings) -> Planner:
    return Planner.from_settings(settings)
