"""The whole path, as processes over real TCP and HTTP: kubesim's hot node → collector →
cluster.metrics → faust planner → decisions.deschedule → actuator → Eviction API → kubesim
re-places the pod → actions record. Also the `kubetide demo` command itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubesim.server import KubeSim
from kubetide.procs import ProcessGroup, add_pipeline
from kubetide.topics import ACTIONS, DECISIONS_DESCHEDULE
from tests.test_actuator_support import TopicReader

pytest_plugins = ("tests.test_actuator_support",)  # fixture: kafka (a private embedded broker)

HOT = "node-a-1"


async def test_hot_node_is_relieved_end_to_end(kafka: str, tmp_path: Path) -> None:
    async with KubeSim("demo", speed=0) as sim:
        c = sim.cluster
        await sim.advance(10)
        hot_before = c.node_cpu_percent()[HOT]
        assert hot_before >= 85, "the demo scenario should start with an overloaded node"
        on_hot = {p.uid: p for p in c.pods.values() if p.node_name == HOT}
        protected_on_hot = {p.uid for p in on_hot.values() if p.namespace == "kube-system"}
        assert protected_on_hot

        env = {"KUBETIDE_LOG_LEVEL": "INFO"}
        with ProcessGroup() as group:
            streams, ready = add_pipeline(group, kafka, tmp_path, sim.kubeconfig_path, env=env)
            await asyncio.to_thread(streams.wait_for_file, ready, 60)

            async with TopicReader(kafka, ACTIONS) as actions, TopicReader(kafka, DECISIONS_DESCHEDULE) as decisions:
                applied: list = []
                deadline = time.monotonic() + 90
                while not applied and time.monotonic() < deadline:
                    await sim.advance(10)
                    await asyncio.sleep(0.15)
                    applied = actions.matching(lambda a: getattr(a, "outcome", None) == "applied")
                    group.raise_if_dead()
                assert applied, "no eviction was applied within 90 s:\n" + group.tails()
                action = applied[0]
                decision = next(d for d in decisions.matching(lambda d: hasattr(d, "pod"))
                                if d.id == action.decision_id)

                # The decision explains itself with event-time numbers.
                assert decision.from_node == HOT and decision.strategy == "LowNodeLoad"
                assert decision.evidence and decision.reason and decision.expires_at > decision.made_at
                assert decision.pod.uid in on_hot and decision.pod.uid not in protected_on_hot
                # The pod was evicted through the API: gone from the cluster, counted by kubesim.
                assert decision.pod.uid not in {p.uid for p in c.pods.values()}
                assert c.counters["evictions"] >= 1
                app = on_hot[decision.pod.uid].app
                # Its owner re-created it and kubesim's scheduler placed it elsewhere; it becomes ready.
                for _ in range(40):
                    await sim.advance(10)
                replacements = [p for p in c.pods.values() if p.app == app and p.uid not in on_hot
                                and p.created > decision.made_at - 1]
                assert replacements and all(p.node_name and p.node_name != HOT for p in replacements)
                assert any(p.ready for p in replacements)
                # Load really moved; protected pods were never touched.
                assert c.node_cpu_percent()[HOT] < hot_before - 10
                assert protected_on_hot <= {p.uid for p in c.pods.values()}
                # Exactly one applied action per applied decision id (idempotent actuator).
                ids = [a.decision_id for a in actions.matching(lambda a: getattr(a, "outcome", None) == "applied")]
                assert len(ids) == len(set(ids))


@pytest.mark.timeout(240)
def test_demo_command_prints_the_table_and_stops_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "KUBETIDE_BOOTSTRAP"}
    proc = subprocess.run([sys.executable, "-m", "kubetide", "demo", "--hours", "0.5", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=220, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "node CPU usage spread" in out and "descheduling decisions" in out and "dead letters" in out
    assert "2 injected on purpose" in out  # the two bad messages reached deadletter
    # every process the demo started is gone
    for name in ("broker", "kubesim", "collector", "streams", "actuator"):
        assert (run_dir / f"{name}.log").exists()
    leftover = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout.split()
    assert not leftover, f"processes left running: {leftover}"
