"""The NodeScale tick planner on small hand-built clusters: taints, pod-deletion-cost, placeholder sizing
from a forecast, drain selection and its limits (pure; no broker, no kubesim)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from kubetide import models as m
from kubetide.config import ConfigError
from streams.core import forecast as fc
from streams.core.nodescale import (
    DELETION_COST,
    NodeScaler,
    NodeScaleSettings,
    placeholder_replicas,
    settings_from,
)
from streams.core.planner import Planner, decision_kafka_key, decision_topic
from streams.core.settings import StreamsSettings
from streams.core.state import SAFE_TO_EVICT_ANNOTATION, ClusterState
from tests.test_core_state import T0, GiB, node_ev, pod_ev, state_of

ELASTIC_TAINT = m.Taint(key="kubetide.io/elastic", value="true", effect="PreferNoSchedule")


def fixed(name: str, cpu: float = 16.0, **kw: Any) -> m.ClusterEvent:
    return node_ev(name, cpu=cpu, mem=64 * GiB, node_group="fixed", **kw)


def elastic(name: str, cpu: float = 8.0, tainted: bool = True, **kw: Any) -> m.ClusterEvent:
    return node_ev(name, cpu=cpu, mem=32 * GiB, node_group="elastic", taints=[ELASTIC_TAINT] if tainted else [], **kw)


def placeholder_dep(replicas: int = 2, cpu: float = 1.0) -> m.ClusterEvent:
    return m.ClusterEvent(ts=T0, type="ADDED", kind="Deployment", namespace="overprovisioning", name="placeholder",
                          deployment=m.DeploymentSnapshot(replicas=replicas,
                                                          pod_requests=m.Resources(cpu_cores=cpu, mem_bytes=GiB)))


def plan_at(ns: NodeScaler, st: ClusterState, ts: float, action: str | None = None) -> list[m.NodescaleDecision]:
    out = ns.plan(st, ts)
    return [d for d in out if action is None or d.action == action]


def quiet(**kw: Any) -> NodeScaleSettings:
    """Only what a test looks at: everything else off."""
    base: dict[str, Any] = {"taint": True, "annotate": False, "size_placeholder": False, "drain": False}
    base.update(kw)
    return NodeScaleSettings(**base)


# ---------------------------------------------------------------- settings

def test_settings_defaults_build_and_validation_names_the_field() -> None:
    s = StreamsSettings.from_config({"streams": {"nodescale": {"max_draining": 2, "taint_key": "x/elastic"}}})
    assert s.nodescale.max_draining == 2 and s.nodescale.taint_key == "x/elastic"
    assert any(isinstance(p, NodeScaler) for p in s.tick_planners())
    assert StreamsSettings.from_config({"streams": {"nodescale": {"enabled": False}}}).nodescale is None
    for bad, field in (({"taint_effect": "Sometimes"}, "taint_effect"), ({"placeholder": "nope"}, "placeholder"),
                       ({"max_draining": -1}, "max_draining"), ({"trough_max_packing": 1.5}, "trough_max_packing"),
                       ({"bogus": 1}, "bogus")):
        with pytest.raises(ConfigError, match=f"streams.nodescale.{field}"):
            settings_from(bad, "streams.nodescale")


# ---------------------------------------------------------------- taints

def test_taints_elastic_nodes_that_join_without_it_once_and_leaves_others_alone() -> None:
    st = state_of(fixed("f1"), elastic("e1", tainted=False), elastic("e2", tainted=True))
    ns = NodeScaler(quiet())
    got = plan_at(ns, st, T0, "taint")
    assert [d.node for d in got] == ["e1"]
    d = got[0]
    assert d.node_group == "elastic" and d.params == {"key": "kubetide.io/elastic", "value": "true",
                                                      "effect": "PreferNoSchedule"}
    assert d.made_at == T0 and d.expires_at > T0 and decision_topic(d) == "decisions.nodescale"
    assert decision_kafka_key(d) == b"elastic"
    assert plan_at(ns, st, T0 + 10, "taint") == []  # asked already, not within reissue_s
    again = plan_at(ns, st, T0 + ns.s.reissue_s + 10, "taint")  # still untainted: asked again, new id
    assert [x.node for x in again] == ["e1"] and again[0].id != d.id
    # the same inputs give the same id (replay)
    assert plan_at(NodeScaler(quiet()), st, T0, "taint")[0].id == d.id


def test_untaint_when_the_config_turns_the_taint_off_and_elastic_by_label() -> None:
    st = state_of(elastic("e1", tainted=True),
                  node_ev("x1", node_group="spot", labels={"kubetide.io/elastic": "true"}))
    got = plan_at(NodeScaler(quiet(taint=False)), st, T0)
    assert [(d.action, d.node) for d in got] == [("untaint", "e1")]
    got = plan_at(NodeScaler(quiet()), st, T0, "taint")
    assert [(d.node, d.node_group) for d in got] == [("x1", "spot")]  # labelled elastic, no taint yet


# ---------------------------------------------------------------- pod-deletion-cost

def test_annotations_low_cost_on_elastic_nodes_cleared_on_fixed_newest_node_lowest() -> None:
    st = state_of(fixed("f1"), elastic("e1"),
                  pod_ev("shop", "a", "f1", annotations={DELETION_COST: "-100"}),  # moved to fixed: clear it
                  pod_ev("shop", "b", "f1"),  # fine as it is
                  pod_ev("shop", "c", "e1"), pod_ev("shop", "d", "e1"),
                  pod_ev("overprovisioning", "ph-1", "e1", app="placeholder", priority=-1),
                  pod_ev("kube-system", "proxy-e1", "e1", app="kube-proxy", kind="DaemonSet"))
    ns = NodeScaler(quiet(taint=False, annotate=True))
    got = {d.node: d for d in plan_at(ns, st, T0, "annotate-pods")}
    assert set(got) == {"f1", "e1"}
    assert got["f1"].params == {"pods": "shop/a", "cost": None}
    assert got["e1"].params["pods"] == "shop/c,shop/d"
    first_cost = int(str(got["e1"].params["cost"]))
    assert first_cost < 0
    # a second elastic node joins later: its pods get a lower cost (emptied first on scale-in)
    st.apply_event(elastic("e2"))
    st.apply_event(pod_ev("shop", "e", "e2"))
    st.apply_event(pod_ev("shop", "c", "e1", type="MODIFIED", annotations={DELETION_COST: str(first_cost)}))
    st.apply_event(pod_ev("shop", "d", "e1", type="MODIFIED", annotations={DELETION_COST: str(first_cost)}))
    st.apply_event(pod_ev("shop", "a", "f1", type="MODIFIED"))
    later = plan_at(ns, st, T0 + 10, "annotate-pods")
    assert [d.node for d in later] == ["e2"]
    assert int(str(later[0].params["cost"])) < first_cost
    # batched per node, at most max_pods_per_annotation pods per decision
    st2 = state_of(elastic("e1"), *[pod_ev("shop", f"p{i}", "e1") for i in range(5)])
    chunks = plan_at(NodeScaler(quiet(taint=False, annotate=True, max_pods_per_annotation=2)), st2, T0,
                    "annotate-pods")
    assert [len(str(d.params["pods"]).split(",")) for d in chunks] == [2, 2, 1]


# ---------------------------------------------------------------- placeholder sizing

def _tide(t: np.ndarray, period_s: float = 3600.0) -> np.ndarray:
    """Demand in cores: a base of 4 plus a smooth hourly tide up to 20 more."""
    return 4.0 + 10.0 * (1.0 - np.cos(2 * np.pi * t / period_s))


def test_placeholder_sized_from_the_forecast_of_the_next_provisioning_window() -> None:
    s = NodeScaleSettings(sample_s=60.0, min_history_s=3 * 3600.0, provisioning_delay_s=300.0, margin=0.0,
                          placeholder_max=100)
    t = np.arange(0, 6 * 3600, 60.0)
    hist = _tide(t)
    # cut where the tide is about to rise steeply (a quarter period before its steepest point)
    cut = np.searchsorted(t, 5 * 3600 + 600)
    n, ev = placeholder_replicas(hist[:cut], 1.0, s)
    assert ev["sizing"] == "forecast"
    window = np.arange(t[cut - 1], t[cut - 1] + 300 + 60 + 1, 60.0)
    truth_growth = _tide(window).max() - hist[cut - 1]
    assert truth_growth > 3
    assert abs(n - math.ceil(truth_growth)) <= 1  # the forecast knows the tide: about the true rise
    n_half, _ = placeholder_replicas(hist[:cut], 2.0, s)  # bigger placeholder pods: fewer of them
    assert n_half == math.ceil(ev["growth_cores"] / 2.0)
    # just after the peak the demand falls: no headroom needed
    top = np.searchsorted(t, 5 * 3600 + 1800 + 60)
    assert placeholder_replicas(hist[:top], 1.0, s)[0] == s.placeholder_min == 0
    # not a constant: it follows the phase of the tide
    sizes = {placeholder_replicas(hist[:c], 1.0, s)[0] for c in range(cut - 30, cut + 1, 5)}
    assert len(sizes) > 1


def test_placeholder_fallback_is_the_recent_rise_when_the_history_is_short() -> None:
    s = NodeScaleSettings(sample_s=60.0, min_history_s=86400.0, provisioning_delay_s=120.0, margin=0.0)
    hist = np.array([5, 5, 6, 9, 9, 8, 8, 8, np.nan, 8], dtype=float)
    n, ev = placeholder_replicas(hist, 1.0, s)
    assert ev["sizing"] == "fallback-recent-rise" and ev["forecast"] == "short-history"
    assert n == 4  # largest rise within a window of 3 samples: 5 -> 9
    # room already free for the group's pods needs no placeholder
    assert placeholder_replicas(hist, 1.0, s, free_cores=3.0)[0] == 1
    assert placeholder_replicas(hist, 1.0, s, free_cores=10.0)[0] == 0
    assert placeholder_replicas(np.full(10, 7.0), 1.0, s)[0] == 0
    # the same periodic history, long enough, goes through the forecast module
    t = np.arange(0, 3 * 86400, 600.0)
    long = _tide(t, 86400.0)
    _, ev2 = placeholder_replicas(long, 1.0, NodeScaleSettings(sample_s=600.0))
    assert ev2["sizing"] == "forecast" and fc.forecast(long, 600.0, 1).periods


def test_planner_emits_size_placeholder_for_its_group_from_pending_and_elastic_demand() -> None:
    s = quiet(taint=False, size_placeholder=True, sample_s=60.0, min_history_s=86400.0, provisioning_delay_s=120.0,
              margin=0.0, resize_interval_s=60.0)
    # room for exactly the 12 cores the test adds (free room needs no placeholder: it shrinks to 0 here)
    st = state_of(fixed("f1", cpu=1.0), elastic("e1", cpu=12.0), placeholder_dep(replicas=0))
    ns = NodeScaler(s)
    out: list[m.NodescaleDecision] = []
    for i in range(6):  # demand on the elastic node grows by 2 cores a minute
        for j in range(2):
            st.apply_event(pod_ev("shop", f"w{i}-{j}", "e1", cpu=1.0))
        out += plan_at(ns, st, T0 + 60 * i, "size-placeholder")
    assert out, "growing elastic demand must size the placeholder"
    d = out[-1]
    assert d.params["namespace"] == "overprovisioning" and d.params["name"] == "placeholder"
    assert d.replicas is not None and d.replicas >= 4 and d.evidence["sizing"] == "fallback-recent-rise"
    # pending pods count as demand of the group too
    st2 = state_of(fixed("f1", cpu=1.0), elastic("e1"), pod_ev("shop", "big", "e1", cpu=8.0),
                   pod_ev("shop", "small", "f1", cpu=1.0), placeholder_dep(replicas=0))
    ns2 = NodeScaler(s)
    got = []
    for i in range(4):
        st2.apply_event(pod_ev("shop", f"pend-{i}", None, cpu=3.0, phase="Pending", ready=False))
        got += plan_at(ns2, st2, T0 + 60 * i, "size-placeholder")
    assert got and got[-1].replicas >= 6


def test_group_demand_is_everything_but_the_other_elastic_groups() -> None:
    """The history a group's headroom is forecast from: requests on its nodes, the fixed nodes and pending
    pods (a rise anywhere but another elastic group is a rise the group may have to absorb once the fixed
    nodes are full); its relative error stays low where the group's own share swings from 0 every day."""
    s = quiet(taint=False, elastic_groups=("elastic", "gpu"))
    st = state_of(fixed("f1"), elastic("e1"), node_ev("g1", cpu=8.0, mem=32 * GiB, node_group="gpu"),
                  pod_ev("shop", "on-fixed", "f1", cpu=3.0), pod_ev("shop", "on-elastic", "e1", cpu=2.0),
                  pod_ev("shop", "on-gpu", "g1", cpu=4.0),
                  pod_ev("shop", "pending", None, cpu=1.0, phase="Pending", ready=False))
    ns = NodeScaler(s)
    ns.plan(st, T0)
    assert ns.group_hist["elastic"].series()[-1] == pytest.approx(3.0 + 2.0 + 1.0)
    assert ns.group_hist["gpu"].series()[-1] == pytest.approx(3.0 + 4.0 + 1.0)


# ---------------------------------------------------------------- drains

def _trough(*extra: m.ClusterEvent, e_pods: dict[str, int] | None = None) -> ClusterState:
    """Two roomy fixed nodes and three elastic nodes with a few small pods each."""
    e_pods = e_pods or {"e1": 2, "e2": 1, "e3": 2}
    evs = [fixed("f1"), fixed("f2"), elastic("e1"), elastic("e2"), elastic("e3")]
    for n, k in e_pods.items():
        evs += [pod_ev("shop", f"{n}-p{i}", n, cpu=1.0) for i in range(k)]
    evs += [pod_ev("shop", f"f1-p{i}", "f1", cpu=1.0) for i in range(4)]
    return state_of(*evs, *extra)


def drain_settings(**kw: Any) -> NodeScaleSettings:
    return quiet(taint=False, drain=True, drain_after_join_s=600.0, **kw)


def drains(ns: NodeScaler, st: ClusterState, t1: float = T0 + 900) -> list[m.NodescaleDecision]:
    plan_at(ns, st, T0)  # nodes seen (joined) at T0
    return plan_at(ns, st, t1, "drain")


def test_drains_the_least_requested_elastic_node_at_most_n_at_once() -> None:
    got = drains(NodeScaler(drain_settings(max_draining=1)), _trough())
    assert [d.node for d in got] == ["e2"]
    assert got[0].params["pods"] == "shop/e2-p0" and got[0].node_group == "elastic"
    two = drains(NodeScaler(drain_settings(max_draining=2)), _trough())
    assert [d.node for d in two] == ["e2", "e1"]
    # not before drain_after_join_s after the group's newest node joined
    assert drains(NodeScaler(drain_settings()), _trough(), t1=T0 + 300) == []
    # never on a fixed node
    assert all(d.node.startswith("e") for d in drains(NodeScaler(drain_settings(max_draining=5)), _trough()))


def test_cordoned_nodes_count_against_the_limit_and_their_drain_continues() -> None:
    st = _trough(elastic("e3", type="MODIFIED", unschedulable=True))
    ns = NodeScaler(drain_settings(max_draining=1))
    got = drains(ns, st)
    assert [(d.node, d.params["pods"]) for d in got] == [("e3", "shop/e3-p0,shop/e3-p1")]
    assert plan_at(ns, st, T0 + 910, "drain") == []  # asked again only after reissue_s
    assert [d.node for d in plan_at(ns, st, T0 + 900 + ns.s.reissue_s, "drain")] == ["e3"]


def test_no_drain_when_it_should_not() -> None:
    # a pending pod: scale-up under way, not a trough
    assert drains(NodeScaler(drain_settings()), _trough(pod_ev("shop", "new", None, phase="Pending",
                                                               ready=False))) == []
    # too many pods on every elastic node
    assert drains(NodeScaler(drain_settings(drain_max_pods=1)), _trough(e_pods={"e1": 2, "e2": 2, "e3": 2})) == []
    # a pod that may not be evicted protects its node; the next one is chosen
    st = _trough(pod_ev("shop", "e2-p0", "e2", cpu=1.0, type="MODIFIED",
                        annotations={SAFE_TO_EVICT_ANNOTATION: "false"}))
    assert [d.node for d in drains(NodeScaler(drain_settings()), st)] == ["e1"]
    # the pods do not fit elsewhere (fixed nodes full, other elastic nodes full)
    full = state_of(fixed("f1", cpu=4.0), elastic("e1", cpu=2.0), elastic("e2", cpu=2.0),
                    *[pod_ev("shop", f"f{i}", "f1", cpu=1.0) for i in range(4)],
                    pod_ev("shop", "a", "e1", cpu=1.5), pod_ev("shop", "b", "e2", cpu=1.5))
    assert drains(NodeScaler(drain_settings(trough_max_packing=1.0)), full) == []
    # the demand would not fit under trough_max_packing of what is left
    assert drains(NodeScaler(drain_settings(trough_max_packing=0.1)), _trough()) == []
    assert drains(NodeScaler(drain_settings(max_draining=0)), _trough()) == []


def test_fit_respects_untolerated_noschedule_taints_of_the_fixed_group() -> None:
    st = state_of(fixed("f1", taints=[m.Taint(key="dedicated", value="db", effect="NoSchedule")]),
                  elastic("e1"), elastic("e2", cpu=2.0), pod_ev("shop", "a", "e1", cpu=1.0),
                  pod_ev("shop", "b", "e2", cpu=1.5))
    got = drains(NodeScaler(drain_settings(trough_max_packing=1.0)), st)
    assert [d.node for d in got] == ["e2"]  # b fits only on e1 (f1 is tainted); a would not fit on e2


def test_runs_inside_the_planner_after_each_tick() -> None:
    settings = StreamsSettings.from_config({"streams": {"nodescale": {"annotate": False, "drain": False,
                                                                      "size_placeholder": False}}})
    planner = Planner.from_settings(settings)
    for ev in (fixed("f1"), elastic("e1", tainted=False)):
        planner.state.apply_event(ev)
    out = planner.plan_tick(T0, {})
    assert [(type(d).__name__, d.action, d.node) for d in out] == [("NodescaleDecision", "taint", "e1")]


# ---------------------------------------------------------------- the offline actuator's handler (kubesim)

def _tiny_cluster(tmp_path: Any, pdb: dict | None = None) -> Any:
    import yaml

    from kubesim.model import Cluster
    from kubesim.scenario import load_scenario
    from tests.test_nodescale_e2e import SCENARIO

    scen = {**SCENARIO, "apps": [
        {**SCENARIO["apps"][0], **({"pdb": pdb} if pdb else {})},
        {"name": "placeholder", "namespace": "overprovisioning", "replicas": 0, "priority": -1,
         "requests": {"cpu": "1", "memory": "1Gi"}, "startup_s": 0, "demand": {"cpu": 0}}]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(scen))
    c = Cluster(load_scenario(str(path)))
    c.set_replicas("shop", "web", 10)
    for _ in range(12):
        c.step()
    return c


def _ns_decision(c: Any, action: str, node: str | None = None, **kw: Any) -> m.NodescaleDecision:
    return m.NodescaleDecision(id=m.decision_id("t", action, node, kw, c.t), made_at=c.t, expires_at=c.t + 300,
                               strategy="NodeScale", reason="test", action=action, node_group="elastic", node=node,
                               **kw)


def test_offline_handler_applies_each_action_to_kubesim(tmp_path: Any) -> None:
    from kubetide.offline import OfflineActuator
    from kubetide.offline_nodescale import install
    from workers.actuator import ActuatorSettings

    c = _tiny_cluster(tmp_path)
    node = next(n.name for n in c.nodes.values() if n.group == "elastic")
    h = install(OfflineActuator(c, ActuatorSettings()))
    taint = _ns_decision(c, "taint", node, params={"key": "kubetide.io/elastic", "value": "true",
                                                   "effect": "PreferNoSchedule"})
    assert h(taint).summary == "applied" and any(t.key == "kubetide.io/elastic" for t in c.nodes[node].taints)
    assert h(taint).outcome == "duplicate"
    on = sorted(p.name for p in c.pods.values() if p.node_name == node and not p.daemon)
    pods = ",".join(f"shop/{p}" for p in on)
    assert h(_ns_decision(c, "annotate-pods", node, params={"pods": pods, "cost": "-101"})).reason == "annotated"
    assert {c.pods[("shop", p)].annotations.get(DELETION_COST) for p in on} == {"-101"}
    assert h(_ns_decision(c, "annotate-pods", node, params={"pods": pods, "cost": None})).reason == "annotated"
    assert all(DELETION_COST not in c.pods[("shop", p)].annotations for p in on)
    size = _ns_decision(c, "size-placeholder", replicas=2, params={"namespace": "overprovisioning",
                                                                   "name": "placeholder"})
    assert h(size).reason == "scaled" and c.deployments[("overprovisioning", "placeholder")].replicas == 2
    old = _ns_decision(c, "untaint", node, params={"key": "kubetide.io/elastic"})
    c.advance(400)
    assert h(old).outcome == "expired" and any(t.key == "kubetide.io/elastic" for t in c.nodes[node].taints)
    c.set_replicas("overprovisioning", "placeholder", 0)
    c.set_replicas("shop", "web", 6)
    c.advance(20)
    left = [p for p in c.pods.values() if p.node_name == node and not p.daemon]
    before = c.counters["evictions"]
    drain = h(_ns_decision(c, "drain", node, params={"pods": ""}))
    assert drain.reason == "drained" and c.nodes[node].unschedulable
    assert c.counters["evictions"] - before == len(left) == len(h.evictions) and left
    c.advance(120)
    assert node not in c.nodes  # emptied and cordoned: the cluster-autoscaler model removed it


def test_offline_drain_respects_pdbs_and_dry_run(tmp_path: Any) -> None:
    from kubetide.offline import OfflineActuator
    from kubetide.offline_nodescale import install
    from workers.actuator import ActuatorSettings

    c = _tiny_cluster(tmp_path, pdb={"maxUnavailable": 0})
    node = next(n.name for n in c.nodes.values() if n.group == "elastic")
    dry = install(OfflineActuator(c, ActuatorSettings(dry_run=True)))
    assert dry(_ns_decision(c, "drain", node)).outcome == "dry-run" and not c.nodes[node].unschedulable
    act = OfflineActuator(c, ActuatorSettings())
    h = install(act)
    a = h(_ns_decision(c, "drain", node))
    assert (a.outcome, a.reason, a.http_status) == ("skipped", "pdb", 429)
    assert c.nodes[node].unschedulable and h.evictions == [] and act.pdb_violations == 0
    assert any(p.node_name == node and not p.daemon for p in c.pods.values())


def test_forecast_is_refitted_only_every_forecast_interval() -> None:
    from streams.core.nodescale import predicted_max

    s = NodeScaleSettings(sample_s=60.0, min_history_s=3 * 3600.0, margin=0.0, forecast_interval_s=600.0)
    t = np.arange(0, 6 * 3600, 60.0)
    hist = _tide(t)
    cache: dict[str, Any] = {}
    first, _ = predicted_max(hist[:300], s, 300.0, cache, at=300)
    fitted = cache["f"]
    for i in range(1, 10):  # within the interval: the stored forecast, read from the right offset
        got, _ = predicted_max(hist[:300 + i], s, 300.0, cache, at=300 + i)
        assert cache["f"] is fitted
        assert got == pytest.approx(fc.window_max(fitted.values[i:], 60.0, 300.0))
    predicted_max(hist[:310], s, 300.0, cache, at=310)
    assert cache["f"] is not fitted and cache["n"] == 310  # refitted after forecast_interval_s
    fresh, _ = predicted_max(hist[:300], s, 300.0)
    assert first == pytest.approx(fresh)


def test_history_series_equals_a_fresh_build_after_every_add() -> None:
    """The series array is reused while only the open bucket's value changes; it must always equal the
    array built from the buckets from scratch (gaps NaN, old buckets dropped)."""
    from streams.core.nodescale import History

    def fresh(h: History) -> np.ndarray:
        b0 = h.buckets[0][0]
        out = np.full(h.buckets[-1][0] - b0 + 1, np.nan)
        for b, v in h.buckets:
            out[b - b0] = v
        return out

    h = History(60.0, 8)
    rng = np.random.default_rng(3)
    ts = 0.0
    for _ in range(200):
        ts += float(rng.choice([10.0, 10.0, 10.0, 130.0]))  # mostly within a bucket, sometimes skipping some
        h.add(ts, float(rng.uniform(0, 10)))
        s = h.series()
        np.testing.assert_array_equal(s, fresh(h))
        s[:] = -1.0  # a caller changing its copy changes nothing
        np.testing.assert_array_equal(h.series(), fresh(h))
