"""LowNodeLoad: move a pod off a node that stays hot while cool nodes exist (pure).

Like descheduler's LowNodeUtilization/HighNodeUtilization, but on *real* usage over event time,
per resource (``cpu``, ``mem``; a resource with weight 0 is ignored):

- **thresholds** are absolute percentages of allocatable (``mode: absolute``) or, like
  descheduler's ``useDeviationThresholds``, points above / below the cluster mean of the ready
  nodes with metrics in this tick (``mode: deviation``: high = mean + ``high_*_pct``, low =
  mean - ``low_*_pct``, clamped to [0, 100]);
- a **source** is a node above the high threshold of some weighted resource in each of the last
  ``consecutive`` ticks (a tick where its metrics are missing breaks the streak: missing is never
  zero);
- a **target** is a ready, schedulable node with metrics in the current tick, below the low
  threshold of every weighted resource; with no target there is no decision;
- on each source (highest weighted load first) it picks pods through the shared
  :class:`~streams.core.state.Choice` (evictable, guard, cooldowns, limits), preferring a pod whose
  move brings the source into the [low, high] band of CPU (no overshoot), then the shared
  preference (lower priority, healthy replicas elsewhere, not moved recently), then the highest
  weighted usage. A pod qualifies when it fits on at least one target by requests (taints,
  selector, schedulability, topology spread, kept-apart workloads) and by real usage (the target
  stays under the high thresholds and ``target_max_mem_pct`` memory with the pod's usage added; in
  deviation mode a pod too big for that may still go where the target ends below both the source's
  level after the move and the guard's ``hot_cpu_pct``, so one big pod can fix a hot node).
  It stops as soon as the source is no longer above any high threshold. A pod whose usage is not
  in the tick's scrape is skipped;
- **where the replacement lands**: the scheduler, not kubetide, places an evicted pod's replacement,
  and on a node that looks free by requests (or by load, to a load-aware scheduler) it may be the
  source again or another hot node: the eviction then only restarts the pod. ``require_landing``:
  ``always`` lets a pod qualify only when the node the scheduler would bind its replacement to
  (:func:`~streams.core.state.predicted_landing`, with ``guard.scheduler_load_weight`` for a load-aware
  scheduler) is one of its targets — the next candidate is tried instead; ``after-hot-landing``
  (default) asks that only of a source whose latest move (within the guard's ``backoff_max_s``) was
  seen to land back on it or on a hot node (``ClusterState.landings``), until a move from it lands
  well; ``never`` does not ask. Hotspots 24 h seeds 11-14, evictions / spread: ``never``
  58/35/17/41, 14.6/14.8/12.1/14.7; ``after-hot-landing`` 32/30/17/27, 13.8/14.5/12.1/14.5;
  ``always`` 19/18/11/15, 14.9/14.9/22.4/16.1 (a hot node whose big pod would land on a middle node
  keeps it). The prediction is in the evidence (``predicted_landing``) either way;
- at most ``max_evictions_per_tick_per_node`` decisions per source per tick and
  ``max_evictions_per_workload_per_tick`` per workload; none on a node within
  ``node_cooldown_s`` of its last decision or for a pod within ``pod_cooldown_s`` (event time).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from kubetide.models import DescheduleDecision
from streams.core.state import Choice, ClusterState, NodeSample

NAME = "LowNodeLoad"

MODE_DEFAULTS: dict[str, dict[str, float]] = {
    "deviation": {"high_cpu_pct": 8.0, "low_cpu_pct": 8.0, "high_mem_pct": 10.0, "low_mem_pct": 10.0},
    "absolute": {"high_cpu_pct": 80.0, "low_cpu_pct": 50.0, "high_mem_pct": 90.0, "low_mem_pct": 60.0},
}


@dataclass(frozen=True)
class LowNodeLoadSettings:
    enabled: bool = True
    # Default: deviation from the cluster mean (points), so nodes converge on the mean whatever the
    # load; ``mode: absolute`` gives the descheduler's LowNodeUtilization. A threshold left unset takes
    # its mode's default (MODE_DEFAULTS): deviation 8 / 8 CPU and 10 / 10 memory points, absolute
    # 80 / 50 CPU and 90 / 60 memory %.
    mode: Literal["absolute", "deviation"] = "deviation"
    high_cpu_pct: float = None  # type: ignore[assignment]  # filled from MODE_DEFAULTS
    low_cpu_pct: float = None  # type: ignore[assignment]
    high_mem_pct: float = None  # type: ignore[assignment]
    low_mem_pct: float = None  # type: ignore[assignment]
    cpu_weight: float = 1.0
    mem_weight: float = 0.0
    consecutive: int = 3
    max_evictions_per_tick_per_node: int = 1
    max_evictions_per_workload_per_tick: int = 1
    node_cooldown_s: float = 300.0
    pod_cooldown_s: float = 1800.0
    ttl_s: float = 300.0
    target_max_mem_pct: float = 90.0
    # When a pod moves only if the scheduler would put its replacement on one of the targets (module doc)
    require_landing: Literal["never", "after-hot-landing", "always"] = "after-hot-landing"

    def __post_init__(self) -> None:
        for f, v in MODE_DEFAULTS.get(self.mode, {}).items():
            if getattr(self, f) is None:
                object.__setattr__(self, f, v)

    def validate(self) -> None:
        for f in ("high_cpu_pct", "high_mem_pct"):
            v = getattr(self, f)
            if not (0 < v <= 100 if self.mode == "absolute" else 0 <= v <= 100):
                raise ValueError(f"{f}: must be in (0, 100]" if self.mode == "absolute"
                                 else f"{f}: must be in [0, 100] points above the mean")
        for lo, hi in (("low_cpu_pct", "high_cpu_pct"), ("low_mem_pct", "high_mem_pct")):
            v = getattr(self, lo)
            if self.mode == "absolute" and not 0 <= v < getattr(self, hi):
                raise ValueError(f"{lo}: must be >= 0 and below {hi}")
            if self.mode == "deviation" and not 0 <= v <= 100:
                raise ValueError(f"{lo}: must be in [0, 100] points below the mean")
        if self.cpu_weight < 0 or self.mem_weight < 0:
            raise ValueError(("cpu_weight" if self.cpu_weight < 0 else "mem_weight") + ": must be >= 0")
        if self.cpu_weight + self.mem_weight <= 0:
            raise ValueError("cpu_weight: cpu_weight + mem_weight must be > 0")
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
        if self.require_landing not in ("never", "after-hot-landing", "always"):
            raise ValueError("require_landing: must be never, after-hot-landing or always")


@dataclass(frozen=True)
class Thresholds:
    high_cpu: float
    low_cpu: float
    high_mem: float
    low_mem: float
    mean_cpu: float
    mean_mem: float


def _pcts(smp: NodeSample) -> tuple[float, float]:
    mem = 100.0 * smp.mem_usage / smp.mem_allocatable if smp.mem_allocatable > 0 else 0.0
    return smp.cpu_pct or 0.0, mem


def thresholds(state: ClusterState, s: LowNodeLoadSettings, ts: float | None = None) -> Thresholds | None:
    """The effective thresholds of the tick ``ts`` (None when deviation mode has no node to average)."""
    vals = [_pcts(smp) for n in state.ready_nodes()
            if (smp := state.sample(n, ts)) is not None and smp.cpu_allocatable > 0]
    mean_cpu = sum(v[0] for v in vals) / len(vals) if vals else 0.0
    mean_mem = sum(v[1] for v in vals) / len(vals) if vals else 0.0
    if s.mode == "absolute":
        return Thresholds(s.high_cpu_pct, s.low_cpu_pct, s.high_mem_pct, s.low_mem_pct, mean_cpu, mean_mem)
    if not vals:
        return None

    def clamp(x: float) -> float:
        return min(100.0, max(0.0, x))

    return Thresholds(clamp(mean_cpu + s.high_cpu_pct), clamp(mean_cpu - s.low_cpu_pct),
                      clamp(mean_mem + s.high_mem_pct), clamp(mean_mem - s.low_mem_pct), mean_cpu, mean_mem)


def _over(cpu: float, mem: float, th: Thresholds, s: LowNodeLoadSettings) -> bool:
    return (s.cpu_weight > 0 and cpu > th.high_cpu) or (s.mem_weight > 0 and mem > th.high_mem)


def _under(cpu: float, mem: float, th: Thresholds, s: LowNodeLoadSettings) -> bool:
    return (s.cpu_weight <= 0 or cpu < th.low_cpu) and (s.mem_weight <= 0 or mem < th.low_mem)


def _hot_streak(state: ClusterState, node: str, s: LowNodeLoadSettings,
                per_tick: dict[float, Thresholds | None] | None = None) -> bool:
    ticks = list(state.ticks)[-s.consecutive:]
    if len(ticks) < s.consecutive:
        return False
    per_tick = {} if per_tick is None else per_tick
    for t in ticks:
        smp = state.sample(node, t)
        if t not in per_tick:
            per_tick[t] = thresholds(state, s, t)
        th = per_tick[t]
        if smp is None or smp.cpu_allocatable <= 0 or th is None or not _over(*_pcts(smp), th, s):
            return False
    return True


def hot_landing_sources(state: ClusterState, now: float) -> set[str]:
    """Nodes whose latest move's replacement (within the guard's ``backoff_max_s``) landed back on the node
    itself or on a hot node (:attr:`ClusterState.landings`)."""
    latest: dict[str, bool] = {}
    for ld in state.landings:  # oldest first: the last one per node wins
        if now - ld.ts <= state.guard.backoff_max_s:
            latest[ld.from_node] = ld.hot
    return {n for n, hot in latest.items() if hot}


def plan(state: ClusterState, s: LowNodeLoadSettings) -> list[DescheduleDecision]:
    now = state.tick_ts
    if now is None or not s.enabled:
        return []
    th = thresholds(state, s)
    if th is None:
        return []
    nodes = state.ready_nodes()
    per_tick: dict[float, Thresholds | None] = {}
    sources = [n for n in nodes if _hot_streak(state, n, s, per_tick)]
    if not sources:
        return []
    targets = []
    for n in nodes:
        smp = state.sample(n)
        if n in sources or smp is None or smp.cpu_pct is None or smp.mem_allocatable <= 0:
            continue
        if not state.nodes[n].unschedulable and _under(*_pcts(smp), th, s):
            targets.append(n)
    if not targets:
        return []
    choice = Choice(state)
    per_workload: Counter[str] = Counter()
    decisions: list[DescheduleDecision] = []
    w_total = s.cpu_weight + s.mem_weight

    def load(smp: NodeSample) -> float:
        cpu, mem = _pcts(smp)
        return (s.cpu_weight * cpu + s.mem_weight * mem) / w_total

    def hotness(n: str) -> tuple[float, str]:
        smp = state.sample(n)
        return (-load(smp) if smp else 0.0, n)

    max_cpu_target = th.high_cpu if s.cpu_weight > 0 else 100.0
    max_mem_target = min(s.target_max_mem_pct, th.high_mem if s.mem_weight > 0 else 100.0)
    landed_hot = hot_landing_sources(state, now)
    for src in sorted(sources, key=hotness):
        last = state.last_decision_node.get((NAME, src))
        if last is not None and now - last < s.node_cooldown_s:
            continue
        smp = state.sample(src)
        assert smp is not None
        start_cpu_pct, start_mem_pct = _pcts(smp)
        alloc, mem_alloc = smp.cpu_allocatable, smp.mem_allocatable
        high_cores, low_cores = alloc * th.high_cpu / 100, alloc * th.low_cpu / 100
        src_cpu, src_mem = smp.cpu_usage, smp.mem_usage
        cands = []
        for key, pod in state.pods_on(src):
            if choice.blocked(key, pod, src) is not None:
                continue
            lastp = state.last_decision_pod.get((NAME, key))
            if lastp is not None and now - lastp < s.pod_cooldown_s:
                continue
            usage = smp.pods.get(key)
            if usage is None:  # no usage in this scrape: unknown, not zero
                continue
            weighted = (s.cpu_weight * usage[0] / alloc + s.mem_weight * usage[1] / max(mem_alloc, 1.0)) / w_total
            cands.append((key, pod, usage[0], usage[1], weighted, choice.prefer(key, pod)))
        picked = 0
        while (picked < s.max_evictions_per_tick_per_node and cands
               and _over(100 * src_cpu / alloc, 100 * src_mem / max(mem_alloc, 1.0), th, s)):
            cands.sort(key=lambda c, now_cpu=src_cpu, lo=low_cores, hi=high_cores: (
                0 if s.cpu_weight <= 0 or lo <= now_cpu - c[2] <= hi else 1, c[5], -c[4], c[0]))
            chosen = None
            for c in cands:
                key, pod, cpu, mem = c[:4]
                assert pod.workload is not None
                if per_workload[pod.workload.key] >= s.max_evictions_per_workload_per_tick:
                    continue
                if choice.blocked(key, pod, src) is not None:  # limits taken by earlier picks
                    continue
                bound = max_cpu_target
                if s.mode == "deviation" and s.cpu_weight > 0:
                    # a big pod may take a target past mean + high, but never past the source's own level
                    # after the move (no inverted imbalance) nor past the guard's hot bound
                    bound = min(state.guard.hot_cpu_pct, max(max_cpu_target, 100 * (src_cpu - cpu) / alloc))
                fits = choice.targets(key, pod, src, (cpu, mem), max_cpu_pct=bound,
                                      max_mem_pct=max_mem_target, nodes=targets)
                if not fits:
                    continue
                landing = choice.landing(key, pod, src)
                at = [t for t in fits if t.node == landing]
                if not at and (s.require_landing == "always"
                               or (s.require_landing == "after-hot-landing" and src in landed_hot)):
                    continue  # the scheduler would put the replacement back here, or on another non-target
                chosen = (c, fits, at[0] if at else fits[0], landing)
                break
            if chosen is None:
                break
            c, fits, best, landing = chosen
            key, pod, cpu, mem = c[:4]
            cands.remove(c)
            after_src, after_mem = src_cpu - cpu, src_mem - mem
            assert pod.workload is not None
            evidence = choice.evidence(key, pod, src)
            evidence.update({
                "tick_ts": now, "mode": s.mode, "node_cpu_pct": round(100 * src_cpu / alloc, 3),
                "node_cpu_pct_start": round(start_cpu_pct, 3),
                "node_mem_pct": round(100 * src_mem / max(mem_alloc, 1.0), 3),
                "node_mem_pct_start": round(start_mem_pct, 3),
                "node_cpu_cores": src_cpu, "node_cpu_allocatable": alloc,
                "node_cpu_pct_after": round(100 * after_src / alloc, 3),
                "node_mem_pct_after": round(100 * after_mem / max(mem_alloc, 1.0), 3),
                "pod_cpu_cores": cpu, "pod_mem_bytes": mem,
                "high_cpu_pct": round(th.high_cpu, 3), "low_cpu_pct": round(th.low_cpu, 3),
                "high_mem_pct": round(th.high_mem, 3), "low_mem_pct": round(th.low_mem, 3),
                "mean_cpu_pct": round(th.mean_cpu, 3), "mean_mem_pct": round(th.mean_mem, 3),
                "cpu_weight": s.cpu_weight, "mem_weight": s.mem_weight,
                "consecutive": s.consecutive, "targets": len(fits),
                "best_target": best.node, "best_target_cpu_pct_after": round(best.cpu_pct_after, 3),
                "best_target_mem_pct_after": round(best.mem_pct_after, 3),
                "predicted_landing": landing,
            })
            decisions.append(choice.decide(
                NAME, now, s.ttl_s, key, pod, src, id_part=src, evidence=evidence,
                to_nodes=[t.node for t in fits], target=best.node, usage=(cpu, mem),
                reason=(f"node {src} above {th.high_cpu:g}% CPU"
                        + (f" / {th.high_mem:g}% memory" if s.mem_weight > 0 else "")
                        + f" ({s.mode}) for {s.consecutive} samples ({100 * src_cpu / alloc:.0f}% CPU now); "
                        f"moving {key[0]}/{key[1]} ({cpu:.2f} cores) to one of {len(fits)} node(s) "
                        f"below {th.low_cpu:g}%"),
            ))
            picked += 1
            per_workload[pod.workload.key] += 1
            src_cpu, src_mem = after_src, after_mem
    return decisions
