"""kubesim over real HTTP with kubernetes_asyncio (configured from the generated kubeconfig)."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubesim.scenario import PDBSpec
from kubetide.quantity import parse_quantity

try:  # the lead's conftest may import these too; both paths give the same fixtures
    from tests.kubesim_fixtures import kubesim, kubesim_api
except ImportError:  # pragma: no cover - tests/ is not a package
    from kubesim_fixtures import kubesim, kubesim_api  # noqa: F401

HOT = "node-a-1"


def _eviction(name: str, ns: str) -> client.V1Eviction:
    return client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))


async def _pods(api, ns: str, app: str) -> list:
    v1 = client.CoreV1Api(api)
    return (await v1.list_namespaced_pod(ns, label_selector=f"app={app}")).items


async def _raw(sim, method: str, path: str, body=None, token: str | None = "t"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.request(method, sim.url + path, json=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def test_discovery_version_and_auth(kubesim, kubesim_api):
    v = await client.VersionApi(kubesim_api).get_code()
    assert v.major == "1" and v.git_version.endswith("kubesim")
    groups = await client.ApisApi(kubesim_api).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {"apps", "policy", "metrics.k8s.io"} <= names
    res = await client.CoreV1Api(kubesim_api).get_api_resources()
    assert {"pods", "nodes", "namespaces", "pods/eviction"} <= {r.name for r in res.resources}
    status, _, body = await _raw(kubesim, "GET", "/api/v1/pods", token=None)
    assert status == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    status, _, body = await _raw(kubesim, "GET", "/api/v1/nosuchthing")
    assert status == 404 and body["kind"] == "Status" and body["status"] == "Failure"


async def test_list_and_get_objects(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    apps = client.AppsV1Api(kubesim_api)
    policy = client.PolicyV1Api(kubesim_api)

    nss = {n.metadata.name for n in (await v1.list_namespace()).items}
    assert {"default", "kube-system", "shop", "batch"} <= nss
    nodes = (await v1.list_node()).items
    assert len(nodes) == 6
    assert {n.metadata.labels["topology.kubernetes.io/zone"] for n in nodes} == {"zone-a", "zone-b", "zone-c"}
    node = await v1.read_node(HOT)
    assert parse_quantity(node.status.allocatable["cpu"]) == 8

    pods = await v1.list_pod_for_all_namespaces()
    assert int(pods.metadata.resource_version) == kubesim.cluster.rv
    assert len(pods.items) == len(kubesim.cluster.pods) == 25
    assert all(p.status.phase == "Running" for p in pods.items)
    on_hot = await v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={HOT}")
    assert {p.metadata.namespace for p in on_hot.items} >= {"kube-system", "batch"}
    ks = {p.metadata.owner_references[0].kind for p in on_hot.items if p.metadata.namespace == "kube-system"}
    assert ks == {"DaemonSet", "ReplicaSet"}  # kube-proxy and metrics-server

    web = await _pods(kubesim_api, "shop", "web")
    assert len(web) == 5
    pod = await v1.read_namespaced_pod(web[0].metadata.name, "shop")
    assert pod.metadata.labels["app"] == "web" and "pod-template-hash" in pod.metadata.labels
    owner = pod.metadata.owner_references[0]
    assert owner.kind == "ReplicaSet" and owner.controller
    rs = await apps.read_namespaced_replica_set(owner.name, "shop")
    assert rs.metadata.name == f"web-{pod.metadata.labels['pod-template-hash']}"
    assert rs.metadata.owner_references[0].kind == "Deployment"
    assert rs.metadata.owner_references[0].name == "web"
    dep = await apps.read_namespaced_deployment("web", "shop")
    assert dep.spec.replicas == 5 and dep.status.ready_replicas == 5
    assert len((await apps.list_deployment_for_all_namespaces()).items) == 6
    assert len((await apps.list_namespaced_replica_set("batch")).items) == 2

    pdbs = (await policy.list_pod_disruption_budget_for_all_namespaces()).items
    by = {p.metadata.name: p for p in pdbs}
    assert set(by) == {"worker", "web", "api", "cache", "reports"}
    assert by["cache"].status.disruptions_allowed == 0
    assert by["cache"].status.current_healthy == by["cache"].status.desired_healthy == 3
    assert by["web"].status.disruptions_allowed == 2 and by["web"].status.expected_pods == 5
    assert by["worker"].status.observed_generation == by["worker"].metadata.generation
    shop = await policy.list_namespaced_pod_disruption_budget("shop")
    assert {p.metadata.name for p in shop.items} == {"web", "api", "cache"}
    one = await policy.read_namespaced_pod_disruption_budget("api", "shop")
    assert one.spec.max_unavailable == "25%" and one.status.disruptions_allowed == 1

    with pytest.raises(ApiException) as ei:
        await v1.read_namespaced_pod("nope", "shop")
    assert ei.value.status == 404
    body = json.loads(ei.value.body)
    assert body["reason"] == "NotFound" and body["message"] == 'pods "nope" not found'


async def test_pagination(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    first = await v1.list_pod_for_all_namespaces(limit=10)
    assert len(first.items) == 10 and first.metadata._continue
    names = [p.metadata.name for p in first.items]
    token = first.metadata._continue
    while token:
        page = await v1.list_pod_for_all_namespaces(limit=10, _continue=token)
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
    assert len(names) == len(set(names)) == 25


async def test_date_header_is_virtual_time(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    _, code, headers = await v1.list_node_with_http_info()
    assert code == 200
    assert parsedate_to_datetime(headers["Date"]) == kubesim.cluster.now
    assert kubesim.cluster.now.isoformat().startswith("2024-06-03T10:00:00")
    await kubesim.advance(3600)
    _, _, headers = await v1.list_node_with_http_info()
    assert parsedate_to_datetime(headers["Date"]).isoformat() == "2024-06-03T11:00:00+00:00"


async def test_watch_added_modified_deleted(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    rv = (await v1.list_namespaced_pod("shop")).metadata.resource_version
    victim = (await _pods(kubesim_api, "shop", "web"))[0].metadata.name
    await v1.create_namespaced_pod_eviction(victim, "shop", _eviction(victim, "shop"))
    await kubesim.advance(60)
    events = []
    async with watch.Watch() as w:
        async for e in w.stream(v1.list_namespaced_pod, "shop", label_selector="app=web",
                                resource_version=rv, timeout_seconds=1):
            obj = e["object"]
            ready = any(c.type == "Ready" and c.status == "True" for c in obj.status.conditions or [])
            events.append((e["type"], obj.metadata.name, obj.spec.node_name, ready))
    types = [t for t, *_ in events]
    assert types[0] == "DELETED" and events[0][1] == victim
    assert types[1] == "ADDED" and events[1][2] is None  # created Pending, not yet bound
    new = events[1][1]
    assert ("MODIFIED", new) in [(t, n) for t, n, *_ in events[2:]]
    assert events[-1][1] == new and events[-1][3] is True  # Ready after its start-up delay
    assert all(n.startswith("web-") for _, n, *_ in events)  # label selector honoured


async def test_watch_from_zero_lists_then_streams_and_bookmarks(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    kubesim.bookmark_interval_s = 0.2
    seen = []
    async with watch.Watch() as w:
        async for e in w.stream(v1.list_node, allow_watch_bookmarks=True, timeout_seconds=1):
            seen.append(e["type"])
            if e["type"] == "ADDED" and len(seen) == 6:
                await v1.patch_node("node-b-2", {"metadata": {"labels": {"team": "x"}}})
    assert seen[:6] == ["ADDED"] * 6
    assert "MODIFIED" in seen and "BOOKMARK" in seen
    node = await v1.read_node("node-b-2")
    assert node.metadata.labels["team"] == "x"


async def test_watch_410_after_compaction(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    old_rv = (await v1.list_namespaced_pod("shop")).metadata.resource_version
    await v1.patch_node("node-c-1", {"metadata": {"annotations": {"x": "1"}}})
    status, _, body = await _raw(kubesim, "POST", "/kubesim/v1/compact", {})
    assert status == 200 and body["compacted_rv"] == kubesim.cluster.rv
    # raw stream: an ERROR event carrying a 410 Expired Status, then the stream closes
    async with aiohttp.ClientSession() as s, s.get(
        f"{kubesim.url}/api/v1/namespaces/shop/pods?watch=true&resourceVersion={old_rv}",
        headers={"Authorization": "Bearer t"},
    ) as r:
        assert r.status == 200
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    st = lines[0]["object"]
    assert st["kind"] == "Status" and st["code"] == 410 and st["reason"] == "Expired"
    assert st["message"].startswith(f"too old resource version: {old_rv} (")
    # kubernetes_asyncio turns it into ApiException(410) -> the caller relists
    with pytest.raises(ApiException) as ei:
        async with watch.Watch() as w:
            async for _ in w.stream(v1.list_namespaced_pod, "shop", resource_version=old_rv, timeout_seconds=5):
                pass
    assert ei.value.status == 410
    # relist + watch from the fresh resourceVersion works
    fresh = (await v1.list_namespaced_pod("shop")).metadata.resource_version
    async with watch.Watch() as w:
        got = [e async for e in w.stream(v1.list_namespaced_pod, "shop", resource_version=fresh,
                                         timeout_seconds=0.3)]
    assert got == []


async def test_eviction_moves_hot_pod_and_respects_startup(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    policy = client.PolicyV1Api(kubesim_api)
    c = kubesim.cluster
    assert c.node_cpu_percent()[HOT] >= 85
    hot_before = c.nodes[HOT].usage_cpu
    before = {p.metadata.name for p in await _pods(kubesim_api, "batch", "worker")}
    victim = next(p for p in await _pods(kubesim_api, "batch", "worker") if p.spec.node_name == HOT)
    name = victim.metadata.name
    resp, code, _ = await v1.create_namespaced_pod_eviction_with_http_info(
        name, "batch", _eviction(name, "batch"))
    assert code == 201
    assert resp.kind == "Status"
    pdb = await policy.read_namespaced_pod_disruption_budget("worker", "batch")
    assert pdb.status.disruptions_allowed == 0
    with pytest.raises(ApiException) as ei:
        await v1.read_namespaced_pod(name, "batch")
    assert ei.value.status == 404

    after = await _pods(kubesim_api, "batch", "worker")
    new = [p for p in after if p.metadata.name not in before]
    assert len(after) == 4 and len(new) == 1
    repl = new[0]
    assert repl.metadata.uid != victim.metadata.uid
    assert repl.spec.node_name and repl.spec.node_name != HOT
    assert repl.status.phase == "Running"
    ready = {c.type: c.status for c in repl.status.conditions}
    assert ready["Ready"] == "False" and ready["PodScheduled"] == "True"

    startup = c.deployments[("batch", "worker")].spec.startup_s  # 45 s in the demo
    await kubesim.advance(startup - 10)
    p = await v1.read_namespaced_pod(repl.metadata.name, "batch")
    assert not p.status.container_statuses[0].ready
    await kubesim.advance(10)
    p = await v1.read_namespaced_pod(repl.metadata.name, "batch")
    assert p.status.container_statuses[0].ready
    assert {c.type: c.status for c in p.status.conditions}["Ready"] == "True"
    pdb = await policy.read_namespaced_pod_disruption_budget("worker", "batch")
    assert pdb.status.disruptions_allowed == 1
    assert c.nodes[HOT].usage_cpu < hot_before - 1.0  # the load really moved
    assert c.counters["evictions"] == 1


async def test_eviction_refused_by_zero_budget_pdb(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    name = (await _pods(kubesim_api, "shop", "cache"))[0].metadata.name
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod_eviction(name, "shop", _eviction(name, "shop"))
    e = ei.value
    assert e.status == 429
    assert int(e.headers["Retry-After"]) > 0
    body = json.loads(e.body)
    assert body["kind"] == "Status" and body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget cache needs 3 healthy pods and has 3 currently",
    }]
    assert (await v1.read_namespaced_pod(name, "shop")).status.phase == "Running"
    assert kubesim.cluster.counters["pdb_refusals"] == 1


async def test_eviction_missing_pod_and_bad_body(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod_eviction("ghost", "shop", _eviction("ghost", "shop"))
    assert ei.value.status == 404
    assert json.loads(ei.value.body)["reason"] == "NotFound"
    name = (await _pods(kubesim_api, "shop", "web"))[0].metadata.name
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod_eviction(name, "shop", _eviction("other", "shop"))
    assert ei.value.status == 400


async def test_eviction_with_two_pdbs_is_500(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    kubesim.cluster.add_pdb("shop", PDBSpec("api-extra", min_available=1), {"app": "api"})
    name = (await _pods(kubesim_api, "shop", "api"))[0].metadata.name
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod_eviction(name, "shop", _eviction(name, "shop"))
    assert ei.value.status == 500
    body = json.loads(ei.value.body)
    assert body["message"] == ("This pod has more than one PodDisruptionBudget, which the eviction "
                               "subresource does not support.")
    assert (await v1.read_namespaced_pod(name, "shop")).metadata.name == name


async def test_pending_pod_evicted_without_budget_check(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    apps = client.AppsV1Api(kubesim_api)
    policy = client.PolicyV1Api(kubesim_api)
    for n in kubesim.cluster.nodes:
        await v1.patch_node(n, {"spec": {"unschedulable": True}})
    await apps.patch_namespaced_deployment_scale("reports", "batch", {"spec": {"replicas": 3}})
    pending = [p for p in await _pods(kubesim_api, "batch", "reports") if p.status.phase == "Pending"]
    assert len(pending) == 1
    assert pending[0].status.conditions[0].reason == "Unschedulable"
    pdb = await policy.read_namespaced_pod_disruption_budget("reports", "batch")
    assert pdb.status.disruptions_allowed == 0  # 50 % of 3 -> needs 2, has 2
    name = pending[0].metadata.name
    _, code, _ = await v1.create_namespaced_pod_eviction_with_http_info(name, "batch", _eviction(name, "batch"))
    assert code == 201
    pods = await _pods(kubesim_api, "batch", "reports")
    assert name not in {p.metadata.name for p in pods} and len(pods) == 3
    # uncordon: the replacement gets scheduled on the next reconcile
    await v1.patch_node("node-b-2", [{"op": "replace", "path": "/spec/unschedulable", "value": False}])
    pods = await _pods(kubesim_api, "batch", "reports")
    assert all(p.spec.node_name for p in pods)
    assert any(p.spec.node_name == "node-b-2" for p in pods)


async def test_taints_keep_pods_off(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    apps = client.AppsV1Api(kubesim_api)
    for n in kubesim.cluster.nodes:
        if n != "node-c-2":
            await v1.patch_node(n, {"spec": {"taints": [{"key": "drain", "value": "1", "effect": "NoSchedule"}]}})
    node = await v1.read_node("node-a-2")
    assert node.spec.taints[0].key == "drain"
    await apps.patch_namespaced_deployment_scale("api", "shop", {"spec": {"replicas": 6}})
    new = [p for p in await _pods(kubesim_api, "shop", "api") if p.status.phase == "Running"
           and not p.status.container_statuses[0].ready]
    assert len(new) == 2 and {p.spec.node_name for p in new} == {"node-c-2"}


async def test_scale_subresource_and_deletion_cost(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    apps = client.AppsV1Api(kubesim_api)
    scale = await apps.read_namespaced_deployment_scale("web", "shop")
    assert scale.spec.replicas == 5 and scale.status.replicas == 5 and scale.status.selector == "app=web"

    old = sorted(p.metadata.name for p in await _pods(kubesim_api, "shop", "web"))
    # scale up via PUT, then down at once: the new (not ready) pods go first
    scale.spec.replicas = 7
    await apps.replace_namespaced_deployment_scale("web", "shop", scale)
    assert len(await _pods(kubesim_api, "shop", "web")) == 7
    dep = await apps.read_namespaced_deployment("web", "shop")
    assert dep.spec.replicas == 7 and dep.metadata.generation == 2
    await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 5}})
    assert sorted(p.metadata.name for p in await _pods(kubesim_api, "shop", "web")) == old

    # a stale resourceVersion on PUT is a 409 Conflict
    scale.spec.replicas = 4
    with pytest.raises(ApiException) as ei:
        await apps.replace_namespaced_deployment_scale("web", "shop", scale)
    assert ei.value.status == 409

    # deletion cost: lowest cost first
    costs = {old[0]: "100", old[1]: "-50", old[2]: "10", old[3]: "200", old[4]: "0"}
    for name, cost in costs.items():
        await v1.patch_namespaced_pod(
            name, "shop", {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": cost}}})
    await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 3}})
    left = {p.metadata.name for p in await _pods(kubesim_api, "shop", "web")}
    assert left == {old[0], old[2], old[3]}
    await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 2}})
    left = {p.metadata.name for p in await _pods(kubesim_api, "shop", "web")}
    assert left == {old[0], old[3]}
    with pytest.raises(ApiException) as ei:
        await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": -1}})
    assert ei.value.status == 422


async def test_metrics_api(kubesim, kubesim_api):
    co = client.CustomObjectsApi(kubesim_api)
    c = kubesim.cluster
    await kubesim.advance(30)
    nodes = await co.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert nodes["kind"] == "NodeMetricsList" and len(nodes["items"]) == 6
    pods = await co.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods")
    assert len(pods["items"]) == len(c.pods)
    node_cpu = {n["metadata"]["name"]: parse_quantity(n["usage"]["cpu"]) for n in nodes["items"]}
    node_mem = {n["metadata"]["name"]: parse_quantity(n["usage"]["memory"]) for n in nodes["items"]}
    for item in nodes["items"]:
        assert item["window"] == "10s" and item["timestamp"] == "2024-06-03T10:00:30Z"
    sum_cpu = dict.fromkeys(node_cpu, 0.0)
    sum_mem = dict.fromkeys(node_cpu, 0.0)
    for pm in pods["items"]:
        pod = c.pods[(pm["metadata"]["namespace"], pm["metadata"]["name"])]
        sum_cpu[pod.node_name] += sum(parse_quantity(x["usage"]["cpu"]) for x in pm["containers"])
        sum_mem[pod.node_name] += sum(parse_quantity(x["usage"]["memory"]) for x in pm["containers"])
    for n in node_cpu:
        assert node_cpu[n] == pytest.approx(sum_cpu[n] + c.scenario.overhead_cpu, abs=1e-6)
        assert node_mem[n] == pytest.approx(sum_mem[n] + c.scenario.overhead_memory, abs=8 * 1024)
    pct = {n: 100 * v / 8 for n, v in node_cpu.items()}
    assert pct[HOT] >= 85
    assert sum(1 for n, v in pct.items() if n != HOT and v < 50) == 5
    one = await co.get_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes", HOT)
    assert one["metadata"]["name"] == HOT
    shop = await co.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "shop", "pods",
                                                  label_selector="app=cache")
    assert len(shop["items"]) == 3
    assert all(pm["metadata"]["namespace"] == "shop" for pm in shop["items"])


async def test_control_api(kubesim):
    status, _, st = await _raw(kubesim, "GET", "/kubesim/v1/status", token=None)
    assert status == 200
    assert st["virtual_time"] == "2024-06-03T10:00:00Z" and st["tick"] == 0
    hot = next(n for n in st["nodes"] if n["name"] == HOT)
    assert hot["cpu_usage_cores"] / hot["cpu_allocatable"] >= 0.85
    assert hot["cpu_requested"] == max(n["cpu_requested"] for n in st["nodes"])
    assert st["cpu_usage_pct_spread"]["max_minus_min"] > 40
    assert st["counts"]["pods_running"] == 25 and st["counts"]["pods_pending"] == 0
    status, _, body = await _raw(kubesim, "POST", "/kubesim/v1/clock", {"advance_s": 120})
    assert status == 200 and body["virtual_time"] == "2024-06-03T10:02:00Z" and body["tick"] == 12
    status, _, body = await _raw(kubesim, "POST", "/kubesim/v1/clock", {"pause": True})
    assert body["paused"] is True
    status, _, body = await _raw(kubesim, "POST", "/kubesim/v1/clock", {"advance_s": "soon"})
    assert status == 400 and body["kind"] == "Status"


async def test_delete_pod_is_recreated_and_field_selector_watch(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    rv = (await v1.list_pod_for_all_namespaces()).metadata.resource_version
    victim = next(p for p in await _pods(kubesim_api, "shop", "api"))
    node = victim.spec.node_name
    deleted = await v1.delete_namespaced_pod(victim.metadata.name, "shop")
    assert deleted.metadata.name == victim.metadata.name and deleted.metadata.deletion_timestamp
    assert len(await _pods(kubesim_api, "shop", "api")) == 4
    events = []
    async with watch.Watch() as w:
        async for e in w.stream(v1.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}",
                                resource_version=rv, timeout_seconds=0.5):
            events.append((e["type"], e["object"].metadata.name, e["object"].spec.node_name))
    assert events[0] == ("DELETED", victim.metadata.name, node)
    # the replacement appears (as ADDED) only if it was bound to this node
    assert all(n == node for *_, n in events)


async def test_continue_token_expires_after_compaction(kubesim, kubesim_api):
    v1 = client.CoreV1Api(kubesim_api)
    first = await v1.list_pod_for_all_namespaces(limit=5)
    await v1.patch_node("node-c-1", {"metadata": {"labels": {"x": "y"}}})
    kubesim.compact()
    with pytest.raises(ApiException) as ei:
        await v1.list_pod_for_all_namespaces(limit=5, _continue=first.metadata._continue)
    assert ei.value.status == 410 and json.loads(ei.value.body)["reason"] == "Expired"
