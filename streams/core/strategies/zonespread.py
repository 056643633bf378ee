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


def _groups(state: ClusterState, s: ZoneSpreadSettings) -> dict[tuple, Group]:
    """Pods by spread group; rebuilt only when an event changed the state (``ClusterState.cached``)."""
    return state.cached(f"zonespread-groups/{s.topology_key}/{s.include_soft}", lambda: _build_groups(state, s))


def _build_groups(state: ClusterState, s: ZoneSpreadSettings) -> dict[tuple, Group]:
    out: dict[tuple, Group] = {}
    for key, pod in sorted(state.pods.items()):
        for c in pod.topology_spread:
            if c.topology_key != s.topology_key or not c.match_labels:
                continue
            if c.when_unsatisfiable != "DoNotSchedule" and not s.include_soft:
                continue
            if any(pod.labels.get(k) != v for k, v in c.match_labels.items()):
                continue
            g = (key[0], c.topology_key, tuple(sorted(c.match_labels.items())), c.max_skew)
            out.setdefault(g, (c, []))[1].append((key, pod))
    return out


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
