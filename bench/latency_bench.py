"""Decision latency of one real ``kubetide streams`` worker: sample event time → decision on the topic.

    python bench/latency_bench.py [--quick] [--json] [--seconds S] [--rate SAMPLES_PER_S]

Event time is made to equal wall time: every scrape round is stamped ``ts = time.time()`` when it is
produced, so a decision's ``made_at`` (the event time of the tick it was planned at) is the wall time
its input samples were produced. The latency of a decision is ``arrival wall time − made_at``, read by
a plain consumer of ``decisions.deschedule`` on the same machine (one clock).

Set-up: ``NODES`` nodes with 100 pods each (Node and Pod events first, so the planner knows them),
then one scrape round of every node every ``NODES*100/rate`` seconds (default 10,000 pod-samples/s
offered). Each round one node is hot (90 % CPU, rotating round-robin), the others at 25 %; the worker's
``LowNodeLoad`` is configured with ``consecutive: 1`` and no node/pod cooldown so that *every* round
yields one decision (the tick completes when the last node of the round has reported). Percentiles are
over all decisions of the run. ``stage_medians`` splits the latency with the Kafka CreateTime of the
worker's records: sample → last node summary of the tick written by ``split-metrics`` → decision
written by the planner → read here. The anti-thrash guard (``streams.guard``) is opened up in the config and
each node's pods live in their own namespace; where the running worker does not yet pass the guard
settings to its planner, the default guard (30 decisions per hour of event time, 10 per namespace)
caps the number of decisions — so the hot node rotation only runs in the last 8 s of the load (the
same load, but decisions sampled in steady state rather than in the first seconds). Target: p99 ≤ 1 s.
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

import orjson
from common import GiB, Streams, create_topics, load, median, metrics_payload, new_broker, percentile, report

from kubetide import models as m
from kubetide import topics
from kubetide.codec import decode, encode
from kubetide.kafka import gapless_getmany

NODES = 20
HOT_S = 8.0
DRAIN_S = 40.0
PODS = 100
APPS = 10  # per node, as in stream_bench; each node's apps are its own workloads (guard: per-workload limits)
CONFIG = """\
streams:
  strategies:
    LowNodeLoad: {mode: absolute, consecutive: 1, node_cooldown_s: 0, pod_cooldown_s: 0,
                  high_cpu_pct: 80, low_cpu_pct: 50}
  guard: {max_per_node: 100000, max_per_namespace: 100000, max_per_workload: 100000, max_total: 100000,
          pod_cooldown_s: 0, workload_cooldown_s: 0, backoff_base_s: 0, keep_apart_s: 0}
"""


def node_name(n: int) -> str:
    return f"lat-node-{n:02d}"


def pods_of(n: int) -> list[tuple[str, str, str]]:
    return [(f"ns{n}", f"n{n}-app{i % APPS}-{i}", f"n{n}-app{i % APPS}") for i in range(PODS)]


def events(ts: float) -> list[m.ClusterEvent]:
    out = []
    for n in range(NODES):
        out.append(m.ClusterEvent(ts=ts, type="ADDED", kind="Node", name=node_name(n),
                                  node=m.NodeSnapshot(zone=f"z{n % 3}", allocatable=m.Resources(
                                      cpu_cores=8.0, mem_bytes=64 * GiB))))
    for n in range(NODES):
        for ns, name, app in pods_of(n):
            out.append(m.ClusterEvent(
                ts=ts, type="ADDED", kind="Pod", namespace=ns, name=name, uid=f"uid-{name}",
                pod=m.PodSnapshot(node=node_name(n), phase="Running", ready=True, app=app, labels={"app": app},
                                  workload=m.WorkloadRef(namespace=ns, kind="Deployment", name=app),
                                  requests=m.Resources(cpu_cores=0.05, mem_bytes=0.1 * GiB))))
    return out


def round_payloads(ts: float, hot: int) -> list[tuple[bytes, bytes]]:
    out = []
    for n in range(NODES):
        pods = pods_of(n)
        if n == hot:
            cpu = [7.2 / PODS] * PODS  # 90 % of 8 cores
        else:
            cpu = [2.0 / PODS] * PODS  # 25 %
        out.append((node_name(n).encode(), metrics_payload(ts, node_name(n), pods, cpu, [0.2 * GiB] * PODS,
                                                           node_cpu=sum(cpu), alloc_cpu=8.0, zone=f"z{n % 3}")))
    return out


async def drive(bootstrap: str, worker: Streams, seconds: float, rate: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from kubetide.kafka import producer_config

    prod = AIOKafkaProducer(**producer_config(bootstrap, True, linger_ms=0))
    await prod.start()
    cons = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                            auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await cons.start()
    tps = [TopicPartition(topics.DECISIONS_DESCHEDULE, p)
           for p in range(topics.spec(topics.DECISIONS_DESCHEDULE).partitions)]
    tps.append(TopicPartition(topics.PLANNER_INPUT, 0))
    cons.assign(tps)
    await cons.seek_to_beginning(*tps)
    lat: list[float] = []
    # stage times: when split-metrics wrote the last node summary of a tick, when the planner wrote
    # the decision (Kafka CreateTime of each record, set by the worker's producer)
    last_summary: dict[float, float] = {}
    stages: list[tuple[float, float, float]] = []
    rounds = hot_rounds = 0
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            batch = await gapless_getmany(cons, timeout_ms=50)
            now = time.time()
            for tp, recs in batch.items():
                for r in recs:
                    if tp.topic == topics.PLANNER_INPUT:
                        pi = orjson.loads(r.value)
                        if pi.get("kind") == "node":
                            t = pi["ts"]
                            last_summary[t] = max(last_summary.get(t, 0.0), r.timestamp / 1000.0)
                        continue
                    d = decode(topics.DECISIONS_DESCHEDULE, r.value)
                    assert isinstance(d, m.DescheduleDecision)
                    if d.made_at >= t_begin:
                        lat.append(now - d.made_at)
                        split_done = last_summary.get(d.made_at, float("nan"))
                        stages.append((split_done - d.made_at, r.timestamp / 1000.0 - split_done,
                                       now - r.timestamp / 1000.0))

    try:
        evs = events(time.time() - 5)
        for ev in evs:
            await prod.send(topics.CLUSTER_EVENTS, encode(ev), key=ev.key.encode())
        await prod.flush()
        deadline = time.monotonic() + 60
        n_pods = NODES * PODS
        while (worker.counter("kubetide_messages_consumed_total", topic=topics.PLANNER_INPUT) < len(evs)
               or worker.counter("kubetide_messages_consumed_total", topic=topics.APP_SAMPLES) < n_pods):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the planner did not get the events:\n{worker.proc.tail(30)}")
            await asyncio.sleep(0.2)
        interval = NODES * PODS / rate
        t_begin = time.time()
        task = asyncio.create_task(reader())
        t_next = time.monotonic()
        end = t_next + seconds
        while time.monotonic() < end:
            ts = time.time()
            # hot nodes only in the last HOT_S seconds: the guard allows ~30 decisions per event-time hour,
            # so decisions are sampled at steady load, not in the first seconds
            hot = rounds % NODES if time.monotonic() >= end - HOT_S else -1
            hot_rounds += hot >= 0
            for k, v in round_payloads(ts, hot):
                await prod.send(topics.CLUSTER_METRICS, v, key=k)
            await prod.flush()
            rounds += 1
            t_next += interval
            await asyncio.sleep(max(0.0, t_next - time.monotonic()))
        offered_s = time.monotonic() - (end - seconds)
        backlog = rounds * NODES - worker.counter("kubetide_messages_consumed_total", topic=topics.CLUSTER_METRICS)
        expect = min(hot_rounds, 30)  # the default guard allows 30 decisions per hour of event time
        deadline = time.monotonic() + DRAIN_S
        while len(lat) < expect and time.monotonic() < deadline:  # a saturated worker drains its backlog
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        stop.set()
        await task
    finally:
        await cons.stop()
        await prod.stop()
    return {"rounds": rounds, "offered_samples_per_s": round(rounds * NODES * PODS / offered_s), "latencies": lat,
            "backlog_msgs_at_end_of_load": int(backlog), "hot_rounds": hot_rounds,
            "stages": stages}


def run(seconds: float, rate: float, workdir: Path | None = None, fetch_wait_ms: int | None = None) -> dict[str, Any]:
    work = Path(workdir or tempfile.mkdtemp(prefix="kt-latency-bench-"))
    broker = new_broker(work)
    worker = None
    try:
        asyncio.run(create_topics(broker.bootstrap))
        cfg = work / "kubetide.yaml"
        cfg.write_text(CONFIG)
        worker = Streams(broker.bootstrap, work, config=cfg, fetch_wait_ms=fetch_wait_ms).start()
        res = asyncio.run(drive(broker.bootstrap, worker, seconds, rate))
        lat = sorted(res.pop("latencies"))
        st = res.pop("stages")
        stage_med = {name: round(median(x[i] for x in st if x[i] == x[i]), 4)
                     for i, name in enumerate(("to_last_summary_s", "summary_to_decision_s", "decision_to_reader_s"))}
        p99 = percentile(lat, 99)
        return {
            "bench": "latency",
            "offered_samples_per_s": res["offered_samples_per_s"],
            "rounds": res["rounds"], "hot_rounds": res["hot_rounds"], "decisions": len(lat),
            "backlog_msgs_at_end_of_load": res["backlog_msgs_at_end_of_load"],
            "p50_s": round(percentile(lat, 50), 4), "p90_s": round(percentile(lat, 90), 4),
            "p99_s": round(p99, 4), "max_s": round(lat[-1], 4) if lat else None,
            "stage_medians": stage_med,
            "target_p99_1s_met": bool(lat) and p99 <= 1.0,
            "loadavg": load(),
        }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20 s of load (< 60 s in all)")
    p.add_argument("--smoke", action="store_true", help="5 s of load (tests)")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--rate", type=float, default=10_000.0, help="pod-samples/s offered (default 10,000)")
    p.add_argument("--fetch-wait-ms", type=int, default=None,
                   help="experiment: cap the worker consumer's fetch_max_wait_ms (faust hard-codes 1500)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    secs = a.seconds or (5.0 if a.smoke else 20.0 if a.quick else 60.0)
    res = run(secs, a.rate, fetch_wait_ms=a.fetch_wait_ms)
    if a.fetch_wait_ms is not None:
        res["fetch_max_wait_ms"] = a.fetch_wait_ms
    report(res, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
