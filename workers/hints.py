"""kubetide hints: apply placement hints (prevention) to the Deployments of opted-in namespaces.

The imperative shell of :mod:`streams.core.strategies.placement` (issue #6, strategy 5). One run:

1. **profiles**: the compacted ``profiles`` topic is read from the beginning to its end (the latest
   profile per app wins; a tombstone forgets the app). Interference is made symmetric: when app A
   lists B in ``interferes_with``, B's hints keep away from A too. No profile at all → the run stops
   (exit 2) instead of treating every app as unprofiled.
2. **namespaces**: opted in when listed in ``placement_hints.namespaces`` or labelled
   ``kubetide.io/placement-hints: "true"`` (a ``list`` of namespaces by label selector);
   ``--namespace`` narrows the run to the named namespaces (each still has to be opted in; one that
   is not is reported ``skipped: not-opted-in``). ``actuator.protected_namespaces`` are never touched
   (``skipped: protected-namespace``), opted in or not.
3. **per Deployment** (``list`` per namespace, paginated): its app is the pod template's
   ``placement_hints.app_label`` label (else the Deployment's name); without a profile it is left as
   it is (``skipped: no-profile``: kubetide never removes hints it cannot re-derive). Otherwise
   :func:`~streams.core.strategies.placement.placement_patch` gives the merge patch of
   ``spec.template`` (None = already as it should be: ``skipped: no-change``), and the diff of the
   pod template before and after is printed.
4. **mode**: dry run unless ``--apply`` (what ``kubectl diff`` / ``terraform plan`` users expect: a
   patch of the template rolls out new pods, so writing is always explicit). With ``--apply`` the
   actuator's kill switch still wins: ``actuator.dry_run`` or ``actuator.paused`` true in the config
   file → ``dry-run: kill-switch`` and nothing is written. Otherwise the Deployment is PATCHed
   (``application/merge-patch+json``) with its ``metadata.resourceVersion`` as a precondition, so a
   concurrent edit of the template is never overwritten: a 409 reads the Deployment again and
   recomputes (up to ``--conflict-retries``). 2xx → ``applied: patched``; 404 → ``skipped: gone``;
   403 → ``failed: forbidden`` (RBAC); other 4xx → ``failed: invalid``; 5xx / timeouts are retried
   with backoff, then ``failed: api-error``. The run goes on after a failure; the exit code is 1 when
   any Deployment failed.

Idempotent: the patch of an up-to-date template is None, so a second run changes nothing (and
causes no rollout). Every outcome except ``no-change`` / ``no-profile`` is written to ``actions``
like the actuator's (``decision_topic`` ``placement-hints``, ``strategy`` ``PlacementHints``,
``action`` ``patch-template``, a deterministic ``decision_id`` from the Deployment and the patch)
and counted in ``kubetide_actions_total``; ``--no-actions`` skips the audit records.

RBAC (:data:`RBAC_RULES`): namespaces get/list, deployments list/patch — granted to the actuator's
ClusterRole in ``deploy/actuator.yaml`` (tests/test_hints.py runs the command with exactly that role).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubetide import config as ktconfig
from kubetide import metrics
from kubetide import models as m
from kubetide.codec import DecodeError, decode, encode
from kubetide.config import DEFAULT_PROTECTED_NAMESPACES
from kubetide.topics import ACTIONS, PROFILES
from streams.core.strategies.placement import OPT_IN_LABEL, PlacementSettings, dry_run_diff, opted_in, placement_patch
from workers.kube import ClusterClock, call_json, describe, new_api_client

log = logging.getLogger("kubetide.hints")

SECTION = "placement_hints"
DECISION_TOPIC = "placement-hints"
STRATEGY = "PlacementHints"
ACTION = "patch-template"
MERGE_PATCH = "application/merge-patch+json"

# What `kubetide hints` calls in the Kubernetes API (apiGroup, resource, verbs); deploy/actuator.yaml grants them.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "namespaces", ("get", "list")),        # --namespace: read its labels; else list by the opt-in label
    ("apps", "deployments", ("list", "patch")),  # the Deployments of an opted-in namespace; the merge patch
)

Key = tuple[str, str]  # (namespace, app)


@dataclass(frozen=True)
class HintResult:
    """What happened to one Deployment (``name`` ``*`` for a whole namespace)."""

    namespace: str
    name: str
    outcome: m.Outcome
    reason: str
    message: str = ""
    diff: str = ""
    patch: dict | None = None
    http_status: int | None = None
    ts: float | None = None

    @property
    def audited(self) -> bool:
        """Written to ``actions`` (everything but the quiet no-ops)."""
        return self.reason not in ("no-change", "no-profile")


# ------------------------------------------------------------------ pure parts

def latest_profiles(records: Iterable[tuple[bytes | None, m.Profile | None]]) -> dict[Key, m.Profile]:
    """The current profile per (namespace, app) from the records of the compacted ``profiles`` topic in
    order (key = app; a tombstone, value None, forgets that app in every namespace)."""
    out: dict[Key, m.Profile] = {}
    for key, prof in records:
        if prof is None:
            app = (key or b"").decode(errors="replace")
            for k in [k for k in out if k[1] == app]:
                del out[k]
            continue
        k = (prof.namespace, prof.app)
        if k not in out or prof.ts >= out[k].ts:
            out[k] = prof
    return out


def interference_partners(profiles: Mapping[Key, m.Profile]) -> dict[Key, set[str]]:
    """Per (namespace, app) the apps it must be kept apart from: its own ``interferes_with`` and every app
    of the same namespace that lists it (interference is mutual for placement)."""
    out: dict[Key, set[str]] = {}
    for (ns, app), prof in profiles.items():
        for other in prof.interferes_with:
            if other and other != app:
                out.setdefault((ns, app), set()).add(other)
                out.setdefault((ns, other), set()).add(app)
    return out


def app_of(deployment: Mapping[str, Any], settings: PlacementSettings) -> str:
    meta = deployment.get("metadata") or {}
    labels = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    return str(labels.get(settings.app_label) or meta.get("name") or "")


def plan_deployment(namespace: str, deployment: Mapping[str, Any], profiles: Mapping[Key, m.Profile],
                    partners: Mapping[Key, set[str]], settings: PlacementSettings,
                    namespace_labels: Mapping[str, str] | None = None) -> tuple[dict | None, str]:
    """(merge patch of the Deployment or None, reason): ``patch``, ``no-change``, ``no-profile``,
    ``not-opted-in``."""
    if not opted_in(namespace, settings, namespace_labels):
        return None, "not-opted-in"
    app = app_of(deployment, settings)
    profile = profiles.get((namespace, app))
    if profile is None:
        return None, "no-profile"
    template = (deployment.get("spec") or {}).get("template") or {}
    patch = placement_patch(namespace, template, profile, sorted(partners.get((namespace, app), ())), settings,
                            namespace_labels)
    return (patch, "patch") if patch else (None, "no-change")


def template_diff(namespace: str, name: str, deployment: Mapping[str, Any], patch: Mapping[str, Any] | None) -> str:
    """The unified diff of the Deployment's pod template before and after ``patch`` ('' = no change)."""
    template = {"spec": {"template": (deployment.get("spec") or {}).get("template") or {}}}
    diff = dry_run_diff(template, patch)
    if not diff:
        return ""
    lines = diff.split("\n")
    lines[0], lines[1] = f"--- {namespace}/{name} (live)", f"+++ {namespace}/{name} (with placement hints)"
    return "\n".join(lines)


def hint_id(namespace: str, name: str, patch: Mapping[str, Any] | None) -> str:
    """A deterministic id of one hint (the Deployment and what the patch sets): the actions key."""
    return m.decision_id(DECISION_TOPIC, namespace, name, patch or {})


def with_precondition(patch: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
    """The patch plus ``metadata.resourceVersion`` (the apiserver refuses it with 409 when the object moved)."""
    out = dict(patch)
    if resource_version:
        out["metadata"] = {**(out.get("metadata") or {}), "resourceVersion": resource_version}
    return out


def summary_table(results: Sequence[HintResult]) -> str:
    rows = [("NAMESPACE", "DEPLOYMENT", "OUTCOME", "REASON")] + [
        (r.namespace, r.name, r.outcome, r.reason) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def mode_of(apply: bool, actuator_section: Mapping[str, Any]) -> tuple[bool, str]:
    """(write to the cluster?, the dry-run reason otherwise): no ``--apply`` → dry run; the actuator's kill
    switch (``dry_run`` / ``paused`` in its config section) overrides ``--apply``."""
    if not apply:
        return False, "dry-run"
    if actuator_section.get("dry_run") or actuator_section.get("paused"):
        return False, "kill-switch"
    return True, ""


# ------------------------------------------------------------------ Kafka: the profiles

async def read_profiles(bootstrap: str, *, embedded: bool, timeout_s: float = 30.0) -> dict[Key, m.Profile]:
    """Read the compacted ``profiles`` topic from the beginning to its end (at most ``timeout_s``)."""
    from aiokafka import TopicPartition

    from kubetide.kafka import gapless_getmany, highwaters
    from workers.common import make_consumer, worker_id

    consumer = make_consumer(bootstrap, embedded=embedded, group_id=None, client_id=worker_id("hints"))
    await consumer.start()
    records: list[tuple[bytes | None, m.Profile | None]] = []
    try:
        await consumer.topics()
        parts = consumer.partitions_for_topic(PROFILES)
        if not parts:
            raise FileNotFoundError(f"topic {PROFILES} does not exist on {bootstrap}: is `kubetide streams` "
                                    "(the profiler) running?")
        tps = [TopicPartition(PROFILES, p) for p in sorted(parts)]
        ends = await highwaters(bootstrap, tps)
        todo = {tp for tp in tps if ends.get((tp.topic, tp.partition), 0) > 0}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        bad = 0
        while todo:
            batches = await gapless_getmany(consumer, *todo, timeout_ms=200)
            for recs in batches.values():
                for rec in recs:
                    if rec.value is None:
                        records.append((rec.key, None))
                        continue
                    try:
                        prof = decode(PROFILES, rec.value)
                    except DecodeError as exc:
                        bad += 1
                        log.warning("%s[%d]@%d is not a profile (%s); ignored", rec.topic, rec.partition,
                                    rec.offset, exc)
                        continue
                    assert isinstance(prof, m.Profile)
                    records.append((rec.key, prof))
            for tp in list(todo):
                if await consumer.position(tp) >= ends[(tp.topic, tp.partition)]:
                    todo.discard(tp)
            if todo and loop.time() > deadline:
                log.warning("could not read all of %s within %.0fs; using the %d records read", PROFILES,
                            timeout_s, len(records))
                break
    finally:
        await consumer.stop()
    profiles = latest_profiles(records)
    log.info("read %d profiles (%d records) from %s", len(profiles), len(records), PROFILES)
    return profiles


# ------------------------------------------------------------------ the cluster

class PlacementHints:
    """Computes and (with ``write``) applies the hints of the opted-in namespaces."""

    def __init__(self, api: client.ApiClient, settings: PlacementSettings, *, write: bool,
                 dry_run_reason: str = "dry-run", protected_namespaces: Sequence[str] = DEFAULT_PROTECTED_NAMESPACES,
                 request_timeout_s: float = 15.0, error_max_attempts: int = 4, conflict_retries: int = 3,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 10.0,
                 out: Callable[[str], None] | None = None) -> None:
        self.api = api
        self.settings = settings
        self.write = write
        self.dry_run_reason = dry_run_reason or "dry-run"
        self.protected = tuple(protected_namespaces)
        self.request_timeout_s = request_timeout_s
        self.error_max_attempts = max(1, error_max_attempts)
        self.conflict_retries = max(0, conflict_retries)
        self.backoff = (backoff_initial_s, backoff_max_s)
        self.clock = ClusterClock()
        self.out = out or (lambda s: None)

    async def _json(self, fn: Callable[..., Any], *args: Any, retry: bool = True, **kw: Any) -> dict | None:
        """``fn(*args, _preload_content=False)`` → JSON, None on 404; errors raise :class:`ApiStatusError`;
        5xx / timeouts / connection errors retried with backoff when ``retry`` (each retry logged)."""
        return await call_json(fn, *args, clock=self.clock, attempts=self.error_max_attempts, backoff=self.backoff,
                               timeout_s=self.request_timeout_s, retry=retry, log_retries=log, **kw)

    async def namespaces(self, only: Sequence[str] = ()) -> tuple[dict[str, dict[str, str]], list[HintResult]]:
        """(opted-in namespace -> its labels, results for the namespaces left out)."""
        core = client.CoreV1Api(self.api)
        found: dict[str, dict[str, str]] = {}
        left_out: list[HintResult] = []
        if only:
            for ns in dict.fromkeys(only):
                obj = await self._json(core.read_namespace, ns)
                if obj is None:
                    left_out.append(HintResult(ns, "*", "skipped", "gone", f"namespace {ns} does not exist"))
                    continue
                labels = (obj.get("metadata") or {}).get("labels") or {}
                if opted_in(ns, self.settings, labels):
                    found[ns] = labels
                else:
                    left_out.append(HintResult(ns, "*", "skipped", "not-opted-in",
                                               f"namespace {ns} is not labelled {OPT_IN_LABEL}=true nor listed in "
                                               f"{SECTION}.namespaces; not touched"))
        else:
            for ns in self.settings.namespaces:
                found[ns] = {}
            listed = await self._json(core.list_namespace, label_selector=f"{OPT_IN_LABEL}=true")
            for obj in (listed or {}).get("items") or []:
                meta = obj.get("metadata") or {}
                found[meta.get("name")] = meta.get("labels") or {}
        for ns in [n for n in found if n in self.protected]:
            del found[ns]
            left_out.append(HintResult(ns, "*", "skipped", "protected-namespace",
                                       f"namespace {ns} is protected (actuator.protected_namespaces); not touched"))
        return dict(sorted(found.items())), left_out

    async def deployments(self, namespace: str) -> list[dict]:
        apps = client.AppsV1Api(self.api)
        items: list[dict] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": 500}
            if token:
                kw["_continue"] = token
            page = await self._json(apps.list_namespaced_deployment, namespace, **kw) or {}
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def run(self, profiles: Mapping[Key, m.Profile], only: Sequence[str] = ()) -> list[HintResult]:
        partners = interference_partners(profiles)
        try:
            found, results = await self.namespaces(only)
        except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
            return [self._failure("*", "*", exc, "cannot list the opted-in namespaces")]
        if not found:
            log.info("no namespace has opted in to placement hints (label %s=true or %s.namespaces)", OPT_IN_LABEL,
                     SECTION)
        for ns, labels in found.items():
            try:
                deps = await self.deployments(ns)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                results.append(self._failure(ns, "*", exc, f"cannot list the Deployments of {ns}"))
                continue
            for dep in sorted(deps, key=lambda d: (d.get("metadata") or {}).get("name") or ""):
                results.append(await self.one(ns, dep, labels, profiles, partners))
        return results

    async def one(self, ns: str, dep: dict, labels: Mapping[str, str], profiles: Mapping[Key, m.Profile],
                  partners: Mapping[Key, set[str]]) -> HintResult:
        name = (dep.get("metadata") or {}).get("name") or "?"
        apps = client.AppsV1Api(self.api)
        for attempt in range(self.conflict_retries + 1):
            patch, reason = plan_deployment(ns, dep, profiles, partners, self.settings, labels)
            if patch is None:
                msg = {"no-change": "pod template already carries the hints",
                       "no-profile": f"no profile for app {app_of(dep, self.settings)!r} in {ns}; left as it is",
                       "not-opted-in": f"namespace {ns} has not opted in"}[reason]
                return HintResult(ns, name, "skipped", reason, msg, ts=self.clock.latest)
            diff = template_diff(ns, name, dep, patch)
            if attempt == 0:
                self.out(diff)
            if not self.write:
                return HintResult(ns, name, "dry-run", self.dry_run_reason, f"would patch the pod template of "
                                  f"{ns}/{name}", diff=diff, patch=patch, ts=self.clock.latest)
            body = with_precondition(patch, (dep.get("metadata") or {}).get("resourceVersion"))
            try:
                patched = await self._json(apps.patch_namespaced_deployment, name, ns, body, _content_type=MERGE_PATCH)
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                status = getattr(exc, "status", None)
                if status == 409 and attempt < self.conflict_retries:
                    log.info("%s/%s changed while being patched (409); reading it again", ns, name)
                    try:
                        fresh = await self._json(apps.read_namespaced_deployment, name, ns)
                    except (ApiException, aiohttp.ClientError, TimeoutError) as exc2:
                        return self._failure(ns, name, exc2, f"cannot read {ns}/{name} again", diff, patch)
                    if fresh is None:
                        return HintResult(ns, name, "skipped", "gone", f"deployment {ns}/{name} no longer exists",
                                          http_status=404, ts=self.clock.latest)
                    dep = fresh
                    continue
                return self._failure(ns, name, exc, f"cannot patch {ns}/{name}", diff, patch)
            if patched is None:  # 404
                return HintResult(ns, name, "skipped", "gone", f"deployment {ns}/{name} no longer exists",
                                  http_status=404, ts=self.clock.latest)
            return HintResult(ns, name, "applied", "patched", f"patched the pod template of {ns}/{name} (a rollout "
                              "follows)", diff=diff, patch=patch, http_status=200, ts=self.clock.latest)
        raise AssertionError("unreachable")

    def _failure(self, ns: str, name: str, exc: BaseException, what: str, diff: str = "",
                 patch: dict | None = None) -> HintResult:
        status = getattr(exc, "status", None)
        body = getattr(exc, "body", None)
        detail = describe(exc)
        if body:
            with contextlib.suppress(Exception):
                detail = f"{detail}: {json.loads(body).get('message')}"
        if status == 404:
            return HintResult(ns, name, "skipped", "gone", f"{what}: not found", diff=diff, patch=patch,
                              http_status=404, ts=self.clock.latest)
        if status == 403:
            reason = "forbidden"
        elif status is not None and 400 <= status < 500 and status not in (408, 429):
            reason = "invalid"
        else:
            reason = "api-error"
        return HintResult(ns, name, "failed", reason, f"{what}: {detail}", diff=diff, patch=patch, http_status=status,
                          ts=self.clock.latest)


def to_action(r: HintResult, ts: float, worker: str) -> m.Action:
    return m.Action(ts=ts, decision_id=hint_id(r.namespace, r.name, r.patch), decision_topic=DECISION_TOPIC,
                    strategy=STRATEGY, action=ACTION,  # a whole-namespace refusal has no workload target
                    target=None if r.name == "*" else m.WorkloadRef(namespace=r.namespace, kind="Deployment",
                                                                    name=r.name),
                    outcome=r.outcome, reason=r.reason, message=r.message, http_status=r.http_status, worker=worker)


# ------------------------------------------------------------------ entry point

EPILOG = """\
Opt a namespace in with `kubectl label namespace NS kubetide.io/placement-hints=true`, or list it
under placement_hints.namespaces in the config file. Without --apply nothing is written: the diff of
each pod template is printed. With --apply each changed Deployment is patched (merge patch of
spec.template), which rolls out new pods; actuator.dry_run or actuator.paused in the config file
(the kill switch) keeps even --apply a dry run. A second run changes nothing.

exit codes: 0 done (dry run or applied), 1 a Deployment could not be patched, 2 configuration
problem (no profiles, no kubeconfig, bad settings).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--apply", action="store_true",
                        help="patch the Deployments (default: dry run, print the diffs only)")
    parser.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                        help="only this namespace (repeatable); it must still be opted in")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KUBETIDE_BOOTSTRAP"),
                        help="Kafka bootstrap servers, for the profiles topic (default: $KUBETIDE_BOOTSTRAP)")
    parser.add_argument("--embedded-broker", action="store_true",
                        default=os.environ.get("KUBETIDE_EMBEDDED_BROKER", "") in ("1", "true"),
                        help="the Kafka cluster is kubetide's embedded broker (default $KUBETIDE_EMBEDDED_BROKER)")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, then in-cluster config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current context)")
    parser.add_argument("--config", default=None,
                        help="kubetide YAML config file (default: $KUBETIDE_CONFIG); settings under "
                             f"{SECTION}:, kill switch and protected namespaces under actuator:")
    parser.add_argument("--profiles-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="time allowed to read the profiles topic (default 30)")
    parser.add_argument("--conflict-retries", type=int, default=3, metavar="N",
                        help="re-read and retry a Deployment that changed while being patched, N times (default 3)")
    parser.add_argument("--no-actions", dest="actions", action="store_false",
                        help="do not write the outcomes to the actions topic")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: $KUBETIDE_LOG_LEVEL or INFO)")


def settings_from(args: argparse.Namespace) -> tuple[PlacementSettings, dict[str, Any]]:
    """(placement settings, the actuator section) from the config file + KUBETIDE__ overrides."""
    data = ktconfig.load(getattr(args, "config", None))
    settings = ktconfig.build(PlacementSettings, ktconfig.section(data, SECTION), SECTION)
    return settings, dict(ktconfig.section(data, "actuator"))


async def amain(args: argparse.Namespace, stop: asyncio.Event | None = None,
                out: Callable[[str], None] | None = None) -> int:
    from workers.common import bootstrap_from, make_producer, worker_id

    out = out or (lambda s: print(s, flush=True))
    settings, actuator = settings_from(args)
    write, reason = mode_of(bool(args.apply), actuator)
    if args.apply and not write:
        log.warning("--apply given, but the kill switch is on (actuator.dry_run / actuator.paused): dry run")
    bootstrap = bootstrap_from(args)
    embedded = bool(getattr(args, "embedded_broker", False))
    protected = tuple(actuator.get("protected_namespaces") or DEFAULT_PROTECTED_NAMESPACES)
    api = await new_api_client(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    try:
        profiles = await read_profiles(bootstrap, embedded=embedded, timeout_s=args.profiles_timeout)
        if not profiles:
            log.error("no profiles in topic %s: nothing to base placement hints on (is the profiler running?)",
                      PROFILES)
            return 2
        hints = PlacementHints(api, settings, write=write, dry_run_reason=reason, protected_namespaces=protected,
                               conflict_retries=args.conflict_retries, out=lambda s: out(s) if s else None)
        results = await hints.run(profiles, args.namespace)
        now = hints.clock.latest
        if now is None:
            with contextlib.suppress(Exception):
                now = await hints.clock.refresh(api)
    finally:
        await api.close()
    audited = [r for r in results if r.audited]
    if audited and getattr(args, "actions", True):
        name = worker_id("hints")
        producer = await make_producer(bootstrap, embedded=embedded, client_id=name)
        try:
            for r in audited:
                action = to_action(r, r.ts or now or 0.0, name)
                await producer.send_and_wait(ACTIONS, encode(action), key=action.decision_id.encode())
                metrics.observe_produced(ACTIONS)
        finally:
            await producer.stop()
    for r in results:
        metrics.observe_action(r.outcome, r.reason, r.namespace)
        level = logging.WARNING if r.outcome == "failed" else logging.INFO
        log.log(level, "%s/%s → %s: %s%s", r.namespace, r.name, r.outcome if r.outcome in ("applied", "dry-run")
                else f"{r.outcome}: {r.reason}", r.message, f" [HTTP {r.http_status}]" if r.http_status else "")
    out(summary_table(results))
    changes = [r for r in results if r.outcome in ("dry-run", "applied")]
    if not write:
        tail = ("run with --apply to patch them (each patch rolls out new pods)" if reason == "dry-run"
                else "the kill switch is on (actuator.dry_run / actuator.paused): nothing was written")
        out(f"dry run: {len(changes)} deployment(s) would change; {tail}")
    else:
        out(f"applied: {sum(r.outcome == 'applied' for r in results)} deployment(s) patched")
    return 1 if any(r.outcome == "failed" for r in results) else 0


def run(args: argparse.Namespace) -> int:
    from workers.common import bootstrap_from, run_main, setup_logging_once

    setup_logging_once(getattr(args, "log_level", None))
    try:
        settings_from(args)
        bootstrap_from(args)
        from kubetide.kafka import configure_security

        configure_security(getattr(args, "config", None))
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        return run_main(lambda stop: amain(args, stop), "hints")
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            log.error("hints: Kafka problem: %s", exc)
        else:
            log.exception("hints failed")
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.hints", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
