"""The metric catalogue: naming conventions, bounded labels, the /metrics server, helpers."""

from __future__ import annotations

import re
import urllib.request

import pytest
from aiohttp import ClientSession, web
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from kubetide import metrics as m

pytestmark = pytest.mark.timeout(30)

SNAKE = re.compile(r"^kubetide_[a-z][a-z0-9]*(_[a-z0-9]+)*$")
BASE_UNITS = {"seconds", "ratio", "messages", "cpu_cores", "bytes"}
FORBIDDEN_LABELS = {"pod", "pod_name", "uid", "container", "decision_id", "error", "message"}
NODE_LABELLED_GAUGES = {"kubetide_node_cpu_usage_ratio", "kubetide_node_info", "kubetide_anomalies_open",
                        "kubetide_antagonist_score"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape_text() -> str:
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY).decode()


def test_catalogue_follows_prometheus_naming_conventions():
    names = [spec.exposed_name for spec in m.CATALOGUE]
    assert len(names) == len(set(names)), "a metric is declared twice"
    for spec in m.CATALOGUE:
        name = spec.exposed_name
        assert SNAKE.match(name), f"{name}: not snake_case with the kubetide_ prefix"
        if spec.type == "counter":
            assert name.endswith("_total"), f"{name}: counters end in _total"
        else:
            assert not name.endswith("_total"), f"{name}: only counters end in _total"
        if spec.unit:
            assert spec.unit in BASE_UNITS, f"{name}: unit {spec.unit} is not a base unit"
            stem = name.removesuffix("_total")
            assert stem.endswith("_" + spec.unit), f"{name}: the unit {spec.unit} belongs at the end of the name"
        if spec.type == "histogram":
            assert spec.unit, f"{name}: a histogram needs a unit"
        if name.endswith("_info"):
            assert spec.type == "gauge"
        labels = set(spec.metric._labelnames)
        assert not labels & FORBIDDEN_LABELS, f"{name}: unbounded label {labels & FORBIDDEN_LABELS}"
        if "node" in labels:
            assert spec.type == "gauge" and name in NODE_LABELLED_GAUGES, f"{name}: node label off a per-node gauge"
        for label in labels:
            assert re.match(r"^[a-z][a-z0-9_]*$", label), f"{name}: label {label} is not snake_case"


def test_registry_exposes_every_catalogue_metric_with_its_type():
    families = {f.name: f for f in text_string_to_metric_families(scrape_text())}
    for spec in m.CATALOGUE:
        assert spec.name in families, f"{spec.exposed_name} is not exposed"
        assert families[spec.name].type == spec.type


def test_docstring_table_lists_exactly_the_catalogue():
    documented = set(re.findall(r"^(kubetide_[a-z0-9_]+)\s", m.__doc__, flags=re.M))
    assert documented == {spec.exposed_name for spec in m.CATALOGUE}


def test_series_names_include_histogram_parts():
    names = m.series_names()
    assert "kubetide_processing_latency_seconds_bucket" in names
    assert "kubetide_messages_consumed_total" in names
    assert "kubetide_processing_latency_seconds" not in names


def test_server_starts_on_a_free_port_and_serves_metrics():
    m.set_worker("test-server")
    port = m.start_metrics_server(0, host="127.0.0.1")
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.status == 200
            body = resp.read().decode()
        assert 'kubetide_worker_up{worker="test-server"} 1.0' in body
        assert "# TYPE kubetide_messages_consumed_total counter" in body
    finally:
        m.stop_metrics_server(port)


async def test_aiohttp_handler_serves_metrics():
    app = web.Application()
    app.router.add_get("/metrics", m.metrics_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]
        async with ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert "kubetide_worker_info" in await resp.text()
    finally:
        await runner.cleanup()


def test_message_helpers_move_the_counters_and_bound_labels():
    m.set_worker("test-helpers")
    before = value("kubetide_messages_consumed_total", topic="cluster.metrics", worker="test-helpers")
    m.observe_consumed("cluster.metrics", 3)
    assert value("kubetide_messages_consumed_total", topic="cluster.metrics", worker="test-helpers") == before + 3
    m.observe_produced("no-such-topic")
    assert value("kubetide_messages_produced_total", topic="other", worker="test-helpers") >= 1
    m.observe_deadletter("cluster.events", "decode")
    m.observe_deadletter("cluster.events", "Expecting value: line 1 column 1 (char 0)")
    assert value("kubetide_deadletters_total", origin="cluster.events", reason="decode", worker="test-helpers") == 1
    assert value("kubetide_deadletters_total", origin="cluster.events", reason="other", worker="test-helpers") == 1


def test_latency_histogram_uses_event_time():
    m.set_worker("test-latency")
    m.observe_latency("actions", event_ts=1000.0, now=1000.3)
    m.observe_latency("actions", event_ts=1000.0, now=999.0)  # clock skew: counted as 0
    labels = {"topic": "actions", "worker": "test-latency"}
    assert value("kubetide_processing_latency_seconds_count", **labels) == 2
    assert value("kubetide_processing_latency_seconds_sum", **labels) == pytest.approx(0.3)
    assert value("kubetide_processing_latency_seconds_bucket", le="0.5", **labels) == 2
    assert value("kubetide_processing_latency_seconds_bucket", le="0.25", **labels) == 1


def test_decisions_actions_and_pdb_refusals():
    before = value("kubetide_decisions_total", type="deschedule", strategy="LowNodeLoad")
    m.observe_decision("decisions.deschedule", "LowNodeLoad")
    m.observe_decision("deschedule", "LowNodeLoad", 2)
    assert value("kubetide_decisions_total", type="deschedule", strategy="LowNodeLoad") == before + 3
    pdb_before = value("kubetide_evictions_refused_by_pdb_total", namespace="shop")
    m.observe_action("skipped", "pdb", namespace="shop")
    m.observe_action("applied", "evicted", namespace="shop")
    assert value("kubetide_actions_total", outcome="skipped", reason="pdb") >= 1
    assert value("kubetide_evictions_refused_by_pdb_total", namespace="shop") == pdb_before + 1


def test_node_usage_sets_spread_and_drops_vanished_nodes():
    usage = {f"n{i}": i / 10 for i in range(11)}  # 0.0 .. 1.0
    spread = m.set_node_usage(usage, {n: ("zone-a", "pool") for n in usage})
    assert spread["max_min"] == pytest.approx(1.0)
    assert spread["p95_p5"] == pytest.approx(0.9)
    assert value("kubetide_cluster_cpu_usage_spread_ratio", measure="p95_p5") == pytest.approx(0.9)
    assert value("kubetide_node_cpu_usage_ratio", node="n7") == pytest.approx(0.7)
    assert value("kubetide_node_info", node="n7", zone="zone-a", node_group="pool") == 1
    m.set_node_usage({"n1": 0.5, "n2": 0.7})
    assert REGISTRY.get_sample_value("kubetide_node_cpu_usage_ratio", {"node": "n7"}) is None
    assert value("kubetide_cluster_cpu_usage_spread_ratio", measure="max_min") == pytest.approx(0.2)
    m.set_node_usage({})
    assert value("kubetide_cluster_cpu_usage_spread_ratio", measure="max_min") == 0


def test_percentile_matches_numpy_linear():
    np = pytest.importorskip("numpy")
    xs = [0.3, 0.9, 0.1, 0.55, 0.72, 0.05, 0.61]
    for q in (0, 5, 50, 95, 100):
        assert m.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_consumer_lag_replaces_only_its_group():
    m.set_consumer_lag("g1", {("cluster.metrics", 0): 5, ("cluster.metrics", 1): 7})
    m.set_consumer_lag("g2", {("actions", 0): 1})
    m.set_consumer_lag("g1", {("cluster.metrics", 1): 2})
    assert REGISTRY.get_sample_value("kubetide_consumer_lag_messages",
                                     {"group": "g1", "topic": "cluster.metrics", "partition": "0"}) is None
    assert value("kubetide_consumer_lag_messages", group="g1", topic="cluster.metrics", partition="1") == 2
    assert value("kubetide_consumer_lag_messages", group="g2", topic="actions", partition="0") == 1


def test_rebalances_worker_and_autoscaling_gauges():
    m.set_worker("test-misc")
    m.observe_rebalance("kubetide-streams")
    assert value("kubetide_consumer_rebalances_total", group="kubetide-streams", worker="test-misc") == 1
    assert value("kubetide_worker_info", worker="test-misc", version=m.__version__) == 1
    m.set_worker_down()
    assert value("kubetide_worker_up", worker="test-misc") == 0
    m.set_workload("shop", "cart", demand_cpu_cores=3.5, forecast_cpu_cores=4.0, replicas_predicted=8,
                   replicas_actual=7, forecast_error_ratio=0.12)
    assert value("kubetide_workload_replicas_predicted", namespace="shop", workload="cart") == 8
    assert value("kubetide_forecast_error_ratio", namespace="shop", workload="cart") == pytest.approx(0.12)
    m.forget_workload("shop", "cart")
    m.forget_workload("shop", "cart")  # idempotent
    assert REGISTRY.get_sample_value("kubetide_workload_demand_cpu_cores",
                                     {"namespace": "shop", "workload": "cart"}) is None
    m.set_nodegroup("spot", nodes=3, demand_cpu_cores=10, allocatable_cpu_cores=12)
    m.set_pending_pods(4)
    assert value("kubetide_nodegroup_nodes", node_group="spot") == 3
    assert value("kubetide_pending_pods") == 4


def test_anomaly_tracker_follows_open_and_cleared_findings():
    tracker = m.AnomalyTracker()
    opened = value("kubetide_anomalies_total", metric="latency_ms")
    tracker.observe({"id": "x1", "node": "tn-1", "state": "open", "metric": "latency_ms",
                     "antagonists": [{"namespace": "b", "name": "etl-7f", "app": "etl", "score": 0.8}]})
    tracker.observe({"id": "x1", "node": "tn-1", "state": "open", "metric": "latency_ms",  # repeated: no new count
                     "antagonists": [{"namespace": "b", "name": "etl-7f", "app": "etl", "score": 0.9}]})
    tracker.observe({"id": "x2", "node": "tn-1", "state": "open", "metric": "cpi", "antagonists": []})
    assert value("kubetide_anomalies_open", node="tn-1") == 2
    assert value("kubetide_anomalies_total", metric="latency_ms") == opened + 1
    assert value("kubetide_antagonist_score", app="etl", node="tn-1") == pytest.approx(0.9)
    tracker.observe({"id": "x1", "node": "tn-1", "state": "cleared"})
    assert REGISTRY.get_sample_value("kubetide_antagonist_score", {"app": "etl", "node": "tn-1"}) is None
    tracker.observe({"id": "x2", "node": "tn-1", "state": "cleared"})
    assert REGISTRY.get_sample_value("kubetide_anomalies_open", {"node": "tn-1"}) is None


def test_anomaly_tracker_accepts_models():
    from kubetide.models import Anomaly

    a = Anomaly.model_validate({
        "id": "m1", "ts": 10.0, "node": "tn-2", "state": "open", "metric": "cpi", "severity": 2.0,
        "victim": {"namespace": "shop", "name": "cart-1", "app": "cart"},
        "antagonists": [{"namespace": "batch", "name": "etl-1", "app": "etl", "score": 0.7}],
        "window_start": 0.0, "window_end": 10.0,
    })
    tracker = m.AnomalyTracker()
    tracker.observe(a)
    assert value("kubetide_antagonist_score", app="etl", node="tn-2") == pytest.approx(0.7)
    tracker.observe({"id": "m1", "node": "tn-2", "state": "cleared"})


def test_synthetic_step_sets_every_metric():
    import random

    m.set_worker("synthetic-test")
    m.synthetic_step(1000.0, random.Random(1))
    exposed = {s.name for f in text_string_to_metric_families(scrape_text()) for s in f.samples}
    missing = m.series_names() - exposed
    assert not missing, f"synthetic_step leaves these unset: {sorted(missing)}"


def test_stream_worker_drops_forecasts_it_no_longer_plans():
    """A workload the autoscaler stops planning, or every workload once the planner partition moved to
    another worker, stops being exported (no stale forecast counted twice across workers)."""
    from types import SimpleNamespace

    from streams.agents import _publish_forecasts

    def get(name, wl):
        return REGISTRY.get_sample_value(name, {"namespace": "shop", "workload": wl})

    ev = {"forecast_peak_cores": 2.5, "replicas.predictive": 4, "forecast_error": 0.1}
    auto = SimpleNamespace(evidence={"shop/fc-a": ev, "shop/fc-b": ev})
    pl = SimpleNamespace(tick_planners=[SimpleNamespace(), auto])  # a tick planner without evidence too
    m.set_workload("shop", "fc-a", demand_cpu_cores=2.0, replicas_actual=4)  # the collector's series
    published = _publish_forecasts(pl, set())
    assert published == {"shop/fc-a", "shop/fc-b"} and get("kubetide_workload_forecast_cpu_cores", "fc-b") == 2.5
    auto.evidence = {"shop/fc-a": ev}
    published = _publish_forecasts(pl, published)
    assert get("kubetide_workload_forecast_cpu_cores", "fc-b") is None
    assert get("kubetide_workload_replicas_predicted", "fc-a") == 4
    assert _publish_forecasts(None, published) == set()
    for name in ("kubetide_workload_forecast_cpu_cores", "kubetide_workload_replicas_predicted",
                 "kubetide_forecast_error_ratio"):
        assert get(name, "fc-a") is None, name
    assert get("kubetide_workload_demand_cpu_cores", "fc-a") == 2.0  # not the forecast's to remove
    m.forget_workload("shop", "fc-a")
