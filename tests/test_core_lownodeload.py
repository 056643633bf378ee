"""LowNodeLoad, the tick assembler and the planner loop (pure; no broker)."""

from __future__ import annotations

import random

import pytest

from kubetide.config import ConfigError
from streams.core.messages import PlannerInput
from streams.core.planner import Planner
from streams.core.settings import StreamsSettings
from streams.core.state import ClusterState
from streams.core.strategies import REGISTRY, build_strategies, get
from streams.core.strategies.lownodeload import LowNodeLoadSettings, plan
from streams.core.ticks import TickAssembler
from tests.test_core_state import T0, node_ev, pdb_ev, pod_ev, state_of, summary
from tests.test_core_strategies import ABSOLUTE, absolute_lnl

HOT_PODS = {("shop", "web-1"): 3.0, ("shop", "api-1"): 2.0, ("batch", "job-1"): 1.5}


def cluster(**kw: object) -> ClusterState:
    return state_of(node_ev("hot"), node_ev("cool"), node_ev("mid"),
                    pod_ev("shop", "web-1", "hot", app="web"), pod_ev("shop", "api-1", "hot", app="api"),
                    pod_ev("batch", "job-1", "hot", app="job"), pod_ev("shop", "web-2", "cool", app="web"), **kw)


def tick(st: ClusterState, ts: float, *, hot: float | None = 7.2, cool: float | None = 1.0,
         mid: float | None = 5.0) -> None:
    sums = {}
    if hot is not None:
        sums["hot"] = summary(ts, "hot", hot, pods=HOT_PODS)
    if cool is not None:
        sums["cool"] = summary(ts, "cool", cool, pods={("shop", "web-2"): 1.0})
    if mid is not None:
        sums["mid"] = summary(ts, "mid", mid)
    st.apply_tick(ts, sums)


def test_decides_after_n_consecutive_hot_samples_not_before() -> None:
    st, s = cluster(), absolute_lnl()
    tick(st, T0)
    tick(st, T0 + 10)
    assert plan(st, s) == []  # N-1 hot samples
    tick(st, T0 + 20)
    ds = plan(st, s)
    assert len(ds) == 1
    d = ds[0]
    # 7.2 cores on 8 = 90 %: web-1 (3.0) would overshoot below 50 % (4.2 = 52.5 %: in band) -> web-1
    assert (d.pod.namespace, d.pod.name, d.from_node, d.to_nodes) == ("shop", "web-1", "hot", ["cool"])
    assert d.made_at == T0 + 20 and d.expires_at == T0 + 20 + 300
    assert d.workload.key == "shop/web" and d.strategy == "LowNodeLoad"
    assert "hot" in d.reason and d.evidence["node_cpu_pct"] == 90.0 and d.evidence["pod_cpu_cores"] == 3.0
    assert d.pod.uid == "uid-web-1" and d.pod.node == "hot"


def test_prefers_pod_that_does_not_overshoot() -> None:
    st, s = cluster(), absolute_lnl()
    for i in range(3):  # 7.6 cores: web-1 (3.0) -> 4.6 = 57.5 % in band; but with 6.6 web-1 -> 45 % overshoots
        tick(st, T0 + 10 * i, hot=6.6)
    d = plan(st, s)[0]
    assert d.pod.name == "api-1"  # 6.6 - 2.0 = 4.6 -> 57.5 %: in [50, 80]


def test_streak_broken_by_a_cool_or_missing_sample() -> None:
    s = absolute_lnl()
    st = cluster()
    tick(st, T0)
    tick(st, T0 + 10, hot=3.0)
    tick(st, T0 + 20)
    tick(st, T0 + 30)
    assert plan(st, s) == []
    st = cluster()
    tick(st, T0)
    tick(st, T0 + 10, hot=None)  # missing is not zero, and not hot either: no streak
    tick(st, T0 + 20)
    tick(st, T0 + 30)
    assert plan(st, s) == []
    tick(st, T0 + 40)
    assert len(plan(st, s)) == 1


def test_no_decision_without_target_or_source_metrics() -> None:
    s = absolute_lnl()
    st = cluster()
    for i in range(3):
        tick(st, T0 + 10 * i, cool=4.5)  # 56 %: not below low
    assert plan(st, s) == []
    st = cluster()
    for i in range(3):
        tick(st, T0 + 10 * i, cool=None)  # target metrics missing: not a target
    assert plan(st, s) == []
    st = cluster()
    for i in range(2):
        tick(st, T0 + 10 * i)
    tick(st, T0 + 20, hot=None)  # source metrics missing in this tick
    assert plan(st, s) == []


def test_target_must_fit_by_requests_and_real_usage() -> None:
    s = absolute_lnl()
    st = cluster()
    st.apply_event(node_ev("cool", unschedulable=True, type="MODIFIED"))
    for i in range(3):
        tick(st, T0 + 10 * i)
    assert plan(st, s) == []  # cordoned target
    st = cluster()
    for i in range(3):
        tick(st, T0 + 10 * i, cool=3.9)  # 48.75 % < 50 but +1.5 (smallest pod) = 67 % ok; +3.0 = 86 % not
    d = plan(st, s)
    assert [x.pod.name for x in d] == ["api-1"]  # web-1 would push cool over 80 %


def test_requests_block_fit() -> None:
    s = absolute_lnl()
    st = state_of(node_ev("hot"), node_ev("cool"), pod_ev("shop", "web-1", "hot", cpu=3.0),
                  pod_ev("shop", "big", "cool", app="big", cpu=6.0))
    for i in range(3):
        st.apply_tick(T0 + 10 * i, {"hot": summary(T0 + 10 * i, "hot", 7.2, pods={("shop", "web-1"): 3.0}),
                                    "cool": summary(T0 + 10 * i, "cool", 0.5)})
    assert plan(st, s) == []  # 6 + 3 requested > 8 allocatable, although usage is low


def test_unevictable_and_unmeasured_pods_are_skipped() -> None:
    s = absolute_lnl()
    st = state_of(node_ev("hot"), node_ev("cool"), pod_ev("kube-system", "dns", "hot", app="dns"),
                  pod_ev("shop", "web-1", "hot"), pod_ev("shop", "unmeasured", "hot", app="u"),
                  pdb_ev("shop", "web", {"app": "web"}, 0))
    for i in range(3):
        st.apply_tick(T0 + 10 * i, {"hot": summary(T0 + 10 * i, "hot", 7.2,
                                                   pods={("kube-system", "dns"): 3.0, ("shop", "web-1"): 3.0}),
                                    "cool": summary(T0 + 10 * i, "cool", 0.5)})
    assert plan(st, s) == []  # dns protected, web-1 PDB-blocked, 'unmeasured' has no usage sample


def test_cooldowns_and_per_tick_limits() -> None:
    s = absolute_lnl(node_cooldown_s=60, pod_cooldown_s=120)
    st = cluster()
    for i in range(3):
        tick(st, T0 + 10 * i)
    first = plan(st, s)
    assert len(first) == 1
    for d in first:
        st.record_decision(d.strategy, d.from_node, (d.pod.namespace, d.pod.name), d.made_at)
    for i in range(3, 8):  # within the node cooldown (60 s after T0+20): nothing
        tick(st, T0 + 10 * i)
        assert plan(st, s) == [], i
    tick(st, T0 + 90)  # node cooldown over; web-1 still in pod cooldown -> another pod
    d = plan(st, s)
    assert len(d) == 1 and d[0].pod.name != "web-1"
    # limits per node per tick and per workload per tick
    st2 = cluster()
    for i in range(3):
        tick(st2, T0 + 10 * i, hot=7.9, cool=0.0, mid=0.0)
    assert len(plan(st2, absolute_lnl(max_evictions_per_tick_per_node=3))) == 1  # stops once under high
    st3 = state_of(node_ev("hot"), node_ev("cool"), node_ev("cool2"),
                   *[pod_ev("shop", f"web-{i}", "hot") for i in range(4)])
    pods = {("shop", f"web-{i}"): 0.5 for i in range(4)}
    for i in range(3):
        st3.apply_tick(T0 + 10 * i, {"hot": summary(T0 + 10 * i, "hot", 7.9, pods=pods),
                                     "cool": summary(T0 + 10 * i, "cool", 0.0),
                                     "cool2": summary(T0 + 10 * i, "cool2", 0.0)})
    many = absolute_lnl(max_evictions_per_tick_per_node=5)
    assert len(plan(st3, many)) == 1  # one per workload per tick
    # 7.9 -> 7.4 -> 6.9 -> 6.4 (= 80 %, no longer above high): three moves, then it stops
    assert len(plan(st3, absolute_lnl(max_evictions_per_tick_per_node=5,
                                             max_evictions_per_workload_per_tick=4))) == 3
    assert len(plan(st3, absolute_lnl(max_evictions_per_tick_per_node=2,
                                             max_evictions_per_workload_per_tick=4))) == 2


def test_deterministic_ids_and_disabled() -> None:
    a, b = cluster(), cluster()
    for st in (a, b):
        for i in range(3):
            tick(st, T0 + 10 * i)
    da, db = plan(a, absolute_lnl()), plan(b, absolute_lnl())
    assert da == db and da[0].id == db[0].id and len(da[0].id) == 24
    tick(a, T0 + 30)
    assert plan(a, absolute_lnl())[0].id != da[0].id  # a different tick is a different decision
    assert plan(b, absolute_lnl(enabled=False)) == []


@pytest.mark.parametrize("bad", [{**ABSOLUTE, "high_cpu_pct": 0}, {"high_cpu_pct": 120},
                                 {**ABSOLUTE, "low_cpu_pct": 90},
                                 {"consecutive": 0}, {"max_evictions_per_tick_per_node": 0},
                                 {"node_cooldown_s": -1}, {"pod_cooldown_s": -1}, {"ttl_s": 0},
                                 {"target_max_mem_pct": 0}, {"max_evictions_per_workload_per_tick": 0}])
def test_settings_validation_names_the_field(bad: dict) -> None:
    field = next(k for k, v in bad.items() if ABSOLUTE.get(k) != v)
    with pytest.raises(ConfigError, match=f"streams.strategies.LowNodeLoad.{field}"):
        build_strategies({"LowNodeLoad": bad})


def test_registry_and_streams_settings() -> None:
    assert "LowNodeLoad" in REGISTRY
    with pytest.raises(ConfigError, match=r"streams\.strategies\.Nope: unknown strategy"):
        build_strategies({"Nope": {}})
    with pytest.raises(ConfigError, match=r"streams\.planner\.tick_s"):
        StreamsSettings.from_config({"streams": {"planner": {"tick_s": -1}}})
    with pytest.raises(ConfigError, match=r"streams\.bogus"):
        StreamsSettings.from_config({"streams": {"bogus": 1}})
    st = StreamsSettings.from_config(None)
    assert get(list(st.strategies), "LowNodeLoad") == LowNodeLoadSettings()


# ---------------------------------------------------------------- ticks

def test_tick_completes_when_all_ready_nodes_reported() -> None:
    ta = TickAssembler()
    ready = ["a", "b", "c"]
    assert ta.add(summary(T0, "b", 1), ready) == []
    assert ta.add(summary(T0, "a", 1), ready) == []
    done = ta.add(summary(T0, "c", 1), ready)
    assert [(t, sorted(s)) for t, s in done] == [(T0, ["a", "b", "c"])]
    assert ta.add(summary(T0, "a", 1), ready) == [] and ta.late == 1  # late: tick already planned


def test_tick_completes_on_a_later_tick_with_missing_nodes() -> None:
    ta = TickAssembler(lateness_s=0)  # the plain rule: any later tick completes T
    ready = ["a", "b"]
    ta.add(summary(T0, "a", 1), ready)
    ta.add(summary(T0 + 10, "a", 1), ready)  # T0 complete (b missing); T0+10 still open
    assert ta.last_completed == T0
    done = ta.add(summary(T0 + 30, "b", 1), ready)
    assert [(t, sorted(s)) for t, s in done] == [(T0 + 10, ["a"])]
    assert ta.add(summary(T0 + 30, "a", 1), ready)[0][0] == T0 + 30
    # no known ready nodes: only a later tick completes
    ta2 = TickAssembler(lateness_s=0)
    assert ta2.add(summary(T0, "a", 1), []) == []
    assert [t for t, _ in ta2.add(summary(T0 + 1, "a", 1), [])] == [T0]


def test_tick_watermark_tolerates_partition_skew() -> None:
    """One node's whole backlog before the other's (two partitions read far apart): nothing is lost."""
    ta = TickAssembler(lateness_s=60)
    ready = ["a", "b"]
    for i in range(5):
        assert ta.add(summary(T0 + 10 * i, "a", 1), ready) == []
    got = []
    for i in range(5):
        got += [(t, sorted(s)) for t, s in ta.add(summary(T0 + 10 * i, "b", 1), ready)]
    assert got == [(T0 + 10 * i, ["a", "b"]) for i in range(5)] and ta.late == 0


def test_tick_lateness_bound_for_a_silent_node() -> None:
    ta = TickAssembler(lateness_s=30)
    ready = ["a", "b"]  # b never reports
    done = []
    for i in range(6):
        done += [t for t, _ in ta.add(summary(T0 + 10 * i, "a", 1), ready)]
    assert done == [T0, T0 + 10]  # completed once a tick more than 30 s later arrived
    # a node that reported a later tick without this one is missing here, not waited for
    ta2 = TickAssembler(lateness_s=1000)
    ta2.add(summary(T0, "a", 1), ready)
    assert [(t, sorted(s)) for t, s in ta2.add(summary(T0 + 10, "b", 1), ready)] == [(T0, ["a"])]
    assert [(t, sorted(s)) for t, s in ta2.add(summary(T0 + 10, "a", 1), ready)] == [(T0 + 10, ["a", "b"])]


def test_tick_quantisation() -> None:
    ta = TickAssembler(tick_s=10)
    ready = ["a", "b"]
    ta.add(summary(T0 + 1.2, "a", 1), ready)
    assert [t for t, _ in ta.add(summary(T0 + 3.4, "b", 1), ready)] == [T0]


def _planner_inputs() -> list[PlannerInput]:
    evs = [node_ev("hot"), node_ev("cool"), node_ev("mid"), pod_ev("shop", "web-1", "hot", app="web"),
           pod_ev("shop", "api-1", "hot", app="api"), pod_ev("batch", "job-1", "hot", app="job")]
    out = [PlannerInput(ts=e.ts, kind="event", event=e) for e in evs]
    for i in range(4):
        ts = T0 + 10 * i
        for s in (summary(ts, "hot", 7.2, pods=HOT_PODS), summary(ts, "cool", 1.0), summary(ts, "mid", 5.0)):
            out.append(PlannerInput(ts=ts, kind="node", node=s))
    return out


def test_planner_is_deterministic_for_an_input_order_and_order_independent_within_a_tick() -> None:
    inputs = _planner_inputs()

    def run(msgs: list[PlannerInput]) -> list:
        pl = Planner(build_strategies(None))
        return [d for msg in msgs for d in pl.handle(msg)]

    base = run(inputs)
    assert len(base) == 1 and base[0].made_at == T0 + 20
    assert run(inputs) == base
    rng = random.Random(7)
    events, nodes = inputs[:6], inputs[6:]
    for _ in range(5):  # shuffle node summaries within each tick
        shuffled = []
        for i in range(4):
            chunk = nodes[3 * i:3 * i + 3]
            rng.shuffle(chunk)
            shuffled += chunk
        assert run(events + shuffled) == base
