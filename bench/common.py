"""Shared helpers of the process-level benches (stream, latency, actuator, memory).

- :func:`load` / :func:`header`: the machine's load average, printed with every result (the
  benches run on a shared 2-core machine; ratios against a same-run baseline cancel most noise).
- :func:`fleet_payloads`: node-batched ``cluster.metrics`` messages (one node scrape, ``pods``
  columnar pod samples), encoded straight to JSON bytes (no pydantic on the producing side).
- :func:`produce`: pre-produce ``(key, value)`` pairs with one aiokafka producer.
- :func:`start_streams`: the real ``kubetide streams`` worker as a child process, waited on until
  its ready file appears; :func:`scrape` reads one counter from its Prometheus ``/metrics``.
- :func:`report`: print a result as ``key: value`` lines, or one JSON object with ``--json``.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kubetide.broker import EmbeddedBroker, free_port  # noqa: E402
from kubetide.kafka import gapless_getmany  # noqa: E402
from kubetide.procs import ManagedProcess, kubetide_argv  # noqa: E402

GiB = float(1 << 30)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return float(s[k])


def report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)
        return
    print(f"== {result.get('bench')} ==")
    for k, v in result.items():
        if k == "bench":
            continue
        if isinstance(v, float):
            v = f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        print(f"  {k}: {v}")
    sys.stdout.flush()


# ---------------------------------------------------------------- messages

def metrics_payload(ts: float, node: str, pods: Sequence[tuple[str, str, str]], cpu: Sequence[float],
                    mem: Sequence[float], *, node_cpu: float = 4.0, alloc_cpu: float = 8.0,
                    zone: str = "z1", window_s: float = 10.0) -> bytes:
    """One ``cluster.metrics`` v1 message; ``pods`` = (namespace, name, app) per pod."""
    return orjson.dumps({
        "schema": {"name": "cluster.metrics", "version": 1},
        "ts": float(ts), "node": node, "zone": zone, "window_s": float(window_s),
        "node_usage": {"cpu_cores": float(node_cpu), "mem_bytes": 16 * GiB},
        "node_allocatable": {"cpu_cores": float(alloc_cpu), "mem_bytes": 64 * GiB},
        "pods": {"namespace": [p[0] for p in pods], "name": [p[1] for p in pods], "app": [p[2] for p in pods],
                 "cpu_cores": [float(x) for x in cpu], "mem_bytes": [float(x) for x in mem]},
    })


def fleet_layout(nodes: int, pods_per_node: int, apps: int,
                 apps_per_node: int = 10) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``nodes`` nodes with ``pods_per_node`` distinct pods each, from ``apps_per_node`` apps per node:
    pod i of node n is of app (n*A + i % A) % apps, so there are ``nodes * pods_per_node`` distinct pods
    and ``min(apps, nodes*A)`` distinct apps."""
    out = []
    for n in range(nodes):
        pods = []
        for i in range(pods_per_node):
            a = (n * apps_per_node + i % apps_per_node) % apps
            pods.append((f"ns{a % 10}", f"app{a}-n{n}-p{i}", f"app{a}"))
        out.append((f"node-{n:05d}", pods))
    return out


def fleet_payloads(nodes: int, pods_per_node: int, apps: int, scrapes: int, t0: float,
                   step: float = 10.0, apps_per_node: int = 10) -> list[tuple[bytes, bytes]]:
    import numpy as np

    rng = np.random.default_rng(0)
    layout = fleet_layout(nodes, pods_per_node, apps, apps_per_node)
    out = []
    for s in range(scrapes):
        for node, pods in layout:
            cpu = rng.gamma(2.0, 0.05, len(pods)).round(4).tolist()
            mem = (rng.uniform(0.1, 0.5, len(pods)) * GiB).round().tolist()
            out.append((node.encode(), metrics_payload(t0 + s * step, node, pods, cpu, mem,
                                                       node_cpu=float(sum(cpu)))))
    return out


async def produce(bootstrap: str, topic: str, pairs: Sequence[tuple[bytes, bytes]]) -> float:
    """Send every (key, value) and wait for all acks; returns the seconds it took."""
    from aiokafka import AIOKafkaProducer

    from kubetide.kafka import producer_config

    prod = AIOKafkaProducer(**producer_config(bootstrap, True, linger_ms=20))
    await prod.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for k, v in pairs:
            pending.append(await prod.send(topic, v, key=k))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await prod.stop()
    return time.perf_counter() - t0


async def create_topics(bootstrap: str) -> None:
    from kubetide.kafka import ensure_topics
    from kubetide.topics import TOPICS

    await ensure_topics(bootstrap, TOPICS)


def new_broker(workdir: Path) -> EmbeddedBroker:
    b = EmbeddedBroker(log_file=workdir / "broker.log")
    b.start()
    return b


# ---------------------------------------------------------------- the stream worker

_FETCH_WAIT_LAUNCHER = """\
import sys, aiokafka
_init = aiokafka.AIOKafkaConsumer.__init__
def _patched(self, *a, **kw):
    kw["fetch_max_wait_ms"] = min(kw.get("fetch_max_wait_ms", 500), {ms})
    _init(self, *a, **kw)
aiokafka.AIOKafkaConsumer.__init__ = _patched
from kubetide.cli import main
sys.exit(main())
"""


class Streams:
    """A ``kubetide streams`` worker process with a ready file and a Prometheus port."""

    def __init__(self, bootstrap: str, workdir: Path, name: str = "streams", *, app_id: str = "kubetide-streams",
                 config: Path | None = None, extra: Sequence[str] = (), wrap: Sequence[str] = (),
                 fetch_wait_ms: int | None = None) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ready = self.dir / "ready.json"
        self.metrics_port = free_port()
        self.web_port = free_port()
        base = kubetide_argv("streams")
        if fetch_wait_ms is not None:  # experiment: faust hard-codes fetch_max_wait_ms=1500 for its consumer
            base = [sys.executable, "-c", _FETCH_WAIT_LAUNCHER.format(ms=int(fetch_wait_ms)), "streams"]
        argv = [*base, "--bootstrap-servers", bootstrap, "--web-port", str(self.web_port),
                             "--data-dir", str(self.dir / "data"), "--ready-file", str(self.ready),
                             "--metrics-port", str(self.metrics_port), "--app-id", app_id,
                             "--worker-id", name, "--embedded", "--log-level", "INFO", *extra]
        if config is not None:
            argv += ["--config", str(config)]
        self.proc = ManagedProcess(name, [*wrap, *argv], self.dir / "worker.log", cwd=str(ROOT))
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 60.0) -> Streams:
        self.proc.start()
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> Streams:
        t0 = time.monotonic()
        while not self.ready.exists():
            if not self.proc.alive():
                raise RuntimeError(f"streams worker died:\n{self.proc.tail(40)}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"streams worker not ready after {timeout:.0f}s:\n{self.proc.tail(40)}")
            time.sleep(0.05)
        self.info = orjson.loads(self.ready.read_bytes())
        return self

    @property
    def pid(self) -> int:
        return int(self.info.get("pid") or self.proc.pid or 0)

    def counter(self, name: str, **labels: str) -> float:
        return scrape(self.metrics_port, name, **labels)

    def stop(self) -> None:
        self.proc.stop(grace_s=5)


def scrape(port: int, name: str, **labels: str) -> float:
    """Sum of the samples of metric ``name`` whose labels include ``labels`` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    pat = re.compile(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)$", re.M)
    for m in pat.finditer(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# ---------------------------------------------------------------- two workers: who holds what

async def group_assignments(bootstrap: str, group: str) -> dict[str, dict[str, list[int]]]:
    """{member client id/host: {topic: [partitions]}} from DescribeGroups (the broker's view)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    out: dict[str, dict[str, list[int]]] = {}
    for r in resp:
        for g in r.to_object()["groups"]:
            for mem in g["members"]:
                raw = mem["member_assignment"]
                if not raw:  # mid-rebalance (or a broker that does not report it)
                    out[mem["member_id"]] = {}
                    continue
                a = ConsumerProtocolMemberAssignment.decode(raw)
                out[mem["member_id"]] = {t: sorted(ps) for t, ps in a.assignment}
    return out


async def partition_counts(bootstrap: str, topic: str, partitions: int, expect: int) -> dict[int, int]:
    """Records per partition of ``topic`` (read from the beginning until ``expect`` records were seen)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        counts = dict.fromkeys(range(partitions), 0)
        deadline = time.monotonic() + 30
        while sum(counts.values()) < expect and time.monotonic() < deadline:
            for tp, recs in (await gapless_getmany(c, timeout_ms=300)).items():
                counts[tp.partition] += len(recs)
        return counts
    finally:
        await c.stop()


def router(worker: Streams, path: str = "/router/topics") -> dict[str, dict[str, list[int]]]:
    """faust's own view of the group's assignment (``/router/topics``: source topics; ``/router/``:
    table changelogs), keyed by each worker's web URL."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=5) as resp:
        return orjson.loads(resp.read())


def two_worker_split(workdir: Path, nodes: int = 40, scrapes: int = 3) -> dict[str, Any]:
    """Start two ``kubetide streams`` workers in one group, feed them, and show who holds what.

    Assignment: faust's web ``/router/topics`` (source partitions) and ``/router/`` (table changelog
    partitions = where table state lives) of each worker. (The broker's DescribeGroups lists both
    members, but Tansu 0.6.0 returns an empty ``member_assignment`` for each.) Cross-check: each
    worker's Prometheus counters say how many records it consumed per topic; they must equal the
    records in the partitions it was assigned, and each worker's profiled-apps gauge is the
    number of apps whose profile state it holds.
    """
    from kubetide import topics as T

    broker = new_broker(workdir)
    workers: list[Streams] = []
    try:
        asyncio.run(create_topics(broker.bootstrap))
        workers = [Streams(broker.bootstrap, workdir, f"worker-{i}") for i in (1, 2)]
        for w in workers:
            w.proc.start()
        for w in workers:
            w.wait_ready()
        want = {T.CLUSTER_METRICS: 8, T.APP_SAMPLES: 8, T.PLANNER_INPUT: 1, T.CLUSTER_EVENTS: 8}
        deadline = time.monotonic() + 60
        while True:  # until the group has settled: two members covering every source partition
            topo = router(workers[0])
            cover = {t: sorted(p for a in topo.values() for p in a.get(t, [])) for t in want}
            if len([h for h, a in topo.items() if any(a.get(t) for t in want)]) == 2 and all(
                    len(cover[t]) == n for t, n in want.items()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"group did not settle: {topo}")
            time.sleep(0.5)
        pairs = fleet_payloads(nodes, 100, nodes * 10, scrapes, t0=1_900_000_000.0)
        asyncio.run(produce(broker.bootstrap, T.CLUSTER_METRICS, pairs))
        n_slices = len(pairs) * 10  # per-app slices; split-metrics batches them per app-samples partition
        deadline = time.monotonic() + 90
        while True:
            cm = sum(w.counter("kubetide_messages_consumed_total", topic=T.CLUSTER_METRICS) for w in workers)
            cs = sum(w.counter("kubetide_streams_app_slices_total") for w in workers)
            if cm >= len(pairs) and cs >= n_slices:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumed {cm}/{len(pairs)} messages, {cs}/{n_slices} slices")
            time.sleep(0.5)
        n_batches = int(sum(w.counter("kubetide_messages_consumed_total", topic=T.APP_SAMPLES) for w in workers))
        per_part = {t: asyncio.run(partition_counts(broker.bootstrap, t, n, e))
                    for t, n, e in ((T.CLUSTER_METRICS, 8, len(pairs)), (T.APP_SAMPLES, 8, n_batches))}
        topo = router(workers[0])
        tables = router(workers[0], "/router/")
        members = asyncio.run(group_assignments(broker.bootstrap, "kubetide-streams"))
        rows = []
        for w in workers:
            url = f"http://127.0.0.1:{w.web_port}"
            mine = {t: ps for t, ps in topo.get(url, {}).items() if ps and "__assignor" not in t}
            got = {t: int(w.counter("kubetide_messages_consumed_total", topic=t)) for t in per_part}
            expected = {t: sum(per_part[t][p] for p in mine.get(t, [])) for t in per_part}
            rows.append({
                "worker": w.proc.name, "pid": w.pid, "web": url, "partitions": mine,
                "table_changelog_partitions": tables.get(url, {}),
                "consumed": got, "records_in_its_partitions": expected, "counts_match": got == expected,
                "profiled_apps": int(w.counter("kubetide_streams_profiled_apps")),
                "runs_the_planner": bool(mine.get(T.PLANNER_INPUT)),
            })
        return {"bench": "two-workers", "nodes": nodes, "messages": len(pairs), "apps": nodes * 10,
                "records_per_partition": {t: {str(p): n for p, n in c.items()} for t, c in per_part.items()},
                "workers": rows,
                "apps_split": [r["profiled_apps"] for r in rows],
                "disjoint": all(not (set(rows[0]["partitions"].get(t, [])) & set(rows[1]["partitions"].get(t, [])))
                                for t in want),
                "describe_groups_members": len(members),
                "describe_groups_assignments_empty": all(not a for a in members.values()),
                "loadavg": load()}
    finally:
        for w in workers:
            w.stop()
        broker.stop()


if __name__ == "__main__":  # python bench/common.py two-workers [--nodes N] [--scrapes S]
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="two kubetide streams workers: who holds which partitions")
    ap.add_argument("command", choices=["two-workers"])
    ap.add_argument("--nodes", type=int, default=40)
    ap.add_argument("--scrapes", type=int, default=3)
    ns = ap.parse_args()
    res = two_worker_split(Path(tempfile.mkdtemp(prefix="kt-two-workers-")), nodes=ns.nodes, scrapes=ns.scrapes)
    print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
