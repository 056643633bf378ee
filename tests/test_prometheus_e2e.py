"""Every Grafana dashboard panel against a real Prometheus scraping real kubetide workers.

The embedded broker, kubesim (in process, manual clock), the collector, one stream worker and the
actuator run a short scenario that produces deschedule decisions and evictions (a hot node), a
refusal by a PodDisruptionBudget (a decision for a pod whose PDB allows no disruption), dead letters
(malformed input on cluster.metrics), an interference finding (an antagonist next to victims, with
CPI from kubesim's custom metrics API), a pending pod, two node groups and a workload whose CPU
repeats every two virtual minutes (shop/api, for the predictive autoscaler). The real ``prometheus``
binary (Debian package) scrapes the three workers' /metrics every second; then every target query of
every dashboard in ``compose/grafana/dashboards`` is evaluated through ``/api/v1/query``.

A query "returns data" when its result holds at least one sample with a finite value. The stream
worker runs the autoscaling planner (for shop/web, which runs hot and is scaled out) and the node
scaler (the "shared" group counts as elastic: its node is tainted), so their decision panels have
data. The predictive trigger needs two cycles of a period in a workload's history: with 10 s history
buckets (one per tick) and a 2-minute period, shop/api has them after ~25 ticks, so the autoscaler
fits a real forecast (period detection, backtest) and publishes its forecast, predicted replicas and
error; the run waits for that, and the forecast is checked against kubesim's demand model. Every
panel must return data. The table of every panel and its outcome is printed (``pytest -s``) and
written to ``$KUBETIDE_PANEL_REPORT`` when set.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.codec import encode
from kubetide.kafka import producer_config
from kubetide.procs import ManagedProcess, ProcessGroup, add_actuator, add_collector, add_streams_worker
from kubetide.topics import ACTIONS, ANOMALIES, CLUSTER_METRICS, DECISIONS_DESCHEDULE
from tests.prometheus_support import dashboard_queries, free_port, query
from tests.test_actuator_support import TopicReader

pytest_plugins = ("tests.test_actuator_support",)  # fixture: kafka (a private embedded broker)

TICK_S = 10
RATE_INTERVAL = "1m"  # what $__rate_interval stands for over this short run
# shop/api's demand: 0.3 cores, doubled for one minute of every two (from 15 s past the period's
# start, so no tick sits on a phase edge). Two cycles = 24 ticks of 10 s.
API_PERIOD_S = 120
API_POLICY = {"min_replicas": 2, "max_replicas": 4, "target_cpu_utilization": 80,
              "predictive": {"prediction_window_s": API_PERIOD_S, "margin": 0.1, "max_error": 0.25}}
API_SELECTOR = '{namespace="shop",workload="api"}'
FORECAST_GAUGES = ("kubetide_workload_forecast_cpu_cores", "kubetide_workload_replicas_predicted",
                   "kubetide_forecast_error_ratio")


def scenario() -> dict:
    """Two node groups; a hot node (pinned `worker` pods using far more than they request); a `cache`
    whose PDB allows no disruption on the hot node; an antagonist (on from minute 5 to 15) next to
    latency-sensitive victims; a pod too large for any node (Pending); `api`, whose CPU repeats every
    two minutes (pinned to the cool nodes and never descheduled, so nothing but its demand shapes its
    history; well within its requests: the autoscaler keeps 2 replicas)."""
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
            {"name": "api", "namespace": "shop", "replicas": 2, "requests": {"cpu": "500m", "memory": "512Mi"},
             "annotations": {"kubetide.io/evict": "never"}, "startup_s": 0, "demand": {"cpu": 0.3, "noise": 0.02,
                                        "spikes": {"every_h": API_PERIOD_S / 3600, "at_min": 0.25,
                                                   "duration_min": API_PERIOD_S / 120, "factor": 2.0}},
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
    """The stream worker's config: the autoscaling and node-scaling tick planners on wherever their
    modules exist, so their panels get data as soon as they publish it."""
    # shop/web runs at ~100 % of its requests: the autoscaler (target 50 %) scales it out; the "shared"
    # group counts as elastic for the node scaler, which taints its node when it first sees it.
    # History in 10 s buckets (one per tick), refitted every 30 s: what suits shop/api's 2-minute period,
    # as the defaults (60 s buckets, 5-minute refits) suit hourly and daily ones.
    conf = {"autoscale": {"interval_s": TICK_S, "history_s": 3600, "refit_s": 30,
                          "workloads": {"shop/web": {"min_replicas": 2, "max_replicas": 6,
                                                     "target_cpu_utilization": 50},
                                        "shop/api": API_POLICY}},
            "nodescale": {"elastic_groups": ["shared"]}}
    planners = {name: conf[name] for name, module in (("autoscale", "streams.core.autoscaler"),
                                                      ("nodescale", "streams.core.nodescale"))
                if importlib.util.find_spec(module) is not None}
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump({"streams": planners}))
    return path


def _value(prom: str, expr: str) -> float:
    result = query(f"{prom}/api/v1/query", query=expr)["data"]["result"]
    assert len(result) == 1, f"{expr}: {result}"
    return float(result[0]["value"][1])


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A worker's /metrics as {(sample name, labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _api_forecast(url: str) -> dict[str, float]:
    """shop/api's forecast gauges on the stream worker's /metrics (none until the autoscaler has a forecast)."""
    labels = frozenset({("namespace", "shop"), ("workload", "api")})
    return {name: v for (name, lbl), v in _scrape(url).items() if name in FORECAST_GAUGES and lbl == labels}


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
    queries = dashboard_queries(RATE_INTERVAL)
    assert len(queries) >= 40
    ports = {w: free_port() for w in ("collector", "streams", "actuator", "prometheus")}
    env = {"KUBETIDE_LOG_LEVEL": "INFO"}
    started = time.monotonic()
    async with KubeSim(scenario(), speed=0) as sim:
        c = sim.cluster
        await sim.advance(TICK_S)
        prom_log = tmp_path / "prometheus.log"
        with ProcessGroup() as group:
            streams, ready = add_streams_worker(group, kafka, tmp_path, env=env,
                                                extra=["--metrics-port", str(ports["streams"]),
                                                       "--config", str(streams_config(tmp_path))])
            add_collector(group, kafka, tmp_path, sim.kubeconfig_path, env=env,
                          extra=["--lag-interval", "1", "--metrics-port", str(ports["collector"])])
            add_actuator(group, kafka, tmp_path, sim.kubeconfig_path, env=env,
                         extra=["--metrics-port", str(ports["actuator"])])
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
                forecast: dict[str, float] = {}
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
                    forecast = await asyncio.to_thread(_api_forecast, f"http://127.0.0.1:{ports['streams']}/metrics")
                    if found and applied and refused and len(forecast) == len(FORECAST_GAUGES) and tick >= 30:
                        break
                    await sim.advance(TICK_S)
                assert found, "no interference finding: " + streams.tail(20)
                assert len(forecast) == len(FORECAST_GAUGES), (
                    f"no forecast for shop/api after {tick + 1} ticks ({tick * TICK_S} virtual s):"
                    f" {forecast}\n" + streams.tail(30))
                assert applied, "no eviction applied: " + group.procs[-2].tail(20)
                assert refused and refused[0].decision_id == probe_id
                scenario_s = time.monotonic() - started

            # Enough scrapes after the last event for every rate() window, then every panel.
            await asyncio.sleep(4)
            deadline = time.monotonic() + 15
            forecast_query = f"kubetide_workload_forecast_cpu_cores{API_SELECTOR}"
            while not (await asyncio.to_thread(query, f"{prom}/api/v1/query", query=forecast_query))["data"]["result"]:
                assert time.monotonic() < deadline, "Prometheus did not scrape shop/api's forecast:\n" + \
                    prom_log.read_text()[-2000:]
                await asyncio.sleep(0.5)
            results = []
            for dashboard, title, i, expr in queries:
                res = await asyncio.to_thread(query, f"{prom}/api/v1/query", query=expr)
                assert res["status"] == "success", f"{dashboard}/{title}[{i}]: {res}"
                values = _finite(res["data"]["result"])
                results.append((dashboard, title, i, expr, res["data"]["result"], values))
            assert not group.dead(), f"{group.dead()[0].name} died:\n{group.dead()[0].tail(40)}"
            lines = [f"{'yes' if v else 'no ':3}  {d.removesuffix('.json')} / {t} [{chr(65 + i)}]: {len(v)} series"
                     + (f", e.g. {v[0]:.4g}" if v else " — MISSING DATA")
                     for d, t, i, _, _, v in results]
            report = "\n".join(lines) + (f"\n{sum(1 for *_, v in results if v)} of {len(results)} queries with data"
                                         f" (scenario {tick + 1} ticks in {scenario_s:.0f}s,"
                                         f" total {time.monotonic() - started:.0f}s)\n")
            print("\n" + report)
            if os.environ.get("KUBETIDE_PANEL_REPORT"):
                await asyncio.to_thread(Path(os.environ["KUBETIDE_PANEL_REPORT"]).write_text, report)
            missing = [f"{d}/{t}[{i}]: {e}" for d, t, i, e, _, v in results if not v]
            assert not missing, "panels without data:\n" + "\n".join(missing) + "\n\n" + report
            # A few values against kubesim's own state (the clock is stopped: nothing moves any more).
            pending = [p for p in c.pods.values() if p.phase == "Pending" and not p.node_name]
            assert pending and _value(prom, "max(kubetide_pending_pods)") == len(pending)
            for group_name in {n.group for n in c.nodes.values()}:
                want = sum(1 for n in c.nodes.values() if n.group == group_name)
                assert _value(prom, f'kubetide_nodegroup_nodes{{node_group="{group_name}"}}') == want
            lagged = query(f"{prom}/api/v1/query", query="count by (group) (kubetide_consumer_lag_messages)")
            assert {r["metric"]["group"] for r in lagged["data"]["result"]} == {"kubetide-streams",
                                                                                 "kubetide-actuator"}
            hottest = max(c.nodes.values(), key=lambda n: n.usage_cpu / n.cpu)
            assert _value(prom, "max(kubetide_node_cpu_usage_ratio)") == pytest.approx(
                hottest.usage_cpu / hottest.cpu, abs=1e-3)
            # shop/api's forecast against kubesim's demand model: the peak of a period (the prediction
            # window) plus the margin; its backtest error within max_error (else it would not be used);
            # 0.66 cores is 82.5 % of what 2 replicas serve at the 80 % target: 2 predicted, 2 running.
            api = c.deployments[("shop", "api")]
            pred = API_POLICY["predictive"]
            peak = max(c.demand(api.spec, c.t + s, noise=False) for s in range(0, API_PERIOD_S, TICK_S))
            assert _value(prom, f"kubetide_workload_forecast_cpu_cores{API_SELECTOR}") == pytest.approx(
                peak * (1 + pred["margin"]), rel=0.1)
            assert 0 <= _value(prom, f"kubetide_forecast_error_ratio{API_SELECTOR}") <= pred["max_error"]
            assert _value(prom, f"kubetide_workload_replicas_predicted{API_SELECTOR}") == api.replicas == 2
            gap = next(r for d, t, _, _, r, _ in results if t == "Replica gap now")
            assert [float(g["value"][1]) for g in gap if g["metric"] == {"namespace": "shop", "workload": "api"}] == [0]

