"""Autoscaling end to end, as processes over real TCP and HTTP: kubesim (its own HPA off) → collector →
cluster.metrics / cluster.events → faust worker (the Autoscaler tick planner) → decisions.autoscale →
actuator → the Deployment's ``scale`` subresource → kubesim creates the pods → actions record."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from kubesim.model import Cluster
from kubesim.scenario import load_scenario
from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.procs import ProcessGroup, add_pipeline
from kubetide.topics import ACTIONS, DECISIONS_AUTOSCALE
from tests.test_actuator_support import TopicReader

pytest_plugins = ("tests.test_actuator_support",)  # fixture: kafka (a private embedded broker)

APP = "storefront-1"


@pytest.mark.timeout(240)
async def test_autoscale_decision_scales_the_deployment(kafka: str, tmp_path: Path) -> None:
    cluster = Cluster(load_scenario("diurnal", seed=1), seed=1, hpa=False)
    # A target of 10 % of the request: storefront-1's pods run far above it, so kubetide scales it out.
    config = {"streams": {"autoscale": {"sync_period_s": 0, "workloads": {f"shop/{APP}": {
        "min_replicas": 1, "max_replicas": 25, "target_cpu_utilization": 10, "predictive": {"enabled": False}}}}}}
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text(yaml.safe_dump(config))
    async with KubeSim(cluster, speed=0) as sim:
        await sim.advance(10)
        dep = cluster.deployments[("shop", APP)]
        before = dep.replicas
        others = {k: d.replicas for k, d in cluster.deployments.items() if k != ("shop", APP)}
        env = {"KUBETIDE_LOG_LEVEL": "INFO"}
        with ProcessGroup() as group:
            streams, ready = add_pipeline(group, kafka, tmp_path, sim.kubeconfig_path, extra=["--config", str(cfg)],
                                          env=env)
            await asyncio.to_thread(streams.wait_for_file, ready, 60)
            async with TopicReader(kafka, ACTIONS) as actions, TopicReader(kafka, DECISIONS_AUTOSCALE) as decisions:
                applied: list = []
                deadline = time.monotonic() + 120
                while not applied and time.monotonic() < deadline:
                    await sim.advance(10)
                    await asyncio.sleep(0.2)
                    applied = actions.matching(lambda a: getattr(a, "decision_topic", "") == DECISIONS_AUTOSCALE
                                               and a.outcome == "applied")
                    group.raise_if_dead()
                assert applied, "no autoscale decision was applied within 120 s:\n" + group.tails()
                action = applied[0]
                # the two readers run independently: the decision may reach this reader after its action
                found: list = []
                deadline = time.monotonic() + 15
                while not found and time.monotonic() < deadline:
                    found = decisions.matching(
                        lambda d: isinstance(d, m.AutoscaleDecision) and d.id == action.decision_id)
                    if not found:
                        await asyncio.sleep(0.1)
                assert found, f"decision {action.decision_id} applied but not seen on {DECISIONS_AUTOSCALE}"
                decision = found[0]
                # The decision names its trigger and numbers, in event time.
                assert decision.workload == m.WorkloadRef(namespace="shop", kind="Deployment", name=APP)
                assert decision.trigger == "reactive" and decision.strategy == "Autoscale"
                assert decision.current_replicas == before < decision.desired_replicas
                assert decision.evidence["replicas.reactive"] >= decision.desired_replicas
                assert set(decision.zones) <= {"zone-a", "zone-b", "zone-c"} and decision.zones
                assert abs(sum(decision.zones.values()) - 1) < 0.01
                assert decision.made_at <= cluster.t and decision.expires_at > decision.made_at
                # Applied through the scale subresource: kubesim's Deployment has the new count, the
                # ReplicaSet created the pods, and the marker annotation names the decision.
                assert dep.replicas >= decision.desired_replicas
                # The actuator writes the scale (and its marker) before it publishes the action record, and a
                # later decision may have been applied meanwhile: wait for the marker's record to arrive.
                marker = (dep.annotations or {}).get("kubetide.io/last-decision")
                await actions.wait_for(lambda a: getattr(a, "decision_id", None) == marker
                                       and getattr(a, "outcome", "") == "applied", within=15)
                await sim.advance(10)
                assert sum(1 for p in cluster.pods.values() if p.app == APP) == dep.replicas
                # Only the autoscaled workload was touched (kubesim's HPA is off; no other policy).
                assert {k: d.replicas for k, d in cluster.deployments.items() if k != ("shop", APP)} == others
                ids = [a.decision_id for a in actions.matching(lambda a: getattr(a, "outcome", None) == "applied")]
                assert len(ids) == len(set(ids))


async def test_actuator_scale_in_removes_the_chosen_pods_first(kafka: str, producer) -> None:
    """The actuator marks the planner's ``scale_in_pods`` with pod-deletion-cost before writing the scale:
    kubesim's ReplicaSet controller (Kubernetes' order: lower deletion cost first) removes exactly those."""
    from tests.test_actuator import started
    from tests.test_actuator_safety import scale_decision, send_scale, settings
    from tests.test_actuator_support import running
    from workers.actuator import Actuator
    from workers.kube import new_api_client

    async with KubeSim("demo", speed=0, retry_after_s=1) as sim:
        c = sim.cluster
        await sim.advance(600)  # every pod ready
        api = await new_api_client(str(sim.kubeconfig_path))
        try:
            act = Actuator(api, producer, kafka, settings(), embedded=True)
            dep = c.deployments[("shop", "web")]
            web = [p for p in c.pods.values() if p.app == "web"]
            assert all(p.ready for p in web) and len(web) >= 3
            # the pods the default order (most doubled-up on a node, ready for less time, newer, name) deletes last
            per_node = {n: sum(1 for q in web if q.node_name == n) for n in {p.node_name for p in web}}
            default_order = sorted(web, key=lambda p: (-per_node[p.node_name], -(p.ready_at or 0.0), -p.created,
                                                       p.name))
            chosen = [p.name for p in default_order[-2:]]
            d = scale_decision(sim, "web", dep.replicas - 2)
            d = d.model_copy(update={"evidence": {"scale_in_pods": ",".join(chosen)}})
            async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
                await started(act)
                await send_scale(producer, d)
                (a,) = await actions.wait_for(lambda x: getattr(x, "decision_id", "") == d.id)
                assert (a.outcome, a.reason) == ("applied", "scaled")
            left = {p.name for p in c.pods.values() if p.app == "web"}
            assert not set(chosen) & left and len(left) == dep.replicas
        finally:
            await api.close()
