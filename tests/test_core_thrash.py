"""Anti-thrash: the shared pod-choice layer (Choice), replacement follow-up with growing backoff,
window limits, hold on missing metrics, nowhere-to-go, and no zone <-> load ping-pong (pure)."""

from __future__ import annotations

from collections import Counter

import pytest

from kubetide import models as m
from streams.core.planner import Planner
from streams.core.state import ZONE_LABEL, Choice, ClusterState, GuardSettings, spread_move_ok
from streams.core.strategies import build_strategies
from streams.core.strategies import lownodeload as lnl
from tests.test_core_state import T0, node_ev, pod_ev, state_of, summary
from tests.test_core_strategies import ABSOLUTE, SPREAD, absolute_lnl, ticks

GUARD = GuardSettings()


def decision(st: ClusterState, pod: tuple[str, str], node: str, to: str, ts: float,
             strategy: str = "LowNodeLoad") -> m.DescheduleDecision:
    p = st.pods[pod]
    assert p.workload is not None
    return m.DescheduleDecision(id=f"d-{pod[1]}-{ts:.0f}", made_at=ts, expires_at=ts + 300, strategy=strategy,
                                reason="test", evidence={"best_target": to},
                                pod=m.PodRef(namespace=pod[0], name=pod[1], node=node), workload=p.workload,
                                from_node=node, to_nodes=[to])


def hot_cool(**kw: object) -> ClusterState:
    return state_of(node_ev("hot"), node_ev("cool"), pod_ev("shop", "web-1", "hot"), pod_ev("shop", "web-2", "cool"),
                    pod_ev("shop", "api-1", "hot", app="api"), **kw)


# ---------------------------------------------------------------- replacement follow-up and backoff

def test_replacement_back_on_the_hot_node_grows_the_backoff() -> None:
    st = hot_cool()
    ticks(st, 1, {"hot": 7.2, "cool": 1.0})
    wl = "shop/web"
    expected = []
    ts = T0
    for i in range(4):
        st.record(decision(st, ("shop", f"web-{i + 1}" if i == 0 else f"web-r{i}"), "hot", "cool", ts))
        st.apply_event(pod_ev("shop", f"web-{i + 1}" if i == 0 else f"web-r{i}", "hot", type="DELETED", ts=ts + 5))
        st.apply_event(pod_ev("shop", f"web-r{i + 1}", None, ts=ts + 10, phase="Pending"))  # created, unbound
        st.apply_event(pod_ev("shop", f"web-r{i + 1}", "hot", ts=ts + 12, type="MODIFIED"))  # bound: back on hot
        expected.append(min(GUARD.backoff_max_s, GUARD.backoff_base_s * 2**i))
        assert st.backoff_level[wl] == i + 1
        assert st.backoff_until[wl] == ts + 12 + expected[-1]
        land = st.landings[-1]
        assert (land.node, land.hot, land.from_node) == ("hot", True, "hot")
        assert land.replacement == ("shop", f"web-r{i + 1}")
        ts = st.backoff_until[wl] + 1
    assert expected == [600, 1200, 2400, 4800]  # growing cooldown
    # during the backoff the workload is blocked for every strategy
    ticks(st, 1, {"hot": 7.2, "cool": 1.0}, start=ts - 100)
    ch = Choice(st)
    assert ch.blocked(("shop", "web-r4"), st.pods[("shop", "web-r4")], "hot") == "workload-backoff"
    # a good landing lowers the level again
    st.record(decision(st, ("shop", "web-r4"), "hot", "cool", ts))
    st.apply_event(pod_ev("shop", "web-r5", "cool", ts=ts + 10))
    assert st.backoff_level[wl] == 3 and st.landings[-1].hot is False


def test_replacement_on_another_hot_node_counts_and_late_replacements_do_not() -> None:
    st = state_of(node_ev("hot"), node_ev("hot2"), node_ev("cool"), pod_ev("shop", "web-1", "hot"))
    ticks(st, 1, {"hot": 7.2, "hot2": 7.0, "cool": 1.0})
    st.record(decision(st, ("shop", "web-1"), "hot", "cool", T0))
    st.apply_event(pod_ev("shop", "web-x", "hot2", ts=T0 + 30))  # 87.5 % >= hot_cpu_pct
    assert st.backoff_level == {"shop/web": 1} and st.landings[-1].hot
    st2 = state_of(node_ev("hot"), node_ev("cool"), pod_ev("shop", "web-1", "hot"))
    ticks(st2, 1, {"hot": 7.2, "cool": 1.0})
    st2.record(decision(st2, ("shop", "web-1"), "hot", "cool", T0))
    st2.apply_event(pod_ev("shop", "web-x", "hot", ts=T0 + GUARD.replacement_window_s + 1))
    assert st2.backoff_level == {} and st2.landings == []  # outside the replacement window: not followed
    st2.prune_decisions(T0 + GUARD.replacement_window_s + 1, 0)
    assert st2.pending == {}


def test_backoff_is_forgiven_after_a_quiet_period() -> None:
    st = hot_cool()
    ticks(st, 1, {"hot": 7.2, "cool": 1.0})
    st.record(decision(st, ("shop", "web-1"), "hot", "cool", T0))
    st.apply_event(pod_ev("shop", "web-r", "hot", ts=T0 + 10))
    until = st.backoff_until["shop/web"]
    st.prune_decisions(until + GUARD.backoff_max_s - 1, 0)
    assert st.backoff_level == {"shop/web": 1}
    st.prune_decisions(until + GUARD.backoff_max_s, 0)
    assert st.backoff_level == {} and st.backoff_until == {}


# ---------------------------------------------------------------- every pod-choice exclusion

def test_choice_blocked_reasons() -> None:
    g = GuardSettings(max_per_node=2, max_per_namespace=3, max_per_workload=2, max_total=4, workload_cooldown_s=60,
                      pod_cooldown_s=600, window_s=3600)
    st = state_of(node_ev("n1"), node_ev("n2"), node_ev("n3"),
                  *[pod_ev("shop", f"web-{i}", "n1") for i in range(3)], pod_ev("shop", "api-1", "n1", app="api"),
                  pod_ev("shop", "api-2", "n2", app="api"), pod_ev("other", "x-1", "n2", app="x"),
                  pod_ev("other", "x-2", "n3", app="x"), pod_ev("other", "y-1", "n3", app="y"),
                  pod_ev("kube-system", "dns", "n1", app="dns"), guard=g)
    ticks(st, 1, {"n1": 4.0, "n2": 4.0})

    def why(ch: Choice, ns: str, name: str) -> str | None:
        p = st.pods[(ns, name)]
        assert p.node is not None
        return ch.blocked((ns, name), p, p.node)

    ch = Choice(st)
    assert why(ch, "shop", "web-0") is None
    assert why(ch, "kube-system", "dns") == "protected-namespace"  # the evictor's filters
    assert why(ch, "other", "y-1") == "metrics-missing"  # n3 has no metrics this tick: hold
    ch.take(("shop", "web-0"), st.pods[("shop", "web-0")], "n1", "n2", (0.1, 0.0))
    assert why(ch, "shop", "web-0") == "already-moving"
    st.record(decision(st, ("shop", "web-0"), "n1", "n2", T0))
    ticks(st, 1, {"n1": 4.0, "n2": 4.0}, start=T0 + 30)
    ch = Choice(st)
    assert why(ch, "shop", "web-1") == "workload-cooldown"
    ticks(st, 1, {"n1": 4.0, "n2": 4.0}, start=T0 + 90)
    assert why(Choice(st), "shop", "web-0") == "pod-cooldown"
    assert why(Choice(st), "shop", "web-1") is None
    st.record(decision(st, ("shop", "web-1"), "n1", "n2", T0 + 90))
    ticks(st, 1, {"n1": 4.0, "n2": 4.0}, start=T0 + 200)
    assert why(Choice(st), "shop", "api-1") == "limit-node"  # 2 from n1 in the window
    assert why(Choice(st), "shop", "web-2") == "limit-node"
    assert why(Choice(st), "shop", "api-2") is None
    st.record(decision(st, ("shop", "api-2"), "n2", "n3", T0 + 200))
    ticks(st, 1, {"n1": 4.0, "n2": 4.0}, start=T0 + 300)
    assert why(Choice(st), "other", "x-1") is None
    st.record(decision(st, ("other", "x-1"), "n2", "n3", T0 + 300))
    ticks(st, 1, {"n1": 4.0, "n2": 4.0, "n3": 1.0}, start=T0 + 400)
    assert why(Choice(st), "other", "y-1") == "limit-total"  # 4 in the window
    # limits are per window of event time: an hour later they are free again
    ticks(st, 1, {"n1": 4.0, "n2": 4.0, "n3": 1.0}, start=T0 + 3700)
    st.prune_decisions(T0 + 3700, 0)
    assert why(Choice(st), "other", "y-1") is None and why(Choice(st), "shop", "web-2") is None


def test_limits_per_namespace_and_workload() -> None:
    st = state_of(node_ev("n1"), node_ev("n2"), node_ev("n3"), *[pod_ev("shop", f"web-{i}", "n1") for i in range(3)],
                  pod_ev("shop", "api-1", "n2", app="api"),
                  guard=GuardSettings(max_per_workload=1, max_per_namespace=2, workload_cooldown_s=0))
    ticks(st, 1, {"n1": 4.0, "n2": 4.0, "n3": 1.0})
    ch = Choice(st)
    ch.take(("shop", "web-0"), st.pods[("shop", "web-0")], "n1", "n3", (0.1, 0.0))
    assert ch.blocked(("shop", "web-1"), st.pods[("shop", "web-1")], "n1") == "limit-workload"
    ch.take(("shop", "api-1"), st.pods[("shop", "api-1")], "n2", "n3", (0.1, 0.0))
    st.apply_event(pod_ev("shop", "db-1", "n2", app="db"))
    assert ch.blocked(("shop", "db-1"), st.pods[("shop", "db-1")], "n2") == "limit-namespace"


def test_choice_targets_exclusions() -> None:
    taint = m.Taint(key="dedicated", value="gpu", effect="NoSchedule")
    st = state_of(node_ev("src", zone="a"), node_ev("ok", zone="a"), node_ev("tainted", zone="a", taints=[taint]),
                  node_ev("full", zone="a", cpu=1.0), node_ev("hot", zone="a"), node_ev("silent", zone="a"),
                  node_ev("other-zone", zone="b"), node_ev("with-noisy", zone="a"),
                  pod_ev("shop", "web-1", "src", topology_spread=SPREAD), pod_ev("shop", "web-2", "src",
                                                                                 topology_spread=SPREAD),
                  pod_ev("shop", "web-3", "other-zone", topology_spread=SPREAD),
                  pod_ev("batch", "noisy-1", "with-noisy", app="noisy"),
                  pod_ev("shop", "fill", "full", app="f", cpu=0.75))
    st.apply_anomaly(m.Anomaly(id="x", ts=T0, node="with-noisy", state="open", metric="cpi", severity=1,
                               victim=m.PodRef(namespace="shop", name="web-9", app="web"),
                               antagonists=[m.Suspect(namespace="batch", name="noisy-1", app="noisy", score=1)],
                               window_start=T0, window_end=T0))
    loads = {n: 1.0 for n in ("src", "ok", "tainted", "full", "other-zone", "with-noisy")}
    loads["hot"] = 7.0
    ticks(st, 1, loads)
    key = ("shop", "web-1")
    got = [t.node for t in Choice(st).targets(key, st.pods[key], "src", (0.5, 0.0))]
    # tainted: taint; full: requests; hot: real usage; silent: no metrics; with-noisy: kept apart;
    # other-zone: a: 2 -> 1, b: 1 -> 2 is fine (skew 1)
    assert got == ["ok", "other-zone"]
    st.apply_event(pod_ev("shop", "web-4", "other-zone", topology_spread=SPREAD))  # a 2, b 2: b would be 3 vs 1
    assert [t.node for t in Choice(st).targets(key, st.pods[key], "src", (0.5, 0.0))] == ["ok"]
    assert spread_move_ok(st, key, st.pods[key], "src", "other-zone") == (False, f"spread-{ZONE_LABEL}")


def test_preference_lower_priority_healthy_elsewhere_not_recently_moved() -> None:
    st = state_of(node_ev("n1"), node_ev("n2"), pod_ev("shop", "solo-1", "n1", app="solo"),
                  pod_ev("shop", "web-1", "n1"), pod_ev("shop", "web-2", "n2"),
                  pod_ev("shop", "vip-1", "n1", app="vip", priority=100), pod_ev("shop", "vip-2", "n2", app="vip"),
                  pod_ev("shop", "api-1", "n1", app="api"), pod_ev("shop", "api-2", "n2", app="api"))
    st.last_move_workload["shop/api"] = T0 - 10
    ticks(st, 1, {"n1": 1.0, "n2": 1.0})
    ch = Choice(st)
    order = sorted(["solo-1", "web-1", "vip-1", "api-1"], key=lambda n: ch.prefer(("shop", n), st.pods[("shop", n)]))
    assert order == ["web-1", "api-1", "solo-1", "vip-1"]


# ---------------------------------------------------------------- nowhere to go / missing metrics

def test_no_decision_when_the_pod_has_nowhere_to_go_by_zone_spread() -> None:
    """LowNodeLoad never moves a pod where it would break its zone spread (and so ZoneSpread has nothing to undo)."""
    st = state_of(node_ev("hot", zone="a"), node_ev("cool", zone="b"),
                  pod_ev("shop", "web-1", "hot", topology_spread=SPREAD),
                  pod_ev("shop", "web-2", "hot", topology_spread=SPREAD),
                  pod_ev("shop", "web-3", "cool", topology_spread=SPREAD),
                  pod_ev("shop", "web-4", "cool", topology_spread=SPREAD))
    pods = {("shop", "web-1"): 3.0, ("shop", "web-2"): 3.0}
    ticks(st, 3, {"hot": (7.2, pods), "cool": 1.0})
    assert lnl.plan(st, absolute_lnl()) == []  # a 2 / b 2 -> a 1 / b 3: skew 2 > 1
    st.apply_event(pod_ev("shop", "batch-1", "hot", app="batch"))
    ticks(st, 3, {"hot": (7.2, {**pods, ("shop", "batch-1"): 2.0}), "cool": 1.0}, start=T0 + 1000)
    assert [d.pod.name for d in lnl.plan(st, absolute_lnl())] == ["batch-1"]


def test_missing_metrics_hold_every_strategy() -> None:
    pl = Planner(build_strategies({"AllocatedButIdle": {"enabled": True, "consecutive": 3}, "LowNodeLoad": ABSOLUTE}))
    for ev in (node_ev("hot", zone="a"), node_ev("cool", zone="b"), pod_ev("shop", "web-1", "hot"),
               pod_ev("shop", "web-2", "hot"), pod_ev("shop", "web-3", "hot")):
        pl.state.apply_event(ev)
    pods = {("shop", "web-1"): 3.0, ("shop", "web-2"): 2.0, ("shop", "web-3"): 2.0}
    out = []
    for i in range(3):
        ts = T0 + 60 * i
        out += pl.plan_tick(ts, {"hot": summary(ts, "hot", 7.2, pods=pods)})  # cool never reports
    assert out == []
    ts = T0 + 180
    out = pl.plan_tick(ts, {"hot": summary(ts, "hot", 7.2, pods=pods), "cool": summary(ts, "cool", 1.0)})
    assert len(out) == 1 and out[0].to_nodes == ["cool"]


# ---------------------------------------------------------------- a small simulated loop: no ping-pong

def simulate(n_ticks: int = 40, batch_cpu: float = 1.75,
             n_batch: int = 4) -> tuple[list[m.DescheduleDecision], ClusterState]:
    """Zone a: a1, a2; zone b: b1 only, which is hot. The web workload (maxSkew 1) is skewed 3 / 0
    toward zone a, and b1 carries batch pods. Decisions are applied like the scheduler would:
    the pod is deleted and a replacement is bound to the decision's best target."""
    usage = {"web": 1.0, "batch": batch_cpu}
    pl = Planner(build_strategies({"LowNodeLoad": {**ABSOLUTE, "consecutive": 2, "node_cooldown_s": 60}}),
                 guard=GuardSettings(workload_cooldown_s=60))
    evs = [node_ev("a1", zone="a"), node_ev("a2", zone="a"), node_ev("b1", zone="b"),
           pod_ev("shop", "web-1", "a1", topology_spread=SPREAD, cpu=1.0),
           pod_ev("shop", "web-2", "a1", topology_spread=SPREAD, cpu=1.0),
           pod_ev("shop", "web-3", "a2", topology_spread=SPREAD, cpu=1.0),
           *[pod_ev("batch", f"batch-{i}", "b1", app=f"batch{i}", cpu=1.0) for i in range(n_batch)]]
    for ev in evs:
        pl.state.apply_event(ev)
    decisions: list[m.DescheduleDecision] = []
    seq = 0
    for i in range(n_ticks):
        ts = T0 + 60 * i
        sums = {}
        for n in ("a1", "a2", "b1"):
            pods = {k: usage["web" if k[0] == "shop" else "batch"] for k, _ in pl.state.pods_on(n)}
            sums[n] = summary(ts, n, min(8.0, sum(pods.values())), pods=pods)
        ds = pl.plan_tick(ts, sums)
        decisions += ds
        for d in ds:  # the scheduler re-places the pod on the best target
            key = (d.pod.namespace, d.pod.name)
            old = pl.state.pods[key]
            seq += 1
            pl.state.apply_event(pod_ev(key[0], key[1], d.from_node, type="DELETED", ts=ts + 1))
            assert old.workload is not None
            pl.state.apply_event(m.ClusterEvent(
                ts=ts + 2, type="ADDED", kind="Pod", namespace=key[0], name=f"{old.workload.name}-r{seq}",
                uid=f"r{seq}", pod=old.model_copy(update={"node": d.evidence["best_target"]})))
    return decisions, pl.state


def test_zone_and_load_do_not_ping_pong() -> None:
    decisions, st = simulate()
    moves = [(d.strategy, d.workload.key, st.zone_of(d.from_node), st.zone_of(str(d.evidence["best_target"])))
             for d in decisions]
    # load first: batch leaves the hot b1 (ZoneSpread does not target a hot node) ...
    assert moves[0][0] == "LowNodeLoad" and moves[0][1].startswith("batch/")
    # ... then the zone repair lands in b once b1 has room, and nothing undoes it
    zone_moves = [mv for mv in moves if mv[0] == "ZoneSpread"]
    assert zone_moves and all(mv[2:] == ("a", "b") for mv in zone_moves)
    web_moves = [mv for mv in moves if mv[1] == "shop/web"]
    assert all(mv[2:] == ("a", "b") for mv in web_moves)  # never back from b to a
    per_wl = Counter(mv[1] for mv in moves)
    assert max(per_wl.values()) <= 2 and len(decisions) <= 6
    # the end state is settled: zones within maxSkew, no node hot, and the last 20 ticks decided nothing
    from streams.core.state import skew, spread_counts
    web = next(p for p in st.pods.values() if p.app == "web")
    assert skew(spread_counts(st, "shop", web, SPREAD[0])) <= 1
    assert all((st.sample(n).cpu_pct or 0) <= 80 for n in st.ready_nodes())
    assert max(d.made_at for d in decisions) < T0 + 60 * 20


def test_zone_repair_waits_while_the_only_target_zone_would_be_hot() -> None:
    # 5 batch pods at 1.5 cores: after one load move b1 sits at 75 %; a web pod (1 core) would make it hot
    decisions, st = simulate(batch_cpu=1.5, n_batch=5)
    assert [(d.strategy, d.from_node) for d in decisions] == [("LowNodeLoad", "b1")]
    web = next(p for p in st.pods.values() if p.app == "web")
    from streams.core.state import skew, spread_counts
    assert skew(spread_counts(st, "shop", web, SPREAD[0])) == 3  # left for later, not forced into a hot node


def test_simulation_is_deterministic() -> None:
    a, _ = simulate()
    b, _ = simulate()
    assert [d.model_dump() for d in a] == [d.model_dump() for d in b]
    assert len({d.id for d in a}) == len(a)


@pytest.mark.parametrize("guard", [GuardSettings(max_total=1), GuardSettings(max_per_node=1)])
def test_window_limits_bound_the_loop(guard: GuardSettings) -> None:
    pl = Planner(build_strategies({"LowNodeLoad": {"consecutive": 1, "node_cooldown_s": 0, "pod_cooldown_s": 0,
                                                   "max_evictions_per_tick_per_node": 5,
                                                   "max_evictions_per_workload_per_tick": 5}}), guard=guard)
    for ev in (node_ev("hot"), node_ev("cool"), *[pod_ev("shop", f"p-{i}", "hot", app=f"app{i}") for i in range(6)]):
        pl.state.apply_event(ev)
    pods = {("shop", f"p-{i}"): 1.0 for i in range(6)}
    out = []
    for i in range(10):  # the pods never leave in this test: the hot node stays hot
        ts = T0 + 60 * i
        out += pl.plan_tick(ts, {"hot": summary(ts, "hot", 7.9, pods=pods), "cool": summary(ts, "cool", 0.0)})
    assert len(out) == 1


def test_planner_from_settings_and_anomalies_through_the_planner() -> None:
    from streams.core.settings import StreamsSettings
    from tests.test_core_strategies import LOADS, _noisy_landing, anomaly

    pl = Planner.from_settings(StreamsSettings.from_config({"streams": {"guard": {"max_total": 2},
                                                                        "planner": {"history": 4}}}))
    assert pl.state.guard.max_total == 2 and pl.state.history == 6  # the longest `consecutive` wins
    for ev in (node_ev("n1"), node_ev("n2"), node_ev("n3")):
        pl.state.apply_event(ev)
    # the same pods, through events (heavy latency pods: noisy-1's replacement would be bound to n3)
    for ev_key, ev_pod in _noisy_landing(True, True).pods.items():
        pl.state.apply_event(m.ClusterEvent(ts=T0, type="ADDED", kind="Pod", namespace=ev_key[0], name=ev_key[1],
                                            uid=f"uid-{ev_key[1]}", pod=ev_pod))
    pl.apply_anomaly(anomaly())
    out = pl.plan_tick(T0, {n: summary(T0, n, c) for n, c in LOADS.items()})
    assert [(d.strategy, d.pod.name, d.to_nodes) for d in out] == [("Interference", "noisy-1", ["n3"])]
    assert pl.state.planned[("batch", "noisy-1")].to_node == "n3" and "an-1" in pl.state.acted
    assert pl.plan_tick(T0 + 60, {n: summary(T0 + 60, n, c) for n, c in LOADS.items()}) == []


def test_young_pods_are_not_chosen_until_min_pod_age() -> None:
    """A pod created less than ``min_pod_age_s`` ago (e.g. a fresh replacement) is 'too-young'."""
    st = state_of(node_ev("hot"), node_ev("cool"), pod_ev("shop", "web-1", "hot", created_at=T0))
    age = st.evictor.min_pod_age_s
    assert age > 0
    ticks(st, 1, {"hot": 7.2, "cool": 1.0}, start=T0 + age - 10)
    assert Choice(st).blocked(("shop", "web-1"), st.pods[("shop", "web-1")], "hot") == "too-young"
    ticks(st, 1, {"hot": 7.2, "cool": 1.0}, start=T0 + age + 10)
    assert Choice(st).blocked(("shop", "web-1"), st.pods[("shop", "web-1")], "hot") is None


def test_no_pod_of_a_workload_leaves_the_node_its_replacement_just_landed_on() -> None:
    st = state_of(node_ev("a"), node_ev("b"), pod_ev("shop", "web-1", "a"), pod_ev("shop", "web-2", "b"))
    ticks(st, 1, {"a": 7.2, "b": 1.0})
    st.record(decision(st, ("shop", "web-1"), "a", "b", T0))
    st.apply_event(pod_ev("shop", "web-1", "a", type="DELETED", ts=T0 + 5))
    st.apply_event(pod_ev("shop", "web-3", "b", ts=T0 + 10))  # the replacement lands on b
    hold = GUARD.landing_hold_s
    ticks(st, 1, {"a": 1.0, "b": 7.2}, start=T0 + hold - 60)
    ch = Choice(st)
    assert ch.blocked(("shop", "web-2"), st.pods[("shop", "web-2")], "b") == "recent-landing"
    ticks(st, 1, {"a": 1.0, "b": 7.2}, start=T0 + hold + 60)
    assert Choice(st).blocked(("shop", "web-2"), st.pods[("shop", "web-2")], "b") is None


def test_a_prefer_no_schedule_node_the_pod_does_not_tolerate_is_no_target() -> None:
    """The scheduler places a replacement elsewhere whenever it can, so such a node is no target (e.g. elastic
    nodes tainted so pods fill the fixed nodes first); a pod that tolerates the taint may go there, and
    ``avoid_prefer_no_schedule: false`` turns the rule off."""
    soft = m.Taint(key="kubetide.io/elastic", value="true", effect="PreferNoSchedule")
    st = state_of(node_ev("src", zone="a"), node_ev("fixed", zone="a"), node_ev("elastic", zone="a", taints=[soft]),
                  pod_ev("shop", "web-1", "src"),
                  pod_ev("shop", "ok-1", "src", app="ok",
                         tolerations=[m.Toleration(key="kubetide.io/elastic", operator="Exists")]))
    ticks(st, 1, {"src": 1.0, "fixed": 2.0, "elastic": 1.0})
    web, ok = ("shop", "web-1"), ("shop", "ok-1")
    assert [t.node for t in Choice(st).targets(web, st.pods[web], "src", (0.5, 0.0))] == ["fixed"]
    assert [t.node for t in Choice(st).targets(ok, st.pods[ok], "src", (0.5, 0.0))] == ["elastic", "fixed"]
    st.guard = GuardSettings(avoid_prefer_no_schedule=False)
    assert [t.node for t in Choice(st).targets(web, st.pods[web], "src", (0.5, 0.0))] == ["elastic", "fixed"]
