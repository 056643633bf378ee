"""Every Grafana dashboard panel against a real Prometheus scraping real kubetide workers.

The embedded broker, kubesim (in process, manual clock), the collector, one stream worker and the
actuator run a short scenario that produces deschedule decisions and evictions (a hot node), a
refusal by a PodDisruptionBudget (a decision for a pod whose PDB allows no disruption), dead letters
(malformed input on cluster.metrics), an interference finding (an antagonist next to victims, with
CPI from kubesim's custom metrics API), a pending pod and two node groups. The real ``prometheus``
binary (Debian package) scrapes the three workers' /metrics every second; then every target query of
every dashboard in ``compose/grafana/dashboards`` is evaluated through ``/api/v1/query``.

A query "returns data" when its result holds at least one sample with a finite value. The stream
worker runs the autoscaling planner (for shop/web, which runs hot and is scaled out) and the node
scaler (the "shared" group counts as elastic: its node is tainted), so their decision panels have
data. The forecast panels need hours of a workload's history: they are listed in ``NEEDS`` with the
reason; they must still parse and run, and are not required to return data (and pass when they do).
The table of every panel and its outcome is printed (``pytest -s``) and written to
``$KUBETIDE_PANEL_REPORT`` when set.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import shutil
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.codec import encode
from kubetide.kafka import producer_config
from kubetide.procs import ManagedProcess, ProcessGroup, add_streams_worker, kubetide_argv
from kubetide.topics import ACTIONS, ANOMALIES, CLUSTER_METRICS, DECISIONS_DESCHEDULE
from tests.test_actuator_support import TopicReader

pytest_plugins = ("tests.test_actuator_support",)  # fixture: kafka (a private embedded broker)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "compose" / "grafana" / "dashboards"
TICK_S = 10
RATE_INTERVAL = "1m"  # what $__rate_interval stands for over this short run

# (dashboard file, panel title, query index) → why it may be empty in this run.
AUTOSCALER = ("needs a forecast: the predictive trigger needs two periods of a workload's history (hours);"
              " this run lasts seconds")
NEEDS: dict[tuple[str, str, int], str] = {
    ("autoscaling.json", "Worst forecast error", 0): AUTOSCALER,
    ("autoscaling.json", "Replicas short", 0): AUTOSCALER,
    ("autoscaling.json", "Replicas in excess", 0): AUTOSCALER,
    ("autoscaling.json", "Workloads", 0): AUTOSCALER,
    ("autoscaling.json", "Demand and forecast", 1): AUTOSCALER,
    ("autoscaling.json", "Replicas: predicted vs actual", 0): AUTOSCALER,
    ("autoscaling.json", "Forecast error", 0): AUTOSCALER,
    ("autoscaling.json", "Replica gap now", 0): AUTOSCALER,
}


def _panels(items: list[dict]) -> list[dict]:
    out = []
    for p in items:
        out.extend(_panels(p.get("panels") or []) if p.get("type") == "row" else [p])
    return out


def dashboard_queries() -> list[tuple[str, str, int, str]]:
    """(dashboard file, panel title, target index, PromQL with Grafana's variables substituted)."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in _panels(json.loads(path.read_text())["panels"]):
            for i, target in enumerate(panel.get("targets") or []):
                expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "15s")
                out.append((path.name, panel["title"], i, expr))
    return out


def scenario() -> dict:
    """Two node groups; a hot node (pinned `worker` pods using far more than they request); a `cache`
    whose PDB allows no disruption on the hot node; an antagonist (on from minute 5 to 15) next to
    latency-sensitive victims; a pod too large for any node (Pending)."""
    return {
        "name": "prometheus-e2e", "seed": 3, "start": "2024-06-03T12:00:00Z", "resolution_s": TICK_S,
        "system_overhead": {"cpu": 0}, "zones": ["zone-a", "zone-b"], "namespaces": ["shop", "batch"],
        "node_groups": [
            {"name": "general", "cpu": 8, "memory": "32Gi",
             "nodes": [{"name": "hot", "zone": "zone-a"}, {"name": "cool-a", "zone": "zone-a"},
                       {"name": "cool-b", "zone": "zone-b"}]},
            {"name": "shared", "cpu": 16, "memory": "64Gi", "nodes": [{"name": "shared-1", "zone": "zone-b"}]},
        ],
        "apps": [
            {"name": "worker", "namespace": "batch", "replicas": 3, "requests": {"cpu": "1", "memory": "1Gi"},
             "startup_s": 20, "demand": {"cpu": 7.5, "noise": 0.01}, "pdb": {"maxUnavailable": 1},
             "pods": [{"index": 0, "node": "hot"}, {"index": 1, "node": "hot"}, {"index": 2, "node": "hot"}]},
            {"name": "cache", "namespace": "shop", "replicas": 2, "requests": {"cpu": "500m", "memory": "1Gi"},
             "startup_s": 10, "demand": {"cpu": 0.4, "noise": 0.02}, "pdb": {"minAvailable": 2},
             "pods": [{"index": 0, "node": "hot"}, {"index": 1, "node": "cool-a"}]},
            {"name": "web", "namespace": "shop", "replicas": 2, "requests": {"cpu": "500m", "memory": "512Mi"},
             "startup_s": 10, "demand": {"cpu": 1.0, "noise": 0.05},
             "pods": [{"index": 0, "node": "cool-a"}, {"index": 1, "node": "cool-b"}]},
            {"name": "noisy", "namespace": "batch", "replicas": 1, "requests": {"cpu": "1", "memory": "1Gi"},
             "startup_s": 0, "demand": {"cpu": 1.5, "noise": 0.02},
             "antagonist": {"intensity": 1.5, "on_min": 10, "off_min": 30, "phase_min": 35},
             "pods": [{"index": 0, "node": "shared-1"}]},
            {"name": "victim", "namespace": "shop", "replicas": 3, "requests": {"cpu": "1", "memory": "1Gi"},
             "startup_s": 0, "demand": {"cpu": 1.0, "noise": 0.05},
             "pods": [{"index": i, "node": "shared-1"} for i in range(3)]},
            {"name": "huge", "namespace": "batch", "replicas": 1, "requests": {"cpu": "64", "memory": "1Gi"},
             "startup_s": 0, "demand": {"cpu": 1.0}, "node_selector": {"kubesim.io/node-group": "shared"}},
        ],
    }


def streams_config(tmp_path: Path) -> Path:
    """The stream worker's config: the autoscaling and node-scaling tick planners on (with their
    defaults) wherever their modules exist, so their panels get data as soon as they publish it."""
    # shop/web runs at ~100 % of its requests: the autoscaler (target 50 %) scales it out; the "shared"
    # group counts as elastic for the node scaler, which taints its node when it first sees it.
    conf = {"autoscale": {"workloads": {"shop/web": {"min_replicas": 2, "max_replicas": 6,
                                                     "target_cpu_utilization": 50}}},
            "nodescale": {"elastic_groups": ["shared"]}}
    planners = {name: conf[name] for name, module in (("autoscale", "streams.core.autoscaler"),
                                                      ("nodescale", "streams.core.nodescale"))
                if importlib.util.find_spec(module) is not None}
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump({"streams": planners}))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, **params: str) -> dict:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}", timeout=10) as resp:
        return json.loads(resp.read())


def _value(prom: str, expr: str) -> float:
    result = _get(f"{prom}/api/v1/query", query=expr)["data"]["result"]
    assert len(result) == 1, f"{expr}: {result}"
    return float(result[0]["value"][1])


def _finite(result: list[dict]) -> list[float]:
    out = []
    for series in result:
        raw = series["value"][1] if "value" in series else None
        try:
            v = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out.append(v)
    return out


async def _send_bad_input(bootstrap: str) -> None:
    """Two messages the stream worker must dead-letter (malformed JSON, unknown schema version)."""
    p = AIOKafkaProducer(**producer_config(bootstrap, True))
    await p.start()
    try:
        await p.send_and_wait(CLUSTER_METRICS, b'{"schema": {"name": "cluster.metrics", "vers', key=b"e2e-bad")
        await p.send_and_wait(CLUSTER_METRICS, b'{"schema": {"name": "cluster.metrics", "version": 99}, "ts": 0}',
                              key=b"e2e-bad")
    finally:
        await p.stop()


async def _send_pdb_blocked_decision(bootstrap: str, sim: KubeSim) -> str:
    """A deschedule decision for the cache pod on the hot node: its PDB (minAvailable 2 of 2) refuses."""
    c = sim.cluster
    pod = next(p for p in c.pods.values() if p.app == "cache" and p.node_name == "hot")
    d = m.DescheduleDecision(
        id=m.decision_id("prometheus-e2e", pod.uid), made_at=c.t, expires_at=c.t + 3600, strategy="e2e-probe",
        reason="probe the PDB path", pod=m.PodRef(namespace=pod.namespace, name=pod.name, uid=pod.uid, node="hot",
                                                 app="cache"),
        workload=m.WorkloadRef(namespace=pod.namespace, kind="Deployment", name="cache"), from_node="hot")
    p = AIOKafkaProducer(**producer_config(bootstrap, True))
    await p.start()
    try:
        await p.send_and_wait(DECISIONS_DESCHEDULE, encode(d), key=b"shop/cache")
    finally:
        await p.stop()
    return d.id


@pytest.mark.timeout(170)
async def test_every_dashboard_panel_returns_data_from_real_prometheus(kafka: str, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "the prometheus binary is missing: scripts/test.sh installs the Debian package prometheus"
    queries = dashboard_queries()
    assert len(queries) >= 40
    ports = {w: _free_port() for w in ("collector", "streams", "actuator", "prometheus")}
    env = {"KUBETIDE_LOG_LEVEL": "INFO"}
    started = time.monotonic()
    async with KubeSim(scenario(), speed=0) as sim:
        c = sim.cluster
        await sim.advance(TICK_S)
        common = ["--bootstrap-servers", kafka, "--kubeconfig", str(sim.kubeconfig_path)]
        prom_log = tmp_path / "prometheus.log"
        with ProcessGroup() as group:
            streams, ready = add_streams_worker(group, kafka, tmp_path, env=env,
                                                extra=["--metrics-port", str(ports["streams"]),
                                                       "--config", str(streams_config(tmp_path))])
            group.add(ManagedProcess(
                "collector", kubetide_argv("collector", *common, "--metrics-interval", "0.05", "--lag-interval", "1",
                                           "--metrics-port", str(ports["collector"])),
                tmp_path / "collector.log", env=env))
            group.add(ManagedProcess(
                "actuator", kubetide_argv("actuator", *common, "--metrics-port", str(ports["actuator"])),
                tmp_path / "actuator.log", env=env))
            config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                      "scrape_configs": [{"job_name": f"kubetide-{w}",
                                          "static_configs": [{"targets": [f"127.0.0.1:{ports[w]}"]}]}
                                         for w in ("collector", "streams", "actuator")]}
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
            group.add(ManagedProcess(
                "prometheus", [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], prom_log))
            prom = f"http://127.0.0.1:{ports['prometheus']}"
            await asyncio.to_thread(streams.wait_for_file, ready, 60)

            async with TopicReader(kafka, CLUSTER_METRICS) as metrics, TopicReader(kafka, ANOMALIES) as anomalies, \
                    TopicReader(kafka, ACTIONS) as actions:
                probe_id = None
                for tick in range(60):  # lock step: one scrape per tick (the interference detector needs each)
                    now = c.t
                    await metrics.wait_for(lambda v, now=now: isinstance(v, m.ClusterMetrics) and v.ts >= now,
                                           within=15)
                    assert not group.dead(), f"{group.dead()[0].name} died:\n{group.dead()[0].tail(40)}"
                    if tick in (3, 25):
                        await _send_bad_input(kafka)
                    if tick == 6:
                        probe_id = await _send_pdb_blocked_decision(kafka, sim)
                    found = anomalies.matching(lambda a: isinstance(a, m.Anomaly) and a.state == "open")
                    applied = actions.matching(lambda a: getattr(a, "outcome", None) == "applied")
                    refused = actions.matching(lambda a: getattr(a, "reason", None) == "pdb")
                    if found and applied and refused and tick >= 30:
                        break
                    await sim.advance(TICK_S)
                assert found, "no interference finding: " + streams.tail(20)
                assert applied, "no eviction applied: " + group.procs[-2].tail(20)
                assert refused and refused[0].decision_id == probe_id
                scenario_s = time.monotonic() - started

            # Enough scrapes after the last event for every rate() window, then every panel.
            await asyncio.sleep(4)
            results = []
            for dashboard, title, i, expr in queries:
                res = await asyncio.to_thread(_get, f"{prom}/api/v1/query", query=expr)
                assert res["status"] == "success", f"{dashboard}/{title}[{i}]: {res}"
                values = _finite(res["data"]["result"])
                results.append((dashboard, title, i, expr, len(res["data"]["result"]), values))
            assert not group.dead(), f"{group.dead()[0].name} died:\n{group.dead()[0].tail(40)}"
            # A few values against kubesim's own state (the clock is stopped: nothing moves any more).
            pending = [p for p in c.pods.values() if p.phase == "Pending" and not p.node_name]
            assert pending and _value(prom, "max(kubetide_pending_pods)") == len(pending)
            for group_name in {n.group for n in c.nodes.values()}:
                want = sum(1 for n in c.nodes.values() if n.group == group_name)
                assert _value(prom, f'kubetide_nodegroup_nodes{{node_group="{group_name}"}}') == want
            lagged = _get(f"{prom}/api/v1/query", query="count by (group) (kubetide_consumer_lag_messages)")
            assert {r["metric"]["group"] for r in lagged["data"]["result"]} == {"kubetide-streams",
                                                                                 "kubetide-actuator"}
            hottest = max(c.nodes.values(), key=lambda n: n.usage_cpu / n.cpu)
            assert _value(prom, "max(kubetide_node_cpu_usage_ratio)") == pytest.approx(
                hottest.usage_cpu / hottest.cpu, abs=1e-3)

    lines = [f"{'yes' if v else 'no ':3}  {d.removesuffix('.json')} / {t} [{chr(65 + i)}]: {len(v)} series"
             + (f", e.g. {v[0]:.4g}" if v else f" — {NEEDS.get((d, t, i), 'MISSING DATA')}")
             for d, t, i, _, _, v in results]
    report = "\n".join(lines) + f"\n(scenario {scenario_s:.0f}s, total {time.monotonic() - started:.0f}s)\n"
    print("\n" + report)
    if os.environ.get("KUBETIDE_PANEL_REPORT"):
        await asyncio.to_thread(Path(os.environ["KUBETIDE_PANEL_REPORT"]).write_text, report)
    missing = [f"{d}/{t}[{i}]: {e}" for d, t, i, e, _, v in results if not v and (d, t, i) not in NEEDS]
    assert not missing, "panels without data:\n" + "\n".join(missing) + "\n\n" + report
    stale = [k for k in NEEDS if k not in {(d, t, i) for d, t, i, *_ in results}]
    assert not stale, f"NEEDS names panels the dashboards no longer have: {stale}"
