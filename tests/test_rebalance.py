"""Rebalancing under kill -9: two stream workers and two actuators in their consumer groups, one of
each killed mid-stream. The survivors take over the partitions; nothing is lost, no decision is
applied twice, no PodDisruptionBudget is violated; the time from the kill to processing again is
measured (settings: faust/aiokafka session 6 s, heartbeat 1 s — kubetide.faustfix and
kubetide.kafka.consumer_config).

Real parts: the embedded broker, `kubetide streams` and `kubetide actuator` processes, kubesim over
HTTP. The test produces the input itself (node scrapes, eviction decisions) so the truth is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kubesim.guards import PdbGuard
from kubesim.server import KubeSim
from kubetide import models as m
from kubetide.codec import DecodeError, decode, encode
from kubetide.kafka import gapless_getmany
from kubetide.procs import ManagedProcess, ProcessGroup, add_streams_worker, kubetide_argv
from kubetide.topics import ACTIONS, CLUSTER_METRICS, DECISIONS_DESCHEDULE, PLANNER_INPUT, PROFILES
from streams.core import messages  # noqa: F401  (registers the planner-input model)
from streams.core.profile import ProfileSettings
from tests.samples import T0
from tests.test_actuator import decision

pytest_plugins = ("tests.test_actuator_support",)  # fixtures: kafka (private embedded broker), producer

NODES = [f"rb-node-{i}" for i in range(8)]
APPS = ["alpha", "beta", "gamma", "delta"]
TICK_S = 10.0


def scrape(node_i: int, ts: float) -> m.ClusterMetrics:
    """Node ``node_i`` at ``ts``: two pods of each of two apps."""
    apps = [APPS[node_i % 4], APPS[(node_i + 1) % 4]]
    rows = [(app, f"{app}-{node_i}-{k}") for app in apps for k in range(2)]
    return m.ClusterMetrics(
        ts=ts, node=NODES[node_i], zone="zone-a", window_s=TICK_S,
        node_usage=m.Resources(cpu_cores=3.0, mem_bytes=8e9), node_allocatable=m.Resources(cpu_cores=8, mem_bytes=32e9),
        pods=m.PodSamples(namespace=["rb"] * len(rows), name=[n for _, n in rows], app=[a for a, _ in rows],
                          cpu_cores=[0.5 + 0.01 * (int(ts) % 7) for _ in rows], mem_bytes=[1e9] * len(rows)))


class Timed:
    """Reads topics from the beginning in the background; keeps (arrival time, decoded value)."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.records: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Timed:
        self._c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await self._c.start()
        await self._c.topics()
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(self._c.partitions_for_topic(t) or [])]
        self._c.assign(tps)
        await self._c.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while True:
            batches = await gapless_getmany(self._c, timeout_ms=100)
            now = time.monotonic()
            for tp, recs in batches.items():
                for r in recs:
                    with contextlib.suppress(DecodeError):
                        self.records[tp.topic].append((now, decode(tp.topic, r.value)))

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._c.stop()


def _log_lines(run_dir: Path, needles: tuple[str, ...]) -> list[str]:
    return [line.strip()[:200] for log in sorted(run_dir.glob("s*/streams.log"))
            for line in log.read_text(errors="replace").splitlines() if any(n in line for n in needles)]


async def explain_missing(bootstrap: str, missing: dict[str, list[float]], run_dir: Path) -> str:
    """Why scrapes are missing from planner-input: where each sits in cluster.metrics, whether a fresh read of
    planner-input finds its summary now, the streams group's committed offsets, and the workers' gap logs."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id="kubetide-streams")
    await c.start()
    try:
        await c.topics()
        tps = [TopicPartition(t, p) for t in (CLUSTER_METRICS, PLANNER_INPUT)
               for p in sorted(c.partitions_for_topic(t) or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        where: dict[tuple[str, float], str] = {}
        found_now: set[tuple[str, float]] = set()
        idle = 0
        while idle < 5:
            got = await gapless_getmany(c, timeout_ms=200)
            idle = 0 if got else idle + 1
            for tp, recs in got.items():
                for r in recs:
                    with contextlib.suppress(DecodeError):
                        v = decode(tp.topic, r.value)
                        if tp.topic == CLUSTER_METRICS and v.ts in missing.get(v.node, ()):
                            where[(v.node, v.ts)] = f"cluster.metrics[{tp.partition}]@{r.offset}"
                        elif getattr(v, "kind", None) == "node" and v.ts in missing.get(v.node.node, ()):
                            found_now.add((v.node.node, v.ts))
        committed = {tp.partition: await c.committed(tp) for tp in tps if tp.topic == CLUSTER_METRICS}
    finally:
        await c.stop()
    gaps = await asyncio.to_thread(_log_lines, run_dir, ("offset gap", "rebalance"))
    lines = [f"{n} ts={ts} (round {(ts - T0) / TICK_S:.0f}) at {where.get((n, ts), '?')}, in planner-input on a fresh "
             f"read: {(n, ts) in found_now}" for n, v in missing.items() for ts in v]
    return "scrapes never processed:\n  " + "\n  ".join(lines) + f"\ncommitted (cluster.metrics): {committed}" + \
        "\nworker logs:\n  " + "\n  ".join(gaps[-30:])


@pytest.mark.timeout(150)
async def test_kill9_one_of_two_streams_workers_and_one_of_two_actuators(kafka: str, producer, tmp_path: Path) -> None:
    async with KubeSim("demo", speed=0, retry_after_s=1) as sim:
        c = sim.cluster
        await sim.advance(120)  # every pod ready: PDBs allow disruptions
        guard = PdbGuard(c).attach()  # after any pod removal: a PDB covering it keeps its desired healthy pods
        violations = guard.violations
        env = {"KUBETIDE_LOG_LEVEL": "INFO"}
        with ProcessGroup() as group:
            streams = [add_streams_worker(group, kafka, tmp_path / f"s{i}", env=env) for i in range(2)]
            acts = [group.add(ManagedProcess(
                f"actuator-{i}", kubetide_argv("actuator", "--bootstrap-servers", kafka, "--kubeconfig",
                                               str(sim.kubeconfig_path), "--broker-check-interval", "0"),
                tmp_path / f"actuator-{i}.log", env=env)) for i in range(2)]
            for proc, ready in streams:
                await asyncio.to_thread(proc.wait_for_file, ready, 60)
            await asyncio.sleep(8)  # the second join's rebalance settles before anything is produced
            assert not group.dead(), group.dead()[0].tail(30)

            pods = sorted((p for p in c.pods.values() if p.namespace != "kube-system" and not p.daemon),
                          key=lambda p: p.name)
            decisions = [decision(sim, p, ttl=1e7) for p in pods[:16]]
            async with Timed(kafka, PLANNER_INPUT, PROFILES, ACTIONS) as out:
                sent_at: dict[str, float] = {}
                kill_t = None
                kill_round = 40
                rounds = 110
                loop_t0 = time.monotonic()
                for r in range(rounds):
                    ts = T0 + TICK_S * r
                    for i in range(len(NODES)):
                        await producer.send(CLUSTER_METRICS, encode(scrape(i, ts)), key=NODES[i].encode())
                    if r % 6 == 0 and r // 6 < len(decisions):  # a decision, and every one of them twice
                        for d in {decisions[r // 6].id: decisions[r // 6], decisions[max(0, r // 6 - 3)].id:
                                  decisions[max(0, r // 6 - 3)]}.values():
                            await producer.send(DECISIONS_DESCHEDULE, encode(d), key=d.pod.name.encode())
                            sent_at.setdefault(d.id, time.monotonic())
                    if r % 4 == 0:
                        await sim.advance(30)  # replacements start and get ready: PDB budget comes back
                    if r == kill_round:
                        ts_kill = ts
                        await producer.flush()
                        streams[0][0].signal(signal.SIGKILL)
                        acts[0].signal(signal.SIGKILL)
                        kill_t = time.monotonic()
                    await asyncio.sleep(0.2)
                await producer.flush()
                assert kill_t is not None
                last_ts = T0 + TICK_S * (rounds - 1)
                round_s = (time.monotonic() - loop_t0) / rounds

                def summaries() -> dict[str, list[tuple[float, float]]]:
                    got: dict[str, list[tuple[float, float]]] = defaultdict(list)
                    for at, v in out.records[PLANNER_INPUT]:
                        if getattr(v, "kind", None) == "node" and v.node.node in NODES:
                            got[v.node.node].append((v.ts, at))
                    return got

                deadline = time.monotonic() + 45
                while time.monotonic() < deadline:
                    got = summaries()
                    if all({ts for ts, _ in got.get(n, [])} >= {T0 + TICK_S * r for r in range(rounds)} for n in NODES):
                        break
                    await asyncio.sleep(0.5)
                # nothing lost: every scrape reached planner-input at least once
                got = summaries()
                missing = {n: sorted({T0 + TICK_S * r for r in range(rounds)} - {ts for ts, _ in got.get(n, [])})
                           for n in NODES}
                missing = {n: v for n, v in missing.items() if v}
                assert not missing, await explain_missing(kafka, missing, tmp_path)
                dup_scrapes = sum(len(v) - len({ts for ts, _ in v}) for v in got.values())
                dup_by_node = {n: len(v) - len({ts for ts, _ in v}) for n, v in got.items()}
                # kill → processing again: every node's first scrape produced after the kill is processed
                streams_recovery = max(min(at for ts, at in got[n] if ts > ts_kill) for n in NODES) - kill_t

                # a flush round far ahead: each app emits its final profile after everything was processed
                flush_ts = last_ts + 2 * ProfileSettings().emit_interval_s
                for i in range(len(NODES)):
                    await producer.send(CLUSTER_METRICS, encode(scrape(i, flush_ts)), key=NODES[i].encode())
                await producer.flush()
                deadline = time.monotonic() + 30
                final: dict[str, m.Profile] = {}
                while time.monotonic() < deadline and len(final) < len(APPS):
                    final = {v.app: v for _, v in out.records[PROFILES] if v.namespace == "rb" and v.ts == flush_ts}
                    await asyncio.sleep(0.5)
                # decisions: every one answered (terminal), none applied twice
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    answered = {v.decision_id for _, v in out.records[ACTIONS] if v.outcome != "skipped" or
                                v.reason not in ("pdb", "rate-limit")}
                    if {d.id for d in decisions} <= answered:
                        break
                    await asyncio.sleep(0.5)
                actions = [(at, v) for at, v in out.records[ACTIONS]]
            assert streams[1][0].alive() and acts[1].alive(), "a survivor died"
        guard.detach()

    # -- profiles: one per app; nothing lost (the profiler checkpoints every touched state right before each
    # offset commit), and above the truth only by re-processed duplicates (the sketch cannot tell them apart)
    assert set(final) == set(APPS), f"final profiles only for {sorted(final)}"
    per_round = Counter(app for i in range(len(NODES)) for app in scrape(i, T0).pods.app)
    # the final profile is emitted by the first flush-round slice of its app (one node's pods: 2 samples), so
    # it counts every sample of the rounds + 2 .. + all the app's flush-round samples (any slice order)
    truth = {a: rounds * per_round[a] + 2 for a in APPS}
    counts = {a: max(w.samples for w in final[a].windows) for a in APPS}
    diffs = {a: counts[a] - truth[a] for a in APPS}
    # above that only duplicates: the scrapes split-metrics processed twice (each gives its node's apps their
    # samples again) + what a profiler re-reads (an app's profile lives on one worker): the killed worker's
    # last commit interval (1 s), or the survivor's work since its last commit before the rebalance (1 s, and
    # commits fail while the group rebalances: the embedded broker holds the join session/2 = 3 s) + the rest
    # of the flush round. On a loaded machine commits and the join run late: the survivor's measured stall
    # (kill → processing again) bounds that time better than the nominal 1 s + 3 s, so the larger one is used
    reread_rounds = math.ceil(max(1.0 + 3.0, streams_recovery) / round_s)
    dup_bound = {a: sum(n * Counter(scrape(NODES.index(node), T0).pods.app)[a] for node, n in dup_by_node.items())
                 + reread_rounds * per_round[a] + per_round[a] - 2 for a in APPS}
    # -- decisions
    applied = Counter(v.decision_id for _, v in actions if v.outcome == "applied")
    twice = {d: n for d, n in applied.items() if n > 1}
    evicted_pods = {d.pod.uid for d in decisions} - {p.uid for p in c.pods.values()}
    after_kill = [min(at for at, v in actions if v.decision_id == d_id) - max(sent_at[d_id], kill_t)
                  for d_id in sent_at if sent_at[d_id] >= kill_t - 2
                  and any(v.decision_id == d_id for _, v in actions)]
    actuator_recovery = max(after_kill) if after_kill else float("nan")
    print(f"\nrebalance: streams kill→processing again {streams_recovery:.1f}s; actuator kill→answering "
          f"{actuator_recovery:.1f}s; duplicate scrapes {dup_scrapes}; profile samples vs truth {diffs} "
          f"(duplicates allowed {dup_bound}: re-read {reread_rounds} rounds of {round_s:.2f}s); "
          f"applied {sum(applied.values())} decisions "
          f"({len(evicted_pods)} pods gone, kubesim evictions {c.counters['evictions']}); applied twice {twice}; "
          f"PDB violations {violations}")
    assert not twice, f"decisions applied twice: {twice}"
    assert not violations, violations
    # kubesim evicted only decided pods, each once; every applied decision's pod is gone (a kill between an
    # eviction and its record makes the survivor answer "skipped: gone": evicted, not applied twice)
    assert c.counters["evictions"] == len(evicted_pods) >= len(applied) > 0
    assert all(diffs[a] >= 0 for a in APPS), f"profile samples lost: {diffs} (truth {truth})"
    assert all(diffs[a] <= dup_bound[a] for a in APPS), (diffs, dup_bound)
    assert streams_recovery < 30 and actuator_recovery < 30
