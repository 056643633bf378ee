"""Actuator against kubesim over HTTP and the embedded broker over TCP (no mocks)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import orjson
import pytest

from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.codec import encode
from kubetide.topics import ACTIONS, DEADLETTER, DECISIONS_DESCHEDULE
from tests.test_actuator_support import TopicReader, running, spawn
from workers.actuator import Actuator, ActuatorSettings, OffsetTracker, TokenBucket, add_arguments, settings_from

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ("tests.test_actuator_support", "tests.kubesim_fixtures")  # kafka, producer, api


@pytest.fixture
async def sim():
    async with KubeSim("demo", speed=0, retry_after_s=1) as s:  # short Retry-After: PDB retries within the test
        yield s


def pod_on(sim, app: str, node: str | None = None):
    return next(p for _, p in sorted(sim.cluster.pods.items())
                if p.app == app and (node is None or p.node_name == node))


def decision(sim, pod, *, ttl: float = 300, **over) -> m.DescheduleDecision:
    t = sim.cluster.t
    d = m.DescheduleDecision(
        id=m.decision_id("test", uuid.uuid4().hex), made_at=t, expires_at=t + ttl, strategy="test",
        reason="test decision", pod=m.PodRef(namespace=pod.namespace, name=pod.name, uid=pod.uid,
                                             node=pod.node_name, app=pod.app),
        workload=m.WorkloadRef(namespace=pod.namespace, kind="Deployment", name=pod.app or pod.name),
        from_node=pod.node_name or "none")
    return d.model_copy(update=over) if over else d


async def send(producer, d: m.DescheduleDecision | bytes, key: str = "k") -> None:
    raw = d if isinstance(d, bytes) else encode(d)
    await producer.send_and_wait(DECISIONS_DESCHEDULE, raw, key=key.encode())


def outcome_of(d_id: str):
    return lambda v: isinstance(v, m.Action) and v.decision_id == d_id


async def started(actuator: Actuator) -> None:
    await asyncio.wait_for(actuator.ready.wait(), 30)


async def test_evict_pdb_protected_expired(sim, api, kafka, producer):
    c = sim.cluster
    act = Actuator(api, producer, kafka, ActuatorSettings(pdb_max_attempts=2), embedded=True)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        hot = pod_on(sim, "worker", "node-a-1")
        cache = pod_on(sim, "cache")
        system = pod_on(sim, "metrics-server")
        worker2 = next(p for _, p in sorted(c.pods.items())
                       if p.app == "worker" and p.node_name == "node-a-1" and p.name != hot.name)
        d_hot, d_pdb, d_sys = decision(sim, hot), decision(sim, cache), decision(sim, system)
        d_old = decision(sim, worker2, made_at=c.t - 600, expires_at=c.t - 300)
        d_moved = decision(sim, worker2, from_node="node-b-1")
        for d in (d_hot, d_pdb, d_sys, d_old, d_moved):
            await send(producer, d, key=f"{d.workload.namespace}/{d.workload.name}")

        # hot-node pod: evicted through the Eviction API, gone, replaced by kubesim elsewhere.
        (applied,) = await actions.wait_for(outcome_of(d_hot.id))
        assert (applied.outcome, applied.reason, applied.http_status) == ("applied", "evicted", 201)
        assert applied.target.name == hot.name and applied.ts == pytest.approx(c.t, abs=1)
        assert (hot.namespace, hot.name) not in c.pods
        await sim.advance(60)
        workers = [p for p in c.pods.values() if p.app == "worker"]
        assert len(workers) == 4 and sum(p.node_name == "node-a-1" for p in workers) == 2

        # zero-budget PDB: 429 -> skipped: pdb with Retry-After, retried once (pdb_max_attempts=2), pod kept.
        first, second = await actions.wait_for(outcome_of(d_pdb.id), 2)
        assert (first.outcome, first.reason, first.http_status, first.retry_after_s) == ("skipped", "pdb", 429, 1)
        assert first.attempt == 1 and second.attempt == 2 and second.reason == "pdb"
        assert "disruption budget" in first.message and "giving up" in second.message
        assert (cache.namespace, cache.name) in c.pods

        # kube-system: never touched.
        (prot,) = await actions.wait_for(outcome_of(d_sys.id))
        assert (prot.outcome, prot.reason) == ("skipped", "protected-namespace")
        assert (system.namespace, system.name) in c.pods

        (old,) = await actions.wait_for(outcome_of(d_old.id))
        assert old.outcome == "expired"
        (moved,) = await actions.wait_for(outcome_of(d_moved.id))
        assert (moved.outcome, moved.reason) == ("skipped", "changed")
        assert (worker2.namespace, worker2.name) in c.pods

        # the pod evicted above: a new decision for it finds it gone.
        d_gone = decision(sim, hot)
        await send(producer, d_gone)
        (gone,) = await actions.wait_for(outcome_of(d_gone.id))
        assert (gone.outcome, gone.reason) == ("skipped", "gone")

        # opt-out annotation on the live pod
        c.update_pod_meta(worker2.namespace, worker2.name, labels=dict(worker2.labels),
                          annotations={"kubetide.io/evict": "never"})
        d_opt = decision(sim, worker2)
        await send(producer, d_opt)
        (opt,) = await actions.wait_for(outcome_of(d_opt.id))
        assert (opt.outcome, opt.reason) == ("skipped", "opt-out")
    assert c.counters["evictions"] == 1
    assert {k for k, v in actions.records if isinstance(v, m.Action) and v.decision_id == d_hot.id} == \
        {d_hot.id.encode()}


async def test_duplicate_applied_once_also_across_restart(sim, api, kafka, producer):
    c = sim.cluster
    settings = ActuatorSettings()
    d = decision(sim, pod_on(sim, "worker", "node-a-1"))
    n_pods = len(c.pods)
    async with TopicReader(kafka, ACTIONS) as actions:
        act = Actuator(api, producer, kafka, settings, embedded=True)
        async with running(act.run):
            await started(act)
            await send(producer, d)
            await send(producer, d)
            first, second = await actions.wait_for(outcome_of(d.id), 2)
        assert (first.outcome, second.outcome) == ("applied", "duplicate")
        assert second.reason == "already-applied"
        await sim.advance(60)  # the replacement appears

        # a new actuator process-equivalent: rebuilds the applied ids from `actions`
        act2 = Actuator(api, producer, kafka, settings, embedded=True)
        async with running(act2.run):
            await started(act2)
            assert d.id in act2.applied
            await send(producer, d)
            third = (await actions.wait_for(outcome_of(d.id), 3))[2]
        assert third.outcome == "duplicate"
        assert len(c.pods) == n_pods  # the evicted pod was replaced, nothing else was evicted
        assert sum(1 for p in c.pods.values() if p.app == "worker") == 4
        assert c.counters["evictions"] == 1


async def test_dry_run_never_evicts(sim, api, kafka, producer):
    c = sim.cluster
    act = Actuator(api, producer, kafka, ActuatorSettings(dry_run=True), embedded=True)
    pod = pod_on(sim, "worker", "node-a-1")
    d = decision(sim, pod)
    async with TopicReader(kafka, ACTIONS) as actions, running(act.run):
        await started(act)
        await send(producer, d)
        (a,) = await actions.wait_for(outcome_of(d.id))
        assert (a.outcome, a.reason) == ("dry-run", "dry-run") and "would evict" in a.message
        assert (pod.namespace, pod.name) in c.pods
        assert c.counters["evictions"] == 0
        await send(producer, d)
        assert (await actions.wait_for(outcome_of(d.id), 2))[1].outcome == "duplicate"
    assert (pod.namespace, pod.name) in c.pods


async def test_malformed_and_wrong_version_go_to_deadletter(sim, api, kafka, producer):
    act = Actuator(api, producer, kafka, ActuatorSettings(), embedded=True)
    pod = pod_on(sim, "worker", "node-a-1")
    good = decision(sim, pod)
    wrong = orjson.loads(encode(decision(sim, pod)))
    wrong["schema"]["version"] = 99
    async with TopicReader(kafka, ACTIONS) as actions, TopicReader(kafka, DEADLETTER) as dead, running(act.run):
        await started(act)
        await send(producer, b"{not json", key="bad")
        await send(producer, orjson.dumps(wrong), key="bad")
        await send(producer, orjson.dumps({"schema": {"name": DECISIONS_DESCHEDULE, "version": 1}, "id": "x"}))
        await send(producer, good)
        letters = await dead.wait_for(lambda v: isinstance(v, m.DeadLetter), 3)
        assert sorted(x.reason for x in letters) == ["decode", "schema", "version"]  # keys differ: any order
        assert all(x.origin_topic == DECISIONS_DESCHEDULE and x.origin_offset is not None for x in letters)
        assert {k for k, _ in dead.records} == {DECISIONS_DESCHEDULE.encode()}
        (a,) = await actions.wait_for(outcome_of(good.id))  # and it went on
        assert a.outcome == "applied"


async def test_offsets_committed_after_outcome(sim, api, kafka, producer):
    """At-least-once: a restarted actuator in the same group does not see handled decisions again."""
    settings = ActuatorSettings(commit_interval_s=0.2)
    d = decision(sim, pod_on(sim, "api"))
    async with TopicReader(kafka, ACTIONS) as actions:
        act = Actuator(api, producer, kafka, settings, embedded=True)
        async with running(act.run):
            await started(act)
            await send(producer, d)
            await actions.wait_for(outcome_of(d.id))
        act2 = Actuator(api, producer, kafka, dataclasses.replace(settings), embedded=True)
        async with running(act2.run):
            await started(act2)
            await asyncio.sleep(1.5)
        assert len(actions.matching(outcome_of(d.id))) == 1


async def test_token_bucket_and_offset_tracker():
    bucket = TokenBucket(rate_per_min=600, burst=2)  # 10/s
    assert await bucket.acquire() == pytest.approx(0, abs=0.01)
    assert await bucket.acquire() == pytest.approx(0, abs=0.01)
    waited = await bucket.acquire()
    assert 0.05 < waited < 0.3
    t = OffsetTracker()
    for off in (5, 6, 7):
        t.start("tp", off)
    t.done("tp", 6)
    assert t.committable() == {"tp": 5}
    t.done("tp", 5)
    assert t.committable() == {"tp": 7}
    t.done("tp", 7)
    assert t.committable() == {"tp": 8}


def test_settings_flags_and_validation(tmp_path):
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = tmp_path / "k.yaml"
    cfg.write_text("actuator:\n  protected_namespaces: [kube-system, payments]\n  evictions_per_minute: 12\n")
    s = settings_from(p.parse_args(["--config", str(cfg), "--dry-run"]))
    assert s.dry_run and s.protected_namespaces == ("kube-system", "payments") and s.evictions_per_minute == 12
    cfg.write_text("actuator:\n  topics: [decisions.nope]\n")
    with pytest.raises(ValueError, match=r"actuator\.topics"):
        settings_from(p.parse_args(["--config", str(cfg)]))
    assert ActuatorSettings().protected_namespaces == ("kube-system", "kube-public", "kube-node-lease", "kubetide")


async def test_actuator_cli_subprocess_dry_run_and_sigterm(sim, kafka, producer, tmp_path):
    import os
    import signal
    import sys

    env = {**os.environ, "KUBETIDE_BOOTSTRAP": kafka, "KUBECONFIG": str(sim.kubeconfig_path),
           "KUBETIDE_EMBEDDED_BROKER": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "actuator.log"
    pod = pod_on(sim, "worker", "node-a-1")
    d = decision(sim, pod)
    proc = spawn([sys.executable, "-m", "workers.actuator", "--dry-run"], env, log)
    try:
        async with TopicReader(kafka, ACTIONS) as actions:
            await send(producer, d)  # before the group is joined: read from the earliest offset
            (a,) = await actions.wait_for(outcome_of(d.id), within=40)
            assert a.outcome == "dry-run"
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 0, text
    assert "DRY RUN" in text and "actuator stopped" in text
    assert (pod.namespace, pod.name) in sim.cluster.pods
