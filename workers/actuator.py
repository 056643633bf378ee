"""kubetide actuator: apply decisions to the cluster safely, write every outcome to ``actions``.

Flow for each message of a decisions topic (consumer group ``kubetide-actuator``;
``decisions.deschedule`` and ``decisions.autoscale``; a topic is added by registering a
:class:`Handler` in ``HANDLERS``):

1. **decode** with :mod:`kubetide.codec`; unreadable input, a foreign schema or an unknown
   schema version goes to ``deadletter`` (key = origin topic) with the reason, and the
   actuator goes on.
2. **idempotency**: a decision id already answered ``applied`` or ``dry-run`` gets outcome
   ``duplicate`` and is not applied again. The set of applied ids is rebuilt at start by
   reading ``actions`` from the beginning to its high-water mark (from fetch responses, not
   ListOffsets, which the embedded broker gets wrong), and it keeps following ``actions``
   afterwards, so ids applied by other actuator replicas are known too. Messages with the
   same id are handled one at a time; a decision waiting for a retry (PDB or rate limit)
   answers a re-delivery with ``duplicate`` (reason ``retry-pending``). Scale decisions also
   leave a marker on the object (below).

Eviction (``decisions.deschedule``, :class:`EvictHandler`), in this order:

3. protected namespace → ``skipped: protected-namespace`` (no request about the pod is made);
   **opt-in mode** (``opt_in: true``): a namespace not labelled ``kubetide.io/enabled: "true"``
   (``opt_in_label``; read with GET, cached ``namespace_cache_s``) and not listed in
   ``opt_in_namespaces`` → ``skipped: not-opted-in`` (the pod is not read).
4. **last-moment checks**: the pod is read (GET); its ``Date`` header gives the cluster's *now*:
   ``expires_at`` < now → ``expired``; 404 or terminating → ``skipped: gone``; other uid or
   node than the decision says → ``skipped: changed``; annotation ``kubetide.io/evict: "never"``
   → ``skipped: opt-out``; DaemonSet / mirror pods → ``skipped: daemonset`` / ``skipped: mirror``.
5. **zone guard** (``zone_guard``): the pod's ``topologySpreadConstraints`` on the zone label
   (smallest ``maxSkew``, its ``labelSelector``), or, when it declares none, ``zone_max_skew``
   (> 0) over the pods of the same controller. The workload's running pods are counted per zone
   (pod list of the namespace, node → zone from the node list, eligible zones = all zones with
   nodes); if removing this pod would leave the skew above maxSkew *and* higher than now →
   ``skipped: zone-guard`` (an eviction that keeps or lowers the skew passes).
   **PDBs**: the namespace's PDBs are listed and matched to the pod's labels (``pdb_precheck``);
   their ``disruptionsAllowed`` feed the ledger (step 8).
6. **kill switch / dry run**: ``--dry-run`` / ``dry_run`` at start → ``dry-run`` (reason
   ``dry-run``); the config file's ``actuator.dry_run`` or ``actuator.paused`` *now* true →
   ``dry-run`` (reason ``kill-switch``); ``dry_run: true`` in the file at start and then set to
   false lifts the dry run (only ``--dry-run`` on the command line cannot be lifted). The file
   (``--config`` or ``$KUBETIDE_CONFIG``; in the cluster the ConfigMap mounted at /etc/kubetide)
   is re-read at most every ``kill_switch_interval_s`` seconds while running, so editing the
   ConfigMap stops (or resumes) all writes without a restart; an unreadable file keeps the last
   state. Nothing is written to the API in either case (like ``dry-run``, the decision counts as
   answered).
7. **rate limits**: keyed token buckets per node, per namespace and per workload (all or
   nothing; :mod:`workers.ratelimit`): one empty → ``skipped: rate-limit`` with ``retry_after_s``
   (when a token will be there) and the decision is tried again after that delay (up to
   ``rate_limit_max_attempts`` attempts, never past its expiry). Then a token from the **global**
   bucket (``evictions_per_minute``, burst ``rate_burst``), which waits instead; if waiting took
   a while, steps 3-6 are run again.
8. **disruption ledger** (:mod:`workers.ledger`, shared by every strategy and by scale-ins): a
   reservation against the workload's and the zone's budgets (``budget_per_workload`` /
   ``budget_per_zone`` disruptions in a sliding window of ``budget_window_s`` cluster seconds)
   and against each matching PDB (its ``disruptionsAllowed`` minus kubetide's own evictions still
   in flight against it; a PDB already at 0 is left to the Eviction API) → else ``skipped: budget``
   (not retried: the planner decides again on fresh state). Committed when the eviction succeeds,
   released otherwise.
9. **eviction** through the Eviction API (``create_namespaced_pod_eviction`` with a policy/v1
   Eviction; a pod is never deleted directly): 2xx → ``applied: evicted``; 429 →
   ``skipped: pdb`` with ``retry_after_s`` from the Retry-After header, and the decision is
   tried again after that delay (up to ``pdb_max_attempts`` attempts in all, never past its
   expiry; the wait holds no in-flight slot, so it blocks nothing); 404 → ``skipped: gone``;
   403 → ``failed: forbidden``; 5xx, 409, timeouts, connection errors → retried with jittered
   backoff up to ``error_max_attempts`` attempts, then ``failed: api-error``; other 4xx (422,
   ...) → ``failed`` at once. A 403 on any read of the checks is ``failed: forbidden`` too.

Scaling (``decisions.autoscale``, :class:`ScaleHandler`): protected namespace / opt-in as above;
only ``kind: Deployment`` (else ``failed: unsupported``); GET the Deployment: 404 →
``skipped: gone``, expired → ``expired``, annotation ``kubetide.io/last-decision``
(``last_decision_annotation``) equal to the decision id → ``duplicate`` (reason ``marker``: the
change was made but its outcome never reached ``actions``); GET its Scale: replicas already
equal ``desired_replicas`` → ``skipped: no-change``; kill switch → ``dry-run``; a scale-in
reserves ``current - desired`` disruptions of the workload in the ledger (``skipped: budget``);
PUT the Scale with its resourceVersion (a 409 conflict reads again and retries, up to
``error_max_attempts``) → ``applied: scaled``; then the marker annotation is merge-patched onto
the Deployment (a failure there is logged and noted in the message, the scale stands).

Node scaling (``decisions.nodescale``, :class:`NodescaleHandler`; consumed when listed in ``topics``):
taint / untaint nodes and pod-deletion-cost annotations by merge patch, the placeholder Deployment's
replicas through its scale subresource, drains as cordon + Eviction API (429 → ``skipped: pdb``,
retried); see the class. Outcomes ``applied: tainted|untainted|annotated|scaled|drained``.

Every outcome is an :class:`~kubetide.models.Action` on ``actions`` (key = decision id) with
the HTTP status and message. The consumer offset of a message is committed only after its
outcome has been written (at-least-once; idempotency makes re-delivery harmless); offsets are
committed in order per partition, so an earlier message still in flight holds back later ones.
At most ``max_in_flight`` decisions are processed at once. All times in decisions (expiry) are
compared with the cluster's clock (``Date`` header), never with the local clock; the rate limit
and retry delays are real seconds (they protect the API server and follow HTTP Retry-After).

Command line (``kubetide actuator`` or ``python -m workers.actuator``)::

    --bootstrap-servers HOSTS   Kafka bootstrap (default $KUBETIDE_BOOTSTRAP, else kafka.bootstrap_servers)
    --kubeconfig PATH           kubeconfig (default $KUBECONFIG, ~/.kube/config, then in-cluster)
    --context NAME              kubeconfig context
    --config PATH               kubetide YAML config; settings under ``actuator:``
    --dry-run                   decide and record, but never write to the cluster (actuator.dry_run)
    --group-id ID               consumer group (actuator.group_id)
    --evictions-per-minute N    global eviction rate (actuator.evictions_per_minute)
    --embedded-broker           the Kafka cluster is the embedded broker ($KUBETIDE_EMBEDDED_BROKER)
    --no-create-topics          do not create the topics at start
    --broker-check-interval S   check every S seconds that the broker has not lost its state; after a
                                restart the topics are created again and a new session keeps the applied
                                ids, ledger and rate limits (default 5 on the embedded broker, else 0)
    --log-level LEVEL           default $KUBETIDE_LOG_LEVEL or INFO

Settings (``actuator:`` section; defaults in brackets)
- ``dry_run`` [false]: record ``dry-run`` outcomes instead of evicting. Re-read from the config
  file at run time as part of the kill switch (``--dry-run`` at start cannot be undone that way).
- ``paused`` [false]: kill switch; like ``dry_run``, read at start *and* re-read at run time.
- ``kill_switch_interval_s`` [5.0]: how often the config file is re-read for ``dry_run``/``paused``.
- ``topics`` [decisions.deschedule, decisions.autoscale]: decision topics to consume (each needs
  a handler).
- ``group_id`` ["kubetide-actuator"]: consumer group.
- ``auto_offset_reset`` ["earliest"]: where a new group starts (earliest: no decision is
  missed; old ones are answered ``expired`` / ``duplicate``).
- ``protected_namespaces`` [kube-system, kube-public, kube-node-lease, kubetide]: never touched.
- ``opt_out_annotation`` ["kubetide.io/evict"] with value ``never``: pod opt-out.
- ``evictions_per_minute`` [30.0] and ``rate_burst`` [5]: global token bucket.
- ``max_in_flight`` [8]: decisions processed concurrently.
- ``pdb_max_attempts`` [5]: attempts of a decision refused by a PDB (429), first included.
- ``default_retry_after_s`` [10.0]: delay after a 429 without Retry-After.
- ``max_retry_after_s`` [300.0]: cap on a Retry-After delay.
- ``error_max_attempts`` [4]: attempts of an API call failing with 5xx/timeouts.
- ``backoff_initial_s`` [0.5] / ``backoff_max_s`` [10.0]: jittered backoff of those retries.
- ``request_timeout_s`` [15.0]: timeout of each API request.
- ``rate_recheck_after_s`` [1.0]: re-read the pod if the rate limit made us wait longer than this.
- ``restore_timeout_s`` [60.0]: time allowed to read ``actions`` at start.
- ``commit_interval_s`` [1.0]: how often processed offsets are committed.
- ``node_evictions_per_minute`` [10.0] / ``node_rate_burst`` [3]: keyed bucket per node
  (the pod's node); a rate <= 0 disables the bucket.
- ``namespace_evictions_per_minute`` [20.0] / ``namespace_rate_burst`` [5]: per namespace.
- ``workload_evictions_per_minute`` [6.0] / ``workload_rate_burst`` [2]: per workload
  (decision's ``workload``: namespace/name).
- ``rate_limit_max_attempts`` [5]: attempts of a decision refused by a keyed bucket, first included.
- ``opt_in`` [false]: only namespaces labelled ``opt_in_label=true`` are touched.
- ``opt_in_label`` ["kubetide.io/enabled"]; ``opt_in_namespaces`` [[]]: namespaces opted in by
  configuration (no label needed); ``namespace_cache_s`` [30.0]: cache of namespace labels.
- ``budget_window_s`` [600.0]: sliding window of the ledger (cluster seconds).
- ``budget_per_workload`` [3] / ``budget_per_zone`` [10]: disruptions allowed per workload / per
  zone in the window (evictions and scale-ins of every strategy together); <= 0 disables.
- ``pdb_precheck`` [true]: list the namespace's PDBs and feed their ``disruptionsAllowed`` to the
  ledger.
- ``zone_guard`` [true]: refuse evictions that raise a workload's zone skew above maxSkew.
- ``zone_max_skew`` [0]: maxSkew for pods without a zone topologySpreadConstraint (0: guard
  only pods that declare one).
- ``zone_label`` ["topology.kubernetes.io/zone"]; ``node_cache_s`` [30.0]: cache of node zones.
- ``last_decision_annotation`` ["kubetide.io/last-decision"]: idempotency marker on Deployments.

Outcome codes (``outcome: reason``): ``applied: evicted``, ``applied: scaled``, ``dry-run: dry-run``,
``dry-run: kill-switch``, ``duplicate: already-applied``, ``duplicate: retry-pending``,
``duplicate: marker``, ``expired: expired``, ``skipped: protected-namespace``,
``skipped: not-opted-in``, ``skipped: gone``, ``skipped: changed``, ``skipped: opt-out``,
``skipped: mirror``, ``skipped: daemonset``, ``skipped: zone-guard``, ``skipped: rate-limit``,
``skipped: budget``, ``skipped: pdb``, ``skipped: no-change``, ``failed: forbidden``,
``failed: api-error``, ``failed: unsupported``.

RBAC: :data:`RBAC_RULES` lists every API call the actuator makes (pods get/list, pods/eviction
create, nodes list, namespaces get, poddisruptionbudgets list, deployments get/patch,
deployments/scale get/update); ``tests/test_rbac.py`` runs the actuator against kubesim
authorizing with the ClusterRole of ``deploy/actuator.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import orjson
from aiokafka.errors import KafkaError
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubetide import metrics
from kubetide import models as m
from kubetide.codec import DecodeError, dead_letter_for, decode, encode
from kubetide.config import DEFAULT_PROTECTED_NAMESPACES
from kubetide.kafka import forget_gaps, gapless_getmany
from kubetide.labels import selector_matches
from kubetide.topics import ACTIONS, DEADLETTER, DECISIONS_AUTOSCALE, DECISIONS_DESCHEDULE, DECISIONS_NODESCALE
from workers.common import (
    add_common_arguments,
    bootstrap_from,
    broker_check_interval,
    create_topics,
    load_settings,
    make_consumer,
    make_producer,
    run_sessions,
    run_worker,
    worker_id,
)
from workers.kube import ClusterClock, backoff_delays, call_json, describe, is_retryable, new_api_client
from workers.ledger import DisruptionLedger, Reservation, skew_after_eviction, zone_constraint
from workers.ratelimit import KeyedLimiter, Limit, TokenBucket

log = logging.getLogger("kubetide.actuator")

APPLIED_OUTCOMES = ("applied", "dry-run")

# What the actuator calls in the Kubernetes API, as RBAC rules (apiGroup, resource[/subresource], verbs).
# deploy/actuator.yaml must grant at least these (tests/test_rbac.py checks it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", ("get", "list")),               # last-moment read; zone guard counts the workload's pods
    ("", "pods/eviction", ("create",)),          # the Eviction API (never a direct delete)
    ("", "nodes", ("list",)),                    # node -> zone (zone guard, per-zone budget)
    ("", "namespaces", ("get",)),                # opt-in label
    ("policy", "poddisruptionbudgets", ("list",)),  # ledger pre-check of disruptionsAllowed
    ("apps", "deployments", ("get", "patch")),   # idempotency marker kubetide.io/last-decision
    ("apps", "deployments/scale", ("get", "update")),  # scale decisions (PUT with resourceVersion)
    ("", "nodes", ("patch",)),                   # node scaling: taint / untaint, cordon before a drain
    ("", "pods", ("patch",)),                    # node scaling: pod-deletion-cost annotations
)


@dataclass(frozen=True)
class ActuatorSettings:
    dry_run: bool = False
    paused: bool = False
    topics: tuple[str, ...] = (DECISIONS_DESCHEDULE, DECISIONS_AUTOSCALE)
    group_id: str = "kubetide-actuator"
    auto_offset_reset: str = "earliest"
    protected_namespaces: tuple[str, ...] = DEFAULT_PROTECTED_NAMESPACES
    opt_out_annotation: str = "kubetide.io/evict"
    evictions_per_minute: float = 30.0
    rate_burst: int = 5
    max_in_flight: int = 8
    pdb_max_attempts: int = 5
    default_retry_after_s: float = 10.0
    max_retry_after_s: float = 300.0
    error_max_attempts: int = 4
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    request_timeout_s: float = 15.0
    rate_recheck_after_s: float = 1.0
    restore_timeout_s: float = 60.0
    commit_interval_s: float = 1.0
    # keyed rate limits (refuse with skipped: rate-limit, retried later); rate <= 0 disables one
    node_evictions_per_minute: float = 10.0
    node_rate_burst: int = 3
    namespace_evictions_per_minute: float = 20.0
    namespace_rate_burst: int = 5
    workload_evictions_per_minute: float = 6.0
    workload_rate_burst: int = 2
    rate_limit_max_attempts: int = 5
    # kill switch: the config file's actuator.dry_run / actuator.paused, re-read at run time
    kill_switch_interval_s: float = 5.0
    # opt-in mode
    opt_in: bool = False
    opt_in_label: str = "kubetide.io/enabled"
    opt_in_namespaces: tuple[str, ...] = ()
    namespace_cache_s: float = 30.0
    # disruption ledger and zone guard
    budget_window_s: float = 600.0
    budget_per_workload: int = 3
    budget_per_zone: int = 10
    pdb_precheck: bool = True
    zone_guard: bool = True
    zone_max_skew: int = 0
    zone_label: str = "topology.kubernetes.io/zone"
    node_cache_s: float = 30.0
    # scale decisions
    last_decision_annotation: str = "kubetide.io/last-decision"

    def validate(self) -> None:
        unknown = [t for t in self.topics if t not in HANDLERS]
        if not self.topics or unknown:
            raise ValueError(f"topics: {', '.join(unknown) or '(empty)'} has no handler "
                             f"(known: {', '.join(HANDLERS)})")
        if not self.group_id:
            raise ValueError("group_id: must not be empty")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError("auto_offset_reset: must be earliest or latest")
        if self.evictions_per_minute <= 0:
            raise ValueError("evictions_per_minute: must be > 0")
        for name in ("rate_burst", "max_in_flight", "pdb_max_attempts", "error_max_attempts", "node_rate_burst",
                     "namespace_rate_burst", "workload_rate_burst", "rate_limit_max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        for name in ("default_retry_after_s", "max_retry_after_s", "backoff_initial_s", "backoff_max_s",
                     "request_timeout_s", "restore_timeout_s", "commit_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        for name in ("rate_recheck_after_s", "kill_switch_interval_s", "namespace_cache_s", "node_cache_s",
                     "zone_max_skew"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.budget_window_s <= 0:
            raise ValueError("budget_window_s: must be > 0")


@dataclass(frozen=True)
class Result:
    """What happened to one attempt at one decision."""

    outcome: m.Outcome
    reason: str
    message: str = ""
    http_status: int | None = None
    retry_after_s: float | None = None
    ts: float | None = None


@dataclass(frozen=True)
class Guard:
    """What the safety checks learned about a pod: its zone and the PDBs covering it (name -> allowed)."""

    zone: str | None
    pdbs: dict[str, int]


def api_failure(exc: BaseException, what: str, ts: float | None) -> Result:
    """``failed: forbidden`` for a 403 (RBAC), else ``failed: api-error``."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    detail = _status_message(exc) if isinstance(exc, ApiException) and body else describe(exc)
    return Result("failed", "forbidden" if status == 403 else "api-error", f"{what}: {detail}",
                  http_status=status, ts=ts)


# ------------------------------------------------------------------ handlers

class Handler:
    """Applies the decisions of one topic. Subclass per decision topic and register in HANDLERS."""

    topic: ClassVar[str]
    action: ClassVar[str]

    def __init__(self, actuator: Actuator) -> None:
        self.act = actuator
        self.settings = actuator.settings

    def target(self, decision: Any) -> m.PodRef | m.WorkloadRef | None:
        return None

    async def apply(self, decision: Any, attempt: int) -> Result:
        raise NotImplementedError


class EvictHandler(Handler):
    """``decisions.deschedule``: evict one pod through the Eviction API."""

    topic = DECISIONS_DESCHEDULE
    action = "evict"

    def target(self, decision: m.DescheduleDecision) -> m.PodRef:
        return decision.pod

    async def _read_pod(self, d: m.DescheduleDecision) -> tuple[dict | None, float]:
        """(live pod as JSON or None when 404, cluster now). Retries transient errors."""
        core = client.CoreV1Api(self.act.api)
        delays = backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        for i in range(1, self.settings.error_max_attempts + 1):
            try:
                resp = await core.read_namespaced_pod(d.pod.name, d.pod.namespace, _preload_content=False,
                                                      _request_timeout=self.settings.request_timeout_s)
                try:
                    now = self.act.clock.observe(resp.headers)
                    if resp.status == 404:
                        return None, self.act.require_now(now)
                    if 200 <= resp.status < 300:
                        return orjson.loads(await resp.read()), self.act.require_now(now)
                    raise ApiException(status=resp.status, reason=(await resp.text())[:300])
                finally:
                    resp.release()
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                if i >= self.settings.error_max_attempts or not is_retryable(exc):
                    raise
                delay = next(delays)
                log.warning("reading pod %s/%s failed (%s); retry %d in %.1fs", d.pod.namespace, d.pod.name,
                            describe(exc), i, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _check(self, d: m.DescheduleDecision, pod: dict | None, now: float) -> Result | None:
        """The last-moment checks; None when the eviction may go ahead."""
        ref = f"{d.pod.namespace}/{d.pod.name}"
        if d.expires_at < now:
            return Result("expired", "expired", f"decision expired at {d.expires_at:.0f}, cluster time {now:.0f}",
                          ts=now)
        if pod is None:
            return Result("skipped", "gone", f"pod {ref} no longer exists", http_status=404, ts=now)
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return Result("skipped", "gone", f"pod {ref} is already terminating", ts=now)
        if d.pod.uid and meta.get("uid") != d.pod.uid:
            return Result("skipped", "changed", f"pod {ref} has uid {meta.get('uid')}, decision was for "
                          f"{d.pod.uid}", ts=now)
        node = spec.get("nodeName")
        want_node = d.from_node or d.pod.node
        if want_node and node != want_node:
            return Result("skipped", "changed", f"pod {ref} is on {node or 'no node'}, decision was for "
                          f"{want_node}", ts=now)
        annotations = meta.get("annotations") or {}
        if annotations.get(self.settings.opt_out_annotation) == "never":
            return Result("skipped", "opt-out", f"pod {ref} has {self.settings.opt_out_annotation}=never", ts=now)
        if "kubernetes.io/config.mirror" in annotations:
            return Result("skipped", "mirror", f"pod {ref} is a static (mirror) pod", ts=now)
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
        if owners and owners[0].get("kind") == "DaemonSet":
            return Result("skipped", "daemonset", f"pod {ref} belongs to DaemonSet {owners[0].get('name')}", ts=now)
        return None

    async def apply(self, d: m.DescheduleDecision, attempt: int) -> Result:
        ns, name = d.pod.namespace, d.pod.name
        if ns in self.settings.protected_namespaces:
            return Result("skipped", "protected-namespace", f"namespace {ns} is protected; pod {ns}/{name} "
                          "not touched", ts=await self.act.cluster_time())
        have_token = have_keyed = False
        guard: Guard | None = None
        while True:
            try:
                refused = await self.act.check_opted_in(ns)
                if refused is not None:
                    return refused
                pod, now = await self._read_pod(d)
                verdict = self._check(d, pod, now)
                if verdict is not None:
                    return verdict
                assert pod is not None
                guard_or_result = await self._guards(d, pod, now)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                return api_failure(exc, f"cannot check pod {ns}/{name}", self.act.clock.latest)
            if isinstance(guard_or_result, Result):
                return guard_or_result
            guard = guard_or_result
            kill = await self.act.kill_switch()
            if kill is not None:
                log.info("%s: would evict %s/%s from %s (decision %s, %s: %s)", kill, ns, name, d.from_node, d.id,
                         d.strategy, d.reason)
                return Result("dry-run", kill, f"would evict {ns}/{name} from {d.from_node}", ts=now)
            if not have_keyed:
                refusal = self.act.limiter.try_acquire([
                    ("node", (pod.get("spec") or {}).get("nodeName")), ("namespace", ns),
                    ("workload", f"{d.workload.namespace}/{d.workload.name}")])
                if refusal is not None:
                    retry = min(max(refusal.retry_after_s, 0.1), self.settings.max_retry_after_s)
                    return Result("skipped", "rate-limit", f"rate limit of {refusal.key} reached; pod {ns}/{name} "
                                  "not evicted now", retry_after_s=math.ceil(retry * 100) / 100, ts=now)
                have_keyed = True
            if have_token:
                break
            waited = await self.act.bucket.acquire()
            have_token = True
            if waited <= self.settings.rate_recheck_after_s:
                break
            log.debug("waited %.1fs for the rate limit; checking %s/%s again", waited, ns, name)
        reservation = self.act.ledger.reserve(d.id, f"{d.workload.namespace}/{d.workload.name}", guard.zone, now,
                                              pdbs=guard.pdbs, source=d.strategy)
        if isinstance(reservation, str):
            return Result("skipped", "budget", reservation, ts=now)
        result = await self._evict(d, attempt)
        self.act.settle(reservation, result)
        return result

    async def _guards(self, d: m.DescheduleDecision, pod: dict, now: float) -> Guard | Result:
        """Zone guard and the PDBs covering the pod (for the ledger); a Result when refused."""
        ns, name = d.pod.namespace, d.pod.name
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        labels = meta.get("labels") or {}
        node = spec.get("nodeName")
        zones = await self.act.node_zones() if (self.settings.zone_guard or self.settings.budget_per_zone > 0) \
            else {}
        zone = zones.get(node) if node else None
        pdbs: dict[str, int] = {}
        if self.settings.pdb_precheck:
            for b in await self.act.list_json(client.PolicyV1Api(self.act.api).list_namespaced_pod_disruption_budget,
                                              ns):
                if selector_matches((b.get("spec") or {}).get("selector"), labels):
                    allowed = int((b.get("status") or {}).get("disruptionsAllowed") or 0)
                    pdbs[f"{ns}/{(b.get('metadata') or {}).get('name')}"] = allowed
        if self.settings.zone_guard and zone:
            max_skew, selector = zone_constraint(spec, self.settings.zone_label) or (None, None)
            owner = next((o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
            if max_skew is None and self.settings.zone_max_skew > 0:
                max_skew = self.settings.zone_max_skew
            if max_skew is not None:
                counts: Counter[str] = Counter()
                for p in await self.act.list_json(client.CoreV1Api(self.act.api).list_namespaced_pod, ns):
                    pm, ps = p.get("metadata") or {}, p.get("spec") or {}
                    if pm.get("deletionTimestamp") or not ps.get("nodeName") or ps["nodeName"] not in zones:
                        continue
                    if selector is not None:
                        same = selector_matches(selector, pm.get("labels") or {})
                    else:
                        same = owner is not None and any(o.get("uid") == owner for o in pm.get("ownerReferences") or [])
                    if same:
                        counts[zones[ps["nodeName"]]] += 1
                before, after = skew_after_eviction(counts, set(zones.values()), zone)
                if after > max_skew and after > before:
                    return Result("skipped", "zone-guard", f"evicting {ns}/{name} from {zone} would raise the zone "
                                  f"skew of its workload from {before} to {after} (maxSkew {max_skew}; pods per zone "
                                  f"{dict(sorted(counts.items()))})", ts=now)
        return Guard(zone=zone, pdbs=pdbs)

    async def _evict(self, d: m.DescheduleDecision, attempt: int) -> Result:
        ns, name = d.pod.namespace, d.pod.name
        core = client.CoreV1Api(self.act.api)
        body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                                 metadata=client.V1ObjectMeta(name=name, namespace=ns))
        delays = backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        for i in range(1, self.settings.error_max_attempts + 1):
            try:
                _, status, headers = await core.create_namespaced_pod_eviction_with_http_info(
                    name, ns, body, _request_timeout=self.settings.request_timeout_s)
                now = self.act.clock.observe(headers) or self.act.clock.latest
                log.info("evicted %s/%s from %s (decision %s, %s)", ns, name, d.from_node, d.id, d.strategy)
                return Result("applied", "evicted", f"evicted {ns}/{name} from {d.from_node}", http_status=status,
                              ts=now)
            except ApiException as exc:
                now = self.act.clock.observe(exc.headers) or self.act.clock.latest
                msg = _status_message(exc)
                if exc.status == 429:
                    retry = _retry_after(exc, self.settings.default_retry_after_s)
                    retry = min(retry, self.settings.max_retry_after_s)
                    return Result("skipped", "pdb", msg or "eviction refused (429)", http_status=429,
                                  retry_after_s=retry, ts=now)
                if exc.status == 404:
                    return Result("skipped", "gone", msg or f"pod {ns}/{name} not found", http_status=404, ts=now)
                if exc.status == 403:
                    return Result("failed", "forbidden", msg or "forbidden", http_status=403, ts=now)
                error: BaseException = exc
                last = Result("failed", "api-error", msg or describe(exc), http_status=exc.status, ts=now)
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = exc
                last = Result("failed", "api-error", describe(exc), ts=self.act.clock.latest)
            if i >= self.settings.error_max_attempts or not is_retryable(error):
                return dataclasses.replace(last, message=f"{last.message} (after {i} attempt{'s' * (i > 1)})")
            if last.ts is not None and d.expires_at < last.ts:
                return Result("expired", "expired", f"expired while retrying: {last.message}",
                              http_status=last.http_status, ts=last.ts)
            delay = next(delays)
            log.warning("evicting %s/%s failed (%s); retry %d in %.1fs", ns, name, last.message, i, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")


class ScaleHandler(Handler):
    """``decisions.autoscale``: set a Deployment's replicas through its ``scale`` subresource.

    Read the Deployment (marker annotation) and its Scale; equal replicas → ``skipped: no-change``;
    a scale-in draws ``current - desired`` disruptions from the ledger (``skipped: budget``); the
    write is a PUT of the Scale with its resourceVersion (optimistic concurrency): a 409 conflict
    reads again and retries (``error_max_attempts``). After the write the Deployment is annotated
    ``kubetide.io/last-decision: <decision id>``, so a decision whose outcome was lost is
    recognised on the object (``duplicate``, reason ``marker``) even without ``actions``.
    """

    topic = DECISIONS_AUTOSCALE
    action = "scale"

    def target(self, decision: m.AutoscaleDecision) -> m.WorkloadRef:
        return decision.workload

    async def _mark_scale_in(self, d: m.AutoscaleDecision) -> None:
        """Zone-aware scale-in (``streams/core/autoscaler.py``): the pods the planner chose to go first
        (evidence ``scale_in_pods``) get ``controller.kubernetes.io/pod-deletion-cost: "-1000"`` (merge patch)
        before the scale is written, so the ReplicaSet controller deletes them first. Best effort: a pod
        that is gone or cannot be patched is left as it is (the scale-in still happens)."""
        ns = d.workload.namespace
        core = client.CoreV1Api(self.act.api)
        for name in [n for n in str(d.evidence.get("scale_in_pods") or "").split(",") if n]:
            try:
                await self.act.get_json(core.patch_namespaced_pod, name, ns,
                                        {"metadata": {"annotations": {
                                            "controller.kubernetes.io/pod-deletion-cost": "-1000"}}},
                                        retry=False, _content_type="application/merge-patch+json")
            except Exception as exc:  # a missing pod or a forbidden patch must not stop the scale-in
                log.info("scale-in mark of %s/%s skipped: %s", ns, name, exc)

    async def apply(self, d: m.AutoscaleDecision, attempt: int) -> Result:
        w = d.workload
        ref = f"{w.namespace}/{w.name}"
        if w.namespace in self.settings.protected_namespaces:
            return Result("skipped", "protected-namespace", f"namespace {w.namespace} is protected; {ref} not "
                          "touched", ts=await self.act.cluster_time())
        if w.kind != "Deployment":
            return Result("failed", "unsupported", f"cannot scale a {w.kind} ({ref}): only Deployments",
                          ts=await self.act.cluster_time())
        apps = client.AppsV1Api(self.act.api)
        last: Result | None = None
        delays = backoff_delays(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        for i in range(1, self.settings.error_max_attempts + 1):
            try:
                refused = await self.act.check_opted_in(w.namespace)
                if refused is not None:
                    return refused
                dep = await self.act.get_json(apps.read_namespaced_deployment, w.name, w.namespace)
                now = self.act.require_now(self.act.clock.latest)
                if d.expires_at < now:
                    return Result("expired", "expired", f"decision expired at {d.expires_at:.0f}, cluster time "
                                  f"{now:.0f}", ts=now)
                if dep is None:
                    return Result("skipped", "gone", f"deployment {ref} does not exist", http_status=404, ts=now)
                marker = ((dep.get("metadata") or {}).get("annotations") or {}).get(
                    self.settings.last_decision_annotation)
                if marker == d.id:
                    return Result("duplicate", "marker", f"{ref} already carries "
                                  f"{self.settings.last_decision_annotation}={d.id}", ts=now)
                scale = await self.act.get_json(apps.read_namespaced_deployment_scale, w.name, w.namespace)
                if scale is None:
                    return Result("skipped", "gone", f"deployment {ref} does not exist", http_status=404, ts=now)
                current = int((scale.get("spec") or {}).get("replicas") or 0)
                if current == d.desired_replicas:
                    return Result("skipped", "no-change", f"{ref} already has {current} replicas", ts=now)
                kill = await self.act.kill_switch()
                if kill is not None:
                    return Result("dry-run", kill, f"would scale {ref} from {current} to {d.desired_replicas}", ts=now)
                reservation: Reservation | None = None
                if d.desired_replicas < current:
                    got = self.act.ledger.reserve(d.id, ref, None, now, n=current - d.desired_replicas,
                                                  source=f"{d.strategy}:scale-in")
                    if isinstance(got, str):
                        return Result("skipped", "budget", got, ts=now)
                    reservation = got
                    await self._mark_scale_in(d)
                body = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": {"name": w.name, "namespace": w.namespace,
                                     "resourceVersion": (scale.get("metadata") or {}).get("resourceVersion")},
                        "spec": {"replicas": d.desired_replicas}}
                try:
                    await self.act.get_json(apps.replace_namespaced_deployment_scale, w.name, w.namespace, body,
                                            retry=False)
                except BaseException:
                    if reservation is not None:
                        self.act.ledger.release(reservation)
                    raise
                now = self.act.require_now(self.act.clock.latest)
                if reservation is not None:
                    self.act.ledger.commit(reservation, now)
                note = ""
                try:
                    await self.act.get_json(
                        apps.patch_namespaced_deployment, w.name, w.namespace,
                        {"metadata": {"annotations": {self.settings.last_decision_annotation: d.id}}},
                        _content_type="application/merge-patch+json")
                except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                    note = f" (marker annotation not written: {describe(exc)})"
                    log.warning("scaled %s but could not annotate it: %s", ref, describe(exc))
                return Result("applied", "scaled", f"scaled {ref} from {current} to {d.desired_replicas}{note}",
                              http_status=200, ts=now)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                status = getattr(exc, "status", None)
                if (status == 409 or is_retryable(exc)) and i < self.settings.error_max_attempts:
                    # 409: read again at once. 5xx / timeouts: after a jittered backoff; the write may have
                    # been made (a lost answer), and reading again shows it (no-change), never scales twice.
                    log.info("scaling %s: %s (attempt %d); reading it again", ref, describe(exc), i)
                    last = api_failure(exc, f"cannot scale {ref}", self.act.clock.latest)
                    if status != 409:
                        await asyncio.sleep(next(delays))
                    continue
                return api_failure(exc, f"cannot scale {ref}", self.act.clock.latest)
        assert last is not None
        return last


class NodescaleHandler(Handler):
    """``decisions.nodescale``: the controller's part of an elastic node group (the cluster-autoscaler adds
    and removes the nodes). Expired → ``expired``; kill switch → ``dry-run``; protected namespaces are not
    touched. Every write goes through the actions below; an API error is ``failed`` (403: ``forbidden``).

    - ``taint`` / ``untaint``: the node (found by a list with ``metadata.name``) gets its ``spec.taints``
      merge-patched with ``params`` ``key``/``value``/``effect`` added or ``key`` removed
      (``applied: tainted`` / ``untainted``; already so → ``skipped: no-change``).
    - ``annotate-pods``: each pod of ``params.pods`` still on the decision's node gets
      ``controller.kubernetes.io/pod-deletion-cost`` = ``params.cost`` (null removes it) by merge patch
      (``applied: annotated``; none needed it → ``skipped: no-change``).
    - ``size-placeholder``: ``replicas`` on the scale subresource of ``params.namespace``/``params.name``
      (PUT with resourceVersion; ``applied: scaled``, equal → ``skipped: no-change``).
    - ``drain``: cordon (``spec.unschedulable: true``), then every non-DaemonSet, non-mirror pod on the
      node outside protected namespaces is evicted through the Eviction API, one token of the global
      eviction bucket each and the node's keyed bucket; all gone → ``applied: drained``; a 429 →
      ``skipped: pdb`` with Retry-After (the whole decision is retried, the pods already gone are not
      there any more); a keyed bucket empty → ``skipped: rate-limit`` (retried too).
    """

    topic = DECISIONS_NODESCALE
    action = "nodescale"
    COST = "controller.kubernetes.io/pod-deletion-cost"

    async def apply(self, d: m.NodescaleDecision, attempt: int) -> Result:
        now = await self.act.cluster_time()
        if d.expires_at < now:
            return Result("expired", "expired", f"decision expired at {d.expires_at:.0f}, cluster time {now:.0f}",
                          ts=now)
        kill = await self.act.kill_switch()
        if kill is not None:
            return Result("dry-run", kill, f"would {d.action} {d.node or d.node_group}: {d.reason}", ts=now)
        fn = {"taint": self._taint, "untaint": self._taint, "annotate-pods": self._annotate,
              "size-placeholder": self._size, "drain": self._drain}.get(d.action)
        if fn is None:
            return Result("failed", "unsupported", f"node-scale action {d.action} is not supported", ts=now)
        try:
            return await fn(d, now)
        except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
            return api_failure(exc, f"cannot {d.action} {d.node or d.node_group}", self.act.clock.latest)

    async def _node(self, name: str | None) -> dict | None:
        if not name:
            return None
        items = await self.act.list_json(client.CoreV1Api(self.act.api).list_node,
                                         field_selector=f"metadata.name={name}")
        return next((n for n in items if (n.get("metadata") or {}).get("name") == name), None)

    async def _patch_node(self, name: str, body: dict) -> None:
        await self.act.get_json(client.CoreV1Api(self.act.api).patch_node, name, body, retry=False,
                                _content_type="application/merge-patch+json")

    async def _taint(self, d: m.NodescaleDecision, now: float) -> Result:
        node = await self._node(d.node)
        if node is None:
            return Result("skipped", "gone", f"node {d.node} does not exist", http_status=404, ts=now)
        key = str(d.params.get("key") or "")
        taints = list((node.get("spec") or {}).get("taints") or [])
        kept = [t for t in taints if t.get("key") != key]
        if d.action == "taint":
            want = {"key": key, "effect": str(d.params.get("effect") or "PreferNoSchedule")}
            if d.params.get("value"):
                want["value"] = str(d.params["value"])
            if any(t.get("key") == key and t.get("effect") == want["effect"] for t in taints):
                return Result("skipped", "no-change", f"node {d.node} already has {key}:{want['effect']}", ts=now)
            new, what = [*kept, want], "tainted"
        else:
            if len(kept) == len(taints):
                return Result("skipped", "no-change", f"node {d.node} has no taint {key}", ts=now)
            new, what = kept, "untainted"
        await self._patch_node(str(d.node), {"spec": {"taints": new}})
        return Result("applied", what, f"node {d.node}: {what} {key}", http_status=200,
                      ts=self.act.require_now(self.act.clock.latest))

    async def _annotate(self, d: m.NodescaleDecision, now: float) -> Result:
        core = client.CoreV1Api(self.act.api)
        cost = d.params.get("cost")
        want = None if cost is None else str(cost)
        done = 0
        for ref in str(d.params.get("pods") or "").split(","):
            if "/" not in ref:
                continue
            ns, name = ref.split("/", 1)
            if ns in self.settings.protected_namespaces:
                continue
            pod = await self.act.get_json(core.read_namespaced_pod, name, ns)
            if pod is None or (pod.get("spec") or {}).get("nodeName") != d.node:
                continue
            if ((pod.get("metadata") or {}).get("annotations") or {}).get(self.COST) == want:
                continue
            await self.act.get_json(core.patch_namespaced_pod, name, ns,
                                    {"metadata": {"annotations": {self.COST: want}}}, retry=False,
                                    _content_type="application/merge-patch+json")
            done += 1
        if not done:
            return Result("skipped", "no-change", "no listed pod needed the annotation", ts=now)
        return Result("applied", "annotated", f"{done} pod(s) on {d.node}: pod-deletion-cost="
                      f"{want if want is not None else 'cleared'}", http_status=200,
                      ts=self.act.require_now(self.act.clock.latest))

    async def _size(self, d: m.NodescaleDecision, now: float) -> Result:
        ns, name = str(d.params.get("namespace") or ""), str(d.params.get("name") or "")
        if ns in self.settings.protected_namespaces:
            return Result("skipped", "protected-namespace", f"namespace {ns} is protected; {ns}/{name} not touched",
                          ts=now)
        apps = client.AppsV1Api(self.act.api)
        scale = await self.act.get_json(apps.read_namespaced_deployment_scale, name, ns)
        if scale is None or d.replicas is None:
            return Result("skipped", "gone", f"deployment {ns}/{name} does not exist", http_status=404, ts=now)
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        if current == d.replicas:
            return Result("skipped", "no-change", f"{ns}/{name} already has {current} replicas", ts=now)
        body = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": ns,
                             "resourceVersion": (scale.get("metadata") or {}).get("resourceVersion")},
                "spec": {"replicas": d.replicas}}
        await self.act.get_json(apps.replace_namespaced_deployment_scale, name, ns, body, retry=False)
        return Result("applied", "scaled", f"placeholder {ns}/{name} from {current} to {d.replicas}",
                      http_status=200, ts=self.act.require_now(self.act.clock.latest))

    async def _drain(self, d: m.NodescaleDecision, now: float) -> Result:
        node = await self._node(d.node)
        if node is None:
            return Result("skipped", "gone", f"node {d.node} does not exist", http_status=404, ts=now)
        if not (node.get("spec") or {}).get("unschedulable"):
            await self._patch_node(str(d.node), {"spec": {"unschedulable": True}})
        core = client.CoreV1Api(self.act.api)
        pods = await self.act.list_json(core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={d.node}")
        evicted = 0
        for p in sorted(pods, key=lambda p: ((p.get("metadata") or {}).get("namespace", ""),
                                             (p.get("metadata") or {}).get("name", ""))):
            meta = p.get("metadata") or {}
            ns, name = meta.get("namespace") or "", meta.get("name") or ""
            owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
            if ns in self.settings.protected_namespaces or meta.get("deletionTimestamp") \
                    or "kubernetes.io/config.mirror" in (meta.get("annotations") or {}) \
                    or (owners and owners[0].get("kind") == "DaemonSet"):
                continue
            refusal = self.act.limiter.try_acquire([("node", d.node)])
            if refusal is not None:
                retry = min(max(refusal.retry_after_s, 0.1), self.settings.max_retry_after_s)
                return Result("skipped", "rate-limit", f"cordoned {d.node}; evicted {evicted}; rate limit of "
                              f"{refusal.key} reached", retry_after_s=math.ceil(retry * 100) / 100, ts=now)
            await self.act.bucket.acquire()
            body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                                     metadata=client.V1ObjectMeta(name=name, namespace=ns))
            try:
                await core.create_namespaced_pod_eviction(name, ns, body,
                                                          _request_timeout=self.settings.request_timeout_s)
                evicted += 1
            except ApiException as exc:
                if exc.status == 404:
                    continue
                if exc.status == 429:
                    retry = min(_retry_after(exc, self.settings.default_retry_after_s), self.settings.max_retry_after_s)
                    return Result("skipped", "pdb", f"cordoned {d.node}; evicted {evicted}; {ns}/{name}: "
                                  f"{_status_message(exc) or 'refused (429)'}", http_status=429,
                                  retry_after_s=retry, ts=self.act.clock.observe(exc.headers) or now)
                raise
        return Result("applied", "drained", f"cordoned {d.node}; evicted {evicted} pod(s)", http_status=201,
                      ts=await self.act.cluster_time())


def _status_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes | bytearray):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body:
        try:
            obj = orjson.loads(body)
            if isinstance(obj, dict) and obj.get("message"):
                return str(obj["message"])[:500]
        except orjson.JSONDecodeError:
            return body[:500]
    return str(exc.reason or "")[:500]


def _retry_after(exc: ApiException, default: float) -> float:
    headers = exc.headers or {}
    raw = headers.get("Retry-After") if hasattr(headers, "get") else None
    if raw:
        with contextlib.suppress(ValueError):
            return max(0.0, float(raw))
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes | bytearray) else exc.body
    if isinstance(body, str) and body:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            secs = (orjson.loads(body).get("details") or {}).get("retryAfterSeconds")
            if secs is not None:
                return max(0.0, float(secs))
    return default


HANDLERS: dict[str, Callable[[Actuator], Handler]] = {DECISIONS_DESCHEDULE: EvictHandler,
                                                      DECISIONS_AUTOSCALE: ScaleHandler}
HANDLERS[DECISIONS_NODESCALE] = NodescaleHandler


# ------------------------------------------------------------------ offsets

class OffsetTracker:
    """Per partition: offsets in flight; the committable offset is the lowest one still in flight."""

    def __init__(self) -> None:
        self.pending: dict[Any, set[int]] = {}
        self.next: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}

    def start(self, tp: Any, offset: int) -> None:
        self.pending.setdefault(tp, set()).add(offset)
        self.next[tp] = max(self.next.get(tp, 0), offset + 1)

    def done(self, tp: Any, offset: int) -> None:
        if tp in self.pending:
            self.pending[tp].discard(offset)

    def committable(self) -> dict[Any, int]:
        out = {}
        for tp, nxt in self.next.items():
            pend = self.pending.get(tp)
            off = min(pend) if pend else nxt
            if off > self.committed.get(tp, -1):
                out[tp] = off
        return out

    def forget(self, tps: Any) -> None:
        for tp in tps:
            self.pending.pop(tp, None)
            self.next.pop(tp, None)
            self.committed.pop(tp, None)


# ------------------------------------------------------------------ actuator

class Actuator:
    """Consumes decision topics, applies them, writes ``actions``. The caller owns api and producer."""

    def __init__(self, api: client.ApiClient, producer: Any, bootstrap: str,
                 settings: ActuatorSettings | None = None, *, embedded: bool = False, name: str = "",
                 config_path: str | None = None, dry_run_locked: bool | None = None) -> None:
        self.api = api
        self.producer = producer
        self.bootstrap = bootstrap
        self.settings = settings or ActuatorSettings()
        self.embedded = embedded
        self.name = name or worker_id("actuator")
        self.clock = ClusterClock()
        self.bucket = TokenBucket(self.settings.evictions_per_minute, self.settings.rate_burst)
        st = self.settings
        self.limiter = KeyedLimiter({"node": Limit(st.node_evictions_per_minute, st.node_rate_burst),
                                     "namespace": Limit(st.namespace_evictions_per_minute, st.namespace_rate_burst),
                                     "workload": Limit(st.workload_evictions_per_minute, st.workload_rate_burst)})
        self.ledger = DisruptionLedger(st.budget_window_s, st.budget_per_workload, st.budget_per_zone)
        self.config_path = config_path
        # --dry-run on the command line cannot be lifted at run time; dry_run from the config file can
        self.dry_run_locked = st.dry_run if dry_run_locked is None else dry_run_locked
        self.switch = {"dry_run": st.dry_run, "paused": st.paused}
        self._switch_start = dict(self.switch)
        self._switch_lock = asyncio.Lock()
        self._switch_read = -1e18
        self._ns_cache: dict[str, tuple[float, dict | None]] = {}
        self._zones: tuple[float, dict[str, str]] | None = None
        self.handlers = {t: HANDLERS[t](self) for t in self.settings.topics}
        self.applied: set[str] = set()
        self.retry_pending: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.ready = asyncio.Event()  # set once applied ids are restored and the group has partitions
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: Counter[str] = Counter()
        self._fatal: BaseException | None = None
        self._tasks: set[asyncio.Task] = set()
        self._sem = asyncio.Semaphore(self.settings.max_in_flight)
        self._offsets = OffsetTracker()
        self._consumer: Any = None

    # ---------------------------------------------------------------- time

    def require_now(self, t: float | None) -> float:
        if t is not None:
            return t
        if self.clock.latest is not None:
            return self.clock.latest
        raise RuntimeError("the API server sent no Date header: cannot tell the cluster time")

    async def cluster_time(self) -> float:
        try:
            return await self.clock.refresh(self.api)
        except Exception as exc:
            if self.clock.latest is not None:
                return self.clock.latest
            log.warning("cannot read the cluster time (%s); using the local clock for this record", describe(exc))
            return time.time()

    # ---------------------------------------------------------------- cluster reads

    async def get_json(self, fn: Callable[..., Any], *args: Any, retry: bool = True, **kw: Any) -> dict | None:
        """``fn(*args, _preload_content=False)`` → JSON body, None on 404; other errors raise
        :class:`ApiStatusError`. Transient errors are retried with backoff when ``retry``."""
        st = self.settings
        return await call_json(fn, *args, clock=self.clock, attempts=st.error_max_attempts,
                               backoff=(st.backoff_initial_s, st.backoff_max_s), timeout_s=st.request_timeout_s,
                               retry=retry, **kw)

    async def list_json(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> list[dict]:
        data = await self.get_json(fn, *args, **kw)
        return list((data or {}).get("items") or [])

    async def node_zones(self) -> dict[str, str]:
        """node name -> zone (``zone_label``), cached for ``node_cache_s``."""
        mono = time.monotonic()
        if self._zones is not None and mono - self._zones[0] < self.settings.node_cache_s:
            return self._zones[1]
        zones = {}
        for n in await self.list_json(client.CoreV1Api(self.api).list_node):
            meta = n.get("metadata") or {}
            zone = (meta.get("labels") or {}).get(self.settings.zone_label)
            if zone:
                zones[meta.get("name")] = zone
        self._zones = (mono, zones)
        return zones

    async def check_opted_in(self, ns: str) -> Result | None:
        """None when ``ns`` may be touched; ``skipped: not-opted-in`` in opt-in mode otherwise."""
        st = self.settings
        if not st.opt_in or ns in st.opt_in_namespaces:
            return None
        mono = time.monotonic()
        cached = self._ns_cache.get(ns)
        if cached is None or mono - cached[0] >= st.namespace_cache_s:
            cached = self._ns_cache[ns] = (mono, await self.get_json(client.CoreV1Api(self.api).read_namespace, ns))
        labels = ((cached[1] or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(st.opt_in_label) == "true":
            return None
        return Result("skipped", "not-opted-in", f"opt-in mode: namespace {ns} is not labelled "
                      f"{st.opt_in_label}=true; not touched", ts=await self.cluster_time())

    async def kill_switch(self) -> str | None:
        """None (go ahead), ``dry-run`` (dry run since the start: ``--dry-run``, or the config file's
        ``dry_run`` unchanged since the start) or ``kill-switch`` (``paused``, or ``dry_run`` switched on at
        run time). The config file is re-read at most every ``kill_switch_interval_s`` seconds."""
        if self.dry_run_locked:
            return "dry-run"
        if self.config_path:
            async with self._switch_lock:  # concurrent decisions wait for a re-read under way
                if time.monotonic() - self._switch_read >= self.settings.kill_switch_interval_s:
                    await self._reread_switch()
        if self.switch["paused"]:
            return "kill-switch"
        if self.switch["dry_run"]:
            return "dry-run" if self.switch == self._switch_start else "kill-switch"
        return None

    async def _reread_switch(self) -> None:
        try:
            from kubetide import config as ktconfig

            data = await asyncio.to_thread(ktconfig.load, self.config_path)
            sect = ktconfig.section(data, "actuator")
            new = {"dry_run": bool(sect.get("dry_run", False)), "paused": bool(sect.get("paused", False))}
            if new != self.switch:
                log.warning("kill switch in %s: dry_run=%s paused=%s", self.config_path, new["dry_run"],
                            new["paused"])
            self.switch = new
        except Exception as exc:  # keep the last known state
            log.warning("cannot re-read %s for the kill switch (%s); keeping dry_run=%s paused=%s",
                        self.config_path, describe(exc), self.switch["dry_run"], self.switch["paused"])
        self._switch_read = time.monotonic()

    def settle(self, reservation: Reservation, result: Result) -> None:
        if result.outcome == "applied":
            now = result.ts if result.ts is not None else self.clock.latest
            self.ledger.commit(reservation, now if now is not None else time.time())
        else:
            self.ledger.release(reservation)

    # ---------------------------------------------------------------- applied ids

    def _note_action(self, raw: bytes | None) -> None:
        try:
            action = decode(ACTIONS, raw)
        except DecodeError:
            return
        if isinstance(action, m.Action) and action.outcome in APPLIED_OUTCOMES:
            self.applied.add(action.decision_id)

    async def restore_applied(self, consumer: Any) -> int:
        """Read ``actions`` from the beginning to its high-water mark; returns records read."""
        from aiokafka import TopicPartition

        await consumer.topics()  # metadata of all topics (creates none)
        parts = consumer.partitions_for_topic(ACTIONS) or set()
        tps = [TopicPartition(ACTIONS, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.restore_timeout_s
        n = 0
        while tps:
            batches = await gapless_getmany(consumer, timeout_ms=200)
            for records in batches.values():
                for rec in records:
                    self._note_action(rec.value)
                    n += 1
            caught_up = True
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is None or await consumer.position(tp) < hw:
                    caught_up = False
            if caught_up:
                break
            if loop.time() > deadline:
                log.warning("could not read all of %s within %.0fs; %d applied ids known so far", ACTIONS,
                            self.settings.restore_timeout_s, len(self.applied))
                break
        log.info("restored %d applied decision ids from %d records of %s", len(self.applied), n, ACTIONS)
        return n

    async def _follow_actions(self, consumer: Any, stop: asyncio.Event) -> None:
        """Keep reading ``actions`` (other replicas' outcomes too) into the applied set."""
        while not stop.is_set():
            try:
                batches = await gapless_getmany(consumer, timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading %s failed: %s", ACTIONS, describe(exc))
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for rec in records:
                    self._note_action(rec.value)

    # ---------------------------------------------------------------- output

    async def write_action(self, topic: str, decision: Any, result: Result, attempt: int) -> m.Action:
        handler = self.handlers[topic]
        ts = result.ts if result.ts is not None else await self.cluster_time()
        action = m.Action(
            ts=ts, decision_id=decision.id, decision_topic=topic, strategy=decision.strategy,
            action=handler.action, target=handler.target(decision), outcome=result.outcome, reason=result.reason,
            message=result.message, http_status=result.http_status, retry_after_s=result.retry_after_s,
            attempt=attempt, worker=self.name)
        await self.producer.send_and_wait(ACTIONS, encode(action), key=decision.id.encode())
        metrics.observe_produced(ACTIONS)
        metrics.observe_action(result.outcome, result.reason, getattr(action.target, "namespace", None))
        if attempt == 1:
            metrics.observe_latency(topic, decision.made_at, ts)
        if result.outcome in APPLIED_OUTCOMES:
            self.applied.add(decision.id)
        self.stats[f"{result.outcome}:{result.reason}"] += 1
        log.info("decision %s (%s) attempt %d → %s: %s%s", decision.id, decision.strategy, attempt,
                 action.summary, result.message, f" [HTTP {result.http_status}]" if result.http_status else "")
        return action

    async def dead_letter(self, exc: BaseException, rec: Any) -> None:
        dl = dead_letter_for(exc, rec.value, origin_topic=rec.topic, origin_partition=rec.partition,
                             origin_offset=rec.offset, origin_key=rec.key, worker=self.name)
        await self.producer.send_and_wait(DEADLETTER, encode(dl), key=rec.topic.encode())
        metrics.observe_deadletter(rec.topic, dl.reason)
        self.stats[f"deadletter:{dl.reason}"] += 1
        log.warning("%s[%d]@%d → deadletter (%s): %s", rec.topic, rec.partition, rec.offset, dl.reason, dl.error)

    # ---------------------------------------------------------------- processing

    async def handle_record(self, rec: Any) -> None:
        """Decode and handle one record; its offset becomes committable only once an outcome is written."""
        try:
            decision = decode(rec.topic, rec.value)
        except DecodeError as exc:
            await self.dead_letter(exc, rec)
        else:
            try:
                await self.handle_decision(rec.topic, decision, attempt=1)
            except asyncio.CancelledError:
                raise
            except KafkaError:
                raise  # the outcome could not be written: do not commit, stop
            except Exception as exc:
                log.exception("decision at %s[%d]@%d could not be processed", rec.topic, rec.partition, rec.offset)
                await self.dead_letter(exc, rec)
        self._offsets.done(_tp(rec), rec.offset)

    async def handle_decision(self, topic: str, decision: Any, attempt: int, *, is_retry: bool = False) -> Result:
        lock = self._locks.setdefault(decision.id, asyncio.Lock())
        self._lock_users[decision.id] += 1
        try:
            async with lock:
                if decision.id in self.applied:
                    result = Result("duplicate", "already-applied", "decision already applied", ts=None)
                elif decision.id in self.retry_pending and not is_retry:
                    result = Result("duplicate", "retry-pending", "decision is waiting for a retry", ts=None)
                else:
                    result = await self.handlers[topic].apply(decision, attempt)
                    result = self._maybe_schedule_retry(topic, decision, result, attempt)
                await self.write_action(topic, decision, result, attempt)
                return result
        finally:
            self._lock_users[decision.id] -= 1
            if self._lock_users[decision.id] <= 0:
                del self._lock_users[decision.id]
                self._locks.pop(decision.id, None)

    def _maybe_schedule_retry(self, topic: str, decision: Any, result: Result, attempt: int) -> Result:
        self.retry_pending.discard(decision.id)
        max_attempts = {"pdb": self.settings.pdb_max_attempts,
                        "rate-limit": self.settings.rate_limit_max_attempts}.get(result.reason)
        if result.outcome != "skipped" or max_attempts is None or result.retry_after_s is None:
            return result
        if attempt >= max_attempts:
            return dataclasses.replace(result, message=f"{result.message} (attempt {attempt}, giving up)")
        now = result.ts if result.ts is not None else self.clock.latest
        if now is not None and now + result.retry_after_s > decision.expires_at:
            return dataclasses.replace(result, message=f"{result.message} (no retry: expires before Retry-After)")
        self.retry_pending.add(decision.id)
        task = asyncio.create_task(self._retry_later(topic, decision, attempt + 1, result.retry_after_s),
                                   name=f"retry-{decision.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return dataclasses.replace(result, message=f"{result.message} (retry {attempt + 1}/"
                                   f"{max_attempts} in {result.retry_after_s:.0f}s)")

    async def _retry_later(self, topic: str, decision: Any, attempt: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._sem:  # an in-flight slot only while actually working
            try:
                await self.handle_decision(topic, decision, attempt, is_retry=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.retry_pending.discard(decision.id)
                log.exception("retry of decision %s failed", decision.id)

    async def _run_one(self, rec: Any, stop: asyncio.Event) -> None:
        try:
            await self.handle_record(rec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("cannot record the outcome of %s[%d]@%d (%s); stopping", rec.topic, rec.partition,
                      rec.offset, describe(exc))
            self._fatal = exc
            stop.set()
        finally:
            self._sem.release()

    # ---------------------------------------------------------------- main loop

    async def _commit(self, consumer: Any) -> None:
        from aiokafka.structs import OffsetAndMetadata

        offsets = self._offsets.committable()
        assigned = consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not offsets:
            return
        await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()})
        self._offsets.committed.update(offsets)

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import ConsumerRebalanceListener

        tracker, actuator = self._offsets, self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                with contextlib.suppress(Exception):
                    await actuator._commit(actuator._consumer)
                tracker.forget(revoked)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                if actuator._consumer is not None:
                    forget_gaps(actuator._consumer, assigned)  # positions restart at the committed offsets
                metrics.observe_rebalance(actuator.settings.group_id)
                log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or
                         "no partitions")

        reader = make_consumer(self.bootstrap, embedded=self.embedded, group_id=None,
                               client_id=f"{self.name}-actions-reader")
        await reader.start()
        follow: asyncio.Task | None = None
        consumer = None
        try:
            await self.restore_applied(reader)
            follow = asyncio.create_task(self._follow_actions(reader, stop), name="follow-actions")
            consumer = self._consumer = make_consumer(
                self.bootstrap, embedded=self.embedded, group_id=self.settings.group_id, client_id=self.name,
                auto_offset_reset=self.settings.auto_offset_reset)
            consumer.subscribe(list(self.settings.topics), listener=Listener())
            await consumer.start()
            log.info("actuator %s: consuming %s as group %s%s", self.name, ", ".join(self.settings.topics),
                     self.settings.group_id, " (DRY RUN)" if self.settings.dry_run else "")
            loop = asyncio.get_running_loop()
            next_commit = loop.time() + self.settings.commit_interval_s
            commit_failures = 0
            while not stop.is_set():
                batches = await gapless_getmany(consumer, timeout_ms=200, max_records=self.settings.max_in_flight)
                if consumer.assignment():
                    self.ready.set()
                for tp, records in batches.items():
                    metrics.observe_consumed(tp.topic, len(records))
                    for rec in records:
                        await self._sem.acquire()
                        self._offsets.start(_tp(rec), rec.offset)
                        task = asyncio.create_task(self._run_one(rec, stop), name=f"decision-{rec.offset}")
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                if loop.time() >= next_commit:
                    next_commit = loop.time() + self.settings.commit_interval_s
                    try:
                        await self._commit(consumer)
                        commit_failures = 0
                    except Exception as exc:
                        commit_failures += 1
                        log.warning("offset commit failed (%d in a row): %s", commit_failures, describe(exc))
                        if commit_failures >= 30:
                            raise RuntimeError("offset commits keep failing (broker restarted?); exiting") from exc
        finally:
            # Let decisions being applied finish (their outcome is recorded), drop pending retries.
            busy = [t for t in self._tasks if not t.get_name().startswith("retry-")]
            for t in self._tasks:
                if t.get_name().startswith("retry-"):
                    t.cancel()
            if busy:
                await asyncio.wait(busy, timeout=self.settings.request_timeout_s * 2)
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await self._commit(consumer)
                await consumer.stop()
            if follow is not None:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await follow
            await reader.stop()
            if self._fatal is not None:
                raise RuntimeError(f"actuator stopped on an error: {describe(self._fatal)}") from self._fatal
            log.info("actuator stopped: %s", ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))
                     or "no decisions")


def _tp(rec: Any) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(rec.topic, rec.partition)


# -------------------------------------------------------------------- entry point

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", default=None,
                        help="decide and record outcomes, never write to the cluster")
    parser.add_argument("--group-id", default=None, help="consumer group (default kubetide-actuator)")
    parser.add_argument("--evictions-per-minute", type=float, default=None,
                        help="global eviction rate limit (default 30)")


def settings_from(args: argparse.Namespace) -> ActuatorSettings:
    s = load_settings(args, ActuatorSettings, "actuator")
    over: dict[str, Any] = {}
    if getattr(args, "dry_run", None):
        over["dry_run"] = True
    if getattr(args, "group_id", None):
        over["group_id"] = args.group_id
    if getattr(args, "evictions_per_minute", None) is not None:
        over["evictions_per_minute"] = float(args.evictions_per_minute)
    if over:
        s = dataclasses.replace(s, **over)
        try:
            s.validate()
        except ValueError as exc:
            raise ValueError(f"actuator.{exc}") from None
    return s


async def amain(args: argparse.Namespace, stop: asyncio.Event) -> int:
    settings = settings_from(args)
    bootstrap = bootstrap_from(args)
    embedded = bool(getattr(args, "embedded_broker", False))
    name = worker_id("actuator")
    if getattr(args, "create_topics", True):
        await create_topics(bootstrap, [*settings.topics, ACTIONS, DEADLETTER])
    api = await new_api_client(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    previous: list[Actuator] = []

    async def session(session_stop: asyncio.Event) -> int:
        # One Kafka session. After a broker restart (actions topic lost) the next session keeps what this
        # process knows: the applied decision ids, the disruption ledger and the rate limits.
        producer = await make_producer(bootstrap, embedded=embedded, client_id=name)
        try:
            config_path = getattr(args, "config", None) or os.environ.get("KUBETIDE_CONFIG")
            actuator = Actuator(api, producer, bootstrap, settings, embedded=embedded, name=name,
                                config_path=config_path,
                                dry_run_locked=bool(getattr(args, "dry_run", None)) if config_path else None)
            if previous:
                old = previous[-1]
                actuator.applied |= old.applied
                actuator.ledger, actuator.limiter, actuator.bucket = old.ledger, old.limiter, old.bucket
            previous[:] = [actuator]
            await actuator.run(session_stop)
        finally:
            await producer.stop()
        return 0

    try:
        return await run_sessions("actuator", bootstrap, [*settings.topics, ACTIONS, DEADLETTER], session, stop,
                                  interval_s=broker_check_interval(args, bootstrap))
    finally:
        await api.close()


def run(args: argparse.Namespace) -> int:
    return run_worker(args, "actuator", settings_from, amain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.actuator", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
