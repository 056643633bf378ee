"""ClusterState from events, pod-choice filters and node fit (pure; no broker).

The small builders at the top are shared by the other test_core_* and test_streams* modules.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubetide import models as m
from streams.core.messages import NodeSummary
from streams.core.state import ClusterState, EvictorSettings, evictable, node_fit

T0 = 1_767_571_200.0
GiB = 2.0**30


def node_ev(name: str, *, cpu: float = 8.0, mem: float = 32 * GiB, ts: float = T0, type: str = "ADDED",
            **kw: Any) -> m.ClusterEvent:
    return m.ClusterEvent(ts=ts, type=type, kind="Node", name=name,
                          node=m.NodeSnapshot(allocatable=m.Resources(cpu_cores=cpu, mem_bytes=mem), **kw))


def pod_ev(ns: str, name: str, node: str | None, *, app: str = "web", cpu: float = 0.5, mem: float = 0.5 * GiB,
           kind: str | None = "Deployment", workload: str | None = None, ts: float = T0, type: str = "ADDED",
           uid: str | None = None, **kw: Any) -> m.ClusterEvent:
    wl = None if kind is None else m.WorkloadRef(namespace=ns, kind=kind, name=workload or app)
    kw.setdefault("phase", "Running")
    kw.setdefault("ready", True)
    kw.setdefault("labels", {"app": app})
    return m.ClusterEvent(ts=ts, type=type, kind="Pod", namespace=ns, name=name, uid=uid or f"uid-{name}",
                          pod=m.PodSnapshot(node=node, app=app, workload=wl,
                                            requests=m.Resources(cpu_cores=cpu, mem_bytes=mem), **kw))


def pdb_ev(ns: str, name: str, labels: dict[str, str], allowed: int, *, type: str = "ADDED") -> m.ClusterEvent:
    return m.ClusterEvent(ts=T0, type=type, kind="PodDisruptionBudget", namespace=ns, name=name,
                          pdb=m.PdbSnapshot(match_labels=labels, disruptions_allowed=allowed))


def summary(ts: float, node: str, cpu: float, *, alloc: float = 8.0, mem: float = 4 * GiB,
            mem_alloc: float = 32 * GiB, pods: dict[tuple[str, str], float] | None = None) -> NodeSummary:
    pods = pods or {}
    return NodeSummary(ts=ts, node=node, cpu_usage=cpu, mem_usage=mem, cpu_allocatable=alloc,
                       mem_allocatable=mem_alloc, pod_namespace=[k[0] for k in pods], pod_name=[k[1] for k in pods],
                       pod_cpu_cores=list(pods.values()), pod_mem_bytes=[0.25 * GiB] * len(pods))


def state_of(*events: m.ClusterEvent, **kw: Any) -> ClusterState:
    st = ClusterState(**kw)
    for ev in events:
        st.apply_event(ev)
    return st


# ---------------------------------------------------------------- state from events

def test_events_build_and_delete() -> None:
    st = state_of(node_ev("n1"), node_ev("n2"), pod_ev("shop", "web-1", "n1"), pod_ev("shop", "web-2", "n2"),
                  pdb_ev("shop", "web", {"app": "web"}, 1),
                  m.ClusterEvent(ts=T0, type="ADDED", kind="Deployment", namespace="shop", name="web",
                                 deployment=m.DeploymentSnapshot(replicas=2)),
                  m.ClusterEvent(ts=T0, type="ADDED", kind="Namespace", name="shop",
                                 namespace_obj=m.NamespaceSnapshot()))
    assert st.ready_nodes() == ["n1", "n2"]
    assert [k for k, _ in st.pods_on("n1")] == [("shop", "web-1")]
    assert ("shop", "web") in st.pdbs and ("shop", "web") in st.deployments and "shop" in st.namespaces
    # MODIFIED moves the pod; DELETED removes; SYNC restates
    st.apply_event(pod_ev("shop", "web-1", "n2", type="MODIFIED"))
    assert st.pods_on("n1") == [] and len(st.pods_on("n2")) == 2
    st.apply_event(pod_ev("shop", "web-2", "n2", type="DELETED"))
    st.apply_event(node_ev("n1", type="DELETED"))
    st.apply_event(pdb_ev("shop", "web", {}, 0, type="DELETED"))
    assert st.ready_nodes() == ["n2"] and [k for k, _ in st.pods_on("n2")] == [("shop", "web-1")]
    assert st.pdbs == {}
    st.apply_event(node_ev("n1", type="SYNC", ready=False))
    assert st.ready_nodes() == ["n2"] and "n1" in st.nodes
    assert st.requested_on("n2") == (0.5, 0.5 * GiB)


def test_ticks_mark_missing_nodes_and_keep_bounded_history() -> None:
    st = state_of(node_ev("n1"), node_ev("n2"), history=3)
    for i in range(5):
        st.apply_tick(T0 + 10 * i, {"n1": summary(T0 + 10 * i, "n1", 4.0)})
    assert list(st.ticks) == [T0 + 20, T0 + 30, T0 + 40]
    assert st.sample("n1").cpu_pct == 50.0
    assert st.sample("n2") is None  # missing, not zero
    assert st.recent_samples("n2", 3) == [None, None, None]
    assert all(len(v) <= 3 for v in st.node_samples.values())


# ---------------------------------------------------------------- pod-choice exclusions

@pytest.mark.parametrize(("ev", "reason"), [
    (pod_ev("shop", "p", "n1", kind=None), "bare-pod"),
    (pod_ev("shop", "p", "n1", kind="Pod"), "bare-pod"),
    (pod_ev("shop", "p", "n1", kind="DaemonSet"), "daemonset"),
    (pod_ev("shop", "p", "n1", mirror=True), "mirror-pod"),
    (pod_ev("shop", "p", "n1", priority=2_000_000_000), "system-critical"),
    (pod_ev("shop", "p", "n1", priority_class="system-node-critical"), "system-critical"),
    (pod_ev("shop", "p", "n1", priority_class="system-cluster-critical"), "system-critical"),
    (pod_ev("shop", "p", "n1", local_storage=True), "local-storage"),
    (pod_ev("shop", "p", "n1", annotations={"kubetide.io/evict": "never"}), "annotation-never"),
    (pod_ev("shop", "p", "n1", annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}),
     "safe-to-evict-false"),
    (pod_ev("kube-system", "p", "n1"), "protected-namespace"),
    (pod_ev("kube-public", "p", "n1"), "protected-namespace"),
    (pod_ev("kube-node-lease", "p", "n1"), "protected-namespace"),
    (pod_ev("kubetide", "p", "n1"), "protected-namespace"),
    (pod_ev("shop", "p", "n1", phase="Pending"), "phase-pending"),
])
def test_evictable_exclusions(ev: m.ClusterEvent, reason: str) -> None:
    st = state_of(node_ev("n1"), ev)
    key = (ev.namespace, ev.name)
    assert evictable(key, st.pods[key], st) == (False, reason)


def test_evictable_ok_and_overrides() -> None:
    st = state_of(node_ev("n1"), pod_ev("shop", "p", "n1"),
                  pod_ev("shop", "ls", "n1", local_storage=True),
                  pod_ev("shop", "safe", "n1", local_storage=True,
                         annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}),
                  pod_ev("kube-system", "sys", "n1"))
    assert evictable(("shop", "p"), st.pods[("shop", "p")], st) == (True, "ok")
    assert evictable(("shop", "safe"), st.pods[("shop", "safe")], st) == (True, "ok")
    allow = EvictorSettings(evict_local_storage_pods=True, protected_namespaces=())
    assert evictable(("shop", "ls"), st.pods[("shop", "ls")], st, allow) == (True, "ok")
    assert evictable(("kube-system", "sys"), st.pods[("kube-system", "sys")], st, allow) == (True, "ok")


def test_evictable_pdb_with_no_disruptions_left() -> None:
    st = state_of(node_ev("n1"), pod_ev("shop", "p", "n1"), pod_ev("shop", "q", "n1", app="other"),
                  pdb_ev("shop", "web-pdb", {"app": "web"}, 0), pdb_ev("other-ns", "x", {"app": "other"}, 0))
    assert evictable(("shop", "p"), st.pods[("shop", "p")], st) == (False, "pdb-web-pdb")
    assert evictable(("shop", "q"), st.pods[("shop", "q")], st) == (True, "ok")  # PDB in another namespace
    st.apply_event(pdb_ev("shop", "web-pdb", {"app": "web"}, 1, type="MODIFIED"))
    assert evictable(("shop", "p"), st.pods[("shop", "p")], st) == (True, "ok")
    assert evictable(("shop", "p"), st.pods[("shop", "p")], st, EvictorSettings(respect_pdb=False))[0]


def test_evictor_settings_validate() -> None:
    with pytest.raises(ValueError, match="priority_threshold"):
        EvictorSettings(priority_threshold=-1).validate()


# ---------------------------------------------------------------- node fit

def test_node_fit() -> None:
    taint = m.Taint(key="dedicated", value="gpu", effect="NoSchedule")
    st = state_of(node_ev("small", cpu=1.0), node_ev("cordoned", unschedulable=True), node_ev("down", ready=False),
                  node_ev("tainted", taints=[taint]), node_ev("ssd", labels={"disk": "ssd"}),
                  node_ev("soft", taints=[m.Taint(key="x", effect="PreferNoSchedule")]),
                  pod_ev("shop", "filler", "small", cpu=0.75))
    pod = pod_ev("shop", "p", None, cpu=0.5).pod
    assert node_fit(pod, "small", st) == (False, "insufficient-cpu")
    assert node_fit(pod, "cordoned", st) == (False, "unschedulable")
    assert node_fit(pod, "down", st) == (False, "not-ready")
    assert node_fit(pod, "nowhere", st) == (False, "unknown-node")
    assert node_fit(pod, "tainted", st) == (False, "taint-dedicated")
    assert node_fit(pod, "soft", st) == (True, "ok")
    assert node_fit(pod, "ssd", st) == (True, "ok")
    assert node_fit(pod, "ssd", st, extra_requests=(7.6, 0.0)) == (False, "insufficient-cpu")
    assert node_fit(pod, "ssd", st, extra_requests=(0.0, 31.8 * GiB)) == (False, "insufficient-memory")
    tol = pod_ev("shop", "t", None, tolerations=[m.Toleration(key="dedicated", operator="Equal", value="gpu")]).pod
    assert node_fit(tol, "tainted", st) == (True, "ok")
    wrong = pod_ev("shop", "t", None, tolerations=[m.Toleration(key="dedicated", value="cpu")]).pod
    assert node_fit(wrong, "tainted", st)[0] is False
    every = pod_ev("shop", "t", None, tolerations=[m.Toleration(operator="Exists")]).pod
    assert node_fit(every, "tainted", st) == (True, "ok")
    sel = pod_ev("shop", "s", None, node_selector={"disk": "ssd"}).pod
    assert node_fit(sel, "ssd", st) == (True, "ok")
    assert node_fit(sel, "soft", st) == (False, "node-selector-disk")


# ---------------------------------------------------------------- per-pod usage history, zones, recorded decisions

def test_pod_usage_history_zone_and_record() -> None:
    st = state_of(node_ev("n1", zone="a"), node_ev("n2", labels={"topology.kubernetes.io/zone": "b"}), node_ev("n3"),
                  pod_ev("shop", "web-1", "n1"), history=4)
    for i in range(5):
        pods = {("shop", "web-1"): 0.1 * (i + 1)} if i != 2 else {}
        st.apply_tick(T0 + 10 * i, {"n1": summary(T0 + 10 * i, "n1", 1.0, pods=pods)})
    hist = st.pod_usage_history(("shop", "web-1"), 4)  # ticks 1..4, tick 2 without the pod
    assert [round(c, 2) for c, _ in hist] == [0.2, 0.4, 0.5]
    assert st.pod_usage_history(("shop", "nope"), 4) == []
    assert (st.zone_of("n1"), st.zone_of("n2"), st.zone_of("n3"), st.zone_of("gone")) == ("a", "b", None, None)
    d = m.DescheduleDecision(id="d-000001", made_at=T0 + 40, expires_at=T0 + 340, strategy="LowNodeLoad",
                             reason="r", evidence={"best_target": "n2", "anomaly_id": "x"},
                             pod=m.PodRef(namespace="shop", name="web-1", node="n1"),
                             workload=m.WorkloadRef(namespace="shop", kind="Deployment", name="web"),
                             from_node="n1", to_nodes=["n2"])
    st.record(d)
    mv = st.planned[("shop", "web-1")]
    assert (mv.to_node, mv.requests, mv.usage[0]) == ("n2", (0.5, 0.5 * GiB), 0.5)
    assert st.last_move_pod[("shop", "web-1")] == T0 + 40 and st.last_move_workload["shop/web"] == T0 + 40
    assert st.last_decision_node[("LowNodeLoad", "n1")] == T0 + 40 and "x" in st.acted
    assert [m_.workload for m_ in st.pending["shop/web"]] == ["shop/web"]
    st.apply_tick(T0 + 50, {})
    assert st.planned == {}  # a new tick starts with no planned moves


# ---------------------------------------------------------------- derived indexes follow the events

def test_memoised_views_follow_every_event() -> None:
    st = state_of(node_ev("a"), node_ev("b"), pod_ev("shop", "web-1", "a", cpu=1.0),
                  pdb_ev("shop", "web", {"app": "web"}, 1))
    web1 = st.pods[("shop", "web-1")]
    assert st.ready_nodes() == ["a", "b"] and st.requested_on("a")[0] == 1.0 and st.workloads_on("a") == {"shop/web"}
    assert [k for k, _ in st.pdbs_for("shop", web1)] == [("shop", "web")]
    st.ready_nodes().append("x")  # callers get a fresh list each time
    st.pods_on("a").clear()
    assert st.ready_nodes() == ["a", "b"] and len(st.pods_on("a")) == 1
    st.apply_event(pod_ev("shop", "web-2", "a", cpu=2.0))
    st.apply_event(pod_ev("batch", "job-1", "a", app="job", cpu=0.5))
    st.apply_event(node_ev("b", ready=False, type="MODIFIED"))
    st.apply_event(pdb_ev("shop", "web", {"app": "web"}, 0, type="MODIFIED"))
    assert [k for k, _ in st.pods_on("a")] == [("batch", "job-1"), ("shop", "web-1"), ("shop", "web-2")]
    assert st.requested_on("a")[0] == 3.5 and st.workloads_on("a") == {"shop/web", "batch/job"}
    assert st.ready_nodes() == ["a"]
    assert st.pdbs_for("shop", web1)[0][1].disruptions_allowed == 0
    st.apply_event(pod_ev("shop", "web-2", "a", type="DELETED"))
    assert st.requested_on("a")[0] == 1.5


def test_last_landing_is_the_latest_among_the_kept_landings() -> None:
    from streams.core.state import Landing

    st = ClusterState()
    assert st.last_landing("shop/web", "a") is None
    st.landings.append(Landing(10.0, "shop/web", ("shop", "w1"), ("shop", "w2"), "b", "a", False))
    st.landings.append(Landing(30.0, "shop/web", ("shop", "w3"), ("shop", "w4"), "b", "a", False))
    st.landings.append(Landing(20.0, "shop/web", ("shop", "w5"), ("shop", "w6"), "a", "b", True))
    assert st.last_landing("shop/web", "a") == 30.0 and st.last_landing("shop/web", "b") == 20.0
    del st.landings[:2]  # dropped from the front (the state keeps the last 1000)
    assert st.last_landing("shop/web", "a") is None and st.last_landing("shop/web", "b") == 20.0


def test_per_version_rebuilds_on_a_new_version_another_state_or_another_key() -> None:
    from streams.core.state import ClusterState, PerVersion

    pv, builds = PerVersion(), []

    def build() -> int:
        builds.append(1)
        return len(builds)

    st, other = ClusterState(), ClusterState()
    assert pv.get(st, "x", build, key=(1,)) == 1
    assert pv.get(st, "x", build, key=(1,)) == 1  # same state, version and key: kept
    assert pv.get(st, "x", build, key=(2,)) == 2  # the caller's key changed
    st.version += 1
    assert pv.get(st, "x", build, key=(2,)) == 3  # an event was applied
    assert pv.get(other, "x", build, key=(2,)) == 4  # another state never reads this one's value
    assert pv.get(other, "y", build) == 5 and pv.get(other, "x", build, key=(2,)) == 4  # one value per name
