"""Hostile input against every consumer: each input is processed or dead-lettered with a reason,
and nothing else escapes (no uncaught exception, no crash).

Property tests (hypothesis) drive the decode + handle path of each consumer with random bytes,
wrong types, missing and unknown fields, NaN/Inf literals, negative and far-future timestamps,
deep nesting, payloads over 1 MiB and unknown schema versions, mutated from one realistic
message per topic:

- the codec, for every topic that has a model;
- the stream agents' handling (:class:`StreamsHarness` runs the same calls as
  ``streams/agents.py`` — decode, ``split_metrics``, ``forward_event``/``app_requests``, the
  profile state, ``interference.update``, ``Planner.handle`` — and feeds each output to its
  downstream consumer, as the internal topics do);
- the actuator's ``handle_record`` (real embedded broker, kubesim over HTTP);
- the collector's watch-line and metrics-scrape paths (real producer on the embedded broker).

One test runs the real processes: a ``kubetide streams`` worker and an actuator on the embedded
broker, fed hostile and valid messages on cluster.metrics, cluster.events and decisions.*; then
processed + dead-lettered == produced, counted per topic from the consumers' own outputs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubesim import render
from kubesim.model import Cluster
from kubesim.scenario import load_scenario
from kubesim.server import KubeSim
from kubetide import models as m
from kubetide import topics as T
from kubetide.codec import DEFAULT_MAX_BYTES, DecodeError, dead_letter_for, decode, encode
from streams.core.interference import Advisor, InterferenceSettings, NodeState
from streams.core.interference import update as interference_update
from streams.core.messages import (
    AppSamples,
    AppSamplesBatch,
    PlannerInput,
    app_requests,
    batch_samples,
    forward_anomaly,
    forward_event,
    split_metrics,
)
from streams.core.planner import Planner, decision_topic
from streams.core.profile import AppProfileState, profile_message, should_emit, state_key
from streams.core.settings import StreamsSettings
from tests.samples import T0, samples
from tests.test_actuator_support import TopicReader
from workers.actuator import Actuator, ActuatorSettings
from workers.collector import Collector, CollectorSettings
from workers.kube import ApiStatusError

# fixtures: kafka (private embedded broker), producer; api (a workers client for `sim`)
pytest_plugins = ("tests.test_actuator_support", "tests.kubesim_fixtures")

REASONS = {"decode", "schema", "version", "too-large", "processing"}
SAMPLES: dict[str, m.Message] = samples()
_ms, _summary = split_metrics(SAMPLES[T.CLUSTER_METRICS])  # type: ignore[arg-type]
SAMPLES[T.APP_SAMPLES] = _ms[0]
SAMPLES[T.PLANNER_INPUT] = _summary
CONSUMED = [T.CLUSTER_METRICS, T.CLUSTER_EVENTS, T.APP_SAMPLES, T.PLANNER_INPUT, T.DECISIONS_DESCHEDULE,
            T.DECISIONS_AUTOSCALE, T.ACTIONS]


# ------------------------------------------------------------------ hostile inputs

_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.integers(-(2**70), 2**70),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
# Values a field is replaced with: wrong types, odd numbers, timestamps from 1970-before to far future.
_ODD = st.sampled_from([None, True, "", "x" * 300, [], {}, [1, 2], {"a": 1}, -1, -1e-9, 0, 0.0, -5e9, 1e15, 4.1e9,
                        2**63, -(2**63), 1e308, "1.5", "NaN", "\u0000", "\ud7ff\ue000", {"schema": 1}]) | _JSON
_NAN = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])


def _dumps(obj: Any) -> bytes:
    """JSON text of ``obj`` (json, not orjson: integers beyond 64 bits are hostile input too)."""
    return json.dumps(obj).encode()


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:5]):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    obj = json.loads(json.dumps(obj))
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


@st.composite
def mutated(draw: st.DrawFn, topic: str) -> bytes:
    """The topic's valid sample with a few fields deleted, retyped, set to odd values, or NaN'd."""
    obj: Any = SAMPLES[topic].to_dict()
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(obj) if isinstance(obj, dict | list) else []
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "odd", "odd", "nan", "unknown"]))
        if op == "delete":
            obj = _set(obj, path, None, delete=True)
        elif op == "odd":
            obj = _set(obj, path, draw(_ODD))
        elif op == "unknown":
            obj = {**obj, draw(st.text(min_size=1, max_size=10)): draw(_JSON)} if isinstance(obj, dict) else obj
        else:  # a NaN/Infinity literal where a number was: only a JSON text can carry it
            marker = "__NAN_MARKER__"
            text = json.dumps(_set(obj, path, marker))
            return text.replace(f'"{marker}"', draw(_NAN)).encode()
    return _dumps(obj)


@st.composite
def deep(draw: st.DrawFn, topic: str) -> bytes:
    depth = draw(st.sampled_from([50, 200, 600, 3000]))
    obj = SAMPLES[topic].to_dict()
    field = draw(st.sampled_from(sorted(obj)))
    return orjson.dumps({**obj, field: 1})[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"


def _huge(topic: str, size: int) -> bytes:
    obj = SAMPLES[topic].to_dict()
    return orjson.dumps({**obj, "padding": "x" * size})


def hostile(topic: str) -> st.SearchStrategy[bytes]:
    version = st.integers(-3, 10**6).filter(lambda v: v != 1)
    return st.one_of(
        st.binary(max_size=400),
        _JSON.map(_dumps),
        mutated(topic), mutated(topic), mutated(topic),
        deep(topic),
        version.map(lambda v: orjson.dumps({**SAMPLES[topic].to_dict(), "schema": {"name": topic, "version": v}})),
        st.sampled_from([DEFAULT_MAX_BYTES + 10, 2 * DEFAULT_MAX_BYTES, 5000]).map(lambda n: _huge(topic, n)),
        st.just(encode(SAMPLES[topic])),
    )


def any_input(topics: list[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.sampled_from(topics).flatmap(lambda t: hostile(t).map(lambda raw: (t, raw)))


# ------------------------------------------------------------------ codec

@settings(max_examples=400, deadline=None)
@given(item=any_input(sorted(m.MODELS)))
def test_codec_decodes_or_refuses_every_topic(item: tuple[str, bytes]) -> None:
    topic, raw = item
    try:
        msg = decode(topic, raw)
    except DecodeError as exc:
        assert exc.reason in REASONS - {"processing"}, exc
        if len(raw) > DEFAULT_MAX_BYTES:
            assert exc.reason == "too-large"
        dl = dead_letter_for(exc, raw, origin_topic=topic, worker="fuzz")
        out = encode(dl)
        assert len(out) < 1_000_000 and decode(T.DEADLETTER, out) == dl
        assert dl.raw_size == len(raw) and base64.b64decode(dl.raw_b64) == raw[: len(base64.b64decode(dl.raw_b64))]
    else:  # what decodes is a valid, finite, re-encodable message of this topic
        assert msg.SCHEMA_NAME == topic
        assert decode(topic, encode(msg)) == msg
        for v in _numbers(msg.to_dict()):
            assert math.isfinite(v)


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


# ------------------------------------------------------------------ stream agents

class StreamsHarness:
    """The agents' handling in ``streams/agents.py`` without faust: the same decode and core calls, the
    same dead-letter rule (any exception while handling → a dead letter with a reason), and each
    output fed to the consumer of its topic (app-samples → profiler, planner-input → planner)."""

    def __init__(self) -> None:
        self.settings = StreamsSettings.from_config(None)
        self.planner = Planner.from_settings(self.settings)
        self.states: dict[bytes, AppProfileState] = {}
        self.table: dict[bytes, bytes] = {}
        self.nodes: dict[str, NodeState] = {}
        self.advisor = Advisor()
        self.isettings = getattr(self.settings, "interference", None) or InterferenceSettings()
        self.processed: Counter[str] = Counter()
        self.dead: list[m.DeadLetter] = []
        self.outputs: Counter[str] = Counter()

    def consume(self, topic: str, raw: bytes) -> None:
        agents = {T.CLUSTER_METRICS: [self._split, self._interference], T.CLUSTER_EVENTS: [self._forward],
                  T.APP_SAMPLES: [self._profiler], T.PLANNER_INPUT: [self._planner]}[topic]
        for agent in agents:
            before = len(self.dead)
            try:
                outputs = agent(raw)
            except Exception as exc:
                self.dead.append(dead_letter_for(exc, raw, origin_topic=topic, worker="fuzz"))
                continue
            if outputs is None:  # this agent skips what another one dead-letters
                continue
            assert len(self.dead) == before
            self.processed[topic] += 1
            for out_topic, value in outputs:
                self.outputs[out_topic] += 1
                assert decode(out_topic, value).SCHEMA_NAME == out_topic  # every output is readable downstream
                if out_topic in (T.APP_SAMPLES, T.PLANNER_INPUT):
                    self.consume(out_topic, value)

    def _split(self, raw: bytes) -> list[tuple[str, bytes]]:
        samples_, summary = split_metrics(decode(T.CLUSTER_METRICS, raw))  # type: ignore[arg-type]
        return [(T.APP_SAMPLES, encode(s)) for s in samples_] + [(T.PLANNER_INPUT, encode(summary))]

    def _forward(self, raw: bytes) -> list[tuple[str, bytes]]:
        ev = decode(T.CLUSTER_EVENTS, raw)
        out = [(T.PLANNER_INPUT, encode(forward_event(ev)))]  # type: ignore[arg-type]
        req = app_requests(ev)  # type: ignore[arg-type]
        if req is not None:
            out.append((T.APP_SAMPLES, encode(req)))
        return out

    def _profiler(self, raw: bytes) -> list[tuple[str, bytes]]:
        got = decode(T.APP_SAMPLES, raw)
        # v2: a batch of slices (any number, as the agent reads them); v1: one app's requests
        batch = batch_samples(orjson.loads(raw)) if isinstance(got, AppSamplesBatch) else [got]
        out: list[tuple[str, bytes]] = []
        for msg in batch:
            out += self._profile_one(msg)
        return out

    def _profile_one(self, msg: Any) -> list[tuple[str, bytes]]:
        assert isinstance(msg, AppSamples)
        key = state_key(msg.namespace, msg.app).encode()
        st_ = self.states.get(key)
        if st_ is None:
            stored = self.table.get(key)
            st_ = AppProfileState.from_bytes(stored, self.settings.profiler) if stored else AppProfileState(
                self.settings.profiler)
            self.states[key] = st_
        st_.update(msg)
        if msg.cpu_cores and should_emit(st_, msg.ts):
            self.advisor.add_hourly(msg.app, st_.hourly())
            iw, co = self.advisor.advice(msg.app, msg.ts)
            prof = profile_message(st_, msg.ts, interferes_with=iw, complements=co)
            st_.last_emit_ts = msg.ts
            self.table[key] = st_.to_bytes()
            return [(T.PROFILES, encode(prof))]
        return []

    def _interference(self, raw: bytes) -> list[tuple[str, bytes]] | None:
        try:
            msg = decode(T.CLUSTER_METRICS, raw)
        except DecodeError:
            return None
        st_ = self.nodes.get(msg.node)  # type: ignore[attr-defined]
        if st_ is None:
            st_ = self.nodes[msg.node] = NodeState(self.isettings)  # type: ignore[attr-defined]
        out = []
        for a in interference_update(st_, msg):  # type: ignore[arg-type]
            self.advisor.add_anomaly(a)
            out += [(T.ANOMALIES, encode(a)), (T.PLANNER_INPUT, encode(forward_anomaly(a)))]
        return out

    def _planner(self, raw: bytes) -> list[tuple[str, bytes]]:
        msg = decode(T.PLANNER_INPUT, raw)
        assert isinstance(msg, PlannerInput)
        if msg.kind == "anomaly":
            assert msg.anomaly is not None
            self.planner.apply_anomaly(msg.anomaly)
            return []
        return [(decision_topic(d), encode(d)) for d in self.planner.handle(msg)]


def _valid_metrics(i: int, node: str) -> bytes:
    """A plausible scrape of ``node`` at T0 + 10 i (hot, so the planner has something to do)."""
    base = SAMPLES[T.CLUSTER_METRICS].to_dict()
    return orjson.dumps({**base, "ts": T0 + 10 * i, "node": node})


STREAM_TOPICS = [T.CLUSTER_METRICS, T.CLUSTER_EVENTS, T.APP_SAMPLES, T.PLANNER_INPUT]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(items=st.lists(any_input(STREAM_TOPICS), min_size=1, max_size=25), seed=st.integers(0, 2**16))
def test_stream_agents_process_or_dead_letter_everything(items: list[tuple[str, bytes]], seed: int) -> None:
    """A sequence of hostile inputs, interleaved with valid scrapes so that state builds up: every input is
    processed or dead-lettered (reason in the codec's set, or ``processing``), and no handler raises."""
    h = StreamsHarness()
    rng = random.Random(seed)
    stream: list[tuple[str, bytes]] = []
    for i, item in enumerate(items):
        stream.append((T.CLUSTER_METRICS, _valid_metrics(i, rng.choice(["node-a-0", "node-b-0"]))))
        stream.append(item)
    for topic, raw in stream:
        before = sum(h.processed.values()) + len(h.dead)
        h.consume(topic, raw)
        assert sum(h.processed.values()) + len(h.dead) > before, f"{topic} input neither processed nor dead"
    for dl in h.dead:
        assert dl.reason in REASONS and dl.error
    # Processing errors on *valid* messages would be bugs in streams.core: name them.
    bugs = [dl.error for dl in h.dead if dl.reason == "processing"]
    assert not bugs, f"valid messages failed in processing: {bugs[:3]}"


def test_stream_agents_handle_each_hostile_kind_once() -> None:
    """Deterministic companions of the property test: one input of each hostile kind per topic."""
    h = StreamsHarness()
    kinds = {"bytes": b"\x00\xff{", "array": b"[1,2,3]", "nan": b'{"ts": NaN}', "version-99": None,
             "deep": None, "huge": None, "negative-ts": None, "future-ts": None}
    for topic in STREAM_TOPICS:
        good = SAMPLES[topic].to_dict()
        kinds["version-99"] = orjson.dumps({**good, "schema": {"name": topic, "version": 99}})
        kinds["deep"] = orjson.dumps(good)[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
        kinds["huge"] = _huge(topic, DEFAULT_MAX_BYTES)
        ts_field = "ts" if "ts" in good else next(iter(good))
        kinds["negative-ts"] = orjson.dumps({**good, ts_field: -1.0})
        kinds["future-ts"] = orjson.dumps({**good, ts_field: 1e12})
        for name, raw in kinds.items():
            assert raw is not None
            before = (sum(h.processed.values()), len(h.dead))
            h.consume(topic, raw)
            after = (sum(h.processed.values()), len(h.dead))
            assert after != before, f"{topic}/{name}: not accounted for"
    reasons = Counter(dl.reason for dl in h.dead)
    assert {"decode", "version", "too-large", "schema"} <= set(reasons), reasons
    assert reasons["processing"] == 0, [dl.error for dl in h.dead if dl.reason == "processing"]


# ------------------------------------------------------------------ actuator

class _Rec:
    """What handle_record reads of an aiokafka ConsumerRecord."""

    def __init__(self, topic: str, value: bytes | None, offset: int) -> None:
        self.topic, self.value, self.offset = topic, value, offset
        self.partition, self.key = 0, b"fuzz"


@st.composite
def decision_input(draw: st.DrawFn, pods: list[Any], now: float) -> tuple[str, bytes]:
    """Hostile bytes, or a valid decision with odd contents: a real or an invented pod, odd names,
    expiry in the past or far future, timestamps in 1970 or 2100."""
    topic = draw(st.sampled_from([T.DECISIONS_DESCHEDULE, T.DECISIONS_AUTOSCALE]))
    if draw(st.booleans()):
        return topic, draw(hostile(topic))
    name = st.text(min_size=1, max_size=40)
    t = st.sampled_from([0.0, 1.0, now - 3600, now, now + 60, 4.1e9, 1e15])
    if topic == T.DECISIONS_DESCHEDULE:
        pod = draw(st.sampled_from(pods))
        d = SAMPLES[topic].model_copy(update={
            "id": draw(st.text(alphabet="0123456789abcdef", min_size=8, max_size=16)),
            "made_at": draw(t), "expires_at": draw(t),
            "pod": m.PodRef(namespace=draw(st.sampled_from([pod.namespace, "kube-system"]) | name),
                            name=draw(st.just(pod.name) | name), uid=draw(st.just(pod.uid) | st.none() | name),
                            node=pod.node_name, app=pod.app),
            "from_node": draw(st.just(pod.node_name or "x") | name)})
    else:
        d = SAMPLES[topic].model_copy(update={
            "id": draw(st.text(alphabet="0123456789abcdef", min_size=8, max_size=16)),
            "made_at": draw(t), "expires_at": draw(t),
            "workload": m.WorkloadRef(namespace=draw(st.just("shop") | name),
                                      kind=draw(st.sampled_from(["Deployment", "StatefulSet"]) | name),
                                      name=draw(st.sampled_from(["web", "api", "cache"]) | name)),
            "desired_replicas": draw(st.integers(0, 3))})
    return topic, encode(d)


@pytest.fixture
async def sim():
    async with KubeSim("demo", speed=0, retry_after_s=1) as s:
        yield s


@pytest.mark.timeout(240)
async def test_actuator_handle_record_accounts_for_every_input(sim, api, kafka, producer) -> None:
    """Each record gets exactly one outcome on ``actions`` or one dead letter, synchronously, and
    handle_record never raises. Decisions are applied for real against kubesim (the fuzz may evict)."""
    act = Actuator(api, producer, kafka, ActuatorSettings(dry_run=False, error_max_attempts=2,
                                                          backoff_initial_s=0.01, backoff_max_s=0.05,
                                                          evictions_per_minute=6000, rate_burst=1000,
                                                          pdb_max_attempts=1, rate_limit_max_attempts=1),
                   embedded=True)
    pods = sorted(sim.cluster.pods.values(), key=lambda p: (p.namespace, p.name))
    offset = [0]

    @settings(max_examples=120, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(item=decision_input(pods, sim.cluster.t))
    def one(item: tuple[str, bytes]) -> None:
        topic, raw = item
        before = sum(act.stats.values())
        offset[0] += 1
        fut = asyncio.run_coroutine_threadsafe(act.handle_record(_Rec(topic, raw, offset[0])), loop)
        fut.result(60)  # raises here if handle_record raised
        after = sum(act.stats.values())
        assert after == before + 1, f"{after - before} outcomes for one record"

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(one)  # hypothesis runs in a thread; the actuator's coroutines on this loop
    kinds = Counter(k.split(":")[0] for k in act.stats)
    assert kinds["deadletter"] >= 1 and len(act.stats) >= 3, act.stats
    dead = {k: v for k, v in act.stats.items() if k.startswith("deadletter:")}
    assert set(k.split(":", 1)[1] for k in dead) <= REASONS, dead
    assert not act.stats.get("deadletter:processing"), "a valid decision failed in processing"
    print(f"\nactuator outcomes over {offset[0]} records: {dict(sorted(act.stats.items()))}")


# ------------------------------------------------------------------ collector

def _raw_objects() -> dict[str, list[dict]]:
    c = Cluster(load_scenario("demo"), seed=1)
    return {"Pod": [render.render("pods", p, c) for p in list(c.pods.values())[:5]],
            "Node": [render.render("nodes", n, c) for n in list(c.nodes.values())[:3]],
            "PodDisruptionBudget": [render.render("poddisruptionbudgets", b, c) for b in c.pdbs.values()][:3],
            "Deployment": [render.render("deployments", d, c) for d in list(c.deployments.values())[:3]],
            "Namespace": [render.render("namespaces", n, c) for n in c.namespaces.values()][:3]}


RAW = _raw_objects()


@st.composite
def watch_line(draw: st.DrawFn, kind: str) -> bytes:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(min_size=1, max_size=200).filter(lambda b: b.strip() and b"\n" not in b))
    if choice == 1:
        return _dumps(draw(_JSON))
    obj: Any = draw(st.sampled_from(RAW[kind]))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(obj) if isinstance(obj, dict) else []
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        obj = _set(obj, path, None, delete=True) if draw(st.booleans()) else _set(obj, path, draw(_ODD))
    etype = draw(st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "WHATEVER", None, 7]))
    return _dumps({"type": etype, "object": obj} if choice != 5 else [etype, obj])


@pytest.mark.timeout(180)
async def test_collector_watch_and_scrape_account_for_every_input(kafka, producer) -> None:
    """Hostile watch lines: emitted, or counted as unreadable (never raising but for ERROR events);
    hostile metrics items: a message, a skip, or counted as unreadable — one bad item never loses the
    other nodes' scrape."""
    col = Collector(None, producer, CollectorSettings(), name="fuzz")  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    spec_of = col.specs

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(kind=st.sampled_from(sorted(spec_of)), data=st.data())
    def lines(kind: str, data: st.DataObject) -> None:
        line = data.draw(watch_line(kind))
        emitted = sum(v for k, v in col.stats.items() if k.startswith("events_"))
        unreadable = col.stats["unreadable"]
        fut = asyncio.run_coroutine_threadsafe(col._on_watch_line(spec_of[kind], line, "1"), loop)
        rv = fut.result(30)
        assert isinstance(rv, str) and rv
        moved = (sum(v for k, v in col.stats.items() if k.startswith("events_")) - emitted,
                 col.stats["unreadable"] - unreadable)
        assert moved in ((1, 0), (0, 1), (0, 0)), moved
        if moved == (0, 0):  # only a bookmark may be neither emitted nor unreadable
            assert orjson.loads(line)["type"] == "BOOKMARK"

    await asyncio.to_thread(lines)
    print(f"\ncollector over hostile watch lines: {dict(sorted(col.stats.items()))}")
    assert col.stats["unreadable"] > 0 and sum(v for k, v in col.stats.items() if k.startswith("events_")) > 0
    # ERROR events stop the watch (to relist or back off), they are not swallowed
    for code, exc_type in ((410, "Gone"), (500, "ApiStatusError"), ("bad", "ApiStatusError")):
        line = orjson.dumps({"type": "ERROR", "object": {"code": code, "message": "x"}})
        with pytest.raises(Exception) as info:
            await col._on_watch_line(spec_of["Pod"], line, "1")
        assert type(info.value).__name__ == exc_type
        if isinstance(info.value, ApiStatusError):
            assert 100 <= info.value.status < 600

    # metrics: known nodes from the raw objects, one hostile item among good ones
    for raw in RAW["Node"] + RAW["Pod"]:
        kind = "Node" if raw["kind"] == "Node" else "Pod"
        ev = col._event("SYNC", spec_of[kind], raw)
        col.objects[kind][col._key(raw)] = ev
    c = Cluster(load_scenario("demo"), seed=1)
    c.step(10)
    good_nodes = [render.node_metrics(n, c) for n in list(c.nodes.values())[:3]]
    good_nodes = [n for n in good_nodes if ("", n["metadata"]["name"]) in col.objects["Node"]]
    good_pods = [render.pod_metrics(p, c) for p in c.pods.values() if p.node_name and p.phase == "Running"]
    first = good_nodes[0]["metadata"]["name"]
    hostile_items: list[Any] = [
        1, [], {"metadata": []}, {"metadata": {"name": 5}},
        {"metadata": {"name": first}, "usage": {"cpu": "1e400"}},  # infinite usage
        {**good_nodes[0], "timestamp": "2100-01-01T00:00:00Z"},  # far future
        {"containers": [{"usage": {"cpu": "-3"}}], "metadata": {"namespace": "shop", "name": "x"}}]
    bad_pod = dict(good_pods[0])
    bad_pod["containers"] = [{"usage": {"cpu": "-1", "memory": "1e400"}}]
    by_node, _ = col.join_pod_metrics([*good_pods, bad_pod, *hostile_items], col.objects["Pod"])
    assert col.stats["unreadable_PodMetrics"] >= 1
    assert by_node and all(r[3] >= 0 and math.isfinite(r[4]) for rows in by_node.values() for r in rows)
    # node items: each good one becomes a message, each hostile one is counted or skipped, none raises
    col.clock.observe_ts(c.t)
    before = col.stats["unreadable_NodeMetrics"]
    msgs, skipped = col.metrics_messages([*hostile_items, *good_nodes], by_node)
    assert sorted(n for n, _, _ in msgs) == sorted(n["metadata"]["name"] for n in good_nodes)
    assert skipped + col.stats["unreadable_NodeMetrics"] - before == len(hostile_items)
    assert all(decode(T.CLUSTER_METRICS, encode(msg)) == msg for _, _, msg in msgs)


# ------------------------------------------------------------------ real processes

def _count(reader: TopicReader, pred: Any) -> int:
    return len(reader.matching(pred))


@pytest.mark.timeout(200)
async def test_real_workers_account_for_every_message(kafka, tmp_path: Path) -> None:
    """A real ``kubetide streams`` worker and actuator get N hostile + valid messages on cluster.metrics,
    cluster.events and decisions.*: processed + dead-lettered == produced, per topic, and both live on."""
    from aiokafka import AIOKafkaProducer

    from kubetide.kafka import producer_config
    from kubetide.procs import ManagedProcess, ProcessGroup, add_streams_worker, kubetide_argv

    rng = random.Random(7)
    produced = {t: hostile_batch(t, rng, 40) for t in (T.CLUSTER_METRICS, T.CLUSTER_EVENTS,
                                                        T.DECISIONS_DESCHEDULE, T.DECISIONS_AUTOSCALE)}
    async with KubeSim("demo", speed=0) as sim:
        env = {"KUBETIDE_LOG_LEVEL": "WARNING"}
        with ProcessGroup() as group:
            streams, ready = add_streams_worker(group, kafka, tmp_path, env=env)
            group.add(ManagedProcess("actuator", kubetide_argv("actuator", "--bootstrap-servers", kafka,
                                                              "--kubeconfig", str(sim.kubeconfig_path)),
                                     tmp_path / "actuator.log", env=env))
            await asyncio.to_thread(streams.wait_for_file, ready, 90)
            p = AIOKafkaProducer(**producer_config(kafka, True, max_request_size=8 * 2**20))
            await p.start()
            try:
                for t, raws in produced.items():
                    for raw in raws:
                        await p.send_and_wait(t, raw, key=b"fuzz")
            finally:
                await p.stop()
            n_valid = {t: sum(1 for r in raws if _decodes(t, r)) for t, raws in produced.items()}
            async with TopicReader(kafka, T.DEADLETTER) as dead, TopicReader(kafka, T.ACTIONS) as actions, \
                    TopicReader(kafka, T.PLANNER_INPUT) as planner_in:
                def accounted() -> dict[str, tuple[int, int, int]]:
                    out = {}
                    for t, raws in produced.items():
                        dl = _count(dead, lambda v, t=t: isinstance(v, m.DeadLetter) and v.origin_topic == t)
                        if t == T.CLUSTER_METRICS:
                            done = _count(planner_in, lambda v: getattr(v, "kind", None) == "node" and
                                          v.node is not None and v.node.node != "")
                        elif t == T.CLUSTER_EVENTS:
                            done = _count(planner_in, lambda v: getattr(v, "kind", None) == "event")
                        else:
                            done = _count(actions, lambda v, t=t: isinstance(v, m.Action) and v.decision_topic == t
                                          and v.attempt == 1)
                        out[t] = (done, dl, len(raws))
                    return out

                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    acc = accounted()
                    if all(d + dl >= n for d, dl, n in acc.values()):
                        break
                    assert not group.dead(), group.dead()[0].tail(40)
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2)  # anything extra (double counting) would show now
                acc = accounted()
                reasons = Counter(v.reason for v in dead.matching(lambda v: isinstance(v, m.DeadLetter)))
            assert not group.dead(), group.dead()[0].tail(40)
        for t, (done, dl, n) in acc.items():
            assert done + dl == n, f"{t}: processed {done} + dead-lettered {dl} != produced {n} ({acc})"
            assert done == n_valid[t], f"{t}: {done} processed but {n_valid[t]} valid"
        assert set(reasons) <= REASONS and reasons, reasons
        print(f"\naccounted per topic (processed, dead-lettered, produced): {acc}; dead letters by reason "
              f"{dict(reasons)}")


def hostile_batch(topic: str, rng: random.Random, n: int) -> list[bytes]:
    """``n`` messages for ``topic``, one of each hostile kind in turn (about a third valid, with unique ids
    and timestamps so that every valid one is processed)."""
    good = SAMPLES[topic].to_dict()
    out: list[bytes] = []
    for i in range(n):
        k = i % 12
        valid = {**good, "ts": T0 + i} if "ts" in good else dict(good)
        if "id" in good:
            valid["id"] = f"{rng.getrandbits(48):012x}"
        if "node" in good and topic == T.CLUSTER_METRICS:
            valid["node"] = f"fuzz-node-{i % 3}"
        if k in (0, 4, 8, 11):
            raw = orjson.dumps(valid)
        elif k == 1:
            raw = rng.randbytes(rng.randint(1, 300))
        elif k == 2:
            raw = orjson.dumps([valid])
        elif k == 3:
            raw = json.dumps({**valid, "ts": "__N__"}).replace('"__N__"', rng.choice(["NaN", "Infinity"])).encode()
        elif k == 5:
            raw = orjson.dumps({**valid, "schema": {"name": topic, "version": rng.choice([0, 2, 99, -1])}})
        elif k == 6:
            raw = orjson.dumps(valid)[:-1] + b',"deep":' + b"[" * 3000 + b"]" * 3000 + b"}"
        elif k == 7:
            raw = _huge(topic, DEFAULT_MAX_BYTES + rng.randint(1, 1000))
        elif k == 9:
            raw = orjson.dumps({kk: v for kk, v in valid.items() if kk != rng.choice(sorted(set(valid) - {"schema"}))})
        else:
            raw = orjson.dumps({**valid, "ts": -5.0} if "ts" in valid else {**valid, "made_at": -5.0})
        out.append(raw)
    return out


def _decodes(topic: str, raw: bytes) -> bool:
    try:
        decode(topic, raw)
    except DecodeError:
        return False
    return True
