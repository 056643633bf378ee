"""kubetide actuator: apply decisions to the cluster safely, write every outcome to ``actions``.

Flow for each message of a decisions topic (consumer group ``kubetide-actuator``; today
``decisions.deschedule``; a topic is added by registering a :class:`Handler` in ``HANDLERS``):

1. **decode** with :mod:`kubetide.codec`; unreadable input, a foreign schema or an unknown
   schema version goes to ``deadletter`` (key = origin topic) with the reason, and the
   actuator goes on.
2. **idempotency**: a decision id already answered ``applied`` or ``dry-run`` gets outcome
   ``duplicate`` and is not applied again. The set of applied ids is rebuilt at start by
   reading ``actions`` from the beginning to its high-water mark (from fetch responses, not
   ListOffsets, which the embedded broker gets wrong), and it keeps following ``actions``
   afterwards, so ids applied by other actuator replicas are known too. Messages with the
   same id are handled one at a time; a decision waiting for a PDB retry answers a
   re-delivery with ``duplicate`` (reason ``retry-pending``).
3. **safety checks** (deschedule): protected namespace → ``skipped: protected-namespace``
   (never touched: no request about the pod is made); the pod is read at the last moment
   (GET): its ``Date`` header gives the cluster's *now*: ``expires_at`` < now → ``expired``;
   404 or terminating → ``skipped: gone``; other uid or node than the decision says →
   ``skipped: changed``; annotation ``kubetide.io/evict: "never"`` → ``skipped: opt-out``;
   DaemonSet / mirror pods → ``skipped: daemonset`` / ``skipped: mirror`` (the pod would come
   back on the same node).
4. ``--dry-run`` → ``dry-run`` (logged, no write to the API).
5. a token from the **global rate limit** (token bucket, ``evictions_per_minute``, burst
   ``rate_burst``); if waiting for it took a while, the checks of step 3 are run again.
6. **eviction** through the Eviction API (``create_namespaced_pod_eviction`` with a policy/v1
   Eviction; a pod is never deleted directly): 2xx → ``applied: evicted``; 429 →
   ``skipped: pdb`` with ``retry_after_s`` from the Retry-After header, and the decision is
   tried again after that delay (up to ``pdb_max_attempts`` attempts in all, never past its
   expiry; the wait holds no in-flight slot, so it blocks nothing); 404 → ``skipped: gone``;
   5xx, 409, timeouts, connection errors → retried with jittered backoff up to
   ``error_max_attempts`` attempts, then ``failed``; other 4xx (403, 422, ...) → ``failed`` at once.

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
    --log-level LEVEL           default $KUBETIDE_LOG_LEVEL or INFO

Settings (``actuator:`` section; defaults in brackets)
- ``dry_run`` [false]: record ``dry-run`` outcomes instead of evicting.
- ``topics`` [decisions.deschedule]: decision topics to consume (each needs a handler).
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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
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
from kubetide.topics import ACTIONS, DEADLETTER, DECISIONS_DESCHEDULE
from workers.common import (
    add_common_arguments,
    bootstrap_from,
    create_topics,
    load_settings,
    make_consumer,
    make_producer,
    run_main,
    setup_logging_once,
    worker_id,
)
from workers.kube import ClusterClock, backoff_delays, describe, is_retryable, new_api_client

log = logging.getLogger("kubetide.actuator")

APPLIED_OUTCOMES = ("applied", "dry-run")


@dataclass(frozen=True)
class ActuatorSettings:
    dry_run: bool = False
    topics: tuple[str, ...] = (DECISIONS_DESCHEDULE,)
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
        for name in ("rate_burst", "max_in_flight", "pdb_max_attempts", "error_max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        for name in ("default_retry_after_s", "max_retry_after_s", "backoff_initial_s", "backoff_max_s",
                     "request_timeout_s", "restore_timeout_s", "commit_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        if self.rate_recheck_after_s < 0:
            raise ValueError("rate_recheck_after_s: must be >= 0")


@dataclass(frozen=True)
class Result:
    """What happened to one attempt at one decision."""

    outcome: m.Outcome
    reason: str
    message: str = ""
    http_status: int | None = None
    retry_after_s: float | None = None
    ts: float | None = None


class TokenBucket:
    """Global rate limit: ``rate_per_min`` tokens a minute, at most ``burst`` saved up (real time)."""

    def __init__(self, rate_per_min: float, burst: int) -> None:
        self.rate = rate_per_min / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now

    async def acquire(self) -> float:
        """Take one token, waiting for it; returns the seconds waited."""
        t0 = time.monotonic()
        async with self._lock:  # FIFO: first come, first served
            while True:
                self._refill()
                if self.tokens >= 1:
                    self.tokens -= 1
                    return time.monotonic() - t0
                await asyncio.sleep((1 - self.tokens) / self.rate)


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
        have_token = False
        while True:
            try:
                pod, now = await self._read_pod(d)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                return Result("failed", "api-error", f"cannot read pod {ns}/{name}: {describe(exc)}",
                              http_status=getattr(exc, "status", None), ts=self.act.clock.latest)
            verdict = self._check(d, pod, now)
            if verdict is not None:
                return verdict
            if self.settings.dry_run:
                log.info("dry-run: would evict %s/%s from %s (decision %s, %s: %s)", ns, name, d.from_node, d.id,
                         d.strategy, d.reason)
                return Result("dry-run", "dry-run", f"would evict {ns}/{name} from {d.from_node}", ts=now)
            if have_token:
                break
            waited = await self.act.bucket.acquire()
            have_token = True
            if waited <= self.settings.rate_recheck_after_s:
                break
            log.debug("waited %.1fs for the rate limit; checking %s/%s again", waited, ns, name)
        return await self._evict(d, attempt)

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


HANDLERS: dict[str, Callable[[Actuator], Handler]] = {DECISIONS_DESCHEDULE: EvictHandler}


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
                 settings: ActuatorSettings | None = None, *, embedded: bool = False, name: str = "") -> None:
        self.api = api
        self.producer = producer
        self.bootstrap = bootstrap
        self.settings = settings or ActuatorSettings()
        self.embedded = embedded
        self.name = name or worker_id("actuator")
        self.clock = ClusterClock()
        self.bucket = TokenBucket(self.settings.evictions_per_minute, self.settings.rate_burst)
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
            batches = await consumer.getmany(timeout_ms=200)
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
                batches = await consumer.getmany(timeout_ms=1000)
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
        if result.outcome != "skipped" or result.reason != "pdb" or result.retry_after_s is None:
            return result
        if attempt >= self.settings.pdb_max_attempts:
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
                                   f"{self.settings.pdb_max_attempts} in {result.retry_after_s:.0f}s)")

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
                batches = await consumer.getmany(timeout_ms=200, max_records=self.settings.max_in_flight)
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
    try:
        producer = await make_producer(bootstrap, embedded=embedded, client_id=name)
        try:
            actuator = Actuator(api, producer, bootstrap, settings, embedded=embedded, name=name)
            await actuator.run(stop)
        finally:
            await producer.stop()
    finally:
        await api.close()
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging_once(getattr(args, "log_level", None))
    try:  # configuration problems: a clear message, exit code 2
        settings_from(args)
        bootstrap_from(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        return run_main(lambda stop: amain(args, stop), "actuator", args)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:
        from aiokafka.errors import KafkaError as _KafkaError

        if isinstance(exc, _KafkaError):
            log.error("actuator: Kafka problem: %s", exc)
        else:
            log.exception("actuator failed")
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.actuator", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
