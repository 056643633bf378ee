"""Interference: act on confirmed interference anomalies (pure).

Anomalies reach the state through :meth:`ClusterState.apply_anomaly` (``open`` ones are kept until
``cleared``; each records the victim's and antagonists' workloads as a pair to keep apart, which
every strategy's target choice honours for the guard's ``keep_apart_s``). For each open anomaly
(oldest first) not yet acted on, with ``severity >= min_severity``:

- the **antagonist** with the highest score (>= ``min_score``) still on the anomaly's node is
  moved, unless its priority is higher than the victim's: then the **victim** is moved instead;
- the mover goes through the shared :class:`~streams.core.state.Choice` (evictable, guard,
  cooldowns, limits); the target must fit (requests, taints, selectors, topology spread), have
  fresh metrics, not be hot, and host no pod of a workload kept apart from the mover (so the two
  never meet again); with nowhere to go there is no decision; while the anomaly's node (or a
  target) has no metrics in this tick, it holds;
- with ``require_landing`` (default) the move must also *work*: an eviction only frees the pod's slot
  and the scheduler places the replacement by requests, so the node it would pick
  (:func:`~streams.core.state.predicted_landing`) must be one of those targets. Usually it is the
  source node itself (it just got the pod's requests back): then there is no decision — evicting
  would only restart the pod beside the same victim, again and again. The check is redone every tick,
  so the move is made once the placement changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetide.models import Anomaly, DescheduleDecision, Suspect
from streams.core.state import Choice, ClusterState

NAME = "Interference"


@dataclass(frozen=True)
class InterferenceSettings:
    enabled: bool = True
    min_severity: float = 0.0
    min_score: float = 0.0
    max_anomaly_age_s: float = 1800.0
    max_evictions_per_tick: int = 3
    ttl_s: float = 300.0
    # Move only when the scheduler would put the replacement on one of the targets (see plan())
    require_landing: bool = True

    def validate(self) -> None:
        if self.min_severity < 0:
            raise ValueError("min_severity: must be >= 0")
        if self.min_score < 0:
            raise ValueError("min_score: must be >= 0")
        if self.max_anomaly_age_s <= 0:
            raise ValueError("max_anomaly_age_s: must be > 0")
        if self.max_evictions_per_tick < 1:
            raise ValueError("max_evictions_per_tick: must be >= 1 (use enabled: false to stop)")
        if self.ttl_s <= 0:
            raise ValueError("ttl_s: must be > 0")


def plan(state: ClusterState, s: InterferenceSettings) -> list[DescheduleDecision]:
    now = state.tick_ts
    if now is None or not s.enabled:
        return []
    choice = Choice(state)
    decisions: list[DescheduleDecision] = []
    # anomalies are kept for the guard's keep_apart_s (a day) but act only within max_anomaly_age_s: sort
    # only those (the same order among them as sorting all, and the others were skipped anyway)
    recent = [a for a in state.anomalies.values() if now - a.ts <= s.max_anomaly_age_s]
    # an anomaly's suspects by score (those scoring at least min_score): the same at every tick it is
    # considered, so ranked once per anomaly until the next event (the memo goes with the state's version)
    memo: dict[str, tuple[Anomaly, list[tuple[Suspect, tuple[str, str]]]]] = state.cached(
        f"interference-ranked/{s.min_score}", dict)

    def ranked(a: Anomaly) -> list[tuple[Suspect, tuple[str, str]]]:
        hit = memo.get(a.id)
        if hit is None or hit[0] is not a:
            hit = memo[a.id] = (a, [(x, (x.namespace, x.name))
                                    for x in sorted(a.antagonists, key=lambda x: (-x.score, x.name))
                                    if x.score >= s.min_score])
        return hit[1]

    for a in sorted(recent, key=lambda x: (x.ts, x.id)):
        if len(decisions) >= s.max_evictions_per_tick:
            break
        if a.id in state.acted or a.severity < s.min_severity:
            continue
        victim_key = (a.victim.namespace, a.victim.name)
        victim = state.pods.get(victim_key)
        if victim is None or victim.node != a.node:
            continue  # the victim has gone: nothing to repair
        on_node = [(x, k) for x, k in ranked(a) if k in state.pods and state.pods[k].node == a.node]
        if not on_node:
            continue
        suspect, ant_key = on_node[0]
        antagonist = state.pods[ant_key]
        if antagonist.priority > victim.priority:
            key, pod, role, other = victim_key, victim, "victim", ant_key
        else:
            key, pod, role, other = ant_key, antagonist, "antagonist", victim_key
        if choice.blocked(key, pod, a.node) is not None:
            continue
        smp = state.sample(a.node)
        assert smp is not None
        usage = smp.pods.get(key, (pod.requests.cpu_cores, pod.requests.mem_bytes))
        # the eviction frees a slot; the scheduler (by requests) re-places the pod. Where that is not one
        # of the targets — typically the source node, which just got the pod's requests back — the move
        # would only restart the pod beside the same (or another kept-apart) neighbour
        landing = choice.landing(key, pod, a.node)
        if s.require_landing and (landing is None or not choice.targets(key, pod, a.node, usage, nodes=[landing])):
            # the same answer as looking for the landing among all the targets (each node is judged alone), at
            # the cost of one node: a blocked anomaly is asked again every tick for max_anomaly_age_s
            continue
        fits = choice.targets(key, pod, a.node, usage)
        if not fits:
            continue
        best = fits[0]
        # under require_landing the landing node passed the targets check above, so it is in ``fits``
        at = [t for t in fits if t.node == landing]
        if at:
            best = at[0]
        assert pod.workload is not None
        evidence = choice.evidence(key, pod, a.node)
        evidence.update({
            "tick_ts": now, "anomaly_id": a.id, "anomaly_ts": a.ts, "metric": a.metric,
            "severity": a.severity, "antagonist_score": suspect.score, "moved": role,
            "victim": f"{victim_key[0]}/{victim_key[1]}", "antagonist": f"{ant_key[0]}/{ant_key[1]}",
            "victim_priority": victim.priority, "antagonist_priority": antagonist.priority,
            "pod_cpu_cores": usage[0], "pod_mem_bytes": usage[1], "targets": len(fits),
            "best_target": best.node, "best_target_cpu_pct_after": round(best.cpu_pct_after, 3),
            "predicted_landing": landing,
        })
        decisions.append(choice.decide(
            NAME, now, s.ttl_s, key, pod, a.node, id_part=a.id, evidence=evidence,
            to_nodes=[t.node for t in fits], target=best.node, usage=usage,
            reason=(f"interference on {a.node}: {ant_key[0]}/{ant_key[1]} hurts {victim_key[0]}/{victim_key[1]} "
                    f"({a.metric}, severity {a.severity:.2f}); moving the {role} {key[0]}/{key[1]} to a node "
                    f"without {other[0]}/{other[1]}'s workload"),
        ))
    return decisions
