"""kubesim as a fleet: scheduler (requests, zones, topology spread, taints), start-up delay, eviction loop,
under-provisioning accounting, HPA, the cluster-autoscaler model, placeholder preemption, interference
ground truth, custom metrics, the shipped scenarios, generators/overrides and scenario errors."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from kubesim.model import SAFE_TO_EVICT, Cluster
from kubesim.scenario import SCENARIO_DIR, ScenarioError, load_scenario
from kubesim.server import KubeSim, format_milli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["demo", "hotspots", "diurnal", "interference", "az-drift", "elastic", "mixed"]


def doc(apps: list[dict], *, groups: list[dict] | None = None, **extra) -> dict:
    d = {
        "name": "t", "seed": 1, "start": "2024-06-03T12:00:00Z", "resolution_s": 10, "system_overhead": {"cpu": 0},
        "zones": ["zone-a", "zone-b", "zone-c"], "namespaces": ["shop"],
        "node_groups": groups or [{"name": "general", "cpu": 8, "memory": "32Gi", "nodes_per_zone": 1}],
        "apps": apps,
    }
    d.update(extra)
    return d


def app(name: str = "web", **kw) -> dict:
    a = {"name": name, "namespace": "shop", "replicas": 3, "requests": {"cpu": "1", "memory": "1Gi"},
         "startup_s": 60, "demand": {"cpu": 1.5}}
    a.update(kw)
    return a


def zone_counts(c: Cluster, name: str) -> dict[str, int]:
    out = {z: 0 for z in c.scenario.zones}
    for p in c.pods.values():
        if p.app == name and p.node_name:
            out[c.nodes[p.node_name].zone] += 1
    return out


# ---------------------------------------------------------------- scheduler


def test_scheduler_honours_max_skew_and_requests():
    groups = [{"name": "general", "cpu": 8, "memory": "32Gi",
               "nodes": [{"zone": "zone-a"}, {"zone": "zone-a"}, {"zone": "zone-a"}, {"zone": "zone-b"},
                         {"zone": "zone-c", "cpu": 2}]}]
    spread = [{"max_skew": 1, "topology_key": "zone", "when_unsatisfiable": "DoNotSchedule"}]
    c = Cluster(load_scenario(doc([app(replicas=6, topology_spread=spread)], groups=groups)))
    counts = zone_counts(c, "web")
    # zone-c has room for 2 pods of 1 core: max skew 1 caps the others at 3
    assert counts == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    c.set_replicas("shop", "web", 9)
    counts = zone_counts(c, "web")
    assert max(counts.values()) - min(counts.values()) <= 1
    pending = [p for p in c.pods.values() if p.app == "web" and p.node_name is None]
    assert pending and "topology spread" in pending[0].unschedulable_reason
    # requests: a pod bigger than any node stays Pending with the scheduler's message
    c2 = Cluster(load_scenario(doc([app(replicas=1, requests={"cpu": "9", "memory": "1Gi"})])))
    (p,) = [p for p in c2.pods.values() if p.app == "web"]
    assert p.phase == "Pending" and p.node_name is None
    assert p.unschedulable_reason == "0/3 nodes are available: 3 Insufficient cpu."


def test_scheduler_spreads_by_requests_and_penalises_prefer_no_schedule():
    groups = [{"name": "general", "cpu": 8, "memory": "32Gi", "nodes_per_zone": 1},
              {"name": "spot", "cpu": 8, "memory": "32Gi", "nodes_per_zone": 1,
               "taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}]
    c = Cluster(load_scenario(doc([app(replicas=6)], groups=groups)))
    on = {n: 0 for n in c.nodes}
    for p in c.pods.values():
        if p.app == "web":
            on[p.node_name] += 1
    assert sum(v for n, v in on.items() if n.startswith("general")) == 6
    assert all(v == 2 for n, v in on.items() if n.startswith("general"))
    # ScheduleAnyway keeps zones balanced even when one zone has more room
    soft = [{"max_skew": 1, "topology_key": "zone", "when_unsatisfiable": "ScheduleAnyway"}]
    c = Cluster(load_scenario(doc([app(replicas=6, topology_spread=soft)], groups=[
        {"name": "general", "cpu": 8, "memory": "32Gi",
         "nodes": [{"zone": "zone-a", "cpu": 32}, {"zone": "zone-b"}, {"zone": "zone-c"}]}])))
    assert zone_counts(c, "web") == {"zone-a": 2, "zone-b": 2, "zone-c": 2}


def test_schedule_anyway_spread_replaces_the_default_spreading():
    """A pod with its own spread constraints is scored by them alone (kube-scheduler applies the default
    spreading only to pods without constraints): in zones of unequal size, a ScheduleAnyway maxSkew 1 zone
    constraint keeps the app's zones within 1 at every scale-out, although the small zones' nodes hold more
    of the app (a per-node spread term would pull pods into the big zone)."""
    soft = [{"max_skew": 1, "topology_key": "zone", "when_unsatisfiable": "ScheduleAnyway"}]
    nodes = [{"zone": "zone-a"}] * 4 + [{"zone": "zone-b"}] * 2 + [{"zone": "zone-c"}] * 2
    apps = [app(f"api-{i}", replicas=3, requests={"cpu": "500m", "memory": "512Mi"}, topology_spread=soft)
            for i in range(4)]
    c = Cluster(load_scenario(doc(apps, groups=[{"name": "general", "cpu": 8, "memory": "32Gi", "nodes": nodes}])))
    worst = 0
    for replicas in (8, 13, 20):
        for i in range(4):
            c.set_replicas("shop", f"api-{i}", replicas)
            counts = zone_counts(c, f"api-{i}")
            assert sum(counts.values()) == replicas
            worst = max(worst, max(counts.values()) - min(counts.values()))
    assert worst <= 1


def test_soft_spread_score_is_kube_schedulers_normalised_score():
    """PodTopologySpread's score: Σ log(domains + 2) × count + (maxSkew − 1) over the ScheduleAnyway
    constraints, normalised to 100 × (max + min − raw) / max over the feasible nodes, × weight 2."""
    import math

    import numpy as np

    from kubesim.model import SPREAD_SCORE_WEIGHT, _soft_spread_score
    from kubesim.scenario import SpreadConstraint

    zk, soft = "topology.kubernetes.io/zone", "ScheduleAnyway"
    zone = SpreadConstraint(max_skew=1, topology_key=zk, when_unsatisfiable=soft)
    zc, nc = np.array([3.0, 3.0, 2.0, 1.0]), np.array([2.0, 1.0, 2.0, 1.0])
    got = _soft_spread_score([zone], zc, nc, 3)
    raw = math.log(5) * zc
    assert np.allclose(got, SPREAD_SCORE_WEIGHT * 100 * (raw.max() + raw.min() - raw) / raw.max())
    assert got[3] == pytest.approx(200.0) and got[0] == pytest.approx(200.0 / 3)
    # maxSkew 2 waters the differences down; a hostname constraint adds the per-node counts
    loose = SpreadConstraint(max_skew=2, topology_key=zk, when_unsatisfiable=soft)
    host = SpreadConstraint(max_skew=1, topology_key="kubernetes.io/hostname", when_unsatisfiable=soft)
    diff = _soft_spread_score([loose], zc, nc, 3)
    assert 0 < diff[3] - diff[0] < got[3] - got[0]
    both = _soft_spread_score([zone, host], zc, nc, 3)
    raw2 = math.log(5) * zc + math.log(6) * nc
    assert np.allclose(both, SPREAD_SCORE_WEIGHT * 100 * (raw2.max() + raw2.min() - raw2) / raw2.max())
    # DoNotSchedule constraints are filters only: no score; no pods yet: every node scores the maximum
    hard = SpreadConstraint(max_skew=1, topology_key=zk, when_unsatisfiable="DoNotSchedule")
    assert _soft_spread_score([hard], zc, nc, 3) == 0.0
    assert np.allclose(_soft_spread_score([zone], np.zeros(4), np.zeros(4), 3), SPREAD_SCORE_WEIGHT * 100)


def test_deletion_cost_picks_scale_down_victims():
    c = Cluster(load_scenario(doc([app(replicas=4, pods=[{"index": 2, "deletion_cost": -5},
                                                         {"index": 0, "deletion_cost": 100}])])))
    pods = sorted((p for p in c.pods.values() if p.app == "web"), key=lambda p: p.created)
    c.set_replicas("shop", "web", 3)
    assert pods[2].key not in c.pods and pods[0].key in c.pods
    c.set_replicas("shop", "web", 1)
    assert [p.key for p in c.pods.values() if p.app == "web"] == [pods[0].key]


# ---------------------------------------------------------------- start-up, eviction loop, under-provisioning


def test_startup_delay_and_eviction_replacement_loop():
    c = Cluster(load_scenario(doc([app(replicas=3, startup_s=90, demand={"cpu": 3})])))
    victim = next(p for p in c.pods.values() if p.app == "web")
    assert c.evict("shop", victim.name).code == 201
    new = [p for p in c.pods.values() if p.app == "web" and not p.ready]
    assert len(new) == 1 and new[0].node_name is not None and new[0].phase == "Running"
    c.advance(60)
    assert not new[0].ready
    # not ready: serves no traffic, the other two share the demand
    assert new[0].usage_cpu == pytest.approx(0.1 * new[0].cpu_request)
    assert new[0].latency_ms == 0.0
    others = [p for p in c.pods.values() if p.app == "web" and p.ready]
    assert sum(p.usage_cpu for p in others) == pytest.approx(3.0, rel=1e-6)
    c.advance(30)
    assert new[0].ready and new[0].usage_cpu == pytest.approx(1.0, rel=1e-6)
    assert new[0].latency_ms > 0


def test_underprovisioning_is_counted_per_tick():
    a = app(replicas=2, limits={"cpu": "1"}, demand={"cpu": 3})
    c = Cluster(load_scenario(doc([a])))
    c.advance(60)
    assert c.sla["underprovisioned_pods"] == 2
    assert c.sla["unserved_cpu_cores"] == pytest.approx(1.0)
    assert c.sla["underprovisioned_pod_minutes"] == pytest.approx(2.0)
    assert all(p.unserved_cpu == pytest.approx(0.5) for p in c.pods.values() if p.app == "web")
    c.set_replicas("shop", "web", 3)  # capacity 3 cores: enough once the new pod is ready
    c.advance(60)
    assert c.sla["underprovisioned_pods"] == 0 and c.sla["unserved_cpu_cores"] == 0.0
    # 5 more ticks of 2 short pods while the new one started (ready at the 6th)
    assert c.sla["underprovisioned_pod_minutes"] == pytest.approx(2.0 + 5 * 2 * 10 / 60)
    # an app with no ready pod: every replica is short
    c2 = Cluster(load_scenario(doc([app(replicas=0, demand={"cpu": 1})])))
    c2.step()
    assert c2.sla["underprovisioned_pods"] == 1 and c2.sla["unserved_cpu_cores"] == pytest.approx(1.0)
    st = c.status()
    assert st["sla"]["underprovisioned_pod_minutes"] == pytest.approx(2.0 + 5 * 2 * 10 / 60, abs=1e-3)
    assert st["accounting"]["node_hours"] == pytest.approx(3 * 120 / 3600)


def test_a_contended_node_is_shared_by_requests_like_cfs():
    """Two apps on one 4-core node: ``quiet`` (request 2, wants 1.5) stays within its request and keeps all of it;
    ``burst`` (request 1, limit 4, wants 4) gets the rest of the node (2.5), not a proportional cut of both."""
    groups = [{"name": "general", "cpu": 4, "memory": "32Gi", "nodes": [{"zone": "zone-a"}]}]
    quiet = app("quiet", replicas=1, requests={"cpu": "2", "memory": "1Gi"}, demand={"cpu": 1.5}, startup_s=0)
    burst = app("burst", replicas=1, requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "4"},
                demand={"cpu": 4}, startup_s=0)
    c = Cluster(load_scenario(doc([quiet, burst], groups=groups)))
    c.advance(20)
    (q,) = [p for p in c.pods.values() if p.app == "quiet"]
    (b,) = [p for p in c.pods.values() if p.app == "burst"]
    assert q.usage_cpu == pytest.approx(1.5) and q.unserved_cpu == pytest.approx(0.0)
    assert b.usage_cpu == pytest.approx(2.5) and b.unserved_cpu == pytest.approx(1.5)
    assert c.sla["underprovisioned_pods"] == 1


# ---------------------------------------------------------------- HPA


def test_hpa_scales_up_then_down_after_stabilisation():
    a = app(replicas=2, startup_s=0, requests={"cpu": "1", "memory": "1Gi"}, demand={"cpu": 4},
            hpa={"min_replicas": 1, "max_replicas": 10, "target_cpu_utilization": 50})
    c = Cluster(load_scenario(doc([a], groups=[{"name": "general", "cpu": 16, "memory": "64Gi",
                                               "nodes_per_zone": 1}])))
    c.step()
    # 200 % of requests at target 50 % wants 8; the scale-up limit is max(2 x 2, 2 + 4) = 6 per 15 s
    assert c.deployments[("shop", "web")].replicas == 6
    c.advance(60)
    assert c.deployments[("shop", "web")].replicas == 8
    dep = c.deployments[("shop", "web")]
    object.__setattr__(dep.spec.demand, "cpu", 0.5)
    c._app_arrays()
    c.advance(120)
    assert dep.replicas == 8  # scale-down held by the 300 s stabilisation window
    c.advance(300)
    assert dep.replicas < 8
    assert c.status()["hpa"]["shop/web"]["desired"] == dep.replicas
    off = Cluster(load_scenario(doc([a])), hpa=False)
    off.advance(60)
    assert off.deployments[("shop", "web")].replicas == 2


# ---------------------------------------------------------------- cluster-autoscaler model


def elastic_groups(**kw) -> list[dict]:
    g = {"name": "elastic", "elastic": True, "cpu": 4, "memory": "16Gi", "nodes_per_zone": 0, "max_nodes": 6,
         "provisioning_delay_s": 120, "cost_per_hour": 0.5,
         "taints": [{"key": "kubesim.io/elastic", "effect": "PreferNoSchedule"}]}
    g.update(kw)
    return [{"name": "fixed", "cpu": 4, "memory": "16Gi", "nodes_per_zone": 1, "cost_per_hour": 1.0}, g]


def test_autoscaler_scales_up_after_provisioning_delay_and_down_after_unneeded_time():
    d = doc([app(replicas=3, startup_s=0, demand={"cpu": 1})], groups=elastic_groups(),
            cluster_autoscaler={"scale_down_delay_after_add_s": 0})
    c = Cluster(load_scenario(d))
    c.set_replicas("shop", "web", 12)  # 3 fixed nodes of 4 cores hold 12 pods of 1 core
    assert not [p for p in c.pods.values() if p.node_name is None]
    c.set_replicas("shop", "web", 20)
    pending = [p for p in c.pods.values() if p.node_name is None]
    assert len(pending) == 8 and "Insufficient cpu" in pending[0].unschedulable_reason
    c.step()
    assert len(c.upcoming) == 2 and c.counters["scale_ups"] == 2  # 4 pods per 4-core node
    c.advance(100)
    assert not any(n.group == "elastic" for n in c.nodes.values())
    c.advance(20)
    elastic = sorted(n for n in c.nodes if c.nodes[n].group == "elastic")
    assert len(elastic) == 2 and {c.nodes[n].zone for n in elastic} == {"zone-a", "zone-b"}
    assert not [p for p in c.pods.values() if p.node_name is None]
    # scale down: the newest pods (on the elastic nodes) go; the nodes are removed after 10 unneeded minutes
    c.set_replicas("shop", "web", 12)
    assert not [p for p in c.pods.values() if p.node_name in elastic]
    c.advance(590)
    assert sum(1 for n in c.nodes.values() if n.group == "elastic") == 2
    c.advance(20)
    assert sum(1 for n in c.nodes.values() if n.group == "elastic") == 0
    assert c.counters["nodes_removed"] == 2
    acc = c.accounting()
    assert acc["node_hours_by_group"]["elastic"] == pytest.approx(2 * 610 / 3600, rel=0.05)
    assert acc["cost"] > 0 and acc["ideal_node_hours"] > 0


def test_autoscaler_scale_down_respects_safe_to_evict_and_pdb():
    for extra, removable in (({"annotations": {SAFE_TO_EVICT: "false"}}, False),
                             ({"pdb": {"minAvailable": 4}}, False), ({}, True)):
        a = app(replicas=4, startup_s=0, demand={"cpu": 0.5}, requests={"cpu": "500m", "memory": "1Gi"},
                tolerations=[{"key": "kubesim.io/elastic", "operator": "Exists"}], **extra)
        groups = elastic_groups(nodes_per_zone=1)
        c = Cluster(load_scenario(doc([app("filler", replicas=3, startup_s=0, requests={"cpu": "3", "memory": "1Gi"}),
                                       a], groups=groups)))
        c.advance(900)
        n_elastic = sum(1 for n in c.nodes.values() if n.group == "elastic")
        web_on_elastic = any(p.app == "web" and c.nodes[p.node_name].group == "elastic"
                             for p in c.pods.values() if p.node_name)
        assert web_on_elastic or removable
        if removable:
            assert n_elastic < 3, extra
        else:
            assert n_elastic >= 1, extra
            assert all(p.node_name for p in c.pods.values())


def test_placeholder_preemption_and_scale_up():
    ph = app("placeholder", replicas=3, priority=-1, startup_s=0, requests={"cpu": "3", "memory": "1Gi"},
             demand={"cpu": 0}, tolerations=[{"key": "kubesim.io/elastic", "operator": "Exists"}])
    c = Cluster(load_scenario(doc([ph, app(replicas=0, startup_s=0, requests={"cpu": "2", "memory": "1Gi"})],
                                  groups=elastic_groups())))
    assert all(p.node_name for p in c.pods.values())
    c.set_replicas("shop", "web", 3)
    web = [p for p in c.pods.values() if p.app == "web"]
    assert all(p.node_name for p in web) and c.counters["preemptions"] >= 1
    c.step()  # the ReplicaSet recreates the placeholders; they are Pending and trigger a scale-up
    pending = [p for p in c.pods.values() if p.node_name is None]
    assert pending and all(p.app == "placeholder" for p in pending)
    c.step()
    assert c.upcoming
    c.advance(130)
    assert all(p.node_name for p in c.pods.values())


# ---------------------------------------------------------------- interference


def test_interference_ground_truth_and_cpi():
    groups = [{"name": "general", "cpu": 16, "memory": "64Gi", "nodes": [{"name": "n1", "zone": "zone-a"}]}]
    noisy = app("noisy", replicas=1, startup_s=0, antagonist={"intensity": 1.0, "on_min": 10, "off_min": 20})
    victim = app("victim", replicas=2, startup_s=0)
    c = Cluster(load_scenario(doc([noisy, victim], groups=groups)))
    c.advance(60)
    vs = [p for p in c.pods.values() if p.app == "victim"]
    nz = next(p for p in c.pods.values() if p.app == "noisy")
    assert all(p.cpi == pytest.approx(2.0) for p in vs) and nz.cpi == pytest.approx(1.0)
    busy_cpu = nz.usage_cpu
    c.advance(20 * 60)  # off after 10 min, on again at 30 min
    assert all(p.cpi == pytest.approx(1.0) for p in vs)
    # the antagonist's own CPU follows its activity (so its activity can explain the victims' CPI)
    assert nz.usage_cpu == pytest.approx(0.15 * busy_cpu, rel=0.05)
    c.advance(10 * 60)
    truth = c.truth
    assert len(truth["episodes"]) == 2
    first = truth["episodes"][0]
    assert first["antagonist"] == f"shop/{nz.name}" and first["node"] == "n1"
    assert first["end_ts"] - first["start_ts"] == pytest.approx(600, abs=10)
    assert {v["pod"] for v in first["victims"]} == {f"shop/{p.name}" for p in vs}
    assert truth["episodes"][1]["end"] is None  # ongoing
    pairs = {(x["victim"], x["antagonist"]) for x in truth["pairs"]}
    assert pairs == {(f"shop/{p.name}", f"shop/{nz.name}") for p in vs}


async def test_custom_metrics_truth_and_status_endpoints():
    async with KubeSim("interference", speed=0) as sim:
        await sim.advance(120)
        hdr = {"Authorization": "Bearer t"}
        async with aiohttp.ClientSession() as s:
            base = f"{sim.url}/apis/custom.metrics.k8s.io/v1beta2"
            async with s.get(base, headers=hdr) as r:
                names = {x["name"] for x in (await r.json())["resources"]}
                assert names == {"pods/cpi", "pods/latency_ms"}
            async with s.get(f"{base}/namespaces/shop/pods/*/cpi", headers=hdr) as r:
                assert r.status == 200
                body = await r.json()
            assert body["kind"] == "MetricValueList"
            shop = [p for p in sim.cluster.pods.values() if p.namespace == "shop" and p.node_name]
            assert len(body["items"]) == len(shop)
            item = body["items"][0]
            assert item["describedObject"]["kind"] == "Pod" and item["metric"]["name"] == "cpi"
            assert item["timestamp"] == "2024-06-03T09:02:00Z"
            pod = sim.cluster.pods[("shop", item["describedObject"]["name"])]
            assert item["value"] == format_milli(pod.cpi)
            q = "labelSelector=app%3Dcheckout-1"
            async with s.get(f"{base}/namespaces/shop/pods/*/latency_ms?{q}", headers=hdr) as r:
                items = (await r.json())["items"]
                assert items and all(i["describedObject"]["name"].startswith("checkout-1-") for i in items)
            for bad in ("namespaces/shop/pods/*/qps", "namespaces/*/pods/*/cpi", "namespaces/shop/pods/nope/cpi"):
                async with s.get(f"{base}/{bad}", headers=hdr) as r:
                    assert r.status == 404, bad
            async with s.get(f"{sim.url}/kubesim/v1/truth") as r:
                truth = await r.json()
            assert truth["episodes"] and truth["pairs"]
            # the truth never leaks through the Kubernetes API
            async with s.get(f"{sim.url}/api/v1/pods", headers=hdr) as r:
                assert "antagonist" not in await r.text()
            async with s.get(f"{sim.url}/kubesim/v1/status") as r:
                st = await r.json()
            assert set(st["sla"]) == {"underprovisioned_pods", "unserved_cpu_cores", "underprovisioned_pod_minutes"}
            assert st["accounting"]["node_hours"] > 0


def test_format_milli():
    assert format_milli(2.0) == "2" and format_milli(1.2346) == "1235m" and format_milli(0) == "0"


# ---------------------------------------------------------------- scenarios


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_load_and_run(name):
    sc = load_scenario(name)
    c = Cluster(sc)
    c.advance(180)
    st = c.status()
    assert st["counts"]["pods_running"] > 0 and st["tick"] == 18
    if name == "mixed":
        assert len(sc.nodes) == 100 and 1900 <= st["counts"]["pods"] <= 2300


def test_mixed_scenario_has_everything():
    sc = load_scenario("mixed")
    assert any(g.elastic for g in sc.node_groups) and any(not g.elastic for g in sc.node_groups)
    assert any(a.hpa for a in sc.apps) and any(a.antagonist for a in sc.apps) and any(a.priority < 0 for a in sc.apps)
    assert any(a.demand.pattern == "random_walk" for a in sc.apps) and any(a.demand.bursts for a in sc.apps)
    assert any(a.topology_spread for a in sc.apps) and any(a.character == "memory" for a in sc.apps)


def test_generators_are_seeded_and_overrides_apply():
    a = load_scenario("mixed")
    b = load_scenario("mixed")
    assert a == b
    other = load_scenario("mixed", overrides={"seed": 2})
    assert other.seed == 2 and [x.replicas for x in other.apps] != [x.replicas for x in a.apps]
    small = load_scenario("mixed", nodes=30, hours=2)
    assert small.duration_h == 2 and 28 <= len(small.nodes) <= 32
    assert load_scenario("mixed", overrides={"nodes": 30, "hours": 2}) == small
    fronts = [x for x in a.apps if x.name.startswith("frontend-")]
    assert len(fronts) == 30 and len({x.demand.cpu for x in fronts}) == 30


def _fleet_doc() -> dict:
    return yaml.safe_load((SCENARIO_DIR / "mixed.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["apps"][0].update(count=-1), "apps[0].count"),
        (lambda d: d["apps"][0]["demand"].update(cpu={"uniform": [1]}), "apps[0].demand.cpu.uniform"),
        (lambda d: d["apps"][0]["hpa"].update(max_replicas=1), "apps[0].hpa.max_replicas"),
        (lambda d: d["apps"][0]["topology_spread"][0].update(when_unsatisfiable="Maybe"),
         "apps[0].topology_spread[0].when_unsatisfiable"),
        (lambda d: d["apps"][0]["topology_spread"][0].update(topology_key="rack"),
         "apps[0].topology_spread[0].topology_key"),
        (lambda d: d["apps"][5]["antagonist"].update(on_min=0), "apps[5].antagonist.on_min"),
        (lambda d: d["apps"][2]["demand"].update(pattern="chaos"), "apps[2].demand.pattern"),
        (lambda d: d["apps"][3]["demand"]["bursts"].update(rate_per_h=-1), "apps[3].demand.bursts.rate_per_h"),
        (lambda d: d["apps"][4].update(character="gpu"), "apps[4].character"),
        (lambda d: d["node_groups"][2].update(max_nodes=1), "node_groups[2].max_nodes"),
        (lambda d: d["node_groups"][2].update(elastic="yes"), "node_groups[2].elastic"),
        (lambda d: d["node_groups"][2].update(provisioning_delay_s=-5), "node_groups[2].provisioning_delay_s"),
        (lambda d: d["cluster_autoscaler"].update(scale_down_utilization_threshold=2),
         "cluster_autoscaler.scale_down_utilization_threshold"),
        (lambda d: d["cluster_autoscaler"].update(speed=1), "cluster_autoscaler.speed"),
    ],
)
def test_new_fields_errors_name_the_field(mutate, field):
    d = copy.deepcopy(_fleet_doc())
    mutate(d)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(d)
    assert str(ei.value).startswith(f"{field}:"), str(ei.value)


def test_cli_exit_2_names_the_new_field(tmp_path):
    d = _fleet_doc()
    d["apps"][0]["hpa"]["target_cpu_utilization"] = "lots"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kubesim", "--scenario", str(bad)], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 2 and "apps[0].hpa.target_cpu_utilization" in proc.stderr


async def test_hpa_objects_list_get_watch():
    from kubernetes_asyncio import client, config, watch

    async with KubeSim("az-drift", speed=0) as sim:
        await config.load_kube_config(config_file=str(sim.kubeconfig_path))
        async with client.ApiClient() as api:
            v2 = client.AutoscalingV2Api(api)
            lst = await v2.list_namespaced_horizontal_pod_autoscaler("shop")
            assert sorted(h.metadata.name for h in lst.items) == [f"api-{i}" for i in range(1, 5)]
            h = await v2.read_namespaced_horizontal_pod_autoscaler("api-1", "shop")
            assert h.spec.scale_target_ref.name == "api-1" and h.spec.max_replicas == 20
            assert h.spec.metrics[0].resource.target.average_utilization == 60
            assert h.spec.behavior.scale_down.stabilization_window_seconds == 300
            rv = lst.metadata.resource_version
            await sim.advance(120)
            w = watch.Watch()
            seen = []
            async for ev in w.stream(v2.list_horizontal_pod_autoscaler_for_all_namespaces, resource_version=rv,
                                     timeout_seconds=1):
                seen.append((ev["type"], ev["object"].metadata.name, ev["object"].status.desired_replicas))
                if len(seen) >= 2:
                    w.stop()
            assert seen and seen[0][0] == "MODIFIED"
            h = await v2.read_namespaced_horizontal_pod_autoscaler("api-1", "shop")
            assert h.status.current_metrics[0].resource.current.average_utilization is not None
            dep = sim.cluster.deployments[("shop", "api-1")]
            assert h.status.desired_replicas == dep.replicas
            groups = await client.ApisApi(api).get_api_versions()
            auto = next(g for g in groups.groups if g.name == "autoscaling")
            assert auto.preferred_version.version == "v2"
            assert any(g.name == "custom.metrics.k8s.io" for g in groups.groups)


def test_fleet_runs_are_deterministic_and_per_pod_figures_survive_rebuilds():
    def run(seed=None):
        c = Cluster(load_scenario("interference"), seed=seed)
        c.advance(900)
        return c, sorted((p.name, p.node_name, round(p.usage_cpu, 9), round(p.cpi, 9)) for p in c.pods.values())

    a, fa = run()
    b, fb = run()
    assert fa == fb and a.truth == b.truth and a.sla == b.sla
    _, fc = run(seed=99)
    assert fc != fa
    before = {p.key: (p.cpi, p.latency_ms) for p in a.pods.values()}
    victim = next(p for p in a.pods.values() if p.app == "checkout-1")
    a.delete_pod(victim.namespace, victim.name)
    a._rebuild()  # a structural change re-slots the arrays; the last tick's figures follow their pods
    assert all((p.cpi, p.latency_ms) == before[p.key] for p in a.pods.values() if p.key in before)


def test_scale_down_prefers_doubled_up_pods_and_az_drift_skews_zones():
    groups = [{"name": "general", "cpu": 8, "memory": "32Gi",
               "nodes": [{"name": "a1", "zone": "zone-a"}, {"name": "a2", "zone": "zone-a"},
                         {"name": "b1", "zone": "zone-b"}]}]
    c = Cluster(load_scenario(doc([app(replicas=4, pods=[{"index": 0, "node": "a1"}, {"index": 1, "node": "b1"},
                                                         {"index": 2, "node": "b1"}, {"index": 3, "node": "a2"}])],
                                  groups=groups)))
    c.set_replicas("shop", "web", 3)
    assert sorted(p.node_name for p in c.pods.values() if p.app == "web") == ["a1", "a2", "b1"]
    c = Cluster(load_scenario("az-drift"))
    c.advance(5 * 3600)
    skews = []
    for d in c.deployments.values():
        z = zone_counts(c, d.name)
        skews.append(max(z.values()) - min(z.values()))
    assert max(skews) >= 3


def test_ideal_nodes_keep_the_fixed_group_and_leave_placeholders_out():
    """With an elastic group the ideal is every fixed node plus the fewest elastic nodes for the rest of the
    requests (what a perfect packer with an instant autoscaler would run); negative-priority placeholders
    are headroom, not need. Without an elastic group: the fewest nodes of the largest type."""
    ph = app("placeholder", replicas=6, priority=-1, startup_s=0, demand={"cpu": 0},
             tolerations=[{"key": "kubesim.io/elastic", "operator": "Exists"}])
    c = Cluster(load_scenario(doc([app(replicas=3, startup_s=0, demand={"cpu": 1}), ph], groups=elastic_groups())))
    assert c.accounting()["ideal_nodes_now"] == 3  # 3 pods fit the 3 fixed 4-core nodes; placeholders ignored
    c.set_replicas("shop", "web", 21)  # 12 on the fixed nodes, 9 more cores = 3 elastic nodes of 4 cores
    c.step()
    assert c.accounting()["ideal_nodes_now"] == 3 + 3
    c.set_replicas("shop", "web", 13)
    c.step()
    assert c.accounting()["ideal_nodes_now"] == 3 + 1
    c2 = Cluster(load_scenario(doc([app(replicas=17, startup_s=0, demand={"cpu": 1}), ph])))
    assert c2.accounting()["ideal_nodes_now"] == 3  # 17 cores on 8-core nodes (no elastic group)


def test_autoscaler_drain_counts_placeholder_evictions_apart():
    """node_scale_evictions counts workload pods: a placeholder the cluster-autoscaler evicts while removing a
    node is counted in autoscaler_placeholder_evictions instead."""
    tol = [{"key": "kubesim.io/elastic", "operator": "Exists"}]
    ph = app("placeholder", replicas=3, priority=-1, startup_s=0, demand={"cpu": 0},
             requests={"cpu": "500m", "memory": "1Gi"}, tolerations=tol)
    web = app(replicas=3, startup_s=0, demand={"cpu": 0.3}, requests={"cpu": "500m", "memory": "1Gi"},
              tolerations=tol)
    filler = app("filler", replicas=3, startup_s=0, requests={"cpu": "3", "memory": "1Gi"})
    c = Cluster(load_scenario(doc([filler, web, ph], groups=elastic_groups(nodes_per_zone=1))))
    on_elastic = {p.app for p in c.pods.values() if p.node_name and c.nodes[p.node_name].group == "elastic"}
    assert {"web", "placeholder"} <= on_elastic
    c.advance(900)
    assert sum(1 for n in c.nodes.values() if n.group == "elastic") < 3
    got = c.counters
    assert got["autoscaler_evictions"] >= 1 and got["autoscaler_placeholder_evictions"] >= 1
    assert got["autoscaler_evictions"] + got["autoscaler_placeholder_evictions"] == got["evictions"]
