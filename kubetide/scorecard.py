"""The scorecard of ``kubetide evaluate``: pure functions from per-tick series to each report key.

Nothing here knows about kubesim or kubetide: every function takes arrays (or plain records) and
returns a number, or ``None`` when the input cannot give one (never a made-up number). ``dt_s`` is
the tick length in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

REPEAT_WINDOW_S = 1800.0


def spread_p95_p5(cpu_pct: np.ndarray | Sequence[Sequence[float]]) -> float | None:
    """Time-mean of the p95 − p5 spread of node CPU usage % (points).

    ``cpu_pct``: shape (ticks, nodes); NaN = the node did not exist at that tick. Percentiles
    use numpy's linear interpolation over the nodes present; a tick with no node is skipped.
    """
    a = np.asarray(cpu_pct, dtype=float)
    if a.ndim != 2 or a.size == 0:
        return None
    spreads = []
    for row in a:
        row = row[~np.isnan(row)]
        if row.size:
            spreads.append(float(np.percentile(row, 95) - np.percentile(row, 5)))
    return float(np.mean(spreads)) if spreads else None


def zone_skew(pods_per_zone: Mapping[str, int], zones: Iterable[str]) -> int:
    """Topology-spread skew of one workload: max − min of its pods over ``zones`` (absent zone = 0)."""
    counts = [int(pods_per_zone.get(z, 0)) for z in zones]
    return (max(counts) - min(counts)) if counts else 0


def max_zone_skew(skew_per_tick: Sequence[float], action_at_tick: Sequence[bool]) -> float | None:
    """The worst per-workload zone skew seen at the end of a tick with an action.

    ``skew_per_tick[i]`` is the maximum over workloads of :func:`zone_skew` at the end of tick i;
    ``action_at_tick[i]`` says whether any action (eviction, scale, node added/removed) happened
    in tick i. Tick 0 (the initial placement) always counts, so a run without actions still
    reports the skew it lives with. None without ticks.
    """
    s = np.asarray(skew_per_tick, dtype=float)
    if s.size == 0:
        return None
    mask = np.asarray(action_at_tick, dtype=bool).copy()
    mask[0] = True
    return float(s[mask].max())


@dataclass(frozen=True)
class Eviction:
    """One applied eviction: when, of which workload, which pod, from which node, and where its
    replacement (the pod the workload's controller created right after) went."""

    t: float
    workload: str
    pod: str
    from_node: str
    replacement_pod: str | None = None
    replacement_node: str | None = None


def repeat_evictions(evictions: Sequence[Eviction], window_s: float = REPEAT_WINDOW_S) -> int:
    """Evictions that undo or repeat an eviction of the same workload slot within ``window_s``.

    An eviction E (time t, workload W) is a **repeat** when some earlier eviction P of the same
    workload W with ``t − P.t <= window_s`` has

    - ``P.replacement_pod == E.pod`` (the replacement of an evicted pod is itself evicted: the
      slot was moved twice), or
    - ``P.replacement_node == E.from_node`` (a pod of W is evicted from the node where P's
      replacement just landed: the move is being undone, ping-pong).

    Each eviction counts at most once.
    """
    evs = sorted(evictions, key=lambda e: e.t)
    n = 0
    for i, e in enumerate(evs):
        for p in evs[:i]:
            if p.workload != e.workload or e.t - p.t > window_s:
                continue
            if (p.replacement_pod is not None and p.replacement_pod == e.pod) or \
                    (p.replacement_node is not None and p.replacement_node == e.from_node):
                n += 1
                break
    return n


def underprovisioned_pod_minutes(demand: np.ndarray | Sequence, served: np.ndarray | Sequence,
                                 pod_cores: np.ndarray | Sequence, dt_s: float) -> float | None:
    """Unserved CPU demand, in pods of each app's CPU request, integrated over time (minutes).

    ``demand``, ``served``: shape (ticks, apps), cores; ``pod_cores``: shape (apps,), the CPU
    request of one pod (> 0). Per tick and app: ``max(0, demand − served) / pod_cores`` pods.
    """
    d, s = np.asarray(demand, dtype=float), np.asarray(served, dtype=float)
    if d.size == 0:
        return None
    unit = np.asarray(pod_cores, dtype=float)
    unit = np.where(unit > 0, unit, np.nan)
    deficit = np.clip(d - s, 0.0, None) / unit
    return float(np.nansum(deficit) * dt_s / 60.0)


def hours(count_per_tick: np.ndarray | Sequence, dt_s: float) -> float | None:
    """∑ count × dt, in hours (replica-hours, node-hours). ``count_per_tick``: (ticks,) or (ticks, k)."""
    a = np.asarray(count_per_tick, dtype=float)
    if a.size == 0:
        return None
    return float(a.sum() * dt_s / 3600.0)


def ideal_node_hours(usage_cores: np.ndarray | Sequence, node_cores: float, dt_s: float,
                     max_util: float = 1.0) -> float | None:
    """Lower bound of node-hours: per tick, ``max(1, ceil(total CPU usage / (node_cores × max_util)))``.

    ``usage_cores``: (ticks,) total CPU used (pods + system overhead) in the cluster.
    """
    u = np.asarray(usage_cores, dtype=float)
    if u.size == 0 or node_cores <= 0:
        return None
    n = np.maximum(1.0, np.ceil(u / (node_cores * max_util) - 1e-9))
    return float(n.sum() * dt_s / 3600.0)


@dataclass(frozen=True)
class Episode:
    """Ground truth: on ``node``, ``victim`` suffers from ``antagonists`` during [t0, t1]."""

    node: str
    victim: str
    antagonists: tuple[str, ...]
    t0: float
    t1: float


@dataclass(frozen=True)
class Finding:
    """A detector's claim at ``ts``: on ``node``, ``victim`` suffers; ``antagonists`` ranked, worst first."""

    ts: float
    node: str
    victim: str
    antagonists: tuple[str, ...]


def _matches(f: Finding, e: Episode, slack_s: float) -> bool:
    return f.node == e.node and f.victim == e.victim and e.t0 - slack_s <= f.ts <= e.t1 + slack_s


def interference_scores(episodes: Sequence[Episode], findings: Sequence[Finding],
                        slack_s: float = 0.0) -> tuple[float | None, float | None, float | None]:
    """(precision, recall, antagonist top-1) of findings against ground-truth episodes.

    - precision: findings that match an episode (same node and victim, ``ts`` within the episode
      ± ``slack_s``) / findings; None without findings;
    - recall: episodes matched by at least one finding / episodes; None without episodes;
    - top-1: of the matched episodes, the share whose **first** matching finding (earliest) ranks
      a true antagonist first — one of the antagonists of the episodes that finding matches (two
      antagonists active together on a node both harm its victims); None when no episode was matched.
    """
    # _matches needs the same node and victim: compare only within those groups (the original orders kept),
    # not every finding with every episode (quadratic in the run's length)
    eps: dict[tuple[str, str], list[Episode]] = {}
    for e in episodes:
        eps.setdefault((e.node, e.victim), []).append(e)
    fnd: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        fnd.setdefault((f.node, f.victim), []).append(f)
    precision = None
    if findings:
        precision = sum(1 for f in findings
                        if any(_matches(f, e, slack_s) for e in eps.get((f.node, f.victim), ()))) / len(findings)
    recall = top1 = None
    if episodes:
        matched = 0
        right = 0
        for e in episodes:
            fs = sorted((f for f in fnd.get((e.node, e.victim), ()) if _matches(f, e, slack_s)), key=lambda f: f.ts)
            if fs:
                matched += 1
                first = fs[0]
                true = {a for x in eps.get((first.node, first.victim), ()) if _matches(first, x, slack_s)
                        for a in x.antagonists}
                if first.antagonists and first.antagonists[0] in true:
                    right += 1
        recall = matched / len(episodes)
        top1 = right / matched if matched else None
    return precision, recall, top1


def periodicity_scores(truth: Mapping[str, bool], periods: Mapping[str, float | None], *,
                       period_s: float = 86400.0, tolerance: float = 0.1) -> tuple[float | None, float | None]:
    """(share of periodic apps whose detected period is ``period_s`` within ``tolerance``, share of
    non-periodic apps with no period claimed); ``truth`` maps an app to whether it has that period,
    ``periods`` to its detected period (None = not periodic; a missing app counts as None). A share is
    None when its class is empty."""
    def found(app: str) -> bool:
        p = periods.get(app)
        return p is not None and abs(p - period_s) <= tolerance * period_s

    yes = [a for a, t in truth.items() if t]
    no = [a for a, t in truth.items() if not t]
    daily = sum(found(a) for a in yes) / len(yes) if yes else None
    none = sum(periods.get(a) is None for a in no) / len(no) if no else None
    return daily, none


def p99(values: Sequence[float]) -> float | None:
    """99th percentile (numpy linear interpolation); None when empty."""
    a = np.asarray(values, dtype=float)
    return float(np.percentile(a, 99)) if a.size else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b for the side-by-side table; None when either is missing or b is 0 (unless a is 0 too: 1)."""
    if a is None or b is None:
        return None
    if b == 0:
        return 1.0 if a == 0 else None
    r = a / b
    return r if math.isfinite(r) else None


def pending_seconds_p95(waits: Sequence[float]) -> float | None:
    """p95 of the seconds scale-out pods waited for a node (creation → bound; still pending at the end:
    creation → end). None when no pod was created."""
    if not len(waits):
        return None
    return float(np.percentile(np.asarray(waits, dtype=float), 95))


def packing_rate_peak(requested: Sequence[float], allocatable: Sequence[float], demand: Sequence[float],
                      q: float = 0.9) -> float | None:
    """Mean of requested / allocatable CPU over the peak ticks: those whose demand is at or above the
    ``q`` quantile of the run's demand. None without ticks or allocatable."""
    r, a, d = (np.asarray(x, dtype=float) for x in (requested, allocatable, demand))
    n = min(len(r), len(a), len(d))
    if n == 0:
        return None
    r, a, d = r[:n], a[:n], d[:n]
    peak = (d >= np.quantile(d, q)) & (a > 0)
    if not peak.any():
        return None
    return float(np.mean(r[peak] / a[peak]))
