"""kubetide collector: watch a Kubernetes cluster, publish ``cluster.events`` and ``cluster.metrics``.

What it does
- For each watched kind (Pod, Node, PodDisruptionBudget (policy/v1), Deployment (apps/v1),
  Namespace) it lists first (paged), emitting a ``SYNC`` :class:`~kubetide.models.ClusterEvent`
  for every object, then watches from the list's resourceVersion (with bookmarks). When a
  watch ends (server timeout, dropped connection) it **resumes** from the last resourceVersion
  seen. On **410 Gone** (history compacted) it relists: ``SYNC`` for every object, ``DELETED``
  for objects that vanished during the gap, then watches again.
- Every ``resync_interval_s`` it re-emits ``SYNC`` for every known object so that consumers
  that start late (or lost state) converge on the full picture, like an informer resync.
- Every ``metrics_interval_s`` it polls metrics.k8s.io/v1beta1 node and pod metrics, joins
  pods to nodes through the watched pod state, and sends **one** :class:`ClusterMetrics`
  per node (columnar pod samples; key = node). The message's ``ts`` is the node metrics'
  ``timestamp`` (cluster time); a node whose timestamp did not advance since the last
  scrape is skipped.
- Custom pod metrics (``cpi``, ``latency_ms``): when the cluster serves them through the custom
  metrics API (custom.metrics.k8s.io/v1beta2, e.g. prometheus-adapter), each metrics poll also
  reads ``namespaces/{ns}/pods/*/{metric}`` for every namespace with pods (the adapter has no
  all-namespaces form) and fills ``pods.cpi`` / ``pods.latency_ms``. Which metrics are served is
  read from discovery at the first poll and every ``custom_metrics_discovery_s``; absence is normal
  (logged once at INFO). Column rule (:func:`workers.snapshots.custom_columns`): a node's column
  is present when at least one of its pods has a value; pods without one get 0.0 ("not measured").
- Event time: ``ts`` of every cluster.events message is the latest cluster time seen (the
  ``Date`` header of API responses, or a metrics timestamp); the local clock is used only
  before the cluster's time is known.
- Keys: ``kind/namespace/name`` on cluster.events, ``node`` on cluster.metrics.
- API errors (5xx, timeouts, dropped connections) are retried with jittered exponential
  backoff, never fatal. SIGINT/SIGTERM: watches are closed, the producer is flushed.
- Hostile answers never stop it: a watch line, list item or metrics item no message can be built
  from (not JSON, not an object, unknown event type, bad fields, a metrics timestamp more than
  300 s ahead of the cluster clock) is skipped and counted (``stats["unreadable"]`` and
  ``stats["unreadable_<Kind>"]``, logged at WARNING, rate-limited); one bad item costs only itself.
- Broker restarts (embedded broker): see :mod:`workers.common` — the loss is reported and counted,
  the topics are created again, and a new session lists everything again (SYNC for every object).

Snapshots are built from the raw JSON (see :mod:`workers.snapshots`): a pod's workload is
resolved through its controller ownerReference; a ReplicaSet is mapped to its Deployment by
stripping the ``pod-template-hash`` suffix (no ReplicaSet read).

Command line (``kubetide collector`` or ``python -m workers.collector``)::

    --bootstrap-servers HOSTS   Kafka bootstrap (default $KUBETIDE_BOOTSTRAP, else kafka.bootstrap_servers)
    --kubeconfig PATH           kubeconfig (default $KUBECONFIG, ~/.kube/config, then in-cluster)
    --context NAME              kubeconfig context (default: current context)
    --config PATH               kubetide YAML config; settings under ``collector:``
    --metrics-interval SECONDS  overrides collector.metrics_interval_s
    --resync-interval SECONDS   overrides collector.resync_interval_s
    --no-metrics                do not poll metrics.k8s.io
    --load-watcher-port PORT    serve load-watcher's GET /watcher (kubetide/loadwatcher.py; default off)
    --lag-interval SECONDS      consumer-lag polls of the kubetide groups for /metrics (default 15, 0 = off)
    --embedded-broker           the Kafka cluster is the embedded broker ($KUBETIDE_EMBEDDED_BROKER)
    --no-create-topics          do not create cluster.events / cluster.metrics at start
    --broker-check-interval S   check every S seconds that the broker has not lost its state (default
                                5 on the embedded broker / a loopback bootstrap, else 0 = never)
    --log-level LEVEL           default $KUBETIDE_LOG_LEVEL or INFO

Settings (``collector:`` section; defaults in brackets)
- ``metrics_interval_s`` [10.0]: seconds between metrics.k8s.io polls.
- ``metrics`` [true]: poll metrics at all.
- ``resync_interval_s`` [300.0]: seconds between full SYNC re-emissions (0 = never).
- ``watch_timeout_s`` [300.0]: server-side timeout of each watch request; the watch then
  resumes from its last resourceVersion.
- ``list_page_size`` [500]: ``limit`` of each list page (0 = unpaged).
- ``kinds`` [Pod, Node, PodDisruptionBudget, Deployment, Namespace]: kinds to watch.
- ``node_group_labels`` [kubesim.io/node-group, eks.amazonaws.com/nodegroup,
  cloud.google.com/gke-nodepool, kubernetes.azure.com/agentpool, agentpool,
  karpenter.sh/nodepool, kops.k8s.io/instancegroup, node.kubernetes.io/instance-group]:
  node labels read, in order, for ``NodeSnapshot.node_group``.
- ``backoff_initial_s`` [0.5] / ``backoff_max_s`` [30.0]: jittered exponential backoff on API errors.
- ``request_timeout_s`` [30.0]: timeout of list / metrics requests.
- ``custom_metrics`` [cpi, latency_ms]: custom pod metrics read with each metrics poll ([] = none).
- ``custom_metrics_discovery_s`` [300.0]: seconds between discovery checks of the custom metrics API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

from kubetide import loadwatcher
from kubetide import metrics as ktmetrics
from kubetide import models as m
from kubetide.codec import encode
from kubetide.kafka import configure_security
from kubetide.topics import CLUSTER_EVENTS, CLUSTER_METRICS
from workers import snapshots as snap
from workers.common import (
    add_common_arguments,
    bootstrap_from,
    broker_check_interval,
    create_topics,
    load_settings,
    make_producer,
    run_sessions,
    run_worker,
    worker_id,
)
from workers.kube import (
    ApiStatusError,
    ClusterClock,
    backoff_delays,
    describe,
    is_retryable,
    new_api_client,
    parse_timestamp,
    raise_for_status,
)

log = logging.getLogger("kubetide.collector")

ALL_KINDS = ("Pod", "Node", "PodDisruptionBudget", "Deployment", "Namespace")
CUSTOM_GROUP, CUSTOM_VERSION = "custom.metrics.k8s.io", "v1beta2"


@dataclass(frozen=True)
class CollectorSettings:
    metrics_interval_s: float = 10.0
    metrics: bool = True
    resync_interval_s: float = 300.0
    watch_timeout_s: float = 300.0
    list_page_size: int = 500
    kinds: tuple[str, ...] = ALL_KINDS
    node_group_labels: tuple[str, ...] = snap.DEFAULT_NODE_GROUP_LABELS
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    request_timeout_s: float = 30.0
    custom_metrics: tuple[str, ...] = snap.CUSTOM_POD_METRICS
    custom_metrics_discovery_s: float = 300.0

    def validate(self) -> None:
        if self.metrics_interval_s <= 0:
            raise ValueError("metrics_interval_s: must be > 0")
        if self.resync_interval_s < 0:
            raise ValueError("resync_interval_s: must be >= 0 (0 = never)")
        if self.watch_timeout_s < 1:
            raise ValueError("watch_timeout_s: must be >= 1")
        if self.list_page_size < 0:
            raise ValueError("list_page_size: must be >= 0")
        unknown = [k for k in self.kinds if k not in ALL_KINDS]
        if unknown:
            raise ValueError(f"kinds: unknown kind(s) {', '.join(unknown)} (known: {', '.join(ALL_KINDS)})")
        if self.metrics and not {"Pod", "Node"} <= set(self.kinds):
            raise ValueError("kinds: metrics need the Pod and Node kinds watched (or set metrics: false)")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_initial_s: must be > 0 and <= backoff_max_s")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s: must be > 0")
        bad = [x for x in self.custom_metrics if x not in snap.CUSTOM_POD_METRICS]
        if bad:
            raise ValueError(f"custom_metrics: unknown metric(s) {', '.join(bad)} "
                             f"(known: {', '.join(snap.CUSTOM_POD_METRICS)})")
        if self.custom_metrics_discovery_s <= 0:
            raise ValueError("custom_metrics_discovery_s: must be > 0")


class Gone(Exception):
    """410 Gone / Expired: the resourceVersion is older than the server's history."""


@dataclass(frozen=True)
class KindSpec:
    kind: str
    field: str
    namespaced: bool
    lister: Callable[[client.ApiClient], Callable[..., Any]]
    snapshot: Callable[[dict], m.Model]


def _kind_specs(settings: CollectorSettings) -> dict[str, KindSpec]:
    def node_snap(obj: dict) -> m.Model:
        return snap.node_snapshot(obj, settings.node_group_labels)

    return {
        "Pod": KindSpec("Pod", "pod", True, lambda a: client.CoreV1Api(a).list_pod_for_all_namespaces,
                        snap.pod_snapshot),
        "Node": KindSpec("Node", "node", False, lambda a: client.CoreV1Api(a).list_node, node_snap),
        "PodDisruptionBudget": KindSpec(
            "PodDisruptionBudget", "pdb", True,
            lambda a: client.PolicyV1Api(a).list_pod_disruption_budget_for_all_namespaces, snap.pdb_snapshot),
        "Deployment": KindSpec("Deployment", "deployment", True,
                               lambda a: client.AppsV1Api(a).list_deployment_for_all_namespaces,
                               snap.deployment_snapshot),
        "Namespace": KindSpec("Namespace", "namespace_obj", False, lambda a: client.CoreV1Api(a).list_namespace,
                              snap.namespace_snapshot),
    }


ObjKey = tuple[str, str]  # (namespace, name)


class Collector:
    """The collector's loops over one ApiClient and one aiokafka producer (both owned by the caller)."""

    def __init__(self, api: client.ApiClient, producer: Any, settings: CollectorSettings | None = None,
                 *, name: str = "") -> None:
        self.api = api
        self.producer = producer
        self.settings = settings or CollectorSettings()
        self.name = name or worker_id("collector")
        self.specs = {k: v for k, v in _kind_specs(self.settings).items() if k in self.settings.kinds}
        self.objects: dict[str, dict[ObjKey, m.ClusterEvent]] = {k: {} for k in self.specs}
        self.clock = ClusterClock()
        self.stats: Counter[str] = Counter()
        self.synced = asyncio.Event()  # set once every kind has been listed
        self._listed: set[str] = set()
        self._last_metrics_ts: dict[str, float] = {}
        self._pending: set[asyncio.Future] = set()
        self._send_errors = 0
        self.custom_available: tuple[str, ...] = ()  # custom pod metrics the cluster serves (last discovery)
        self._custom_checked: float | None = None  # monotonic time of the last discovery
        self._custom_logged: tuple[str, ...] | None = None
        self.view: loadwatcher.ClusterView | None = None  # fed after each metrics poll (gauges, /watcher)

    # ---------------------------------------------------------------- time and output

    def now(self) -> float:
        return self.clock.latest if self.clock.latest is not None else time.time()

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        fut = await self.producer.send(topic, value, key=key.encode())
        ktmetrics.observe_produced(topic)
        self._pending.add(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future) -> None:
        self._pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._send_errors += 1
            self.stats["send_errors"] += 1
            if self._send_errors <= 5 or self._send_errors % 1000 == 0:
                log.error("could not deliver a message (%d so far): %s", self._send_errors, exc)

    async def emit(self, ev: m.ClusterEvent) -> None:
        self.stats[f"events_{ev.type.lower()}"] += 1
        await self._send(CLUSTER_EVENTS, ev.key, encode(ev))

    async def flush(self) -> None:
        with contextlib.suppress(Exception):
            await self.producer.flush()

    def _event(self, etype: str, spec: KindSpec, obj: dict) -> m.ClusterEvent:
        meta = obj.get("metadata") or {}
        return m.ClusterEvent(
            ts=self.now(), type=etype, kind=spec.kind, namespace=meta.get("namespace") or "",
            name=meta["name"], uid=meta.get("uid"), resource_version=meta.get("resourceVersion"),
            **{spec.field: spec.snapshot(obj)})

    @staticmethod
    def _key(obj: Any) -> ObjKey:
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            return "", ""
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        return (ns if isinstance(ns, str) else str(ns)), (name if isinstance(name, str) else str(name))

    def _unreadable(self, kind: str, what: str, detail: object) -> None:
        """Count (and log, rate-limited) an API object or line that cannot be turned into a message."""
        self.stats["unreadable"] += 1
        self.stats[f"unreadable_{kind}"] += 1
        n = self.stats["unreadable"]
        if n <= 20 or n % 1000 == 0:
            log.warning("%s: %s (%d unreadable so far): %s", kind, what, n, str(detail)[:300])

    # ---------------------------------------------------------------- main

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._kind_loop(spec, stop), name=f"watch-{kind}")
                 for kind, spec in self.specs.items()]
        if self.settings.resync_interval_s > 0:
            tasks.append(asyncio.create_task(self._resync_loop(stop), name="resync"))
        if self.settings.metrics:
            tasks.append(asyncio.create_task(self._metrics_loop(stop), name="metrics"))
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in [*tasks, stopper]:
                t.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            await self.flush()
            log.info("collector stopped: %s", self.summary())

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items())) or "nothing sent"

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep unless stopped; True when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()

    # ---------------------------------------------------------------- list + watch

    async def _kind_loop(self, spec: KindSpec, stop: asyncio.Event) -> None:
        rv: str | None = None
        delays = backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        while not stop.is_set():
            try:
                if rv is None:
                    rv = await self.relist(spec)
                    delays = backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
                rv, n = await self.watch(spec, rv)
                self.stats[f"resumes_{spec.kind}"] += 1
                log.info("%s watch ended after %d events; resuming from resourceVersion %s", spec.kind, n, rv)
                if n:
                    delays = backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
            except Gone as exc:
                self.stats[f"relists_{spec.kind}"] += 1
                log.info("%s watch: 410 Gone from resourceVersion %s (%s); relisting", spec.kind, rv, exc)
                rv = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_retryable(exc) and not isinstance(exc, ValueError | KeyError):
                    log.exception("%s: unexpected error; retrying", spec.kind)
                delay = next(delays)
                self.stats["api_errors"] += 1
                log.warning("%s %s failed (%s); retrying in %.1fs%s", spec.kind, "list" if rv is None else "watch",
                            describe(exc), delay, "" if rv is None else f" from resourceVersion {rv}")
                if await self._sleep(stop, delay):
                    return

    async def _list_page(self, spec: KindSpec, cont: str | None) -> dict:
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": self.settings.request_timeout_s}
        if self.settings.list_page_size:
            kwargs["limit"] = self.settings.list_page_size
        if cont:
            kwargs["_continue"] = cont
        resp = await spec.lister(self.api)(**kwargs)
        try:
            self.clock.observe(resp.headers)
            if resp.status == 410:
                raise Gone(await resp.text())
            await raise_for_status(resp)
            return orjson.loads(await resp.read())
        finally:
            resp.release()

    async def list_all(self, spec: KindSpec) -> tuple[list[dict], str]:
        for _attempt in range(3):
            items: list[dict] = []
            cont: str | None = None
            try:
                while True:
                    page = await self._list_page(spec, cont)
                    items.extend(page.get("items") or [])
                    meta = page.get("metadata") or {}
                    cont = meta.get("continue") or None
                    if not cont:
                        return items, str(meta.get("resourceVersion") or "")
            except Gone:
                if cont is None:
                    raise
                log.info("%s list: continue token expired; listing again from the start", spec.kind)
        raise ApiStatusError(410, "list continue token keeps expiring", "", None)

    async def relist(self, spec: KindSpec) -> str:
        """List ``spec.kind``: SYNC for every object, DELETED for known objects that are gone."""
        items, rv = await self.list_all(spec)
        known = self.objects[spec.kind]
        seen: set[ObjKey] = set()
        bad = 0
        for obj in items:
            key = self._key(obj)
            seen.add(key)
            try:
                ev = self._event("SYNC", spec, obj)
            except Exception as exc:
                bad += 1
                self._unreadable(spec.kind, f"{key[0]}/{key[1]}: cannot build a snapshot", exc)
                continue
            known[key] = ev
            await self.emit(ev)
        gone = [k for k in known if k not in seen]
        for key in gone:
            ev = known.pop(key)
            await self.emit(ev.model_copy(update={"type": "DELETED", "ts": self.now()}))
        first = spec.kind not in self._listed
        self._listed.add(spec.kind)
        if self._listed >= set(self.specs):
            self.synced.set()
        log.info("%s %s: %d objects at resourceVersion %s (%d deleted while not watching%s)", spec.kind,
                 "listed" if first else "relisted", len(items), rv, len(gone), f", {bad} unreadable" if bad else "")
        return rv

    async def watch(self, spec: KindSpec, rv: str) -> tuple[str, int]:
        """Watch from ``rv`` until the server ends the stream; return (last resourceVersion, events)."""
        timeout = self.settings.watch_timeout_s
        resp = await spec.lister(self.api)(
            watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=int(timeout),
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.request_timeout_s,
                                                   sock_read=timeout + 30))
        n = 0
        try:
            self.clock.observe(resp.headers)
            if resp.status == 410:
                raise Gone(await resp.text())
            await raise_for_status(resp)
            buf = bytearray()
            async for chunk in resp.content.iter_any():
                buf += chunk
                while (i := buf.find(b"\n")) >= 0:
                    line = bytes(buf[:i])
                    del buf[: i + 1]
                    if line.strip():
                        rv = await self._on_watch_line(spec, line, rv)
                        n += 1
            if buf.strip():
                rv = await self._on_watch_line(spec, bytes(buf), rv)
                n += 1
        finally:
            resp.release()
        return rv, n

    async def _on_watch_line(self, spec: KindSpec, line: bytes, rv: str) -> str:
        """Handle one line of a watch stream; returns the resourceVersion to resume from.

        Anything unreadable (not JSON, not an object, unknown type, an object no snapshot can be
        built from) is counted in ``stats["unreadable"]`` and skipped; only an ``ERROR`` event
        raises (:class:`Gone` for 410, else :class:`ApiStatusError`)."""
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._unreadable(spec.kind, "watch line is not JSON", repr(line[:200]))
            return rv
        if not isinstance(event, dict):
            self._unreadable(spec.kind, "watch line is not a JSON object", repr(line[:200]))
            return rv
        etype, obj = event.get("type"), event.get("object") or {}
        if not isinstance(obj, dict):
            self._unreadable(spec.kind, f"watch event {etype!r} carries no object", repr(line[:200]))
            return rv
        if etype == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone(str(obj.get("message") or "Expired"))
            status = code if isinstance(code, int) and not isinstance(code, bool) and 100 <= code < 600 else 500
            raise ApiStatusError(status, str(obj.get("reason") or "watch error"), orjson.dumps(obj).decode(), None)
        meta = obj.get("metadata")
        new_rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        new_rv = str(new_rv) if isinstance(new_rv, str | int) and not isinstance(new_rv, bool) and new_rv != "" \
            else rv
        if etype == "BOOKMARK":
            return new_rv
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            self._unreadable(spec.kind, f"unknown watch event type {etype!r}", repr(line[:200]))
            return new_rv
        key = self._key(obj)
        try:
            ev = self._event(etype, spec, obj)
        except Exception as exc:
            self._unreadable(spec.kind, f"{key[0]}/{key[1]}: cannot build a snapshot", exc)
            return new_rv
        if etype == "DELETED":
            self.objects[spec.kind].pop(key, None)
        else:
            self.objects[spec.kind][key] = ev
        await self.emit(ev)
        return new_rv

    # ---------------------------------------------------------------- resync

    async def _resync_loop(self, stop: asyncio.Event) -> None:
        await self.synced.wait()
        while not await self._sleep(stop, self.settings.resync_interval_s):
            await self.resync()

    async def resync(self) -> int:
        n = 0
        ts = self.now()
        for objs in self.objects.values():
            for ev in list(objs.values()):
                await self.emit(ev.model_copy(update={"type": "SYNC", "ts": ts}))
                n += 1
        self.stats["resyncs"] += 1
        log.info("resync: re-emitted %d objects as SYNC", n)
        return n

    # ---------------------------------------------------------------- metrics

    async def _metrics_loop(self, stop: asyncio.Event) -> None:
        await self.synced.wait()
        delays = backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        failures = 0
        while not stop.is_set():
            try:
                await self.scrape()
                failures = 0
                wait = self.settings.metrics_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.stats["metrics_errors"] += 1
                wait = min(self.settings.metrics_interval_s, next(delays)) if failures < 3 \
                    else self.settings.metrics_interval_s
                log.warning("metrics scrape failed (%s); next try in %.1fs", describe(exc), wait)
            if await self._sleep(stop, wait):
                return

    async def _metrics_list(self, plural: str) -> dict:
        data, _, headers = await client.CustomObjectsApi(self.api).list_cluster_custom_object_with_http_info(
            "metrics.k8s.io", "v1beta1", plural, _request_timeout=self.settings.request_timeout_s)
        self.clock.observe(headers)
        return data if isinstance(data, dict) else {}

    async def discover_custom_metrics(self) -> tuple[str, ...]:
        """Which of ``settings.custom_metrics`` the cluster serves (``pods/<metric>`` in discovery)."""
        served: set[str] = set()
        try:
            res = await client.CustomObjectsApi(self.api).get_api_resources(
                CUSTOM_GROUP, CUSTOM_VERSION, _request_timeout=self.settings.request_timeout_s)
            served = {r.name.split("/", 1)[1] for r in res.resources or [] if r.name.startswith("pods/")}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) not in (404, 503) and not is_retryable(exc):
                log.info("custom metrics discovery failed (%s); treating as absent", describe(exc))
        avail = tuple(x for x in self.settings.custom_metrics if x in served)
        if avail != self._custom_logged:
            if avail:
                log.info("custom metrics API serves pod metrics %s: reading them with each metrics poll",
                         ", ".join(avail))
            else:
                log.info("no custom pod metrics (%s) served by %s/%s: CPI / latency columns stay empty",
                         ", ".join(self.settings.custom_metrics), CUSTOM_GROUP, CUSTOM_VERSION)
            self._custom_logged = avail
        self.custom_available = avail
        return avail

    async def _custom_list(self, namespace: str, metric: str) -> list:
        resp = await self.api.call_api(
            f"/apis/{CUSTOM_GROUP}/{CUSTOM_VERSION}/namespaces/{{namespace}}/pods/*/{metric}", "GET",
            path_params={"namespace": namespace}, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False,
            _request_timeout=self.settings.request_timeout_s)
        try:
            if resp.status == 404:  # no series for this namespace: normal
                return []
            await raise_for_status(resp)
            return orjson.loads(await resp.read()).get("items") or []
        finally:
            resp.release()

    async def custom_values(self, namespaces: set[str]) -> dict[str, dict[tuple[str, str], float]]:
        """Custom pod metrics of ``namespaces`` (metric → (namespace, pod) → value); {} when none served.

        A failing request loses that namespace's values for this poll only (logged at DEBUG)."""
        if not self.settings.custom_metrics:
            return {}
        now = time.monotonic()
        if self._custom_checked is None or now - self._custom_checked >= self.settings.custom_metrics_discovery_s:
            self._custom_checked = now
            await self.discover_custom_metrics()
        out: dict[str, dict[tuple[str, str], float]] = {}
        for metric in self.custom_available:
            values: dict[tuple[str, str], float] = {}
            for ns in sorted(namespaces):
                try:
                    values.update(snap.custom_metric_values(await self._custom_list(ns, metric)))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.stats["custom_metrics_errors"] += 1
                    level = logging.WARNING if self.stats["custom_metrics_errors"] == 1 else logging.DEBUG
                    log.log(level, "custom metric %s in namespace %s unreadable (%s); its pods get no value "
                            "this poll (needs get on custom.metrics.k8s.io pods/*)", metric, ns, describe(exc))
            out[metric] = values
        return out

    def join_pod_metrics(self, pod_items: list, pods_state: Any) -> tuple[dict[str, list[snap.PodRow]], int]:
        """:func:`workers.snapshots.join_pod_metrics`, item by item: an unreadable PodMetrics item is
        counted (``unreadable_PodMetrics``) and left out instead of failing the whole scrape."""
        by_node: dict[str, list[snap.PodRow]] = {}
        unjoined = 0
        for item in pod_items:
            try:
                rows, n = snap.join_pod_metrics([item], pods_state)
                for r in rows.values():
                    if not all(math.isfinite(x[3]) and math.isfinite(x[4]) and x[3] >= 0 and x[4] >= 0 for x in r):
                        raise ValueError("usage is negative or not finite")
            except Exception as exc:
                self._unreadable("PodMetrics", "cannot read a PodMetrics item", exc)
                continue
            unjoined += n
            for node, r in rows.items():
                by_node.setdefault(node, []).extend(r)
        return by_node, unjoined

    #: How far ahead of the cluster's clock (Date header) a metrics timestamp may be before the item is
    #: refused: a far-future timestamp would otherwise pin the node's "last scrape" and the clock.
    MAX_FUTURE_S = 300.0

    def metrics_messages(self, node_items: list, by_node: dict[str, list[snap.PodRow]],
                         custom: Any = None) -> tuple[list[tuple[str, float, m.ClusterMetrics]], int]:
        """NodeMetrics items → ``([(node, ts, message)], skipped)``: one message per known node whose
        timestamp advanced. An item no message can be built from (bad usage, a timestamp more than
        :attr:`MAX_FUTURE_S` ahead of the cluster clock, ...) is counted in ``unreadable_NodeMetrics``
        and loses only that node's scrape."""
        nodes_state = self.objects.get("Node", {})
        out: list[tuple[str, float, m.ClusterMetrics]] = []
        skipped = 0
        for item in node_items:
            try:
                meta = item.get("metadata") or {}
                name = meta.get("name") if isinstance(meta, dict) else None
                node_ev = nodes_state.get(("", name)) if isinstance(name, str) else None
                if not name or node_ev is None or node_ev.node is None:
                    skipped += 1
                    continue
                ts = parse_timestamp(item.get("timestamp"))
                if ts is None or not math.isfinite(ts) or ts < 0:
                    ts = self.now()
                if self.clock.latest is not None and ts > self.clock.latest + self.MAX_FUTURE_S:
                    raise ValueError(f"timestamp {item.get('timestamp')!r} is in the future (cluster time "
                                     f"{self.clock.latest:.0f})")
                last = self._last_metrics_ts.get(name)
                if last is not None and ts <= last:
                    skipped += 1
                    continue
                msg = snap.node_metrics_message(item, node_ev.node, by_node.get(name, []), ts,
                                                self.settings.metrics_interval_s, custom)
            except Exception as exc:  # one unreadable NodeMetrics item loses that node's scrape only
                self._unreadable("NodeMetrics", "cannot build a cluster.metrics message", exc)
                continue
            out.append((name, ts, msg))
        return out, skipped

    async def scrape(self) -> int:
        """One metrics poll: one ClusterMetrics per node whose timestamp advanced. Returns messages sent."""
        node_items = _items(await self._metrics_list("nodes"))
        pod_items = _items(await self._metrics_list("pods"))
        pods_state = self.objects.get("Pod", {})
        custom = await self.custom_values({ns for ns, _ in pods_state if ns})
        by_node, unjoined = self.join_pod_metrics(pod_items, pods_state)
        messages, skipped = self.metrics_messages(node_items, by_node, custom)
        sent = 0
        for name, ts, msg in messages:
            await self._send(CLUSTER_METRICS, name, encode(msg))
            self._last_metrics_ts[name] = ts
            self.clock.observe_ts(ts)
            sent += 1
        if self.view is not None:
            self.view.update(self.objects, node_items, pod_items)
        self.stats["metrics_messages"] += sent
        self.stats["metrics_scrapes"] += 1
        log.debug("metrics: %d node messages, %d nodes skipped (no news / unknown), %d pods not joined",
                  sent, skipped, unjoined)
        return sent


def _items(data: Any) -> list[dict]:
    """The object items of a list response (anything that is not an object is counted out later)."""
    items = data.get("items") if isinstance(data, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


# -------------------------------------------------------------------- entry point

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    loadwatcher.add_arguments(parser)
    parser.add_argument("--metrics-interval", type=float, default=None,
                        help="seconds between metrics.k8s.io polls (default 10)")
    parser.add_argument("--resync-interval", type=float, default=None,
                        help="seconds between full SYNC re-emissions, 0 = never (default 300)")
    parser.add_argument("--no-metrics", action="store_true", help="do not poll metrics.k8s.io")


def settings_from(args: argparse.Namespace) -> CollectorSettings:
    import dataclasses

    s = load_settings(args, CollectorSettings, "collector")
    configure_security(getattr(args, "config", None))  # kafka: TLS/SASL for every client; bad ones exit 2 here
    over: dict[str, Any] = {}
    if getattr(args, "metrics_interval", None) is not None:
        over["metrics_interval_s"] = float(args.metrics_interval)
    if getattr(args, "resync_interval", None) is not None:
        over["resync_interval_s"] = float(args.resync_interval)
    if getattr(args, "no_metrics", False):
        over["metrics"] = False
    if over:
        s = dataclasses.replace(s, **over)
        try:
            s.validate()
        except ValueError as exc:
            raise ValueError(f"collector.{exc}") from None
    return s


async def amain(args: argparse.Namespace, stop: asyncio.Event) -> int:
    settings = settings_from(args)
    bootstrap = bootstrap_from(args)
    embedded = bool(getattr(args, "embedded_broker", False))
    name = worker_id("collector")
    if getattr(args, "create_topics", True):
        await create_topics(bootstrap, [CLUSTER_EVENTS, CLUSTER_METRICS])
    api = await new_api_client(getattr(args, "kubeconfig", None), getattr(args, "context", None))

    async def session(session_stop: asyncio.Event) -> int:
        # One Kafka session; after a broker restart a new one lists everything again (SYNC for every object).
        producer = await make_producer(bootstrap, embedded=embedded, client_id=name)
        try:
            log.info("collector %s: watching %s; metrics every %.0fs; resync every %.0fs; Kafka %s", name,
                     ", ".join(settings.kinds), settings.metrics_interval_s, settings.resync_interval_s, bootstrap)
            collector = Collector(api, producer, settings, name=name)
            async with loadwatcher.collector_extras(args, collector, bootstrap, session_stop):
                await collector.run(session_stop)
        finally:
            await producer.stop()  # flushes
        return 0

    try:
        return await run_sessions("collector", bootstrap, [CLUSTER_EVENTS, CLUSTER_METRICS], session, stop,
                                  interval_s=broker_check_interval(args, bootstrap))
    finally:
        await api.close()


def run(args: argparse.Namespace) -> int:
    return run_worker(args, "collector", settings_from, amain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.collector", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
