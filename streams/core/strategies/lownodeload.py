"""LowNodeLoad: move a pod off a node that stays hot while cool nodes exist (pure).

Like descheduler's LowNodeUtilization/HighNodeUtilization, but on *real* usage over event time:

- a **source** is a node whose CPU usage was above ``high_cpu_pct`` of allocatable in each of
  the last ``consecutive`` ticks (a tick where its metrics are missing breaks the streak:
  missing is never zero);
- a **target** is a ready, schedulable node with metrics in the current tick and CPU below
  ``low_cpu_pct``; with no target there is no decision;
- on each source (hottest first) it picks evictable pods, preferring pods whose move brings the
  source into the [low, high] band (no overshoot), then the highest CPU; a pod qualifies when it
  fits on at least one target by requests (taints, selector, schedulability) and by real usage
  (the target stays under ``high_cpu_pct`` CPU and ``target_max_mem_pct`` memory with the pod's
  usage added). A pod whose usage is not in the tick's scrape is skipped;
- at most ``max_evictions_per_tick_per_node`` decisions per source per tick and
  ``max_evictions_per_workload_per_tick`` per workload; none on a node within
  ``node_cooldown_s`` of its last decision or for a pod within ``pod_cooldown_s`` (event time).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kubetide.models import DescheduleDecision, PodRef, decision_id
from streams.core.state import ClusterState, evictable, node_fit

NAME = "LowNodeLoad"


@dataclass(frozen=True)
class LowNodeLoadSettings:
    enabled: bool = True
    high_cpu_pct: float = 80.0
    low_cpu_pct: float = 50.0
    consecutive: int = 3
    max_evictions_per_tick_per_node: int = 1
    max_evictions_per_workload_per_tick: int = 1
    node_cooldown_s: float = 300.0
    pod_cooldown_s: float = 1800.0
    ttl_s: float = 300.0
    target_max_mem_pct: float = 90.0

    def validate(self) -> None:
        if not 0 < self.high_cpu_pct <= 100:
            raise ValueError("high_cpu_pct: must be in (0, 100]")
        if not 0 <= self.low_cpu_pct < self.high_cpu_pct:
            raise ValueError("low_cpu_pct: must be >= 0 and below high_cpu_pct")
        if self.consecutive < 1:
            raise ValueError("consecutive: must be >= 1")
        if self.max_evictions_per_tick_per_node < 1:
            raise ValueError("max_evictions_per_tick_per_node: must be >= 1 (use enabled: false to stop)")
        if self.max_evictions_per_workload_per_tick < 1:
            raise ValueError("max_evictions_per_workload_per_tick: must be >= 1")
        if self.node_cooldown_s < 0:
            raise ValueError("node_cooldown_s: must be >= 0")
        if self.pod_cooldown_s < 0:
            raise ValueError("pod_cooldown_s: must be >= 0")
        if self.ttl_s <= 0:
            raise ValueError("ttl_s: must be > 0")
        if not 0 < self.target_max_mem_pct <= 100:
            raise ValueError("target_max_mem_pct: must be in (0, 100]")


def _hot_streak(state: ClusterState, node: str, s: LowNodeLoadSettings) -> bool:
    hist = state.recent_samples(node, s.consecutive)
    return len(hist) == s.consecutive and all(
        h is not None and h.cpu_pct is not None and h.cpu_pct > s.high_cpu_pct for h in hist)


def plan(state: ClusterState, s: LowNodeLoadSettings) -> list[DescheduleDecision]:
    now = state.tick_ts
    if now is None or not s.enabled:
        return []
    nodes = state.ready_nodes()
    sources = [n for n in nodes if _hot_streak(state, n, s)]
    if not sources:
        return []
    # Projected usage of targets (cpu, mem, cpu alloc, mem alloc) and requests planned onto them.
    targets: dict[str, list[float]] = {}
    for n in nodes:
        smp = state.sample(n)
        if n in sources or smp is None or smp.cpu_pct is None or state.nodes[n].unschedulable:
            continue
        if smp.cpu_pct < s.low_cpu_pct:
            targets[n] = [smp.cpu_usage, smp.mem_usage, smp.cpu_allocatable, smp.mem_allocatable]
    if not targets:
        return []
    planned_req: dict[str, tuple[float, float]] = {t: (0.0, 0.0) for t in targets}
    per_workload: Counter[str] = Counter()
    decisions: list[DescheduleDecision] = []

    def hotness(n: str) -> tuple[float, str]:
        smp = state.sample(n)
        return (-(smp.cpu_pct or 0.0) if smp else 0.0, n)

    for src in sorted(sources, key=hotness):
        last = state.last_decision_node.get((NAME, src))
        if last is not None and now - last < s.node_cooldown_s:
            continue
        smp = state.sample(src)
        assert smp is not None
        start_pct = smp.cpu_pct or 0.0
        alloc = smp.cpu_allocatable
        high_cores, low_cores = alloc * s.high_cpu_pct / 100, alloc * s.low_cpu_pct / 100
        src_cpu = smp.cpu_usage
        cands = []
        for key, pod in state.pods_on(src):
            if not evictable(key, pod, state)[0]:
                continue
            lastp = state.last_decision_pod.get((NAME, key))
            if lastp is not None and now - lastp < s.pod_cooldown_s:
                continue
            usage = smp.pods.get(key)
            if usage is None:  # no usage in this scrape: unknown, not zero
                continue
            cands.append((key, pod, usage[0], usage[1]))
        picked = 0
        while picked < s.max_evictions_per_tick_per_node and src_cpu > high_cores and cands:
            cands.sort(key=lambda c, now_cpu=src_cpu, lo=low_cores, hi=high_cores: (
                0 if lo <= now_cpu - c[2] <= hi else 1, -c[2], c[0]))
            chosen = None
            for c in cands:
                key, pod, cpu, mem = c
                assert pod.workload is not None
                if per_workload[pod.workload.key] >= s.max_evictions_per_workload_per_tick:
                    continue
                fits = []
                for t, (tcpu, tmem, tcpu_alloc, tmem_alloc) in targets.items():
                    if tcpu_alloc <= 0 or tmem_alloc <= 0:
                        continue
                    after_pct = 100 * (tcpu + cpu) / tcpu_alloc
                    if after_pct >= s.high_cpu_pct or 100 * (tmem + mem) / tmem_alloc > s.target_max_mem_pct:
                        continue
                    if node_fit(pod, t, state, planned_req[t])[0]:
                        fits.append((after_pct, t))
                if fits:
                    chosen = (c, sorted(fits))
                    break
            if chosen is None:
                break
            (key, pod, cpu, mem), fits = chosen
            cands.remove(chosen[0])
            best_pct, best = fits[0]
            after_src = src_cpu - cpu
            assert pod.workload is not None
            decisions.append(DescheduleDecision(
                id=decision_id(NAME, now, src, key[0], key[1], state.pod_uids.get(key)),
                made_at=now, expires_at=now + s.ttl_s, strategy=NAME,
                reason=(f"node {src} CPU above {s.high_cpu_pct:g}% for {s.consecutive} samples "
                        f"({100 * src_cpu / alloc:.0f}% now); moving {key[0]}/{key[1]} ({cpu:.2f} cores) "
                        f"to one of {len(fits)} node(s) below {s.low_cpu_pct:g}%"),
                evidence={
                    "tick_ts": now, "node_cpu_pct": round(100 * src_cpu / alloc, 3),
                    "node_cpu_pct_start": round(start_pct, 3),
                    "node_cpu_cores": src_cpu, "node_cpu_allocatable": alloc,
                    "node_cpu_pct_after": round(100 * after_src / alloc, 3),
                    "pod_cpu_cores": cpu, "pod_mem_bytes": mem,
                    "high_cpu_pct": s.high_cpu_pct, "low_cpu_pct": s.low_cpu_pct,
                    "consecutive": s.consecutive, "targets": len(fits),
                    "best_target": best, "best_target_cpu_pct_after": round(best_pct, 3),
                },
                pod=PodRef(namespace=key[0], name=key[1], uid=state.pod_uids.get(key), node=src, app=pod.app),
                workload=pod.workload, from_node=src, to_nodes=[t for _, t in fits],
            ))
            picked += 1
            per_workload[pod.workload.key] += 1
            src_cpu = after_src
            targets[best][0] += cpu
            targets[best][1] += mem
            r = planned_req[best]
            planned_req[best] = (r[0] + pod.requests.cpu_cores, r[1] + pod.requests.mem_bytes)
    return decisions
