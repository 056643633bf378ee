"""ZoneSpread: repair a workload's zone spread after it drifted beyond its maxSkew (pure).

Like descheduler's RemovePodsViolatingTopologySpreadConstraint, for the zone key
(``topology_key``, default ``topology.kubernetes.io/zone``):

- constraints come from the pods' snapshots (``topology_spread``); pods of one namespace sharing
  a constraint (same key, selector, maxSkew) form one group; ``ScheduleAnyway`` constraints are
  only repaired with ``include_soft``;
- pods are counted like the scheduler counts them: Running and ready pods matching the selector,
  over the zones of ready nodes that pass the pods' node selector (a zone with none counts 0);
- when ``max - min > max_skew`` it moves one pod (per group per tick, at most
  ``max_evictions_per_tick`` in total) from the most populated zone toward the least populated
  one, only if that zone has a node that fits (requests, taints, selectors, kept-apart
  workloads), has fresh metrics and is not hot (CPU after the move below ``max_target_cpu_pct``,
  default the guard's ``hot_cpu_pct``: no zone ↔ load ping-pong), and only if the move creates
  no new violation of any of the pod's constraints. Source nodes are preferred hottest first.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from kubetide.models import DescheduleDecision, PodSnapshot, TopologySpread
from streams.core.state import ZONE_LABEL, Choice, ClusterState, Key, skew, spread_counts

NAME = "ZoneSpread"


@dataclass(frozen=True)
class ZoneSpreadSettings:
    enabled: bool = True
    topology_key: str = ZONE_LABEL
    include_soft: bool = False
    max_evictions_per_tick: int = 5
    max_target_cpu_pct: float | None = None
    ttl_s: float = 300.0

    def validate(self) -> None:
        if not self.topology_key:
            raise ValueError("topology_key: must not be empty")
        if self.max_evictions_per_tick < 1:
            raise ValueError("max_evictions_per_tick: must be >= 1 (use enabled: false to stop)")
        if self.max_target_cpu_pct is not None and not 0 < self.max_target_cpu_pct <= 100:
            raise ValueError("max_target_cpu_pct: must be in (0, 100]")
        if self.ttl_s <= 0:
            raise ValueError("ttl_s: must be > 0")


Group = tuple[TopologySpread, list[tuple[Key, PodSnapshot]]]
GroupKey = tuple[str, str, tuple[tuple[str, str], ...], int]
Groups = dict[GroupKey, Group]
Memberships = dict[Key, list[tuple[GroupKey, TopologySpread]]]


def _groups(state: ClusterState, s: ZoneSpreadSettings) -> Groups:
    """Pods by spread group (:func:`_build_groups`), caught up from the pod events after a change
    (``ClusterState.incremental``) rather than rebuilt."""
    return state.incremental(f"zonespread-groups/{s.topology_key}/{s.include_soft}",
                             lambda: _index(state, s), lambda old, keys: _catch_up(state, s, old, keys))[0]


def _memberships(key: Key, pod: PodSnapshot, s: ZoneSpreadSettings) -> list[tuple[GroupKey, TopologySpread]]:
    """The groups the pod belongs to, each with the constraint that puts it there, in constraint order."""
    out = []
    for c in pod.topology_spread:
        if c.topology_key != s.topology_key or not c.match_labels:
            continue
        if c.when_unsatisfiable != "DoNotSchedule" and not s.include_soft:
            continue
        if any(pod.labels.get(k) != v for k, v in c.match_labels.items()):
            continue
        out.append(((key[0], c.topology_key, tuple(sorted(c.match_labels.items())), c.max_skew), c))
    return out


def _build_groups(state: ClusterState, s: ZoneSpreadSettings) -> Groups:
    """The plain rule: every pod, by key, into its groups; a group's constraint is its first member's."""
    out: Groups = {}
    for key, pod in sorted(state.pods.items()):
        for g, c in _memberships(key, pod, s):
            out.setdefault(g, (c, []))[1].append((key, pod))
    return out


def _index(state: ClusterState, s: ZoneSpreadSettings) -> tuple[Groups, Memberships]:
    return _build_groups(state, s), {k: m for k, p in state.pods.items() if (m := _memberships(k, p, s))}


def _catch_up(state: ClusterState, s: ZoneSpreadSettings, old: tuple[Groups, Memberships],
              keys: list[Key]) -> tuple[Groups, Memberships]:
    """:func:`_build_groups` after the pods ``keys`` changed: they leave their old groups and join their new ones
    at their place by key (new member lists: the old ones are left as they were)."""
    groups, where = dict(old[0]), dict(old[1])
    changed = set(keys)
    members = {g: [e for e in groups[g][1] if e[0] not in changed] for k in changed for g, _ in where.get(k, ())}
    for k in sorted(changed):
        pod = state.pods.get(k)
        ms = _memberships(k, pod, s) if pod is not None else []
        if ms:
            where[k] = ms
        else:
            where.pop(k, None)
        for g, _c in ms:
            lst = members.get(g)
            if lst is None:
                lst = members[g] = list(groups[g][1]) if g in groups else []
            lst.insert(bisect.bisect_right(lst, k, key=lambda e: e[0]), (k, pod))
    for g, lst in members.items():
        if not lst:
            del groups[g]
            continue
        first = lst[0][0]  # the group's constraint: its first member's (first) one for the group
        groups[g] = (next(c for gg, c in where[first] if gg == g), lst)
    return groups, where


def plan(state: ClusterState, s: ZoneSpreadSettings) -> list[DescheduleDecision]:
    now = state.tick_ts
    if now is None or not s.enabled:
        return []
    choice = Choice(state)
    decisions: list[DescheduleDecision] = []
    for gkey, (c, members) in sorted(_groups(state, s).items()):
        if len(decisions) >= s.max_evictions_per_tick:
            break
        namespace = gkey[0]
        counts = spread_counts(state, namespace, members[0][1], c, choice.moved, choice.spread_cache)
        sk = skew(counts)
        if len(counts) < 2 or sk <= c.max_skew:
            continue
        hi = max(counts.values())
        lo = min(counts.values())
        over = sorted(z for z, n in counts.items() if n == hi)
        under = sorted(z for z, n in counts.items() if n == lo)

        def hot_first(item: tuple[Key, PodSnapshot]) -> tuple:
            key, pod = item
            smp = state.sample(pod.node or "")
            return (choice.prefer(key, pod), -(smp.cpu_pct or 0.0) if smp else 0.0, key)

        movable = [(k, p) for k, p in members
                   if p.node and choice.moved.get(k, p.node) == p.node
                   and state.zone_of(p.node, c.topology_key) in over and p.ready]
        for key, pod in sorted(movable, key=hot_first):
            assert pod.node is not None
            if choice.blocked(key, pod, pod.node) is not None:
                continue
            smp = state.sample(pod.node)
            usage = smp.pods.get(key, (pod.requests.cpu_cores, pod.requests.mem_bytes)) if smp else (0.0, 0.0)
            nodes = [n for n in state.ready_nodes() if state.zone_of(n, c.topology_key) in under]
            fits = choice.targets(key, pod, pod.node, usage, max_cpu_pct=s.max_target_cpu_pct, nodes=nodes)
            if not fits:
                continue
            best = fits[0]
            from_zone, to_zone = state.zone_of(pod.node, c.topology_key), state.zone_of(best.node, c.topology_key)
            assert pod.workload is not None
            evidence = choice.evidence(key, pod, pod.node)
            evidence.update({
                "tick_ts": now, "topology_key": c.topology_key, "max_skew": c.max_skew, "skew": sk,
                "skew_after": sk - 1 if hi - lo >= 2 else sk,
                "from_zone": from_zone, "from_zone_pods": hi, "to_zone": to_zone, "to_zone_pods": lo,
                "zones": len(counts), "pod_cpu_cores": usage[0], "pod_mem_bytes": usage[1],
                "targets": len(fits), "best_target": best.node,
                "best_target_cpu_pct_after": round(best.cpu_pct_after, 3),
            })
            decisions.append(choice.decide(
                NAME, now, s.ttl_s, key, pod, pod.node, id_part=pod.node, evidence=evidence,
                to_nodes=[t.node for t in fits], target=best.node, usage=usage,
                reason=(f"{namespace} pods matching {dict(c.match_labels)} are skewed {sk} across zones "
                        f"(maxSkew {c.max_skew}): {from_zone} has {hi}, {to_zone} has {lo}; moving "
                        f"{key[0]}/{key[1]} from {pod.node} toward {to_zone}"),
            ))
            break
    return decisions
