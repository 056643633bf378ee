"""One realistic message per public topic, built through the models (used by several tests)."""

from __future__ import annotations

from kubetide import models as m

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z

POD = m.PodRef(namespace="shop", name="web-7d9f-abcde", uid="u-1", node="node-a-0", app="web")
WL = m.WorkloadRef(namespace="shop", kind="Deployment", name="web")


def samples() -> dict[str, m.Message]:
    res = m.Resources(cpu_cores=0.5, mem_bytes=512 * 2**20)
    return {
        "cluster.events": m.ClusterEvent(
            ts=T0, type="ADDED", kind="Pod", namespace="shop", name=POD.name, uid="u-1",
            resource_version="42",
            pod=m.PodSnapshot(node="node-a-0", phase="Running", ready=True, app="web", workload=WL,
                              labels={"app": "web"}, requests=res, priority=0,
                              topology_spread=[m.TopologySpread(max_skew=1,
                                                                topology_key="topology.kubernetes.io/zone",
                                                                match_labels={"app": "web"})])),
        "cluster.metrics": m.ClusterMetrics(
            ts=T0, node="node-a-0", zone="zone-a", window_s=10.0,
            node_usage=m.Resources(cpu_cores=7.1, mem_bytes=20e9),
            node_allocatable=m.Resources(cpu_cores=8.0, mem_bytes=32e9),
            pods=m.PodSamples(namespace=["shop", "shop"], name=["web-1", "web-2"], app=["web", "web"],
                              cpu_cores=[3.5, 3.4], mem_bytes=[1e9, 1.1e9], cpi=[1.1, 1.3])),
        "app.metrics": m.AppMetric(ts=T0, namespace="shop", app="web", metric="qps", value=1250.0),
        "profiles": m.Profile(
            ts=T0, namespace="shop", app="web", pods=6,
            windows=[m.ProfileWindow(window_s=3600, samples=360,
                                     cpu_cores=m.Percentiles(p50=0.3, p90=0.6, p95=0.7, p99=0.9, max=1.2),
                                     mem_bytes=m.Percentiles(p50=4e8, p90=5e8, p95=5e8, p99=6e8, max=7e8))],
            requests=res, recommended=m.Resources(cpu_cores=0.8, mem_bytes=6e8), type="cpu-bound",
            period_s=86400.0, period_strength=0.8, peak_hours=[11, 20]),
        "anomalies": m.Anomaly(
            id="an-1", ts=T0, node="node-a-0", state="open", victim=POD, metric="cpi", severity=2.5,
            antagonists=[m.Suspect(namespace="batch", name="hog-1", app="hog", score=0.93)],
            window_start=T0 - 300, window_end=T0),
        "decisions.deschedule": m.DescheduleDecision(
            id=m.decision_id("LowNodeLoad", T0, POD.name), made_at=T0, expires_at=T0 + 300,
            strategy="LowNodeLoad", reason="node-a-0 above 80% CPU for 3 samples",
            evidence={"node_cpu_pct": 91.0, "pod_cpu_cores": 3.5}, pod=POD, workload=WL,
            from_node="node-a-0", to_nodes=["node-b-0"]),
        "decisions.autoscale": m.AutoscaleDecision(
            id=m.decision_id("predictive", T0, "web"), made_at=T0, expires_at=T0 + 120,
            strategy="predictive", reason="forecast peak 14.2 cores in next 30 min", workload=WL,
            current_replicas=6, desired_replicas=9, trigger="predictive", zones={"zone-a": 0.4}),
        "decisions.nodescale": m.NodescaleDecision(
            id=m.decision_id("elastic", T0, "elastic"), made_at=T0, expires_at=T0 + 600,
            strategy="elastic", reason="placeholder headroom for forecast", action="size-placeholder",
            node_group="elastic", replicas=4),
        "actions": m.Action(
            ts=T0 + 5, decision_id="abc12345", decision_topic="decisions.deschedule",
            strategy="LowNodeLoad", action="evict", target=POD, outcome="skipped", reason="pdb",
            http_status=429, retry_after_s=10.0),
        "deadletter": m.DeadLetter(
            ts=T0, origin_topic="cluster.metrics", origin_partition=0, origin_offset=7, reason="decode",
            error="not JSON", raw_b64="e30=", raw_size=2, raw_sha256="0" * 64),
    }
