"""`kubetide hints` (workers/hints.py): placement hints applied to a cluster.

End to end with real parts: the embedded broker (profiles in, actions out) and kubesim over HTTP
through kubernetes_asyncio with a kubeconfig. Plus unit tests of the pure parts (profiles, partners,
plan, diff, mode) and RBAC with exactly the actuator's ClusterRole.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from kubesim.model import Cluster
from kubesim.scenario import parse_scenario
from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.codec import encode
from kubetide.topics import ACTIONS, PROFILES
from streams.core.strategies.placement import OPT_IN_LABEL, PROFILE_TYPE_LABEL, PlacementSettings
from tests.test_actuator_support import TopicReader
from tests.test_kubesim_placement import scenario_doc
from tests.test_rbac import (
    ACTUATOR_TOKEN,
    ACTUATOR_USER,
    COLLECTOR_TOKEN,
    COLLECTOR_USER,
    DEPLOY,
    Rbac,
    actuator_rules,
    cluster_role_rules,
    missing_rules,
)
from workers import hints as h
from workers.kube import new_api_client

pytestmark = pytest.mark.timeout(90)
pytest_plugins = ("tests.test_actuator_support",)  # kafka, producer

SHOP_TYPES = {"cpu-a": "cpu-bound", "cpu-b": "cpu-bound", "mem-a": "memory-bound"}


def profile(app: str, ptype: str, ns: str = "shop", ts: float = 1_767_571_200.0,
            interferes_with: list[str] | None = None) -> m.Profile:
    return m.Profile(ts=ts, namespace=ns, app=app, pods=3, windows=[], type=ptype,  # type: ignore[arg-type]
                     interferes_with=interferes_with or [])


# ------------------------------------------------------------------ pure parts

def _dep(name: str, labels: dict[str, str] | None = None, affinity: dict | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": name, "image": "x"}]}
    if affinity:
        spec["affinity"] = affinity
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": "7"},
            "spec": {"template": {"metadata": {"labels": {"app": name, **(labels or {})}}, "spec": spec}}}


def test_latest_profiles_and_tombstones():
    old, new = profile("web", "cpu-bound", ts=100), profile("web", "memory-bound", ts=200)
    other_ns = profile("web", "cpu-bound", ns="batch", ts=50)
    got = h.latest_profiles([(b"web", new), (b"web", old), (b"web", other_ns)])
    assert got[("shop", "web")].type == "memory-bound"  # the later event time wins, not the later record
    assert got[("batch", "web")].type == "cpu-bound"
    assert h.latest_profiles([(b"web", new), (b"web", None)]) == {}  # tombstone: forgotten everywhere
    assert set(h.latest_profiles([(b"web", new), (b"web", None), (b"web", other_ns)])) == {("batch", "web")}


def test_interference_is_made_mutual_within_a_namespace():
    profiles = {("shop", "api"): profile("api", "cpu-bound", interferes_with=["batch", "api"]),
                ("shop", "web"): profile("web", "balanced", interferes_with=["batch"])}
    assert h.interference_partners(profiles) == {("shop", "api"): {"batch"}, ("shop", "web"): {"batch"},
                                                 ("shop", "batch"): {"api", "web"}}


def test_plan_deployment_reasons_and_diff():
    s = PlacementSettings(namespaces=("shop",))
    profiles = {("shop", "web"): profile("web", "cpu-bound")}
    partners = {("shop", "web"): {"noisy"}}
    patch, why = h.plan_deployment("shop", _dep("web"), profiles, partners, s)
    assert why == "patch" and patch is not None
    tmpl = patch["spec"]["template"]
    assert tmpl["metadata"]["labels"] == {PROFILE_TYPE_LABEL: "cpu-bound"}
    terms = tmpl["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [(t["weight"], t["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"]) for t in terms] == [
        (50, ["cpu-bound"]), (100, ["noisy"])]
    assert h.plan_deployment("other", _dep("web"), profiles, partners, s) == (None, "not-opted-in")
    assert h.plan_deployment("other", _dep("web"), {("other", "web"): profile("web", "cpu-bound", ns="other")}, {},
                             s, {OPT_IN_LABEL: "true"})[1] == "patch"
    assert h.plan_deployment("shop", _dep("api"), profiles, partners, s) == (None, "no-profile")
    # the app is the template's app label, not the Deployment's name
    renamed = _dep("web-v2")
    renamed["spec"]["template"]["metadata"]["labels"]["app"] = "web"
    assert h.plan_deployment("shop", renamed, profiles, partners, s)[1] == "patch"
    # applied once, the plan is "no-change"
    from streams.core.strategies.placement import merge_patch

    done = merge_patch(_dep("web"), patch)
    assert h.plan_deployment("shop", done, profiles, partners, s) == (None, "no-change")
    diff = h.template_diff("shop", "web", _dep("web"), patch)
    lines = diff.splitlines()
    assert lines[0] == "--- shop/web (live)" and lines[1] == "+++ shop/web (with placement hints)"
    assert any(ln.startswith("+") and PROFILE_TYPE_LABEL in ln for ln in lines)
    # nothing is removed (the one '-' line is JSON's comma after the last label)
    assert [ln for ln in lines[2:] if ln.startswith("-")] == ['-          "app": "web"']
    assert h.template_diff("shop", "web", done, None) == ""
    body = h.with_precondition(patch, "7")
    assert body["metadata"] == {"resourceVersion": "7"} and body["spec"] == patch["spec"] and "metadata" not in patch
    assert h.hint_id("shop", "web", patch) == h.hint_id("shop", "web", patch) != h.hint_id("shop", "api", patch)


def test_mode_dry_run_by_default_and_kill_switch_wins():
    assert h.mode_of(False, {}) == (False, "dry-run")
    assert h.mode_of(False, {"dry_run": False}) == (False, "dry-run")
    assert h.mode_of(True, {}) == (True, "")
    assert h.mode_of(True, {"dry_run": True}) == (False, "kill-switch")
    assert h.mode_of(True, {"paused": True}) == (False, "kill-switch")


def test_summary_table_and_settings(tmp_path):
    table = h.summary_table([h.HintResult("shop", "web", "applied", "patched")]).splitlines()
    assert table[0].split() == ["NAMESPACE", "DEPLOYMENT", "OUTCOME", "REASON"]
    assert table[1].split() == ["shop", "web", "applied", "patched"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"placement_hints": {"namespaces": ["shop"], "same_type_weight": 70},
                                   "actuator": {"dry_run": True}}))
    settings, actuator = h.settings_from(argparse.Namespace(config=str(cfg)))
    assert settings == PlacementSettings(namespaces=("shop",), same_type_weight=70) and actuator["dry_run"] is True
    cfg.write_text(yaml.safe_dump({"placement_hints": {"same_type_weight": 0}}))
    with pytest.raises(ValueError, match=r"placement_hints\.same_type_weight"):
        h.settings_from(argparse.Namespace(config=str(cfg)))


def test_outcomes_become_actions():
    patch = {"spec": {"template": {"metadata": {"labels": {PROFILE_TYPE_LABEL: "cpu-bound"}}}}}
    a = h.to_action(h.HintResult("shop", "web", "applied", "patched", "ok", patch=patch, http_status=200), 5.0, "w")
    assert (a.decision_topic, a.strategy, a.action, a.outcome, a.reason) == (
        "placement-hints", "PlacementHints", "patch-template", "applied", "patched")
    assert a.target == m.WorkloadRef(namespace="shop", kind="Deployment", name="web")
    assert a.decision_id == h.hint_id("shop", "web", patch) and a.ts == 5.0
    ns_level = h.to_action(h.HintResult("batch", "*", "skipped", "not-opted-in"), 5.0, "w")
    assert ns_level.target is None
    assert not h.HintResult("shop", "web", "skipped", "no-change").audited
    assert h.HintResult("shop", "web", "dry-run", "kill-switch").audited


def test_cli_entry(capsys):
    from kubetide.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["hints", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--apply" in text and "--namespace" in text and "kubetide.io/placement-hints=true" in text
    assert main(["hints", "--bootstrap-servers", "127.0.0.1:1", "--kubeconfig", "/nonexistent/kubeconfig"]) == 2


def test_actuator_role_grants_what_hints_need():
    assert missing_rules(actuator_rules(), h.RBAC_RULES) == []


# ------------------------------------------------------------------ end to end: broker + kubesim over HTTP

@pytest.fixture
async def sim():
    async with KubeSim(Cluster(parse_scenario(scenario_doc())), speed=0) as s:
        yield s


async def publish_profiles(producer, profiles: list[m.Profile]) -> None:
    for p in profiles:
        await producer.send_and_wait(PROFILES, encode(p), key=p.app.encode())


def shop_profiles() -> list[m.Profile]:
    return [profile("cpu-a", "cpu-bound"), profile("cpu-b", "cpu-bound"),
            profile("mem-a", "memory-bound", interferes_with=["cpu-a"]), profile("job", "cpu-bound", ns="batch")]


def args_for(kafka: str, kubeconfig: Path | str, config: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    h.add_arguments(p)
    return p.parse_args(["--bootstrap-servers", kafka, "--embedded-broker", "--kubeconfig", str(kubeconfig),
                         "--config", str(config), "--profiles-timeout", "10", *extra])


async def run_hints(args: argparse.Namespace) -> tuple[int, str]:
    printed: list[str] = []
    rc = await h.amain(args, asyncio.Event(), out=printed.append)
    return rc, "\n".join(printed)


def templates(c: Cluster) -> dict[tuple[str, str], tuple]:
    """What a hint may change, per Deployment: (generation, template labels, affinity, ReplicaSet)."""
    return {k: (d.generation, dict(d.rs.template_labels), d.rs.affinity, d.rs.name) for k, d in c.deployments.items()}


def cpu_bound_per_node(c: Cluster) -> Counter[str]:
    return Counter(p.node_name for p in c.pods.values() if p.app in ("cpu-a", "cpu-b") and p.node_name)


async def test_dry_run_apply_idempotent_and_spread(sim, kafka, producer, tmp_path):
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text(yaml.safe_dump({"placement_hints": {}}))
    await publish_profiles(producer, shop_profiles())
    api = await new_api_client(str(sim.kubeconfig_path))
    try:  # opt shop in as an SRE would: kubectl label namespace shop kubetide.io/placement-hints=true
        await client.CoreV1Api(api).patch_namespace("shop", {"metadata": {"labels": {OPT_IN_LABEL: "true"}}},
                                                    _content_type="application/merge-patch+json")
    finally:
        await api.close()
    c = sim.cluster
    before = templates(c)
    placement_before = {p.name: p.node_name for p in c.pods.values()}

    async with TopicReader(kafka, ACTIONS) as actions:
        # 1. dry run (the default): the diffs are printed, nothing changes
        rc, out = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg))
        assert rc == 0, out
        for app in SHOP_TYPES:
            assert f"+++ shop/{app} (with placement hints)" in out
        assert "batch/job" not in out  # not opted in
        assert any(ln.startswith("+ ") and f'"{PROFILE_TYPE_LABEL}": "cpu-bound"' in ln for ln in out.splitlines())
        assert "dry run: 3 deployment(s) would change" in out
        assert templates(c) == before and {p.name: p.node_name for p in c.pods.values()} == placement_before
        dry = await actions.wait_for(lambda a: a.decision_topic == h.DECISION_TOPIC, n=3)
        assert {(a.target.name, a.outcome, a.reason) for a in dry} == {
            (app, "dry-run", "dry-run") for app in SHOP_TYPES}

        # 2. --apply with the kill switch on (actuator.dry_run in the config file): still a dry run
        cfg.write_text(yaml.safe_dump({"placement_hints": {}, "actuator": {"dry_run": True}}))
        rc, out = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg, "--apply"))
        assert rc == 0 and "kill switch is on" in out
        assert templates(c) == before
        cfg.write_text(yaml.safe_dump({"placement_hints": {}}))

        # 3. --apply: the three shop Deployments are patched, batch is not touched
        rc, out = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg, "--apply"))
        assert rc == 0, out
        assert "applied: 3 deployment(s) patched" in out
        after = templates(c)
        for app, ptype in SHOP_TYPES.items():
            gen, labels, affinity, rs = after[("shop", app)]
            assert gen == before[("shop", app)][0] + 1 and rs != before[("shop", app)][3]
            assert labels[PROFILE_TYPE_LABEL] == ptype
            terms = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            assert terms[0]["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"] == [ptype]
        # mem-a interferes with cpu-a: both carry a term keeping the other away
        mem_terms = after[("shop", "mem-a")][2]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        cpu_terms = after[("shop", "cpu-a")][2]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert mem_terms[1]["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"] == ["cpu-a"]
        assert cpu_terms[1]["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"] == ["mem-a"]
        assert after[("batch", "job")] == before[("batch", "job")]
        applied = await actions.wait_for(lambda a: a.decision_topic == h.DECISION_TOPIC and a.outcome == "applied",
                                         n=3)
        assert {a.target.name for a in applied} == set(SHOP_TYPES) and all(a.http_status == 200 for a in applied)

        # 4. a second run changes nothing (no patch, no rollout)
        n_actions = len(actions.records)
        rc, out = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg, "--apply"))
        assert rc == 0 and "applied: 0 deployment(s) patched" in out and "+++" not in out
        assert templates(c) == after
        await asyncio.sleep(0.5)
        assert len(actions.records) == n_actions

    # 5. the rollouts replace the pods; the scheduler spreads the cpu-bound pods one per node
    await sim.advance(600)
    for app in SHOP_TYPES:
        pods = [p for p in c.pods.values() if p.app == app]
        assert len(pods) == 3 and all(p.ready and p.labels.get(PROFILE_TYPE_LABEL) == SHOP_TYPES[app] for p in pods)
    with_hints = cpu_bound_per_node(c)
    assert all(p.labels.get(PROFILE_TYPE_LABEL) is None for p in c.pods.values() if p.namespace == "batch")

    # the same rollout without hints (kubectl rollout restart: a template annotation) on an identical cluster
    async with KubeSim(Cluster(parse_scenario(scenario_doc())), speed=0) as base:
        api = await new_api_client(str(base.kubeconfig_path))
        try:
            for app in SHOP_TYPES:
                await client.AppsV1Api(api).patch_namespaced_deployment(app, "shop", {"spec": {"template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-05T00:00:00Z"}}}}},
                    _content_type="application/merge-patch+json")
        finally:
            await api.close()
        await base.advance(600)
        without = cpu_bound_per_node(base.cluster)
    print(f"cpu-bound pods per node: without hints {dict(sorted(without.items()))}, "
          f"with hints {dict(sorted(with_hints.items()))}")
    assert sum(with_hints.values()) == sum(without.values()) == 6
    assert max(without.values()) >= 2  # the default scores put same-type pods together ...
    assert max(with_hints.values()) == 1  # ... the hints give each cpu-bound pod its own node


async def test_only_named_namespaces_and_not_opted_in(sim, kafka, producer, tmp_path):
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text(yaml.safe_dump({"placement_hints": {"namespaces": ["shop", "kube-system"]}}))
    await publish_profiles(producer, shop_profiles())
    before = templates(sim.cluster)
    rc, out = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg, "--apply", "-n", "batch", "-n", "nope"))
    assert rc == 0
    rows = {tuple(line.split()[:4]) for line in out.splitlines()}
    assert ("batch", "*", "skipped", "not-opted-in") in rows and ("nope", "*", "skipped", "gone") in rows
    assert templates(sim.cluster) == before
    # configured namespaces: shop is patched, kube-system is protected even though listed
    rc, out = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg, "--apply"))
    rows = {tuple(line.split()[:4]) for line in out.splitlines()}
    assert ("kube-system", "*", "skipped", "protected-namespace") in rows
    assert ("shop", "cpu-a", "applied", "patched") in rows
    assert templates(sim.cluster)[("batch", "job")] == before[("batch", "job")]


async def test_no_profiles_is_a_configuration_error(sim, kafka, tmp_path):
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text(yaml.safe_dump({"placement_hints": {"namespaces": ["shop"]}}))
    before = templates(sim.cluster)
    rc, _ = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg, "--apply"))
    assert rc == 2 and templates(sim.cluster) == before  # never strips hints for lack of profiles


async def test_concurrent_template_change_is_not_overwritten(sim, kafka):
    """The patch carries the resourceVersion read: a template changed in between (here a preferred term of
    the app's own team) answers 409; the Deployment is read again and the hints are added to the new
    template, keeping the other term."""
    api = await new_api_client(str(sim.kubeconfig_path))
    try:
        hints = h.PlacementHints(api, PlacementSettings(namespaces=("shop",)), write=True)
        apps = client.AppsV1Api(api)
        stale = await hints._json(apps.read_namespaced_deployment, "cpu-a", "shop")
        theirs = {"weight": 10, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
                                                    "labelSelector": {"matchLabels": {"team": "x"}}}}
        await apps.patch_namespaced_deployment("cpu-a", "shop", {"spec": {"template": {"spec": {"affinity": {
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [theirs]}}}}}},
            _content_type="application/merge-patch+json")
        profiles = {("shop", "cpu-a"): profile("cpu-a", "cpu-bound")}
        r = await hints.one("shop", stale, {}, profiles, {})
        assert (r.outcome, r.reason) == ("applied", "patched"), r
        terms = sim.cluster.deployments[("shop", "cpu-a")].rs.affinity["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert terms[0] == theirs and terms[1]["weight"] == 50
        # a Deployment deleted meanwhile is "gone"; no retries left on a conflict → failed: invalid (409)
        gone = {**stale, "metadata": {**stale["metadata"], "name": "nope"}}
        assert (await hints.one("shop", gone, {}, {("shop", "cpu-a"): profile("cpu-a", "memory-bound")}, {})
                ).reason == "gone"
        hints.conflict_retries = 0
        r = await hints.one("shop", stale, {}, {("shop", "cpu-a"): profile("cpu-a", "memory-bound")}, {})
        assert (r.outcome, r.http_status) == ("failed", 409)
    finally:
        await api.close()


# ------------------------------------------------------------------ RBAC: exactly the actuator's role

@pytest.fixture
async def rbac_sim(tmp_path):
    from kubesim.kubeconfig import write_kubeconfig

    rbac = Rbac({ACTUATOR_TOKEN: (ACTUATOR_USER, actuator_rules()),
                 COLLECTOR_TOKEN: (COLLECTOR_USER, cluster_role_rules(DEPLOY / "collector.yaml",
                                                                      "kubetide-collector"))})
    async with KubeSim(Cluster(parse_scenario(scenario_doc())), speed=0, token=ACTUATOR_TOKEN,
                       authenticate=rbac.authenticate, authorize=rbac.authorize) as s:
        s.rbac = rbac
        s.collector_kubeconfig = write_kubeconfig(tmp_path / "collector.kubeconfig", s.url, COLLECTOR_TOKEN)
        yield s


async def test_rbac_actuator_role_works_collector_role_is_forbidden(rbac_sim, kafka, producer, tmp_path):
    sim = rbac_sim
    cfg = tmp_path / "kubetide.yaml"
    cfg.write_text(yaml.safe_dump({"placement_hints": {}}))
    await publish_profiles(producer, shop_profiles())
    sim.cluster.update_namespace_meta("shop", labels={OPT_IN_LABEL: "true"})
    before = templates(sim.cluster)
    # read-only credentials: the namespaces and Deployments are read, every patch is 403
    rc, out = await run_hints(args_for(kafka, sim.collector_kubeconfig, cfg, "--apply"))
    assert rc == 1
    rows = {tuple(line.split()[:4]) for line in out.splitlines()}
    assert {("shop", app, "failed", "forbidden") for app in SHOP_TYPES} <= rows
    assert templates(sim.cluster) == before
    # the actuator's ClusterRole (deploy/actuator.yaml) allows every call
    rc, out = await run_hints(args_for(kafka, sim.kubeconfig_path, cfg, "--apply"))
    assert rc == 0, out
    assert sim.rbac.denied(ACTUATOR_USER) == []
    assert {v for u, v, _, _ in sim.rbac.log if u == ACTUATOR_USER} >= {"get", "patch"}
