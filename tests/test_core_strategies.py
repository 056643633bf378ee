"""Every descheduling strategy on small hand-built clusters: decides when it should, not when it shouldn't."""

from __future__ import annotations

from typing import Any

import pytest

from kubetide import models as m
from kubetide.config import ConfigError
from streams.core.settings import StreamsSettings
from streams.core.state import ZONE_LABEL, Choice, ClusterState, GuardSettings, Landing, predicted_landing
from streams.core.strategies import REGISTRY, build_strategies, get
from streams.core.strategies import allocatedbutidle as abi
from streams.core.strategies import interference as itf
from streams.core.strategies import lownodeload as lnl
from streams.core.strategies import zonespread as zs
from tests.test_core_state import T0, GiB, node_ev, pod_ev, state_of, summary

ABSOLUTE = {"mode": "absolute", "high_cpu_pct": 80.0, "low_cpu_pct": 50.0, "high_mem_pct": 90.0, "low_mem_pct": 60.0}


def absolute_lnl(**kw: object) -> lnl.LowNodeLoadSettings:
    """LowNodeLoad with absolute 80 / 50 (CPU) and 90 / 60 (memory) thresholds, as these tests assume."""
    return lnl.LowNodeLoadSettings(**{**ABSOLUTE, **kw})  # type: ignore[arg-type]


SPREAD = [m.TopologySpread(max_skew=1, topology_key=ZONE_LABEL, match_labels={"app": "web"})]


def ticks(st: ClusterState, n: int, loads: dict[str, Any], start: float = T0, step: float = 60.0) -> float:
    """``n`` ticks; ``loads[node]`` is cpu cores, or (cpu, pods) or (cpu, pods, mem), or None (missing)."""
    ts = start
    for i in range(n):
        ts = start + step * i
        sums = {}
        for node, v in loads.items():
            if v is None:
                continue
            cpu, pods, mem = (v, None, None) if isinstance(v, float | int) else (*tuple(v), None)[:3]
            kw = {"mem": mem} if mem is not None else {}
            sums[node] = summary(ts, node, cpu, pods=pods, **kw)
        st.apply_tick(ts, sums)
    return ts


# ---------------------------------------------------------------- LowNodeLoad extensions

def _three() -> ClusterState:
    return state_of(node_ev("a"), node_ev("b"), node_ev("c"), node_ev("d"),
                    pod_ev("shop", "web-1", "a", app="web"), pod_ev("shop", "api-1", "a", app="api"),
                    pod_ev("shop", "web-2", "b", app="web"))


def test_lownodeload_deviation_mode_uses_the_cluster_mean() -> None:
    pods = {("shop", "web-1"): 1.0, ("shop", "api-1"): 1.0}
    st = _three()  # a 62.5 %, b 50 %, c 50 %, d 25 %: mean 46.9 %
    ticks(st, 3, {"a": (5.0, pods), "b": 4.0, "c": 4.0, "d": 2.0})
    assert lnl.plan(st, absolute_lnl()) == []  # absolute 80/50: nobody hot
    dev = absolute_lnl(mode="deviation", high_cpu_pct=10, low_cpu_pct=10)
    ds = lnl.plan(st, dev)
    assert [(d.from_node, d.to_nodes) for d in ds] == [("a", ["d"])]
    ev = ds[0].evidence
    assert ev["mode"] == "deviation" and ev["mean_cpu_pct"] == 46.875 and ev["high_cpu_pct"] == 56.875
    assert ev["low_cpu_pct"] == 36.875 and ev["best_target"] == "d"
    st2 = _three()  # a flat cluster: nothing beyond the mean
    ticks(st2, 3, {"a": (4.0, pods), "b": 4.0, "c": 4.0, "d": 4.0})
    assert lnl.plan(st2, dev) == []


def test_lownodeload_memory_weight() -> None:
    pods = {("shop", "web-1"): 0.5, ("shop", "api-1"): 0.5}
    st = _three()
    ticks(st, 3, {"a": (2.0, pods, 30.5 * GiB), "b": 2.0, "c": 2.0, "d": 2.0})  # a: 95 % memory, 25 % CPU
    assert lnl.plan(st, absolute_lnl()) == []  # CPU only by default
    mem = absolute_lnl(cpu_weight=0, mem_weight=1)
    ds = lnl.plan(st, mem)
    assert len(ds) == 1 and ds[0].from_node == "a" and ds[0].evidence["node_mem_pct"] == 95.312
    assert ds[0].pod.name == "web-1"  # healthy replica elsewhere preferred over api-1 (its only pod)


@pytest.mark.parametrize("bad", [{"mode": "relative"}, {**ABSOLUTE, "high_mem_pct": 0},
                                 {**ABSOLUTE, "low_mem_pct": 95},
                                 {"cpu_weight": -1}, {"cpu_weight": 0, "mem_weight": 0}])
def test_lownodeload_new_settings_validate(bad: dict) -> None:
    with pytest.raises(ConfigError, match=r"streams\.strategies\.LowNodeLoad\.(mode|high_mem_pct|low_mem_pct|cpu_w)"):
        build_strategies({"LowNodeLoad": bad})


# ---------------------------------------------------------------- AllocatedButIdle

ABI = abi.AllocatedButIdleSettings(enabled=True, consecutive=3)


def _full(fat_cpu: float = 4.0, **kw: Any) -> ClusterState:
    return state_of(node_ev("full"), node_ev("empty"),
                    pod_ev("shop", "fat-1", "full", app="fat", cpu=fat_cpu, **kw),
                    pod_ev("shop", "fat-2", "full", app="fat", cpu=3.5),
                    pod_ev("shop", "small-1", "empty", app="small", cpu=1.0))


FULL_PODS = {("shop", "fat-1"): 0.2, ("shop", "fat-2"): 0.1}


def test_allocated_but_idle_frees_room() -> None:
    st = _full()  # 7.5 of 8 cores requested = 93.75 %, 0.3 cores used
    ticks(st, 3, {"full": (0.3, FULL_PODS), "empty": 1.0})
    assert abi.plan(st, abi.AllocatedButIdleSettings()) == []  # opt-in
    ds = abi.plan(st, ABI)
    assert len(ds) == 1
    d = ds[0]
    assert (d.pod.name, d.from_node, d.to_nodes, d.strategy) == ("fat-1", "full", ["empty"], "AllocatedButIdle")
    assert d.evidence["node_requested_cpu_pct"] == 93.75 and d.evidence["pod_cpu_peak"] == 0.2
    assert d.evidence["request_to_usage"] == 20.0 and d.evidence["best_target"] == "empty"


def test_allocated_but_idle_does_not_decide_when_it_should_not() -> None:
    st = _full(fat_cpu=3.0)  # 6.5 / 8 = 81 %: not full
    ticks(st, 3, {"full": (0.3, FULL_PODS), "empty": 1.0})
    assert abi.plan(st, ABI) == []
    st = _full()
    ticks(st, 3, {"full": (4.0, FULL_PODS), "empty": 1.0})  # 50 % used: not idle
    assert abi.plan(st, ABI) == []
    st = _full()
    ticks(st, 2, {"full": (0.3, FULL_PODS), "empty": 1.0})  # too few samples
    assert abi.plan(st, ABI) == []
    st = _full()
    ticks(st, 3, {"full": (7.0, {("shop", "fat-1"): 3.5, ("shop", "fat-2"): 3.4}), "empty": 1.0})
    assert abi.plan(st, abi.AllocatedButIdleSettings(enabled=True, consecutive=3, max_usage_pct=100)) == []
    st = _full()
    st.apply_event(pod_ev("shop", "big", "empty", app="big", cpu=5.0))  # target would be > 90 % requested
    ticks(st, 3, {"full": (0.3, FULL_PODS), "empty": 1.0})
    assert abi.plan(st, ABI) == []
    st = _full()
    ticks(st, 3, {"full": (0.3, FULL_PODS), "empty": 7.0})  # target hot
    assert abi.plan(st, ABI) == []


# ---------------------------------------------------------------- ZoneSpread

def _zones(*web: tuple[str, str], b_taint: bool = False, extra: tuple = ()) -> ClusterState:
    taints = [m.Taint(key="dedicated", value="x", effect="NoSchedule")] if b_taint else []
    return state_of(node_ev("a1", zone="a"), node_ev("a2", zone="a"), node_ev("b1", zone="b", taints=taints),
                    *[pod_ev("shop", name, node, app="web", topology_spread=SPREAD) for name, node in web], *extra)


THREE_IN_A = (("web-1", "a1"), ("web-2", "a1"), ("web-3", "a2"))


def test_zone_spread_repairs_skew() -> None:
    st = _zones(*THREE_IN_A)
    ticks(st, 1, {"a1": 6.0, "a2": 2.0, "b1": 1.0})
    ds = zs.plan(st, zs.ZoneSpreadSettings())
    assert len(ds) == 1
    d = ds[0]
    assert d.from_node == "a1" and d.to_nodes == ["b1"] and d.strategy == "ZoneSpread"  # hottest source
    assert d.pod.name == "web-1"
    assert (d.evidence["skew"], d.evidence["max_skew"], d.evidence["from_zone"], d.evidence["to_zone"]) == (
        3, 1, "a", "b")


def test_zone_spread_does_not_decide_when_it_should_not() -> None:
    loads = {"a1": 2.0, "a2": 2.0, "b1": 1.0}
    st = _zones(("web-1", "a1"), ("web-2", "a2"), ("web-3", "b1"))  # 2 / 1: within maxSkew
    ticks(st, 1, loads)
    assert zs.plan(st, zs.ZoneSpreadSettings()) == []
    st = _zones(*THREE_IN_A, b_taint=True)  # the under-represented zone has no node that fits
    ticks(st, 1, loads)
    assert zs.plan(st, zs.ZoneSpreadSettings()) == []
    st = _zones(*THREE_IN_A)
    ticks(st, 1, {"a1": 2.0, "a2": 2.0, "b1": 7.0})  # b1 hot: no zone <-> load ping-pong
    assert zs.plan(st, zs.ZoneSpreadSettings()) == []
    st = _zones(*THREE_IN_A)
    ticks(st, 1, {"a1": 2.0, "a2": 2.0})  # b1 metrics missing: hold
    assert zs.plan(st, zs.ZoneSpreadSettings()) == []
    # counted like the scheduler: a pod that is not ready does not count
    st = _zones(("web-1", "a1"), ("web-3", "b1"), extra=(
        pod_ev("shop", "web-2", "a2", app="web", topology_spread=SPREAD, ready=False),
        pod_ev("shop", "web-4", "a2", app="web", topology_spread=SPREAD, phase="Pending")))
    ticks(st, 1, loads)
    assert zs.plan(st, zs.ZoneSpreadSettings()) == []
    # ScheduleAnyway only with include_soft
    soft = [m.TopologySpread(max_skew=1, topology_key=ZONE_LABEL, match_labels={"app": "web"},
                             when_unsatisfiable="ScheduleAnyway")]
    st = state_of(node_ev("a1", zone="a"), node_ev("b1", zone="b"),
                  *[pod_ev("shop", f"web-{i}", "a1", app="web", topology_spread=soft) for i in range(3)])
    ticks(st, 1, {"a1": 2.0, "b1": 1.0})
    assert zs.plan(st, zs.ZoneSpreadSettings()) == []
    assert len(zs.plan(st, zs.ZoneSpreadSettings(include_soft=True))) == 1
    assert zs.plan(st, zs.ZoneSpreadSettings(enabled=False, include_soft=True)) == []


def test_zone_spread_node_selector_limits_domains() -> None:
    sel = {"disk": "ssd"}
    st = state_of(node_ev("a1", zone="a", labels={"disk": "ssd"}), node_ev("b1", zone="b"),
                  *[pod_ev("shop", f"web-{i}", "a1", app="web", topology_spread=SPREAD, node_selector=sel)
                    for i in range(3)])
    ticks(st, 1, {"a1": 2.0, "b1": 1.0})
    assert zs.plan(st, zs.ZoneSpreadSettings()) == []  # zone b has no eligible node: one domain only


# ---------------------------------------------------------------- Interference

def anomaly(*, state: str = "open", antagonist: str = "noisy-1", score: float = 0.9, ts: float = T0,
            aid: str = "an-1", node: str = "n1") -> m.Anomaly:
    return m.Anomaly(id=aid, ts=ts, node=node, state=state,
                     victim=m.PodRef(namespace="shop", name="lat-1", app="lat", node=node), metric="cpi",
                     severity=2.5,
                     antagonists=[m.Suspect(namespace="batch", name=antagonist, app="noisy", score=score)],
                     window_start=ts - 300, window_end=ts)


def _noisy(noisy_priority: int = 0) -> ClusterState:
    return state_of(node_ev("n1"), node_ev("n2"), node_ev("n3"),
                    pod_ev("shop", "lat-1", "n1", app="lat"), pod_ev("shop", "lat-2", "n2", app="lat"),
                    pod_ev("batch", "noisy-1", "n1", app="noisy", priority=noisy_priority),
                    pod_ev("batch", "noisy-2", "n3", app="noisy"))


LOADS = {"n1": 4.0, "n2": 2.0, "n3": 3.0}
NO_LANDING = itf.InterferenceSettings(require_landing=False)  # the target rules alone (no scheduler model)


def test_apply_anomaly_records_open_cleared_and_the_pair() -> None:
    st = _noisy()
    st.apply_anomaly(anomaly())
    assert set(st.anomalies) == {"an-1"} and st.apart == {("batch/noisy", "shop/lat"): T0}
    assert st.kept_apart_from("shop/lat") == {"batch/noisy"} and st.kept_apart_from("batch/noisy") == {"shop/lat"}
    st.apply_anomaly(anomaly(state="cleared", ts=T0 + 60))
    assert st.anomalies == {} and ("batch/noisy", "shop/lat") in st.apart  # the pair outlives the anomaly
    st.prune_decisions(T0 + GuardSettings().keep_apart_s + 1, 0)
    assert st.apart == {}
    # a pod the state does not know is named by its app
    assert st.workload_of("x", "unknown-pod", "app") == "x/app" and st.workload_of("x", "y") is None


def test_interference_moves_the_antagonist_away_from_the_victims_workload() -> None:
    st = _noisy()
    st.apply_anomaly(anomaly())
    ticks(st, 1, LOADS)
    ds = itf.plan(st, NO_LANDING)
    assert len(ds) == 1
    d = ds[0]
    # n2 hosts lat-2 (the victim's workload): not a target; n3 is
    assert (d.pod.namespace, d.pod.name, d.from_node, d.to_nodes) == ("batch", "noisy-1", "n1", ["n3"])
    assert d.evidence["moved"] == "antagonist" and d.evidence["anomaly_id"] == "an-1"
    st.record(d)
    assert itf.plan(st, NO_LANDING) == []  # acted on once
    assert "an-1" in st.acted


def test_interference_moves_the_victim_when_the_antagonist_has_higher_priority() -> None:
    st = _noisy(noisy_priority=1000)
    st.apply_anomaly(anomaly())
    ticks(st, 1, LOADS)
    d = itf.plan(st, NO_LANDING)[0]
    # the victim goes, but not to n3 (noisy-2 is there) — and n2 hosts lat-2, its own workload: fine
    assert (d.pod.name, d.to_nodes, d.evidence["moved"]) == ("lat-1", ["n2"], "victim")


def test_interference_does_not_decide_when_it_should_not() -> None:
    for a, loads in [(anomaly(state="cleared"), LOADS), (anomaly(antagonist="gone"), LOADS),
                     (anomaly(score=0.1), LOADS), (anomaly(node="n2"), LOADS),
                     (anomaly(), {"n2": 2.0, "n3": 3.0}),  # the anomaly's node has no metrics: hold
                     (anomaly(), {"n1": 4.0, "n2": 2.0, "n3": 7.5})]:  # only target hot: nowhere to go
        st = _noisy()
        st.apply_anomaly(a)
        ticks(st, 1, loads)
        assert itf.plan(st, itf.InterferenceSettings(min_score=0.5)) == [], a
    st = _noisy()
    st.apply_anomaly(anomaly(ts=T0 - 4000))  # too old
    ticks(st, 1, LOADS)
    assert itf.plan(st, itf.InterferenceSettings()) == []


def _noisy_landing(heavy1: bool, heavy2: bool) -> ClusterState:
    """_noisy() where lat-1 / lat-2 may be heavy (7 cores, 28 GiB requested): the requests steer where the
    scheduler re-places noisy-1."""
    def req(heavy: bool) -> dict[str, float]:
        return {"cpu": 7.0, "mem": 28 * GiB} if heavy else {}

    return state_of(node_ev("n1"), node_ev("n2"), node_ev("n3"),
                    pod_ev("shop", "lat-1", "n1", app="lat", **req(heavy1)),
                    pod_ev("shop", "lat-2", "n2", app="lat", **req(heavy2)),
                    pod_ev("batch", "noisy-1", "n1", app="noisy"), pod_ev("batch", "noisy-2", "n3", app="noisy"))


def test_interference_moves_only_where_the_scheduler_would_put_the_replacement() -> None:
    # light n1: with noisy-1 gone it is the least-allocated node, so its replacement lands back on n1,
    # beside lat-1 again — evicting would only restart it there: no decision (NO_LANDING would move it)
    st = _noisy_landing(False, False)
    st.apply_anomaly(anomaly())
    ticks(st, 1, LOADS)
    assert predicted_landing(st, ("batch", "noisy-1"), st.pods[("batch", "noisy-1")], "n1") == "n1"
    assert itf.plan(st, itf.InterferenceSettings()) == [] and len(itf.plan(st, NO_LANDING)) == 1
    # n1 and n2 heavily requested: the scheduler picks n3 (despite noisy-2 there, -50 spread), a target: the move works
    st = _noisy_landing(True, True)
    st.apply_anomaly(anomaly())
    ticks(st, 1, LOADS)
    ds = itf.plan(st, itf.InterferenceSettings())
    assert [(d.pod.name, d.to_nodes, d.evidence["predicted_landing"], d.evidence["best_target"]) for d in ds] == [
        ("noisy-1", ["n3"], "n3", "n3")]
    # only n1 heavy: the scheduler would pick n2, next to lat-2 (kept apart from noisy): no decision
    st = _noisy_landing(True, False)
    st.apply_anomaly(anomaly())
    ticks(st, 1, LOADS)
    assert predicted_landing(st, ("batch", "noisy-1"), st.pods[("batch", "noisy-1")], "n1") == "n2"
    assert itf.plan(st, itf.InterferenceSettings()) == []


def test_predicted_landing_models_the_default_scheduler() -> None:
    key = ("shop", "web-1")
    # least-allocated by requests (not by measured load): b has the most free CPU and memory
    st = state_of(node_ev("a"), node_ev("b"), node_ev("c"), pod_ev("shop", "web-1", "a", app="web"),
                  pod_ev("shop", "big-a", "a", app="big", cpu=4.0), pod_ev("shop", "big-c", "c", app="big", cpu=3.0),
                  pod_ev("shop", "small-b", "b", app="small", cpu=1.0))
    assert predicted_landing(st, key, st.pods[key], "a") == "b"
    # spread: a sibling on b costs it the node-spread half (50 points) — more than c's 2 cores less free (12.5)
    st.apply_event(pod_ev("shop", "web-2", "b", app="web"))
    assert predicted_landing(st, key, st.pods[key], "a") == "c"
    # a NoSchedule taint or a node selector rules a node out; nothing fits: None
    st.apply_event(node_ev("c", taints=[m.Taint(key="k", value="v", effect="NoSchedule")], type="MODIFIED"))
    assert predicted_landing(st, key, st.pods[key], "a") == "a"  # back home: b's sibling outweighs a's 4 cores
    sel = state_of(node_ev("a"), node_ev("b", labels={"disk": "ssd"}),
                   pod_ev("shop", "web-1", "a", app="web", node_selector={"disk": "ssd"}, cpu=9.0))
    assert predicted_landing(sel, key, sel.pods[key], "a") is None  # b fits the selector but not 9 cores
    # moves booked this tick count: their requests leave the source and land on the target
    st = state_of(node_ev("a"), node_ev("b"), pod_ev("shop", "web-1", "a", app="web"),
                  pod_ev("shop", "x", "b", app="x", cpu=2.0))
    assert predicted_landing(st, key, st.pods[key], "a") == "a"
    assert predicted_landing(st, key, st.pods[key], "a", moved={("shop", "x"): "a"},
                             extra_requests={"a": (2.0, 0.5 * GiB)}) == "b"


def test_predicted_landing_with_a_load_aware_scheduler() -> None:
    key = ("shop", "web-1")
    # c has the fewest requests but is busy (7.5 cores measured), b has 2 cores requested and is nearly idle
    st = state_of(node_ev("a"), node_ev("b"), node_ev("c"), pod_ev("shop", "web-1", "a", app="web"),
                  pod_ev("shop", "big-a", "a", app="big", cpu=6.0), pod_ev("shop", "x", "b", app="x", cpu=2.0))
    ticks(st, 1, {"a": (6.5, {key: 0.5}), "b": 1.0, "c": 7.5})
    assert predicted_landing(st, key, st.pods[key], "a") == "c"  # requests only: c
    assert predicted_landing(st, key, st.pods[key], "a", load_weight=5.0) == "b"  # load-aware: not the busy c
    # the guard's scheduler_load_weight is what Choice.landing uses
    assert Choice(st).landing(key, st.pods[key], "a") == "c"
    st.guard = GuardSettings(scheduler_load_weight=5.0)
    assert Choice(st).landing(key, st.pods[key], "a") == "b"


def _hot_with(db_cpu: float) -> ClusterState:
    """hot (web-1 uses 3 of its 7.2 cores; db-1 only requests db_cpu), cool (a 4-core request, little use)."""
    return state_of(node_ev("hot"), node_ev("cool"), pod_ev("shop", "web-1", "hot", app="web"),
                    pod_ev("shop", "db-1", "hot", app="db", cpu=db_cpu),
                    pod_ev("shop", "x-1", "cool", app="x", cpu=4.0))


def test_lownodeload_require_landing_skips_a_move_whose_replacement_lands_back() -> None:
    loads = {"hot": (7.2, {("shop", "web-1"): 3.0}), "cool": 1.0}
    st = _hot_with(0.1)  # hot has the fewest requests: web-1's replacement would be bound to hot again
    t = ticks(st, 3, loads)
    never, always = absolute_lnl(require_landing="never"), absolute_lnl(require_landing="always")
    ds = lnl.plan(st, never)
    assert [(d.pod.name, d.to_nodes, d.evidence["predicted_landing"]) for d in ds] == [("web-1", ["cool"], "hot")]
    assert lnl.plan(st, always) == []
    # the default asks only of a source whose latest move was seen to land badly (back on it, or on a hot node)
    default = absolute_lnl()
    assert default.require_landing == "after-hot-landing" and len(lnl.plan(st, default)) == 1
    st.landings.append(Landing(t - 600, "shop/db", ("shop", "db-0"), ("shop", "db-1"), "hot", "hot", True))
    assert lnl.plan(st, default) == []
    st.landings.append(Landing(t - 300, "shop/db", ("shop", "db-2"), ("shop", "db-3"), "hot", "cool", False))
    assert len(lnl.plan(st, default)) == 1  # a good landing since: asked no more
    st.landings[:] = [Landing(t - GuardSettings().backoff_max_s - 1, "shop/db", ("shop", "db-0"), ("shop", "db-1"),
                              "hot", "hot", True)]
    assert len(lnl.plan(st, default)) == 1  # forgotten after backoff_max_s
    st = _hot_with(6.0)  # db-1's requests make cool the scheduler's pick: the move works
    ticks(st, 3, loads)
    assert [(d.pod.name, d.evidence["predicted_landing"]) for d in lnl.plan(st, always)] == [("web-1", "cool")]
    with pytest.raises(ValueError, match="require_landing"):
        absolute_lnl(require_landing="sometimes").validate()


def test_other_strategies_keep_interfering_workloads_apart() -> None:
    st = state_of(node_ev("hot"), node_ev("cool-noisy"), node_ev("cool"),
                  pod_ev("shop", "lat-1", "hot", app="lat"), pod_ev("batch", "noisy-1", "cool-noisy", app="noisy"),
                  pod_ev("shop", "lat-2", "cool", app="lat"))
    st.apply_anomaly(anomaly(node="cool-noisy", ts=T0))
    ticks(st, 3, {"hot": (7.2, {("shop", "lat-1"): 3.0}), "cool-noisy": 1.0, "cool": 2.0})
    ds = lnl.plan(st, absolute_lnl())
    assert [d.to_nodes for d in ds] == [["cool"]]  # never next to the noisy workload


# ---------------------------------------------------------------- registry and config

def test_registry_and_config() -> None:
    assert list(REGISTRY) == ["ZoneSpread", "Interference", "LowNodeLoad", "AllocatedButIdle"]
    built = build_strategies({"AllocatedButIdle": {"enabled": True, "requested_pct": 95}})
    assert get(built, "AllocatedButIdle").requested_pct == 95 and get(built, "ZoneSpread") == zs.ZoneSpreadSettings()
    with pytest.raises(KeyError):
        get(built, "Nope")
    s = StreamsSettings.from_config({"streams": {"guard": {"max_per_node": 1}}})
    assert s.guard.max_per_node == 1 and StreamsSettings.from_config(None).guard == GuardSettings()


@pytest.mark.parametrize(("where", "bad"), [
    ("strategies.AllocatedButIdle", {"requested_pct": 0}),
    ("strategies.AllocatedButIdle", {"target_requested_pct": 95}),
    ("strategies.AllocatedButIdle", {"min_request_to_usage": 1}), ("strategies.AllocatedButIdle", {"consecutive": 0}),
    ("strategies.ZoneSpread", {"max_evictions_per_tick": 0}), ("strategies.ZoneSpread", {"topology_key": ""}),
    ("strategies.ZoneSpread", {"max_target_cpu_pct": 0}), ("strategies.Interference", {"min_severity": -1}),
    ("strategies.Interference", {"ttl_s": 0}), ("guard", {"max_per_node": 0}), ("guard", {"window_s": 0}),
    ("guard", {"backoff_factor": 0.5}), ("guard", {"hot_cpu_pct": 101}), ("guard", {"pod_cooldown_s": -1}),
])
def test_settings_validation_names_the_field(where: str, bad: dict) -> None:
    field = next(iter(bad))
    cfg: dict = {}
    node = cfg
    for part in where.split("."):
        node = node.setdefault(part, {})
    node.update(bad)
    with pytest.raises(ConfigError, match=rf"streams\.{where}\.{field}"):
        StreamsSettings.from_config({"streams": cfg})


# ---------------------------------------------------------------- docs

def test_docs_example_config_is_valid_and_every_setting_is_documented() -> None:
    import dataclasses
    import pathlib
    import re

    import yaml

    text = (pathlib.Path(__file__).parent.parent / "docs" / "strategies.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    s = StreamsSettings.from_config(yaml.safe_load(block.group(1)))
    assert get(list(s.strategies), "LowNodeLoad").mode == "deviation" and s.guard == GuardSettings()
    for name, strategy in REGISTRY.items():
        assert f"## {name}" in text
        for f in dataclasses.fields(strategy.settings_cls):
            assert f"| `{f.name}` |" in text, (name, f.name)
    for f in dataclasses.fields(GuardSettings):
        assert f"| `{f.name}` |" in text, f.name


# ---------------------------------------------------------------- placement hints

def _profile(ptype: str, interferes: list[str] | None = None) -> m.Profile:
    pct = m.Percentiles(p50=1, p90=1, p95=1, p99=1, max=1)
    return m.Profile(ts=T0, namespace="shop", app="web", pods=3, type=ptype, interferes_with=interferes or [],
                     windows=[m.ProfileWindow(window_s=3600, samples=10, cpu_cores=pct, mem_bytes=pct)])


def test_placement_hints_patch_diff_and_opt_in() -> None:
    from streams.core.strategies.placement import (
        PROFILE_TYPE_LABEL,
        PlacementSettings,
        dry_run_diff,
        merge_patch,
        placement_patch,
    )

    s = PlacementSettings(namespaces=("shop",))
    foreign = {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
        "matchExpressions": [{"key": "team", "operator": "In", "values": ["x"]}]}}}
    pref = "preferredDuringSchedulingIgnoredDuringExecution"
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAntiAffinity": {pref: [foreign]}}}}
    assert placement_patch("other", template, _profile("cpu-bound"), [], s) is None  # not opted in
    assert placement_patch("other", template, _profile("cpu-bound"), [], s,
                           {"kubetide.io/placement-hints": "true"}) is not None
    patch = placement_patch("shop", template, _profile("cpu-bound", ["batch"]), ["noisy", "web"], s)
    assert patch is not None
    tpl = patch["spec"]["template"]
    assert tpl["metadata"] == {"labels": {PROFILE_TYPE_LABEL: "cpu-bound"}}
    terms = tpl["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0] == foreign  # existing terms kept (a merge patch replaces lists whole)
    assert terms[1]["podAffinityTerm"]["labelSelector"]["matchExpressions"][0] == {
        "key": PROFILE_TYPE_LABEL, "operator": "In", "values": ["cpu-bound"]}
    assert terms[2]["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"] == ["batch", "noisy"]
    deployment = {"spec": {"template": template}}
    applied = merge_patch(deployment, patch)
    diff = dry_run_diff(deployment, patch)
    assert "+" in diff and PROFILE_TYPE_LABEL in diff and dry_run_diff(deployment, None) == ""
    # idempotent: applied again, nothing changes
    assert placement_patch("shop", applied["spec"]["template"], _profile("cpu-bound", ["batch"]), ["noisy"], s) is None
    # the type changes: our term is replaced, not duplicated; a balanced app loses the label and the term
    again = placement_patch("shop", applied["spec"]["template"], _profile("memory-bound", ["batch"]), ["noisy"], s)
    assert again is not None
    t2 = again["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][pref]
    assert len(t2) == 3
    assert t2[1]["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"] == ["memory-bound"]
    gone = placement_patch("shop", applied["spec"]["template"], _profile("balanced"), [], s)
    assert gone is not None and gone["spec"]["template"]["metadata"]["labels"] == {PROFILE_TYPE_LABEL: None}
    assert merge_patch(applied, gone)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"] == [foreign]
    with pytest.raises(ValueError, match="same_type_weight"):
        PlacementSettings(same_type_weight=0).validate()
