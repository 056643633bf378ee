"""`kubetide chaos`: the whole pipeline under faults, and a table of what it survived.

Starts, like ``kubetide demo``: the embedded broker, kubesim (in this process, scenario ``demo`` on a
manual clock), the collector, **two** stream workers and **two** actuators (each pair in its consumer
group). For ``--duration`` seconds it advances the virtual clock and, at the same time:

- injects **API faults** through kubesim's fault injector (500/503 at ``--error-rate``, slow answers,
  dropped watch streams, 409 conflicts, lost answers to writes that were made);
- **kills** a worker with SIGKILL every ``--kill-every`` seconds, a stream worker and an actuator in
  turn, and starts a replacement at once (so each group sees a member vanish and one join);
- **fuzzes** the input topics every ``--fuzz-every`` seconds with ``--fuzz`` messages on
  cluster.metrics, cluster.events and decisions.* (random bytes, NaN, unknown schema versions,
  deep nesting, > 1 MiB payloads, missing fields, negative timestamps ... and valid ones).

Then it stops the faults, lets the pipeline drain, and prints (rich table; ``--json-out`` writes the
numbers as JSON):

- faults injected (API faults by kind, worker kills) and inputs fuzzed;
- records lost: node scrapes on cluster.metrics that never reached the planner (planner-input), and
  fuzzed inputs neither processed nor dead-lettered (processed + dead-lettered must equal produced);
- records processed twice (at-least-once re-processing after a kill: allowed, counted);
- actions applied twice (a decision id with more than one ``applied`` outcome: must be 0);
- PDB violations (a pod removal that left a PodDisruptionBudget below its desired healthy pods);
- recovery times: from each kill to processing again (stream worker: every node's first scrape after
  the kill reached the planner; actuator: decisions sent after the kill answered), p50 and max.

Exit code 0 when nothing was lost, nothing applied twice and no PDB was violated; 1 otherwise.
Logs of every process go to ``--run-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import random
import shutil
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kubetide import models as m
from kubetide import topics as T
from kubetide.codec import DEFAULT_MAX_BYTES, DecodeError, decode
from kubetide.kafka import gapless_getmany

log = logging.getLogger("kubetide.chaos")

FUZZ_KEY = b"chaos-fuzz"
FUZZ_TOPICS = (T.CLUSTER_METRICS, T.CLUSTER_EVENTS, T.DECISIONS_DESCHEDULE, T.DECISIONS_AUTOSCALE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        (parser.description or "") + "\n\n"
        "Starts the embedded broker, kubesim (scenario on a manual clock), the collector, two stream workers\n"
        "and two actuators; for --duration seconds it advances the clock while injecting API faults (500/503,\n"
        "slow answers, dropped watches, 409s, lost answers), SIGKILLing a stream worker or an actuator every\n"
        "--kill-every seconds (a replacement starts at once) and fuzzing the input topics. Then it drains and\n"
        "prints: faults injected, inputs fuzzed, records lost, records processed twice, actions applied twice,\n"
        "PDB violations and the recovery times (kill -> processing again), p50 and max.")
    parser.epilog = ("example: kubetide chaos --duration 60 --kill-every 20 --error-rate 0.1 --json-out chaos.json\n"
                     "exit code 0 when nothing was lost, nothing applied twice, no PDB violated and no worker died\n"
                     "on its own; logs of every process in --run-dir")
    parser.add_argument("--duration", type=float, default=90.0,
                        help="seconds of chaos (default 90: about 2 minutes in all with start-up and drain)")
    parser.add_argument("--kill-every", type=float, default=25.0,
                        help="SIGKILL a worker every this many seconds, stream worker and actuator in turn; "
                             "0 = no kills (default 25)")
    parser.add_argument("--error-rate", type=float, default=0.05,
                        help="share of Kubernetes API requests answered 500/503 (default 0.05)")
    parser.add_argument("--slow-ms", type=float, default=20.0, help="delay of slow API answers in ms (default 20)")
    parser.add_argument("--slow-rate", type=float, default=0.2, help="share of slow API answers (default 0.2)")
    parser.add_argument("--drop-watch-rate", type=float, default=0.3,
                        help="share of watch streams dropped within 5 s (default 0.3)")
    parser.add_argument("--conflict-rate", type=float, default=0.05,
                        help="share of API writes answered 409 Conflict (default 0.05)")
    parser.add_argument("--lost-response-rate", type=float, default=0.05,
                        help="share of API writes made but answered 503 (default 0.05)")
    parser.add_argument("--fuzz", type=int, default=40, help="hostile + valid messages per fuzz burst (default 40)")
    parser.add_argument("--fuzz-every", type=float, default=10.0, help="seconds between fuzz bursts (default 10)")
    parser.add_argument("--tick", type=float, default=10.0, help="virtual seconds per clock step (default 10)")
    parser.add_argument("--pace", type=float, default=0.2, help="real seconds per clock step (default 0.2)")
    parser.add_argument("--scenario", default="demo", help="kubesim scenario (default demo)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults, kills and fuzz (default 1)")
    parser.add_argument("--run-dir", default=".kubetide/chaos",
                        help="logs and state (emptied first; default .kubetide/chaos)")
    parser.add_argument("--json-out", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--log-level", default="WARNING", help="log level of this command (default WARNING)")


# ------------------------------------------------------------------ fuzzed input

T0 = 1_767_571_200.0


def _valid(topic: str, i: int, rng: random.Random) -> dict[str, Any]:
    """A valid message for ``topic``; ids, names and timestamps unique per ``i``."""
    ts = T0 + i
    pod = m.PodRef(namespace="chaos", name=f"chaos-fuzz-pod-{i}", uid=f"u-{i}", node="chaos-fuzz-node", app="fuzz")
    wl = m.WorkloadRef(namespace="chaos", kind="Deployment", name="fuzz")
    res = m.Resources(cpu_cores=0.1, mem_bytes=1e8)
    msg: m.Message
    if topic == T.CLUSTER_METRICS:
        msg = m.ClusterMetrics(ts=ts, node=f"chaos-fuzz-node-{i}", window_s=10.0, node_usage=res,
                               node_allocatable=m.Resources(cpu_cores=4, mem_bytes=8e9),
                               pods=m.PodSamples(namespace=["chaos"], name=[pod.name], app=["fuzz"], cpu_cores=[0.1],
                                                 mem_bytes=[1e8]))
    elif topic == T.CLUSTER_EVENTS:
        msg = m.ClusterEvent(ts=ts, type="ADDED", kind="Namespace", namespace="", name=f"chaos-fuzz-ns-{i}",
                             namespace_obj=m.NamespaceSnapshot(labels={}))
    elif topic == T.DECISIONS_DESCHEDULE:
        msg = m.DescheduleDecision(id=f"{rng.getrandbits(64):016x}", made_at=ts, expires_at=ts + 60, strategy="chaos",
                                   reason="fuzz", pod=pod, workload=wl, from_node="chaos-fuzz-node")
    else:
        msg = m.AutoscaleDecision(id=f"{rng.getrandbits(64):016x}", made_at=ts, expires_at=ts + 60, strategy="chaos",
                                  reason="fuzz", workload=wl, current_replicas=1, desired_replicas=2, trigger="chaos")
    return msg.to_dict()


def hostile_messages(topic: str, rng: random.Random, n: int, start: int = 0) -> list[bytes]:
    """``n`` messages for ``topic``: every fourth valid, the others one hostile kind each in turn."""
    out: list[bytes] = []
    for i in range(start, start + n):
        valid = _valid(topic, i, rng)
        k = i % 12
        if k in (0, 4, 8):
            raw = orjson.dumps(valid)
        elif k == 1:
            raw = rng.randbytes(rng.randint(1, 300))
        elif k == 2:
            raw = orjson.dumps([valid, None])
        elif k == 3:
            raw = json.dumps({**valid, "schema": {"name": topic, "version": 1}, "x": "__N__"}).replace(
                '"__N__"', rng.choice(["NaN", "Infinity", "-Infinity"])).encode()
        elif k == 5:
            raw = orjson.dumps({**valid, "schema": {"name": topic, "version": rng.choice([0, 2, 99])}})
        elif k == 6:
            raw = orjson.dumps(valid)[:-1] + b',"deep":' + b"[" * 5000 + b"]" * 5000 + b"}"
        elif k == 7:
            raw = orjson.dumps({**valid, "pad": "x" * (DEFAULT_MAX_BYTES + rng.randint(1, 999))})
        elif k == 9:
            drop = rng.choice(sorted(set(valid) - {"schema"}))
            raw = orjson.dumps({kk: v for kk, v in valid.items() if kk != drop})
        elif k == 10:
            field_ = "ts" if "ts" in valid else "made_at"
            raw = orjson.dumps({**valid, field_: -1.0})
        else:
            raw = orjson.dumps({**valid, "schema": {"name": "profiles", "version": 1}})
        out.append(raw)
    return out


def _fuzz_id(topic: str, raw: bytes) -> str | None:
    """What identifies a *valid* fuzzed message downstream (node, event name or decision id); None if invalid."""
    try:
        msg: Any = decode(topic, raw)
    except DecodeError:
        return None
    if topic == T.CLUSTER_METRICS:
        return f"{msg.node}@{msg.ts}"
    if topic == T.CLUSTER_EVENTS:
        return msg.name
    return msg.id


# ------------------------------------------------------------------ observation

@dataclass
class Kill:
    kind: str  # streams | actuator
    at: float  # monotonic
    recovery_s: float | None = None


@dataclass
class Observed:
    """Everything read back from the topics, with arrival times (monotonic)."""

    scrapes: dict[tuple[str, float], float] = field(default_factory=dict)  # (node, ts) -> first arrival
    summaries: dict[tuple[str, float], list[float]] = field(default_factory=lambda: defaultdict(list))
    events_forwarded: set[str] = field(default_factory=set)
    actions: list[tuple[float, m.Action]] = field(default_factory=list)
    decisions: dict[str, float] = field(default_factory=dict)  # id -> first arrival
    deadletters: list[m.DeadLetter] = field(default_factory=list)
    last_at: float = 0.0


async def _observe(bootstrap: str, obs: Observed, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.core import messages  # noqa: F401  (registers the planner-input model)

    names = [T.CLUSTER_METRICS, T.PLANNER_INPUT, T.ACTIONS, T.DEADLETTER, T.DECISIONS_DESCHEDULE,
             T.DECISIONS_AUTOSCALE]
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50,
                         max_partition_fetch_bytes=4 * 2**20)
    await c.start()
    try:
        await c.topics()
        tps = [TopicPartition(t, p) for t in names for p in sorted(c.partitions_for_topic(t) or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        while not stop.is_set():
            batches = await gapless_getmany(c, timeout_ms=200, max_records=5000)
            now = time.monotonic()
            for tp, recs in batches.items():
                for r in recs:
                    obs.last_at = now
                    if r.key == FUZZ_KEY and tp.topic == T.CLUSTER_METRICS:
                        continue
                    try:
                        v: Any = decode(tp.topic, r.value)
                    except DecodeError:
                        continue
                    if tp.topic == T.CLUSTER_METRICS:
                        obs.scrapes.setdefault((v.node, v.ts), now)
                    elif tp.topic == T.PLANNER_INPUT:
                        if v.kind == "node" and v.node is not None:
                            obs.summaries[(v.node.node, v.ts)].append(now)
                        elif v.kind == "event" and v.event is not None:
                            obs.events_forwarded.add(v.event.name)
                    elif tp.topic == T.ACTIONS:
                        obs.actions.append((now, v))
                    elif tp.topic == T.DEADLETTER:
                        obs.deadletters.append(v)
                    else:
                        obs.decisions.setdefault(v.id, now)
    finally:
        await c.stop()


def _pctl(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _recovery(kill: Kill, obs: Observed, horizon: float = 60.0) -> float | None:
    """Seconds from ``kill`` until processing again (see the module docstring), or None if not seen."""
    if kill.kind == "streams":
        first_after: dict[str, tuple[float, float]] = {}
        for (node, ts), at in obs.scrapes.items():
            if kill.at < at < kill.at + horizon and (node not in first_after or at < first_after[node][0]):
                first_after[node] = (at, ts)
        done = [min(obs.summaries[(node, ts)]) for node, (_, ts) in first_after.items()
                if obs.summaries.get((node, ts))]
        if not done or len(done) < len(first_after):
            return None
        return max(done) - kill.at
    answered: dict[str, float] = {}
    for at, a in obs.actions:
        answered.setdefault(a.decision_id, at)
    lat = [answered[d] - max(at, kill.at) for d, at in obs.decisions.items()
           if kill.at - 5 < at < kill.at + horizon and d in answered]
    return max(lat) if lat else None


# ------------------------------------------------------------------ the run

async def _chaos(args: argparse.Namespace, bootstrap: str, run_dir: Path, console: Any) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from kubesim.guards import PdbGuard
    from kubesim.server import KubeSim
    from kubetide.kafka import producer_config
    from kubetide.procs import ManagedProcess, ProcessGroup, add_streams_worker, kubetide_argv

    rng = random.Random(args.seed)
    # short server-side watch timeouts: watches are re-opened often, so dropped-watch faults get their chances
    env = {"KUBETIDE_LOG_LEVEL": "INFO", "KUBETIDE_METRICS_PORT": "0", "KUBETIDE_BROKER_CHECK_S": "0",
           "KUBETIDE__COLLECTOR__WATCH_TIMEOUT_S": "15"}
    results: dict[str, Any] = {}
    async with KubeSim(args.scenario, speed=0, seed=args.seed, retry_after_s=2) as sim:
        c = sim.cluster
        await sim.advance(120)
        guard = PdbGuard(c).attach()
        violations = guard.violations
        evictions_before = c.counters["evictions"]
        common = ["--bootstrap-servers", bootstrap]
        kube = ["--kubeconfig", str(sim.kubeconfig_path)]
        serial = Counter()

        def add_streams(group: ProcessGroup) -> tuple[Any, Path]:
            serial["streams"] += 1
            return add_streams_worker(group, bootstrap, run_dir / f"streams-{serial['streams']}", env=env)

        def add_actuator(group: ProcessGroup) -> Any:
            serial["actuator"] += 1
            n = serial["actuator"]
            return group.add(ManagedProcess(f"actuator-{n}", kubetide_argv("actuator", *common, *kube),
                                            run_dir / f"actuator-{n}.log", env=env))

        with ProcessGroup() as group:
            group.add(ManagedProcess("collector", kubetide_argv(
                "collector", *common, *kube, "--metrics-interval", str(max(args.pace / 2, 0.05)), "--lag-interval",
                "0"), run_dir / "collector.log", env=env))
            streams = [add_streams(group) for _ in range(2)]
            actuators = [add_actuator(group) for _ in range(2)]
            with console.status("starting: broker, kubesim, collector, 2 stream workers, 2 actuators…"):
                for proc, ready in streams:
                    await asyncio.to_thread(proc.wait_for_file, ready, 90)
                await asyncio.sleep(8)  # the second member's rebalance settles
            obs = Observed()
            stop_obs = asyncio.Event()
            observer = asyncio.create_task(_observe(bootstrap, obs, stop_obs))
            producer = AIOKafkaProducer(**producer_config(bootstrap, True, max_request_size=8 * 2**20))
            await producer.start()
            fuzz_sent: dict[str, list[bytes]] = {t: [] for t in FUZZ_TOPICS}
            kills: list[Kill] = []
            try:
                sim.faults.configure({
                    "error_rate": args.error_rate, "codes": [500, 503], "slow_ms": args.slow_ms,
                    "slow_rate": args.slow_rate, "drop_watch_rate": args.drop_watch_rate, "drop_watch_after_s": 5.0,
                    "conflict_rate": args.conflict_rate, "lost_response_rate": args.lost_response_rate,
                    "seed": args.seed})
                t_start = time.monotonic()
                next_kill = t_start + args.kill_every if args.kill_every > 0 else float("inf")
                next_fuzz = t_start + min(3.0, args.fuzz_every)
                fuzz_i = 0
                kind_next = "streams"
                with console.status("chaos: faults, kills and fuzz…") as status:
                    while (now := time.monotonic()) < t_start + args.duration:
                        step0 = now
                        await sim.advance(args.tick)
                        if now >= next_fuzz and args.fuzz > 0:
                            for t in FUZZ_TOPICS:
                                batch = hostile_messages(t, rng, args.fuzz // len(FUZZ_TOPICS) or 1, fuzz_i)
                                for raw in batch:
                                    await producer.send(t, raw, key=FUZZ_KEY)
                                fuzz_sent[t] += batch
                            fuzz_i += args.fuzz
                            next_fuzz = now + args.fuzz_every
                        if now >= next_kill and now < t_start + args.duration - 10:
                            if kind_next == "streams":
                                victim = streams.pop(rng.randrange(len(streams)))[0]
                                victim.signal(signal.SIGKILL)
                                kills.append(Kill("streams", time.monotonic()))
                                streams.append(add_streams(group))
                                kind_next = "actuator"
                            else:
                                victim = actuators.pop(rng.randrange(len(actuators)))
                                victim.signal(signal.SIGKILL)
                                kills.append(Kill("actuator", time.monotonic()))
                                actuators.append(add_actuator(group))
                                kind_next = "streams"
                            next_kill = now + args.kill_every
                        died = [p for p in group.procs if not p.alive() and p.returncode() not in (-9, None)]
                        if died:
                            raise RuntimeError(f"{died[0].name} died (code {died[0].returncode()}):\n{died[0].tail()}")
                        status.update(f"chaos: {now - t_start:.0f}/{args.duration:.0f}s, {len(kills)} kills, "
                                      f"{sum(len(v) for v in fuzz_sent.values())} fuzzed, "
                                      f"{sim.faults.snapshot()['total']} API faults")
                        await asyncio.sleep(max(0.0, args.pace - (time.monotonic() - step0)))
                    results["api_faults"] = dict(sim.faults.injected)
                    sim.faults.configure({})
                    # drain: a few more clock steps without faults, then wait until nothing new arrives
                    status.update("draining…")
                    for _ in range(10):
                        await sim.advance(args.tick)
                        await asyncio.sleep(args.pace)
                    await producer.flush()
                    deadline = time.monotonic() + 45
                    while time.monotonic() < deadline:
                        lost_now = [k for k in obs.scrapes if k not in obs.summaries]
                        if not lost_now and time.monotonic() - obs.last_at > 3:
                            break
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(2)
            finally:
                await producer.stop()
                stop_obs.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(observer, 10)
            survivors_dead = [p.name for p in group.procs if not p.alive() and p.returncode() != -9]
        guard.detach()
        evictions = c.counters["evictions"] - evictions_before

    for k in kills:
        k.recovery_s = _recovery(k, obs)
    # fuzz accounting: valid ones processed (distinct), invalid ones dead-lettered (distinct by sha)
    dead_fuzz = Counter()
    dead_reasons = Counter()
    dead_sha: dict[str, set[str]] = defaultdict(set)
    for dl in obs.deadletters:
        if dl.origin_key_b64 and base64.b64decode(dl.origin_key_b64) == FUZZ_KEY:
            dead_sha[dl.origin_topic].add(f"{dl.origin_partition}@{dl.origin_offset}")
            dead_reasons[dl.reason] += 1
    processed_fuzz = Counter()
    produced_fuzz = Counter()
    answered = {a.decision_id for _, a in obs.actions}
    for t, raws in fuzz_sent.items():
        produced_fuzz[t] = len(raws)
        for raw in raws:
            fid = _fuzz_id(t, raw)
            if fid is None:
                continue
            if t == T.CLUSTER_METRICS:
                node, ts = fid.split("@")
                ok = bool(obs.summaries.get((node, float(ts))))
            elif t == T.CLUSTER_EVENTS:
                ok = fid in obs.events_forwarded
            else:
                ok = fid in answered
            processed_fuzz[t] += ok
        dead_fuzz[t] = len(dead_sha[t])
    fuzz_lost = {t: produced_fuzz[t] - processed_fuzz[t] - dead_fuzz[t] for t in FUZZ_TOPICS}
    scrapes_lost = [k for k in obs.scrapes if not k[0].startswith("chaos-fuzz") and k not in obs.summaries]
    real_scrapes = [k for k in obs.scrapes if not k[0].startswith("chaos-fuzz")]
    twice_scrapes = sum(1 for k in real_scrapes if len(obs.summaries.get(k, [])) > 1)
    applied = Counter(a.decision_id for _, a in obs.actions if a.outcome == "applied")
    rec = [k.recovery_s for k in kills if k.recovery_s is not None]
    results.update({
        "duration_s": args.duration,
        "api_faults_total": sum(v for k, v in results["api_faults"].items() if not k.startswith("error_")),
        "kills": {"streams": sum(k.kind == "streams" for k in kills),
                  "actuator": sum(k.kind == "actuator" for k in kills)},
        "fuzz": {"produced": sum(produced_fuzz.values()), "processed": sum(processed_fuzz.values()),
                 "dead_lettered": sum(dead_fuzz.values()), "lost": sum(max(0, v) for v in fuzz_lost.values()),
                 "by_topic": {t: {"produced": produced_fuzz[t], "processed": processed_fuzz[t],
                                  "dead_lettered": dead_fuzz[t]} for t in FUZZ_TOPICS},
                 "dead_letter_reasons": dict(dead_reasons)},
        "scrapes": {"produced": len(real_scrapes), "lost": len(scrapes_lost), "processed_twice": twice_scrapes,
                    "lost_detail": [{"node": n, "ts": ts, "seen_at_s": round(obs.scrapes[(n, ts)] - t_start, 2)}
                                    for n, ts in sorted(scrapes_lost)[:20]]},
        "kills_at_s": [round(k.at - t_start, 2) for k in kills],
        "records_lost": len(scrapes_lost) + sum(max(0, v) for v in fuzz_lost.values()),
        "pipeline_dead_letters": dict(Counter(f"{dl.origin_topic}:{dl.reason}" for dl in obs.deadletters
                                              if not dl.origin_key_b64
                                              or base64.b64decode(dl.origin_key_b64) != FUZZ_KEY)),
        "decisions": len(obs.decisions), "actions": len(obs.actions), "applied": sum(applied.values()),
        "applied_evictions": sum(1 for _, a in obs.actions if a.outcome == "applied" and a.action == "evict"),
        "applied_twice": sum(1 for n in applied.values() if n > 1),
        "evictions_kubesim": evictions,
        "pdb_violations": len(violations), "pdb_violation_details": violations[:10],
        "recovery_s": {"p50": _pctl(rec, 50), "max": max(rec) if rec else None,
                       "each": [{"kind": k.kind, "s": None if k.recovery_s is None else round(k.recovery_s, 2)}
                                for k in kills]},
        "workers_died": survivors_dead,
    })
    return results


def _table(res: dict[str, Any]) -> Any:
    from rich.table import Table

    def s(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} s"

    t = Table(title=f"kubetide chaos — {res['duration_s']:.0f} s of faults on the whole pipeline")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("detail")
    api = res["api_faults"]
    t.add_row("faults injected: API", str(res["api_faults_total"]),
              ", ".join(f"{k} {v}" for k, v in sorted(api.items()) if not k.startswith("error_")) or "none")
    t.add_row("faults injected: worker kills (SIGKILL)", str(sum(res["kills"].values())),
              f"stream workers {res['kills']['streams']}, actuators {res['kills']['actuator']}")
    fz = res["fuzz"]
    t.add_row("inputs fuzzed", str(fz["produced"]),
              f"processed {fz['processed']}, dead-lettered {fz['dead_lettered']} ("
              + ", ".join(f"{k} {v}" for k, v in sorted(fz["dead_letter_reasons"].items())) + ")")
    sc = res["scrapes"]
    t.add_row("records lost", str(res["records_lost"]),
              f"node scrapes {sc['lost']} of {sc['produced']}; fuzzed inputs unaccounted {fz['lost']}")
    t.add_row("records processed twice (at-least-once)", str(sc["processed_twice"]), "node scrapes after a kill")
    pdl = res["pipeline_dead_letters"]
    t.add_row("dead letters of the pipeline's own records", str(sum(pdl.values())),
              ", ".join(f"{k} {v}" for k, v in sorted(pdl.items())) or "none")
    t.add_row("actions applied twice", str(res["applied_twice"]),
              f"{res['applied']} applied of {res['actions']} outcomes for {res['decisions']} decisions; "
              f"kubesim evictions {res['evictions_kubesim']}")
    t.add_row("PDB violations", str(res["pdb_violations"]), "; ".join(res["pdb_violation_details"][:2]))
    rec = res["recovery_s"]
    t.add_row("recovery time p50 / max", f"{s(rec['p50'])} / {s(rec['max'])}",
              ", ".join(f"{e['kind']} {s(e['s'])}" for e in rec["each"]) or "no kills")
    return t


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kubetide.broker import EmbeddedBroker
    from kubetide.kafka import ensure_topics
    from kubetide.log import setup_logging

    setup_logging(args.log_level)
    console = Console(width=None if sys.stdout.isatty() else 140)
    for name in ("error_rate", "slow_rate", "drop_watch_rate", "conflict_rate", "lost_response_rate"):
        if not 0 <= getattr(args, name) <= 1:
            console.print(f"[red]kubetide chaos:[/red] --{name.replace('_', '-')} must be in [0, 1]")
            return 2
    if args.duration <= 0 or args.pace <= 0 or args.tick <= 0 or args.kill_every < 0 or args.fuzz < 0:
        console.print("[red]kubetide chaos:[/red] --duration, --pace and --tick must be > 0; "
                      "--kill-every and --fuzz >= 0")
        return 2
    run_dir = Path(args.run_dir).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    broker = EmbeddedBroker(log_file=str(run_dir / "broker.log"))
    try:
        broker.start()
        asyncio.run(ensure_topics(broker.bootstrap, T.TOPICS))
        res = asyncio.run(_chaos(args, broker.bootstrap, run_dir, console))
    except KeyboardInterrupt:
        console.print("interrupted: everything started was stopped")
        return 130
    except Exception as exc:
        console.print(f"[red]chaos run failed:[/red] {exc}")
        log.debug("chaos failure", exc_info=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(Exception):
            broker.stop()
    console.print(_table(res))
    console.print(f"logs in {run_dir}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2, default=str))
    ok = res["records_lost"] == 0 and res["applied_twice"] == 0 and res["pdb_violations"] == 0 \
        and not res["workers_died"]
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetide chaos", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
