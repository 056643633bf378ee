"""Node scaling end to end, as processes over real TCP and HTTP: kubesim (its cluster-autoscaler model on a
small elastic group) → collector → faust worker (the NodeScale tick planner) → decisions.nodescale →
actuator → node taint / pod annotation patches, cordon and evictions through the Eviction API → kubesim's
cluster-autoscaler removes the emptied node. An elastic node is added at the peak and removed in the trough."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kubesim.model import Cluster
from kubesim.scenario import load_scenario
from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.procs import ProcessGroup, add_pipeline
from kubetide.topics import ACTIONS, DECISIONS_AUTOSCALE, DECISIONS_DESCHEDULE, DECISIONS_NODESCALE
from streams.core.nodescale import DELETION_COST
from tests.test_actuator_support import TopicReader

pytest_plugins = ("tests.test_actuator_support",)  # fixture: kafka (a private embedded broker)

# One fixed 8-core node, an elastic group of 4-core nodes (30 s provisioning, no taint of its own: kubetide
# adds it), one app of 1-core pods whose replicas the test sets (the peak and the trough).
SCENARIO = {
    "name": "tiny-elastic", "seed": 3, "start": "2024-06-07T12:00:00Z", "duration_h": 1, "resolution_s": 10,
    "speed": 0, "zones": ["zone-a"], "namespaces": ["shop", "overprovisioning"],
    # CA alone would keep a half-used elastic node (utilisation threshold 0.3): the drain is kubetide's
    "cluster_autoscaler": {"scan_interval_s": 10, "scale_down_utilization_threshold": 0.3,
                           "scale_down_unneeded_s": 30, "scale_down_delay_after_add_s": 30},
    "node_groups": [
        {"name": "fixed", "cpu": 8, "memory": "32Gi", "nodes_per_zone": 1},
        {"name": "elastic", "elastic": True, "cpu": 4, "memory": "16Gi", "nodes_per_zone": 0, "min_nodes": 0,
         "max_nodes": 3, "provisioning_delay_s": 30},
    ],
    "apps": [
        {"name": "web", "namespace": "shop", "replicas": 2, "requests": {"cpu": "1", "memory": "1Gi"},
         "startup_s": 0, "demand": {"cpu": 1}},
    ],
}
CONFIG = {
    "streams": {"strategies": {"LowNodeLoad": {"enabled": False}},
                "nodescale": {
                    "elastic_groups": ["elastic"], "sample_s": 10, "trough_lookahead_s": 60,
                    "trough_max_packing": 0.9, "drain_after_join_s": 30, "reissue_s": 30,
                    "size_placeholder": False,
                    # cost 0 keeps kubesim's ReplicaSet ranking (doubled-up pods go first, here the fixed
                    # node's), so the trough leaves pods on the elastic node and the drain has work to do
                    "elastic_deletion_cost": 0, "deletion_cost_step": 0}},
    "actuator": {"topics": [DECISIONS_DESCHEDULE, DECISIONS_AUTOSCALE, DECISIONS_NODESCALE]},
}


def elastic_nodes(cluster: Cluster) -> list[str]:
    return sorted(n.name for n in cluster.nodes.values() if n.group == "elastic")


@pytest.mark.timeout(300)
async def test_elastic_node_added_at_peak_tainted_annotated_and_drained_in_the_trough(kafka: str,
                                                                                     tmp_path: Path) -> None:
    scen = tmp_path / "tiny.yaml"
    scen.write_text(yaml.safe_dump(SCENARIO))
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cluster = Cluster(load_scenario(str(scen)))
    async with KubeSim(cluster, speed=0) as sim:
        env = {"KUBETIDE_LOG_LEVEL": "INFO"}
        with ProcessGroup() as group:
            streams, ready = add_pipeline(group, kafka, tmp_path, sim.kubeconfig_path, extra=["--config", str(cfg)],
                                          env=env)
            await asyncio.to_thread(streams.wait_for_file, ready, 60)

            async def run_until(cond: Callable[[], bool], what: str, limit_s: float = 100) -> None:
                deadline = time.monotonic() + limit_s
                while not cond():
                    assert time.monotonic() < deadline, f"not reached within {limit_s:.0f} s: {what}\n" + \
                        group.tails()
                    group.raise_if_dead()
                    await sim.advance(10)
                    await asyncio.sleep(0.25)

            async with TopicReader(kafka, ACTIONS) as actions, TopicReader(kafka, DECISIONS_NODESCALE) as decisions:
                t_warm = cluster.t + 60
                await run_until(lambda: cluster.t >= t_warm, "a minute of warm-up", 60)
                assert elastic_nodes(cluster) == []
                # ---- peak: 10 one-core pods for 8 fixed cores; the cluster-autoscaler adds an elastic node
                cluster.set_replicas("shop", "web", 10)
                await run_until(lambda: bool(elastic_nodes(cluster)), "an elastic node joins")
                node = elastic_nodes(cluster)[0]

                def marked() -> bool:
                    n = cluster.nodes.get(node)
                    on = [p for p in cluster.pods.values() if p.node_name == node and not p.daemon]
                    return (n is not None and any(t.key == "kubetide.io/elastic" and t.effect == "PreferNoSchedule"
                                                  for t in n.taints)
                            and bool(on) and all(p.annotations.get(DELETION_COST) == "0" for p in on))

                await run_until(marked, f"{node} tainted PreferNoSchedule and its pods annotated")
                assert all(p.node_name for p in cluster.pods.values()), "every pod placed at the peak"
                # ---- trough: 6 pods; the fixed node has room for all of them
                evictions_before = cluster.counters["evictions"]
                cluster.set_replicas("shop", "web", 6)
                await run_until(lambda: node not in cluster.nodes, f"{node} drained and removed", 150)
                assert elastic_nodes(cluster) == []
                web = [p for p in cluster.pods.values() if p.app == "web"]
                await run_until(lambda: all(p.node_name for p in cluster.pods.values() if p.app == "web"),
                                "the drained pods run again", 30)
                assert len(web) == 6
                # kubetide evicted the elastic node's pods (the Eviction API); the autoscaler only removed it
                assert cluster.counters["evictions"] > evictions_before
                assert cluster.counters["autoscaler_evictions"] == 0
                done = {(a.action, a.reason): a for a in actions.matching(
                    lambda a: getattr(a, "decision_topic", "") == DECISIONS_NODESCALE and a.outcome == "applied")}
                assert {("nodescale", "tainted"), ("nodescale", "annotated"), ("nodescale", "drained")} <= set(done)
                drain = next(d for d in decisions.matching(lambda d: isinstance(d, m.NodescaleDecision))
                             if d.id == done[("nodescale", "drained")].decision_id)
                assert drain.action == "drain" and drain.node == node and drain.node_group == "elastic"
                assert drain.strategy == "NodeScale" and drain.made_at <= cluster.t < drain.expires_at + 600
                ids = [a.decision_id for a in actions.matching(lambda a: getattr(a, "outcome", None) == "applied")]
                assert len(ids) == len(set(ids))
