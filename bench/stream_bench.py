"""Pod-samples/s through one real ``kubetide streams`` worker, against a raw aiokafka consumer.

    python bench/stream_bench.py [--quick] [--json] [--messages N] [--profile]

A fresh embedded broker; N node-batched ``cluster.metrics`` messages (100 pods each, from 10 apps
per node) are produced **before** the worker starts. Then:

- **baseline** (same run, same messages): a raw ``AIOKafkaConsumer`` assigned every partition
  reads all N messages from the beginning and ``orjson.loads`` each (median of 3 runs);
- **worker**: ``python -m kubetide streams`` starts, and its Prometheus counter
  ``kubetide_messages_consumed_total{topic="cluster.metrics"}`` is polled every 200 ms. The rate is
  the slope between the first poll that shows consumption and the first poll that shows all N
  (start-up is excluded). That counter is ticked by ``split-metrics`` (decode once, node summary
  to the planner, interference update, per-app slices batched per app-samples partition). The
  same worker also runs the ``profiler`` on the repartitioned slices and the ``planner`` on the
  node summaries: the **pipeline** figure is the rate until the profiler has profiled every
  per-app slice (``kubetide_streams_app_slices_total``; the whole backlog drained).

``cpu_ms_per_message`` / ``pipeline_cpu_ms_per_message``: the worker process's CPU time (all
threads) per ``cluster.metrics`` message over the same two intervals — the figure to compare
between runs on a loaded machine, where the rates mostly measure the CPU share the worker got.

``--profile`` runs the worker under ``py-spy record --gil`` (if installed; only the thread holding
the GIL is sampled) and prints the top frames and the inclusive share of the main steps.
Target: worker ≥ 0.5 × baseline and ≥ 100,000 pod-samples/s.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Streams, cpu_seconds, create_topics, fleet_payloads, load, median, new_broker, produce, report

from kubetide import topics

PODS = 100
APPS_PER_NODE = 10


async def raw_consume(bootstrap: str, n: int) -> tuple[float, int]:
    """Seconds to read and decode ``n`` cluster.metrics messages with a bare aiokafka consumer."""
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await c.start()
    try:
        tps = [TopicPartition(topics.CLUSTER_METRICS, p) for p in range(topics.spec(topics.CLUSTER_METRICS).partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got = samples = 0
        t0 = time.perf_counter()
        while got < n:
            batch = await c.getmany(timeout_ms=1000, max_records=10_000)
            for recs in batch.values():
                for r in recs:
                    obj = orjson.loads(r.value)
                    samples += len(obj["pods"]["name"])
                    got += 1
        return time.perf_counter() - t0, samples
    finally:
        await c.stop()


def watch(worker: Streams, n_metrics: int, n_slices: int, timeout: float) -> dict[str, Any]:
    """Poll the worker's counters until every message and every per-app slice was consumed."""
    series: list[tuple[float, float, float, float]] = []
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        t = time.monotonic()
        cm = worker.counter("kubetide_messages_consumed_total", topic=topics.CLUSTER_METRICS)
        # per-app slices profiled (a worker from before the batched repartition: one record per slice)
        cs = max(worker.counter("kubetide_streams_app_slices_total"),
                 worker.counter("kubetide_messages_consumed_total", topic=topics.APP_SAMPLES))
        series.append((t, cm, cs, cpu_seconds(worker.pid)))
        if cm >= n_metrics and cs >= n_slices:
            break
        time.sleep(0.2)  # each scrape costs the worker's GIL a few ms: poll gently
    first = next((s for s in series if s[1] > 0), None)
    done_m = next((s for s in series if s[1] >= n_metrics), None)
    done_s = next((s for s in series if s[2] >= n_slices), None)
    last = series[-1] if series else (0.0, 0.0, 0.0, 0.0)
    out: dict[str, Any] = {"consumed": last[1], "slices_consumed": last[2]}
    if first and done_m and done_m[0] > first[0]:
        out["split_msgs_per_s"] = (done_m[1] - first[1]) / (done_m[0] - first[0])
        # the counter starts counting before the first poll: count the messages before it too
        out["split_s"] = done_m[0] - first[0]
        out["cpu_util"] = (done_m[3] - first[3]) / (done_m[0] - first[0])
        out["cpu_ms_per_message"] = 1000.0 * (done_m[3] - first[3]) / max(1.0, done_m[1] - first[1])
    if first and done_s and done_s[0] > first[0]:
        out["pipeline_s"] = done_s[0] - first[0]
        out["pipeline_msgs_per_s"] = (n_metrics - first[1]) / (done_s[0] - first[0])
        out["pipeline_cpu_util"] = (done_s[3] - first[3]) / (done_s[0] - first[0])
        out["pipeline_cpu_ms_per_message"] = 1000.0 * (done_s[3] - first[3]) / max(1.0, n_metrics - first[1])
    return out


def pyspy_top(raw: Path, limit: int = 25) -> list[str]:
    """Top own-time frames from a py-spy raw (collapsed stack) file."""
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not stack:
            continue
        n = int(cnt)
        total += n
        leaf = stack.split(";")[-1]
        own[leaf] = own.get(leaf, 0) + n
    top = sorted(own.items(), key=lambda kv: -kv[1])[:limit]
    return [f"{100.0 * n / max(1, total):5.1f}%  {frame}" for frame, n in top]


def pyspy_inclusive(raw: Path, needles: list[str]) -> dict[str, float]:
    """Share of samples whose stack contains each needle (inclusive time)."""
    hits = dict.fromkeys(needles, 0)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not stack:
            continue
        n = int(cnt)
        total += n
        for k in needles:
            if k in stack:
                hits[k] += n
    return {k: round(100.0 * v / max(1, total), 1) for k, v in hits.items()}


def run(messages: int, *, repeats: int = 3, profile: bool = False, profile_s: int = 10,
        workdir: Path | None = None, fetch_wait_ms: int | None = None) -> dict[str, Any]:
    work = Path(workdir or tempfile.mkdtemp(prefix="kt-stream-bench-"))
    broker = new_broker(work)
    worker: Streams | None = None
    try:
        asyncio.run(create_topics(broker.bootstrap))
        nodes = max(8, min(200, messages // 10))
        scrapes = -(-messages // nodes)
        pairs = fleet_payloads(nodes, PODS, nodes * APPS_PER_NODE, scrapes, t0=1_900_000_000.0)[:messages]
        n = len(pairs)
        samples = n * PODS
        avg_bytes = sum(len(v) for _, v in pairs) / n
        produce_s = asyncio.run(produce(broker.bootstrap, topics.CLUSTER_METRICS, pairs))
        base_times = []
        for _ in range(repeats):
            secs, got = asyncio.run(raw_consume(broker.bootstrap, n))
            assert got == samples, (got, samples)
            base_times.append(secs)
        base_rate = samples / median(base_times)
        raw = work / "pyspy.txt"
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        worker = Streams(broker.bootstrap, work, config=None, fetch_wait_ms=fetch_wait_ms)
        t_start = time.monotonic()
        worker.proc.start()
        while not worker.ready.exists():
            if not worker.proc.alive():
                raise RuntimeError(f"streams worker died:\n{worker.proc.tail(40)}")
            if time.monotonic() - t_start > 90:
                raise RuntimeError(f"streams worker not ready:\n{worker.proc.tail(40)}")
            time.sleep(0.02)
        ready_s = time.monotonic() - t_start
        spy_proc = None
        if profile and Path(spy).exists():
            # --gil: only the thread holding the GIL is sampled, so a thread waiting for the GIL
            # (aiokafka's socket writes, faust's consumer thread) is not counted as busy
            spy_proc = subprocess.Popen([spy, "record", "--pid", str(worker.proc.pid), "--format", "raw", "--rate",
                                         "100", "--duration", str(profile_s), "--nonblocking", "--gil",
                                         "-o", str(raw)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w = watch(worker, n, n * APPS_PER_NODE, timeout=max(60.0, n / 200.0))
        rate = w.get("split_msgs_per_s", 0.0) * PODS
        pipe = w.get("pipeline_msgs_per_s", 0.0) * PODS
        result: dict[str, Any] = {
            "bench": "stream",
            "messages": n, "pods_per_message": PODS, "avg_message_bytes": round(avg_bytes),
            "produce_msgs_per_s": round(n / produce_s),
            "baseline_samples_per_s": round(base_rate),
            "baseline_runs_s": [round(x, 3) for x in base_times],
            "worker_ready_s": round(ready_s, 2),
            "worker_samples_per_s": round(rate),
            "worker_pipeline_samples_per_s": round(pipe),
            "ratio": round(rate / base_rate, 3) if base_rate else None,
            "pipeline_ratio": round(pipe / base_rate, 3) if base_rate else None,
            "consumed": w.get("consumed"),
            "worker_cpu_util": round(w.get("cpu_util", 0.0), 2),
            "worker_cpu_ms_per_message": round(w.get("cpu_ms_per_message", 0.0), 2),
            "pipeline_cpu_util": round(w.get("pipeline_cpu_util", 0.0), 2),
            "pipeline_cpu_ms_per_message": round(w.get("pipeline_cpu_ms_per_message", 0.0), 2),
            "target_ratio_0.5_met": bool(base_rate and rate / base_rate >= 0.5),
            "target_100k_met": rate >= 100_000,
            "loadavg": load(),
        }
        if spy_proc is not None:
            spy_proc.wait(profile_s + 30)
            if raw.exists():
                result["profile_top_own"] = pyspy_top(raw)
                result["profile_inclusive_pct"] = pyspy_inclusive(raw, [
                    "decode (kubetide/codec.py", "decode_trusted", "model_validate", "slice_dicts",
                    "encode (kubetide/codec.py", "model_dump", "interfere (streams/agents.py",
                    "update (streams/core/interference.py", "split (streams/agents.py",
                    "profiler (streams/agents.py", "profile_message", "to_bytes", "pack_state", "hourly",
                    "planner (streams/agents.py", "send (faust", "_drain", "Sender", "Fetcher", "aiokafka",
                    "generate_latest"])
                result["profile_file"] = str(raw)
        return result
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1,500 messages (< 60 s)")
    p.add_argument("--smoke", action="store_true", help="200 messages, 1 baseline run (tests)")
    p.add_argument("--messages", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="py-spy the worker while it consumes; print the hot frames")
    p.add_argument("--profile-seconds", type=int, default=10)
    p.add_argument("--fetch-wait-ms", type=int, default=None,
                   help="experiment: cap the worker consumer's fetch_max_wait_ms (faust hard-codes 1500)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    n = a.messages or (200 if a.smoke else 1500 if a.quick else 6000)
    res = run(n, repeats=1 if a.smoke else 3, profile=a.profile, profile_s=a.profile_seconds,
              fetch_wait_ms=a.fetch_wait_ms)
    if a.fetch_wait_ms is not None:
        res["fetch_max_wait_ms"] = a.fetch_wait_ms
    report(res, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
