"""One disruption ledger for every kubetide strategy (pure: no I/O, explicit ``now``).

Evictions of the load, zone and interference strategies, node-scale drains and HPA-style
scale-ins all draw on the same budgets, so two strategies never race each other for one
workload's (or one zone's) disruption budget:

- **per workload**: at most ``per_workload`` disruptions of one workload (``namespace/name``)
  within a sliding window of ``window_s`` seconds (cluster time);
- **per zone**: at most ``per_zone`` disruptions in one zone within the same window;
- **per PDB**: the PDB's ``status.disruptionsAllowed`` minus kubetide's own disruptions still
  in flight against it (reserved, not yet confirmed). A PDB already at 0 is left to the
  Eviction API, which is the source of truth and answers 429 with Retry-After.

A disruption is first *reserved* (:meth:`DisruptionLedger.reserve`, which checks every budget
and counts the reservation at once, so concurrent decisions see it), then either *committed*
(it happened: it stays in the window) or *released* (it did not happen: forgotten). A budget
of 0 or less disables that check.

Helpers for the zone guard: :func:`zone_constraint`, :func:`zone_skew` and :func:`skew_after_eviction`
(label selectors are :func:`kubetide.labels.selector_matches`).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Reservation:
    id: int
    decision_id: str
    workload: str
    zone: str | None
    n: int
    pdbs: tuple[str, ...] = ()
    source: str = ""


@dataclass
class _Entry:
    t: float
    workload: str
    zone: str | None
    n: int
    decision_id: str
    source: str


@dataclass
class DisruptionLedger:
    window_s: float = 600.0
    per_workload: int = 3
    per_zone: int = 10
    entries: deque[_Entry] = field(default_factory=deque)
    inflight: dict[int, Reservation] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)

    def _prune(self, now: float) -> None:
        while self.entries and self.entries[0].t <= now - self.window_s:
            self.entries.popleft()

    def used_by_workload(self, workload: str, now: float) -> int:
        self._prune(now)
        return (sum(e.n for e in self.entries if e.workload == workload)
                + sum(r.n for r in self.inflight.values() if r.workload == workload))

    def used_in_zone(self, zone: str, now: float) -> int:
        self._prune(now)
        return (sum(e.n for e in self.entries if e.zone == zone)
                + sum(r.n for r in self.inflight.values() if r.zone == zone))

    def inflight_for_pdb(self, pdb: str) -> int:
        return sum(r.n for r in self.inflight.values() if pdb in r.pdbs)

    def reserve(self, decision_id: str, workload: str, zone: str | None, now: float, *, n: int = 1,
                pdbs: Mapping[str, int] | None = None, source: str = "") -> Reservation | str:
        """A reservation of ``n`` disruptions, or why the budget is exhausted (a message)."""
        if self.per_workload > 0:
            used = self.used_by_workload(workload, now)
            if used + n > self.per_workload:
                return (f"workload {workload} had {used} disruption(s) in the last {self.window_s:.0f}s "
                        f"(budget {self.per_workload}); {n} more would exceed it")
        if zone and self.per_zone > 0:
            used = self.used_in_zone(zone, now)
            if used + n > self.per_zone:
                return (f"zone {zone} had {used} disruption(s) in the last {self.window_s:.0f}s "
                        f"(budget {self.per_zone}); {n} more would exceed it")
        for pdb, allowed in (pdbs or {}).items():
            mine = self.inflight_for_pdb(pdb)
            if allowed >= 1 and allowed - mine < n:
                return (f"PDB {pdb} allows {allowed} disruption(s) and kubetide already has {mine} in flight "
                        f"against it")
        r = Reservation(next(self._ids), decision_id, workload, zone, n, tuple(pdbs or ()), source)
        self.inflight[r.id] = r
        return r

    def commit(self, r: Reservation, now: float) -> None:
        """The disruption happened: it counts in the window from ``now``."""
        if self.inflight.pop(r.id, None) is not None:
            self.entries.append(_Entry(now, r.workload, r.zone, r.n, r.decision_id, r.source))

    def release(self, r: Reservation) -> None:
        """The disruption did not happen."""
        self.inflight.pop(r.id, None)


# ------------------------------------------------------------------ selectors and zones

def zone_constraint(pod_spec: Mapping, zone_label: str) -> tuple[int, Mapping | None] | None:
    """(maxSkew, labelSelector) of the pod's tightest topologySpreadConstraint on ``zone_label``, or None."""
    best: tuple[int, Mapping | None] | None = None
    for c in pod_spec.get("topologySpreadConstraints") or []:
        if c.get("topologyKey") == zone_label and c.get("maxSkew") is not None:
            if best is None or int(c["maxSkew"]) < best[0]:
                best = (int(c["maxSkew"]), c.get("labelSelector"))
    return best


def zone_skew(counts: Mapping[str, int], zones: Iterable[str]) -> int:
    """max - min of the pod counts over the eligible zones (zones without pods count 0)."""
    values = [counts.get(z, 0) for z in set(zones) | set(counts)]
    return (max(values) - min(values)) if values else 0


def skew_after_eviction(counts: Mapping[str, int], zones: Iterable[str], zone: str) -> tuple[int, int]:
    """(skew now, skew once one pod left ``zone``; its replacement's zone is not known)."""
    zones = set(zones)
    after = dict(counts)
    after[zone] = max(0, after.get(zone, 0) - 1)
    return zone_skew(counts, zones), zone_skew(after, zones)
