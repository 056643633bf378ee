"""Resident memory of one ``kubetide streams`` worker holding the profiles of 100,000 pods / 5,000 apps.

    python bench/memory_bench.py [--quick] [--json] [--pods N] [--apps A] [--rounds R]

A fresh embedded broker; the worker starts first and its idle VmRSS is read (same-run reference).
Then ``pods / 100`` nodes each send ``rounds`` node scrapes of 100 distinct pods from 5 apps per node
(20 pods of each app on its node: ``apps`` distinct apps in all). Once the worker has consumed every
``cluster.metrics`` message and every per-app slice (so
every app has a profile state, a table entry and an emitted profile, every node an interference
state, and the planner a summary of every node), ``/proc/PID/status`` VmRSS (and VmHWM, the peak)
is read. Target: ≤ 1.5 GB.

``--quick`` feeds 1 round of the full 100,000 pods / 5,000 apps; the default feeds 3.
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

from common import Streams, create_topics, fleet_payloads, load, new_broker, produce, report, rss_bytes

from kubetide import topics

PODS_PER_NODE = 100
APPS_PER_NODE = 5
MB = 1024 * 1024


def vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def run(pods: int, apps: int, rounds: int, workdir: Path | None = None) -> dict[str, Any]:
    work = Path(workdir or tempfile.mkdtemp(prefix="kt-memory-bench-"))
    broker = new_broker(work)
    worker = None
    try:
        asyncio.run(create_topics(broker.bootstrap))
        worker = Streams(broker.bootstrap, work).start()
        time.sleep(1.0)
        idle = rss_bytes(worker.pid)
        nodes = max(1, pods // PODS_PER_NODE)
        t0 = 1_900_000_000.0
        n_msgs = n_slices = 0
        t_feed = time.monotonic()
        for r in range(rounds):  # one round at a time: bounded memory on the producing side
            pairs = fleet_payloads(nodes, PODS_PER_NODE, apps, 1, t0=t0 + 10.0 * r, apps_per_node=APPS_PER_NODE)
            asyncio.run(produce(broker.bootstrap, topics.CLUSTER_METRICS, pairs))
            n_msgs += len(pairs)
            n_slices += len(pairs) * APPS_PER_NODE
        deadline = time.monotonic() + max(120.0, n_msgs / 20.0)
        peak = idle
        while True:
            peak = max(peak, rss_bytes(worker.pid))
            cm = worker.counter("kubetide_messages_consumed_total", topic=topics.CLUSTER_METRICS)
            # app-samples messages carry batches of per-app slices: count the slices profiled
            cs = worker.counter("kubetide_streams_app_slices_total")
            if cm >= n_msgs and cs >= n_slices:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker consumed {cm}/{n_msgs} messages, {cs}/{n_slices} slices in time:\n"
                                   f"{worker.proc.tail(20)}")
            time.sleep(0.5)
        feed_s = time.monotonic() - t_feed
        time.sleep(2.0)  # let the last profile/table writes settle
        rss = rss_bytes(worker.pid)
        hwm = vm(worker.pid, "VmHWM")
        profiled = worker.counter("kubetide_streams_profiled_apps")
        return {
            "bench": "memory",
            "pods": nodes * PODS_PER_NODE, "apps": min(apps, nodes * APPS_PER_NODE), "nodes": nodes,
            "rounds": rounds, "messages": n_msgs, "app_slices": n_slices, "feed_and_drain_s": round(feed_s, 1),
            "profiled_apps_gauge": profiled,
            "idle_rss_mb": round(idle / MB, 1), "rss_mb": round(rss / MB, 1), "peak_rss_mb": round(hwm / MB, 1),
            "rss_per_pod_kb": round((rss - idle) / max(1, nodes * PODS_PER_NODE) / 1024, 2),
            "target_1.5GB_met": rss <= 1.5 * 1024 * MB and hwm <= 1.5 * 1024 * MB,
            "loadavg": load(),
        }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round of 100,000 pods / 5,000 apps")
    p.add_argument("--smoke", action="store_true", help="2,000 pods / 100 apps, 1 round (tests)")
    p.add_argument("--pods", type=int, default=None)
    p.add_argument("--apps", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    pods = a.pods or (2_000 if a.smoke else 100_000)
    apps = a.apps or (100 if a.smoke else 5_000)
    rounds = a.rounds or (1 if a.smoke or a.quick else 3)
    report(run(pods, apps, rounds), a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
