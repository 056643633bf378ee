"""Interference detection end to end, as processes over real TCP and HTTP: kubesim's custom metrics API
(pods/*/cpi, pods/*/latency_ms) → collector → cluster.metrics with CPI columns → stream worker's
interference agent → ``anomalies`` (and planner-input, kind ``anomaly``), checked against kubesim's ground
truth (``cluster.truth``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.procs import ProcessGroup, add_pipeline
from kubetide.topics import ANOMALIES, CLUSTER_METRICS, PLANNER_INPUT
from streams.core.messages import PlannerInput  # registers the planner-input codec for TopicReader
from tests.test_actuator_support import TopicReader

pytest_plugins = ("tests.test_actuator_support",)  # fixture: kafka (a private embedded broker)

TICK_S = 10
MAX_TICKS = 240  # 40 virtual minutes


def scenario() -> dict:
    """One node: one antagonist (off for the first 12 minutes, then on for 10) next to three victims."""
    return {
        "name": "interference-e2e", "seed": 1, "start": "2024-06-03T12:00:00Z", "resolution_s": TICK_S,
        "system_overhead": {"cpu": 0}, "zones": ["zone-a"], "namespaces": ["shop"],
        "node_groups": [{"name": "general", "cpu": 16, "memory": "64Gi", "nodes": [{"name": "n1", "zone": "zone-a"}]}],
        "apps": [
            {"name": "noisy", "namespace": "shop", "replicas": 1, "requests": {"cpu": "1", "memory": "1Gi"},
             "startup_s": 0, "demand": {"cpu": 1.5, "noise": 0.02},
             "antagonist": {"intensity": 1.5, "on_min": 10, "off_min": 30, "phase_min": 28}},
            {"name": "victim", "namespace": "shop", "replicas": 3, "requests": {"cpu": "1", "memory": "1Gi"},
             "startup_s": 0, "demand": {"cpu": 1.0, "noise": 0.05}},
        ],
    }


def _is_open_victim(a: object) -> bool:
    return isinstance(a, m.Anomaly) and a.state == "open" and a.victim.name.startswith("victim-")


@pytest.mark.timeout(120)
async def test_antagonist_is_found_end_to_end(kafka: str, tmp_path: Path) -> None:
    async with KubeSim(scenario(), speed=0) as sim:
        c = sim.cluster
        await sim.advance(TICK_S)
        env = {"KUBETIDE_LOG_LEVEL": "INFO"}
        with ProcessGroup() as group:
            streams, ready = add_pipeline(group, kafka, tmp_path, sim.kubeconfig_path, env=env, actuator=False)
            await asyncio.to_thread(streams.wait_for_file, ready, 60)

            async with TopicReader(kafka, CLUSTER_METRICS) as metrics, TopicReader(kafka, ANOMALIES) as anomalies, \
                    TopicReader(kafka, PLANNER_INPUT) as planner_input:
                found: list = []
                started = time.monotonic()
                for _ in range(MAX_TICKS):
                    # lock step: one scrape per tick, so the detector sees every 10 s sample
                    now = c.t
                    await metrics.wait_for(lambda v, now=now: isinstance(v, m.ClusterMetrics) and v.ts >= now,
                                           within=15)
                    found = anomalies.matching(_is_open_victim)
                    if found:
                        break
                    group.raise_if_dead()
                    await sim.advance(TICK_S)
                if not found:  # the worker may lag a few scrapes behind
                    found = await anomalies.wait_for(_is_open_victim, within=10)
                elapsed = time.monotonic() - started

                cms = metrics.matching(lambda v: isinstance(v, m.ClusterMetrics))
                assert cms and all(v.pods.cpi is not None for v in cms), "cluster.metrics carry CPI"

                truth = c.truth
                assert truth["episodes"], "the antagonist was active"
                episode = truth["episodes"][0]
                a = found[0]
                assert a.node == episode["node"] == "n1"
                assert c.pods[(a.victim.namespace, a.victim.name)].node_name == episode["node"]
                assert f"{a.victim.namespace}/{a.victim.name}" in {v["pod"] for v in episode["victims"]}
                assert a.antagonists, f"no antagonist named: {a}"
                top = a.antagonists[0]
                assert f"{top.namespace}/{top.name}" == episode["antagonist"]
                assert a.ts >= episode["start_ts"]
                assert elapsed < 60, f"took {elapsed:.1f}s"
                # ... and forwarded to the planner
                fwd = await planner_input.wait_for(
                    lambda v: isinstance(v, PlannerInput) and v.kind == "anomaly" and v.anomaly.id == a.id, within=10)
                assert fwd[0].anomaly == a


def test_anomalies_reach_the_planner_offline() -> None:
    """The offline harness mirrors the agents: each anomaly goes to ``Planner.apply_anomaly`` through a
    ``PlannerInput`` of kind ``anomaly``, and its CPI columns come through the collector's column rule."""
    from kubesim.model import Cluster
    from kubesim.scenario import load_scenario
    from kubetide.codec import decode, encode
    from kubetide.offline import OfflineKubetide
    from streams.core.messages import forward_anomaly

    c = Cluster(load_scenario(scenario()))
    k = OfflineKubetide(c, codec=True)
    t0 = c.t
    while not any(_is_open_victim(a) for a in k.anomalies) and c.t - t0 < MAX_TICKS * TICK_S:
        k.tick()
    a = next(a for a in k.anomalies if _is_open_victim(a))
    assert f"{a.antagonists[0].namespace}/{a.antagonists[0].name}" == c.truth["episodes"][0]["antagonist"]
    assert a.id in k.planner.state.anomalies
    assert k.planner.state.apart, "victim and antagonist workloads are kept apart"
    msg = decode(PLANNER_INPUT, encode(forward_anomaly(a)))
    assert isinstance(msg, PlannerInput) and msg.kind == "anomaly" and msg.anomaly == a
    with pytest.raises(ValueError):
        PlannerInput(ts=a.ts, kind="anomaly")
    with pytest.raises(ValueError):
        PlannerInput(ts=a.ts, kind="node", anomaly=a)
