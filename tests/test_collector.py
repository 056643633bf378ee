"""Collector against kubesim over HTTP and the embedded broker over TCP (no mocks)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.topics import CLUSTER_EVENTS, CLUSTER_METRICS
from tests.test_actuator_support import TopicReader, running, spawn
from workers.collector import Collector, CollectorSettings, add_arguments, settings_from
from workers.kube import new_api_client
from workers.snapshots import go_duration, pod_workload

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ("tests.test_actuator_support", "tests.kubesim_fixtures")  # kafka, producer, api


@pytest.fixture
async def sim():
    async with KubeSim("demo", speed=0) as s:
        yield s


def _events(kind: str, name: str | None = None, etype: str | None = None):
    def pred(v: object) -> bool:
        return (isinstance(v, m.ClusterEvent) and v.kind == kind and (name is None or v.name == name)
                and (etype is None or v.type == etype))
    return pred


async def test_events_for_pods_nodes_pdbs_with_snapshots(sim, api, kafka, producer):
    c = sim.cluster
    n_pods, n_nodes = len(c.pods), len(c.nodes)
    settings = CollectorSettings(metrics=False, list_page_size=7)  # paging exercised too
    collector = Collector(api, producer, settings)
    async with TopicReader(kafka, CLUSTER_EVENTS) as events, running(collector.run):
        pods = await events.wait_for(_events("Pod", etype="SYNC"), n_pods)
        nodes = await events.wait_for(_events("Node", etype="SYNC"), n_nodes)
        pdbs = await events.wait_for(_events("PodDisruptionBudget", etype="SYNC"), 5)
        await events.wait_for(_events("Deployment", etype="SYNC"), 6)
        await events.wait_for(_events("Namespace", etype="SYNC"), 4)

        # Pod snapshot: workload through ReplicaSet -> Deployment, requests, node, event time = cluster time.
        worker = next(e for e in pods if e.name.startswith("worker-") and e.pod.node == "node-a-1")
        truth = c.pods[("batch", worker.name)]
        assert worker.uid == truth.uid and worker.namespace == "batch"
        assert worker.pod.workload == m.WorkloadRef(namespace="batch", kind="Deployment", name="worker")
        assert worker.pod.app == "worker" and worker.pod.phase == "Running" and worker.pod.ready
        assert worker.pod.requests.cpu_cores == pytest.approx(1.0)
        assert worker.pod.requests.mem_bytes == pytest.approx(2**30)
        assert worker.ts == pytest.approx(c.t, abs=1)
        proxy = next(e for e in pods if e.name.startswith("kube-proxy-"))
        assert proxy.pod.workload.kind == "DaemonSet" and proxy.pod.priority_class == "system-node-critical"

        node = next(e for e in nodes if e.name == "node-a-1")
        assert node.key == "Node//node-a-1"
        assert node.node.zone == "zone-a" and node.node.node_group == "general"
        assert node.node.allocatable.cpu_cores == pytest.approx(c.nodes["node-a-1"].cpu)

        cache = next(e for e in pdbs if e.name.startswith("cache"))
        assert cache.pdb.min_available == 3 and cache.pdb.disruptions_allowed == 0
        assert cache.pdb.match_labels

        # Live changes arrive through the watch: evict a worker -> DELETED + ADDED of the replacement.
        before = {k for k in c.pods if k[0] == "batch"}
        assert c.evict("batch", worker.name).code == 201
        deleted = await events.wait_for(_events("Pod", worker.name, "DELETED"))
        assert deleted[0].pod.node == "node-a-1"
        await sim.advance(60)
        new = {k for k in c.pods if k[0] == "batch"} - before
        assert new, "kubesim scheduled a replacement"
        (ns, name), = new
        added = await events.wait_for(lambda v: isinstance(v, m.ClusterEvent) and v.name == name
                                      and v.type in ("ADDED", "MODIFIED"))
        assert added[0].pod.workload.name == "worker"
        # keyed by kind/namespace/name
        keys = {k for k, v in events.records if isinstance(v, m.ClusterEvent) and v.name == name}
        assert keys == {f"Pod/{ns}/{name}".encode()}
    assert collector.stats["events_sync"] >= n_pods + n_nodes


async def test_metrics_one_message_per_node_summing_to_node_usage(sim, api, kafka, producer):
    c = sim.cluster
    overhead_cpu, overhead_mem = 0.1, 512 * 2**20  # demo scenario's system_overhead
    collector = Collector(api, producer, CollectorSettings(metrics_interval_s=0.2))
    async with TopicReader(kafka, CLUSTER_METRICS) as metrics, running(collector.run):
        first = await metrics.wait_for(lambda v: isinstance(v, m.ClusterMetrics), len(c.nodes))
        await asyncio.sleep(1.0)  # several more scrapes at the same cluster time: all skipped
        assert len(metrics.records) == len(c.nodes)
        assert sorted(v.node for v in first) == sorted(c.nodes)
        assert {k for k, _ in metrics.records} == {n.encode() for n in c.nodes}
        for msg in first:
            assert msg.ts == pytest.approx(c.t, abs=1) and msg.window_s == 10
            on_node = sorted(name for (ns, name), p in c.pods.items() if p.node_name == msg.node)
            assert sorted(msg.pods.name) == on_node
            assert msg.node_usage.cpu_cores == pytest.approx(sum(msg.pods.cpu_cores) + overhead_cpu, abs=0.01)
            assert msg.node_usage.mem_bytes == pytest.approx(sum(msg.pods.mem_bytes) + overhead_mem, rel=1e-3)
            assert msg.node_allocatable.cpu_cores == pytest.approx(c.nodes[msg.node].cpu)
        hot = next(v for v in first if v.node == "node-a-1")
        assert hot.zone == "zone-a" and hot.node_usage.cpu_cores > 6  # the hot node
        assert "worker" in hot.pods.app
        t0 = c.t
        await sim.advance(30)
        later = await metrics.wait_for(lambda v: isinstance(v, m.ClusterMetrics) and v.ts > t0, len(c.nodes))
        assert {v.node for v in later} == set(c.nodes)
        assert all(v.ts == pytest.approx(c.t, abs=1) for v in later)


async def test_relist_after_410_gone_and_keep_streaming(sim, api, kafka, producer):
    c = sim.cluster
    collector = Collector(api, producer, CollectorSettings(metrics=False, watch_timeout_s=300))
    async with TopicReader(kafka, CLUSTER_EVENTS) as events, running(collector.run):
        await asyncio.wait_for(collector.synced.wait(), 10)
        await events.wait_for(_events("Pod", etype="SYNC"), len(c.pods))
        web = sorted(k for k in c.pods if k[0] == "shop" and k[1].startswith("web-"))
        changed, deleted = web[0], web[1]
        # Change and delete pods, then drop the watch history before the watches see the events
        # (no await in between): each watch gets 410 Gone and the collector must relist.
        c.update_pod_meta(*changed, labels=dict(c.pods[changed].labels),
                          annotations={"kubetide.io/evict": "never"})
        c.delete_pod(*deleted)
        sim.compact()
        synced = await events.wait_for(lambda v: isinstance(v, m.ClusterEvent) and v.name == changed[1]
                                       and v.pod.annotations.get("kubetide.io/evict") == "never")
        assert synced[0].type == "SYNC"
        gone = await events.wait_for(_events("Pod", deleted[1], "DELETED"))
        assert gone[0].namespace == "shop"
        assert collector.stats["relists_Pod"] >= 1
        # ... and it keeps streaming from the new list's resourceVersion.
        assert c.evict(*web[2]).code == 201
        await events.wait_for(_events("Pod", web[2][1], "DELETED"))
        n = len(events.records)
        await collector.resync()
        await events.wait_for(lambda v: True, n + len(c.pods))


async def test_collector_cli_subprocess_clean_shutdown(sim, kafka, tmp_path):
    env = {**os.environ, "KUBETIDE_BOOTSTRAP": kafka, "KUBECONFIG": str(sim.kubeconfig_path),
           "KUBETIDE_EMBEDDED_BROKER": "1", "PYTHONUNBUFFERED": "1"}
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text("collector:\n  resync_interval_s: 120\n  list_page_size: 10\n")
    log = tmp_path / "collector.log"
    proc = spawn([sys.executable, "-m", "workers.collector", "--config", str(cfg), "--metrics-interval", "0.5"],
                 env, log)
    try:
        async with TopicReader(kafka, CLUSTER_EVENTS) as events, TopicReader(kafka, CLUSTER_METRICS) as metrics:
            await events.wait_for(_events("Pod", etype="SYNC"), len(sim.cluster.pods), within=30)
            await metrics.wait_for(lambda v: isinstance(v, m.ClusterMetrics), len(sim.cluster.nodes), within=30)
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 0, text
    assert "collector stopped" in text and "Pod listed: 25 objects" in text


def test_settings_and_helpers():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    s = settings_from(p.parse_args(["--metrics-interval", "5", "--resync-interval", "0"]))
    assert s.metrics_interval_s == 5 and s.resync_interval_s == 0
    with pytest.raises(ValueError, match="metrics_interval_s"):
        settings_from(p.parse_args(["--metrics-interval", "0"]))
    assert go_duration("10s", 1) == 10 and go_duration("1m0.5s", 1) == 60.5 and go_duration("x", 7) == 7
    bare = {"metadata": {"name": "p", "namespace": "n"}}
    assert pod_workload(bare) == m.WorkloadRef(namespace="n", kind="Pod", name="p")
    rs = {"metadata": {"name": "p", "namespace": "n", "labels": {"pod-template-hash": "abc"},
                       "ownerReferences": [{"kind": "ReplicaSet", "name": "rs-x", "controller": True}]}}
    assert pod_workload(rs).kind == "ReplicaSet"  # name does not end in the hash: a bare ReplicaSet


async def test_metrics_carry_cpi_and_latency_when_the_custom_metrics_api_serves_them(kafka, producer):
    async with KubeSim("interference", speed=0) as sim:
        await sim.advance(60)
        c = sim.cluster
        a = await new_api_client(str(sim.kubeconfig_path))
        try:
            collector = Collector(a, producer, CollectorSettings(metrics_interval_s=0.2))
            async with TopicReader(kafka, CLUSTER_METRICS) as metrics, running(collector.run):
                msgs = await metrics.wait_for(lambda v: isinstance(v, m.ClusterMetrics), len(c.nodes))
            assert collector.custom_available == ("cpi", "latency_ms")
            measured = 0
            for msg in msgs:
                assert msg.pods.cpi is not None and msg.pods.latency_ms is not None, msg.node
                for ns, name, cpi, lat in zip(msg.pods.namespace, msg.pods.name, msg.pods.cpi, msg.pods.latency_ms,
                                              strict=True):
                    p = c.pods[(ns, name)]
                    if p.daemon:  # kubesim (like an adapter without series for them) serves no value: 0.0
                        assert cpi == 0.0 and lat == 0.0
                    else:
                        assert cpi == pytest.approx(p.cpi, abs=1e-3) and cpi > 0
                        assert lat == pytest.approx(p.latency_ms, abs=1e-3)
                        measured += 1
            assert measured >= 3
        finally:
            await a.close()


async def test_custom_metrics_disabled_leaves_the_columns_out(sim, api, kafka, producer):
    collector = Collector(api, producer, CollectorSettings(metrics_interval_s=0.2, custom_metrics=()))
    async with TopicReader(kafka, CLUSTER_METRICS) as metrics, running(collector.run):
        msgs = await metrics.wait_for(lambda v: isinstance(v, m.ClusterMetrics), len(sim.cluster.nodes))
    assert all(v.pods.cpi is None and v.pods.latency_ms is None for v in msgs)
    assert collector.custom_available == ()


def test_custom_column_rule():
    from workers.snapshots import custom_columns, custom_metric_values

    items = [{"describedObject": {"kind": "Pod", "namespace": "a", "name": "p1"}, "value": "1500m"},
             {"describedObject": {"kind": "Pod", "namespace": "a", "name": "p2"}, "value": "0"},
             {"describedObject": {"kind": "Service", "namespace": "a", "name": "s"}, "value": "3"},
             {"describedObject": {"kind": "Pod", "namespace": "a", "name": "p3"}, "value": "junk"}]
    assert custom_metric_values(items) == {("a", "p1"): 1.5}
    rows = [("a", "p1", "x", 1.0, 1.0), ("a", "p2", "x", 1.0, 1.0), ("b", "q", "y", 1.0, 1.0)]
    cols = custom_columns(rows, {"cpi": {("a", "p1"): 1.5}, "latency_ms": {("b", "other"): 9.0}})
    # present when at least one pod of the node has a value; the others are 0.0 ("not measured")
    assert cols == {"cpi": [1.5, 0.0, 0.0]}
    assert custom_columns(rows, None) == {} and custom_columns(rows, {"cpi": {}}) == {}
    with pytest.raises(ValueError, match="custom_metrics"):
        CollectorSettings(custom_metrics=("ipc",)).validate()
