"""Least privilege, enforced: kubesim authorizes every request with the ClusterRole rules parsed from
deploy/actuator.yaml and deploy/collector.yaml (verb + apiGroup + resource[/subresource] matching as
Kubernetes RBAC does), one bearer token per ServiceAccount.

- the actuator works with its role (evict, scale + marker annotation) and every call it makes is allowed;
- beyond it (deleting a pod directly, reading metrics.k8s.io, ...) it gets 403;
- an actuator running with a role that lacks what it needs records ``failed: forbidden`` and goes on;
- the collector's role: get/list (watch) allowed, eviction/delete/scale forbidden.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubesim.kubeconfig import write_kubeconfig
from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.codec import encode
from kubetide.topics import ACTIONS, DECISIONS_AUTOSCALE
from tests.test_actuator import decision, outcome_of, pod_on, send, started
from tests.test_actuator_support import TopicReader, running
from workers.actuator import RBAC_RULES, Actuator, ActuatorSettings
from workers.kube import new_api_client

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ("tests.test_actuator_support",)  # fixtures: kafka, producer

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ACTUATOR_TOKEN, COLLECTOR_TOKEN = "token-actuator", "token-collector"
ACTUATOR_USER = "system:serviceaccount:kubetide:kubetide-actuator"
COLLECTOR_USER = "system:serviceaccount:kubetide:kubetide-collector"


# ------------------------------------------------------------------ RBAC, the Kubernetes way

def cluster_role_rules(path: Path, name: str) -> list[dict]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == name:
            return list(doc.get("rules") or [])
    raise AssertionError(f"no ClusterRole {name} in {path}")


def missing_rules(rules: list[dict], needed: tuple[tuple[str, str, tuple[str, ...]], ...]) -> list[dict]:
    """The rules of ``needed`` (apiGroup, resource, verbs) that ``rules`` do not grant."""
    out = []
    for group, resource, verbs in needed:
        lacking = [v for v in verbs if not any(rule_allows(r, v, group, resource, None) for r in rules)]
        if lacking:
            out.append({"apiGroups": [group], "resources": [resource], "verbs": lacking})
    return out


def rule_allows(rule: dict, verb: str, group: str, resource: str, name: str | None) -> bool:
    def has(values, v):
        return "*" in values or v in values

    resources = rule.get("resources") or []
    # "*" is every resource and subresource, "*/scale" the scale subresource of any resource
    res_ok = "*" in resources or resource in resources or (
        "/" in resource and f"*/{resource.split('/', 1)[1]}" in resources)
    names = rule.get("resourceNames")
    return (has(rule.get("apiGroups") or [], group) and res_ok and has(rule.get("verbs") or [], verb)
            and (not names or (name is not None and name in names)))


def request_attributes(method: str, path: str) -> tuple[str, str, str, str | None] | None:
    """(verb, apiGroup, resource[/subresource], name) of a resource request; None for discovery paths."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts and parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None  # /version, /api, /apis: non-resource URLs (system:discovery)
    if not rest:
        return None  # /api/v1, /apis/g/v: discovery
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    verb = {"get": "get" if name else "list", "patch": "patch", "update": "update", "delete": "delete",
            "create": "create"}.get(method, method)
    return verb, group, resource, name


class Rbac:
    """kubesim's authenticate/authorize hooks for a set of (token, user, rules)."""

    def __init__(self, roles: dict[str, tuple[str, list[dict]]]) -> None:
        self.users = {tok: user for tok, (user, _) in roles.items()}
        self.rules = {user: rules for user, rules in roles.values()}
        self.log: list[tuple[str, str, str, bool]] = []  # (user, verb, path, allowed)

    def authenticate(self, token: str) -> str | None:
        return self.users.get(token)

    def authorize(self, user: str, verb: str, path: str, ns: str | None) -> bool:
        attrs = request_attributes(verb, path)
        if attrs is None:
            ok = True
        else:
            v, group, resource, name = attrs
            # a GET of a collection is list or watch; the path alone does not tell them apart
            verbs = ("list", "watch") if v == "list" else (v,)
            ok = any(rule_allows(r, x, group, resource, name) for r in self.rules.get(user, []) for x in verbs)
        self.log.append((user, verb, path, ok))
        return ok

    def denied(self, user: str) -> list[tuple[str, str]]:
        return [(v, p) for u, v, p, ok in self.log if u == user and not ok]


def actuator_rules() -> list[dict]:
    """Exactly the actuator's ClusterRole from deploy/ (nothing added)."""
    return cluster_role_rules(DEPLOY / "actuator.yaml", "kubetide-actuator")


@pytest.fixture
async def rbac_sim(tmp_path):
    rbac = Rbac({ACTUATOR_TOKEN: (ACTUATOR_USER, actuator_rules()),
                 COLLECTOR_TOKEN: (COLLECTOR_USER, cluster_role_rules(DEPLOY / "collector.yaml",
                                                                      "kubetide-collector"))})
    async with KubeSim("demo", speed=0, retry_after_s=1, token=ACTUATOR_TOKEN, authenticate=rbac.authenticate,
                       authorize=rbac.authorize) as sim:
        sim.rbac = rbac
        sim.collector_kubeconfig = write_kubeconfig(tmp_path / "collector.kubeconfig", sim.url, COLLECTOR_TOKEN)
        yield sim


@pytest.fixture
async def actuator_api(rbac_sim):
    a = await new_api_client(str(rbac_sim.kubeconfig_path))
    try:
        yield a
    finally:
        await a.close()


@pytest.fixture
async def collector_api(rbac_sim):
    a = await new_api_client(str(rbac_sim.collector_kubeconfig))
    try:
        yield a
    finally:
        await a.close()


def scale_decision(sim, app: str, desired: int, ns: str = "shop") -> m.AutoscaleDecision:
    t = sim.cluster.t
    return m.AutoscaleDecision(id=m.decision_id("test", uuid.uuid4().hex), made_at=t, expires_at=t + 300,
                               strategy="test", reason="test", trigger="test",
                               workload=m.WorkloadRef(namespace=ns, kind="Deployment", name=app),
                               current_replicas=sim.cluster.deployments[(ns, app)].replicas,
                               desired_replicas=desired)


async def status_of(coro) -> int:
    try:
        await coro
    except ApiException as exc:
        return exc.status
    return 200


# ------------------------------------------------------------------ tests

def test_rbac_matcher():
    assert request_attributes("create", "/api/v1/namespaces/shop/pods/p1/eviction") == (
        "create", "", "pods/eviction", "p1")
    assert request_attributes("get", "/api/v1/namespaces/shop/pods") == ("list", "", "pods", None)
    assert request_attributes("get", "/api/v1/namespaces/shop") == ("get", "", "namespaces", "shop")
    assert request_attributes("get", "/api/v1/nodes") == ("list", "", "nodes", None)
    assert request_attributes("update", "/apis/apps/v1/namespaces/shop/deployments/web/scale") == (
        "update", "apps", "deployments/scale", "web")
    assert request_attributes("get", "/version") is None and request_attributes("get", "/apis/apps/v1") is None
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    assert rule_allows(rule, "get", "", "pods", "x")
    assert not rule_allows(rule, "get", "", "pods/eviction", "x")  # a subresource is its own resource
    assert not rule_allows(rule, "get", "apps", "pods", "x") and not rule_allows(rule, "delete", "", "pods", "x")
    assert rule_allows({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, "delete", "apps", "deployments", "x")
    assert not rule_allows({**rule, "resourceNames": ["a"]}, "get", "", "pods", "b")


def test_actuator_manifest_grants_what_the_actuator_needs():
    rules = cluster_role_rules(DEPLOY / "actuator.yaml", "kubetide-actuator")
    assert missing_rules(rules, RBAC_RULES) == []


def test_actuator_manifest_is_least_privilege():
    rules = cluster_role_rules(DEPLOY / "actuator.yaml", "kubetide-actuator")
    for verb, group, resource in (("delete", "", "pods"), ("create", "", "pods"), ("list", "", "secrets"),
                                  ("get", "", "secrets"), ("update", "apps", "deployments"),
                                  ("delete", "apps", "deployments"), ("watch", "", "pods")):
        assert not any(rule_allows(r, verb, group, resource, "x") for r in rules), (verb, group, resource)
    assert not any("*" in (r.get("verbs") or []) + (r.get("resources") or []) + (r.get("apiGroups") or [])
                   for r in rules)


async def test_actuator_works_with_exactly_its_role(rbac_sim, actuator_api, kafka, producer):
    sim, rbac = rbac_sim, rbac_sim.rbac
    act = Actuator(actuator_api, producer, kafka, ActuatorSettings(zone_max_skew=5, opt_in=True), embedded=True)
    # opt-in mode reads the namespace; kubesim's carry no kubetide label, so nothing is touched there ...
    worker = pod_on(sim, "worker", "node-a-1")
    d_opt = decision(sim, worker)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d_opt)
        (a,) = await actions.wait_for(outcome_of(d_opt.id))
        assert (a.outcome, a.reason) == ("skipped", "not-opted-in")
    # ... and with opt-in off: evict (pod list for the zone guard, PDB list, node list) and scale (+ marker).
    act = Actuator(actuator_api, producer, kafka, ActuatorSettings(zone_max_skew=5), embedded=True)
    d_evict, d_scale = decision(sim, worker), scale_decision(sim, "web", 6)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d_evict)
        await producer.send_and_wait(DECISIONS_AUTOSCALE, encode(d_scale), key=b"shop/web")
        (e,) = await actions.wait_for(outcome_of(d_evict.id))
        (s,) = await actions.wait_for(outcome_of(d_scale.id))
    assert (e.outcome, e.reason) == ("applied", "evicted")
    assert (s.outcome, s.reason) == ("applied", "scaled") and "marker" not in s.message
    assert sim.cluster.deployments[("shop", "web")].annotations["kubetide.io/last-decision"] == d_scale.id
    assert rbac.denied(ACTUATOR_USER) == []
    paths = {p for u, _, p, _ in rbac.log if u == ACTUATOR_USER}
    assert any(p.endswith("/eviction") for p in paths) and any(p.endswith("/scale") for p in paths)
    assert any("poddisruptionbudgets" in p for p in paths) and "/api/v1/namespaces/batch/pods" in paths

    # beyond the role: 403
    core = client.CoreV1Api(actuator_api)
    other = pod_on(sim, "api")
    assert await status_of(core.delete_namespaced_pod(other.name, other.namespace)) == 403
    assert await status_of(core.list_namespaced_secret("shop")) == 403
    assert await status_of(client.AppsV1Api(actuator_api).delete_namespaced_deployment("web", "shop")) == 403
    assert await status_of(client.CustomObjectsApi(actuator_api).list_cluster_custom_object(
        "metrics.k8s.io", "v1beta1", "pods")) == 403
    assert (other.namespace, other.name) in sim.cluster.pods


async def test_forbidden_is_failed_forbidden_and_the_actuator_goes_on(rbac_sim, collector_api, kafka, producer):
    """An actuator with the collector's (read-only) credentials: every write is 403 → failed: forbidden."""
    sim = rbac_sim
    act = Actuator(collector_api, producer, kafka, ActuatorSettings(), embedded=True)
    d1, d2 = decision(sim, pod_on(sim, "worker", "node-a-1")), decision(sim, pod_on(sim, "web"))
    d3 = scale_decision(sim, "web", 7)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run) as task:
        await started(act)
        await send(producer, d1)
        await producer.send_and_wait(DECISIONS_AUTOSCALE, encode(d3), key=b"shop/web")
        await send(producer, d2)
        results = [(await actions.wait_for(outcome_of(d.id)))[0] for d in (d1, d3, d2)]
        assert not task.done()
    for r in results:
        assert (r.outcome, r.reason, r.http_status) == ("failed", "forbidden", 403), r
    assert sim.cluster.counters["evictions"] == 0 and sim.cluster.deployments[("shop", "web")].replicas == 5
    assert sim.rbac.denied(COLLECTOR_USER)


async def test_collector_role_reads_but_never_writes(rbac_sim, collector_api):
    sim = rbac_sim
    core, apps = client.CoreV1Api(collector_api), client.AppsV1Api(collector_api)
    pods = await core.list_pod_for_all_namespaces()
    assert len(pods.items) == len(sim.cluster.pods)
    await core.list_node()
    await core.list_namespace()
    await apps.list_deployment_for_all_namespaces()
    await client.PolicyV1Api(collector_api).list_pod_disruption_budget_for_all_namespaces()
    await client.CustomObjectsApi(collector_api).list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert sim.rbac.denied(COLLECTOR_USER) == []
    pod = pod_on(sim, "worker", "node-a-1")
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.name, namespace=pod.namespace))
    assert await status_of(core.create_namespaced_pod_eviction(pod.name, pod.namespace, body)) == 403
    assert await status_of(core.delete_namespaced_pod(pod.name, pod.namespace)) == 403
    assert await status_of(core.patch_node("node-a-1", {"spec": {"unschedulable": True}})) == 403
    assert await status_of(apps.read_namespaced_deployment_scale("web", "shop")) == 403
    assert (pod.namespace, pod.name) in sim.cluster.pods and sim.cluster.counters["evictions"] == 0


async def test_unknown_token_is_401(rbac_sim, tmp_path):
    path = write_kubeconfig(tmp_path / "bad.kubeconfig", rbac_sim.url, "nope")
    a = await new_api_client(str(path))
    try:
        assert await status_of(client.CoreV1Api(a).list_node()) == 401
    finally:
        await a.close()
