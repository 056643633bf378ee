"""The collector's live view of the cluster: a load-watcher-compatible endpoint and cluster gauges.

Trimaran's scheduler plugins (kubernetes-sigs/scheduler-plugins ``TargetLoadPacking``,
``LoadVariationRiskBalancing``) score nodes by their real usage, read from paypal/load-watcher's
``GET /watcher``. kubetide already has every node's usage (the collector polls metrics.k8s.io),
so the collector can serve the same JSON and a real cluster's scheduler can point its
``watcherAddress`` at it instead of running load-watcher::

    kubetide collector --load-watcher-port 2020     # or $KUBETIDE_LOAD_WATCHER_PORT
    curl http://collector:2020/watcher              # every node
    curl http://collector:2020/watcher?host=node-1  # one node (404 when unknown)

Format (load-watcher's ``WatcherMetrics``)::

    {"timestamp": 1717408800,                       # event time of the newest sample (cluster time, s)
     "window": {"duration": "15m", "start": 1717407900, "end": 1717408800},
     "source": "kubetide",
     "data": {"NodeMetricsMap": {
        "node-1": {"metrics": [
             {"name": "kubetide_node_cpu_usage", "type": "CPU", "operator": "Latest", "rollup": "", "value": 41.5},
             {"name": "kubetide_node_cpu_usage", "type": "CPU", "operator": "AVG", "rollup": "15m", "value": 38.2},
             {"name": "kubetide_node_cpu_usage", "type": "CPU", "operator": "STD", "rollup": "15m", "value": 3.1},
             ... the same three for "type": "Memory" ...],
          "tags": {}, "metadata": {"dataCenter": "zone-a"}}}}}

Values are percentages of the node's **allocatable** CPU / memory (what the plugins multiply
back by allocatable); ``AVG`` / ``STD`` are the mean and population standard deviation of the
samples in the window (event time: the window ends at the newest sample, not at wall time).
Before the first metrics poll the endpoint answers 503 (load-watcher answers 500 then).

:class:`ClusterView` is what the collector feeds after each metrics poll: it keeps the
load-watcher samples and sets the cluster-level Prometheus gauges no planner is needed for
(node CPU usage and spread, node zone/group, node-group nodes / requested / allocatable CPU,
pending pods, replicas running and observed CPU demand per workload).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubetide import metrics
from kubetide.quantity import quantity

log = logging.getLogger("kubetide.loadwatcher")

DEFAULT_PORT = 2020  # load-watcher's own port
SOURCE = "kubetide"
METRIC_NAMES = {"CPU": "kubetide_node_cpu_usage", "Memory": "kubetide_node_memory_usage"}
OPERATORS = ("Latest", "AVG", "STD")


def duration_text(seconds: float) -> str:
    """Go-style short duration as load-watcher writes it: 900 → ``15m``, 90 → ``90s``, 3600 → ``1h``."""
    s = round(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


@dataclass(frozen=True)
class Sample:
    ts: float
    cpu_pct: float
    mem_pct: float


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(max(0.0, sum((v - mean) ** 2 for v in values) / n))


class LoadWatcherCache:
    """Per-node usage samples over an event-time window, rendered as load-watcher JSON (thread-safe)."""

    def __init__(self, window_s: float = 900.0, max_samples: int = 10_000) -> None:
        if window_s <= 0:
            raise ValueError("window_s: must be > 0")
        self.window_s = float(window_s)
        self.max_samples = max_samples
        self._nodes: dict[str, deque[Sample]] = {}
        self._zones: dict[str, str] = {}
        self._lock = threading.Lock()

    def observe(self, node: str, ts: float, cpu_pct: float, mem_pct: float, zone: str | None = None) -> None:
        if not (math.isfinite(ts) and math.isfinite(cpu_pct) and math.isfinite(mem_pct)):
            return
        with self._lock:
            q = self._nodes.setdefault(node, deque(maxlen=self.max_samples))
            if q and ts <= q[-1].ts:
                return  # no news (or out of order): the window only moves forward
            q.append(Sample(ts, cpu_pct, mem_pct))
            self._zones[node] = zone or ""
            while q and q[0].ts < ts - self.window_s:
                q.popleft()

    def retain(self, nodes: Iterable[str]) -> None:
        """Forget nodes not in ``nodes`` (deleted from the cluster)."""
        keep = set(nodes)
        with self._lock:
            for n in [n for n in self._nodes if n not in keep]:
                del self._nodes[n]
                self._zones.pop(n, None)

    def snapshot(self, host: str | None = None) -> dict[str, Any] | None:
        """The ``WatcherMetrics`` document (all nodes, or only ``host``); None before any sample."""
        with self._lock:
            nodes = {n: list(q) for n, q in self._nodes.items() if q}
            zones = dict(self._zones)
        if not nodes:
            return None
        end = max(q[-1].ts for q in nodes.values())
        start = end - self.window_s
        rollup = duration_text(self.window_s)
        if host is not None:
            nodes = {host: nodes[host]} if host in nodes else {}
        out: dict[str, Any] = {}
        for node, samples in sorted(nodes.items()):
            in_window = [s for s in samples if s.ts >= start] or samples[-1:]
            node_metrics = []
            for typ, values in (("CPU", [s.cpu_pct for s in in_window]), ("Memory", [s.mem_pct for s in in_window])):
                mean, std = _mean_std(values)
                for op, value, roll in (("Latest", values[-1], ""), ("AVG", mean, rollup), ("STD", std, rollup)):
                    node_metrics.append({"name": METRIC_NAMES[typ], "type": typ, "operator": op, "rollup": roll,
                                         "value": round(value, 4)})
            out[node] = {"metrics": node_metrics, "tags": {}, "metadata": {"dataCenter": zones.get(node, "")}}
        return {"timestamp": int(end), "window": {"duration": rollup, "start": int(start), "end": int(end)},
                "source": SOURCE, "data": {"NodeMetricsMap": out}}


# ---------------------------------------------------------------- the collector's view

def _snap(ev: Any, field: str) -> Any:
    return getattr(ev, field, None)


class ClusterView:
    """Fed by the collector after each metrics poll (:meth:`update`); keeps :attr:`watcher` and the
    cluster-level gauges of :mod:`kubetide.metrics` equal to the latest poll."""

    def __init__(self, window_s: float = 900.0) -> None:
        self.watcher = LoadWatcherCache(window_s)
        self._usage: dict[str, float] = {}
        self._workloads: set[tuple[str, str]] = set()
        self._groups: set[str] = set()

    def update(self, objects: Mapping[str, Mapping[tuple[str, str], Any]], node_items: list[dict],
               pod_items: list[dict], ts_of: Any = None) -> None:
        """:meth:`refresh`, logging (never raising) any error: the view must not stop a metrics poll."""
        try:
            self.refresh(objects, node_items, pod_items, ts_of)
        except Exception:
            log.warning("cluster view: update failed", exc_info=True)

    def refresh(self, objects: Mapping[str, Mapping[tuple[str, str], Any]], node_items: list[dict],
                pod_items: list[dict], ts_of: Any = None) -> None:
        """``objects``: the collector's ``{kind: {(namespace, name): ClusterEvent}}``; ``node_items`` /
        ``pod_items``: the metrics.k8s.io NodeMetrics / PodMetrics items of this poll. ``ts_of(item)``
        gives an item's event time (default: its ``timestamp`` parsed as RFC 3339)."""
        nodes = {name: ev.node for (_, name), ev in (objects.get("Node") or {}).items() if _snap(ev, "node")}
        pods = {k: ev.pod for k, ev in (objects.get("Pod") or {}).items() if _snap(ev, "pod")}
        deployments = {k: ev.deployment for k, ev in (objects.get("Deployment") or {}).items()
                       if _snap(ev, "deployment")}
        ts_of = ts_of or _item_ts
        for item in node_items:
            try:
                name = (item.get("metadata") or {}).get("name")
                node = nodes.get(name or "")
                if node is None:
                    continue
                usage = item.get("usage") or {}
                cpu, mem = quantity(usage.get("cpu")), quantity(usage.get("memory"))
                alloc_cpu, alloc_mem = node.allocatable.cpu_cores, node.allocatable.mem_bytes
                if alloc_cpu <= 0:
                    continue
                self._usage[name] = cpu / alloc_cpu
                ts = ts_of(item)
                if ts is not None:
                    self.watcher.observe(name, ts, 100.0 * cpu / alloc_cpu,
                                         100.0 * mem / alloc_mem if alloc_mem > 0 else 0.0, node.zone)
            except Exception as exc:  # one bad item never stops the view
                log.debug("load view: unreadable NodeMetrics item: %s", exc)
        for gone in [n for n in self._usage if n not in nodes]:
            del self._usage[gone]
        self.watcher.retain(nodes)
        metrics.set_node_usage(dict(self._usage), {n: (s.zone, s.node_group) for n, s in nodes.items()})
        self._cluster_gauges(nodes, pods, deployments, pod_items)

    def _cluster_gauges(self, nodes: Mapping[str, Any], pods: Mapping[tuple[str, str], Any],
                        deployments: Mapping[tuple[str, str], Any], pod_items: list[dict]) -> None:
        # Node groups: ready nodes, allocatable CPU, CPU requested by their pods and by pending pods
        # that select the group (nodeSelector on a node-group label).
        group_of = {n: (s.node_group or "") for n, s in nodes.items()}
        group_labels = {n: s.labels for n, s in nodes.items()}
        groups: dict[str, dict[str, float]] = {}
        for n, s in nodes.items():
            g = groups.setdefault(group_of[n], {"nodes": 0, "alloc": 0.0, "demand": 0.0})
            if s.ready:
                g["nodes"] += 1
            g["alloc"] += s.allocatable.cpu_cores
        pending = 0
        for p in pods.values():
            if p.phase in ("Succeeded", "Failed"):
                continue
            if p.node and p.node in group_of:
                groups[group_of[p.node]]["demand"] += p.requests.cpu_cores
            elif p.phase == "Pending" and not p.node:
                pending += 1
                wanted = _selected_group(p.node_selector, group_labels, group_of)
                if wanted is not None:
                    groups.setdefault(wanted, {"nodes": 0, "alloc": 0.0, "demand": 0.0})["demand"] += \
                        p.requests.cpu_cores
        for g, v in groups.items():
            metrics.set_nodegroup(g, nodes=int(v["nodes"]), demand_cpu_cores=v["demand"],
                                  allocatable_cpu_cores=v["alloc"])
        for g in self._groups - set(groups):
            metrics.forget_nodegroup(g)
        self._groups = set(groups)
        metrics.set_pending_pods(pending)
        # Workloads (Deployments): replicas running (ready) and observed CPU demand of their pods.
        demand: dict[tuple[str, str], float] = {}
        for item in pod_items:
            meta = item.get("metadata") or {}
            pod = pods.get((meta.get("namespace") or "", meta.get("name") or ""))
            wl = getattr(pod, "workload", None)
            if wl is None or wl.kind != "Deployment":
                continue
            cpu = sum(quantity((c.get("usage") or {}).get("cpu")) for c in item.get("containers") or []
                      if isinstance(c, dict))
            key = (wl.namespace, wl.name)
            demand[key] = demand.get(key, 0.0) + cpu
        seen = set()
        for (ns, name), d in deployments.items():
            seen.add((ns, name))
            metrics.set_workload(ns, name, replicas_actual=d.ready_replicas,
                                 demand_cpu_cores=demand.get((ns, name), 0.0))
        for ns, name in self._workloads - seen:
            metrics.forget_workload(ns, name)
        self._workloads = seen


def _selected_group(selector: Mapping[str, str], labels: Mapping[str, Mapping[str, str]],
                    group_of: Mapping[str, str]) -> str | None:
    """The node group a pending pod's nodeSelector points at: the group of the nodes it matches,
    when they all belong to one group (None when it selects nothing particular)."""
    if not selector:
        return None
    matched = {group_of[n] for n, lab in labels.items() if all(lab.get(k) == v for k, v in selector.items())}
    return matched.pop() if len(matched) == 1 else None


def _item_ts(item: Mapping[str, Any]) -> float | None:
    """A metrics item's ``timestamp`` (RFC 3339) in epoch seconds, or None."""
    from datetime import datetime

    raw = item.get("timestamp")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ---------------------------------------------------------------- HTTP

async def watcher_handler(request: Any) -> Any:
    """aiohttp handler of ``GET /watcher[?host=NODE]`` reading ``request.app["load_watcher"]``."""
    from aiohttp import web

    cache: LoadWatcherCache = request.app["load_watcher"]
    host = request.query.get("host") or None
    doc = cache.snapshot(host)
    if doc is None:
        return web.json_response({"error": "no node metrics yet"}, status=503)
    if host is not None and host not in doc["data"]["NodeMetricsMap"]:
        return web.json_response({"error": f"unknown host {host}"}, status=404)
    return web.json_response(doc)


async def start_server(cache: LoadWatcherCache, port: int, host: str = "0.0.0.0") -> tuple[Any, int]:
    """Serve ``/watcher`` on ``port`` (0 = a free port) inside the running event loop; returns
    (runner, bound port). Stop with ``await runner.cleanup()``."""
    from aiohttp import web

    app = web.Application()
    app["load_watcher"] = cache
    app.router.add_get("/watcher", watcher_handler)
    app.router.add_get("/watcher/", watcher_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    log.info("load-watcher endpoint at http://%s:%d/watcher", host, bound)
    return runner, bound


# ---------------------------------------------------------------- collector wiring

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The collector's options for this view (load-watcher endpoint, consumer-lag polling)."""
    port = os.environ.get("KUBETIDE_LOAD_WATCHER_PORT")
    parser.add_argument("--load-watcher-port", type=int, default=int(port) if port else None,
                        help=f"serve load-watcher's GET /watcher on this port (load-watcher uses {DEFAULT_PORT}; "
                             "0 = a free port; default $KUBETIDE_LOAD_WATCHER_PORT, else off)")
    parser.add_argument("--load-watcher-window", type=float,
                        default=float(os.environ.get("KUBETIDE_LOAD_WATCHER_WINDOW_S", "900")),
                        help="event-time window of the AVG/STD values in seconds (default 900 = 15m)")
    parser.add_argument("--lag-interval", type=float, default=float(os.environ.get("KUBETIDE_LAG_INTERVAL_S", "15")),
                        help="seconds between consumer-lag polls of the kubetide groups (0 = off; default 15, "
                             "$KUBETIDE_LAG_INTERVAL_S)")


@contextlib.asynccontextmanager
async def collector_extras(args: argparse.Namespace, collector: Any, bootstrap: str,
                           stop: asyncio.Event) -> AsyncIterator[ClusterView]:
    """Attach a :class:`ClusterView` to ``collector`` (its ``view``), serve /watcher when asked and
    poll consumer lag while the block runs."""
    view = ClusterView(float(getattr(args, "load_watcher_window", 900.0) or 900.0))
    collector.view = view
    runner = None
    port = getattr(args, "load_watcher_port", None)
    if port is not None and port >= 0:
        runner, _ = await start_server(view.watcher, port)
    lag_task = None
    interval = float(getattr(args, "lag_interval", 15.0) or 0.0)
    if interval > 0:
        from kubetide.kafka import client_security_from_config

        monitor = metrics.LagMonitor(bootstrap, interval_s=interval,
                                     client_kwargs=client_security_from_config(getattr(args, "config", None)))
        lag_task = asyncio.create_task(monitor.run(stop), name="consumer-lag")
    try:
        yield view
    finally:
        if lag_task is not None:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await lag_task
        if runner is not None:
            await runner.cleanup()
