"""AllocatedButIdle: free schedulable room on nodes that are full by requests but idle in reality (pure).

From the source article: nodes whose *requests* are more than ``requested_pct`` of allocatable
while *real* usage stays low are "full" to the scheduler although their CPU idles, so active pods
cannot come there. This strategy moves pods whose requests are far above their real usage off
such nodes, so the scheduler can bring more active pods in and balance real load.

- a **source** is a ready node whose CPU or memory requests exceed ``requested_pct`` % of
  allocatable and whose real CPU usage stayed below ``max_usage_pct`` % in each of the last
  ``consecutive`` ticks (missing metrics break the streak);
- a **candidate** pod (through the shared :class:`~streams.core.state.Choice`) has at least
  ``min_pod_samples`` usage samples in the state's per-pod history and its CPU requests are at
  least ``min_request_to_usage`` times its peak CPU usage over that history (or, with
  ``use_memory``, likewise for memory); pods with the largest requests-over-usage excess first
  (after the shared preference);
- a **target** has metrics in this tick, is not hot (CPU after the move below the guard's
  ``hot_cpu_pct``), fits the pod by requests, taints, selectors and topology spread, and its
  requests after the move stay at or below ``requested_pct`` (no new allocated-but-idle node);
- it stops once the source's requests fall to ``target_requested_pct``, after
  ``max_evictions_per_tick_per_node`` decisions per node, or within ``node_cooldown_s`` of the
  node's last decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetide.models import DescheduleDecision
from streams.core.state import Choice, ClusterState

NAME = "AllocatedButIdle"


@dataclass(frozen=True)
class AllocatedButIdleSettings:
    enabled: bool = False
    requested_pct: float = 90.0
    target_requested_pct: float = 80.0
    max_usage_pct: float = 30.0
    consecutive: int = 6
    min_pod_samples: int = 3
    min_request_to_usage: float = 3.0
    use_memory: bool = False
    max_evictions_per_tick_per_node: int = 1
    node_cooldown_s: float = 900.0
    ttl_s: float = 300.0

    def validate(self) -> None:
        if not 0 < self.requested_pct <= 100:
            raise ValueError("requested_pct: must be in (0, 100]")
        if not 0 < self.target_requested_pct <= self.requested_pct:
            raise ValueError("target_requested_pct: must be in (0, requested_pct]")
        if not 0 < self.max_usage_pct <= 100:
            raise ValueError("max_usage_pct: must be in (0, 100]")
        if self.consecutive < 1:
            raise ValueError("consecutive: must be >= 1")
        if self.min_pod_samples < 1:
            raise ValueError("min_pod_samples: must be >= 1")
        if self.min_request_to_usage <= 1:
            raise ValueError("min_request_to_usage: must be > 1")
        if self.max_evictions_per_tick_per_node < 1:
            raise ValueError("max_evictions_per_tick_per_node: must be >= 1 (use enabled: false to stop)")
        if self.node_cooldown_s < 0:
            raise ValueError("node_cooldown_s: must be >= 0")
        if self.ttl_s <= 0:
            raise ValueError("ttl_s: must be > 0")


def _requested_pct(state: ClusterState, node: str, extra: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    alloc = state.nodes[node].allocatable
    cpu, mem = state.requested_on(node)
    return (100 * (cpu + extra[0]) / alloc.cpu_cores if alloc.cpu_cores > 0 else 0.0,
            100 * (mem + extra[1]) / alloc.mem_bytes if alloc.mem_bytes > 0 else 0.0)


def _idle_streak(state: ClusterState, node: str, s: AllocatedButIdleSettings) -> bool:
    hist = state.recent_samples(node, s.consecutive)
    return len(hist) == s.consecutive and all(
        h is not None and h.cpu_pct is not None and h.cpu_pct < s.max_usage_pct for h in hist)


def plan(state: ClusterState, s: AllocatedButIdleSettings) -> list[DescheduleDecision]:
    now = state.tick_ts
    if now is None or not s.enabled:
        return []
    choice = Choice(state)
    decisions: list[DescheduleDecision] = []
    for src in state.ready_nodes():
        req_cpu_pct, req_mem_pct = _requested_pct(state, src)
        if max(req_cpu_pct, req_mem_pct) <= s.requested_pct or not _idle_streak(state, src, s):
            continue
        last = state.last_decision_node.get((NAME, src))
        if last is not None and now - last < s.node_cooldown_s:
            continue
        smp = state.sample(src)
        assert smp is not None
        cands = []
        for key, pod in state.pods_on(src):
            if choice.blocked(key, pod, src) is not None:
                continue
            hist = state.pod_usage_history(key, s.consecutive)
            if len(hist) < s.min_pod_samples or key not in smp.pods:
                continue
            peak_cpu, peak_mem = max(h[0] for h in hist), max(h[1] for h in hist)
            r = pod.requests
            ratio_cpu = r.cpu_cores / peak_cpu if peak_cpu > 0 else float("inf") if r.cpu_cores > 0 else 0.0
            ratio_mem = r.mem_bytes / peak_mem if peak_mem > 0 else float("inf") if r.mem_bytes > 0 else 0.0
            ratio = max(ratio_cpu, ratio_mem) if s.use_memory else ratio_cpu
            if ratio < s.min_request_to_usage:
                continue
            excess = r.cpu_cores - peak_cpu
            cands.append((choice.prefer(key, pod), -excess, key, pod, peak_cpu, peak_mem, ratio))
        cands.sort(key=lambda c: (c[0], c[1], c[2]))
        freed = (0.0, 0.0)
        picked = 0
        alloc = state.nodes[src].allocatable
        for _, _, key, pod, peak_cpu, peak_mem, ratio in cands:
            cur_cpu = req_cpu_pct - 100 * freed[0] / max(alloc.cpu_cores, 1e-9)
            cur_mem = req_mem_pct - 100 * freed[1] / max(alloc.mem_bytes, 1e-9)
            if picked >= s.max_evictions_per_tick_per_node or max(cur_cpu, cur_mem) <= s.target_requested_pct:
                break
            if choice.blocked(key, pod, src) is not None:
                continue
            usage = smp.pods[key]
            fits = []
            for t in choice.targets(key, pod, src, usage):
                extra = choice.req.get(t.node, (0.0, 0.0))
                after = _requested_pct(state, t.node, (extra[0] + pod.requests.cpu_cores,
                                                       extra[1] + pod.requests.mem_bytes))
                if max(after) <= s.requested_pct:
                    fits.append((t, after))
            if not fits:
                continue  # nowhere to go: no decision
            best, best_req = fits[0]
            assert pod.workload is not None
            evidence = choice.evidence(key, pod, src)
            evidence.update({
                "tick_ts": now, "node_requested_cpu_pct": round(cur_cpu, 3),
                "node_requested_mem_pct": round(cur_mem, 3),
                "node_requested_cpu_pct_after": round(cur_cpu - 100 * pod.requests.cpu_cores / alloc.cpu_cores, 3),
                "node_cpu_pct": round(smp.cpu_pct or 0.0, 3), "requested_pct": s.requested_pct,
                "max_usage_pct": s.max_usage_pct, "consecutive": s.consecutive,
                "pod_cpu_requests": pod.requests.cpu_cores, "pod_mem_requests": pod.requests.mem_bytes,
                "pod_cpu_peak": peak_cpu, "pod_mem_peak": peak_mem,
                "request_to_usage": round(ratio, 3) if ratio != float("inf") else None,
                "pod_samples": len(state.pod_usage_history(key, s.consecutive)),
                "targets": len(fits), "best_target": best.node,
                "best_target_cpu_pct_after": round(best.cpu_pct_after, 3),
                "best_target_requested_cpu_pct_after": round(best_req[0], 3),
            })
            decisions.append(choice.decide(
                NAME, now, s.ttl_s, key, pod, src, id_part=src, evidence=evidence,
                to_nodes=[t.node for t, _ in fits], target=best.node, usage=usage,
                reason=(f"node {src} is {max(cur_cpu, cur_mem):.0f}% allocated by requests but "
                        f"{smp.cpu_pct or 0:.0f}% used (below {s.max_usage_pct:g}% for {s.consecutive} samples); "
                        f"moving {key[0]}/{key[1]} (requests {pod.requests.cpu_cores:.2f} cores, "
                        f"peak use {peak_cpu:.2f}) to free schedulable room"),
            ))
            freed = (freed[0] + pod.requests.cpu_cores, freed[1] + pod.requests.mem_bytes)
            picked += 1
    return decisions
