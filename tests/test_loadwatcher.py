"""The load-watcher-compatible endpoint: the document's shape and arithmetic (pure), and the collector
serving it over HTTP during a run, checked against kubesim's own node usage."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.loadwatcher import ClusterView, LoadWatcherCache, duration_text
from kubetide.procs import ManagedProcess, ProcessGroup, kubetide_argv

pytest_plugins = ("tests.test_actuator_support",)  # fixture: kafka (a private embedded broker)

OPERATORS = {"Latest", "AVG", "STD"}


def check_shape(doc: dict) -> None:
    """The WatcherMetrics document as paypal/load-watcher serves it (pkg/watcher/schema)."""
    assert set(doc) == {"timestamp", "window", "source", "data"}
    assert isinstance(doc["timestamp"], int) and isinstance(doc["source"], str) and doc["source"]
    w = doc["window"]
    assert set(w) == {"duration", "start", "end"}
    assert isinstance(w["start"], int) and isinstance(w["end"], int) and w["start"] <= w["end"]
    assert set(doc["data"]) == {"NodeMetricsMap"}
    for node, nm in doc["data"]["NodeMetricsMap"].items():
        assert node and set(nm) == {"metrics", "tags", "metadata"}
        assert isinstance(nm["metadata"].get("dataCenter"), str)
        seen = set()
        for metric in nm["metrics"]:
            assert set(metric) == {"name", "type", "operator", "rollup", "value"}
            assert metric["type"] in ("CPU", "Memory") and metric["operator"] in OPERATORS
            assert isinstance(metric["value"], float | int) and metric["value"] >= 0
            seen.add((metric["type"], metric["operator"]))
        assert seen == {(t, o) for t in ("CPU", "Memory") for o in OPERATORS}


def value(doc: dict, node: str, typ: str, op: str) -> float:
    return next(m["value"] for m in doc["data"]["NodeMetricsMap"][node]["metrics"]
                if m["type"] == typ and m["operator"] == op)


# ---------------------------------------------------------------- pure

def test_empty_cache_has_no_document():
    assert LoadWatcherCache().snapshot() is None


def test_document_shape_and_window_arithmetic():
    cache = LoadWatcherCache(window_s=60)
    cpu = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    for i, v in enumerate(cpu):
        cache.observe("n1", 1000.0 + 10 * i, v, v / 2, zone="zone-a")
    cache.observe("n2", 1005.0, 5.0, 1.0)
    doc = cache.snapshot()
    check_shape(doc)
    end = 1000 + 10 * (len(cpu) - 1)
    assert doc["timestamp"] == end and doc["window"] == {"duration": "1m", "start": end - 60, "end": end}
    in_window = cpu[-7:]  # samples with ts >= end - 60
    assert value(doc, "n1", "CPU", "Latest") == pytest.approx(cpu[-1])
    assert value(doc, "n1", "CPU", "AVG") == pytest.approx(statistics.fmean(in_window), abs=1e-3)
    assert value(doc, "n1", "CPU", "STD") == pytest.approx(statistics.pstdev(in_window), abs=1e-3)
    assert value(doc, "n1", "Memory", "AVG") == pytest.approx(statistics.fmean(in_window) / 2, abs=1e-3)
    assert doc["data"]["NodeMetricsMap"]["n1"]["metadata"] == {"dataCenter": "zone-a"}
    # a node whose last sample fell out of the window still reports it (as load-watcher's latest fetch)
    assert value(doc, "n2", "CPU", "Latest") == 5.0 and value(doc, "n2", "CPU", "STD") == 0.0


def test_host_filter_retain_and_stale_samples():
    cache = LoadWatcherCache(window_s=900)
    cache.observe("a", 10.0, 40.0, 10.0)
    cache.observe("a", 5.0, 99.0, 99.0)  # older than the last sample: ignored
    cache.observe("a", 20.0, float("nan"), 1.0)  # not finite: ignored
    cache.observe("b", 10.0, 60.0, 20.0)
    only_a = cache.snapshot("a")
    assert set(only_a["data"]["NodeMetricsMap"]) == {"a"}
    assert value(only_a, "a", "CPU", "Latest") == 40.0 and value(only_a, "a", "CPU", "AVG") == 40.0
    assert cache.snapshot("nope")["data"]["NodeMetricsMap"] == {}
    cache.retain(["b"])
    assert set(cache.snapshot()["data"]["NodeMetricsMap"]) == {"b"}


def test_duration_text_matches_load_watcher_style():
    assert [duration_text(s) for s in (900, 600, 300, 3600, 90)] == ["15m", "10m", "5m", "1h", "90s"]
    with pytest.raises(ValueError):
        LoadWatcherCache(window_s=0)


# ---------------------------------------------------------------- the collector's cluster gauges

def _ev(kind: str, ns: str, name: str, **snap) -> m.ClusterEvent:
    field = {"Pod": "pod", "Node": "node", "Deployment": "deployment"}[kind]
    return m.ClusterEvent(ts=1.0, type="SYNC", kind=kind, namespace=ns, name=name, **{field: snap})


def _objects(nodes: dict, pods: dict, deployments: dict) -> dict:
    return {
        "Node": {("", n): _ev("Node", "", n, zone=z, node_group=g, labels={"pool": g},
                              allocatable={"cpu_cores": cpu, "mem_bytes": 8e9}) for n, (z, g, cpu) in nodes.items()},
        "Pod": {(ns, n): _ev("Pod", ns, n, node=node, phase=phase, requests={"cpu_cores": req, "mem_bytes": 1e8},
                             node_selector=sel, workload={"namespace": ns, "kind": "Deployment", "name": wl})
                for (ns, n), (node, phase, req, sel, wl) in pods.items()},
        "Deployment": {(ns, n): _ev("Deployment", ns, n, replicas=r, ready_replicas=ready)
                       for (ns, n), (r, ready) in deployments.items()},
    }


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_cluster_view_sets_the_cluster_gauges_and_forgets_what_vanished():
    view = ClusterView(window_s=60)
    objs = _objects(
        nodes={"lw-a": ("z1", "lw-fixed", 4.0), "lw-b": ("z2", "lw-fixed", 4.0), "lw-c": ("z1", "lw-spot", 2.0)},
        pods={("lw", "web-1"): ("lw-a", "Running", 1.0, {}, "lw-web"),
              ("lw", "web-2"): ("lw-c", "Running", 0.5, {}, "lw-web"),
              ("lw", "big-1"): (None, "Pending", 3.0, {"pool": "lw-spot"}, "lw-big"),
              ("lw", "odd-1"): (None, "Pending", 1.0, {}, "lw-big")},
        deployments={("lw", "lw-web"): (2, 2), ("lw", "lw-big"): (2, 0)})
    ts = "2024-06-03T12:00:00Z"
    node_items = [{"metadata": {"name": n}, "timestamp": ts, "usage": {"cpu": cpu, "memory": "2Gi"}}
                  for n, cpu in (("lw-a", "3"), ("lw-b", "1"), ("lw-c", "500m"), ("unknown", "1"))]
    pod_items = [{"metadata": {"namespace": "lw", "name": "web-1"}, "containers": [{"usage": {"cpu": "700m"}}]},
                 {"metadata": {"namespace": "lw", "name": "web-2"}, "containers": [{"usage": {"cpu": "300m"}}]}]
    view.update(objs, node_items, pod_items)
    assert _sample("kubetide_node_cpu_usage_ratio", node="lw-a") == pytest.approx(0.75)
    assert _sample("kubetide_node_cpu_usage_ratio", node="unknown") is None
    assert _sample("kubetide_node_info", node="lw-c", zone="z1", node_group="lw-spot") == 1
    assert _sample("kubetide_nodegroup_nodes", node_group="lw-fixed") == 2
    assert _sample("kubetide_nodegroup_allocatable_cpu_cores", node_group="lw-fixed") == 8.0
    assert _sample("kubetide_nodegroup_demand_cpu_cores", node_group="lw-fixed") == 1.0
    # the pending pod that selects the spot group counts there; the one selecting nothing does not
    assert _sample("kubetide_nodegroup_demand_cpu_cores", node_group="lw-spot") == pytest.approx(3.5)
    assert _sample("kubetide_pending_pods") == 2
    assert _sample("kubetide_workload_replicas_actual", namespace="lw", workload="lw-web") == 2
    assert _sample("kubetide_workload_replicas_actual", namespace="lw", workload="lw-big") == 0
    assert _sample("kubetide_workload_demand_cpu_cores", namespace="lw", workload="lw-web") == pytest.approx(1.0)
    doc = view.watcher.snapshot()
    assert set(doc["data"]["NodeMetricsMap"]) == {"lw-a", "lw-b", "lw-c"}
    assert value(doc, "lw-a", "CPU", "Latest") == pytest.approx(75.0)
    assert value(doc, "lw-a", "Memory", "Latest") == pytest.approx(100 * 2**31 / 8e9, abs=1e-3)
    # lw-c, the spot group and lw-big go away
    del objs["Node"][("", "lw-c")]
    del objs["Deployment"][("lw", "lw-big")]
    objs["Pod"] = {k: v for k, v in objs["Pod"].items() if k[1].startswith("web-1")}
    view.update(objs, node_items, pod_items)
    assert _sample("kubetide_node_cpu_usage_ratio", node="lw-c") is None
    assert _sample("kubetide_nodegroup_nodes", node_group="lw-spot") is None
    assert _sample("kubetide_workload_replicas_actual", namespace="lw", workload="lw-big") is None
    assert _sample("kubetide_pending_pods") == 0
    assert set(view.watcher.snapshot()["data"]["NodeMetricsMap"]) == {"lw-a", "lw-b"}
    view.update({"Node": {("", "x"): "not an event"}}, [{"metadata": None}], [{}])  # never raises


# ---------------------------------------------------------------- served by the collector during a run

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
async def test_collector_serves_kubesims_node_usage(kafka: str, tmp_path: Path) -> None:
    window_s, tick_s = 60, 10
    port = _free_port()
    async with KubeSim("demo", speed=0) as sim:
        c = sim.cluster
        await sim.advance(tick_s)
        with ProcessGroup() as group:
            group.add(ManagedProcess(
                "collector", kubetide_argv("collector", "--bootstrap-servers", kafka, "--kubeconfig",
                                           str(sim.kubeconfig_path), "--metrics-interval", "0.05",
                                           "--metrics-port", "0", "--lag-interval", "0",
                                           "--load-watcher-port", str(port), "--load-watcher-window", str(window_s)),
                tmp_path / "collector.log", env={"KUBETIDE_LOG_LEVEL": "INFO"}))
            url = f"http://127.0.0.1:{port}/watcher"
            history: dict[str, list[float]] = {n: [] for n in c.nodes}
            async with aiohttp.ClientSession() as http:

                async def fetch(params: dict | None = None) -> tuple[int, dict | None]:
                    try:
                        async with http.get(url, params=params) as r:
                            return r.status, (await r.json() if r.status in (200, 404, 503) else None)
                    except aiohttp.ClientConnectionError:
                        return 0, None

                async def until_tick(t: float) -> dict:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        status, doc = await fetch()
                        if status == 200 and doc["timestamp"] >= int(t):
                            return doc
                        assert not group.dead(), group.procs[0].tail(40)
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"/watcher did not reach t={t}: {status} {doc}\n{group.procs[0].tail(30)}")

                doc = None
                for _ in range(9):  # lock step: every tick's usage reaches the endpoint
                    doc = await until_tick(c.t)
                    for n, node in c.nodes.items():
                        history[n].append(100.0 * node.usage_cpu / node.cpu)
                    latest = {n: (100.0 * node.usage_cpu / node.cpu, 100.0 * node.usage_memory / node.memory)
                              for n, node in c.nodes.items()}
                    await sim.advance(tick_s)
                check_shape(doc)
                assert doc["source"] == "kubetide" and doc["window"]["duration"] == "1m"
                assert set(doc["data"]["NodeMetricsMap"]) == set(c.nodes)
                for n, node in c.nodes.items():
                    assert doc["data"]["NodeMetricsMap"][n]["metadata"]["dataCenter"] == node.zone
                    cpu_latest, mem_latest = latest[n]
                    assert value(doc, n, "CPU", "Latest") == pytest.approx(cpu_latest, abs=0.01)
                    assert value(doc, n, "Memory", "Latest") == pytest.approx(mem_latest, abs=0.01)
                    window = history[n][-(window_s // tick_s + 1):]
                    assert value(doc, n, "CPU", "AVG") == pytest.approx(statistics.fmean(window), abs=0.01)
                    assert value(doc, n, "CPU", "STD") == pytest.approx(statistics.pstdev(window), abs=0.01)
                hot = max(latest, key=lambda n: latest[n][0])
                status, one = await fetch({"host": hot})
                assert status == 200 and set(one["data"]["NodeMetricsMap"]) == {hot}
                status, _ = await fetch({"host": "no-such-node"})
                assert status == 404
