"""Evictions/s applied by the real ``kubetide actuator`` against kubesim, limits off, vs a plain client.

    python bench/actuator_bench.py [--quick] [--json] [--evictions N]

Two identical in-process kubesim clusters (scenario ``mixed``, same seed, manual clock, their PDBs
removed) serve HTTP from this process's event loop. N running pods outside the protected namespaces
are picked, so every eviction is a plain 201 (PDB refusals are a different path, not a rate).

- **baseline** (same run): a plain ``aiohttp`` client posts the N Eviction objects to cluster A,
  8 in flight (the actuator's default ``max_in_flight``). Median of 3 runs on fresh pod sets.
- **actuator**: N deschedule decisions for the same pods on cluster B are produced to
  ``decisions.deschedule`` first; then ``python -m kubetide actuator`` starts with every rate limit,
  budget and the zone guard off (``evictions_per_minute`` 10^7). The rate is taken from the Kafka
  timestamps of its ``actions`` records: (applied − 1) / (last − first), so start-up is excluded.
  Median of 3 runs, each with a fresh broker and actuator process and fresh pods.
  The actuator does per decision what it does in production: decode, expiry, idempotence ledger,
  protected-namespace / opt-out checks, PDB pre-check, the Eviction call, one ``actions`` record.

Caveat: the baseline client shares one event loop (one core) with kubesim, while the actuator is its
own process; on 2 cores that flatters the actuator a little. Target: actuator ≥ 0.5 × baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, create_topics, free_port, load, median, new_broker, report, scrape

from kubetide import models as m
from kubetide import topics
from kubetide.codec import decode, encode
from kubetide.kafka import gapless_getmany
from kubetide.procs import ManagedProcess, kubetide_argv

SCENARIO = "mixed"
SEED = 7
IN_FLIGHT = 8
CONFIG = """\
actuator:
  evictions_per_minute: 10000000
  rate_burst: 100000
  node_evictions_per_minute: 0
  namespace_evictions_per_minute: 0
  workload_evictions_per_minute: 0
  budget_per_workload: 1000000
  budget_per_zone: 1000000
  zone_guard: false
"""


def free_pods(cluster: Any) -> list[Any]:
    """Running pods on a node, outside kube-system, covered by no PDB (so eviction is always 201)."""
    pdbs = list(cluster.pdbs.values())
    out = []
    for _, p in sorted(cluster.pods.items()):
        if p.namespace in ("kube-system", "kube-public", "kube-node-lease", "kubetide") or not p.node_name:
            continue
        if p.phase != "Running":
            continue
        if any(b.namespace == p.namespace and all(p.labels.get(k) == v for k, v in b.selector.items())
               for b in pdbs):
            continue
        out.append(p)
    return out


async def baseline(sim: Any, pods: list[Any]) -> float:
    """Seconds for a plain aiohttp client to evict ``pods`` (IN_FLIGHT concurrent requests)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {sim.token}", "Content-Type": "application/json"}
    sem = asyncio.Semaphore(IN_FLIGHT)
    codes: list[int] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        async def one(p: Any) -> None:
            body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": p.name,
                                                                                "namespace": p.namespace}}
            async with sem, http.post(f"{sim.url}/api/v1/namespaces/{p.namespace}/pods/{p.name}/eviction",
                                      json=body) as r:
                await r.read()
                codes.append(r.status)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(p) for p in pods))
        secs = time.perf_counter() - t0
    bad = [c for c in codes if c != 201]
    if bad:
        raise RuntimeError(f"baseline evictions failed: {bad[:5]}")
    return secs


def decisions_for(sim: Any, pods: list[Any]) -> list[m.DescheduleDecision]:
    t = sim.cluster.t
    return [m.DescheduleDecision(
        id=m.decision_id("bench", p.namespace, p.name), made_at=t, expires_at=t + 86_400, strategy="bench",
        reason="actuator bench", pod=m.PodRef(namespace=p.namespace, name=p.name, uid=p.uid, node=p.node_name,
                                              app=p.app),
        workload=m.WorkloadRef(namespace=p.namespace, kind="Deployment", name=p.app or p.name),
        from_node=p.node_name or "none") for p in pods]


async def actuator_run(bootstrap: str, sim: Any, pods: list[Any], work: Path) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from kubetide.kafka import producer_config

    prod = AIOKafkaProducer(**producer_config(bootstrap, True))
    await prod.start()
    try:
        futs = [await prod.send(topics.DECISIONS_DESCHEDULE, encode(d), key=d.workload.key.encode())
                for d in decisions_for(sim, pods)]
        await asyncio.gather(*futs)
    finally:
        await prod.stop()
    cfg = work / "actuator.yaml"
    cfg.write_text(CONFIG)
    mport = free_port()
    proc = ManagedProcess("actuator", kubetide_argv(
        "actuator", "--bootstrap-servers", bootstrap, "--kubeconfig", str(sim.kubeconfig_path), "--config", str(cfg),
        "--embedded-broker", "--metrics-port", str(mport), "--evictions-per-minute", "10000000"),
        work / "actuator.log", cwd=str(ROOT))
    cons = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                            auto_offset_reset="earliest")
    await cons.start()
    tps = [TopicPartition(topics.ACTIONS, p) for p in range(topics.spec(topics.ACTIONS).partitions)]
    cons.assign(tps)
    await cons.seek_to_beginning(*tps)
    outcomes: dict[str, int] = {}
    applied_ts: list[int] = []
    t_start = time.monotonic()
    proc.start()
    try:
        while sum(outcomes.values()) < len(pods):
            if not proc.alive():
                raise RuntimeError(f"actuator died:\n{proc.tail(30)}")
            if time.monotonic() - t_start > 120:
                raise RuntimeError(f"actuator: only {outcomes} after 120 s:\n{proc.tail(30)}")
            batch = await gapless_getmany(cons, timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    a = decode(topics.ACTIONS, r.value)
                    assert isinstance(a, m.Action)
                    key = f"{a.outcome}:{a.reason}"
                    outcomes[key] = outcomes.get(key, 0) + 1
                    if a.outcome == "applied":
                        applied_ts.append(r.timestamp)
        wall = time.monotonic() - t_start
        try:
            applied_metric = scrape(mport, "kubetide_actions_total", outcome="applied")
        except OSError:
            applied_metric = None
    finally:
        await cons.stop()
        proc.stop(grace_s=10)
    applied_ts.sort()
    span = (applied_ts[-1] - applied_ts[0]) / 1000.0 if len(applied_ts) > 1 else 0.0
    return {"outcomes": outcomes, "applied": len(applied_ts), "span_s": span, "wall_s": wall,
            "rate": (len(applied_ts) - 1) / span if span > 0 else 0.0, "applied_metric": applied_metric}


async def amain(n: int, repeats: int, work: Path) -> dict[str, Any]:
    from kubesim.server import KubeSim

    async with KubeSim(SCENARIO, speed=0, seed=SEED) as sim_a, KubeSim(SCENARIO, speed=0, seed=SEED) as sim_b:
        for sim in (sim_a, sim_b):  # no PDBs: every eviction is a plain 201 (the clock does not move)
            sim.cluster.pdbs.clear()
        pods_a, pods_b = free_pods(sim_a.cluster), free_pods(sim_b.cluster)
        need = n * repeats
        if len(pods_a) < need:
            raise RuntimeError(f"scenario {SCENARIO} has only {len(pods_a)} evictable pods, need {need}")
        base = [await baseline(sim_a, pods_a[i * n:(i + 1) * n]) for i in range(repeats)]
        base_rate = n / median(base)
        runs = []
        for i in range(repeats):  # a fresh broker (and so a fresh group and decisions topic) per run
            broker = new_broker(work / f"run{i}")
            try:
                await create_topics(broker.bootstrap)
                runs.append(await actuator_run(broker.bootstrap, sim_b, pods_b[i * n:(i + 1) * n], work / f"run{i}"))
            finally:
                broker.stop()
    rate = median(r["rate"] for r in runs)
    outcomes: dict[str, int] = {}
    for r in runs:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {
        "bench": "actuator", "evictions": n, "runs": repeats, "in_flight": IN_FLIGHT,
        "baseline_evictions_per_s": round(base_rate, 1), "baseline_runs_s": [round(x, 3) for x in base],
        "actuator_evictions_per_s": round(rate, 1), "actuator_runs_per_s": [round(r["rate"], 1) for r in runs],
        "actuator_outcomes": outcomes,
        "actuator_wall_s_incl_startup": [round(r["wall_s"], 2) for r in runs],
        "ratio": round(rate / base_rate, 3) if base_rate else None,
        "target_ratio_0.5_met": bool(base_rate) and rate / base_rate >= 0.5,
        "loadavg": load(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="200 evictions x 3 runs (< 60 s)")
    p.add_argument("--smoke", action="store_true", help="60 evictions, 1 baseline run (tests)")
    p.add_argument("--evictions", type=int, default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    n = a.evictions or (60 if a.smoke else 200 if a.quick else 400)
    repeats = 1 if a.smoke else 3
    work = Path(tempfile.mkdtemp(prefix="kt-actuator-bench-"))
    report(asyncio.run(amain(n, repeats, work)), a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
