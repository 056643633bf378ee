"""The autoscaling tick planner (streams/core/autoscaler.py) on synthetic ClusterState input, its settings,
and the offline scale handler on a kubesim Cluster (pure: no broker, no HTTP)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kubetide import models as m
from kubetide.config import ConfigError
from streams.core import autoscale as asc
from streams.core.autoscaler import (
    DELETION_COST,
    Autoscaler,
    AutoscalerSettings,
    History,
    scale_in_pods,
    settings_from,
)
from streams.core.messages import NodeSummary, PlannerInput, forward_app_metric
from streams.core.planner import Planner
from streams.core.settings import StreamsSettings
from streams.core.state import ClusterState

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a Monday
ZONES = ("zone-a", "zone-b", "zone-c")
REQ = 0.5


def _state() -> ClusterState:
    return ClusterState(history=5)


def _node(st: ClusterState, name: str, zone: str) -> None:
    st.apply_event(m.ClusterEvent(ts=T0, type="SYNC", kind="Node", name=name, node=m.NodeSnapshot(
        zone=zone, allocatable=m.Resources(cpu_cores=16, mem_bytes=64e9))))


def _deployment(st: ClusterState, name: str, replicas: int, labels: dict[str, str] | None = None,
                ns: str = "shop") -> None:
    st.apply_event(m.ClusterEvent(ts=T0, type="SYNC", kind="Deployment", namespace=ns, name=name,
                                  deployment=m.DeploymentSnapshot(
                                      replicas=replicas, labels=labels or {},
                                      pod_requests=m.Resources(cpu_cores=REQ, mem_bytes=1e9))))


def _pod(st: ClusterState, name: str, node: str, app: str = "web", ready: bool = True, created: float = T0,
         ns: str = "shop") -> None:
    st.apply_event(m.ClusterEvent(ts=created, type="SYNC", kind="Pod", namespace=ns, name=name, pod=m.PodSnapshot(
        node=node, phase="Running", ready=ready, app=app, workload=m.WorkloadRef(namespace=ns, kind="Deployment",
                                                                                 name=app),
        requests=m.Resources(cpu_cores=REQ, mem_bytes=1e9), created_at=created)))


def _cluster(replicas_per_zone: tuple[int, ...] = (2, 2, 2), labels: dict[str, str] | None = None) -> ClusterState:
    st = _state()
    for z in ZONES:
        _node(st, f"n-{z}", z)
    _deployment(st, "web", sum(replicas_per_zone), labels if labels is not None else {"kubetide.io/autoscale": "true"})
    i = 0
    for z, n in zip(ZONES, replicas_per_zone, strict=True):
        for _ in range(n):
            _pod(st, f"web-{i}", f"n-{z}", created=T0 + i)
            i += 1
    return st


def _tick(st: ClusterState, ts: float, per_pod: float | dict[str, float], missing: tuple[str, ...] = ()) -> None:
    """A tick where each pod of the state uses ``per_pod`` cores (or its entry); nodes in ``missing`` report nothing."""
    by_node: dict[str, list[tuple[str, str]]] = {}
    for (ns, name), p in sorted(st.pods.items()):
        by_node.setdefault(p.node or "", []).append((ns, name))
    summaries = {}
    for node in st.nodes:
        if node in missing:
            continue
        pods = by_node.get(node, [])
        cpu = [per_pod if isinstance(per_pod, float | int) else per_pod.get(n, 0.0) for _, n in pods]
        summaries[node] = NodeSummary(ts=ts, node=node, zone=st.nodes[node].zone, cpu_usage=sum(cpu), mem_usage=1e9,
                                      cpu_allocatable=16, mem_allocatable=64e9,
                                      pod_namespace=[ns for ns, _ in pods], pod_name=[n for _, n in pods],
                                      pod_cpu_cores=cpu, pod_mem_bytes=[1e8] * len(pods))
    st.apply_tick(ts, summaries)


def _default(**kw) -> AutoscalerSettings:
    pol = asc.AutoscalePolicy(min_replicas=1, max_replicas=40, target_cpu_utilization=70,
                              predictive=asc.PredictiveTrigger(enabled=False))
    return AutoscalerSettings(default_policy=pol, sync_period_s=0, **kw)


# ---------------------------------------------------------------- settings

def test_settings_from_config_and_selection():
    s = settings_from({
        "interval_s": 60, "history_s": 86400, "select": ["shop/api"],
        "default_policy": {"min_replicas": 2, "max_replicas": 8, "predictive": {"prediction_window_s": 300}},
        "workloads": {"shop/checkout": {"min_replicas": 3, "max_replicas": 30, "target_cpu_utilization": 60}},
    })
    assert s.workloads["shop/checkout"].max_replicas == 30
    assert s.policy_for("shop/checkout", {}) is s.workloads["shop/checkout"]
    assert s.policy_for("shop/api", {}) is s.default_policy and s.default_policy.min_replicas == 2
    assert s.policy_for("shop/web", {"kubetide.io/autoscale": "true"}) is s.default_policy
    assert s.policy_for("shop/web", {"kubetide.io/autoscale": "false"}) is None
    assert s.default_policy.predictive.prediction_window_s == 300
    assert isinstance(s.planner(), Autoscaler)
    # through the streams section, as the worker builds it
    ss = StreamsSettings.from_config({"streams": {"autoscale": {"select": ["shop/web"], "default_policy": {}}}})
    assert [type(p) for p in ss.tick_planners()] == [Autoscaler]
    assert StreamsSettings.from_config({"streams": {"autoscale": {"enabled": False}}}).autoscale is None


@pytest.mark.parametrize("data, where", [
    ({"interval_s": 0}, "streams.autoscale.interval_s"),
    ({"workloads": {"web": {}}}, "streams.autoscale.workloads"),
    ({"workloads": {"shop/web": {"max_replicas": 0}}}, "streams.autoscale.workloads.shop/web.max_replicas"),
    ({"default_policy": {"cron": [{"start": "nope", "end": "0 1 * * *"}]}}, "streams.autoscale.default_policy.cron"),
    ({"bogus": 1}, "streams.autoscale.bogus"),
])
def test_settings_errors_name_the_field(data, where):
    with pytest.raises(ConfigError) as e:
        settings_from(data)
    assert where in str(e.value)


# ---------------------------------------------------------------- history

def test_history_buckets_means_gaps_are_nan_and_ring_wraps():
    h = History(60.0, 16)
    for i in range(6):
        h.add(T0 + 10 * i, float(i))  # one bucket: mean 2.5
    h.add(T0 + 60, math.nan)  # closes the first bucket; the second has no present sample
    h.add(T0 + 180, 4.0)  # second bucket closed as NaN, third skipped (NaN), fourth open
    v = h.values()
    assert v[0] == pytest.approx(2.5) and np.isnan(v[1:]).all() and len(v) == 3
    assert h.end_ts == T0 + 180
    for k in range(40):
        h.add(T0 + 240 + 60 * k, float(k))
    v = h.values()
    assert len(v) == 16 and v[-1] == 38.0 and v[0] == 23.0  # the newest 16 completed buckets, oldest first
    assert h.add(T0, 1.0) == 0  # late tick for a closed bucket: ignored


# ---------------------------------------------------------------- zone-aware scale-in

def test_scale_in_takes_from_the_biggest_zone_unready_then_newest():
    pods = {"a": [(1, 1.0, "a1"), (1, 5.0, "a2"), (0, 2.0, "a3")], "b": [(1, 1.0, "b1")], "c": [(1, 1.0, "c1"),
                                                                                              (1, 9.0, "c2")]}
    assert scale_in_pods(pods, 2) == ["a3", "a2"]  # zone a (3 pods): not ready first, then the newest
    assert scale_in_pods(pods, 3)[2] == "c2"  # then a (1) vs c (2): c


def test_scale_in_ties_go_to_the_busiest_zone():
    """Among zones holding as many pods, the one whose nodes are busiest loses a pod first (the spare
    replica stays where there is room); without load figures, or with equal ones, the zone name decides."""
    pods = {"a": [(1, 1.0, "a1"), (1, 2.0, "a2")], "b": [(1, 1.0, "b1"), (1, 2.0, "b2")], "c": [(1, 1.0, "c1")]}
    assert scale_in_pods(pods, 1) == ["a2"]
    assert scale_in_pods(pods, 1, {"a": 30.0, "b": 60.0, "c": 90.0}) == ["b2"]
    assert scale_in_pods(pods, 2, {"a": 30.0, "b": 60.0, "c": 90.0}) == ["b2", "a2"]  # then a alone has most
    assert scale_in_pods(pods, 3, {"a": 30.0, "b": 60.0, "c": 90.0})[2] == "c1"  # 1/1/1: the busiest, c
    assert scale_in_pods(pods, 1, {"a": 50.0, "b": 50.0}) == ["a2"]
    assert scale_in_pods(pods, 1, {"a": 50.0}) == ["a2"]  # b has no figure: counts as idle


@pytest.mark.parametrize("seed", range(20))
def test_scale_in_never_raises_the_zone_skew(seed):
    rng = np.random.default_rng(seed)
    counts = {z: int(rng.integers(0, 8)) for z in ZONES}
    pods = {z: [(int(rng.integers(0, 2)), float(rng.random()), f"{z}-{i}") for i in range(n)]
            for z, n in counts.items()}
    k = int(rng.integers(0, sum(counts.values()) + 1))
    busy = {z: float(rng.random() * 100) for z in ZONES}
    out = scale_in_pods(pods, k, busy if seed % 2 else None)
    assert len(out) == k and len(set(out)) == k
    after = {z: counts[z] - sum(1 for p in out if p.startswith(z + "-")) for z in ZONES}
    skew_before = max(counts.values()) - min(counts.values())
    assert max(after.values()) - min(after.values()) <= max(skew_before, 1)


# ---------------------------------------------------------------- the planner on ClusterState

def test_reactive_scale_up_with_zone_shares_and_deterministic_ids():
    decisions = []
    for _ in range(2):
        st = _cluster((2, 2, 2))
        a = _default().planner()
        assert a.plan(_tick_and(st, T0 + 10, 0.3), T0 + 10) == []  # 60 % of request: within tolerance of 70 %
        usage = {f"web-{i}": (0.7 if i < 2 else 0.35) for i in range(6)}  # zone-a twice as busy
        _tick(st, T0 + 20, usage)
        decisions.append(a.plan(st, T0 + 20))
    d1, d2 = decisions
    assert len(d1) == 1 and d1 == d2 and d1[0].id == d2[0].id
    d = d1[0]
    assert isinstance(d, m.AutoscaleDecision) and d.trigger == "reactive" and d.made_at == T0 + 20
    assert d.current_replicas == 6 and d.desired_replicas == math.ceil(6 * (2.8 / 3.0 * 100 // 1) / 70)
    assert d.zones == {"zone-a": 0.5, "zone-b": 0.25, "zone-c": 0.25}
    assert d.workload == m.WorkloadRef(namespace="shop", kind="Deployment", name="web")


def _tick_and(st: ClusterState, ts: float, per_pod: float) -> ClusterState:
    _tick(st, ts, per_pod)
    return st


def test_only_selected_deployments_are_planned():
    st = _cluster((1, 1, 1), labels={})
    a = _default().planner()
    _tick(st, T0 + 10, 1.0)
    assert a.plan(st, T0 + 10) == [] and a.workloads == {}


def test_missing_metrics_hold_never_scale_down():
    st = _cluster((2, 2, 2))
    a = _default().planner()
    _tick(st, T0 + 10, 0.35)  # at target
    assert a.plan(st, T0 + 10) == []
    # two of three nodes report nothing: the total is unknown, the pods there have no sample
    _tick(st, T0 + 20, 0.01, missing=("n-zone-a", "n-zone-b"))
    assert a.plan(st, T0 + 20) == []
    assert a.evidence["shop/web"]["hpa_reason"] != "DesiredWithinRange" or \
        a.evidence["shop/web"]["desired_replicas"] == 6
    hist = a.workloads["shop/web"].history
    _tick(st, T0 + 80, 0.35)  # closes the bucket: the missing tick did not count as 0
    a.plan(st, T0 + 80)
    assert not np.any(hist.values() == 0)


def test_scale_in_names_pods_of_the_overrepresented_zone():
    st = _cluster((4, 1, 1))
    pol = asc.AutoscalePolicy(min_replicas=1, max_replicas=40, predictive=asc.PredictiveTrigger(enabled=False),
                              behavior=asc.hpa.HpaBehavior(scale_down=asc.hpa.HpaScalingRules(
                                  0, "Max", (asc.hpa.HpaPolicy("Percent", 100, 15),))))
    a = AutoscalerSettings(workloads={"shop/web": pol}, sync_period_s=0).planner()
    _tick(st, T0 + 10, 0.1)  # 20 % of request → 2 replicas
    (d,) = a.plan(st, T0 + 10)
    assert d.desired_replicas < 6
    victims = d.evidence["scale_in_pods"].split(",")
    assert len(victims) == 6 - d.desired_replicas
    assert all(st.pods[("shop", v)].node == "n-zone-a" for v in victims[:3])
    assert d.evidence["zone_skew_after"] <= 1


def test_scale_in_keeps_the_spare_replica_in_the_zone_with_room():
    """Zone a has two nodes, b and c one each: with 3/3/3 pods at the same per-pod usage b's and c's
    nodes run twice as hot as a's; a scale-in by 2 takes one pod from each of b and c (a keeps the spare
    replicas, skew 1), where the zone-name order alone would have taken one from a."""
    st = _state()
    _node(st, "n-zone-a", "zone-a")
    _node(st, "n-zone-a2", "zone-a")
    _node(st, "n-zone-b", "zone-b")
    _node(st, "n-zone-c", "zone-c")
    _deployment(st, "web", 9, {"kubetide.io/autoscale": "true"})
    where = ["n-zone-a", "n-zone-a2", "n-zone-a", "n-zone-b", "n-zone-b", "n-zone-b", "n-zone-c", "n-zone-c",
             "n-zone-c"]
    for i, node in enumerate(where):
        _pod(st, f"web-{i}", node, created=T0 + i)
    pol = asc.AutoscalePolicy(min_replicas=1, max_replicas=40, target_cpu_utilization=70,
                              predictive=asc.PredictiveTrigger(enabled=False),
                              behavior=asc.hpa.HpaBehavior(scale_down=asc.hpa.HpaScalingRules(
                                  0, "Max", (asc.hpa.HpaPolicy("Pods", 2, 15),))))
    a = AutoscalerSettings(workloads={"shop/web": pol}, sync_period_s=0).planner()
    _tick(st, T0 + 10, 0.1)
    (d,) = a.plan(st, T0 + 10)
    assert d.desired_replicas == 7
    victims = d.evidence["scale_in_pods"].split(",")
    assert sorted(st.pods[("shop", v)].node for v in victims) == ["n-zone-b", "n-zone-c"]
    assert d.evidence["zone_skew_after"] == 1


def test_predictive_scales_before_the_spike():
    """Hourly 6-minute spikes (3×) on a flat level: after a few hours the planner scales up before the
    spike, while the pods' current usage is still at the level (the reactive trigger alone would not)."""
    st = _cluster((2, 2, 2))
    pol = asc.AutoscalePolicy(min_replicas=1, max_replicas=60, target_cpu_utilization=70,
                              predictive=asc.PredictiveTrigger(prediction_window_s=600, margin=0.1))
    a = AutoscalerSettings(workloads={"shop/web": pol}, interval_s=60, sync_period_s=0, refit_s=600).planner()
    rng = np.random.default_rng(1)
    early = []
    for k in range(6 * 60):  # 6 h of 60 s ticks; the replicas stay at 6 (nothing applies the decisions)
        ts = T0 + 60 * k
        spike = 3.0 if (k % 60) < 6 else 1.0
        _tick(st, ts, 0.3 * spike * (1 + 0.02 * rng.standard_normal()))
        for d in a.plan(st, ts):
            if d.trigger == "predictive" and 50 <= k % 60 < 60 and k > 180:
                early.append(d)
    assert early, "no predictive scale-up ahead of the spikes"
    d = early[-1]
    assert d.desired_replicas > 6 and d.evidence["predictive_status"] == "ok"
    assert d.evidence["period_s"] == 3600
    assert d.evidence["replicas.reactive"] <= 6 < d.evidence["replicas.predictive"]
    assert 0 <= d.evidence["forecast_error"] <= pol.predictive.max_error


def test_custom_metric_through_the_planner_input():
    st = _cluster((1, 1, 1))
    pol = asc.AutoscalePolicy(min_replicas=1, max_replicas=50, reactive=False,
                              predictive=asc.PredictiveTrigger(enabled=False),
                              metrics=(asc.MetricTrigger(metric="queue_length", target_per_replica=30),))
    settings = StreamsSettings(autoscale=AutoscalerSettings(workloads={"shop/web": pol}, sync_period_s=0))
    pl = Planner.from_settings(settings)
    (a,) = pl.tick_planners
    for part, v in (("0", 150.0), ("1", 90.0)):  # two partitions' queues add up: 240 → 8 replicas
        msg = forward_app_metric(m.AppMetric(ts=T0 + 5, namespace="shop", app="web", metric="queue_length",
                                             value=v, labels={"partition": part}))
        msg = PlannerInput.model_validate(msg.to_dict())
        a.apply_metric(msg.app_metric)
    pl.state = st
    (d,) = pl.plan_tick(T0 + 10, {})
    assert d.trigger == "metric:queue_length" and d.desired_replicas == 7  # max(100 %, 4 pods) per 15 s from 3
    assert d.evidence["replicas.metric:queue_length"] == 8
    # an older sample of the same label set does not replace a newer one
    a.apply_metric(m.AppMetric(ts=T0, namespace="shop", app="web", metric="queue_length", value=0.0,
                               labels={"partition": "0"}))
    assert a.metrics[("shop", "web", "queue_length")][(("partition", "0"),)] == (T0 + 5, 150.0)
    # stale after max_age_s: missing, never 0 → hold
    assert pl.plan_tick(T0 + 10 + 3600, {}) == []
    assert a.evidence["shop/web"]["hpa_reason"] == "InvalidMetrics"


# ---------------------------------------------------------------- predictive trigger details

def test_predictive_tolerance_and_shifted_fit():
    pol = asc.AutoscalePolicy(min_replicas=1, max_replicas=50, target_cpu_utilization=50)
    vals = np.array([1.0, 1.0, 5.0, 5.0, 1.0])
    fit = asc.PredictiveFit("ok", values=vals, interval_s=60.0, error=0.05)
    obs = asc.WorkloadObservation(workload=m.WorkloadRef(namespace="a", kind="Deployment", name="b"), now=T0,
                                  current_replicas=2, cpu_request_cores=1.0, prediction=fit)
    pol_w = asc.AutoscalePolicy(**{**pol.__dict__, "predictive": asc.PredictiveTrigger(prediction_window_s=120,
                                                                                         margin=0.0,
                                                                                         short_peak_utilization=None)})
    assert asc.predictive(pol_w, obs).replicas == 2  # max(1, 1) / 0.5 = 2: within tolerance, kept
    assert asc.predictive(pol_w, replace_obs(obs, fit.shifted(1))).replicas == 10  # window now holds 5 cores
    # within ±10 % of what the current replicas serve: keep the current count (no ±1 jitter)
    assert asc.predictive(pol_w, replace_obs(obs, fit.shifted(2), current_replicas=11)).replicas == 11
    assert asc.predictive(pol_w, replace_obs(obs, asc.PredictiveFit("fallback: x"))).status == "fallback: x"


def replace_obs(obs: asc.WorkloadObservation, fit: asc.PredictiveFit, **kw) -> asc.WorkloadObservation:
    from dataclasses import replace

    return replace(obs, prediction=fit, **kw)


def test_cron_across_the_us_fall_back():
    """America/New_York leaves DST on 2024-11-03 (02:00 → 01:00): 09:00-17:00 local stays 09:00-17:00 local,
    i.e. 13:00-21:00 UTC before and 14:00-22:00 UTC after."""
    c = asc.CronTrigger(start="0 9 * * *", end="0 17 * * *", timezone="America/New_York", replicas=5)
    from datetime import UTC, datetime

    def ts(s: str) -> float:
        return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()

    assert c.active(ts("2024-11-02T13:30:00")) and not c.active(ts("2024-11-02T21:30:00"))
    assert not c.active(ts("2024-11-04T13:30:00")) and c.active(ts("2024-11-04T14:30:00"))
    assert c.active(ts("2024-11-04T21:30:00")) and not c.active(ts("2024-11-04T22:30:00"))


# ---------------------------------------------------------------- offline handler (kubesim Cluster)

def test_offline_scale_handler_applies_idempotently_and_marks_scale_in_pods():
    from kubesim.model import Cluster
    from kubesim.scenario import load_scenario
    from kubetide.offline import OfflineActuator
    from kubetide.offline_autoscale import install
    from workers.actuator import ActuatorSettings

    c = Cluster(load_scenario("diurnal", seed=1), seed=1, hpa=False)
    act = OfflineActuator(c, ActuatorSettings())
    h = install(act)
    dep = c.deployments[("shop", "storefront-1")]
    n0 = dep.replicas
    wl = m.WorkloadRef(namespace="shop", kind="Deployment", name="storefront-1")

    def dec(desired: int, **ev) -> m.AutoscaleDecision:
        return m.AutoscaleDecision(id=m.decision_id("t", desired, c.t, sorted(ev)), made_at=c.t, expires_at=c.t + 60,
                                   strategy="Autoscale", reason="test", evidence=ev, workload=wl,
                                   current_replicas=dep.replicas, desired_replicas=desired, trigger="reactive")

    up = dec(n0 + 3)
    assert act.handlers[m.AutoscaleDecision](up).outcome == "applied" and dep.replicas == n0 + 3
    assert act.handlers[m.AutoscaleDecision](up).outcome == "duplicate" and dep.replicas == n0 + 3
    c.advance(300)  # every pod ready (not-ready pods would be deleted before any marked one)
    assert all(p.ready for p in c.pods.values() if p.app == "storefront-1")
    pods = sorted((p for p in c.pods.values() if p.app == "storefront-1"), key=lambda p: p.name)
    chosen = [p.name for p in pods[:2]]
    down = dec(n0 + 1, scale_in_pods=",".join(chosen))
    assert h(down).outcome == "applied" and dep.replicas == n0 + 1
    left = {p.name for p in c.pods.values() if p.app == "storefront-1"}
    assert not (set(chosen) & left)  # the marked pods went first
    assert all(DELETION_COST not in p.annotations for p in c.pods.values() if p.app == "storefront-1")
    assert h(dec(n0 + 1)).reason == "no-change"
    late = m.AutoscaleDecision(**{**dec(n0).model_dump(), "id": "x" * 24, "expires_at": c.t - 1})
    assert h(late).outcome == "expired" and dep.replicas == n0 + 1
    assert [a.outcome for a in act.outcomes] == ["applied", "duplicate", "applied", "skipped", "expired"]


def test_offline_custom_metric_scales_a_kubesim_deployment():
    """The custom-metric trigger through the offline pipeline: kubesim serves no business metric, so the
    app.metrics samples are fed to the planner as the forward-app-metrics agent would (PlannerInput kind
    app_metric); the decision goes through the offline actuator to Cluster.set_replicas."""
    from kubesim.model import Cluster
    from kubesim.scenario import load_scenario
    from kubetide.evaluate import settings_from_config
    from kubetide.offline import OfflineKubetide
    from kubetide.offline_autoscale import install

    cfg = {"streams": {"autoscale": {"sync_period_s": 0, "workloads": {"shop/storefront-1": {
        "min_replicas": 1, "max_replicas": 30, "reactive": False, "predictive": {"enabled": False},
        "metrics": [{"metric": "queue_length", "target_per_replica": 30}]}}}}}
    c = Cluster(load_scenario("diurnal", seed=2), seed=2, hpa=False)
    streams, act = settings_from_config(cfg)
    kt = OfflineKubetide(c, streams, act, codec=True, profile=False)
    install(kt.actuator)
    kt.tick(step=False)
    dep = c.deployments[("shop", "storefront-1")]
    others = {k: d.replicas for k, d in c.deployments.items() if k != ("shop", "storefront-1")}
    for _ in range(3):  # no metric yet: no opinion, nothing happens
        kt.tick()
    assert not kt.other_decisions
    want = 12
    for _ in range(6):
        msg = forward_app_metric(m.AppMetric(ts=c.t, namespace="shop", app="storefront-1", metric="queue_length",
                                             value=30.0 * want))
        msg = PlannerInput.model_validate(msg.to_dict())
        for tp in kt.planner.tick_planners:
            tp.apply_metric(msg.app_metric)
        kt.tick()
    assert dep.replicas == want
    assert kt.other_decisions and all(d.trigger == "metric:queue_length" for d in kt.other_decisions)
    applied = [a for a in kt.actuator.outcomes if a.action == "scale" and a.outcome == "applied"]
    assert len(applied) == len({d.id for d in kt.other_decisions})
    assert {k: d.replicas for k, d in c.deployments.items() if k != ("shop", "storefront-1")} == others


def test_scale_in_keeps_the_pod_deletion_cost_order_within_a_zone():
    """Within the zone that loses a pod, a lower ``pod-deletion-cost`` already on a pod goes first (the
    node-scale planner's costs: the newest elastic node's pods first, so whole nodes empty); not-ready pods
    still go before, and without a cost the newest goes first."""
    pods = {"a": [(1, 1.0, "a-elastic-old", -101), (1, 9.0, "a-fixed-new", 0), (1, 5.0, "a-elastic-new", -102)],
            "b": [(1, 1.0, "b1", 0), (0, 2.0, "b-unready", 0), (1, 3.0, "b-elastic", -100)]}
    assert scale_in_pods(pods, 1) == ["a-elastic-new"]
    assert scale_in_pods(pods, 2) == ["a-elastic-new", "b-unready"]
    assert scale_in_pods(pods, 4) == ["a-elastic-new", "b-unready", "a-elastic-old", "b-elastic"]


@pytest.mark.parametrize("short_peak_utilization", [100.0, None])
def test_short_hourly_spikes_the_pods_can_serve_start_no_pods(short_peak_utilization):
    """Hourly 3-minute spikes of 1.3× on pods at ~64 % of their request: once the forecast knows them, the
    default policy starts no pod for them (91 % ≤ 100 %), neither ahead (predictive) nor during them (reactive),
    also across refits. With short peaks at the target (``short_peak_utilization: null``) every spike gets pods,
    as before."""
    st = _cluster((2, 2, 2))
    pol = asc.AutoscalePolicy(min_replicas=1, max_replicas=60, target_cpu_utilization=70,
                              predictive=asc.PredictiveTrigger(prediction_window_s=1800, margin=0.05,
                                                               short_peak_utilization=short_peak_utilization))
    a = AutoscalerSettings(workloads={"shop/web": pol}, interval_s=60, sync_period_s=0, refit_s=300).planner()
    rng = np.random.default_rng(3)
    ups, trusted = [], 0
    for k in range(8 * 60):  # 8 h of 60 s ticks; the replicas stay at 6 (nothing applies the decisions)
        ts = T0 + 60 * k
        spike = 1.3 if (k % 60) >= 58 or k % 60 == 0 else 1.0  # a refit (every 5 min) falls in it
        _tick(st, ts, REQ * 0.64 * spike * (1 + 0.01 * rng.standard_normal()))
        for d in a.plan(st, ts):
            if k >= 4 * 60 and d.desired_replicas > d.current_replicas:
                ups.append((k % 60, d.trigger))
        if k >= 4 * 60 and a.evidence["shop/web"].get("predictive_status") == "ok":
            trusted += 1
    assert trusted >= 3 * 60  # the forecast is trusted over the last hours
    if short_peak_utilization is None:
        assert len(ups) >= 4, ups  # pods for (nearly) every spike
    else:
        assert ups == []
