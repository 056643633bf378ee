"""kubesim: pod-template changes of a Deployment (a new ReplicaSet and a rolling update), and the
scheduler's preferred pod anti-affinity (the InterPodAffinity score). Model level, then over HTTP with
kubernetes_asyncio (merge patch of spec.template, resourceVersion precondition, validation, namespace
labels)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubesim.model import Cluster
from kubesim.scenario import parse_scenario
from kubesim.server import KubeSim

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ("tests.kubesim_fixtures",)  # api

TYPE = "kubetide.io/profile-type"
HOST = "kubernetes.io/hostname"


def _app(name: str, ns: str = "shop", replicas: int = 3) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "replicas": replicas, "startup_s": 20,
            "requests": {"cpu": "500m", "memory": "512Mi"}, "demand": {"cpu": 1.0}}


def scenario_doc() -> dict[str, Any]:
    """Two big nodes the default scheduler prefers (least allocated), four small ones; two cpu-bound apps,
    one memory-bound app in `shop`, one app in `batch`."""
    return {
        "name": "placement", "start": "2026-01-05T00:00:00Z", "speed": 0, "resolution_s": 10,
        "zones": ["zone-a"],
        "node_groups": [{"name": "big", "cpu": 8, "memory": "32Gi", "nodes_per_zone": 2},
                        {"name": "small", "cpu": 4, "memory": "16Gi", "nodes_per_zone": 4}],
        "namespaces": ["shop", "batch"],
        "apps": [_app("cpu-a"), _app("cpu-b"), _app("mem-a"), _app("job", "batch", 2)],
    }


def anti(ptype: str, weight: int = 50) -> dict[str, Any]:
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": weight, "podAffinityTerm": {"topologyKey": HOST, "labelSelector": {
            "matchExpressions": [{"key": TYPE, "operator": "In", "values": [ptype]}]}}}]}}


def same_type_per_node(c: Cluster, apps: tuple[str, ...] = ("cpu-a", "cpu-b")) -> Counter[str]:
    return Counter(p.node_name for p in c.pods.values() if p.app in apps and p.node_name)


def roll_out(c: Cluster, hints: bool) -> None:
    """Change every `shop` Deployment's template: with the hints (type label + anti-affinity), or like
    `kubectl rollout restart` (an annotation only); then let the rollouts finish."""
    for app in ("cpu-a", "cpu-b", "mem-a"):
        rs = c.deployments[("shop", app)].rs
        assert rs is not None
        ptype = "memory-bound" if app.startswith("mem") else "cpu-bound"
        if hints:
            c.update_deployment_template("shop", app, labels={**rs.template_labels, TYPE: ptype}, annotations={},
                                         affinity=anti(ptype))
        else:
            c.update_deployment_template("shop", app, labels=dict(rs.template_labels),
                                         annotations={"kubectl.kubernetes.io/restartedAt": "now"}, affinity=None)
    c.advance(300)


def test_template_change_rolls_out_a_new_replicaset():
    c = Cluster(parse_scenario(scenario_doc()))
    dep = c.deployments[("shop", "cpu-a")]
    old_rs, old_pods = dep.rs, {p.name for p in c.pods.values() if p.app == "cpu-a"}
    assert old_rs is not None and len(old_pods) == 3
    rv, gen = dep.rv, dep.generation
    c.update_deployment_template("shop", "cpu-a", labels=dict(old_rs.template_labels), annotations={},
                                 affinity=None)
    assert (dep.rv, dep.generation, dep.rs) == (rv, gen, old_rs)  # unchanged template: nothing happens
    c.update_deployment_template("shop", "cpu-a", labels={**old_rs.template_labels, TYPE: "cpu-bound"},
                                 annotations={}, affinity=anti("cpu-bound"))
    assert dep.rs is not old_rs and dep.old_rs == [old_rs] and dep.generation == gen + 1
    pods = [p for p in c.pods.values() if p.app == "cpu-a"]
    assert len(pods) == 4  # maxSurge 25 % of 3 = 1 extra pod, maxUnavailable 0: no old pod goes yet
    c.advance(300)
    pods = [p for p in c.pods.values() if p.app == "cpu-a"]
    assert len(pods) == 3 and not {p.name for p in pods} & old_pods and all(p.ready for p in pods)
    assert all(p.labels[TYPE] == "cpu-bound" and p.affinity == anti("cpu-bound") for p in pods)
    assert all(p.labels["pod-template-hash"] == dep.rs.hash for p in pods)
    assert dep.old_rs == [] and old_rs.replicas == 0 and dep.status[:2] == (3, 3) and dep.status[3] == 3
    # the other apps were not touched
    assert all(p.labels.get(TYPE) is None for p in c.pods.values() if p.app != "cpu-a")


def test_preferred_anti_affinity_spreads_same_type_pods():
    """Without hints the default scores put cpu-bound pods together on the big nodes; with the same-type
    anti-affinity every cpu-bound pod gets a node of its own (six pods, six nodes)."""
    c = Cluster(parse_scenario(scenario_doc()))
    roll_out(c, hints=False)
    before = same_type_per_node(c)
    c2 = Cluster(parse_scenario(scenario_doc()))
    roll_out(c2, hints=True)
    after = same_type_per_node(c2)
    assert sum(before.values()) == sum(after.values()) == 6
    assert max(before.values()) >= 2
    assert max(after.values()) == 1, after


def test_anti_affinity_is_symmetric_and_ignores_other_namespaces():
    """An existing pod's preferred anti-affinity term that matches the incoming pod keeps it away too
    (the symmetric part of InterPodAffinity); a term only looks at pods of its own namespace."""
    c = Cluster(parse_scenario(scenario_doc()))
    rs = c.deployments[("shop", "cpu-a")].rs
    assert rs is not None
    # cpu-a pods carry a term against pods labelled team=x; cpu-b pods get that label (no term of their own)
    term = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": HOST, "labelSelector": {"matchLabels": {"team": "x"}}}}]}}
    c.update_deployment_template("shop", "cpu-a", labels=dict(rs.template_labels), annotations={}, affinity=term)
    c.advance(300)
    rs_b = c.deployments[("shop", "cpu-b")].rs
    assert rs_b is not None
    c.update_deployment_template("shop", "cpu-b", labels={**rs_b.template_labels, "team": "x"}, annotations={},
                                 affinity=None)
    c.advance(300)
    a_nodes = {p.node_name for p in c.pods.values() if p.app == "cpu-a"}
    b_nodes = {p.node_name for p in c.pods.values() if p.app == "cpu-b"}
    assert len(a_nodes) == 3 and not a_nodes & b_nodes, (a_nodes, b_nodes)
    # the same label in another namespace is not counted by shop's terms
    ctx = c._sched_ctx()
    job = next(p for p in c.pods.values() if p.app == "job")
    job.labels["team"] = "x"
    probe = next(p for p in c.pods.values() if p.app == "cpu-a")
    counts = ctx._selector_counts(probe.anti_terms[0].selector, probe.anti_terms[0].namespaces)
    assert counts.sum() == 3  # the three cpu-b pods of shop, not batch's job


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
async def sim():
    async with KubeSim(Cluster(parse_scenario(scenario_doc())), speed=0) as s:
        yield s


async def test_merge_patch_of_the_template_over_http(sim, api):
    apps = client.AppsV1Api(api)
    dep = (await apps.read_namespaced_deployment("cpu-a", "shop")).to_dict()
    rv = dep["metadata"]["resource_version"]
    patch = {"metadata": {"resourceVersion": rv}, "spec": {"template": {
        "metadata": {"labels": {TYPE: "cpu-bound"}}, "spec": {"affinity": anti("cpu-bound")}}}}
    out = await apps.patch_namespaced_deployment("cpu-a", "shop", patch, _content_type="application/merge-patch+json")
    assert out.spec.template.metadata.labels[TYPE] == "cpu-bound"
    assert out.spec.template.spec.affinity.pod_anti_affinity.preferred_during_scheduling_ignored_during_execution[
        0].weight == 50
    assert out.metadata.generation == dep["metadata"]["generation"] + 1
    assert out.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    # the same resourceVersion again: stale -> 409 Conflict, nothing changes
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment("cpu-a", "shop", patch, _content_type="application/merge-patch+json")
    assert exc.value.status == 409
    # labels that no longer match the selector: 422
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment("cpu-a", "shop", {"spec": {"template": {"metadata": {
            "labels": {"app": "other"}}}}}, _content_type="application/merge-patch+json")
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment("cpu-a", "shop", {"spec": {"template": {"spec": {
            "affinity": anti("cpu-bound", weight=0)}}}}, _content_type="application/merge-patch+json")
    assert exc.value.status == 422
    await sim.advance(300)
    pods = (await client.CoreV1Api(api).list_namespaced_pod("shop", label_selector=f"app=cpu-a,{TYPE}=cpu-bound"))
    assert len(pods.items) == 3
    assert all(p.spec.affinity.pod_anti_affinity is not None for p in pods.items)
    rs = await apps.list_namespaced_replica_set("shop", label_selector="app=cpu-a")
    assert sorted((r.spec.replicas, r.metadata.annotations["deployment.kubernetes.io/revision"])
                  for r in rs.items) == [(0, "1"), (3, "2")]


async def test_namespace_labels_can_be_patched(sim, api):
    core = client.CoreV1Api(api)
    await core.patch_namespace("shop", {"metadata": {"labels": {"kubetide.io/placement-hints": "true"}}},
                               _content_type="application/merge-patch+json")
    ns = await core.list_namespace(label_selector="kubetide.io/placement-hints=true")
    assert [n.metadata.name for n in ns.items] == ["shop"]
    assert (await core.read_namespace("shop")).metadata.labels["kubernetes.io/metadata.name"] == "shop"
