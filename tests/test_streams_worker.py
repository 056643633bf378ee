"""The stream worker end to end on a real broker: `python -m streams` as a subprocess, no mocks.

One worker (its own consumer group) and one scenario per module: a hot node and a cool node,
five ticks of metrics, plus a malformed and a wrong-version message on ``cluster.metrics``
*before* the good ones in the same partition. Names carry a random suffix, and timestamps lie
far in the future, because the broker (and so the topics) is shared with other tests.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from kubetide import models as m
from kubetide import topics
from kubetide.codec import decode, encode
from kubetide.kafka import gapless_getmany
from kubetide.procs import ManagedProcess
from tests.broker_fixtures import BrokerHandle, broker  # noqa: F401
from tests.test_core_state import GiB, node_ev, pod_ev

TICKS = 5
STEP = 10.0


@dataclass
class Scenario:
    uid: str
    hot: str
    cool: str
    app: str
    worker_id: str
    base_ts: float
    ready_s: float = 0.0
    web_port: int = 0
    decisions: list[m.DescheduleDecision] = field(default_factory=list)
    profiles: list[m.Profile] = field(default_factory=list)
    deadletters: list[m.DeadLetter] = field(default_factory=list)
    proc: ManagedProcess | None = None


def _events(sc: Scenario) -> list[m.ClusterEvent]:
    ts = sc.base_ts - 1
    return [
        node_ev(sc.hot, ts=ts), node_ev(sc.cool, ts=ts),
        pod_ev("shop", f"{sc.app}-a", sc.hot, app=sc.app, cpu=1.0, ts=ts),
        pod_ev("shop", f"{sc.app}-b", sc.hot, app=sc.app, cpu=1.0, ts=ts),
        pod_ev("kube-system", f"dns-{sc.uid}", sc.hot, app=f"dns-{sc.uid}", cpu=0.1, ts=ts),
        pod_ev("shop", f"other-{sc.uid}", sc.cool, app=f"other-{sc.uid}", cpu=1.0, ts=ts),
    ]


def _metrics(sc: Scenario, ts: float) -> list[m.ClusterMetrics]:
    alloc = m.Resources(cpu_cores=8.0, mem_bytes=32 * GiB)
    hot = m.ClusterMetrics(
        ts=ts, node=sc.hot, zone="z1", window_s=STEP, node_usage=m.Resources(cpu_cores=7.2, mem_bytes=8 * GiB),
        node_allocatable=alloc,
        pods=m.PodSamples(namespace=["shop", "shop", "kube-system"],
                          name=[f"{sc.app}-a", f"{sc.app}-b", f"dns-{sc.uid}"],
                          app=[sc.app, sc.app, f"dns-{sc.uid}"], cpu_cores=[2.0, 1.2, 3.0],
                          mem_bytes=[GiB, GiB, 0.1 * GiB]))
    cool = m.ClusterMetrics(
        ts=ts, node=sc.cool, zone="z2", window_s=STEP, node_usage=m.Resources(cpu_cores=1.0, mem_bytes=4 * GiB),
        node_allocatable=alloc,
        pods=m.PodSamples(namespace=["shop"], name=[f"other-{sc.uid}"], app=[f"other-{sc.uid}"], cpu_cores=[1.0],
                          mem_bytes=[GiB]))
    return [hot, cool]


async def _produce(bootstrap: str, sc: Scenario) -> None:
    from aiokafka import AIOKafkaProducer

    from kubetide.kafka import producer_config

    prod = AIOKafkaProducer(**producer_config(bootstrap, True))
    await prod.start()
    try:
        for ev in _events(sc):
            await prod.send_and_wait(topics.CLUSTER_EVENTS, encode(ev), key=ev.key.encode())
        await asyncio.sleep(1.0)  # let the events reach the planner before the first tick
        good = _metrics(sc, sc.base_ts)[0].to_dict()
        wrong_version = {**good, "schema": {"name": "cluster.metrics", "version": 99}}
        await prod.send_and_wait(topics.CLUSTER_METRICS, b"{not json " + sc.uid.encode(), key=sc.hot.encode())
        await prod.send_and_wait(topics.CLUSTER_METRICS, orjson.dumps(wrong_version), key=sc.hot.encode())
        for i in range(TICKS):
            for msg in _metrics(sc, sc.base_ts + STEP * i):
                await prod.send_and_wait(topics.CLUSTER_METRICS, encode(msg), key=msg.node.encode())
    finally:
        await prod.stop()


def _mine(sc: Scenario, topic: str, value: bytes) -> Any:
    try:
        msg = decode(topic, value)
    except Exception:
        return None
    if isinstance(msg, m.DescheduleDecision) and msg.from_node == sc.hot:
        return msg
    if isinstance(msg, m.Profile) and msg.app == sc.app:
        return msg
    if isinstance(msg, m.DeadLetter) and msg.worker == sc.worker_id and sc.uid.encode() in base64.b64decode(
            msg.raw_b64):
        return msg
    return None


async def _collect(bootstrap: str, sc: Scenario, timeout: float) -> None:  # noqa: ASYNC109
    from aiokafka import AIOKafkaConsumer

    from kubetide.kafka import consumer_config

    cons = AIOKafkaConsumer(topics.DECISIONS_DESCHEDULE, topics.PROFILES, topics.DEADLETTER,
                            **consumer_config(bootstrap, True, group_id=None))
    await cons.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await gapless_getmany(cons, timeout_ms=300)
            for tp, recs in batch.items():
                for r in recs:
                    got = _mine(sc, tp.topic, r.value)
                    if isinstance(got, m.DescheduleDecision):
                        sc.decisions.append(got)
                    elif isinstance(got, m.Profile):
                        sc.profiles.append(got)
                    elif isinstance(got, m.DeadLetter):
                        sc.deadletters.append(got)
            if sc.decisions and sc.profiles and len(sc.deadletters) >= 2:
                # everything expected has arrived; keep reading 2 s more to catch any extra output
                deadline = min(deadline, time.monotonic() + 2.0)
    finally:
        await cons.stop()


@pytest.fixture(scope="module")
def scenario(broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:  # noqa: F811
    from kubetide.kafka import ensure_topics

    asyncio.run(ensure_topics(broker.bootstrap, topics.TOPICS))
    uid = uuid.uuid4().hex[:8]
    base = float(int(time.time()) // 60 * 60 + 400 * 86400)  # later than any other test's ticks
    sc = Scenario(uid=uid, hot=f"hot-{uid}", cool=f"cool-{uid}", app=f"web-{uid}", worker_id=f"test-{uid}",
                  base_ts=base)
    d = tmp_path_factory.mktemp("streams")
    ready = d / "ready.json"
    argv = [sys.executable, "-m", "streams", "--bootstrap-servers", broker.bootstrap,
            "--app-id", f"kubetide-streams-test-{uid}", "--worker-id", sc.worker_id, "--data-dir", str(d / "data"),
            "--ready-file", str(ready), "--web-port", "0",
            "--embedded" if broker.embedded else "--no-embedded"]
    proc = ManagedProcess("streams", argv, d / "worker.log", cwd=str(Path(__file__).resolve().parents[1]))
    sc.proc = proc.start()
    t0 = time.monotonic()
    try:
        while not ready.exists():
            assert proc.alive(), f"worker died:\n{proc.tail(40)}"
            assert time.monotonic() - t0 < 40, f"worker not ready after 40 s:\n{proc.tail(40)}"
            time.sleep(0.1)
        info = orjson.loads(ready.read_bytes())
        sc.ready_s, sc.web_port = info["ready_s"], info["web_port"]
        asyncio.run(_produce(broker.bootstrap, sc))
        asyncio.run(_collect(broker.bootstrap, sc, timeout=30))
        yield sc
    finally:
        proc.stop(grace_s=15)


def test_worker_ready_quickly_and_serves_metrics(scenario: Scenario) -> None:
    import urllib.request

    assert 0 < scenario.ready_s < 20
    with urllib.request.urlopen(f"http://127.0.0.1:{scenario.web_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    # The catalogue names the dashboards read, labelled with this worker.
    assert 'kubetide_messages_consumed_total{topic="cluster.metrics",worker="streams"}' in text
    assert 'kubetide_deadletters_total{origin="cluster.metrics",reason="decode",worker="streams"}' in text
    assert 'kubetide_decisions_total{strategy="LowNodeLoad",type="deschedule"}' in text


def test_hot_node_gets_a_deschedule_decision(scenario: Scenario) -> None:
    sc = scenario
    assert sc.decisions, f"no decision for {sc.hot}:\n{sc.proc.tail(30)}"
    d = sc.decisions[0]
    assert d.from_node == sc.hot and d.to_nodes == [sc.cool]
    assert d.pod.namespace == "shop" and d.pod.name in (f"{sc.app}-a", f"{sc.app}-b")  # never the kube-system pod
    assert d.pod.name == f"{sc.app}-a"  # 7.2 - 2.0 = 65 %: in band, highest CPU
    assert d.workload.key == f"shop/{sc.app}"
    assert d.made_at == sc.base_ts + 2 * STEP and d.expires_at == d.made_at + 300  # third hot tick
    # default thresholds: deviation mode, 8 points above the mean of the ready nodes' CPU
    assert d.evidence["mode"] == "deviation" and d.evidence["high_cpu_pct"] == d.evidence["mean_cpu_pct"] + 8
    assert f"above {d.evidence['high_cpu_pct']:g}% CPU (deviation)" in d.reason and d.evidence["node_cpu_pct"] == 90.0
    assert len({x.id for x in sc.decisions}) == len(sc.decisions) == 1  # node cooldown: one decision


def test_profile_arrives_for_app(scenario: Scenario) -> None:
    sc = scenario
    assert sc.profiles, f"no profile for {sc.app}:\n{sc.proc.tail(30)}"
    p = sc.profiles[-1]
    assert p.namespace == "shop" and p.windows and p.windows[0].cpu_cores.max == pytest.approx(2.0)
    assert p.requests == m.Resources(cpu_cores=1.0, mem_bytes=0.5 * GiB)
    assert len(sc.profiles) == 1  # five ticks 10 s apart within one event-time minute: emitted once
    assert p.ts == sc.base_ts


def test_bad_messages_are_dead_lettered_and_processing_goes_on(scenario: Scenario) -> None:
    sc = scenario
    reasons = sorted(d.reason for d in sc.deadletters)
    assert reasons == ["decode", "version"], sc.deadletters
    for d in sc.deadletters:
        assert d.origin_topic == topics.CLUSTER_METRICS and d.origin_offset is not None
        assert base64.b64decode(d.origin_key_b64) == sc.hot.encode()
    # the good messages after the bad ones (same partition) were processed
    assert sc.decisions and sc.profiles


def test_worker_stops_cleanly_on_sigterm(scenario: Scenario) -> None:
    proc = scenario.proc
    assert proc is not None and proc.alive()
    t0 = time.monotonic()
    proc.signal(signal.SIGTERM)
    while proc.alive() and time.monotonic() - t0 < 20:
        time.sleep(0.1)
    assert not proc.alive(), "worker still running 20 s after SIGTERM"
    assert proc.returncode() == 0, proc.tail(30)
