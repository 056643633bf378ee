"""`kubetide evaluate`: the report, the offline mirror of the pipeline, determinism, online = offline, CLI errors."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from kubesim.model import Cluster
from kubesim.scenario import load_scenario
from kubetide import evaluate as ev
from kubetide import models as m
from kubetide.cli import main
from kubetide.offline import OfflineActuator
from workers.actuator import ActuatorSettings

# A busier LowNodeLoad than the defaults: several decisions within a few virtual minutes of `demo`.
BUSY = """\
streams:
  strategies:
    LowNodeLoad: {mode: absolute, high_cpu_pct: 55, low_cpu_pct: 30, consecutive: 2, node_cooldown_s: 60,
                  pod_cooldown_s: 600}
"""


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, Path]:
    d = tmp_path_factory.mktemp("evaluate")
    rc = main(["evaluate", "--scenario", "demo", "--hours", "2", "--offline", "--no-progress",
               "--report", str(d / "report.json"), "--plot", str(d / "report.png")])
    return rc, json.loads((d / "report.json").read_text()), d


def test_offline_demo_report_has_every_key_and_beats_the_baseline(demo_report: tuple[int, dict, Path]) -> None:
    rc, report, d = demo_report
    assert rc == 0
    assert report["scenario"] == "demo" and report["seed"] == 42 and report["sim_hours"] == 2.0
    for run in ("kubetide", "baseline"):
        assert set(ev.KEYS) <= set(report[run]), run
    k, b = report["kubetide"], report["baseline"]
    assert k["node_cpu_spread_p95_p5"] < b["node_cpu_spread_p95_p5"]
    assert k["pdb_violations"] == 0
    assert k["evictions"] >= 1 and b["evictions"] == 0
    assert k["node_hours"] == pytest.approx(12.0) and b["node_hours"] == pytest.approx(12.0)
    assert k["decision_latency_p99_s"] == 10.0 and b["decision_latency_p99_s"] is None
    # the baseline has no interference detector: null, never a number; demo has no antagonist, so
    # there is no episode to recall (null) and any finding is a false alarm
    for key in ("interference_precision", "interference_recall", "antagonist_top1"):
        assert b[key] is None
    assert k["interference_recall"] is None and k["antagonist_top1"] is None
    for key in ("periodic_daily_found", "nonperiodic_no_period"):  # 2 h: too short for a daily period
        assert k[key] is None and b[key] is None
    assert len(report["decisions"]) == k["evictions"]
    assert (d / "report.png").stat().st_size > 10_000


def _offline(hours: float, config: dict | None = None) -> dict:
    sc = load_scenario("demo")
    return ev.run_offline(sc, None, round(hours * 3600 / sc.resolution_s), None, config=config)


def test_offline_is_deterministic(tmp_path: Path) -> None:
    import yaml

    cfg = yaml.safe_load(BUSY)
    a, b = _offline(0.5, cfg), _offline(0.5, cfg)
    assert len(a["decisions"]) >= 3
    assert a["decisions"] == b["decisions"]
    assert a["scores"] == b["scores"]
    assert a["series"].node_pct == b["series"].node_pct
    # and through the CLI: the same report but for wall times
    reports = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        assert main(["evaluate", "--scenario", "demo", "--hours", "0.25", "--offline", "--no-progress",
                     "--report", str(out)]) == 0
        r = json.loads(out.read_text())
        r.pop("wall_s")
        reports.append(r)
    assert reports[0] == reports[1]


def test_fast_mode_makes_the_same_decisions() -> None:
    import yaml

    cfg = yaml.safe_load(BUSY)
    sc = load_scenario("demo")
    full = ev.run_offline(sc, None, 90, None, config=cfg)
    fast = ev.run_offline(sc, None, 90, None, config=cfg, fast=True)
    assert len(full["decisions"]) >= 3
    assert full["decisions"] == fast["decisions"] and full["scores"] == fast["scores"]


def test_interference_is_scored_against_ground_truth() -> None:
    sc = load_scenario("interference")
    res = ev.run_offline(sc, None, 360, None, fast=True)
    s = res["scores"]
    for key in ("interference_precision", "interference_recall"):
        assert s[key] is not None and 0.0 <= s[key] <= 1.0, key
    assert s["interference_recall"] > 0
    base = ev.run_baseline(sc, None, 30, None)["scores"]
    assert base["interference_precision"] is None and base["interference_recall"] is None


def _decision(p, cluster: Cluster, **over) -> m.DescheduleDecision:
    fields = dict(id="d" * 12, made_at=cluster.t, expires_at=cluster.t + 300, strategy="LowNodeLoad", reason="test",
                  pod=m.PodRef(namespace=p.namespace, name=p.name, uid=p.uid, node=p.node_name),
                  workload=m.WorkloadRef(namespace=p.namespace, kind="Deployment", name=p.app),
                  from_node=p.node_name)
    fields.update(over)
    return m.DescheduleDecision(**fields)


def test_offline_actuator_applies_the_actuators_safety_rules() -> None:
    cluster = Cluster(load_scenario("demo"))
    act = OfflineActuator(cluster, ActuatorSettings(evictions_per_minute=1, rate_burst=1))
    pods = {p.app: p for p in cluster.pods.values() if not p.daemon}
    ms = pods["metrics-server"]
    assert act.handle(_decision(ms, cluster, id="protected1")).reason == "protected-namespace"
    web = pods["web"]
    assert act.handle(_decision(web, cluster, id="expired01", expires_at=cluster.t - 1)).outcome == "expired"
    assert act.handle(_decision(web, cluster, id="changed01", from_node="elsewhere")).reason == "changed"
    assert act.handle(_decision(web, cluster, id="uidwrong1", pod=m.PodRef(namespace=web.namespace, name=web.name,
                                                                           uid="other"))).reason == "changed"
    cluster.update_pod_meta(web.namespace, web.name, annotations={"kubetide.io/evict": "never"})
    assert act.handle(_decision(web, cluster, id="optout001")).reason == "opt-out"
    cluster.update_pod_meta(web.namespace, web.name, annotations={})
    ok = act.handle(_decision(web, cluster, id="applied01"))
    assert (ok.outcome, ok.reason) == ("applied", "evicted")
    assert act.handle(_decision(web, cluster, id="applied01")).outcome == "duplicate"
    # the token bucket (1 a minute, burst 1) runs on the cluster's clock
    api = pods["api"]
    assert act.handle(_decision(api, cluster, id="ratelim01")).reason == "rate-limited"
    cluster.advance(60)
    assert [d.id for _, d in act.due_retries()] == ["ratelim01"]
    # a PDB refusal (cache: minAvailable 3 of 3) is a 429 → skipped: pdb, retried after Retry-After
    cache = pods["cache"]
    res = act.handle(_decision(cache, cluster, id="pdbcache1", expires_at=cluster.t + 300))
    assert (res.outcome, res.reason, res.http_status) == ("skipped", "pdb", 429)
    assert act.pdb_violations == 0
    assert [e.pod for e in act.evictions] == [f"{web.namespace}/{web.name}"]
    assert act.evictions[0].replacement_pod is None  # filled in by OfflineKubetide, not by the actuator


def test_online_and_offline_make_the_same_decisions(tmp_path: Path) -> None:
    """The real pipeline (broker, collector, faust worker, actuator, kubesim HTTP) in lockstep vs in-process."""
    cfg_path = tmp_path / "busy.yaml"
    cfg_path.write_text(BUSY)
    sc = load_scenario("demo")
    ticks = 36  # 6 virtual minutes: 3 decisions with BUSY
    t0 = time.monotonic()
    online = ev.run_online(sc, None, ticks, None, run_dir=tmp_path / "run", settle_s=0.3,
                           config_path=str(cfg_path))
    wall = time.monotonic() - t0
    offline = ev.run_offline(sc, None, ticks, None, config=ev.load_config(str(cfg_path)))
    assert len(offline["decisions"]) >= 3
    assert online["decisions"] == offline["decisions"]  # (strategy, tick, pod, from_node, id), in order
    assert online["lockstep"].get("lockstep_timeouts", 0) == 0
    # same decisions at the same ticks → the same cluster, tick by tick
    assert online["series"].node_pct == offline["series"].node_pct
    on, off = dict(online["scores"]), dict(offline["scores"])
    # Latency is real seconds online, the tick quantum offline. Interference is scored offline only:
    # the collector does not read CPI / latency yet and the stream worker runs no detector.
    for key in ("interference_precision", "interference_recall", "antagonist_top1"):
        assert on[key] is None, key
    for key in ("decision_latency_p99_s", "interference_precision", "interference_recall", "antagonist_top1"):
        on.pop(key)
        off.pop(key)
    assert on == off
    assert wall < 120, f"online run took {wall:.0f}s"


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_cli_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rep = str(tmp_path / "r.json")
    rc, out = _err(capsys, ["evaluate", "--scenario", "no-such-scenario", "--offline", "--report", rep])
    assert rc == 2 and "unknown scenario 'no-such-scenario'" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstart: 2024-01-01T00:00:00Z\nzones: [a]\nnode_groups: []\n")
    rc, out = _err(capsys, ["evaluate", "--scenario", str(bad), "--offline", "--report", rep])
    assert rc == 2 and "node_groups" in out
    rc, out = _err(capsys, ["evaluate", "--scenario", "demo", "--hours", "-1", "--offline", "--report", rep])
    assert rc == 2 and "--hours" in out
    rc, out = _err(capsys, ["evaluate", "--scenario", "demo", "--nodes", "10", "--offline", "--report", rep])
    assert rc == 2 and "nodes_per_zone" in out
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("streams:\n  strategies:\n    LowNodeLoad: {high_cpu_pct: 500}\n")
    rc, out = _err(capsys, ["evaluate", "--scenario", "demo", "--config", str(cfg), "--offline", "--report", rep])
    assert rc == 2 and "high_cpu_pct" in out
    assert not Path(rep).exists()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--offline"])  # --scenario and --report are required (argparse: exit 2)
    assert exc.value.code == 2


def test_nodes_scales_node_groups_given_per_zone(tmp_path: Path) -> None:
    sc_file = tmp_path / "pz.yaml"
    sc_file.write_text("""\
name: pz
start: "2024-06-03T10:00:00Z"
resolution_s: 10
zones: [a, b]
node_groups:
  - {name: g, cpu: 4, memory: 8Gi, nodes_per_zone: 1}
apps:
  - {name: w, namespace: default, replicas: 2, requests: {cpu: 500m, memory: 256Mi}, demand: {cpu: 1, memory: 100Mi}}
""")
    sc = ev.load(str(sc_file), seed=None, nodes=10)
    assert len(sc.nodes) == 10
    args = argparse.Namespace(scenario=str(sc_file), seed=3, nodes=6, hours=0.05, offline=True, config=None,
                              no_progress=True, run_dir=str(tmp_path / "run"), settle=0.3)
    report = ev.evaluate(args)
    assert report["nodes"] == 6 and report["seed"] == 3
    assert report["kubetide"]["node_hours"] == pytest.approx(6 * 0.05)


TIDES = """\
name: tides
seed: 7
start: "2024-06-03T00:00:00Z"
duration_h: 74
resolution_s: 120
zones: [zone-a, zone-b, zone-c]
namespaces: [shop]
node_groups:
  - name: general
    cpu: 16
    memory: 64Gi
    nodes: [{name: node-a, zone: zone-a}, {name: node-b, zone: zone-b}, {name: node-c, zone: zone-c}]
apps:
  - name: tide                # daily tide; autoscaled, so its per-pod CPU stays near the target
    namespace: shop
    count: 2
    replicas: 4
    requests: {cpu: 500m, memory: 512Mi}
    demand: {cpu: 2, tide: {ratio: 5, peak_hour: 14}, noise: 0.05, memory: 300Mi}
    hpa: {min_replicas: 2, max_replicas: 12, target_cpu_utilization: 70}
  - name: walk                # no period
    namespace: shop
    replicas: 4
    requests: {cpu: 500m, memory: 512Mi}
    demand: {cpu: 2, pattern: random_walk, volatility: 0.3, noise: 0.05, memory: 300Mi}
  - name: flat                # no period
    namespace: shop
    replicas: 3
    requests: {cpu: 500m, memory: 512Mi}
    demand: {cpu: 1, noise: 0.05, memory: 300Mi}
  - name: spiky               # an hourly period only: not counted either way
    namespace: shop
    replicas: 3
    requests: {cpu: 500m, memory: 512Mi}
    demand: {cpu: 1, spikes: {every_h: 1, at_min: 0, duration_min: 5, factor: 2}, memory: 300Mi}
"""


def test_periodicity_keys_score_profiles_against_the_scenario(tmp_path: Path) -> None:
    """Three days of history: the autoscaled tides' daily period is found, the
    random walk and the flat app claim none; shorter runs and the baseline report null."""
    path = tmp_path / "tides.yaml"
    path.write_text(TIDES)
    sc = load_scenario(str(path))
    assert [a.has_daily_period for a in sc.apps] == [True, True, False, False, None]
    res = ev.run_offline(sc, None, round(74 * 3600 / sc.resolution_s), None)["scores"]
    assert res["periodic_daily_found"] == 1.0 and res["nonperiodic_no_period"] == 1.0
    short = ev.run_offline(sc, None, 30, None)["scores"]
    assert short["periodic_daily_found"] is None and short["nonperiodic_no_period"] is None


def test_scheduler_config_tells_kubetide_about_a_load_aware_scheduler() -> None:
    hot, plain = load_scenario("hotspots"), load_scenario("interference")
    assert hot.load_aware_weight > 0 and plain.load_aware_weight == 0
    cfg = ev.scheduler_config(hot, None)
    assert cfg == {"streams": {"guard": {"scheduler_load_weight": hot.load_aware_weight}}}
    assert ev.settings_from_config(cfg)[0].guard.scheduler_load_weight == hot.load_aware_weight
    mine = {"streams": {"guard": {"scheduler_load_weight": 1.0, "max_total": 5}}}
    assert ev.scheduler_config(hot, mine) is mine  # the config's own value wins
    other = {"streams": {"guard": {"max_total": 5}}}
    assert ev.scheduler_config(hot, other)["streams"]["guard"] == {"max_total": 5, "scheduler_load_weight": 5.0}
    assert ev.scheduler_config(plain, other) is other  # a requests-only scheduler: nothing to say
