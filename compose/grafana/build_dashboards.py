"""Build kubetide's Grafana dashboards as code (grafana-foundation-sdk) into ``dashboards/``.

    python compose/grafana/build_dashboards.py          # rewrite the JSON files
    python compose/grafana/build_dashboards.py --check  # exit 1 if a checked-in file differs

Every panel queries only metrics of the catalogue in ``kubetide/metrics.py``; the tests
parse every query, check its metric names against the catalogue, and run it against a
real Prometheus. Queries use ``$__rate_interval`` (Grafana's own variable) and nothing
else that Prometheus would not understand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
# The uid of the datasource provisioned by provisioning/datasources/prometheus.yml.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
RATE = "$__rate_interval"
# An unlabelled gauge is exposed (as 0) by every process that imports the catalogue; only the
# collector sets it, so take the largest.
PENDING = "max(kubetide_pending_pods)"
# Predicted replicas come from a stream worker, actual ones from the collector: their job / instance
# (and compose's component) labels differ, so a plain `predicted - actual` matches nothing. Match on the
# workload alone, one series per workload even when more than one process exports it.
PREDICTED = "max by (namespace, workload) (kubetide_workload_replicas_predicted)"
ACTUAL = "max by (namespace, workload) (kubetide_workload_replicas_actual)"


def q(expr: str, legend: str = "__auto", *, instant: bool = False, table_format: bool = False,
      ref: str = "A") -> prometheus.Dataquery:
    b = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    if instant:
        b = b.instant()
    if table_format:
        b = b.format(PromQueryFormat.TABLE)
    return b


def _targets(panel, queries: list[prometheus.Dataquery]):
    for i, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + i)))
    return panel.datasource(DATASOURCE)


def ts(title: str, description: str, queries: list[prometheus.Dataquery], *, unit: str = "short",
       w: int = 12, h: int = 8, min_: float | None = None) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).description(description).unit(unit).span(w).height(h)
         .legend(_legend()).fill_opacity(10).line_width(1))
    if min_ is not None:
        p = p.min(min_)
    return _targets(p, queries)


def _legend() -> VizLegendOptions:
    return (VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))


def single(title: str, description: str, query: prometheus.Dataquery, *, unit: str = "short",
           w: int = 6, h: int = 4) -> stat.Panel:
    return _targets(stat.Panel().title(title).description(description).unit(unit).span(w).height(h), [query])


def bars(title: str, description: str, query: prometheus.Dataquery, *, unit: str = "short",
         w: int = 12, h: int = 8, max_: float | None = None) -> bargauge.Panel:
    p = bargauge.Panel().title(title).description(description).unit(unit).span(w).height(h).min(0)
    if max_ is not None:
        p = p.max(max_)
    return _targets(p, [query])


def tab(title: str, description: str, query: prometheus.Dataquery, *, w: int = 12, h: int = 8) -> table.Panel:
    return _targets(table.Panel().title(title).description(description).span(w).height(h), [query])


def _dashboard(uid: str, title: str, description: str) -> Dashboard:
    return (Dashboard(title).uid(uid).description(description).tags(["kubetide"]).refresh("30s")
            .time("now-6h", "now").timezone("browser").editable())


# ---------------------------------------------------------------- the dashboards

def fleet_balance() -> Dashboard:
    usage_by = "avg by ({l}) (kubetide_node_cpu_usage_ratio * on (node) group_left ({l}) kubetide_node_info)"
    return (
        _dashboard("kubetide-fleet-balance", "kubetide / Fleet balance",
                   "Node CPU usage and its spread: what the descheduler is evening out.")
        .with_panel(single("Spread p95−p5 now", "95th minus 5th percentile of node CPU usage ratios",
                           q('kubetide_cluster_cpu_usage_spread_ratio{measure="p95_p5"}', "p95−p5"),
                           unit="percentunit"))
        .with_panel(single("Spread max−min now", "hottest minus coolest node",
                           q('kubetide_cluster_cpu_usage_spread_ratio{measure="max_min"}', "max−min"),
                           unit="percentunit"))
        .with_panel(single("Hottest node", "highest node CPU usage ratio",
                           q("max(kubetide_node_cpu_usage_ratio)", "max"), unit="percentunit"))
        .with_panel(single("Nodes", "nodes with a usage sample", q("count(kubetide_node_cpu_usage_ratio)", "nodes")))
        .with_panel(_targets(
            heatmap.Panel().title("Node CPU usage distribution")
            .description("how many nodes sit at each CPU usage ratio over time: one band is a balanced fleet")
            .calculate(True).unit("percentunit").span(24).height(9),
            [q("kubetide_node_cpu_usage_ratio", "{{node}}")]))
        .with_panel(ts("CPU usage spread", "p95−p5 and max−min of node CPU usage ratios",
                       [q("kubetide_cluster_cpu_usage_spread_ratio", "{{measure}}")], unit="percentunit", min_=0))
        .with_panel(ts("CPU usage per node", "node CPU usage / allocatable",
                       [q("kubetide_node_cpu_usage_ratio", "{{node}}")], unit="percentunit", min_=0))
        .with_panel(bars("Hottest nodes now", "top 10 nodes by CPU usage ratio",
                         q("topk(10, kubetide_node_cpu_usage_ratio)", "{{node}}", instant=True),
                         unit="percentunit", max_=1))
        .with_panel(ts("Mean CPU usage by zone", "zone balance: mean node CPU usage ratio per zone",
                       [q(usage_by.format(l="zone"), "{{zone}}")], unit="percentunit", min_=0))
        .with_panel(ts("Descheduling", "deschedule decisions and evictions refused by a PodDisruptionBudget",
                       [q(f'sum(rate(kubetide_decisions_total{{type="deschedule"}}[{RATE}]))', "decisions/s"),
                        q(f"sum(rate(kubetide_evictions_refused_by_pdb_total[{RATE}]))", "refused by PDB/s")],
                       unit="ops", w=24, min_=0))
    )


def autoscaling() -> Dashboard:
    wl = "{{namespace}}/{{workload}}"
    return (
        _dashboard("kubetide-autoscaling", "kubetide / Autoscaling",
                   "Demand, forecast and replicas of every workload kubetide scales ahead of its tide.")
        .with_panel(single("Worst forecast error", "highest mean absolute percentage error of any workload",
                           q("max(kubetide_forecast_error_ratio)", "max"), unit="percentunit"))
        .with_panel(single("Replicas short", "replicas the forecast calls for beyond those running (all workloads)",
                           q(f"sum(clamp_min({PREDICTED} - {ACTUAL}, 0))", "short")))
        .with_panel(single("Replicas in excess", "replicas running beyond the forecast (all workloads)",
                           q(f"sum(clamp_min({ACTUAL} - {PREDICTED}, 0))", "excess")))
        .with_panel(single("Workloads", "workloads with a forecast",
                           q("count(kubetide_workload_forecast_cpu_cores)", "workloads")))
        .with_panel(ts("Demand and forecast", "observed CPU demand and the forecast at the scaling horizon",
                       [q("kubetide_workload_demand_cpu_cores", f"{wl} demand"),
                        q("kubetide_workload_forecast_cpu_cores", f"{wl} forecast")], unit="cores", w=24, min_=0))
        .with_panel(ts("Replicas: predicted vs actual", "replicas the forecast calls for, and those running",
                       [q("kubetide_workload_replicas_predicted", f"{wl} predicted"),
                        q("kubetide_workload_replicas_actual", f"{wl} actual")], min_=0))
        .with_panel(ts("Forecast error", "mean absolute percentage error of each workload's forecast",
                       [q("kubetide_forecast_error_ratio", wl)], unit="percentunit", min_=0))
        .with_panel(bars("Replica gap now", "predicted − actual replicas: positive means scale-up is due",
                         q(f"{PREDICTED} - {ACTUAL}", wl, instant=True)))
        .with_panel(ts("Autoscale decisions", "autoscale decisions per second, by strategy",
                       [q(f'sum by (strategy) (rate(kubetide_decisions_total{{type="autoscale"}}[{RATE}]))',
                          "{{strategy}}")], unit="ops", min_=0))
    )


def node_groups() -> Dashboard:
    return (
        _dashboard("kubetide-node-groups", "kubetide / Node groups",
                   "Nodes against demand per node group: consolidation at night, headroom before the peak.")
        .with_panel(single("Nodes", "ready nodes in all node groups", q("sum(kubetide_nodegroup_nodes)", "nodes")))
        .with_panel(single("Pending pods", "pods waiting for a node", q(PENDING, "pending")))
        .with_panel(single("Requested share of allocatable", "all groups: CPU requested / allocatable",
                           q("sum(kubetide_nodegroup_demand_cpu_cores) / sum(kubetide_nodegroup_allocatable_cpu_cores)",
                             "requested"), unit="percentunit"))
        .with_panel(single("Node-scale decisions (1h)", "node-scaling decisions in the last hour",
                           q('sum(increase(kubetide_decisions_total{type="nodescale"}[1h]))', "decisions")))
        .with_panel(ts("Nodes per node group", "ready nodes", [q("kubetide_nodegroup_nodes", "{{node_group}}")],
                       min_=0))
        .with_panel(ts("Demand vs allocatable CPU", "CPU requested by pods (with pending ones) and allocatable CPU",
                       [q("kubetide_nodegroup_demand_cpu_cores", "{{node_group}} demand"),
                        q("kubetide_nodegroup_allocatable_cpu_cores", "{{node_group}} allocatable")],
                       unit="cores", min_=0))
        .with_panel(ts("Requested share of allocatable", "CPU requested / allocatable per node group",
                       [q("kubetide_nodegroup_demand_cpu_cores / kubetide_nodegroup_allocatable_cpu_cores",
                          "{{node_group}}")], unit="percentunit", min_=0))
        .with_panel(ts("Pending pods", "pods in phase Pending", [q(PENDING, "pending")], min_=0))
        .with_panel(ts("Mean CPU usage per node group", "mean node CPU usage ratio",
                       [q("avg by (node_group) (kubetide_node_cpu_usage_ratio * on (node) group_left (node_group)"
                          " kubetide_node_info)", "{{node_group}}")], unit="percentunit", min_=0))
        .with_panel(ts("Node-scale decisions", "node-scaling decisions per second, by strategy",
                       [q(f'sum by (strategy) (rate(kubetide_decisions_total{{type="nodescale"}}[{RATE}]))',
                          "{{strategy}}")], unit="ops", min_=0))
    )


def interference() -> Dashboard:
    return (
        _dashboard("kubetide-interference", "kubetide / Interference",
                   "Noisy neighbours: open findings per node and the apps that cause them.")
        .with_panel(single("Open findings", "open interference findings", q("sum(kubetide_anomalies_open)", "open")))
        .with_panel(single("Nodes affected", "nodes with an open finding",
                           q("count(kubetide_anomalies_open > 0)", "nodes")))
        .with_panel(single("Findings opened (1h)", "interference findings opened in the last hour",
                           q("sum(increase(kubetide_anomalies_total[1h]))", "opened")))
        .with_panel(single("Top antagonist score", "highest antagonist score of any app",
                           q("max(kubetide_antagonist_score)", "max")))
        .with_panel(ts("Open findings per node", "open interference findings",
                       [q("kubetide_anomalies_open", "{{node}}")], min_=0))
        .with_panel(bars("Top antagonists", "apps by their highest score as antagonist of an open finding",
                         q("topk(10, max by (app) (kubetide_antagonist_score))", "{{app}}", instant=True)))
        .with_panel(tab("Antagonists by node", "app, node and score of every antagonist of an open finding",
                        q("topk(20, kubetide_antagonist_score)", "{{app}} on {{node}}", instant=True,
                          table_format=True)))
        .with_panel(ts("CPU usage of nodes with findings", "node CPU usage ratio where a finding is open",
                       [q("kubetide_node_cpu_usage_ratio and on (node) (kubetide_anomalies_open > 0)", "{{node}}")],
                       unit="percentunit", min_=0))
        .with_panel(ts("Findings opened", "findings opened per second, by the victim's metric",
                       [q(f"sum by (metric) (rate(kubetide_anomalies_total[{RATE}]))", "{{metric}}")],
                       unit="ops", w=24, min_=0))
    )


def pipeline_health() -> Dashboard:
    lat = "histogram_quantile({p}, sum by (le, topic) (rate(kubetide_processing_latency_seconds_bucket[{r}])))"
    return (
        _dashboard("kubetide-pipeline", "kubetide / Pipeline health",
                   "Is the stream keeping up? Lag, latency from event time, dead letters, outcomes, rebalances.")
        .with_panel(single("Workers up", "kubetide workers reporting up",
                           q("sum(kubetide_worker_up)", "up")))
        .with_panel(single("Total lag", "messages behind, all groups",
                           q("sum(kubetide_consumer_lag_messages)", "lag")))
        .with_panel(single("p99 latency", "event time → processed, all topics",
                           q(f"histogram_quantile(0.99, sum by (le) (rate(kubetide_processing_latency_seconds_bucket"
                             f"[{RATE}])))", "p99"), unit="s"))
        .with_panel(single("Dead letters (1h)", "messages dead-lettered in the last hour",
                           q("sum(increase(kubetide_deadletters_total[1h]))", "dead letters")))
        .with_panel(ts("Consumer lag", "messages between committed offset and end, by group and topic",
                       [q("sum by (group, topic) (kubetide_consumer_lag_messages)", "{{group}} {{topic}}")],
                       min_=0))
        .with_panel(ts("Processing latency p50 / p99", "from a message's event time to processed, by topic",
                       [q(lat.format(p="0.5", r=RATE), "p50 {{topic}}"),
                        q(lat.format(p="0.99", r=RATE), "p99 {{topic}}")], unit="s", min_=0))
        .with_panel(ts("Messages per topic", "consumed and produced per second",
                       [q(f"sum by (topic) (rate(kubetide_messages_consumed_total[{RATE}]))", "in {{topic}}"),
                        q(f"sum by (topic) (rate(kubetide_messages_produced_total[{RATE}]))", "out {{topic}}")],
                       unit="ops", min_=0))
        .with_panel(ts("Dead letters by reason", "messages dead-lettered per second, by origin topic and reason",
                       [q(f"sum by (origin, reason) (rate(kubetide_deadletters_total[{RATE}]))",
                          "{{origin}} {{reason}}")], unit="ops", min_=0))
        .with_panel(ts("Actions by outcome", "actuator outcomes per second",
                       [q(f"sum by (outcome) (rate(kubetide_actions_total[{RATE}]))", "{{outcome}}")],
                       unit="ops", min_=0))
        .with_panel(ts("Consumer-group rebalances", "partition assignments received, by group",
                       [q(f"sum by (group) (increase(kubetide_consumer_rebalances_total[{RATE}]))", "{{group}}")],
                       min_=0))
        .with_panel(bars("Actions by reason now", "actuator outcomes per second by reason (top 10)",
                         q(f"topk(10, sum by (outcome, reason) (rate(kubetide_actions_total[{RATE}])))",
                           "{{outcome}}: {{reason}}", instant=True), unit="ops"))
        .with_panel(tab("Workers", "every worker process and its version",
                        q("kubetide_worker_info", "{{worker}}", instant=True, table_format=True)))
    )


DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "fleet-balance.json": fleet_balance,
    "autoscaling.json": autoscaling,
    "node-groups.json": node_groups,
    "interference.json": interference,
    "pipeline-health.json": pipeline_health,
}


def render(builder: Callable[[], Dashboard]) -> str:
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(builder().build()) + "\n"


def build_all() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: render(builder) for name, builder in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if a file is missing or differs")
    p.add_argument("--out", type=Path, default=OUT_DIR)
    args = p.parse_args(argv)
    stale = []
    for name, text in build_all().items():
        path = args.out / name
        json.loads(text)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
