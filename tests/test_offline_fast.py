"""`kubetide evaluate --offline` without the codec: the shortcuts give what the faithful path gives.

- the metrics built straight from the Cluster equal, message for message and byte for byte, the ones
  rendered to metrics.k8s.io JSON and read back with the collector's functions, and the planner's input
  built from them without validation equals the validated one;
- codec on and off make the same decisions, scores and anomalies;
- the profiler fed a tick at a time holds the same profiles as with one message per node and app;
- the interference detector's shortcut for "the same pods, some absent ones still kept" leaves its state
  and its anomalies exactly as the general remap does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from kubesim.model import Cluster
from kubesim.scenario import load_scenario
from kubetide import evaluate as ev
from kubetide import models as m
from kubetide.codec import encode
from kubetide.offline import OfflineKubetide, node_input
from streams.core import interference as itf
from streams.core.messages import PlannerInput, node_summary
from streams.core.profile import profile_message
from streams.core.state import EvictorSettings
from tests.test_core_interference import synth_node
from tests.test_evaluate import BUSY as EVALUATE_BUSY

# The busy config of the evaluate tests (several decisions within minutes of `demo`), young pods
# included where the evictor has a minimum pod age.
BUSY: dict = yaml.safe_load(EVALUATE_BUSY)
if "min_pod_age_s" in {f.name for f in dataclasses.fields(EvictorSettings)}:
    BUSY["streams"]["evictor"] = {"min_pod_age_s": 0}


@pytest.mark.parametrize("scenario,ticks", [("demo", 90), ("interference", 360)])
def test_fast_metrics_equal_the_rendered_ones(scenario: str, ticks: int) -> None:
    cluster = Cluster(load_scenario(scenario))
    streams, actuator = ev.settings_from_config(BUSY)
    k = OfflineKubetide(cluster, streams, actuator, codec=False)
    metrics = k.metrics
    seen = {"messages": 0, "dirty": 0, "clean": 0, "cpi": 0}

    def compared() -> list[m.ClusterMetrics]:
        slow, fast = k.slow_metrics(), k.fast_metrics()
        assert [x.node for x in slow] == [x.node for x in fast]
        for a, b in zip(slow, fast, strict=True):
            assert a == b, a.node
            assert encode(a) == encode(b), a.node
            assert m.ClusterMetrics.model_validate(b.model_dump(by_alias=True)) == b  # a valid message
            # the planner's input built without validating it again is the validated one (values, types, fields set)
            want, got = PlannerInput(ts=b.ts, kind="node", node=node_summary(b)), node_input(b)
            assert got == want and got.node == want.node and encode(got) == encode(want), a.node
            assert got.model_fields_set == want.model_fields_set, a.node
            assert got.node.model_fields_set == want.node.model_fields_set, a.node
            assert [type(v) for v in got.node.__dict__.values()] == [type(v) for v in want.node.__dict__.values()]
            assert all(type(x) is float for x in got.node.pod_cpu_cores + got.node.pod_mem_bytes), a.node
        seen["messages"] += len(fast)
        seen["dirty" if cluster._struct_dirty else "clean"] += 1
        seen["cpi"] += sum(1 for x in fast if x.pods.cpi is not None)
        return metrics()

    k.metrics = compared  # type: ignore[method-assign]
    for _ in range(ticks):
        k.tick()
    assert seen["messages"] >= ticks * len(cluster.nodes) // 2
    assert seen["clean"] > 0
    if scenario == "interference":
        assert seen["cpi"] > 0 and k.anomalies
    # pods changed since the last usage update (an eviction before the scrape): the path that reads the
    # pods rather than the Cluster's arrays
    victim = next(p for p in cluster.pods.values() if p.node_name and not p.daemon and p.namespace != "kube-system"
                  and cluster.evict(p.namespace, p.name).code == 201)
    assert cluster._struct_dirty and victim.key not in cluster.pods
    k._last_metrics_ts.clear()
    before = seen["dirty"]
    assert compared()
    assert seen["dirty"] == before + 1


def test_codec_on_and_off_make_the_same_decisions_and_findings() -> None:
    sc = load_scenario("demo")
    with_codec = ev.run_offline(sc, None, 90, None, config=BUSY, codec=True)
    without = ev.run_offline(sc, None, 90, None, config=BUSY)
    assert len(with_codec["decisions"]) >= 3
    assert with_codec["decisions"] == without["decisions"] and with_codec["scores"] == without["scores"]
    assert with_codec["series"].node_pct == without["series"].node_pct
    found = []
    for codec in (True, False):
        k = OfflineKubetide(Cluster(load_scenario("interference")), codec=codec)
        for _ in range(360):  # the first episodes open after ~30 min of learning
            k.tick()
        found.append(k.anomalies)
    assert found[0] and found[0] == found[1]


def test_profiles_fed_a_tick_at_a_time_are_the_per_message_profiles() -> None:
    runs = []
    for codec in (True, False):
        k = OfflineKubetide(Cluster(load_scenario("demo")), codec=codec, interference=False)
        for _ in range(40):  # 2 buckets of 5 minutes, 4 batches of 6 ticks and a partial one
            k.tick()
        if k._batcher is not None:
            k._batcher.flush()
        runs.append(k.profiles)
    per_message, batched = runs
    assert per_message.keys() == batched.keys() and len(per_message) >= 5
    for key, a in per_message.items():
        b = batched[key]
        a._flush()  # the staging buffers fill in other chunks: compare what they hold once flushed
        b._flush()
        assert a.n_total() == b.n_total() > 0, key
        assert a.requests == b.requests  # (the pod dicts are pruned at other times; the count below agrees)
        np.testing.assert_allclose(a.hist_sum, b.hist_sum, rtol=1e-12)
        pa, pb = profile_message(a, a.last_ts), profile_message(b, b.last_ts)
        assert pa == pb, key


def _leaving(msgs: list[m.ClusterMetrics]) -> list[m.ClusterMetrics]:
    """``msgs`` with pods leaving the node (their columns are kept a while) and one joining."""
    out = []
    for i, msg in enumerate(msgs):
        p = msg.pods
        drop = {"noisy-3"} if i >= 200 else set()
        if i >= 420:
            drop |= {"noisy-7", "web-1"}
        if 300 <= i < 310:
            drop |= {"noisy-9"}  # gone for a few scrapes, then back
        keep = [j for j, n in enumerate(p.name) if n not in drop]
        cols = {f: [getattr(p, f)[j] for j in keep] for f in ("namespace", "name", "app", "cpu_cores", "mem_bytes",
                                                              "cpi")}
        if i >= 500:
            for f, v in (("namespace", "shop"), ("name", "web-9"), ("app", "web"), ("cpu_cores", 0.5),
                         ("mem_bytes", 1e9), ("cpi", p.cpi[0])):
                cols[f].append(v)
        out.append(msg.model_copy(update={"pods": m.PodSamples(**cols)}))
    return out


def test_remap_shortcut_keeps_state_and_anomalies_identical() -> None:
    msgs, _ = synth_node(3, hours=2.5, episodes=3)
    msgs = _leaving(msgs)
    fast, ref = itf.NodeState(), itf.NodeState()
    ref._layout_kept = lambda *a: False  # type: ignore[method-assign]
    shortcuts = 0
    real = fast._layout_kept

    def counted(*a: object) -> bool:
        nonlocal shortcuts
        hit = real(*a)  # type: ignore[arg-type]
        shortcuts += hit
        return hit

    fast._layout_kept = counted  # type: ignore[method-assign]
    opened = 0
    for msg in msgs:
        a, b = itf.update(fast, msg), itf.update(ref, msg)
        assert a == b
        opened += sum(1 for x in a if x.state == "open")
        for f in ("names", "namespaces", "apps", "app_names", "head", "scrapes", "unlearned", "n_open", "bhead",
                  "learned", "episodes"):
            assert getattr(fast, f) == getattr(ref, f), f
        for f in (*itf._POD_ARRAYS, "app_idx", "last_seen", "ts", "onehot", "thr", "thr_hot", "mean", "m2", "cnt"):
            x, y = getattr(fast, f), getattr(ref, f)
            assert x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f
    assert shortcuts >= 50 and opened >= 1


def test_series_from_the_arrays_equals_the_walk_over_the_pods() -> None:
    """``Series.observe`` reads kubesim's per-pod arrays when they are current; the walk over the pods
    (which it falls back to) gives the very same figures."""
    for scenario, ticks in (("demo", 90), ("az-drift", 60)):
        cluster = Cluster(load_scenario(scenario))
        streams, actuator = ev.settings_from_config(BUSY)
        k = OfflineKubetide(cluster, streams, actuator, codec=False)
        fast, walk = ev.Series(), ev.Series()
        walk._from_arrays = lambda *a: None  # type: ignore[method-assign]
        used = 0
        for _ in range(ticks):
            k.tick()
            zones = sorted({n.zone for n in cluster.nodes.values() if not n.unschedulable})
            used += fast._from_arrays(cluster, list(cluster.deployments.values()), zones) is not None
            fast.observe(cluster)
            walk.observe(cluster)
        assert ticks // 2 <= used, scenario
        for f in ("served", "replicas", "skew", "node_pct", "needed", "under_pods", "action"):
            assert getattr(fast, f) == getattr(walk, f), (scenario, f)
        assert max(fast.skew) > 0 or scenario == "demo"
