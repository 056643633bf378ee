"""Grafana dashboards as code: generated-equal, every query parses, names only catalogue metrics,
and every query returns data from a real Prometheus scraping kubetide's metrics."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from kubetide import metrics
from tests.prometheus_support import DASHBOARD_DIR, dashboard_queries, free_port, panels, query, stop

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "compose" / "grafana"
# What Grafana substitutes for $__rate_interval at a 1 s scrape interval is well under this.
RATE_INTERVAL = "30s"


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("kubetide_build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


QUERIES = [(name, title, expr) for name, title, _, expr in dashboard_queries(RATE_INTERVAL)]
QUERY_IDS = [f"{d.removesuffix('.json')}/{title}/{i}" for i, (d, title, _) in enumerate(QUERIES)]


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)
        elif isinstance(node, promql_parser.MatrixSelector):
            names.add(node.vector_selector.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


# ---------------------------------------------------------------- as code

def test_checked_in_dashboards_equal_the_builder_output():
    built = _builder().build_all()
    on_disk = {p.name: p.read_text() for p in DASHBOARD_DIR.glob("*.json")}
    assert set(built) == set(on_disk), "dashboards/ holds files the builder does not make, or misses some"
    stale = [name for name, text in built.items() if on_disk[name] != text]
    assert not stale, f"stale dashboards {stale}: run python compose/grafana/build_dashboards.py"


def test_five_dashboards_with_unique_uids_and_the_provisioned_datasource():
    dashboards = _dashboards()
    assert set(dashboards) == {"fleet-balance.json", "autoscaling.json", "node-groups.json",
                               "interference.json", "pipeline-health.json"}
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    ds_uid = ds["datasources"][0]["uid"]
    for name, dash in dashboards.items():
        for panel in panels(dash["panels"]):
            assert panel.get("targets"), f"{name}: panel {panel['title']!r} has no query"
            for t in panel["targets"]:
                assert t["datasource"] == {"type": "prometheus", "uid": ds_uid}, f"{name}: {panel['title']}"
                assert t.get("expr", "").strip(), f"{name}: panel {panel['title']!r} has an empty query"


def test_heatmap_of_node_usage_is_on_fleet_balance():
    dash = _dashboards()["fleet-balance.json"]
    heatmaps = [p for p in panels(dash["panels"]) if p["type"] == "heatmap"]
    assert heatmaps and "kubetide_node_cpu_usage_ratio" in heatmaps[0]["targets"][0]["expr"]


@pytest.mark.parametrize(("dashboard", "panel", "expr"), QUERIES, ids=QUERY_IDS)
def test_query_parses_and_uses_only_catalogue_metrics(dashboard, panel, expr):
    names = metric_names(expr)
    assert names, f"{dashboard}/{panel}: no metric in {expr!r}"
    unknown = names - metrics.series_names()
    assert not unknown, f"{dashboard}/{panel}: {sorted(unknown)} not in kubetide/metrics.py"


def test_every_query_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"kubetide:dashboard_query_{i}", "expr": expr} for i, (_, _, expr) in enumerate(QUERIES)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- against a real Prometheus

@pytest.fixture(scope="module")
def prometheus_with_kubetide(tmp_path_factory):
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("the prometheus binary is not installed (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    exporter_port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "kubetide.metrics", "--synthetic", "--host", "127.0.0.1",
         "--port", str(exporter_port), "--interval", "0.2", "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    server = None
    try:
        line = exporter.stdout.readline()
        assert "serving /metrics" in line, f"exporter did not start: {line}"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "kubetide-synthetic",
                                      "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        server = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=open(tmp / "prometheus.log", "w"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 45
        samples = 0.0
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            try:
                res = query(f"{url}/api/v1/query", query="count_over_time(kubetide_worker_up[1m])")
                result = res["data"]["result"]
                samples = float(result[0]["value"][1]) if result else 0.0
            except OSError:
                samples = 0.0
            if samples >= 4:  # four scrapes: every rate() has points to work with
                break
            time.sleep(0.5)
        assert samples >= 4, f"Prometheus did not scrape the exporter in time:\n{(tmp / 'prometheus.log').read_text()}"
        yield url
    finally:
        if server is not None:
            stop(server)
        stop(exporter)


@pytest.mark.parametrize(("dashboard", "panel", "expr"), QUERIES, ids=QUERY_IDS)
def test_query_returns_data_from_real_prometheus(prometheus_with_kubetide, dashboard, panel, expr):
    res = query(f"{prometheus_with_kubetide}/api/v1/query", query=expr)
    assert res["status"] == "success", f"{dashboard}/{panel}: {res}"
    result = res["data"]["result"]
    assert result, f"{dashboard}/{panel}: no data for {expr!r}"
