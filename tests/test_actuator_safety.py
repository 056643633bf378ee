"""Safe actuation: keyed rate limits, run-time kill switch, disruption ledger, zone guard, opt-in
mode, the scale handler. Real embedded broker, kubesim over HTTP, no mocks; plus unit tests of the
ledger and the rate limiter."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.codec import encode
from kubetide.labels import selector_matches
from kubetide.topics import ACTIONS, DECISIONS_AUTOSCALE
from tests.test_actuator import decision, outcome_of, pod_on, send, started
from tests.test_actuator_support import TopicReader, running
from workers.actuator import Actuator, ActuatorSettings
from workers.kube import new_api_client
from workers.ledger import DisruptionLedger, skew_after_eviction, zone_constraint, zone_skew
from workers.ratelimit import Bucket, KeyedLimiter, Limit

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ("tests.test_actuator_support", "tests.kubesim_fixtures")  # kafka, producer, api

# No keyed limits, no ledger budgets, no zone guard: each test turns on what it tests.
OFF = dict(node_evictions_per_minute=0, namespace_evictions_per_minute=0, workload_evictions_per_minute=0,
           budget_per_workload=0, budget_per_zone=0, zone_guard=False)


@pytest.fixture
async def sim():
    async with KubeSim("demo", speed=0, retry_after_s=1) as s:
        yield s


def settings(**over) -> ActuatorSettings:
    return ActuatorSettings(**{**OFF, **over})


def scale_decision(sim, app: str, desired: int, ns: str = "shop", ttl: float = 300) -> m.AutoscaleDecision:
    t = sim.cluster.t
    dep = sim.cluster.deployments[(ns, app)]
    return m.AutoscaleDecision(id=m.decision_id("test", uuid.uuid4().hex), made_at=t, expires_at=t + ttl,
                               strategy="test", reason="test", trigger="test",
                               workload=m.WorkloadRef(namespace=ns, kind="Deployment", name=app),
                               current_replicas=dep.replicas, desired_replicas=desired)


async def send_scale(producer, d: m.AutoscaleDecision) -> None:
    await producer.send_and_wait(DECISIONS_AUTOSCALE, encode(d), key=d.workload.key.encode())


# ------------------------------------------------------------------ over HTTP + broker

async def test_keyed_rate_limit_skips_then_retries(sim, api, kafka, producer):
    """Namespace bucket 1 token / 2 s, burst 1: the second eviction in `shop` is `skipped: rate-limit`
    with retry_after_s, and is applied by its bounded retry."""
    act = Actuator(api, producer, kafka, settings(namespace_evictions_per_minute=30, namespace_rate_burst=1,
                                                   rate_limit_max_attempts=3), embedded=True)
    web, apip = pod_on(sim, "web"), pod_on(sim, "api")
    d1, d2 = decision(sim, web), decision(sim, apip)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        (a1,) = await actions.wait_for(outcome_of(d1.id))
        assert a1.outcome == "applied"
        await send(producer, d2)
        first, second = await actions.wait_for(outcome_of(d2.id), 2)
    assert (first.outcome, first.reason) == ("skipped", "rate-limit")
    assert "namespace:shop" in first.message and 0 < first.retry_after_s <= 2.5
    assert (second.outcome, second.reason, second.attempt) == ("applied", "evicted", 2)
    assert sim.cluster.counters["evictions"] == 2


async def test_rate_limit_retries_are_bounded(sim, api, kafka, producer):
    act = Actuator(api, producer, kafka, settings(node_evictions_per_minute=0.5, node_rate_burst=1,
                                                   rate_limit_max_attempts=1), embedded=True)
    pods = [p for _, p in sorted(sim.cluster.pods.items()) if p.app == "worker" and p.node_name == "node-a-1"]
    d1, d2 = decision(sim, pods[0]), decision(sim, pods[1])
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        await actions.wait_for(outcome_of(d1.id))
        await send(producer, d2)
        (a2,) = await actions.wait_for(outcome_of(d2.id))
        await asyncio.sleep(0.5)
        assert len(actions.matching(outcome_of(d2.id))) == 1
    assert (a2.outcome, a2.reason) == ("skipped", "rate-limit") and "giving up" in a2.message
    assert "node:node-a-1" in a2.message


async def test_kill_switch_read_at_run_time(sim, api, kafka, producer, tmp_path):
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text("actuator:\n  dry_run: false\n")
    act = Actuator(api, producer, kafka, settings(kill_switch_interval_s=0.1), embedded=True,
                   config_path=str(cfg))
    web, apip, worker = pod_on(sim, "web"), pod_on(sim, "api"), pod_on(sim, "worker", "node-a-1")
    d1, d2, d3, d4 = decision(sim, web), decision(sim, apip), decision(sim, worker), scale_decision(sim, "web", 6)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        assert (await actions.wait_for(outcome_of(d1.id)))[0].outcome == "applied"
        cfg.write_text("actuator:\n  dry_run: true\n")  # the ConfigMap changes; no restart
        await asyncio.sleep(0.3)
        await send(producer, d2)
        await send_scale(producer, d4)
        (a2,) = await actions.wait_for(outcome_of(d2.id))
        (a4,) = await actions.wait_for(outcome_of(d4.id))
        assert (a2.outcome, a2.reason) == ("dry-run", "kill-switch") and "would evict" in a2.message
        assert (a4.outcome, a4.reason) == ("dry-run", "kill-switch") and "would scale" in a4.message
        assert (apip.namespace, apip.name) in sim.cluster.pods
        assert sim.cluster.deployments[("shop", "web")].replicas == 5
        cfg.write_text("actuator:\n  paused: false\n  dry_run: false\n")
        await asyncio.sleep(0.3)
        await send(producer, d3)
        assert (await actions.wait_for(outcome_of(d3.id)))[0].outcome == "applied"
    assert sim.cluster.counters["evictions"] == 2


async def test_paused_at_start_and_broken_file_keeps_state(sim, api, kafka, producer, tmp_path):
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text("actuator:\n  paused: true\n")
    act = Actuator(api, producer, kafka, settings(kill_switch_interval_s=0.1), embedded=True,
                   config_path=str(cfg))
    d1, d2 = decision(sim, pod_on(sim, "web")), decision(sim, pod_on(sim, "api"))
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        assert (await actions.wait_for(outcome_of(d1.id)))[0].reason == "kill-switch"
        cfg.write_text("actuator: [not, a, mapping\n")  # unreadable: the last state (paused) holds
        await asyncio.sleep(0.3)
        await send(producer, d2)
        assert (await actions.wait_for(outcome_of(d2.id)))[0].reason == "kill-switch"
    assert sim.cluster.counters["evictions"] == 0


async def test_dry_run_from_the_file_can_be_lifted_but_not_the_flag(sim, api, kafka, producer, tmp_path):
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text("actuator:\n  dry_run: true\n")  # shipped in dry-run (deploy/configmap.yaml)
    act = Actuator(api, producer, kafka, settings(dry_run=True, kill_switch_interval_s=0.1), embedded=True,
                   config_path=str(cfg), dry_run_locked=False)
    locked = Actuator(api, producer, kafka, settings(dry_run=True, kill_switch_interval_s=0.1, group_id="other"),
                      embedded=True, config_path=str(cfg), dry_run_locked=True)  # --dry-run on the command line
    d1, d2, d3 = (decision(sim, pod_on(sim, app)) for app in ("web", "api", "reports"))
    async with TopicReader(kafka, ACTIONS) as actions:
        async with running(act.run):
            await started(act)
            await send(producer, d1)
            assert (await actions.wait_for(outcome_of(d1.id)))[0].reason == "dry-run"
            cfg.write_text("actuator:\n  dry_run: false\n")  # go live without a restart
            await asyncio.sleep(0.3)
            await send(producer, d2)
            assert (await actions.wait_for(outcome_of(d2.id)))[0].outcome == "applied"
        async with running(locked.run):
            await started(locked)
            await send(producer, d3)
            assert (await actions.wait_for(outcome_of(d3.id)))[0].reason == "dry-run"
    assert sim.cluster.counters["evictions"] == 1


async def test_ledger_workload_budget_in_sliding_window(sim, api, kafka, producer):
    """web's PDB would allow 2 evictions; kubetide's own budget (1 per 30 s of cluster time) stops the
    second one before the API is asked, and the window slides with the cluster clock."""
    act = Actuator(api, producer, kafka, settings(budget_per_workload=1, budget_window_s=30), embedded=True)
    webs = [p for _, p in sorted(sim.cluster.pods.items()) if p.app == "web"]
    d1, d2 = decision(sim, webs[0]), decision(sim, webs[1])
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        assert (await actions.wait_for(outcome_of(d1.id)))[0].outcome == "applied"
        await send(producer, d2)
        (a2,) = await actions.wait_for(outcome_of(d2.id))
        assert (a2.outcome, a2.reason, a2.http_status) == ("skipped", "budget", None)
        assert "shop/web" in a2.message and (webs[1].namespace, webs[1].name) in sim.cluster.pods
        await sim.advance(60)  # the window has passed; the replacement is ready
        d3 = decision(sim, webs[1])
        await send(producer, d3)
        assert (await actions.wait_for(outcome_of(d3.id)))[0].outcome == "applied"
    assert sim.cluster.counters["evictions"] == 2


async def test_ledger_zone_budget(sim, api, kafka, producer):
    act = Actuator(api, producer, kafka, settings(budget_per_zone=1, budget_window_s=600), embedded=True)
    zone = sim.cluster.nodes["node-a-1"].zone
    in_zone = [p for _, p in sorted(sim.cluster.pods.items())
               if p.node_name and sim.cluster.nodes[p.node_name].zone == zone and p.namespace != "kube-system"]
    apps = {}
    for p in in_zone:
        apps.setdefault(p.app, p)
    first, second = list(apps.values())[:2]  # two workloads, same zone
    d1, d2 = decision(sim, first), decision(sim, second)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        assert (await actions.wait_for(outcome_of(d1.id)))[0].outcome == "applied"
        await send(producer, d2)
        (a2,) = await actions.wait_for(outcome_of(d2.id))
    assert (a2.outcome, a2.reason) == ("skipped", "budget") and f"zone {zone}" in a2.message


async def test_zone_guard(sim, api, kafka, producer):
    """maxSkew 1 (the fallback zone_max_skew: kubesim pods carry no topologySpreadConstraints):
    an eviction that would raise the workload's zone skew above it is refused; one that does not, passes."""
    c = sim.cluster
    zones = {n.zone for n in c.nodes.values()}
    refused = allowed = None
    for app in ("api", "web", "reports"):
        pods = [p for _, p in sorted(c.pods.items()) if p.app == app and p.node_name]
        counts = Counter(c.nodes[p.node_name].zone for p in pods)
        verdicts = {p.name: skew_after_eviction(counts, zones, c.nodes[p.node_name].zone) for p in pods}
        bad = [p for p in pods if verdicts[p.name][1] > 1 and verdicts[p.name][1] > verdicts[p.name][0]]
        good = [p for p in pods if p not in bad]
        if bad and good:
            refused, allowed = bad[0], good[0]
            break
    assert refused is not None and allowed is not None, "demo scenario changed: no zone-skew case found"
    act = Actuator(api, producer, kafka, settings(zone_guard=True, zone_max_skew=1), embedded=True)
    d1, d2 = decision(sim, refused), decision(sim, allowed)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        (a1,) = await actions.wait_for(outcome_of(d1.id))
        await send(producer, d2)
        (a2,) = await actions.wait_for(outcome_of(d2.id))
    assert (a1.outcome, a1.reason) == ("skipped", "zone-guard") and "maxSkew 1" in a1.message
    assert (refused.namespace, refused.name) in c.pods
    assert a2.outcome == "applied"


async def test_opt_in_mode(sim, api, kafka, producer):
    """opt_in: only namespaces labelled kubetide.io/enabled=true (or listed in opt_in_namespaces) are
    touched. kubesim's namespaces carry no custom labels, so `batch` is not opted in."""
    act = Actuator(api, producer, kafka, settings(opt_in=True, opt_in_namespaces=("shop",)), embedded=True)
    worker, web = pod_on(sim, "worker", "node-a-1"), pod_on(sim, "web")
    d1, d2 = decision(sim, worker), decision(sim, web)
    d3 = scale_decision(sim, "reports", 3, ns="batch")
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d1)
        await send(producer, d2)
        await send_scale(producer, d3)
        (a1,) = await actions.wait_for(outcome_of(d1.id))
        (a2,) = await actions.wait_for(outcome_of(d2.id))
        (a3,) = await actions.wait_for(outcome_of(d3.id))
    assert (a1.outcome, a1.reason) == ("skipped", "not-opted-in") and "kubetide.io/enabled" in a1.message
    assert (a3.outcome, a3.reason) == ("skipped", "not-opted-in")
    assert (worker.namespace, worker.name) in sim.cluster.pods
    assert sim.cluster.deployments[("batch", "reports")].replicas == 2
    assert a2.outcome == "applied"


async def test_scale_handler(sim, api, kafka, producer):
    c = sim.cluster
    act = Actuator(api, producer, kafka, settings(budget_per_workload=1), embedded=True)
    up = scale_decision(sim, "web", 7)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send_scale(producer, up)
        await send_scale(producer, up)  # re-delivery
        a, dup = await actions.wait_for(outcome_of(up.id), 2)
        assert (a.outcome, a.reason, a.action) == ("applied", "scaled", "scale") and "from 5 to 7" in a.message
        assert a.target.name == "web" and a.target.kind == "Deployment"
        assert (dup.outcome, dup.reason) == ("duplicate", "already-applied")
        dep = c.deployments[("shop", "web")]
        assert dep.replicas == 7 and dep.annotations["kubetide.io/last-decision"] == up.id

        same = scale_decision(sim, "web", 7)
        await send_scale(producer, same)
        (s,) = await actions.wait_for(outcome_of(same.id))
        assert (s.outcome, s.reason) == ("skipped", "no-change")

        big_in = scale_decision(sim, "web", 5)  # 2 disruptions > budget 1: the ledger says no
        await send_scale(producer, big_in)
        (b,) = await actions.wait_for(outcome_of(big_in.id))
        assert (b.outcome, b.reason) == ("skipped", "budget") and dep.replicas == 7
        small_in = scale_decision(sim, "web", 6)
        await send_scale(producer, small_in)
        (si,) = await actions.wait_for(outcome_of(small_in.id))
        assert si.outcome == "applied" and dep.replicas == 6
        assert act.ledger.used_by_workload("shop/web", c.t) == 1

        # the marker on the object answers a decision whose outcome never reached `actions`
        lost = scale_decision(sim, "api", 6)
        c.update_deployment_meta("shop", "api", annotations={"kubetide.io/last-decision": lost.id})
        await send_scale(producer, lost)
        (lo,) = await actions.wait_for(outcome_of(lost.id))
        assert (lo.outcome, lo.reason) == ("duplicate", "marker") and c.deployments[("shop", "api")].replicas == 4

        gone = scale_decision(sim, "web", 3).model_copy(
            update={"workload": m.WorkloadRef(namespace="shop", kind="Deployment", name="nope")})
        await send_scale(producer, gone)
        (g,) = await actions.wait_for(outcome_of(gone.id))
        assert (g.outcome, g.reason) == ("skipped", "gone")
        old = scale_decision(sim, "web", 3).model_copy(update={"expires_at": c.t - 1})
        await send_scale(producer, old)
        assert (await actions.wait_for(outcome_of(old.id)))[0].outcome == "expired"


async def test_evictions_and_scale_ins_share_one_budget(sim, api, kafka, producer):
    """One ledger for every strategy: an eviction of a web pod uses the budget a scale-in of web then lacks."""
    act = Actuator(api, producer, kafka, settings(budget_per_workload=1), embedded=True)
    d_evict, d_in = decision(sim, pod_on(sim, "web")), scale_decision(sim, "web", 4)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d_evict)
        assert (await actions.wait_for(outcome_of(d_evict.id)))[0].outcome == "applied"
        await send_scale(producer, d_in)
        (a,) = await actions.wait_for(outcome_of(d_in.id))
    assert (a.outcome, a.reason) == ("skipped", "budget") and sim.cluster.deployments[("shop", "web")].replicas == 5


async def test_scale_retries_on_conflict(kafka, producer):
    """The Scale is PUT with its resourceVersion; a concurrent writer makes it 409 once: read again, retry."""
    bumped = []
    holder: dict = {}

    def authorize(user, verb, path, ns):
        if verb == "update" and path.endswith("/deployments/web/scale") and not bumped:
            bumped.append(path)  # someone else changes the Deployment between our GET and PUT
            holder["sim"].cluster.update_deployment_meta("shop", "web", annotations={"other": "writer"})
        return True

    async with KubeSim("demo", speed=0, authorize=authorize) as s:
        holder["sim"] = s
        a = await new_api_client(str(s.kubeconfig_path))
        try:
            act = Actuator(a, producer, kafka, settings(), embedded=True)
            d = scale_decision(s, "web", 8)
            async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
                await started(act)
                await send_scale(producer, d)
                (r,) = await actions.wait_for(outcome_of(d.id))
        finally:
            await a.close()
    assert bumped and r.outcome == "applied"
    assert s.cluster.deployments[("shop", "web")].replicas == 8


# ------------------------------------------------------------------ units

def test_ledger_windows_and_inflight():
    led = DisruptionLedger(window_s=100, per_workload=2, per_zone=3)
    r1 = led.reserve("d1", "ns/a", "z1", 0)
    r2 = led.reserve("d2", "ns/a", "z1", 10)
    assert not isinstance(r1, str) and not isinstance(r2, str)
    assert "workload ns/a" in led.reserve("d3", "ns/a", "z2", 20)  # in flight counts at once
    led.release(r2)
    led.commit(r1, 0)
    r3 = led.reserve("d3", "ns/a", "z1", 20)
    assert not isinstance(r3, str)
    led.commit(r3, 20)
    assert led.used_by_workload("ns/a", 50) == 2
    assert isinstance(led.reserve("d4", "ns/a", "z1", 99), str)
    assert led.used_by_workload("ns/a", 100.5) == 1  # r1 left the window
    r4 = led.reserve("d4", "ns/b", "z1", 101)
    assert not isinstance(r4, str)
    assert "zone z1" in led.reserve("d5", "ns/c", "z1", 101, n=2)
    # scale-ins: n disruptions at once
    assert "workload ns/d" in led.reserve("d6", "ns/d", None, 101, n=3)


def test_ledger_pdb_shared_between_strategies():
    led = DisruptionLedger(window_s=60, per_workload=0, per_zone=0)  # only the PDB check
    a = led.reserve("evict-1", "ns/w", "z", 0, pdbs={"ns/pdb": 1}, source="load")
    assert not isinstance(a, str)
    b = led.reserve("evict-2", "ns/w", "z", 0, pdbs={"ns/pdb": 1}, source="zone")
    assert isinstance(b, str) and "PDB ns/pdb" in b
    c = led.reserve("evict-3", "ns/w", "z", 0, pdbs={"ns/pdb": 0})
    assert not isinstance(c, str)  # a PDB at 0 is left to the Eviction API (429 + Retry-After)
    led.release(a)
    led.release(c)
    assert not isinstance(led.reserve("evict-2", "ns/w", "z", 0, pdbs={"ns/pdb": 1}), str)


def test_selectors_and_skew():
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels) and not selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "api"}}, labels)
    assert selector_matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                       "values": ["front"]}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Gt"}]}, labels)
    assert zone_skew({"a": 2, "b": 1}, ["a", "b", "c"]) == 2
    assert skew_after_eviction({"a": 2, "b": 1, "c": 1}, "abc", "b") == (1, 2)
    assert skew_after_eviction({"a": 2, "b": 1, "c": 1}, "abc", "a") == (1, 0)
    zone = "topology.kubernetes.io/zone"
    spec = {"topologySpreadConstraints": [
        {"topologyKey": "kubernetes.io/hostname", "maxSkew": 1, "labelSelector": {}},
        {"topologyKey": zone, "maxSkew": 3, "labelSelector": {"matchLabels": {"app": "x"}}},
        {"topologyKey": zone, "maxSkew": 2, "labelSelector": {"matchLabels": {"app": "web"}}}]}
    assert zone_constraint(spec, zone) == (2, {"matchLabels": {"app": "web"}})
    assert zone_constraint({}, zone) is None


def test_bucket_and_keyed_limiter():
    b = Bucket(60, 2, now=0)  # 1/s
    assert b.wait_for_token(0) == 0
    b.take(0)
    b.take(0)
    assert b.wait_for_token(0) == pytest.approx(1.0)
    assert b.wait_for_token(0.5) == pytest.approx(0.5)
    t = [0.0]
    lim = KeyedLimiter({"node": Limit(60, 1), "namespace": Limit(30, 2), "workload": Limit(0, 1)},
                       clock=lambda: t[0])
    assert lim.try_acquire([("node", "n1"), ("namespace", "ns"), ("workload", "w")]) is None
    r = lim.try_acquire([("node", "n1"), ("namespace", "ns")])
    assert r is not None and r.key == "node:n1" and r.retry_after_s == pytest.approx(1.0)
    # all or nothing: the refused call took no namespace token
    assert lim.try_acquire([("node", "n2"), ("namespace", "ns")]) is None
    r = lim.try_acquire([("node", "n3"), ("namespace", "ns")])
    assert r is not None and r.key == "namespace:ns" and r.retry_after_s == pytest.approx(2.0)
    t[0] = 2.0
    assert lim.try_acquire([("node", "n1"), ("namespace", "ns"), ("workload", None)]) is None
    assert "workload" not in lim.limits  # rate 0: unlimited
