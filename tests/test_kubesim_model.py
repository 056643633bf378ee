"""kubesim scenario validation, the model (no HTTP), determinism, paced clock and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from kubesim.kubeconfig import write_kubeconfig
from kubesim.model import Cluster
from kubesim.scenario import SCENARIO_DIR, ScenarioError, load_scenario
from kubesim.server import KubeSim
from kubetide.quantity import format_cpu, format_memory, parse_quantity

ROOT = Path(__file__).resolve().parents[1]


def _demo_doc() -> dict:
    return yaml.safe_load((SCENARIO_DIR / "demo.yaml").read_text())


def test_quantities():
    assert parse_quantity("250m") == 0.25
    assert parse_quantity("2") == 2.0
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("1200000000n") == pytest.approx(1.2)
    assert parse_quantity("1k") == 1000
    assert format_cpu(1.25) == "1250m" and format_cpu(2) == "2"
    assert format_memory(32 * 2**30) == "32Gi"
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_load_by_name_and_path(tmp_path):
    by_name = load_scenario("demo")
    by_path = load_scenario(SCENARIO_DIR / "demo.yaml")
    assert by_name == by_path
    assert by_name.name == "demo" and len(by_name.nodes) == 6 and len(by_name.zones) == 3
    assert by_name.start.isoformat() == "2024-06-03T10:00:00+00:00"
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        load_scenario("nope")
    over = load_scenario("demo", overrides={"apps": [{"name": "web", "replicas": 7}]}, seed=9)
    assert over.seed == 9 and next(a for a in over.apps if a.name == "web").replicas == 7


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["apps"][1]["requests"].update(cpu="lots"), "apps[1].requests.cpu"),
        (lambda d: d["apps"][2].pop("replicas"), "apps[2].replicas"),
        (lambda d: d["apps"][1].update(namespace="nowhere"), "apps[1].namespace"),
        (lambda d: d["apps"][1]["pods"][0].update(node="node-z-9"), "apps[1].pods[0].node"),
        (lambda d: d["apps"][1]["pods"][0].update(index=9), "apps[1].pods[0].index"),
        (lambda d: d["apps"][2]["demand"]["tide"].update(ratio=0.5), "apps[2].demand.tide.ratio"),
        (lambda d: d["apps"][4].update(pdb={"minAvailable": "150%"}), "apps[4].pdb.minAvailable"),
        (lambda d: d["apps"][4].update(pdb={"minAvailable": 1, "maxUnavailable": 1}), "apps[4].pdb.minAvailable"),
        (lambda d: d["node_groups"][0]["nodes"][0].update(zone="mars"), "node_groups[0].nodes[0].zone"),
        (lambda d: d["node_groups"][0].update(cpu=-1), "node_groups[0].cpu"),
        (lambda d: d["node_groups"][0].update(taints=[{"key": "k", "effect": "Sometimes"}]),
         "node_groups[0].taints[0].effect"),
        (lambda d: d.update(start="yesterday"), "start"),
        (lambda d: d.update(resolution_s=0), "resolution_s"),
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d["apps"][0].update(sidecar=True), "apps[0].sidecar"),
        (lambda d: d.update(zones=[]), "zones"),
    ],
)
def test_validation_errors_name_the_field(mutate, field):
    doc = _demo_doc()
    mutate(doc)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(doc)
    assert str(ei.value).startswith(f"{field}:"), str(ei.value)


def test_invalid_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        load_scenario(p)


def _fingerprint(c: Cluster) -> list:
    return sorted((p.namespace, p.name, p.uid, p.node_name, round(p.usage_cpu, 9)) for p in c.pods.values())


def test_determinism_same_seed_same_run():
    runs = []
    for _ in range(2):
        c = Cluster(load_scenario("demo"))
        victim = next(p for p in c.pods.values() if p.app == "worker" and p.node_name == "node-a-1")
        assert c.evict(victim.namespace, victim.name).code == 201
        c.advance(3600)
        runs.append((_fingerprint(c), c.rv, c.node_cpu_percent()))
    assert runs[0] == runs[1]
    other = Cluster(load_scenario("demo"), seed=7)
    other.advance(3600)
    assert _fingerprint(other) != runs[0][0]


def test_demo_hot_node_and_tides():
    c = Cluster(load_scenario("demo"))
    pct = c.node_cpu_percent()
    assert pct["node-a-1"] >= 85
    assert all(v < 50 for n, v in pct.items() if n != "node-a-1")
    req = {n: c.requested(node)[0] for n, node in c.nodes.items()}
    assert max(req, key=req.get) == "node-a-1"
    web = next(a for a in c.scenario.apps if a.name == "web")
    def at(h: int, m: int) -> float:
        return c.demand(web, c.scenario.start.replace(hour=h, minute=m).timestamp(), noise=False)

    assert at(14, 0) / at(2, 0) == pytest.approx(3.0)  # tide peak/trough ratio
    assert at(14, 2) / at(14, 10) == pytest.approx(1.4, rel=0.01)  # hourly spike (5 min at :00)
    for _ in range(24):
        c.advance(3600)
        assert c.node_cpu_percent()["node-a-1"] >= 80


def test_model_pdb_status_and_victim_order():
    c = Cluster(load_scenario("demo"))
    pdb = c.pdbs[("batch", "reports")]  # minAvailable 50 % of 2
    assert (pdb.expected_pods, pdb.desired_healthy, pdb.current_healthy, pdb.disruptions_allowed) == (2, 1, 2, 1)
    c.set_replicas("batch", "reports", 4)
    assert (pdb.expected_pods, pdb.desired_healthy, pdb.current_healthy, pdb.disruptions_allowed) == (4, 2, 2, 0)
    c.advance(30)
    assert pdb.current_healthy == 4 and pdb.disruptions_allowed == 2
    # unscheduled pods are removed before scheduled ones on scale-down
    for n in c.nodes:
        c.update_node(n, unschedulable=True)
    c.set_replicas("batch", "reports", 5)
    pending = [p for p in c.pods.values() if p.app == "reports" and p.node_name is None]
    assert len(pending) == 1
    c.set_replicas("batch", "reports", 4)
    assert pending[0].key not in c.pods


def test_kubeconfig_file(tmp_path):
    path = write_kubeconfig(tmp_path / "kc" / "config", "http://127.0.0.1:1234", "tok", namespace="shop")
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1234"
    assert doc["users"][0]["user"]["token"] == "tok"
    assert doc["contexts"][0]["context"]["namespace"] == "shop"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_paced_clock_runs_by_itself():
    async with KubeSim("demo", speed=3600) as sim:
        start = sim.cluster.t
        await asyncio.sleep(0.3)
        assert sim.cluster.t - start >= 600
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{sim.url}/kubesim/v1/clock", json={"pause": True}) as r:
                assert (await r.json())["paused"] is True
            frozen = sim.cluster.t
            await asyncio.sleep(0.2)
            assert sim.cluster.t == frozen


def test_cli_serves_and_stops_cleanly(tmp_path):
    ready = tmp_path / "ready.json"
    kc = tmp_path / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubesim", "--scenario", "demo", "--port", "0", "--speed", "0",
         "--kubeconfig-out", str(kc), "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "kubesim did not become ready"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["kubeconfig"] == str(kc) and kc.exists()
        assert info["url"] == f"http://127.0.0.1:{info['port']}"

        async def probe():
            async with aiohttp.ClientSession() as s, s.get(f"{info['url']}/version",
                                                           headers={"Authorization": "Bearer x"}) as r:
                return r.status, r.headers["Date"]

        status, date = asyncio.run(probe())
        assert status == 200 and date == "Mon, 03 Jun 2024 10:00:00 GMT"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.startswith(f"kubesim listening on {info['url']} (scenario demo, 6 nodes, 25 pods, speed 0)")


def test_cli_bad_scenario_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstart: '2024-01-01T00:00:00Z'\nzones: [a]\nnode_groups: []\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kubesim", "--scenario", str(bad)],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 2 and "node_groups" in proc.stderr


def test_bare_scenario_name_is_not_shadowed_by_a_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. a run directory named after the scenario
    assert load_scenario("demo").name == "demo"
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario("./demo")


def test_load_aware_scheduler_places_by_measured_usage() -> None:
    """With ``scheduler.load_aware_weight`` the replacement of an evicted pod goes to the node with the
    lowest measured CPU usage; the default scheduler sends it to the least-requested node."""
    from kubesim.model import Cluster
    from kubesim.scenario import load_scenario

    doc = {
        "name": "la", "start": "2024-06-03T00:00:00Z", "zones": ["z"], "resolution_s": 10,
        "node_groups": [{"name": "g", "cpu": 8, "memory": "32Gi", "nodes_per_zone": 2}],
        "namespaces": ["shop"],
        "apps": [
            # requests 4 cores, uses little: its node looks full by requests
            {"name": "padded", "namespace": "shop", "replicas": 1, "requests": {"cpu": "4", "memory": "1Gi"},
             "startup_s": 0, "demand": {"cpu": 0.2, "noise": 0}},
            # requests 100m, burns 6 cores: its node is hot but looks empty by requests
            {"name": "heavy", "namespace": "shop", "replicas": 1, "requests": {"cpu": "100m", "memory": "256Mi"},
             "startup_s": 0, "demand": {"cpu": 6, "noise": 0}},
            {"name": "mover", "namespace": "shop", "replicas": 1, "requests": {"cpu": "100m", "memory": "256Mi"},
             "startup_s": 0, "demand": {"cpu": 0.1, "noise": 0}},
        ],
    }

    def replacement(weight: float) -> tuple[str, dict[str, float], dict[str, float]]:
        c = Cluster(load_scenario({**doc, "scheduler": {"load_aware_weight": weight}}))
        c.advance(60)
        mover = next(p for p in c.pods.values() if p.app == "mover")
        assert c.evict(mover.namespace, mover.name).code == 201
        usage = c.node_cpu_percent()
        requested = {n: r[0] for n, r in c.requested_all().items()}
        c.advance(10)
        new = next(p for p in c.pods.values() if p.app == "mover" and p.name != mover.name)
        assert new.node_name
        return new.node_name, usage, requested

    node, usage, requested = replacement(5.0)
    coolest, least_requested = min(usage, key=usage.__getitem__), min(requested, key=requested.__getitem__)
    assert coolest != least_requested  # the layout makes the two rules disagree
    assert node == coolest
    node0, _, _ = replacement(0.0)
    assert node0 == least_requested


def test_pods_and_templates_carry_spread_constraints_and_priority() -> None:
    """What the collector reads: the app's topologySpreadConstraints (selecting the app's own pods, as
    kubesim's scheduler counts them) on each pod and on the Deployment's template, and a placeholder's
    negative priority — so kubetide's ZoneSpread, zone guard and evictor see what a real API serves."""
    from kubesim import render
    from workers import snapshots

    c = Cluster(load_scenario("elastic", seed=1))
    app = next(a for a in c.scenario.apps if a.topology_spread)
    pod = next(p for p in c.pods.values() if p.app == app.name)
    want = [{"maxSkew": s.max_skew, "topologyKey": s.topology_key, "whenUnsatisfiable": s.when_unsatisfiable,
             "labelSelector": {"matchLabels": {"app": app.name}}} for s in app.topology_spread]
    obj = render.pod(pod, c)
    assert obj["spec"]["topologySpreadConstraints"] == want
    assert obj["metadata"]["labels"]["app"] == app.name
    dep = c.deployments[(app.namespace, app.name)]
    assert render.deployment(dep, c)["spec"]["template"]["spec"]["topologySpreadConstraints"] == want
    snap = snapshots.pod_snapshot(obj)
    assert [(t.max_skew, t.when_unsatisfiable, t.match_labels) for t in snap.topology_spread] == [
        (s.max_skew, s.when_unsatisfiable, {"app": app.name}) for s in app.topology_spread]
    placeholder = next(p for p in c.pods.values() if p.priority < 0)
    assert render.pod(placeholder, c)["spec"]["priority"] == placeholder.priority
    assert "topologySpreadConstraints" not in render.pod(next(p for p in c.pods.values() if p.daemon), c)["spec"]


def test_pdb_guard_sees_deletions_that_break_a_budget_and_not_evictions():
    from kubesim.guards import PdbGuard

    c = Cluster(load_scenario("demo"))
    c.advance(120)  # every pod ready
    reports = sorted((p for p in c.pods.values() if p.app == "reports" and p.ready), key=lambda p: p.name)
    assert len(reports) == 2  # PDB minAvailable 50 %: one may go
    with PdbGuard(c) as guard:
        assert c.evict("batch", reports[0].name).code == 201
        assert c.evict("batch", reports[1].name).code == 429  # the Eviction API refuses the second
        assert guard.violations == []
        c.delete_pod("batch", reports[1].name)  # a direct delete bypasses the PDB: the guard sees it
        assert len(guard.violations) == 1 and guard.violations[0].startswith("batch/reports: 0 healthy < 1")
    assert guard not in c.listeners
    c.advance(120)
    c.delete_pod("batch", next(p.name for p in c.pods.values() if p.app == "reports"))
    assert len(guard.violations) == 1  # detached
